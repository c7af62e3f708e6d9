//! Push: the folder's changes since the last agreement, sent to the server.
//!
//! A scan compares each file's stat with its synced record and re-hashes
//! only what changed. New and edited files upload against their base
//! revision; files gone from the folder are deleted on the server against
//! theirs; a file that disappeared while another with its content appeared
//! is sent as a move (no bytes). A conflict leaves the server's version at
//! the path and the local one beside it as a conflicted copy.

use std::collections::{HashMap, HashSet};

use driftless_protocol::{ErrorCode, Outcome, Rev, SyncPath};

use super::{PassReport, SyncError, Syncer, chunk_list};
use crate::hash::{HashedFile, hash_file};
use crate::http::ClientError;
use crate::local::LocalStat;
use crate::scan::{Ignore, scan};
use crate::state::Synced;
use crate::upload::{UploadError, UploadItem, batch_key, upload_batch};

mod ops;

/// A local file that differs from its synced record.
struct Changed {
    path: SyncPath,
    stat: LocalStat,
    hashed: HashedFile,
    base: Option<Synced>,
}

impl Syncer {
    /// Sends every local change to the server.
    pub async fn push(&self, ignore: &Ignore, report: &mut PassReport) -> Result<(), SyncError> {
        let found = {
            let (root, ignore) = (self.root.clone(), ignore.clone());
            tokio::task::spawn_blocking(move || scan(&root, &ignore))
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))??
        };
        for (path, why) in &found.skipped {
            tracing::debug!(path, why, "skipped");
        }
        for dir in found.unread() {
            report.problem(
                if dir.is_empty() { "." } else { dir },
                "the folder cannot be read: nothing under it is sent or deleted until it can",
            );
        }
        let synced: HashMap<SyncPath, Synced> = self
            .state
            .all_synced()?
            .into_iter()
            .map(|s| (s.path.clone(), s))
            .collect();
        let present: HashSet<&SyncPath> = found.files.iter().map(|f| &f.path).collect();
        let mut changed = Vec::new();
        for f in &found.files {
            let base = synced.get(&f.path).cloned();
            if base.as_ref().is_some_and(|b| b.stat == f.stat) {
                continue;
            }
            let local = self.root.path_of(&f.path);
            let id = (f.stat.dev, f.stat.inode);
            let hashed =
                match tokio::task::spawn_blocking(move || hash_file(&local, Some(id))).await {
                    Ok(Ok(h)) => h,
                    Ok(Err(e)) => {
                        report.problem(f.path.as_str(), e);
                        continue;
                    }
                    Err(e) => return Err(ClientError::Protocol(e.to_string()).into()),
                };
            if let Some(b) = &base
                && b.content_hash == hashed.content_hash
            {
                // Touched, not changed.
                self.state.restat(&f.path, f.stat)?;
                continue;
            }
            changed.push(Changed {
                path: f.path.clone(),
                stat: f.stat,
                hashed,
                base,
            });
        }
        // A deletion only from evidence: the walk saw the file gone (its
        // folders were read, its file system is still there), and it is
        // not merely left out now (ignored, or behind a symlink).
        let mut gone: Vec<Synced> = synced
            .values()
            .filter(|s| {
                !present.contains(&s.path) && found.deleted(&self.root, ignore, &s.path, s.stat.dev)
            })
            .cloned()
            .collect();
        gone.sort_by(|a, b| a.path.cmp(&b.path));

        // Moves: a file gone whose exact content appeared at a new path.
        let mut by_content: HashMap<driftless_protocol::ContentHash, Vec<usize>> = HashMap::new();
        for (i, c) in changed.iter().enumerate().rev() {
            if c.base.is_none() {
                by_content.entry(c.hashed.content_hash).or_default().push(i);
            }
        }
        let mut pairs = Vec::new();
        let mut still_gone = Vec::new();
        for g in gone {
            match by_content.get_mut(&g.content_hash).and_then(Vec::pop) {
                Some(i) => pairs.push((g, i)),
                None => still_gone.push(g),
            }
        }
        let mut moved_to = HashSet::new();
        for batch in pairs.chunks(BATCH_FILES) {
            let sent = self.send_moves(batch, &changed, report).await?;
            for ((g, i), ok) in batch.iter().zip(sent) {
                if ok {
                    moved_to.insert(changed[*i].path.clone());
                } else {
                    still_gone.push(g.clone());
                }
            }
        }
        let mut puts: Vec<Changed> = changed
            .into_iter()
            .filter(|c| !moved_to.contains(&c.path))
            .collect();
        puts.sort_by(|a, b| a.path.cmp(&b.path));
        let allowed =
            still_gone.is_empty() || self.deletes_allowed(still_gone.len(), synced.len())?;
        // A file replaced by a folder (or a folder by a file): its delete
        // goes first, or the new path would meet the old one on the server.
        let (first, later): (Vec<Synced>, Vec<Synced>) = if allowed {
            still_gone
                .into_iter()
                .partition(|g| puts.iter().any(|p| nested(&g.path, &p.path)))
        } else {
            report.deletes_held = still_gone.len() as u64;
            (Vec::new(), Vec::new())
        };
        for chunk in first.chunks(BATCH_FILES) {
            self.send_deletes(chunk, report).await?;
        }
        let batches = batches(puts);
        self.abort_stale(&batches).await?;
        for batch in batches {
            for (path, why) in self.send_puts(batch, report).await? {
                tracing::warn!(%path, why, "local change not sent; retried next pass");
                report.problem(path.as_str(), why);
            }
        }
        for chunk in later.chunks(BATCH_FILES) {
            self.send_deletes(chunk, report).await?;
        }
        Ok(())
    }

    /// The brake on mass deletes: whether `n` deletions out of `synced`
    /// files may go now. Held ones are noted in the state (for `status`)
    /// and logged; `driftless sync --confirm-deletes` lets the next pass
    /// send them.
    fn deletes_allowed(&self, n: usize, synced: usize) -> Result<bool, SyncError> {
        use super::{CONFIRM_DELETES_KEY, HELD_DELETES_KEY};
        if !self.brake.holds(n, synced) {
            self.state.set(HELD_DELETES_KEY, "0")?;
            return Ok(true);
        }
        if self
            .state
            .get(CONFIRM_DELETES_KEY)?
            .is_some_and(|v| v == "1")
        {
            tracing::warn!(deletes = n, "sending deletions confirmed by the user");
            self.state.set(CONFIRM_DELETES_KEY, "0")?;
            self.state.set(HELD_DELETES_KEY, "0")?;
            return Ok(true);
        }
        tracing::warn!(
            deletes = n,
            synced,
            "holding back deletions: more than the brake allows in one pass; \
             check the folder, then run `driftless sync --confirm-deletes` to send them"
        );
        self.state.set(HELD_DELETES_KEY, &n.to_string())?;
        Ok(false)
    }

    /// Uploads the file at `p` against its synced base (repairs, copies).
    pub(super) async fn upload(
        &self,
        p: &SyncPath,
        report: &mut PassReport,
    ) -> Result<Option<Rev>, String> {
        let local = self.root.path_of(p);
        let stat = self.root.stat(p).ok_or("the file is gone")?;
        let id = (stat.dev, stat.inode);
        let hashed = tokio::task::spawn_blocking(move || hash_file(&local, Some(id)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let c = Changed {
            path: p.clone(),
            stat,
            hashed,
            base: self.state.synced(p).map_err(|e| e.to_string())?,
        };
        self.send_put(c, report).await
    }

    /// Uploads one changed file; on a conflict, keeps the local version as
    /// a conflicted copy and brings the server's to the path.
    async fn send_put(&self, c: Changed, report: &mut PassReport) -> Result<Option<Rev>, String> {
        let path = c.path.clone();
        let failed = self
            .send_puts(vec![c], report)
            .await
            .map_err(|e| e.to_string())?;
        match failed.into_iter().next() {
            Some((_, why)) => Err(why),
            None => Ok(self.state.synced(&path).ok().flatten().map(|s| s.rev)),
        }
    }

    /// The upload items of a batch (operation ids are stable: the same
    /// file, content and base give the same id after a crash).
    fn items_for(&self, batch: &[Changed]) -> Result<Vec<UploadItem>, SyncError> {
        let digests: Vec<[u8; 32]> = batch
            .iter()
            .map(|c| {
                let base_rev = c.base.as_ref().map_or(0, |b| b.rev.0);
                let mut digest = blake3::Hasher::new();
                digest.update(c.hashed.content_hash.as_bytes());
                digest.update(&base_rev.to_le_bytes());
                *digest.finalize().as_bytes()
            })
            .collect();
        let asked: Vec<_> = batch
            .iter()
            .zip(&digests)
            .map(|(c, d)| (&c.path, d, Some(&c.hashed.content_hash)))
            .collect();
        let ops = self.state.ops_for(&asked)?;
        let mut items = Vec::with_capacity(batch.len());
        for (c, op) in batch.iter().zip(ops) {
            items.push(UploadItem {
                local: self.root.path_of(&c.path),
                hashed: c.hashed.clone(),
                remote: c.path.as_str().to_owned(),
                base_rev: c.base.as_ref().map(|b| b.rev),
                op_id: op
                    .parse()
                    .map_err(|e| ClientError::Protocol(format!("{e:?}")))?,
            });
        }
        Ok(items)
    }

    /// Aborts the upload sessions an earlier, killed run left for batches
    /// that changed since: nothing will resume them, and until they end
    /// the server counts their chunks as on their way.
    async fn abort_stale(&self, batches: &[Vec<Changed>]) -> Result<(), SyncError> {
        let mut keep = HashSet::new();
        for b in batches {
            keep.insert(batch_key(self.ns, &self.items_for(b)?));
        }
        for (key, id) in self.state.stale_uploads(i64::MAX)? {
            if keep.contains(&key) {
                continue;
            }
            match self.api.abort_upload(&id).await {
                Ok(()) => {}
                Err(ClientError::Api { problem, .. })
                    if matches!(problem.code, ErrorCode::NotFound | ErrorCode::UploadClosed) => {}
                Err(e) => {
                    tracing::debug!(upload = %id, error = %e, "could not abort a stale session");
                    continue;
                }
            }
            self.state.forget_upload(&key)?;
        }
        Ok(())
    }

    /// Uploads changed files in one session (their chunks share parts) and
    /// applies each file's answer. A file that changes while it is being
    /// read leaves the batch (it is retried next pass); the rest go on.
    /// Returns the files not sent, and why.
    async fn send_puts(
        &self,
        mut batch: Vec<Changed>,
        report: &mut PassReport,
    ) -> Result<Vec<(SyncPath, String)>, SyncError> {
        let mut failed = Vec::new();
        let mut retried = false;
        while !batch.is_empty() {
            let items = self.items_for(&batch)?;
            let sent = upload_batch(
                &self.api,
                self.ns,
                &items,
                self.opts,
                Some(self.state.clone()),
                &crate::progress::Progress::hidden(),
            )
            .await;
            let sent = match sent {
                Ok(s) => s,
                Err(UploadError::Io { path, source }) => {
                    let (out, keep): (Vec<_>, Vec<_>) = batch
                        .into_iter()
                        .partition(|c| self.root.path_of(&c.path).display().to_string() == path);
                    if out.is_empty() {
                        failed.extend(keep.into_iter().map(|c| (c.path, source.to_string())));
                        return Ok(failed);
                    }
                    failed.extend(out.into_iter().map(|c| (c.path, source.to_string())));
                    batch = keep;
                    continue;
                }
                Err(UploadError::Client(e)) if !e.retryable() => {
                    // Refused as a whole (e.g. a session that can no longer
                    // commit): each file is retried next pass.
                    failed.extend(batch.into_iter().map(|c| (c.path, e.to_string())));
                    return Ok(failed);
                }
                Err(e) => return Err(e.into()),
            };
            report.bytes_up += sent.bytes_sent;
            // A chunk the session counted on is gone (a session resumed
            // across a server restore, a row removed as unreferenced the
            // instant before): those files go once more, in a new session
            // that asks again what the server holds.
            let mut again = Vec::new();
            let mut synced = Vec::new();
            for (c, r) in batch.into_iter().zip(sent.results) {
                match r.outcome {
                    Outcome::Error {
                        code: ErrorCode::ChunkMissing,
                        ..
                    } if !retried => again.push(c),
                    // Recorded together below, in one transaction.
                    Outcome::Committed { rev, .. } => synced.push((
                        Synced {
                            path: c.path.clone(),
                            rev,
                            content_hash: c.hashed.content_hash,
                            stat: c.stat,
                        },
                        chunk_list(&c.hashed),
                    )),
                    outcome => {
                        if let Err(e) = self.apply_result(&c, outcome, report).await {
                            failed.push((c.path.clone(), e));
                        }
                    }
                }
            }
            self.state.record_many(&synced)?;
            report.uploaded += synced.len() as u64;
            if !again.is_empty() {
                tracing::info!(
                    files = again.len(),
                    "chunks the session counted on are gone; sending those files again"
                );
            }
            retried = true;
            batch = again;
        }
        Ok(failed)
    }

    /// What the server said of one uploaded file.
    async fn apply_result(
        &self,
        c: &Changed,
        outcome: Outcome,
        report: &mut PassReport,
    ) -> Result<(), String> {
        match outcome {
            Outcome::Committed { rev, .. } => {
                self.state
                    .record(
                        &Synced {
                            path: c.path.clone(),
                            rev,
                            content_hash: c.hashed.content_hash,
                            stat: c.stat,
                        },
                        &chunk_list(&c.hashed),
                    )
                    .map_err(|e| e.to_string())?;
                report.uploaded += 1;
                Ok(())
            }
            Outcome::Conflict { current_rev } => {
                self.resolve_conflict(c, current_rev, report).await
            }
            Outcome::Error {
                code: ErrorCode::PathCollision,
                ..
            } => {
                // Another file's name differs only by case or normalization:
                // this one becomes a conflicted copy (uploaded next pass).
                self.set_aside(&c.path, report).map_err(|e| e.to_string())?;
                Ok(())
            }
            Outcome::Error { code, detail } => Err(format!("{code}: {detail}")),
            Outcome::Pending => Err("the server left the file pending".into()),
        }
    }

    /// The server has another version at `c.path`.
    async fn resolve_conflict(
        &self,
        c: &Changed,
        current: Option<Rev>,
        report: &mut PassReport,
    ) -> Result<(), String> {
        // The same bytes on both sides are no conflict (a commit whose
        // answer was lost, or the same edit made twice).
        if current.is_some()
            && let Ok(m) = self.api.manifest(self.ns, c.path.as_str(), None).await
            && m.content_hash == c.hashed.content_hash
            && let Some(stat) = self.root.stat(&c.path)
        {
            return self
                .state
                .record(
                    &Synced {
                        path: c.path.clone(),
                        rev: m.rev,
                        content_hash: m.content_hash,
                        stat,
                    },
                    &chunk_list(&c.hashed),
                )
                .map_err(|e| e.to_string());
        }
        // The server's version is one this device sent and never heard
        // back about (killed before it could record the commit): it is the
        // base, not a rival. The local edit goes on top of it.
        if current.is_some()
            && let Ok(m) = self.api.manifest(self.ns, c.path.as_str(), None).await
            && self
                .state
                .was_sent(&c.path, &m.content_hash)
                .map_err(|e| e.to_string())?
        {
            tracing::info!(path = %c.path, rev = m.rev.0, "the server's version is this device's own earlier commit");
            self.state
                .record(
                    &Synced {
                        path: c.path.clone(),
                        rev: m.rev,
                        content_hash: m.content_hash,
                        stat: LocalStat::UNKNOWN,
                    },
                    &[],
                )
                .map_err(|e| e.to_string())?;
            return Box::pin(self.upload(&c.path, report)).await.map(|_| ());
        }
        let copy = self.set_aside(&c.path, report).map_err(|e| e.to_string())?;
        self.state.forget(&c.path).map_err(|e| e.to_string())?;
        if current.is_some() {
            self.download(&c.path, None, None, report)
                .await
                .map_err(|e| e.to_string())?;
        }
        // The copy is a new file: it uploads now (or at the next pass).
        if let Err(e) = Box::pin(self.upload(&copy, report)).await {
            tracing::warn!(path = %copy, error = %e, "conflicted copy not uploaded yet");
        }
        Ok(())
    }
}

/// Files per upload session.
const BATCH_FILES: usize = 1000;
/// Bytes per upload session (a larger file goes alone).
const BATCH_BYTES: u64 = 256 << 20;

/// Cuts the changed files into upload batches.
fn batches(files: Vec<Changed>) -> Vec<Vec<Changed>> {
    let mut out = Vec::new();
    let mut cur: Vec<Changed> = Vec::new();
    let mut bytes = 0;
    for f in files {
        let size = f.hashed.size;
        if !cur.is_empty() && (cur.len() >= BATCH_FILES || bytes + size > BATCH_BYTES) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push(f);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether one path is a folder on the other's way.
fn nested(a: &SyncPath, b: &SyncPath) -> bool {
    let under =
        |x: &str, y: &str| x.len() > y.len() && x.starts_with(y) && x.as_bytes()[y.len()] == b'/';
    under(a.as_str(), b.as_str()) || under(b.as_str(), a.as_str())
}
