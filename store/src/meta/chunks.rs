//! Chunk rows: which chunks a namespace holds, where, and whether the
//! verifier has re-hashed them.

use std::collections::{HashMap, HashSet};

use driftless_protocol::{ChunkHash, DeviceId, NamespaceId};
use sqlx::{AnyConnection, Row};

use super::{from_db, to_db};
use crate::db::Db;

/// Hashes per `IN (…)` query: well under every database's parameter limit.
const BATCH: usize = 500;
/// Rows per multi-row `INSERT` (5 values each).
const INSERT_ROWS: usize = 200;
/// Chunk rows a commit records per transaction, so that one huge upload
/// never holds the (SQLite: only) writer for long.
pub const RECORD_PER_TX: usize = 2_000;

/// Chunk states, as stored.
pub mod state {
    /// Recorded at commit, not yet read back.
    pub const PENDING: i64 = 0;
    /// Read back from storage; decodes to bytes with its hash.
    pub const VERIFIED: i64 = 1;
    /// Missing or failing its hash; awaits a re-upload.
    pub const CORRUPT: i64 = 2;
}

/// Which stored chunks count as present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usable {
    /// Any chunk not known to be corrupt: what a commit may reference (the
    /// verifier reports a version whose pending chunk turns out bad).
    Stored,
    /// What is offered to `device` for deduplication: verified chunks, and
    /// pending ones from that device's own uploads. Another device sends its
    /// own copy until the first is verified, so nobody can make a file point
    /// at bytes they never had to produce.
    OfferedTo(DeviceId),
}

/// The distinct hashes of `hashes` that namespace `ns` does not hold as a
/// usable chunk, in first-seen order.
pub async fn missing_in(
    conn: &mut AnyConnection,
    ns: i64,
    usable: Usable,
    hashes: impl Iterator<Item = ChunkHash>,
) -> Result<Vec<ChunkHash>, sqlx::Error> {
    let mut seen = HashSet::new();
    let wanted: Vec<ChunkHash> = hashes.filter(|h| seen.insert(*h)).collect();
    let present = usable_lengths(conn, ns, usable, &wanted).await?;
    Ok(wanted
        .into_iter()
        .filter(|h| !present.contains_key(h))
        .collect())
}

/// The raw length of each of `wanted` that namespace `ns` holds as a
/// usable chunk (absent: not usable).
pub async fn usable_lengths(
    conn: &mut AnyConnection,
    ns: i64,
    usable: Usable,
    wanted: &[ChunkHash],
) -> Result<HashMap<ChunkHash, u32>, sqlx::Error> {
    let mut present = HashMap::with_capacity(wanted.len());
    // $2 is the device when the filter names one; the hashes follow.
    let (filter, device) = match usable {
        Usable::Stored => ("c.state <> 2", None),
        Usable::OfferedTo(d) => (
            "(c.state = 1 OR (c.state = 0 AND EXISTS (SELECT 1 FROM packs p WHERE \
             p.namespace_id = c.namespace_id AND p.id = c.pack_id AND p.device_id = $2)))",
            Some(to_db(d.0)),
        ),
    };
    let first = if device.is_some() { 3 } else { 2 };
    for batch in wanted.chunks(BATCH) {
        let placeholders: Vec<String> = (0..batch.len())
            .map(|i| format!("${}", i + first))
            .collect();
        let sql = format!(
            "SELECT c.hash, c.raw_len FROM chunks c WHERE c.namespace_id = $1 AND {filter} AND c.hash IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(ns);
        if let Some(d) = device {
            q = q.bind(d);
        }
        for h in batch {
            q = q.bind(h.as_bytes().to_vec());
        }
        for row in q.fetch_all(&mut *conn).await? {
            let bytes: Vec<u8> = row.try_get("hash")?;
            let len: i64 = row.try_get("raw_len")?;
            if let (Ok(arr), Ok(len)) = (<[u8; 32]>::try_from(bytes), u32::try_from(len)) {
                present.insert(ChunkHash::from_bytes(arr), len);
            }
        }
    }
    Ok(present)
}

/// Of `wanted`, the chunks whose recorded copy is another device's and not
/// yet verified, by pack: a commit that uploaded its own copy of such a
/// chunk has that copy checked now, so neither waits for the verifier nor
/// points at bytes nobody proved (the first *verified* copy wins).
pub async fn unproven(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    device: DeviceId,
    wanted: &[ChunkHash],
) -> Result<HashMap<String, Vec<ChunkLocation>>, sqlx::Error> {
    let mut out: HashMap<String, Vec<ChunkLocation>> = HashMap::new();
    for batch in wanted.chunks(BATCH) {
        let placeholders: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT c.hash, c.raw_len, c.pack_id, c.pack_offset, c.stored_len, c.codec FROM chunks c \
             WHERE c.namespace_id = $1 AND c.state = 0 AND NOT EXISTS (SELECT 1 FROM packs p \
             WHERE p.namespace_id = c.namespace_id AND p.id = c.pack_id AND p.device_id = $2) \
             AND c.hash IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(to_db(ns.0)).bind(to_db(device.0));
        for h in batch {
            q = q.bind(h.as_bytes().to_vec());
        }
        for r in q.fetch_all(&mut *conn).await? {
            let Ok(hash) = <[u8; 32]>::try_from(r.try_get::<Vec<u8>, _>("hash")?) else {
                continue;
            };
            let pack: String = r.try_get("pack_id")?;
            out.entry(pack).or_default().push(ChunkLocation {
                hash: ChunkHash::from_bytes(hash),
                raw_len: from_db(r.try_get("raw_len")?) as u32,
                offset: from_db(r.try_get("pack_offset")?),
                stored_len: from_db(r.try_get("stored_len")?) as u32,
                codec: r.try_get("codec")?,
            });
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|c| c.offset);
    }
    Ok(out)
}

/// Where a chunk's stored bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    /// BLAKE3 of the raw chunk.
    pub hash: ChunkHash,
    /// Raw length.
    pub raw_len: u32,
    /// Offset of the stored bytes in the pack.
    pub offset: u64,
    /// Stored length.
    pub stored_len: u32,
    /// 0 raw, 1 zstd.
    pub codec: i64,
}

/// Records chunks stored in `pack_id` as pending verification. A chunk the
/// namespace already holds keeps its first location (the new copy is dead
/// bytes in its pack, reclaimed by compaction) unless that one is corrupt:
/// then the new copy replaces it, which is how a re-upload repairs it.
pub async fn record_chunks(
    conn: &mut AnyConnection,
    ns: i64,
    pack_id: &str,
    chunks: &[ChunkLocation],
) -> Result<(), sqlx::Error> {
    let now = crate::db::now_ms();
    // A corrupt chunk's row moves here: its old pack no longer holds it.
    // (`packs.live_bytes` is the sum of the rows located in the pack.)
    let hashes: Vec<ChunkHash> = chunks.iter().map(|c| c.hash).collect();
    for batch in hashes.chunks(BATCH) {
        let placeholders: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT pack_id, stored_len FROM chunks WHERE namespace_id = $1 AND state = 2 \
             AND pack_id <> $2 AND hash IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(ns).bind(pack_id);
        for h in batch {
            q = q.bind(h.as_bytes().to_vec());
        }
        for r in q.fetch_all(&mut *conn).await? {
            let (old, len): (String, i64) = (r.try_get(0)?, r.try_get(1)?);
            sqlx::query(
                "UPDATE packs SET live_bytes = live_bytes - $1 WHERE namespace_id = $2 AND id = $3",
            )
            .bind(len)
            .bind(ns)
            .bind(old)
            .execute(&mut *conn)
            .await?;
        }
    }
    // Once per hash (a row can be written once per statement), many rows
    // per statement.
    let mut seen = HashSet::with_capacity(chunks.len());
    let distinct: Vec<&ChunkLocation> = chunks.iter().filter(|c| seen.insert(c.hash)).collect();
    for batch in distinct.chunks(INSERT_ROWS) {
        let rows: Vec<String> = (0..batch.len())
            .map(|i| {
                let at = 4 + 5 * i;
                format!(
                    "($1, ${at}, ${}, $2, ${}, ${}, ${}, 0, $3)",
                    at + 1,
                    at + 2,
                    at + 3,
                    at + 4
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO chunks (namespace_id, hash, raw_len, pack_id, pack_offset, stored_len, codec, state, \
             created_at_ms) VALUES {} ON CONFLICT (namespace_id, hash) DO UPDATE SET raw_len = excluded.raw_len, \
             pack_id = excluded.pack_id, pack_offset = excluded.pack_offset, stored_len = excluded.stored_len, \
             codec = excluded.codec, state = 0, created_at_ms = excluded.created_at_ms WHERE chunks.state = 2",
            rows.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(ns).bind(pack_id).bind(now);
        for c in batch {
            q = q
                .bind(c.hash.as_bytes().to_vec())
                .bind(i64::from(c.raw_len))
                .bind(super::to_db(c.offset))
                .bind(i64::from(c.stored_len))
                .bind(c.codec);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Up to `limit` packs holding chunks that await verification and were
/// recorded at or before `recorded_by_ms`, oldest first.
pub async fn pending_packs(
    db: &Db,
    recorded_by_ms: i64,
    limit: usize,
) -> Result<Vec<(NamespaceId, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT namespace_id, pack_id FROM chunks WHERE state = 0 \
         GROUP BY namespace_id, pack_id HAVING MIN(created_at_ms) <= $1 \
         ORDER BY MIN(created_at_ms) LIMIT $2",
    )
    .bind(recorded_by_ms)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| Ok((NamespaceId(from_db(r.try_get(0)?)), r.try_get(1)?)))
        .collect()
}

/// The chunks of `pack_id` that await verification, in pack order.
pub async fn pending_in_pack(
    db: &Db,
    ns: NamespaceId,
    pack_id: &str,
) -> Result<Vec<ChunkLocation>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT hash, raw_len, pack_offset, stored_len, codec FROM chunks \
         WHERE namespace_id = $1 AND pack_id = $2 AND state = 0 ORDER BY pack_offset",
    )
    .bind(to_db(ns.0))
    .bind(pack_id)
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let Ok(hash) = <[u8; 32]>::try_from(r.try_get::<Vec<u8>, _>(0)?) else {
            continue;
        };
        out.push(ChunkLocation {
            hash: ChunkHash::from_bytes(hash),
            raw_len: from_db(r.try_get(1)?) as u32,
            offset: from_db(r.try_get(2)?),
            stored_len: from_db(r.try_get(3)?) as u32,
            codec: r.try_get(4)?,
        });
    }
    Ok(out)
}

/// Settles pending chunks of `pack_id` as verified or corrupt; returns the
/// hashes whose state changed. A chunk whose row moved to another pack
/// meanwhile (a re-upload), or that was settled already, is left alone.
pub async fn settle(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    pack_id: &str,
    hashes: &[ChunkHash],
    to: i64,
) -> Result<Vec<ChunkHash>, sqlx::Error> {
    let mut changed = Vec::new();
    for batch in hashes.chunks(BATCH) {
        let placeholders: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "UPDATE chunks SET state = $1 WHERE namespace_id = $2 AND pack_id = $3 AND state = 0 \
             AND hash IN ({}) RETURNING hash",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(to).bind(to_db(ns.0)).bind(pack_id);
        for h in batch {
            q = q.bind(h.as_bytes().to_vec());
        }
        for r in q.fetch_all(&mut *conn).await? {
            if let Ok(h) = <[u8; 32]>::try_from(r.try_get::<Vec<u8>, _>(0)?) {
                changed.push(ChunkHash::from_bytes(h));
            }
        }
    }
    Ok(changed)
}

/// Which chunks of a pack to mark corrupt.
#[derive(Clone, Copy, Debug)]
pub enum Bad<'a> {
    /// These.
    Hashes(&'a [ChunkHash]),
    /// Every chunk whose stored bytes do not fit in an object of this size
    /// (0: the object is gone).
    Beyond(u64),
}

/// Marks chunks of `pack_id` corrupt (whatever their state but corrupt);
/// returns the hashes whose state changed.
pub async fn mark_corrupt(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    pack_id: &str,
    bad: Bad<'_>,
) -> Result<Vec<ChunkHash>, sqlx::Error> {
    let mut changed = Vec::new();
    let mut take = |rows: Vec<sqlx::any::AnyRow>| -> Result<(), sqlx::Error> {
        for r in rows {
            if let Ok(h) = <[u8; 32]>::try_from(r.try_get::<Vec<u8>, _>(0)?) {
                changed.push(ChunkHash::from_bytes(h));
            }
        }
        Ok(())
    };
    match bad {
        Bad::Beyond(size) => take(
            sqlx::query(
                "UPDATE chunks SET state = 2 WHERE namespace_id = $1 AND pack_id = $2 \
                 AND state <> 2 AND pack_offset + stored_len > $3 RETURNING hash",
            )
            .bind(to_db(ns.0))
            .bind(pack_id)
            .bind(to_db(size))
            .fetch_all(&mut *conn)
            .await?,
        )?,
        Bad::Hashes(hashes) => {
            for batch in hashes.chunks(BATCH) {
                let placeholders: Vec<String> =
                    (0..batch.len()).map(|i| format!("${}", i + 3)).collect();
                let sql = format!(
                    "UPDATE chunks SET state = 2 WHERE namespace_id = $1 AND pack_id = $2 \
                     AND state <> 2 AND hash IN ({}) RETURNING hash",
                    placeholders.join(", ")
                );
                let mut q = sqlx::query(&sql).bind(to_db(ns.0)).bind(pack_id);
                for h in batch {
                    q = q.bind(h.as_bytes().to_vec());
                }
                take(q.fetch_all(&mut *conn).await?)?;
            }
        }
    }
    Ok(changed)
}

/// The chunks located in `pack_id` that are not known corrupt, in pack order.
pub async fn in_pack(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    pack_id: &str,
) -> Result<Vec<ChunkLocation>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT hash, raw_len, pack_offset, stored_len, codec FROM chunks \
         WHERE namespace_id = $1 AND pack_id = $2 AND state <> 2 ORDER BY pack_offset",
    )
    .bind(to_db(ns.0))
    .bind(pack_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let Ok(hash) = <[u8; 32]>::try_from(r.try_get::<Vec<u8>, _>(0)?) else {
            continue;
        };
        out.push(ChunkLocation {
            hash: ChunkHash::from_bytes(hash),
            raw_len: from_db(r.try_get(1)?) as u32,
            offset: from_db(r.try_get(2)?),
            stored_len: from_db(r.try_get(3)?) as u32,
            codec: r.try_get(4)?,
        });
    }
    Ok(out)
}
