//! Client-side reconcile: the whole server snapshot against the state and
//! the folder, repairing what the event path missed — a pass cut off
//! between setting a conflicted copy aside and fetching the server's
//! version, a journal compacted past a long-offline cursor, a change
//! applied on the server while this device was told otherwise. Runs on a
//! syncer's first pass, after a cursor reset, and then every
//! [`RECONCILE_EVERY`].
//!
//! A server that forgot (restored from a backup, reset, or a new server at
//! the same address) is not a server whose files were deleted: a local
//! file is removed only when the server's history shows the very version
//! this device agreed on followed by a delete. Anything else the server
//! does not know is this device's to upload again.

use std::collections::HashSet;
use std::time::Duration;

use driftless_protocol::{ChangeKind, ErrorCode, SyncPath, VersionView};

use super::{PassReport, SyncError, Syncer};
use crate::http::ClientError;
use crate::local::LocalStat;
use crate::scan::Ignore;
use crate::state::Synced;

/// How often a full comparison runs besides the first pass.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(15 * 60);

/// History lookups at once for files the snapshot lacks.
const PARALLEL: usize = 8;

/// What the server's history says of a synced file missing from its snapshot.
#[derive(Debug, PartialEq, Eq)]
enum Missing {
    /// Live again since the snapshot: the journal brings it.
    Live,
    /// The version this device agreed on, then a delete: evidence.
    Deleted,
    /// The server does not know the version this device agreed on.
    Forgotten,
}

fn judge(s: &Synced, history: &[VersionView]) -> Missing {
    // Newest first.
    match history.first() {
        Some(h) if !h.deleted => Missing::Live,
        Some(h)
            if h.rev > s.rev
                && history.iter().any(|v| {
                    !v.deleted && v.rev == s.rev && v.content_hash == Some(s.content_hash)
                }) =>
        {
            Missing::Deleted
        }
        _ => Missing::Forgotten,
    }
}

impl Syncer {
    /// Compares every live server file with the folder and the state.
    /// Dirty local files are left to the push (they upload, or conflict).
    pub(crate) async fn reconcile(
        &self,
        ignore: &Ignore,
        report: &mut PassReport,
    ) -> Result<(), SyncError> {
        let snapshot = self.api.list(self.ns, None).await?;
        let mut live = HashSet::new();
        let mut todo = Vec::new();
        for e in snapshot.iter().filter(|e| e.kind != ChangeKind::Delete) {
            let Ok(p) = SyncPath::parse(&e.path) else {
                report.problem(e.path.as_str(), "refused path");
                continue;
            };
            live.insert(p.clone());
            if ignore.ignored(&p, false) {
                continue;
            }
            let synced = self.state.synced(&p)?;
            // The server went back in time (a restore from a backup).
            if let (Some(s), Some(h)) = (&synced, e.content_hash) {
                if e.rev < s.rev {
                    // It holds an older version than the one this device
                    // agreed on: this device's version becomes an edit on
                    // top of it, sent by the push.
                    tracing::warn!(path = %p, server_rev = e.rev.0, agreed_rev = s.rev.0,
                        "the server holds an older version than this device agreed on (restored from a backup?); this device's version is sent again");
                    self.state.record(
                        &Synced {
                            path: p.clone(),
                            rev: e.rev,
                            content_hash: h,
                            stat: LocalStat::UNKNOWN,
                        },
                        &[],
                    )?;
                    continue;
                }
                if e.rev == s.rev && h != s.content_hash {
                    // Other bytes under the same revision number: two
                    // histories. The push sends this device's file as new,
                    // which conflicts: both are kept, side by side.
                    tracing::warn!(path = %p, rev = e.rev.0,
                        "the server holds other bytes under the revision this device agreed on (restored from a backup?); both versions are kept");
                    self.state.forget(&p)?;
                    continue;
                }
            }
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
                Err(e) => report.problem(p.as_str(), e),
            }
        }
        // Synced here, not live there: the server's history decides.
        let gone: Vec<Synced> = self
            .state
            .all_synced()?
            .into_iter()
            .filter(|s| !live.contains(&s.path) && !ignore.ignored(&s.path, false))
            .collect();
        let judged = {
            use futures_util::stream::{self, StreamExt};
            stream::iter(gone)
                .map(|s| async move {
                    let h = match self.api.versions(self.ns, s.path.as_str()).await {
                        Ok(h) => Ok(h),
                        Err(ClientError::Api { problem, .. })
                            if problem.code == ErrorCode::NotFound =>
                        {
                            Ok(Vec::new())
                        }
                        Err(e) => Err(e),
                    };
                    (s, h)
                })
                .buffer_unordered(PARALLEL)
                .collect::<Vec<_>>()
                .await
        };
        for (s, history) in judged {
            let history = match history {
                Ok(h) => h,
                Err(e) if e.retryable() => return Err(e.into()),
                Err(e) => {
                    report.problem(s.path.as_str(), e);
                    continue;
                }
            };
            match judge(&s, &history) {
                Missing::Live => {}
                Missing::Deleted => match self.root.stat(&s.path) {
                    Some(st) if st == s.stat => {
                        tracing::info!(path = %s.path, "reconcile: deleted on the server");
                        self.root
                            .remove(&s.path)
                            .map_err(|e| ClientError::Protocol(e.to_string()))?;
                        self.state.forget(&s.path)?;
                        report.deleted_here += 1;
                    }
                    // Edited here: the push sends it as a new file.
                    Some(_) | None => self.state.forget(&s.path)?,
                },
                Missing::Forgotten => {
                    tracing::warn!(path = %s.path, rev = s.rev.0,
                        "the server does not know this file's version (restored, reset or a new server?); it is uploaded again");
                    // Forgetting the agreement makes the push send the file
                    // as new; a file deleted here too is simply forgotten.
                    self.state.forget(&s.path)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_protocol::{ContentHash, Rev};

    fn v(rev: u64, deleted: bool, h: u8) -> VersionView {
        VersionView {
            rev: Rev(rev),
            deleted,
            size: 1,
            content_hash: (!deleted).then(|| ContentHash::from_bytes([h; 32])),
            mtime_ms: 0,
            moved_from: None,
            device_id: None,
            committed_at_ms: 0,
        }
    }

    #[test]
    fn only_a_delete_after_the_agreed_version_is_evidence() {
        let s = Synced {
            path: SyncPath::parse("a").unwrap(),
            rev: Rev(5),
            content_hash: ContentHash::from_bytes([1; 32]),
            stat: LocalStat::UNKNOWN,
        };
        assert_eq!(
            judge(&s, &[v(7, true, 0), v(5, false, 1)]),
            Missing::Deleted
        );
        assert_eq!(
            judge(&s, &[v(9, true, 0), v(7, false, 2), v(5, false, 1)]),
            Missing::Deleted
        );
        // Never heard of it (a fresh or reset server).
        assert_eq!(judge(&s, &[]), Missing::Forgotten);
        // Restored: only an older version, or a delete of one.
        assert_eq!(
            judge(&s, &[v(3, true, 0), v(2, false, 1)]),
            Missing::Forgotten
        );
        // The same revision number for other bytes (reused after a restore).
        assert_eq!(
            judge(&s, &[v(7, true, 0), v(5, false, 9)]),
            Missing::Forgotten
        );
        assert_eq!(judge(&s, &[v(8, false, 3)]), Missing::Live);
    }
}
