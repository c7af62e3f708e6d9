//! Committing many puts at once: an upload session's files in a few
//! transactions, the facts the checks need read in bulk and the rows written
//! in multi-row statements.
//!
//! The rules are exactly [`commit`]'s, applied file by file in the order
//! given, each against the tree as the files before it left it:
//!
//! - the namespace row is locked first, so nothing else commits in the
//!   folder meanwhile and every fact read afterwards stays true;
//! - the facts (recorded op ids, the heads of the paths, live files at the
//!   paths' and their folders' collision keys, the first live file under
//!   each, the usable chunks) are read in a handful of statements;
//! - each put is decided in memory against those facts plus what the batch
//!   has written so far; a batch holds only puts, which never take a live
//!   file away, so what was live at the start is still live;
//! - the committed ones take consecutive seqs and refused ones none, so
//!   `seq` stays gap-free; the transaction commits them all or none.
//!
//! A batch with anything other than puts, or of several folders or devices,
//! goes through [`commit`] one operation at a time.

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyRow;

use super::*;

/// Puts per transaction on PostgreSQL: enough to amortise the round trips,
/// few enough that the folder's row lock is not held for long (other
/// folders never wait for it).
pub const PUTS_PER_TX: usize = 500;

/// Puts per transaction on SQLite, whose one connection every user's every
/// statement waits for: a transaction of 25 puts holds it for a few
/// milliseconds, so one user's 6,000-file commit adds at most that to each
/// statement of another's (api/tests/api/costs.rs).
pub const PUTS_PER_TX_SQLITE: usize = 25;

/// Keys per `IN (...)` list (well under either database's parameter limit).
const KEYS_PER_QUERY: usize = 400;

/// Rows per multi-row `INSERT` (the widest, versions, binds 14 a row).
const ROWS_PER_INSERT: usize = 100;

/// Commits `batch` in order; one outcome per operation, as [`commit`] would
/// give them one after the other.
pub async fn commit_many(db: &Db, batch: &[Commit]) -> Result<Vec<Outcome>, sqlx::Error> {
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    let uniform = batch.iter().all(|c| {
        c.namespace == first.namespace
            && c.device == first.device
            && c.reuse == first.reuse
            && matches!(c.change, FileChange::Put { .. })
    });
    let mut out = Vec::with_capacity(batch.len());
    if !uniform {
        for c in batch {
            out.push(commit(db, c).await?);
        }
        return Ok(out);
    }
    let per_tx = match db.dialect() {
        crate::db::Dialect::Sqlite => PUTS_PER_TX_SQLITE,
        crate::db::Dialect::Postgres => PUTS_PER_TX,
    };
    for slice in batch.chunks(per_tx) {
        out.extend(commit_puts(db, slice).await?);
    }
    Ok(out)
}

/// A put's fields, borrowed.
struct PutRef<'a> {
    c: &'a Commit,
    path: &'a SyncPath,
    key: String,
    /// Its folders, nearest first, with their collision keys.
    folders: Vec<(SyncPath, String)>,
    base_rev: Option<Rev>,
    mtime_ms: i64,
    chunking: ChunkingSpec,
    manifest: &'a Manifest,
    content_hash: ContentHash,
}

impl<'a> PutRef<'a> {
    fn of(c: &'a Commit) -> Option<Self> {
        let FileChange::Put {
            path,
            base_rev,
            mtime_ms,
            chunking,
            manifest,
            content_hash,
        } = &c.change
        else {
            return None;
        };
        let mut folders = Vec::new();
        let mut at = path.parent();
        while let Some(p) = at {
            at = p.parent();
            let key = p.collision_key();
            folders.push((p, key));
        }
        Some(Self {
            c,
            path,
            key: path.collision_key(),
            folders,
            base_rev: *base_rev,
            mtime_ms: *mtime_ms,
            chunking: *chunking,
            manifest,
            content_hash: *content_hash,
        })
    }
}

/// What the database held when the batch started.
#[derive(Default)]
struct Facts {
    /// op id → (digest, recorded outcome as JSON).
    ops: HashMap<String, (Vec<u8>, String)>,
    /// path → its head.
    heads: HashMap<String, Head>,
    /// collision key → the live file there.
    live_at: HashMap<String, String>,
    /// collision key → a live file under it (it is a folder of that file).
    under: HashMap<String, String>,
    /// chunk → its length, for the chunks a put may name.
    usable: HashMap<driftless_protocol::ChunkHash, u32>,
}

/// What the batch has done so far.
#[derive(Default)]
struct Written<'a> {
    ops: HashMap<&'a str, ([u8; 32], Outcome)>,
    heads: HashMap<&'a str, Rev>,
    live_at: HashMap<&'a str, &'a str>,
    under: HashMap<&'a str, &'a str>,
}

async fn commit_puts(db: &Db, batch: &[Commit]) -> Result<Vec<Outcome>, sqlx::Error> {
    let puts: Vec<PutRef<'_>> = batch.iter().filter_map(PutRef::of).collect();
    let Some(first) = puts.first() else {
        return Ok(Vec::new());
    };
    let ns = to_db(first.c.namespace.0);
    let mut tx = db.begin().await?;
    // The folder's lock (as every commit takes it) and its last seq.
    let row =
        sqlx::query("UPDATE namespaces SET head_seq = head_seq WHERE id = $1 RETURNING head_seq")
            .bind(ns)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(row) = row else {
        return Ok(batch
            .iter()
            .map(|_| error(ErrorCode::NotFound, "no such folder"))
            .collect());
    };
    let last_seq = from_db(row.try_get("head_seq")?);
    let facts = read_facts(&mut tx, ns, first.c.reuse, &puts).await?;

    let now = now_ms();
    let mut seq = last_seq;
    let mut out = Vec::with_capacity(puts.len());
    let mut written = Written::default();
    let mut rows: Vec<(&PutRef<'_>, Seq)> = Vec::new();
    for p in &puts {
        let op = p.c.op_id.as_str();
        if let Some((digest, outcome)) = written.ops.get(op) {
            out.push(if *digest == p.c.digest {
                outcome.clone()
            } else {
                reused()
            });
            continue;
        }
        if let Some((digest, result)) = facts.ops.get(op) {
            out.push(if digest[..] == p.c.digest[..] {
                serde_json::from_str(result).map_err(|e| sqlx::Error::Decode(e.into()))?
            } else {
                reused()
            });
            continue;
        }
        if let Some(refused) = refusal(p, &facts, &written) {
            out.push(refused);
            continue;
        }
        seq += 1;
        let committed = Outcome::Committed {
            rev: Rev(seq),
            seq: Seq(seq),
        };
        written.ops.insert(op, (p.c.digest, committed.clone()));
        written.heads.insert(p.path.as_str(), Rev(seq));
        written.live_at.insert(&p.key, p.path.as_str());
        for (_, key) in &p.folders {
            written.under.entry(key).or_insert(p.path.as_str());
        }
        rows.push((p, Seq(seq)));
        out.push(committed);
    }
    if rows.is_empty() {
        return Ok(out); // nothing written: dropping `tx` rolls back
    }
    write_rows(&mut tx, first.c, &rows, now).await?;
    sqlx::query("UPDATE namespaces SET head_seq = $2 WHERE id = $1")
        .bind(ns)
        .bind(to_db(seq))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(out)
}

fn reused() -> Outcome {
    error(
        ErrorCode::OpIdReused,
        "this operation id was used for another operation",
    )
}

/// Why `p` cannot commit on top of the facts and the batch so far, in the
/// order [`apply`] checks: base revision, collision, the shape of the tree,
/// then the chunks.
fn refusal(p: &PutRef<'_>, facts: &Facts, written: &Written<'_>) -> Option<Outcome> {
    let path = p.path.as_str();
    let head = match written.heads.get(path) {
        Some(rev) => Some(Head {
            rev: *rev,
            deleted: false,
        }),
        None => facts.heads.get(path).map(|h| Head {
            rev: h.rev,
            deleted: h.deleted,
        }),
    };
    if let Some(h) = head.filter(|h| !h.deleted)
        && p.base_rev != Some(h.rev)
    {
        return Some(Outcome::Conflict {
            current_rev: Some(h.rev),
        });
    }
    let live_at = |key: &str| {
        written
            .live_at
            .get(key)
            .copied()
            .or_else(|| facts.live_at.get(key).map(String::as_str))
    };
    let under = |key: &str| {
        facts
            .under
            .get(key)
            .map(String::as_str)
            .or_else(|| written.under.get(key).copied())
    };
    let other = [
        written.live_at.get(p.key.as_str()).copied(),
        facts.live_at.get(&p.key).map(String::as_str),
    ]
    .into_iter()
    .flatten()
    .find(|o| *o != path);
    if let Some(other) = other {
        return Some(error(
            ErrorCode::PathCollision,
            &format!("conflicts with existing {other:?}"),
        ));
    }
    // 1. A folder on the way is a live file.
    if let Some(file) = p.folders.iter().find_map(|(_, key)| live_at(key)) {
        return Some(error(
            ErrorCode::PathUnderFile,
            &format!("{file:?} is a file, so it cannot hold {path:?}"),
        ));
    }
    // 2. The path is a folder of live files.
    if let Some(file) = under(&p.key) {
        return Some(error(
            ErrorCode::PathIsFolder,
            &format!("{path:?} is a folder (it holds {file:?})"),
        ));
    }
    // 3. The nearest folder that holds live files spells itself as they do.
    for (folder, key) in &p.folders {
        let Some(file) = under(key) else { continue };
        let prefix = format!("{}/", folder.as_str());
        if !file.starts_with(&prefix) {
            let spelled = &file[..file.len().min(prefix.len().saturating_sub(1))];
            return Some(error(
                ErrorCode::FolderCollision,
                &format!(
                    "the folder {:?} exists as {spelled:?}: names that differ only by case or normalization are one folder on macOS and Windows",
                    folder.as_str()
                ),
            ));
        }
        break;
    }
    chunk_refusal(p.manifest, &facts.usable)
}

async fn read_facts(
    tx: &mut Transaction<'static, Any>,
    ns: i64,
    reuse: Usable,
    puts: &[PutRef<'_>],
) -> Result<Facts, sqlx::Error> {
    let mut facts = Facts::default();
    let distinct = |items: &mut dyn Iterator<Item = String>| -> Vec<String> {
        let mut seen = HashSet::new();
        items.filter(|s| seen.insert(s.clone())).collect()
    };
    let op_ids = distinct(&mut puts.iter().map(|p| p.c.op_id.as_str().to_owned()));
    for r in rows_in(
        tx,
        "SELECT op_id, digest, result FROM ops WHERE namespace_id = $1 AND op_id IN",
        ns,
        &op_ids,
    )
    .await?
    {
        facts.ops.insert(
            r.try_get("op_id")?,
            (r.try_get("digest")?, r.try_get("result")?),
        );
    }
    let paths = distinct(&mut puts.iter().map(|p| p.path.as_str().to_owned()));
    for r in rows_in(
        tx,
        "SELECT path, rev, deleted FROM files WHERE namespace_id = $1 AND path IN",
        ns,
        &paths,
    )
    .await?
    {
        let head = Head {
            rev: Rev(from_db(r.try_get("rev")?)),
            deleted: r.try_get::<i64, _>("deleted")? == 1,
        };
        facts.heads.insert(r.try_get("path")?, head);
    }
    let keys = distinct(&mut puts.iter().flat_map(|p| {
        std::iter::once(p.key.clone()).chain(p.folders.iter().map(|(_, k)| k.clone()))
    }));
    for r in rows_in(
        tx,
        "SELECT collision_key, path FROM files WHERE namespace_id = $1 AND deleted = 0 \
         AND collision_key IN",
        ns,
        &keys,
    )
    .await?
    {
        facts
            .live_at
            .insert(r.try_get("collision_key")?, r.try_get("path")?);
    }
    // Collision keys compare byte-wise (see `misfit`).
    let c = if tx.backend_name() == "PostgreSQL" {
        " COLLATE \"C\""
    } else {
        ""
    };
    for batch in keys.chunks(KEYS_PER_QUERY) {
        let values: Vec<String> = (0..batch.len()).map(|i| format!("(${})", i + 2)).collect();
        let sql = format!(
            "WITH k(ck) AS (VALUES {}) SELECT k.ck AS ck, (SELECT f.path FROM files f \
             WHERE f.namespace_id = $1 AND f.deleted = 0 AND f.collision_key{c} >= (k.ck || '/') \
             AND f.collision_key{c} < (k.ck || '0') LIMIT 1) AS path FROM k",
            values.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(ns);
        for k in batch {
            q = q.bind(k.as_str());
        }
        for r in q.fetch_all(&mut **tx).await? {
            if let Some(path) = r.try_get::<Option<String>, _>("path")? {
                facts.under.insert(r.try_get("ck")?, path);
            }
        }
    }
    let mut seen = HashSet::new();
    let hashes: Vec<_> = puts
        .iter()
        .flat_map(|p| p.manifest.hashes())
        .filter(|h| seen.insert(*h))
        .collect();
    facts.usable = usable_lengths(tx, ns, reuse, &hashes).await?;
    Ok(facts)
}

/// Rows of `head` (ending in `... IN`) for each slice of `keys`.
async fn rows_in(
    tx: &mut Transaction<'static, Any>,
    head: &str,
    ns: i64,
    keys: &[String],
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let mut out = Vec::new();
    for batch in keys.chunks(KEYS_PER_QUERY) {
        let list: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!("{head} ({})", list.join(", "));
        let mut q = sqlx::query(&sql).bind(ns);
        for k in batch {
            q = q.bind(k.as_str());
        }
        out.extend(q.fetch_all(&mut **tx).await?);
    }
    Ok(out)
}

/// `VALUES ($1, ..), (..)` for `rows` rows of `width` parameters.
fn values(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=width).map(|i| format!("${}", r * width + i)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every committed put's version, head, journal entry, event and op record.
async fn write_rows(
    tx: &mut Transaction<'static, Any>,
    c: &Commit,
    rows: &[(&PutRef<'_>, Seq)],
    now: i64,
) -> Result<(), sqlx::Error> {
    let ns = to_db(c.namespace.0);
    let device = c.device.map(|d| to_db(d.0));
    for slice in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO versions (namespace_id, path, rev, deleted, size, content_hash, mtime_ms, \
             chunk_min, chunk_avg, chunk_max, manifest, moved_from, device_id, committed_at_ms) \
             VALUES {}",
            values(slice.len(), 14)
        );
        let mut q = sqlx::query(&sql);
        for (p, seq) in slice {
            q = q
                .bind(ns)
                .bind(p.path.as_str())
                .bind(to_db(seq.0))
                .bind(0i64)
                .bind(to_db(p.manifest.total_len()))
                .bind(p.content_hash.as_bytes().to_vec())
                .bind(p.mtime_ms)
                .bind(i64::from(p.chunking.min))
                .bind(i64::from(p.chunking.avg))
                .bind(i64::from(p.chunking.max))
                .bind(p.manifest.as_bytes().to_vec())
                .bind(None::<String>)
                .bind(device)
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    // One head row per path (a path put twice keeps its last revision): a
    // multi-row upsert may not touch a row twice.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, (p, _)) in rows.iter().enumerate() {
        last.insert(p.path.as_str(), i);
    }
    let heads: Vec<&(&PutRef<'_>, Seq)> = rows
        .iter()
        .enumerate()
        .filter(|(i, (p, _))| last.get(p.path.as_str()) == Some(i))
        .map(|(_, r)| r)
        .collect();
    for slice in heads.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO files (namespace_id, path, collision_key, rev, deleted) VALUES {} \
             ON CONFLICT (namespace_id, path) DO UPDATE SET rev = excluded.rev, deleted = excluded.deleted",
            values(slice.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for (p, seq) in slice {
            q = q
                .bind(ns)
                .bind(p.path.as_str())
                .bind(p.key.as_str())
                .bind(to_db(seq.0))
                .bind(0i64);
        }
        q.execute(&mut **tx).await?;
    }
    for slice in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO journal (namespace_id, seq, path, rev, kind, moved_from, device_id, committed_at_ms) \
             VALUES {}",
            values(slice.len(), 8)
        );
        let mut q = sqlx::query(&sql);
        for (p, seq) in slice {
            q = q
                .bind(ns)
                .bind(to_db(seq.0))
                .bind(p.path.as_str())
                .bind(to_db(seq.0))
                .bind(journal_kind(ChangeKind::Put))
                .bind(None::<String>)
                .bind(device)
                .bind(now);
        }
        q.execute(&mut **tx).await?;

        let sql = format!(
            "INSERT INTO outbox (namespace_id, seq, payload, created_at_ms) VALUES {}",
            values(slice.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for (p, seq) in slice {
            let event = JournalEvent {
                v: 1,
                namespace_id: c.namespace,
                seq: *seq,
                change: ChangeEntry {
                    seq: Some(*seq),
                    path: p.path.as_str().to_owned(),
                    from: None,
                    rev: Rev(seq.0),
                    kind: ChangeKind::Put,
                    size: p.manifest.total_len(),
                    content_hash: Some(p.content_hash),
                    mtime_ms: p.mtime_ms,
                    device_id: c.device,
                    committed_at_ms: now,
                },
            };
            let payload =
                serde_json::to_string(&event).map_err(|e| sqlx::Error::Encode(e.into()))?;
            q = q.bind(ns).bind(to_db(seq.0)).bind(payload).bind(now);
        }
        q.execute(&mut **tx).await?;

        let sql = format!(
            "INSERT INTO ops (namespace_id, op_id, digest, result, created_at_ms) VALUES {}",
            values(slice.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for (p, seq) in slice {
            let outcome = Outcome::Committed {
                rev: Rev(seq.0),
                seq: *seq,
            };
            let result =
                serde_json::to_string(&outcome).map_err(|e| sqlx::Error::Encode(e.into()))?;
            q = q
                .bind(ns)
                .bind(p.c.op_id.as_str())
                .bind(p.c.digest.to_vec())
                .bind(result)
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
