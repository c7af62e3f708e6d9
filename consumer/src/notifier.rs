//! The long-poll notifier: each API process follows the event stream and
//! wakes the long-polls waiting on a namespace as soon as it moves.
//!
//! A waiter registers before it re-checks the journal, so a commit that
//! lands between the check and the wait still wakes it. When the stream is
//! unhealthy (broker down, events missed) waiters fall back to polling the
//! journal; the notifier only ever makes them return sooner.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use driftless_protocol::{NamespaceId, Seq};
use std::time::Duration;

use driftless_store::{InProcessSubscription, KafkaConfig, KafkaFollower, Received};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Inner {
    watches: Mutex<HashMap<NamespaceId, watch::Sender<u64>>>,
    /// Bumped when events may have been missed: every waiter re-checks.
    gaps: watch::Sender<u64>,
    /// The follower reaches the stream.
    stream_ok: AtomicBool,
    /// The local relay publishes (or is not the leader).
    relay_ok: AtomicBool,
    held: AtomicUsize,
}

/// Wakes long-polls by namespace. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                watches: Mutex::new(HashMap::new()),
                gaps: watch::channel(0).0,
                stream_ok: AtomicBool::new(true),
                relay_ok: AtomicBool::new(true),
                held: AtomicUsize::new(0),
            }),
        }
    }
}

impl Notifier {
    /// Records that `ns` reached `seq`, waking its waiters.
    pub fn observe(&self, ns: NamespaceId, seq: Seq) {
        let watches = self
            .inner
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = watches.get(&ns) {
            tx.send_if_modified(|cur| {
                let moved = seq.0 > *cur;
                *cur = (*cur).max(seq.0);
                moved
            });
        }
    }

    /// Events may have been missed: wake everyone to re-check.
    pub fn gap(&self) {
        self.inner.gaps.send_modify(|g| *g += 1);
    }

    /// Whether events flow (otherwise waiters poll the journal).
    pub fn healthy(&self) -> bool {
        self.inner.stream_ok.load(Ordering::Relaxed) && self.inner.relay_ok.load(Ordering::Relaxed)
    }

    /// The follower can (not) reach the stream.
    pub fn set_stream_ok(&self, up: bool) {
        self.set(&self.inner.stream_ok, up);
    }

    /// The local relay can (not) publish.
    pub fn set_relay_ok(&self, up: bool) {
        self.set(&self.inner.relay_ok, up);
    }

    fn set(&self, flag: &AtomicBool, up: bool) {
        let was = flag.swap(up, Ordering::Relaxed);
        if was != up {
            tracing::info!(healthy = self.healthy(), "event stream health changed");
            // Down: waiters switch to polling the journal. Back up: whatever
            // happened meanwhile, re-check. Either way, wake them all.
            self.gap();
        }
    }

    /// Long-polls currently waiting.
    pub fn held(&self) -> usize {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// Registers a waiter on `ns`.
    pub fn subscribe(&self, ns: NamespaceId) -> Waiter {
        let mut watches = self
            .inner
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let rx = watches
            .entry(ns)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        self.inner.held.fetch_add(1, Ordering::Relaxed);
        Waiter {
            ns,
            rx,
            gaps: self.inner.gaps.subscribe(),
            inner: self.inner.clone(),
        }
    }
}

/// One long-poll's registration; dropping it unregisters.
#[derive(Debug)]
pub struct Waiter {
    ns: NamespaceId,
    rx: watch::Receiver<u64>,
    gaps: watch::Receiver<u64>,
    inner: Arc<Inner>,
}

/// Why a waiter woke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The namespace reached this seq.
    Moved(Seq),
    /// Events may have been missed: check the journal.
    Check,
}

impl Waiter {
    /// Waits for the next event about this namespace (or a gap).
    pub async fn next(&mut self) -> Wake {
        tokio::select! {
            r = self.rx.changed() => match r {
                Ok(()) => Wake::Moved(Seq(*self.rx.borrow_and_update())),
                Err(_) => std::future::pending().await,
            },
            r = self.gaps.changed() => match r {
                Ok(()) => Wake::Check,
                Err(_) => std::future::pending().await,
            },
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.inner.held.fetch_sub(1, Ordering::Relaxed);
        let mut watches = self
            .inner
            .watches
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // This receiver is still alive here: the last waiter sees a count of 1.
        if watches
            .get(&self.ns)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            watches.remove(&self.ns);
        }
    }
}

/// How often the Kafka follower checks that the broker answers.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Feeds `notifier` from every partition of the Kafka topic until
/// cancelled, and keeps its stream health up to date. Starting it never
/// fails: while the broker is unreachable it retries, and long-polls poll.
pub fn follow_kafka(
    config: KafkaConfig,
    notifier: Notifier,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let follower = loop {
            match KafkaFollower::start(&config).await {
                Ok(f) => break f,
                Err(e) => {
                    notifier.set_stream_ok(false);
                    tracing::warn!(error = %e, "cannot follow the event stream yet; long-polls poll the journal");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(PROBE_EVERY) => {}
                    }
                }
            }
        };
        notifier.set_stream_ok(true);
        // The probe runs beside the reader, never in its way: a metadata
        // request that takes a second (a broker just back) must not hold
        // up the events already fetched.
        let prober = {
            let (follower, notifier, cancel) = (follower.clone(), notifier.clone(), cancel.clone());
            tokio::spawn(async move {
                let mut probe = tokio::time::interval(PROBE_EVERY);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = probe.tick() => notifier.set_stream_ok(follower.probe().await),
                    }
                }
            })
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = follower.recv() => match r {
                    Ok(Some(e)) => {
                        notifier.set_stream_ok(true);
                        notifier.observe(e.namespace_id, e.seq);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "event stream read failed"),
                },
            }
        }
        let _ = prober.await;
    })
}

/// Feeds `notifier` from an in-process subscription until cancelled.
pub fn follow_in_process(
    mut sub: InProcessSubscription,
    notifier: Notifier,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = sub.recv() => match r {
                    Some(Received::Event(e)) => notifier.observe(e.namespace, e.seq),
                    Some(Received::Gap) => notifier.gap(),
                    None => break,
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_waiters_of_the_namespace_only_and_unregisters() {
        let n = Notifier::default();
        let mut a = n.subscribe(NamespaceId(1));
        let mut b = n.subscribe(NamespaceId(2));
        assert_eq!(n.held(), 2);
        n.observe(NamespaceId(1), Seq(5));
        assert_eq!(a.next().await, Wake::Moved(Seq(5)));
        // An older seq does not wake anyone.
        n.observe(NamespaceId(1), Seq(3));
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(20), a.next()).await;
        assert!(quiet.is_err());
        n.gap();
        assert_eq!(b.next().await, Wake::Check);
        drop(a);
        drop(b);
        assert_eq!(n.held(), 0);
        assert!(n.inner.watches.lock().unwrap().is_empty());
    }
}
