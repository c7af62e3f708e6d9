//! Pull: the server's changes since the cursor, applied to the folder.
//!
//! Every path from the server is parsed as a [`SyncPath`] again before it
//! touches the disk (a server, or anyone in the middle, could send `../`,
//! an absolute path or a reserved name); an entry that fails is skipped
//! and reported, never written.

use driftless_protocol::{ChangeEntry, ChangeKind, ErrorCode, SyncPath};

use super::{CURSOR_KEY, PassReport, SyncError, Syncer};
use crate::hash::hash_file;
use crate::http::ClientError;
use crate::scan::Ignore;
use crate::state::Synced;

/// Entries per page.
const PAGE: usize = 1000;
/// Downloads at once.
const PARALLEL: usize = 8;

impl Syncer {
    /// Applies every change after the stored cursor (a bootstrap if none),
    /// saving the cursor after each page.
    pub(crate) async fn pull(
        &self,
        ignore: &Ignore,
        report: &mut PassReport,
    ) -> Result<(), SyncError> {
        self.forget_listings();
        let mut cursor = self.state.get(CURSOR_KEY)?;
        // Starting over while this folder holds synced files (the cursor
        // was reset: a restore, a long absence, a new server): the
        // snapshot's revisions cannot be compared with the records here,
        // so nothing is applied from it; the full comparison, which asks
        // the server's history, decides (this pass).
        let mut rebase = cursor.is_none() && self.state.has_synced()?;
        loop {
            let page = match self.api.changes(self.ns, cursor.as_deref(), PAGE).await {
                Ok(p) => p,
                Err(ClientError::Api { problem, .. })
                    if matches!(
                        problem.code,
                        ErrorCode::CursorReset | ErrorCode::CursorInvalid
                    ) =>
                {
                    // The journal no longer reaches back to our cursor:
                    // start from the snapshot; three-way decisions still hold.
                    // The snapshot lists no deletes or moves: the full
                    // comparison (this pass or the next) finds what the
                    // skipped entries removed.
                    tracing::warn!(code = %problem.code, "cursor no longer valid; bootstrapping again");
                    self.reconcile_soon();
                    rebase = self.state.has_synced()?;
                    cursor = None;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if rebase {
                self.reconcile_soon();
                self.state.set(CURSOR_KEY, &page.cursor)?;
                cursor = Some(page.cursor);
                if !page.has_more {
                    break;
                }
                continue;
            }
            // Puts of distinct paths are independent: they download several
            // at once. Anything else (or a path seen again) waits its turn.
            let mut run: Vec<&ChangeEntry> = Vec::new();
            let mut in_run = std::collections::HashSet::new();
            for entry in &page.entries {
                if entry.kind == ChangeKind::Put && in_run.insert(entry.path.as_str()) {
                    run.push(entry);
                    continue;
                }
                self.apply_all(std::mem::take(&mut run), ignore, report)
                    .await;
                in_run.clear();
                if entry.kind == ChangeKind::Put {
                    in_run.insert(entry.path.as_str());
                    run.push(entry);
                } else {
                    self.apply_all(vec![entry], ignore, report).await;
                }
            }
            self.apply_all(run, ignore, report).await;
            self.state.set(CURSOR_KEY, &page.cursor)?;
            cursor = Some(page.cursor);
            if !page.has_more {
                break;
            }
        }
        self.forget_listings();
        if let Some(c) = &cursor
            && let Err(e) = self.api.report_cursor(self.ns, c).await
        {
            tracing::debug!(error = %e, "could not report the cursor");
        }
        Ok(())
    }

    /// Applies independent changes, up to [`PARALLEL`] at once.
    async fn apply_all(
        &self,
        entries: Vec<&ChangeEntry>,
        ignore: &Ignore,
        report: &mut PassReport,
    ) {
        use futures_util::stream::{self, StreamExt};
        let mut done = stream::iter(entries)
            .map(|entry| async move {
                let mut r = PassReport::default();
                if let Err(e) = self.apply(entry, ignore, &mut r).await {
                    tracing::warn!(path = %entry.path, problem = %e, "remote change not applied; retried next pass");
                    r.problem(entry.path.as_str(), e);
                }
                r
            })
            .buffer_unordered(PARALLEL);
        while let Some(r) = done.next().await {
            report.merge(r);
        }
    }

    /// One remote change. A path this device ignores (its `.driftignore`,
    /// which is its own) is neither written nor deleted here.
    async fn apply(
        &self,
        e: &ChangeEntry,
        ignore: &Ignore,
        report: &mut PassReport,
    ) -> Result<(), String> {
        let path = SyncPath::parse(&e.path).map_err(|err| format!("refused path: {err}"))?;
        let ignored = |p: &SyncPath| ignore.ignored(p, false);
        match e.kind {
            _ if e.kind != ChangeKind::Move && ignored(&path) => Ok(()),
            ChangeKind::Put => self.remote_put(&path, e, report).await,
            ChangeKind::Delete => self.remote_delete(&path, e, report),
            ChangeKind::Move => {
                let from = e.from.as_deref().ok_or("a move without its old path")?;
                let from = SyncPath::parse(from).map_err(|err| format!("refused path: {err}"))?;
                match (ignored(&from), ignored(&path)) {
                    (false, false) => self.remote_move(&from, &path, e, report).await,
                    (false, true) => {
                        let as_delete = ChangeEntry {
                            path: from.as_str().to_owned(),
                            ..e.clone()
                        };
                        self.remote_delete(&from, &as_delete, report)
                    }
                    (true, false) => self.remote_put(&path, e, report).await,
                    (true, true) => Ok(()),
                }
            }
            ChangeKind::Repair => self.remote_repair(&path, e, report).await,
        }
    }

    async fn remote_put(
        &self,
        p: &SyncPath,
        e: &ChangeEntry,
        report: &mut PassReport,
    ) -> Result<(), String> {
        let synced = self.state.synced(p).map_err(|x| x.to_string())?;
        if synced.as_ref().is_some_and(|s| s.rev >= e.rev) {
            return Ok(());
        }
        let local = self.root.stat(p);
        // This device's own commit whose answer it never recorded (killed
        // in between): it is the base of whatever the folder holds now,
        // which the push sends on top of it — even a delete.
        if let Some(h) = e.content_hash
            && self.state.was_sent(p, &h).map_err(|x| x.to_string())?
        {
            self.state
                .record(
                    &Synced {
                        path: p.clone(),
                        rev: e.rev,
                        content_hash: h,
                        stat: crate::local::LocalStat::UNKNOWN,
                    },
                    &[],
                )
                .map_err(|x| x.to_string())?;
            return Ok(());
        }
        let clean = match (&synced, local) {
            // Unchanged since last agreed, or deleted here (an edit there beats it).
            (Some(s), Some(st)) => st == s.stat,
            (Some(_), None) | (None, None) => true,
            (None, Some(_)) => false,
        };
        if !clean {
            // Dirty: never overwritten. If it already holds the server's
            // bytes, the two agree; otherwise pushing it will conflict.
            let local_path = self.root.path_of(p);
            let id = local.map(|st| (st.dev, st.inode));
            let hashed = tokio::task::spawn_blocking(move || hash_file(&local_path, id))
                .await
                .map_err(|x| x.to_string())?
                .map_err(|x| x.to_string())?;
            if Some(hashed.content_hash) == e.content_hash
                && let Some(stat) = self.root.stat(p)
            {
                self.state
                    .record(
                        &Synced {
                            path: p.clone(),
                            rev: e.rev,
                            content_hash: hashed.content_hash,
                            stat,
                        },
                        &super::chunk_list(&hashed),
                    )
                    .map_err(|x| x.to_string())?;
                return Ok(());
            }
            // Only touched (same bytes as when last agreed): it is clean,
            // and takes the server's version like any clean file.
            let touched = synced
                .as_ref()
                .is_some_and(|s| s.content_hash == hashed.content_hash);
            match (touched, self.root.stat(p)) {
                (true, Some(stat)) => {
                    self.state.restat(p, stat).map_err(|x| x.to_string())?;
                    return match self.download(p, None, Some(stat), report).await {
                        Ok(_) => Ok(()),
                        Err(crate::download::DownloadError::Client(ClientError::Api {
                            problem,
                            ..
                        })) if problem.code == ErrorCode::NotFound => Ok(()),
                        Err(x) => Err(x.to_string()),
                    };
                }
                _ => return Ok(()),
            }
        }
        // Ask for the live version: a later entry may have replaced this rev
        // already, and applying the live one once is enough.
        match self.download(p, None, local, report).await {
            Ok(_) => Ok(()),
            // Gone since (deleted or moved later in the journal).
            Err(crate::download::DownloadError::Client(ClientError::Api { problem, .. }))
                if problem.code == ErrorCode::NotFound =>
            {
                Ok(())
            }
            Err(x) => Err(x.to_string()),
        }
    }

    fn remote_delete(
        &self,
        p: &SyncPath,
        e: &ChangeEntry,
        report: &mut PassReport,
    ) -> Result<(), String> {
        let Some(synced) = self.state.synced(p).map_err(|x| x.to_string())? else {
            return Ok(()); // never had it (or a local new file: it will upload)
        };
        if synced.rev >= e.rev {
            return Ok(());
        }
        match self.root.stat(p) {
            Some(st) if st == synced.stat => {
                self.root.remove(p).map_err(|x| x.to_string())?;
                report.deleted_here += 1;
            }
            // Edited here: the edit beats the delete. Forgetting the base
            // makes the push re-create the file on the server.
            Some(_) | None => {}
        }
        self.state.forget(p).map_err(|x| x.to_string())
    }

    async fn remote_move(
        &self,
        from: &SyncPath,
        to: &SyncPath,
        e: &ChangeEntry,
        report: &mut PassReport,
    ) -> Result<(), String> {
        let src = self.state.synced(from).map_err(|x| x.to_string())?;
        let dst = self.state.synced(to).map_err(|x| x.to_string())?;
        if dst.as_ref().is_some_and(|d| d.rev >= e.rev) {
            return Ok(());
        }
        // A rename here only if the file here is the very content that
        // moved: an edit made there just before the move must arrive too.
        let movable = src.as_ref().is_some_and(|s| {
            self.root.stat(from) == Some(s.stat) && Some(s.content_hash) == e.content_hash
        }) && self.root.stat(to).is_none()
            && std::fs::symlink_metadata(self.root.path_of(to)).is_err();
        if let (true, Some(s)) = (movable, src) {
            let stat = self.root.rename(from, to).map_err(|x| x.to_string())?;
            let chunks: Vec<_> = self
                .state
                .chunk_sources_of(from)
                .map_err(|x| x.to_string())?;
            self.state.forget(from).map_err(|x| x.to_string())?;
            self.state
                .record(
                    &Synced {
                        path: to.clone(),
                        rev: e.rev,
                        content_hash: s.content_hash,
                        stat,
                    },
                    &chunks,
                )
                .map_err(|x| x.to_string())?;
            report.moved += 1;
            return Ok(());
        }
        // Otherwise: the old path as a delete, the new one as a put.
        let as_delete = ChangeEntry {
            path: from.as_str().to_owned(),
            ..e.clone()
        };
        self.remote_delete(from, &as_delete, report)?;
        self.remote_put(to, e, report).await
    }

    /// The server lost bytes of `p` at `e.rev`: if this device holds that
    /// content unchanged, upload it again (the server asks only for the
    /// chunks it lacks).
    async fn remote_repair(
        &self,
        p: &SyncPath,
        e: &ChangeEntry,
        report: &mut PassReport,
    ) -> Result<(), String> {
        let Some(s) = self.state.synced(p).map_err(|x| x.to_string())? else {
            return Ok(());
        };
        if s.rev != e.rev
            || Some(s.content_hash) != e.content_hash
            || self.root.stat(p) != Some(s.stat)
        {
            return Ok(());
        }
        tracing::info!(path = %p, "the server asks for this file's bytes again");
        self.upload(p, report).await.map(|_| ())
    }
}
