//! Chunk rows: which chunks a namespace holds, and where.

use std::collections::HashSet;

use driftless_protocol::ChunkHash;
use sqlx::{AnyConnection, Row};

/// Hashes per `IN (…)` query: well under every database's parameter limit.
const BATCH: usize = 500;

/// The distinct hashes of `hashes` that namespace `ns` does not hold as a
/// usable (not corrupt) chunk, in first-seen order.
pub async fn missing_in(
    conn: &mut AnyConnection,
    ns: i64,
    hashes: impl Iterator<Item = ChunkHash>,
) -> Result<Vec<ChunkHash>, sqlx::Error> {
    let mut seen = HashSet::new();
    let wanted: Vec<ChunkHash> = hashes.filter(|h| seen.insert(*h)).collect();
    let mut present = HashSet::with_capacity(wanted.len());
    for batch in wanted.chunks(BATCH) {
        let placeholders: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT hash FROM chunks WHERE namespace_id = $1 AND state <> 2 AND hash IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(ns);
        for h in batch {
            q = q.bind(h.as_bytes().to_vec());
        }
        for row in q.fetch_all(&mut *conn).await? {
            let bytes: Vec<u8> = row.try_get(0)?;
            if let Ok(arr) = <[u8; 32]>::try_from(bytes) {
                present.insert(ChunkHash::from_bytes(arr));
            }
        }
    }
    Ok(wanted
        .into_iter()
        .filter(|h| !present.contains(h))
        .collect())
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
/// bytes in its pack, reclaimed by compaction).
pub async fn record_chunks(
    conn: &mut AnyConnection,
    ns: i64,
    pack_id: &str,
    chunks: &[ChunkLocation],
) -> Result<(), sqlx::Error> {
    let now = crate::db::now_ms();
    for c in chunks {
        sqlx::query(
            "INSERT INTO chunks (namespace_id, hash, raw_len, pack_id, pack_offset, stored_len, codec, state, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8) ON CONFLICT (namespace_id, hash) DO NOTHING",
        )
        .bind(ns)
        .bind(c.hash.as_bytes().to_vec())
        .bind(i64::from(c.raw_len))
        .bind(pack_id)
        .bind(super::to_db(c.offset))
        .bind(i64::from(c.stored_len))
        .bind(c.codec)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
