//! The one shape every long-running loop has: a [`Worker`] does one unit of
//! work per call and says whether more is waiting; [`spawn`] drives it until
//! the cancellation token fires, sleeping when idle (or until woken), and
//! backing off after errors without ever giving up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What one unit of work found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Did something; more may be waiting, run again at once.
    Busy,
    /// Nothing to do: sleep until woken or the idle period passes.
    Idle,
}

/// A background worker.
pub trait Worker: Send + 'static {
    /// Name for logs.
    fn name(&self) -> &'static str;
    /// One unit of work. Errors are logged and retried after a backoff.
    fn work(&mut self) -> impl Future<Output = Result<Step, String>> + Send;
    /// Last work before the worker stops (graceful shutdown). The caller
    /// bounds how long it may take.
    fn stopping(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Longest pause after repeated errors.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs `worker` until `cancel` fires. `wake` cuts an idle sleep short.
pub fn spawn<W: Worker>(
    mut worker: W,
    idle: Duration,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let pause = tokio::select! {
                _ = cancel.cancelled() => break,
                step = worker.work() => match step {
                    Ok(Step::Busy) => {
                        backoff = Duration::from_millis(100);
                        continue;
                    }
                    Ok(Step::Idle) => {
                        backoff = Duration::from_millis(100);
                        idle
                    }
                    Err(e) => {
                        tracing::warn!(worker = worker.name(), error = %e, retry_in_ms = backoff.as_millis() as u64, "worker step failed");
                        let pause = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        pause
                    }
                },
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        worker.stopping().await;
        tracing::debug!(worker = worker.name(), "worker stopped");
    })
}
