//! Version rows: the file version a commit writes, and the one it reads
//! back when an operation names an earlier revision.

use super::*;

/// The columns of a version that vary by operation.
pub(super) struct VersionRow {
    pub(super) size: u64,
    pub(super) content_hash: Option<ContentHash>,
    pub(super) mtime_ms: i64,
    pub(super) chunking: ChunkingSpec,
    pub(super) manifest: Vec<u8>,
    pub(super) deleted: bool,
    pub(super) moved_from: Option<String>,
}

impl VersionRow {
    pub(super) fn tombstone(mtime_ms: i64, moved_from: Option<String>) -> Self {
        Self {
            size: 0,
            content_hash: None,
            mtime_ms,
            chunking: ChunkingSpec {
                min: 0,
                avg: 0,
                max: 0,
            },
            manifest: Vec::new(),
            deleted: true,
            moved_from,
        }
    }
}

/// The columns a move carries over from the version at `from_rev`.
pub(super) async fn version_at(
    tx: &mut Transaction<'static, Any>,
    ns: NamespaceId,
    path: &SyncPath,
    rev: Rev,
) -> Result<VersionRow, sqlx::Error> {
    let v = crate::meta::versions::version_in(tx, ns, path, Some(rev))
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(VersionRow {
        size: v.size,
        content_hash: v.content_hash,
        mtime_ms: v.mtime_ms,
        chunking: v.chunking,
        manifest: v.manifest.as_bytes().to_vec(),
        deleted: false,
        moved_from: None,
    })
}

pub(super) async fn write_version(
    tx: &mut Transaction<'static, Any>,
    c: &Commit,
    rev: Rev,
    path: &SyncPath,
    v: &VersionRow,
) -> Result<(), sqlx::Error> {
    let ns = to_db(c.namespace.0);
    sqlx::query(
        "INSERT INTO versions (namespace_id, path, rev, deleted, size, content_hash, mtime_ms, chunk_min, chunk_avg, \
         chunk_max, manifest, moved_from, device_id, committed_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(ns)
    .bind(path.as_str())
    .bind(to_db(rev.0))
    .bind(i64::from(v.deleted))
    .bind(to_db(v.size))
    .bind(v.content_hash.map(|h| h.as_bytes().to_vec()))
    .bind(v.mtime_ms)
    .bind(i64::from(v.chunking.min))
    .bind(i64::from(v.chunking.avg))
    .bind(i64::from(v.chunking.max))
    .bind(&v.manifest)
    .bind(v.moved_from.as_deref())
    .bind(c.device.map(|d| to_db(d.0)))
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO files (namespace_id, path, collision_key, rev, deleted) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (namespace_id, path) DO UPDATE SET rev = excluded.rev, deleted = excluded.deleted",
    )
    .bind(ns)
    .bind(path.as_str())
    .bind(path.collision_key())
    .bind(to_db(rev.0))
    .bind(i64::from(v.deleted))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
