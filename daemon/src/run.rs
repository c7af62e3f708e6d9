//! The foreground daemon: a pass at start (the full comparison that repairs
//! whatever was missed while it was off), then a pass whenever the folder
//! changes (file-system events, debounced), the server moves (a long-poll
//! on the changes feed), or the periodic rescan comes due — the fallback
//! when events are lost or the OS refuses more watches.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::local::{PARTIAL_PREFIX, STATE_DIR};
use crate::sync::{CURSOR_KEY, PassReport, SyncError, Syncer};

/// A file in the state folder whose change wakes the daemon for a pass
/// (`driftless sync --confirm-deletes` while a daemon runs).
pub const WAKE_FILE: &str = "wake";

/// How the daemon paces itself.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Quiet time after the last file-system event before a pass.
    pub debounce: Duration,
    /// The longest a pass waits for quiet after the first event: under
    /// continuous activity (a log written, an indexer reading) changes
    /// still go out this often.
    pub max_delay: Duration,
    /// A full pass at least this often.
    pub rescan: Duration,
    /// Long-poll timeout asked of the server.
    pub poll_timeout_s: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(300),
            max_delay: Duration::from_secs(1),
            rescan: Duration::from_secs(300),
            poll_timeout_s: 60,
        }
    }
}

/// Why [`run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The `stop` future resolved.
    Asked,
    /// The server no longer accepts this device (signed out on the server,
    /// or its sign-in expired): only `driftless login` helps, so the daemon
    /// stops rather than retry for ever.
    SignedOut(String),
}

/// Runs `syncer` until `stop` resolves or the server signs the device out;
/// `on_pass` sees each pass's report.
pub async fn run(
    syncer: Syncer,
    opts: RunOptions,
    stop: impl std::future::Future<Output = ()>,
    mut on_pass: impl FnMut(&Result<PassReport, SyncError>),
) -> Stopped {
    let syncer = Arc::new(syncer);
    let (tx, mut local) = mpsc::channel::<()>(1);
    let mut rescan = opts.rescan;
    let _watcher = match watch(syncer.root().dir(), tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the folder (raise fs.inotify.max_user_watches?); rescanning every 30 s instead");
            rescan = rescan.min(Duration::from_secs(30));
            None
        }
    };
    let remote = Arc::new(Notify::new());
    let poller = tokio::spawn(long_poll(
        syncer.clone(),
        remote.clone(),
        opts.poll_timeout_s,
    ));
    tokio::pin!(stop);
    let mut backoff = Duration::from_secs(1);
    loop {
        let result = syncer.pass().await;
        let failed = result.as_ref().is_err_and(|e| e.retryable());
        on_pass(&result);
        if let Err(e) = &result {
            tracing::warn!(error = %e, "sync pass failed");
        }
        if let Err(SyncError::Client(e)) = &result
            && e.signed_out()
        {
            poller.abort();
            return Stopped::SignedOut(e.to_string());
        }
        let pause = if failed {
            let p = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(60));
            p
        } else {
            backoff = Duration::from_secs(1);
            rescan
        };
        tokio::select! {
            _ = &mut stop => break,
            _ = remote.notified() => {}
            Some(()) = local.recv() => {
                // Let a burst of writes settle, but never for longer than
                // `max_delay`, and not at all once the server has news.
                let deadline = tokio::time::Instant::now() + opts.max_delay;
                loop {
                    let quiet = opts.debounce.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    if quiet.is_zero() {
                        break;
                    }
                    tokio::select! {
                        _ = &mut stop => {
                            poller.abort();
                            return Stopped::Asked;
                        }
                        _ = remote.notified() => break,
                        more = tokio::time::timeout(quiet, local.recv()) => {
                            if !matches!(more, Ok(Some(()))) {
                                break;
                            }
                        }
                    }
                }
            }
            _ = tokio::time::sleep(pause) => {}
        }
    }
    poller.abort();
    Stopped::Asked
}

/// Follows the changes feed and rings `remote` when the folder moves.
async fn long_poll(syncer: Arc<Syncer>, remote: Arc<Notify>, timeout_s: u64) {
    let mut backoff = Duration::from_secs(1);
    // A cursor past our own changes, valid while the stored one is unchanged.
    let mut skip: Option<(String, String)> = None;
    loop {
        let stored = match syncer.state().get(CURSOR_KEY) {
            Ok(Some(c)) => c,
            _ => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let cursor = match &skip {
            Some((base, past)) if *base == stored => past.clone(),
            _ => stored.clone(),
        };
        match syncer
            .api()
            .wait(syncer.namespace(), &cursor, timeout_s)
            .await
        {
            Ok(w) => {
                backoff = Duration::from_secs(1);
                if let Some(past) = w.cursor {
                    skip = Some((stored, past));
                }
                if w.changed {
                    remote.notify_one();
                    // Give the pass a moment to advance the cursor.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                } else if let Some(ms) = w.backoff_ms {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "long-poll failed");
                if e.signed_out() {
                    // The pass says so, and the daemon stops.
                    remote.notify_one();
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    continue;
                }
                if !e.retryable() {
                    // A reset cursor: the pass bootstraps again.
                    remote.notify_one();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Watches `dir` recursively; sends on `tx` for each change that matters.
fn watch(dir: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let state_dir = dir.join(STATE_DIR);
    let wake = state_dir.join(WAKE_FILE);
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if !changes(&ev.kind) {
            return;
        }
        let relevant = ev.paths.iter().any(|p| {
            *p == wake
                || (!p.starts_with(&state_dir)
                    && !p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(PARTIAL_PREFIX)))
        });
        if relevant {
            let _ = tx.try_send(());
        }
    })?;
    w.watch(dir, RecursiveMode::Recursive)?;
    Ok(w)
}

/// Whether an event can mean a change: opening, reading and closing a
/// file unwritten cannot (editors, indexers and this daemon's own reads
/// do that all day), nor can a change of access time.
fn changes(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind};

    #[test]
    fn reads_are_not_changes() {
        assert!(!changes(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes(&EventKind::Access(AccessKind::Read)));
        assert!(!changes(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(changes(&EventKind::Create(CreateKind::File)));
    }
}
