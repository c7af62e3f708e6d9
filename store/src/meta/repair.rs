//! Reporting damage: when chunks of a folder turn out corrupt, every live
//! file that uses one gets a `repair` entry in the journal, so the devices
//! that hold its bytes hear of it on their changes feed and upload them again.

use std::collections::HashSet;

use driftless_protocol::{ChangeEntry, ChangeKind, ChunkHash, ContentHash, NamespaceId, Rev, Seq};
use sqlx::{Any, Row, Transaction};

use super::commit::append_journal;
use super::manifest::Manifest;
use super::{from_db, to_db};
use crate::db::now_ms;

/// Live files scanned per query while looking for users of a chunk.
const PAGE: i64 = 1000;

/// A live file whose content uses a corrupt chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    /// Its path.
    pub path: String,
    /// The live revision.
    pub rev: Rev,
    /// Its size.
    pub size: u64,
    /// Its content hash: what a device's copy must match to re-upload.
    pub content_hash: Option<ContentHash>,
    /// Its modification time (ms).
    pub mtime_ms: i64,
}

/// The live files of `ns` whose manifest holds any of `corrupt`. Scans the
/// folder's live files page by page: corruption is rare, and an index from
/// chunk to file would cost every commit.
pub async fn live_users(
    tx: &mut Transaction<'static, Any>,
    ns: NamespaceId,
    corrupt: &HashSet<ChunkHash>,
) -> Result<Vec<Damaged>, sqlx::Error> {
    let mut out = Vec::new();
    if corrupt.is_empty() {
        return Ok(out);
    }
    let mut after = String::new();
    loop {
        let rows = sqlx::query(
            "SELECT f.path, f.rev, v.manifest, v.size, v.content_hash, v.mtime_ms FROM files f JOIN versions v \
             ON v.namespace_id = f.namespace_id AND v.path = f.path AND v.rev = f.rev \
             WHERE f.namespace_id = $1 AND f.deleted = 0 AND f.path > $2 ORDER BY f.path LIMIT $3",
        )
        .bind(to_db(ns.0))
        .bind(&after)
        .bind(PAGE)
        .fetch_all(&mut **tx)
        .await?;
        for r in &rows {
            let manifest = Manifest::from_bytes(r.try_get(2)?).unwrap_or_default();
            if manifest.hashes().any(|h| corrupt.contains(&h)) {
                out.push(Damaged {
                    path: r.try_get(0)?,
                    rev: Rev(from_db(r.try_get(1)?)),
                    size: from_db(r.try_get(3)?),
                    content_hash: r
                        .try_get::<Option<Vec<u8>>, _>(4)?
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .map(ContentHash::from_bytes),
                    mtime_ms: r.try_get(5)?,
                });
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == PAGE => after = last.try_get(0)?,
            _ => return Ok(out),
        }
    }
}

/// Appends one `repair` entry per damaged file (each its own seq, under
/// the namespace row lock like any commit); returns the seqs.
pub async fn report(
    tx: &mut Transaction<'static, Any>,
    ns: NamespaceId,
    damaged: &[Damaged],
) -> Result<Vec<Seq>, sqlx::Error> {
    let mut seqs = Vec::with_capacity(damaged.len());
    for d in damaged {
        let seq: i64 = sqlx::query(
            "UPDATE namespaces SET head_seq = head_seq + 1 WHERE id = $1 RETURNING head_seq",
        )
        .bind(to_db(ns.0))
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
        let seq = Seq(from_db(seq));
        let now = now_ms();
        let entry = ChangeEntry {
            seq: Some(seq),
            path: d.path.clone(),
            from: None,
            rev: d.rev,
            kind: ChangeKind::Repair,
            size: d.size,
            content_hash: d.content_hash,
            mtime_ms: d.mtime_ms,
            device_id: None,
            committed_at_ms: now,
        };
        append_journal(tx, ns, &entry).await?;
        seqs.push(seq);
    }
    Ok(seqs)
}
