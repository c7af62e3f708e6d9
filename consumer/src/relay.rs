//! The outbox relay: publishes every committed journal entry to the event
//! stream, in seq order per namespace, and marks a row sent only once the
//! stream has confirmed it (Kafka: every delivery report in).
//!
//! It runs in exactly one place at a time: every API and consumer process
//! starts one, and only the holder of the `outbox-relay` lease (a
//! PostgreSQL advisory lock) publishes; the others stand by and take over
//! within a second if it dies. The holder runs its queries on the lease's
//! connection, so it cannot go on publishing after losing the lock. A
//! relay killed mid-batch re-publishes the unmarked rows on restart;
//! consumers deduplicate by (namespace, seq).
//!
//! Commits in the same process wake it at once; commits in other processes
//! wake it through PostgreSQL NOTIFY ([`listen`], [`announce`]); a poll
//! every second catches anything else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use driftless_store::meta::journal;
use driftless_store::{Db, Event, Lease, Publisher};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::notifier::Notifier;
use crate::worker::{Step, Worker};

/// Rows per batch.
const BATCH: usize = 500;
/// The NOTIFY channel commits announce themselves on.
pub const CHANNEL: &str = "driftless_outbox";
/// The lease's name.
const LEASE: &str = "driftless-outbox-relay";

/// Called with the batch size once a batch is on the stream and before
/// its rows are marked sent (a failpoint for tests).
pub type AfterPublish = Box<dyn FnMut(usize) + Send>;

/// Drains the outbox into the event stream.
pub struct Relay {
    lease: Lease,
    publisher: Publisher,
    health: Option<Notifier>,
    leader: Arc<AtomicBool>,
    after_publish: Option<AfterPublish>,
}

impl Relay {
    /// A relay from this database to `publisher`.
    pub fn new(db: Db, publisher: Publisher) -> Self {
        Self {
            lease: Lease::new(db, LEASE),
            publisher,
            health: None,
            leader: Arc::default(),
            after_publish: None,
        }
    }

    /// Installs a hook run between publishing a batch and marking it sent.
    pub fn after_publish(mut self, f: AfterPublish) -> Self {
        self.after_publish = Some(f);
        self
    }

    /// Reports publish failures and recoveries to `notifier` (whose
    /// long-polls then poll the journal instead of waiting for events).
    pub fn with_health(mut self, notifier: Notifier) -> Self {
        self.health = Some(notifier);
        self
    }

    /// Set while this relay holds the lease.
    pub fn leader(&self) -> Arc<AtomicBool> {
        self.leader.clone()
    }

    /// Publishes one batch; returns how many rows it marked sent (0 also
    /// when another process holds the lease).
    pub async fn relay_once(&mut self) -> Result<usize, String> {
        let result = self.try_once().await;
        if let Err(e) = &result {
            if e.lease_lost {
                self.lease.release().await;
            }
            if let Some(n) = &self.health {
                n.set_relay_ok(!e.stream);
            }
        } else if let Some(n) = &self.health {
            n.set_relay_ok(true);
        }
        self.leader.store(self.lease.is_held(), Ordering::Relaxed);
        result.map_err(|e| e.message)
    }

    async fn try_once(&mut self) -> Result<usize, RelayError> {
        let Some(mut conn) = self.lease.acquire().await.map_err(RelayError::db)? else {
            return Ok(0);
        };
        let rows = journal::unsent(&mut conn, BATCH)
            .await
            .map_err(RelayError::db)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let events: Vec<Event> = rows
            .into_iter()
            .map(|r| Event {
                namespace: r.namespace,
                seq: r.seq,
                payload: r.payload,
            })
            .collect();
        // The lease's connection stays open while we publish: the lock is
        // ours until the rows are marked.
        self.publisher
            .publish(&events)
            .await
            .map_err(|e| RelayError {
                message: e.to_string(),
                stream: true,
                lease_lost: false,
            })?;
        if let Some(f) = self.after_publish.as_mut() {
            f(events.len());
        }
        let keys: Vec<_> = events.iter().map(|e| (e.namespace, e.seq)).collect();
        journal::mark_sent(&mut conn, &keys)
            .await
            .map_err(RelayError::db)?;
        Ok(keys.len())
    }

    /// Waits for queued events to be delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.publisher.flush(timeout) {
            tracing::warn!(error = %e, "events still queued at shutdown; they stay unsent in the outbox");
        }
    }
}

struct RelayError {
    message: String,
    /// The stream refused (the database is fine).
    stream: bool,
    /// The lease's session may be gone: give the lease up.
    lease_lost: bool,
}

impl RelayError {
    fn db(e: sqlx::Error) -> Self {
        Self {
            message: format!("database: {e}"),
            stream: false,
            lease_lost: true,
        }
    }
}

impl Worker for Relay {
    fn name(&self) -> &'static str {
        "outbox-relay"
    }

    async fn work(&mut self) -> Result<Step, String> {
        Ok(if self.relay_once().await? == 0 {
            Step::Idle
        } else {
            Step::Busy
        })
    }

    /// Publishes what is committed and not yet sent (commits that finished
    /// during shutdown), then flushes the producer (on drop).
    async fn stopping(&mut self) {
        let drained = tokio::time::timeout(STOP_DRAIN, async {
            loop {
                match self.relay_once().await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "relay: rows left unsent at shutdown; the next relay publishes them");
                        break;
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "relay: outbox not drained at shutdown; the next relay publishes the rest"
            );
        }
        self.lease.release().await;
    }
}

/// How long the relay keeps publishing at shutdown.
const STOP_DRAIN: Duration = Duration::from_secs(5);

impl Drop for Relay {
    fn drop(&mut self) {
        self.flush(Duration::from_secs(5));
    }
}

/// Wakes `wake` on every NOTIFY on [`CHANNEL`] (PostgreSQL; on SQLite there
/// is only this process, whose commits wake the relay directly).
pub fn listen(db: Db, wake: Arc<Notify>, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut listener = match db.listen(CHANNEL).await {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for commits; polling only");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    n = listener.recv() => match n {
                        Ok(_) => wake.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection lost");
                            break;
                        }
                    },
                }
            }
        }
    })
}

/// Tells the relay in another process that this one committed: one NOTIFY
/// per burst of commits (each `committed.notify_one()` is a commit), and
/// none while this process's own relay leads. PostgreSQL serializes the
/// commits of NOTIFYing transactions, so the NOTIFY is kept off the commit
/// path and coalesced.
pub fn announce(
    db: Db,
    leader: Arc<AtomicBool>,
    committed: Arc<Notify>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = committed.notified() => {}
            }
            if leader.load(Ordering::Relaxed) {
                continue;
            }
            if let Err(e) = db.notify(CHANNEL).await {
                tracing::debug!(error = %e, "NOTIFY failed; the relay will poll");
            }
        }
    })
}
