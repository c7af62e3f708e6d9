//! The outbox relay: publishes every committed journal entry to the event
//! stream, in seq order per namespace, and marks a row sent only once the
//! stream has it. A relay killed mid-batch re-publishes the unmarked rows
//! on restart; consumers deduplicate by (namespace, seq).

use driftless_store::meta::journal;
use driftless_store::{Db, Event, InProcessBus};

use crate::worker::{Step, Worker};

/// Rows per batch.
const BATCH: usize = 500;

/// Where the relay publishes.
#[derive(Clone, Debug)]
pub enum Sink {
    /// The embedded default.
    InProcess(InProcessBus),
}

/// Drains the outbox into a sink.
pub struct Relay {
    db: Db,
    sink: Sink,
}

impl Relay {
    /// A relay from this database to `sink`.
    pub fn new(db: Db, sink: Sink) -> Self {
        Self { db, sink }
    }

    /// Publishes one batch; returns how many rows it marked sent.
    pub async fn relay_once(&mut self) -> Result<usize, String> {
        let rows = journal::unsent(&self.db, BATCH)
            .await
            .map_err(|e| e.to_string())?;
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
        match &self.sink {
            Sink::InProcess(bus) => bus.publish(&events),
        }
        let keys: Vec<_> = events.iter().map(|e| (e.namespace, e.seq)).collect();
        journal::mark_sent(&self.db, &keys)
            .await
            .map_err(|e| e.to_string())?;
        Ok(keys.len())
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
}
