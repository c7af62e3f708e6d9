//! Reading versions and where their chunks are stored.

use std::collections::HashMap;

use driftless_protocol::{ChunkHash, ChunkingSpec, ContentHash, NamespaceId, Rev, SyncPath};
use sqlx::{AnyConnection, Row};

use super::manifest::Manifest;
use super::{from_db, to_db};
use crate::db::Db;

/// A stored version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Revision.
    pub rev: Rev,
    /// Tombstone?
    pub deleted: bool,
    /// Size.
    pub size: u64,
    /// Content hash (`None` for a tombstone).
    pub content_hash: Option<ContentHash>,
    /// Modification time (ms).
    pub mtime_ms: i64,
    /// Chunking parameters.
    pub chunking: ChunkingSpec,
    /// Chunks.
    pub manifest: Manifest,
}

/// The version at `rev`, or the head version when `rev` is `None`.
pub async fn version(
    db: &Db,
    ns: NamespaceId,
    path: &SyncPath,
    rev: Option<Rev>,
) -> Result<Option<Version>, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    version_in(&mut conn, ns, path, rev).await
}

/// [`version`] on a given connection (inside a transaction, say).
pub async fn version_in(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    path: &SyncPath,
    rev: Option<Rev>,
) -> Result<Option<Version>, sqlx::Error> {
    let sql = "SELECT rev, deleted, size, content_hash, mtime_ms, chunk_min, chunk_avg, chunk_max, manifest \
               FROM versions v WHERE v.namespace_id = $1 AND v.path = $2 AND v.rev = \
               COALESCE($3, (SELECT f.rev FROM files f WHERE f.namespace_id = $1 AND f.path = $2))";
    let row = sqlx::query(sql)
        .bind(to_db(ns.0))
        .bind(path.as_str())
        .bind(rev.map(|r| to_db(r.0)))
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(Version {
            rev: Rev(from_db(r.try_get(0)?)),
            deleted: r.try_get::<i64, _>(1)? == 1,
            size: from_db(r.try_get(2)?),
            content_hash: content_hash_column(r.try_get(3)?),
            mtime_ms: r.try_get(4)?,
            chunking: ChunkingSpec {
                min: from_db(r.try_get(5)?) as u32,
                avg: from_db(r.try_get(6)?) as u32,
                max: from_db(r.try_get(7)?) as u32,
            },
            manifest: Manifest::from_bytes(r.try_get(8)?).unwrap_or_default(),
        })
    })
    .transpose()
}

/// A stored `content_hash` column (32 bytes or NULL).
fn content_hash_column(bytes: Option<Vec<u8>>) -> Option<ContentHash> {
    bytes
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .map(ContentHash::from_bytes)
}

/// Where a chunk's stored bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Pack.
    pub pack_id: String,
    /// Offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub stored_len: u32,
    /// Raw length.
    pub raw_len: u32,
    /// 0 raw, 1 zstd.
    pub codec: i64,
    /// 0 pending, 1 verified, 2 corrupt.
    pub state: i64,
}

/// The stored location of each of `hashes` the namespace holds.
pub async fn locations(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    hashes: &[ChunkHash],
) -> Result<HashMap<ChunkHash, Stored>, sqlx::Error> {
    let mut out = HashMap::with_capacity(hashes.len());
    for batch in hashes.chunks(500) {
        let placeholders: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT hash, pack_id, pack_offset, stored_len, raw_len, codec, state FROM chunks \
             WHERE namespace_id = $1 AND hash IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(to_db(ns.0));
        for h in batch {
            q = q.bind(h.as_bytes().to_vec());
        }
        for r in q.fetch_all(&mut *conn).await? {
            let Ok(hash) = <[u8; 32]>::try_from(r.try_get::<Vec<u8>, _>(0)?) else {
                continue;
            };
            out.insert(
                ChunkHash::from_bytes(hash),
                Stored {
                    pack_id: r.try_get(1)?,
                    offset: from_db(r.try_get(2)?),
                    stored_len: from_db(r.try_get(3)?) as u32,
                    raw_len: from_db(r.try_get(4)?) as u32,
                    codec: r.try_get(5)?,
                    state: r.try_get(6)?,
                },
            );
        }
    }
    Ok(out)
}

/// One entry of a file's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Revision.
    pub rev: Rev,
    /// Tombstone?
    pub deleted: bool,
    /// Size.
    pub size: u64,
    /// Content hash (`None` for a tombstone).
    pub content_hash: Option<ContentHash>,
    /// Modification time (ms).
    pub mtime_ms: i64,
    /// Path it was moved from, for a move.
    pub moved_from: Option<String>,
    /// Device that wrote it.
    pub device_id: Option<u64>,
    /// Commit time (ms).
    pub committed_at_ms: i64,
}

/// Every version of `path`, newest first (at most `limit`).
pub async fn history(
    db: &Db,
    ns: NamespaceId,
    path: &SyncPath,
    limit: u32,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT rev, deleted, size, content_hash, mtime_ms, moved_from, device_id, committed_at_ms FROM versions \
         WHERE namespace_id = $1 AND path = $2 ORDER BY rev DESC LIMIT $3",
    )
    .bind(to_db(ns.0))
    .bind(path.as_str())
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(HistoryEntry {
                rev: Rev(from_db(r.try_get(0)?)),
                deleted: r.try_get::<i64, _>(1)? == 1,
                size: from_db(r.try_get(2)?),
                content_hash: content_hash_column(r.try_get(3)?),
                mtime_ms: r.try_get(4)?,
                moved_from: r.try_get(5)?,
                device_id: r.try_get::<Option<i64>, _>(6)?.map(from_db),
                committed_at_ms: r.try_get(7)?,
            })
        })
        .collect()
}
