//! Committing one file operation: version + head + journal + outbox + op
//! record in one transaction.
//!
//! The transaction starts by incrementing `namespaces.head_seq`: the row lock
//! this takes serializes the namespace's commits (PostgreSQL; SQLite has one
//! writer anyway) and the returned value is the new journal `seq`. Every
//! outcome other than a commit rolls back, so `seq` stays gap-free.

use driftless_protocol::{
    ChangeEntry, ChangeKind, ChunkingSpec, ContentHash, DeviceId, ErrorCode, JournalEvent,
    NamespaceId, OpId, Outcome, Rev, Seq, SyncPath,
};
use sqlx::{Any, Row, Transaction};

use super::chunks::{Usable, usable_lengths};
use super::manifest::Manifest;
use super::{from_db, to_db};
use crate::db::{Db, now_ms};

mod batch;
mod versions;
pub use batch::{PUTS_PER_TX, PUTS_PER_TX_SQLITE, commit_many};
use versions::{VersionRow, version_at, write_version};

/// What an operation does to the tree.
#[derive(Clone, Debug)]
pub enum FileChange {
    /// New content at `path`.
    Put {
        /// Target path.
        path: SyncPath,
        /// Revision the client last saw (`None`: a new file).
        base_rev: Option<Rev>,
        /// Modification time (ms).
        mtime_ms: i64,
        /// Chunking parameters.
        chunking: ChunkingSpec,
        /// The chunks, in order.
        manifest: Manifest,
        /// Content hash (checked against the manifest by the caller).
        content_hash: ContentHash,
    },
    /// A tombstone at `path`.
    Delete {
        /// The file.
        path: SyncPath,
        /// The revision the client deletes.
        base_rev: Rev,
    },
    /// `from` moves to `to`, bytes unchanged.
    Move {
        /// Current path.
        from: SyncPath,
        /// Revision at `from` the client saw.
        from_rev: Rev,
        /// New path.
        to: SyncPath,
        /// Revision at `to` being replaced (`None`: `to` is free).
        base_rev: Option<Rev>,
    },
}

/// One operation to commit.
#[derive(Clone, Debug)]
pub struct Commit {
    /// The folder.
    pub namespace: NamespaceId,
    /// Client operation id (idempotency key).
    pub op_id: OpId,
    /// Digest of the operation as sent: a reused id with other content is refused.
    pub digest: [u8; 32],
    /// The writing device.
    pub device: Option<DeviceId>,
    /// Which stored chunks a put may name: a client's upload names
    /// verified chunks and its device's own (`Usable::OfferedTo`), never
    /// another device's unproven copy; a restore names a version already
    /// committed (`Usable::Stored`).
    pub reuse: Usable,
    /// The change.
    pub change: FileChange,
}

/// The current head of a path.
struct Head {
    rev: Rev,
    deleted: bool,
}

/// Commits one operation; returns the outcome to report (never an `Err` for
/// a conflict or a refused operation, only for database failures).
pub async fn commit(db: &Db, c: &Commit) -> Result<Outcome, sqlx::Error> {
    let mut tx = db.begin().await?;
    let ns = to_db(c.namespace.0);
    let seq_row = sqlx::query(
        "UPDATE namespaces SET head_seq = head_seq + 1 WHERE id = $1 RETURNING head_seq",
    )
    .bind(ns)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(seq_row) = seq_row else {
        return Ok(error(ErrorCode::NotFound, "no such folder"));
    };
    let seq = Seq(from_db(seq_row.try_get(0)?));

    if let Some(previous) = recorded_outcome(&mut tx, ns, c).await? {
        return Ok(previous); // dropping `tx` rolls the seq back
    }
    let outcome = match apply(&mut tx, c, seq).await? {
        Ok(entry) => {
            append_journal(&mut tx, c.namespace, &entry).await?;
            Outcome::Committed {
                rev: entry.rev,
                seq,
            }
        }
        Err(refused) => return Ok(refused),
    };
    sqlx::query("INSERT INTO ops (namespace_id, op_id, digest, result, created_at_ms) VALUES ($1, $2, $3, $4, $5)")
        .bind(ns)
        .bind(c.op_id.as_str())
        .bind(&c.digest[..])
        .bind(serde_json::to_string(&outcome).map_err(|e| sqlx::Error::Encode(e.into()))?)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(outcome)
}

/// The first result of this op id, or `OpIdReused` if it named another operation.
async fn recorded_outcome(
    tx: &mut Transaction<'static, Any>,
    ns: i64,
    c: &Commit,
) -> Result<Option<Outcome>, sqlx::Error> {
    let row = sqlx::query("SELECT digest, result FROM ops WHERE namespace_id = $1 AND op_id = $2")
        .bind(ns)
        .bind(c.op_id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let digest: Vec<u8> = row.try_get(0)?;
    if digest != c.digest {
        return Ok(Some(error(
            ErrorCode::OpIdReused,
            "this operation id was used for another operation",
        )));
    }
    let result: String = row.try_get(1)?;
    serde_json::from_str(&result)
        .map(Some)
        .map_err(|e| sqlx::Error::Decode(e.into()))
}

fn error(code: ErrorCode, detail: &str) -> Outcome {
    Outcome::Error {
        code,
        detail: detail.to_owned(),
    }
}

async fn head(
    tx: &mut Transaction<'static, Any>,
    ns: i64,
    path: &SyncPath,
) -> Result<Option<Head>, sqlx::Error> {
    let row = sqlx::query("SELECT rev, deleted FROM files WHERE namespace_id = $1 AND path = $2")
        .bind(ns)
        .bind(path.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| {
        Ok(Head {
            rev: Rev(from_db(r.try_get(0)?)),
            deleted: r.try_get::<i64, _>(1)? == 1,
        })
    })
    .transpose()
}

/// Whether `path` can be a live file given the others: no folder on its
/// way is a file, it is not a folder itself, and each folder on its way is
/// spelled as the live files already in it spell it (two spellings that
/// differ only by case or normalization are one folder on macOS and
/// Windows). `None` when it fits, else the refusal.
async fn misfit(
    tx: &mut Transaction<'static, Any>,
    ns: i64,
    path: &SyncPath,
) -> Result<Option<Outcome>, sqlx::Error> {
    // Collision keys compare byte-wise (PostgreSQL's default collation
    // may not: say so); SQLite's TEXT is byte-wise already.
    let c = if tx.backend_name() == "PostgreSQL" {
        " COLLATE \"C\""
    } else {
        ""
    };
    let mut folders = Vec::new();
    let mut at = path.parent();
    while let Some(p) = at {
        at = p.parent();
        folders.push(p);
    }
    // 1. A folder on the way is a live file.
    if !folders.is_empty() {
        let list: Vec<String> = (0..folders.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT path FROM files WHERE namespace_id = $1 AND deleted = 0 \
             AND collision_key IN ({}) LIMIT 1",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(ns);
        for f in &folders {
            q = q.bind(f.collision_key());
        }
        if let Some(r) = q.fetch_optional(&mut **tx).await? {
            let file: String = r.try_get("path")?;
            return Ok(Some(error(
                ErrorCode::PathUnderFile,
                &format!("{file:?} is a file, so it cannot hold {:?}", path.as_str()),
            )));
        }
    }
    // 2. The path is a folder of live files; 3. a folder on the way is
    // spelled otherwise by the live files in it (one of them says how all
    // are spelled: no commit lets two spellings in).
    let under = format!(
        "SELECT path FROM files WHERE namespace_id = $1 AND deleted = 0 \
         AND collision_key{c} >= $2 AND collision_key{c} < $3 LIMIT 1"
    );
    let inside = |key: String| (format!("{key}/"), format!("{key}0"));
    let (lo, hi) = inside(path.collision_key());
    if let Some(r) = sqlx::query(&under)
        .bind(ns)
        .bind(lo)
        .bind(hi)
        .fetch_optional(&mut **tx)
        .await?
    {
        let file: String = r.try_get("path")?;
        return Ok(Some(error(
            ErrorCode::PathIsFolder,
            &format!("{:?} is a folder (it holds {file:?})", path.as_str()),
        )));
    }
    for f in &folders {
        let (lo, hi) = inside(f.collision_key());
        let Some(r) = sqlx::query(&under)
            .bind(ns)
            .bind(lo)
            .bind(hi)
            .fetch_optional(&mut **tx)
            .await?
        else {
            continue;
        };
        let file: String = r.try_get("path")?;
        let prefix = format!("{}/", f.as_str());
        if !file.starts_with(&prefix) {
            let spelled = &file[..file.len().min(prefix.len().saturating_sub(1))];
            return Ok(Some(error(
                ErrorCode::FolderCollision,
                &format!(
                    "the folder {:?} exists as {spelled:?}: names that differ only by case or normalization are one folder on macOS and Windows",
                    f.as_str()
                ),
            )));
        }
        // Spelled alike here, so alike above too: nothing more to check.
        break;
    }
    Ok(None)
}

/// Another live path that differs from `path` only by case or normalization.
async fn collision(
    tx: &mut Transaction<'static, Any>,
    ns: i64,
    path: &SyncPath,
) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT path FROM files WHERE namespace_id = $1 AND collision_key = $2 AND deleted = 0 AND path <> $3",
    )
    .bind(ns)
    .bind(path.collision_key())
    .bind(path.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| r.try_get(0)).transpose()
}

/// Checks the operation against the tree and writes its version(s). Returns
/// the journal entry, or the outcome to report without committing.
async fn apply(
    tx: &mut Transaction<'static, Any>,
    c: &Commit,
    seq: Seq,
) -> Result<Result<ChangeEntry, Outcome>, sqlx::Error> {
    let ns = to_db(c.namespace.0);
    let rev = Rev(seq.0);
    let now = now_ms();
    let mut entry = ChangeEntry {
        seq: Some(seq),
        path: String::new(),
        from: None,
        rev,
        kind: ChangeKind::Put,
        size: 0,
        content_hash: None,
        mtime_ms: now,
        device_id: c.device,
        committed_at_ms: now,
    };
    match &c.change {
        FileChange::Put {
            path,
            base_rev,
            mtime_ms,
            chunking,
            manifest,
            content_hash,
        } => {
            let current = head(tx, ns, path).await?;
            // A live file must be replaced from its current revision; a deleted
            // or absent one is (re)created whatever the base: edit beats delete.
            if let Some(h) = current.filter(|h| !h.deleted)
                && *base_rev != Some(h.rev)
            {
                return Ok(Err(Outcome::Conflict {
                    current_rev: Some(h.rev),
                }));
            }
            if let Some(other) = collision(tx, ns, path).await? {
                return Ok(Err(error(
                    ErrorCode::PathCollision,
                    &format!("conflicts with existing {other:?}"),
                )));
            }
            if let Some(refused) = misfit(tx, ns, path).await? {
                return Ok(Err(refused));
            }
            let mut seen = std::collections::HashSet::new();
            let wanted: Vec<_> = manifest.hashes().filter(|h| seen.insert(*h)).collect();
            let stored = usable_lengths(tx, ns, c.reuse, &wanted).await?;
            if let Some(refused) = chunk_refusal(manifest, &stored) {
                return Ok(Err(refused));
            }
            let v = VersionRow {
                size: manifest.total_len(),
                content_hash: Some(*content_hash),
                mtime_ms: *mtime_ms,
                chunking: *chunking,
                manifest: manifest.as_bytes().to_vec(),
                deleted: false,
                moved_from: None,
            };
            write_version(tx, c, rev, path, &v).await?;
            entry.path = path.as_str().to_owned();
            entry.size = v.size;
            entry.content_hash = v.content_hash;
            entry.mtime_ms = *mtime_ms;
        }
        FileChange::Delete { path, base_rev } => {
            let Some(h) = head(tx, ns, path).await? else {
                return Ok(Err(error(ErrorCode::NotFound, "no such file")));
            };
            if h.deleted {
                // Already deleted: the delete the client wants has happened.
                return Ok(Err(Outcome::Committed {
                    rev: h.rev,
                    seq: Seq(h.rev.0),
                }));
            }
            if h.rev != *base_rev {
                return Ok(Err(Outcome::Conflict {
                    current_rev: Some(h.rev),
                }));
            }
            let v = VersionRow::tombstone(now, None);
            write_version(tx, c, rev, path, &v).await?;
            entry.path = path.as_str().to_owned();
            entry.kind = ChangeKind::Delete;
        }
        FileChange::Move {
            from,
            from_rev,
            to,
            base_rev,
        } => {
            match head(tx, ns, from).await? {
                Some(h) if !h.deleted && h.rev == *from_rev => {}
                Some(h) if !h.deleted => {
                    return Ok(Err(Outcome::Conflict {
                        current_rev: Some(h.rev),
                    }));
                }
                _ => {
                    return Ok(Err(error(
                        ErrorCode::NotFound,
                        "the file to move does not exist",
                    )));
                }
            }
            if let Some(h) = head(tx, ns, to).await?.filter(|h| !h.deleted)
                && *base_rev != Some(h.rev)
            {
                return Ok(Err(Outcome::Conflict {
                    current_rev: Some(h.rev),
                }));
            }
            let mut v = version_at(tx, c.namespace, from, *from_rev).await?;
            // Tombstone first: a case-only rename (a -> A) must not collide with itself.
            write_version(tx, c, rev, from, &VersionRow::tombstone(now, None)).await?;
            if let Some(other) = collision(tx, ns, to).await? {
                return Ok(Err(error(
                    ErrorCode::PathCollision,
                    &format!("conflicts with existing {other:?}"),
                )));
            }
            if let Some(refused) = misfit(tx, ns, to).await? {
                return Ok(Err(refused));
            }
            v.moved_from = Some(from.as_str().to_owned());
            write_version(tx, c, rev, to, &v).await?;
            entry.path = to.as_str().to_owned();
            entry.from = Some(from.as_str().to_owned());
            entry.kind = ChangeKind::Move;
            entry.size = v.size;
            entry.content_hash = v.content_hash;
            entry.mtime_ms = v.mtime_ms;
        }
    }
    Ok(Ok(entry))
}

/// Why a put whose manifest is `manifest` cannot commit given the usable
/// chunks' lengths `stored`: a chunk not stored, or one named with another
/// length than its stored bytes (every reader would fill the rest of its
/// slot with bytes nobody wrote).
fn chunk_refusal(
    manifest: &Manifest,
    stored: &std::collections::HashMap<driftless_protocol::ChunkHash, u32>,
) -> Option<Outcome> {
    let mut seen = std::collections::HashSet::new();
    let missing: Vec<_> = manifest
        .hashes()
        .filter(|h| seen.insert(*h) && !stored.contains_key(h))
        .collect();
    if let Some(first) = missing.first() {
        return Some(error(
            ErrorCode::ChunkMissing,
            &format!("{} chunks not stored, first {first}", missing.len()),
        ));
    }
    let (i, bad) = manifest
        .specs()
        .enumerate()
        .find(|(_, s)| stored.get(&s.hash) != Some(&s.len))?;
    Some(error(
        ErrorCode::SizeMismatch,
        &format!(
            "chunk {i} ({}) is declared {} bytes but the stored chunk has {}",
            bad.hash,
            bad.len,
            stored.get(&bad.hash).copied().unwrap_or(0)
        ),
    ))
}

/// How a change's kind is stored in `journal.kind`.
fn journal_kind(kind: ChangeKind) -> i64 {
    match kind {
        ChangeKind::Put => 0,
        ChangeKind::Delete => 1,
        ChangeKind::Move => 2,
        ChangeKind::Repair => 3,
    }
}

pub(super) async fn append_journal(
    tx: &mut Transaction<'static, Any>,
    ns: NamespaceId,
    e: &ChangeEntry,
) -> Result<(), sqlx::Error> {
    let seq = e.seq.map(|s| to_db(s.0)).unwrap_or(0);
    let kind = journal_kind(e.kind);
    sqlx::query(
        "INSERT INTO journal (namespace_id, seq, path, rev, kind, moved_from, device_id, committed_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(to_db(ns.0))
    .bind(seq)
    .bind(&e.path)
    .bind(to_db(e.rev.0))
    .bind(kind)
    .bind(e.from.as_deref())
    .bind(e.device_id.map(|d| to_db(d.0)))
    .bind(e.committed_at_ms)
    .execute(&mut **tx)
    .await?;
    let event = JournalEvent {
        v: 1,
        namespace_id: ns,
        seq: e.seq.unwrap_or(Seq(0)),
        change: e.clone(),
    };
    sqlx::query(
        "INSERT INTO outbox (namespace_id, seq, payload, created_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(to_db(ns.0))
    .bind(seq)
    .bind(serde_json::to_string(&event).map_err(|err| sqlx::Error::Encode(err.into()))?)
    .bind(e.committed_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The live revision of each of `paths` that has a live file, in a few
/// statements: [`live_rev`] for a batch.
pub async fn live_revs(
    db: &Db,
    ns: NamespaceId,
    paths: &[&SyncPath],
) -> Result<std::collections::HashMap<SyncPath, Rev>, sqlx::Error> {
    let mut out = std::collections::HashMap::with_capacity(paths.len());
    for batch in paths.chunks(400) {
        let list: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT path, rev FROM files WHERE namespace_id = $1 AND deleted = 0 AND path IN ({})",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(to_db(ns.0));
        for p in batch {
            q = q.bind(p.as_str());
        }
        for r in q.fetch_all(db.pool()).await? {
            let path: String = r.try_get("path")?;
            if let Ok(path) = SyncPath::parse(&path) {
                out.insert(path, Rev(from_db(r.try_get("rev")?)));
            }
        }
    }
    Ok(out)
}

/// The live revision at `path`, if a live file is there. Used to refuse a
/// stale upload before any byte is sent; [`commit`] checks again atomically.
pub async fn live_rev(
    db: &Db,
    ns: NamespaceId,
    path: &SyncPath,
) -> Result<Option<Rev>, sqlx::Error> {
    let row =
        sqlx::query("SELECT rev FROM files WHERE namespace_id = $1 AND path = $2 AND deleted = 0")
            .bind(to_db(ns.0))
            .bind(path.as_str())
            .fetch_optional(db.pool())
            .await?;
    row.map(|r| Ok(Rev(from_db(r.try_get(0)?)))).transpose()
}
