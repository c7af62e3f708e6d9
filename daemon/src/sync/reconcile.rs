//! Client-side reconcile: the whole server snapshot against the state and
//! the folder, repairing what the event path missed — a pass cut off
//! between setting a conflicted copy aside and fetching the server's
//! version, a journal compacted past a long-offline cursor, a change
//! applied on the server while this device was told otherwise. Runs on a
//! syncer's first pass and then every [`RECONCILE_EVERY`].

use std::collections::HashSet;
use std::time::Duration;

use driftless_protocol::{ChangeKind, ErrorCode, SyncPath};

use super::{PassReport, SyncError, Syncer};
use crate::http::ClientError;

/// How often a full comparison runs besides the first pass.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(15 * 60);

impl Syncer {
    /// Compares every live server file with the folder and the state.
    /// Dirty local files are left to the push (they upload, or conflict).
    pub async fn reconcile(&self, report: &mut PassReport) -> Result<(), SyncError> {
        let snapshot = self.api.list(self.ns, None).await?;
        let mut live = HashSet::new();
        let mut todo = Vec::new();
        for e in snapshot.iter().filter(|e| e.kind != ChangeKind::Delete) {
            let Ok(p) = SyncPath::parse(&e.path) else {
                report.problems.push(format!("{}: refused path", e.path));
                continue;
            };
            live.insert(p.clone());
            let synced = self.state.synced(&p)?;
            let local = self.root.stat(&p);
            let missed = match (&synced, local) {
                // Not here and never seen: the server has it, this folder must.
                (None, None) => std::fs::symlink_metadata(self.root.path_of(&p)).is_err(),
                // Unchanged here, newer there.
                (Some(s), Some(st)) => st == s.stat && s.rev < e.rev,
                // Deleted here, but edited there since: the edit wins.
                (Some(s), None) => s.rev < e.rev,
                (None, Some(_)) => false,
            };
            if missed {
                todo.push((p, local));
            }
        }
        for (p, local) in todo {
            tracing::info!(path = %p, "reconcile: the server has a version this folder missed");
            match self.download(&p, None, local, report).await {
                Ok(_) => {}
                Err(crate::download::DownloadError::Client(ClientError::Api {
                    problem, ..
                })) if problem.code == ErrorCode::NotFound => {}
                Err(e) => report.problems.push(format!("{p}: {e}")),
            }
        }
        // Synced here, gone there: confirm with the server (the snapshot
        // may predate what the journal already brought), then delete.
        for s in self.state.all_synced()? {
            if live.contains(&s.path) {
                continue;
            }
            match self.api.manifest(self.ns, s.path.as_str(), None).await {
                Err(ClientError::Api { problem, .. }) if problem.code == ErrorCode::NotFound => {}
                _ => continue,
            }
            match self.root.stat(&s.path) {
                Some(st) if st == s.stat => {
                    tracing::info!(path = %s.path, "reconcile: deleted on the server");
                    self.root
                        .remove(&s.path)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    self.state.forget(&s.path)?;
                    report.deleted_here += 1;
                }
                // Edited here: the push sends it as a new file.
                Some(_) => self.state.forget(&s.path)?,
                None => self.state.forget(&s.path)?,
            }
        }
        Ok(())
    }
}
