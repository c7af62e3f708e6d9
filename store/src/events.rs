//! The event stream: every committed journal entry, keyed by namespace.
//!
//! Production publishes to Kafka ([`crate::kafka`]); the embedded default
//! uses [`InProcessBus`], a broadcast channel in this process. The relay,
//! the notifier and the durable consumers are the same code above either
//! (see the `consumer` crate): [`EventBus`] says which one a deployment
//! uses and hands out its publisher.

use driftless_protocol::{NamespaceId, Seq};
use tokio::sync::broadcast;

use crate::kafka::{KafkaConfig, KafkaProducer};

/// The event stream of a deployment.
#[derive(Clone, Debug)]
pub enum EventBus {
    /// In this process (the embedded default).
    InProcess(InProcessBus),
    /// A Kafka topic.
    Kafka(KafkaConfig),
}

impl EventBus {
    /// A publisher for the relay.
    pub fn publisher(&self) -> Result<Publisher, BusError> {
        Ok(match self {
            Self::InProcess(bus) => Publisher::InProcess(bus.clone()),
            Self::Kafka(config) => Publisher::Kafka(Box::new(KafkaProducer::new(config)?)),
        })
    }

    /// Prepares the stream (creates the Kafka topic if it is missing).
    pub async fn prepare(&self) -> Result<(), BusError> {
        match self {
            Self::InProcess(_) => Ok(()),
            Self::Kafka(config) => config.ensure_topic().await,
        }
    }
}

/// Publishes events and confirms their delivery.
pub enum Publisher {
    /// In process: delivered as soon as sent.
    InProcess(InProcessBus),
    /// Kafka: delivered once every delivery report is in.
    Kafka(Box<KafkaProducer>),
}

impl Publisher {
    /// Publishes `events` in order; `Ok` only once the stream has them all.
    pub async fn publish(&mut self, events: &[Event]) -> Result<(), BusError> {
        match self {
            Self::InProcess(bus) => {
                bus.publish(events);
                Ok(())
            }
            Self::Kafka(p) => p.publish(events).await,
        }
    }

    /// Waits for queued events to be delivered (at shutdown).
    pub fn flush(&self, timeout: std::time::Duration) -> Result<(), BusError> {
        match self {
            Self::InProcess(_) => Ok(()),
            Self::Kafka(p) => p.flush(timeout),
        }
    }
}

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

    /// The next event if one is waiting now.
    pub fn try_recv(&mut self) -> Option<Received> {
        match self.rx.try_recv() {
            Ok(e) => Some(Received::Event(e)),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Received::Gap),
            Err(_) => None,
        }
    }
}
