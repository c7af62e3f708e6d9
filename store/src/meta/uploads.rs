//! Upload sessions, their registered parts, and the packs they write.

use driftless_protocol::{ChunkHash, NamespaceId, PartChunk, StoredCodec};
use sqlx::{AnyConnection, Row};

use super::to_db;
use crate::db::{Db, now_ms};

/// An upload session row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Folder.
    pub namespace: NamespaceId,
    /// Session id (`<namespace>-<random>`).
    pub id: String,
    /// Owner (only they may use it).
    pub user_id: i64,
    /// Device that created it.
    pub device_id: i64,
    /// Pack the session writes.
    pub pack_id: String,
    /// S3 multipart upload id.
    pub s3_upload_id: String,
    /// `open`, `committed`, `aborted` or `expired`.
    pub state: String,
    /// JSON of the commit results, once committed.
    pub results: Option<String>,
    /// Expiry, ms since the epoch.
    pub expires_at_ms: i64,
    /// A commit runs until then (ms since the epoch), if one started.
    pub committing_until_ms: Option<i64>,
}

/// A part as registered (what the presigned URL was signed for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// 1..=10,000.
    pub part_number: u32,
    /// Registered size.
    pub size: u64,
    /// Base64 CRC32C signed into the URL.
    pub checksum: String,
    /// The chunks it holds, in order.
    pub chunks: Vec<PartChunk>,
}

const PART_CHUNK: usize = 41;

fn encode_chunks(chunks: &[PartChunk]) -> Vec<u8> {
    let mut b = Vec::with_capacity(chunks.len() * PART_CHUNK);
    for c in chunks {
        b.extend_from_slice(c.hash.as_bytes());
        b.extend_from_slice(&c.raw_len.to_le_bytes());
        b.extend_from_slice(&c.stored_len.to_le_bytes());
        b.push(match c.codec {
            StoredCodec::None => 0,
            StoredCodec::Zstd => 1,
        });
    }
    b
}

fn decode_chunks(b: &[u8]) -> Vec<PartChunk> {
    b.chunks_exact(PART_CHUNK)
        .map(|e| {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&e[..32]);
            let word = |at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
            PartChunk {
                hash: ChunkHash::from_bytes(hash),
                raw_len: word(32),
                stored_len: word(36),
                codec: if e[40] == 1 {
                    StoredCodec::Zstd
                } else {
                    StoredCodec::None
                },
            }
        })
        .collect()
}

/// Rows per multi-row `INSERT` (4 values each: well under every
/// database's parameter limit).
const INSERT_ROWS: usize = 250;

/// Stores a new open session with its pending operations (`request`, JSON),
/// its pack (state `uploading`) and the chunks its files name (`chunks`:
/// distinct hashes with their raw lengths).
pub async fn create_session(
    db: &Db,
    s: &Session,
    request: &str,
    chunks: &[(ChunkHash, u32)],
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    insert_session_chunks(&mut tx, s.namespace, &s.id, chunks).await?;
    let ns = to_db(s.namespace.0);
    let now = now_ms();
    sqlx::query(
        "INSERT INTO upload_sessions (namespace_id, id, user_id, device_id, pack_id, s3_upload_id, state, \
         created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8)",
    )
    .bind(ns)
    .bind(&s.id)
    .bind(s.user_id)
    .bind(s.device_id)
    .bind(&s.pack_id)
    .bind(&s.s3_upload_id)
    .bind(now)
    .bind(s.expires_at_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO upload_requests (namespace_id, upload_id, request) VALUES ($1, $2, $3)",
    )
    .bind(ns)
    .bind(&s.id)
    .bind(request)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO packs (namespace_id, id, upload_id, state, created_at_ms, device_id) \
         VALUES ($1, $2, $3, 'uploading', $4, $5)",
    )
    .bind(ns)
    .bind(&s.pack_id)
    .bind(&s.id)
    .bind(now)
    .bind(s.device_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

async fn insert_session_chunks(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    id: &str,
    chunks: &[(ChunkHash, u32)],
) -> Result<(), sqlx::Error> {
    for batch in chunks.chunks(INSERT_ROWS) {
        let rows: Vec<String> = (0..batch.len())
            .map(|i| format!("($1, $2, ${}, ${})", 3 + 2 * i, 4 + 2 * i))
            .collect();
        let sql = format!(
            "INSERT INTO upload_chunks (namespace_id, upload_id, hash, raw_len) VALUES {} \
             ON CONFLICT (namespace_id, upload_id, hash) DO NOTHING",
            rows.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(to_db(ns.0)).bind(id);
        for (h, len) in batch {
            q = q.bind(h.as_bytes().to_vec()).bind(i64::from(*len));
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Whether a session has its chunk list (sessions opened before it was
/// kept have none until [`backfill_session_chunks`]).
pub async fn has_session_chunks(db: &Db, ns: NamespaceId, id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT 1 AS one FROM upload_chunks WHERE namespace_id = $1 AND upload_id = $2 LIMIT 1",
    )
    .bind(to_db(ns.0))
    .bind(id)
    .fetch_optional(db.pool())
    .await?
    .is_some())
}

/// Writes the chunk list of a session opened before it was kept.
pub async fn backfill_session_chunks(
    db: &Db,
    ns: NamespaceId,
    id: &str,
    chunks: &[(ChunkHash, u32)],
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    insert_session_chunks(&mut tx, ns, id, chunks).await?;
    tx.commit().await
}

/// Why a part's chunks cannot be registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimRefused {
    /// A chunk the session's files do not name.
    NotInSession(ChunkHash),
    /// A chunk named with another raw length than the files give it.
    Length {
        /// The chunk.
        hash: ChunkHash,
        /// What the files say.
        expected: u32,
    },
    /// A chunk already registered in another part.
    InOtherPart(ChunkHash, u32),
}

/// Registers the part's chunks (distinct, with their raw lengths) as held
/// by part `part`: each must be one the session's files name, at that
/// length, and in no other part of the session (a part may be registered
/// again with the same chunks). Reads and writes only the part's chunks,
/// whatever the session's size.
pub async fn claim_chunks(
    db: &Db,
    ns: NamespaceId,
    id: &str,
    part: u32,
    chunks: &[(ChunkHash, u32)],
) -> Result<Result<(), ClaimRefused>, sqlx::Error> {
    let mut tx = db.begin().await?;
    // A part registered again (resumed, or cut anew) holds what it says now.
    sqlx::query(
        "UPDATE upload_chunks SET part_number = NULL WHERE namespace_id = $1 AND upload_id = $2 \
         AND part_number = $3",
    )
    .bind(to_db(ns.0))
    .bind(id)
    .bind(i64::from(part))
    .execute(&mut *tx)
    .await?;
    for batch in chunks.chunks(BATCH_HASHES) {
        let list: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT hash, raw_len, part_number FROM upload_chunks \
             WHERE namespace_id = $1 AND upload_id = $2 AND hash IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(to_db(ns.0)).bind(id);
        for (h, _) in batch {
            q = q.bind(h.as_bytes().to_vec());
        }
        let mut known = std::collections::HashMap::new();
        for r in q.fetch_all(&mut *tx).await? {
            let Ok(h) = <[u8; 32]>::try_from(r.try_get::<Vec<u8>, _>("hash")?) else {
                continue;
            };
            let len: i64 = r.try_get("raw_len")?;
            let held: Option<i64> = r.try_get("part_number")?;
            known.insert(ChunkHash::from_bytes(h), (len, held));
        }
        for (h, len) in batch {
            match known.get(h) {
                None => return Ok(Err(ClaimRefused::NotInSession(*h))),
                Some((expected, _)) if *expected != i64::from(*len) => {
                    return Ok(Err(ClaimRefused::Length {
                        hash: *h,
                        expected: u32::try_from(*expected).unwrap_or(0),
                    }));
                }
                Some((_, Some(other))) if *other != i64::from(part) => {
                    return Ok(Err(ClaimRefused::InOtherPart(
                        *h,
                        u32::try_from(*other).unwrap_or(0),
                    )));
                }
                Some(_) => {}
            }
        }
        // Only chunks free or already this part's: a part registered at the
        // same moment cannot take one too (the rows it won are not counted).
        let sql = format!(
            "UPDATE upload_chunks SET part_number = $3 WHERE namespace_id = $1 AND upload_id = $2 \
             AND (part_number IS NULL OR part_number = $3) AND hash IN ({})",
            (0..batch.len())
                .map(|i| format!("${}", i + 4))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut q = sqlx::query(&sql)
            .bind(to_db(ns.0))
            .bind(id)
            .bind(i64::from(part));
        for (h, _) in batch {
            q = q.bind(h.as_bytes().to_vec());
        }
        if q.execute(&mut *tx).await?.rows_affected() != batch.len() as u64 {
            // Rolled back with the transaction.
            return Ok(Err(ClaimRefused::InOtherPart(batch[0].0, 0)));
        }
    }
    tx.commit().await?;
    Ok(Ok(()))
}

/// Hashes per `IN (…)` list.
const BATCH_HASHES: usize = 500;

/// A session by id.
pub async fn session(db: &Db, ns: NamespaceId, id: &str) -> Result<Option<Session>, sqlx::Error> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM upload_sessions WHERE namespace_id = $1 AND id = $2"
    );
    let row = sqlx::query(&sql)
        .bind(to_db(ns.0))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(session_row).transpose()
}

const SESSION_COLUMNS: &str = "namespace_id, id, user_id, device_id, pack_id, s3_upload_id, state, \
    results, expires_at_ms, committing_until_ms";

/// The pending operations (JSON) a session was opened with.
pub async fn session_request(
    db: &Db,
    ns: NamespaceId,
    id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT request FROM upload_requests WHERE namespace_id = $1 AND upload_id = $2",
    )
    .bind(to_db(ns.0))
    .bind(id)
    .fetch_optional(db.pool())
    .await
}

fn session_row(r: &sqlx::any::AnyRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        namespace: NamespaceId(super::from_db(r.try_get(0)?)),
        id: r.try_get(1)?,
        user_id: r.try_get(2)?,
        device_id: r.try_get(3)?,
        pack_id: r.try_get(4)?,
        s3_upload_id: r.try_get::<Option<String>, _>(5)?.unwrap_or_default(),
        state: r.try_get(6)?,
        results: r.try_get(7)?,
        expires_at_ms: r.try_get(8)?,
        committing_until_ms: r.try_get::<Option<i64>, _>(9)?,
    })
}

/// Registers (or re-registers) a part.
pub async fn put_part(db: &Db, ns: NamespaceId, upload: &str, p: &Part) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO upload_parts (namespace_id, upload_id, part_number, size, checksum, chunks) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (namespace_id, upload_id, part_number) \
         DO UPDATE SET size = excluded.size, checksum = excluded.checksum, chunks = excluded.chunks",
    )
    .bind(to_db(ns.0))
    .bind(upload)
    .bind(i64::from(p.part_number))
    .bind(to_db(p.size))
    .bind(&p.checksum)
    .bind(encode_chunks(&p.chunks))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The registered parts, by part number.
pub async fn parts(db: &Db, ns: NamespaceId, upload: &str) -> Result<Vec<Part>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT part_number, size, checksum, chunks FROM upload_parts \
         WHERE namespace_id = $1 AND upload_id = $2 ORDER BY part_number",
    )
    .bind(to_db(ns.0))
    .bind(upload)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Part {
                part_number: r.try_get::<i64, _>(0)? as u32,
                size: r.try_get::<i64, _>(1)? as u64,
                checksum: r.try_get(2)?,
                chunks: decode_chunks(&r.try_get::<Vec<u8>, _>(3)?),
            })
        })
        .collect()
}

/// Marks the session's pack complete with its size; its live bytes are
/// those of the chunk rows located in it (a chunk the folder already held
/// keeps its first copy, so its bytes here are dead from the start).
pub async fn complete_pack(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    pack_id: &str,
    total: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE packs SET state = 'complete', total_bytes = $1, live_bytes = (SELECT \
         CAST(COALESCE(SUM(c.stored_len), 0) AS BIGINT) FROM chunks c WHERE c.namespace_id = $2 \
         AND c.pack_id = $3) WHERE namespace_id = $2 AND id = $3",
    )
    .bind(to_db(total))
    .bind(to_db(ns.0))
    .bind(pack_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the commit lease of the open session until `until_ms`, as
/// `token`; `false` if another commit holds it and has not let it lapse.
pub async fn begin_commit(
    db: &Db,
    ns: NamespaceId,
    id: &str,
    now_ms: i64,
    until_ms: i64,
    token: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE upload_sessions SET committing_until_ms = $1, commit_token = $5 \
         WHERE namespace_id = $2 AND id = $3 AND state = 'open' \
         AND (committing_until_ms IS NULL OR committing_until_ms < $4)",
    )
    .bind(until_ms)
    .bind(to_db(ns.0))
    .bind(id)
    .bind(now_ms)
    .bind(token)
    .execute(db.pool())
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Extends the lease `token` holds to `until_ms`; `false` if it lost it
/// (it lapsed and another commit took it, or the session closed).
pub async fn renew_commit(
    db: &Db,
    ns: NamespaceId,
    id: &str,
    until_ms: i64,
    token: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE upload_sessions SET committing_until_ms = $1 \
         WHERE namespace_id = $2 AND id = $3 AND state = 'open' AND commit_token = $4",
    )
    .bind(until_ms)
    .bind(to_db(ns.0))
    .bind(id)
    .bind(token)
    .execute(db.pool())
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Lets go of the lease `token` holds (a commit that failed), so that a
/// retry may start at once.
pub async fn end_commit(
    db: &Db,
    ns: NamespaceId,
    id: &str,
    token: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE upload_sessions SET committing_until_ms = NULL, commit_token = NULL \
         WHERE namespace_id = $1 AND id = $2 AND commit_token = $3",
    )
    .bind(to_db(ns.0))
    .bind(id)
    .bind(token)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Closes the session as committed with `results`, if `token` still holds
/// its lease; `false` if another commit took it over (its results, from
/// the same idempotent operations, stand).
pub async fn finish_commit(
    db: &Db,
    ns: NamespaceId,
    id: &str,
    results: &str,
    token: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let r = sqlx::query(
        "UPDATE upload_sessions SET state = 'committed', results = $1, committing_until_ms = NULL \
         WHERE namespace_id = $2 AND id = $3 AND state = 'open' AND commit_token = $4",
    )
    .bind(results)
    .bind(to_db(ns.0))
    .bind(id)
    .bind(token)
    .execute(&mut *tx)
    .await?;
    let finished = r.rows_affected() == 1;
    if finished {
        forget_pending(&mut tx, ns, id).await?;
    }
    tx.commit().await?;
    Ok(finished)
}

/// Drops what only an open session needs: its pending operations and its
/// chunk list (a closed session answers from its results).
async fn forget_pending(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    id: &str,
) -> Result<(), sqlx::Error> {
    for table in ["upload_requests", "upload_chunks"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE namespace_id = $1 AND upload_id = $2"
        ))
        .bind(to_db(ns.0))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Moves an open session to `state` (`committed` with results, `aborted`, `expired`).
pub async fn close_session(
    db: &Db,
    ns: NamespaceId,
    id: &str,
    state: &str,
    results: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE upload_sessions SET state = $1, results = $2 WHERE namespace_id = $3 AND id = $4",
    )
    .bind(state)
    .bind(results)
    .bind(to_db(ns.0))
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if state != "committed" {
        retire_unfinished_pack(&mut tx, ns, id).await?;
    }
    forget_pending(&mut tx, ns, id).await?;
    tx.commit().await
}

/// A session that will never commit: its pack (never assembled) is gone.
pub async fn retire_unfinished_pack(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    session: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE packs SET state = 'deleted', deleted_at_ms = $1 WHERE namespace_id = $2 \
         AND upload_id = $3 AND state = 'uploading'",
    )
    .bind(crate::db::now_ms())
    .bind(to_db(ns.0))
    .bind(session)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Up to `limit` sessions still open that expired before `cutoff_ms`.
pub async fn expired_open(
    db: &Db,
    cutoff_ms: i64,
    limit: usize,
) -> Result<Vec<Session>, sqlx::Error> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM upload_sessions WHERE state = 'open' AND expires_at_ms < $1 \
         ORDER BY expires_at_ms LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(cutoff_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(session_row).collect()
}

/// Marks an open session expired and its unfinished pack deleted; false if
/// the session was no longer open.
pub async fn expire_session(db: &Db, ns: NamespaceId, id: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "UPDATE upload_sessions SET state = 'expired' WHERE namespace_id = $1 AND id = $2 AND state = 'open'",
    )
    .bind(to_db(ns.0))
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if done == 1 {
        retire_unfinished_pack(&mut tx, ns, id).await?;
        forget_pending(&mut tx, ns, id).await?;
    }
    tx.commit().await?;
    Ok(done == 1)
}
