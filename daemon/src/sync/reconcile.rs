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

use driftless_protocol::{ChangeKind, ContentHash, ErrorCode, Rev, SyncPath, VersionView};

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
        let mut differ = Vec::new();
        for e in snapshot.iter().filter(|e| e.kind != ChangeKind::Delete) {
            let Ok(p) = SyncPath::parse(&e.path) else {
                report.problem(e.path.as_str(), "refused path");
                continue;
            };
            live.insert(p.clone());
            if ignore.ignored(&p, false) {
                continue;
            }
            let local = self.root.stat(&p);
            match self.state.synced(&p)? {
                // Agreed.
                Some(s) if s.rev == e.rev && Some(s.content_hash) == e.content_hash => {}
                // Another version there: whether it follows this device's
                // is for the server's history to say (revision numbers
                // alone cannot: a restored server reuses them).
                Some(s) => differ.push((p, s, local, e.rev, e.content_hash)),
                // Not here and never seen: the server has it, this folder must.
                None if local.is_none()
                    && std::fs::symlink_metadata(self.root.path_of(&p)).is_err() =>
                {
                    todo.push((p, None));
                }
                // New here too: the push sends it (and conflicts if they differ).
                None => {}
            }
        }
        let theirs: std::collections::HashMap<SyncPath, (Rev, Option<ContentHash>)> = differ
            .iter()
            .map(|(p, _, _, rev, h)| (p.clone(), (*rev, *h)))
            .collect();
        let differ = differ
            .into_iter()
            .map(|(p, s, local, _, _)| (p, s, local))
            .collect();
        for (s, local, history) in self.histories(differ).await {
            let history = match history {
                Ok(h) => h,
                Err(e) if e.retryable() => return Err(e.into()),
                Err(e) => {
                    report.problem(s.path.as_str(), e);
                    continue;
                }
            };
            let knows_ours = history
                .iter()
                .any(|v| !v.deleted && v.rev == s.rev && v.content_hash == Some(s.content_hash));
            if knows_ours {
                // The server moved on from the version agreed here: a clean
                // file takes the new one; a file deleted here too (an edit
                // there beats a delete here); a dirty one is the push's.
                if local.is_none_or(|st| st == s.stat) {
                    todo.push((s.path.clone(), local));
                }
                continue;
            }
            // The server forgot the version agreed here (restored from a
            // backup, or reset). If what it holds is an earlier version of
            // this device's, this device's goes on top of it; otherwise the
            // file is new to the server, and the push sends it so that the
            // two are kept side by side (a conflicted copy).
            tracing::warn!(path = %s.path, rev = s.rev.0,
                "the server does not know the version this device agreed on (restored from a backup?); this device's file is sent again");
            if let Some((rev, Some(h))) = theirs.get(&s.path).copied()
                && self.state.is_ancestor(&s.path, rev, &h)?
            {
                self.state.record(
                    &Synced {
                        path: s.path.clone(),
                        rev,
                        content_hash: h,
                        stat: LocalStat::UNKNOWN,
                    },
                    &[],
                )?;
                continue;
            }
            self.state.forget(&s.path)?;
            if local.is_none() {
                todo.push((s.path.clone(), None));
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
        let judged = self
            .histories(
                gone.into_iter()
                    .map(|s| (s.path.clone(), s, None))
                    .collect(),
            )
            .await;
        for (s, _, history) in judged {
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

    /// The server's history of each file, a few requests at once (a file
    /// with no history at all has an empty one).
    async fn histories(
        &self,
        files: Vec<(SyncPath, Synced, Option<LocalStat>)>,
    ) -> Vec<(
        Synced,
        Option<LocalStat>,
        Result<Vec<VersionView>, ClientError>,
    )> {
        use futures_util::stream::{self, StreamExt};
        stream::iter(files)
            .map(|(p, s, local)| async move {
                let h = match self.api.versions(self.ns, p.as_str()).await {
                    Err(ClientError::Api { problem, .. })
                        if problem.code == ErrorCode::NotFound =>
                    {
                        Ok(Vec::new())
                    }
                    other => other,
                };
                (s, local, h)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await
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
