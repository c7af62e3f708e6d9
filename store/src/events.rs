//! The event stream: every committed journal entry, keyed by namespace.
//!
//! Production publishes to Kafka; the embedded default uses [`InProcessBus`],
//! a broadcast channel in this process. The relay and the notifier are the
//! same code above either (see the `consumer` crate).

use driftless_protocol::{NamespaceId, Seq};
use tokio::sync::broadcast;

/// One journal entry on the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Folder (the partition key).
    pub namespace: NamespaceId,
    /// Journal seq.
    pub seq: Seq,
    /// JSON `JournalEvent`.
    pub payload: String,
}

/// Why publishing or consuming failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker could not be reached or refused; retry later.
    #[error("event stream unavailable: {0}")]
    Unavailable(String),
}

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// The next event.
    Event(Event),
    /// Events were missed (a slow subscriber): treat every namespace as moved.
    Gap,
}

/// The in-process stand-in for Kafka: a bounded broadcast channel.
#[derive(Clone, Debug)]
pub struct InProcessBus {
    tx: broadcast::Sender<Event>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(65_536)
    }
}

impl InProcessBus {
    /// A bus that holds up to `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
        }
    }

    /// Publishes events in order; with no subscriber they are simply gone,
    /// like a topic nobody reads.
    pub fn publish(&self, events: &[Event]) {
        for e in events {
            let _ = self.tx.send(e.clone());
        }
    }

    /// A subscription from now on.
    pub fn subscribe(&self) -> InProcessSubscription {
        InProcessSubscription {
            rx: self.tx.subscribe(),
        }
    }
}

/// Events after the moment of subscribing.
#[derive(Debug)]
pub struct InProcessSubscription {
    rx: broadcast::Receiver<Event>,
}

impl InProcessSubscription {
    /// The next event; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        match self.rx.recv().await {
            Ok(e) => Some(Received::Event(e)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Received::Gap),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
