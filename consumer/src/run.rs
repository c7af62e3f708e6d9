//! Starting the workers, the same way in every process: the API server
//! (`driftless-server`) and the standalone `driftless-consumer` call these.

use std::sync::Arc;
use std::time::Duration;

use driftless_store::{BlobStore, BusError, Db, EventBus, KafkaGroup};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::durable::{AfterEffect, Durable, Source};
use crate::notifier::Notifier;
use crate::relay::{self, Relay};
use crate::sessions::SessionSweeper;
use crate::verify::{Verifier, VerifyEvents};
use crate::worker::spawn;

/// Commits wake the relay at once (in process, or by NOTIFY); this catches
/// the rest (a lost NOTIFY, rows left by a crash, a lease taken over).
const RELAY_IDLE: Duration = Duration::from_secs(1);
/// How often the sweep verifier looks for packs the stream did not name.
const VERIFIER_IDLE: Duration = Duration::from_secs(30);
/// The sweep verifies packs older than this (younger ones are the event
/// verifier's).
const SWEEP_AFTER: Duration = Duration::from_secs(120);
const SWEEPER_IDLE: Duration = Duration::from_secs(60);

/// The relay's signals, shared with the code that commits.
#[derive(Clone, Default)]
pub struct RelaySignals {
    /// A commit in this process: publish now.
    pub wake: Arc<Notify>,
    /// A commit in this process: tell the leader elsewhere (NOTIFY).
    pub announce: Arc<Notify>,
}

/// Starts the outbox relay (it publishes while it holds the lease), its
/// LISTEN for other processes' commits and its NOTIFY for this one's.
pub fn start_relay(
    db: &Db,
    events: &EventBus,
    health: Option<Notifier>,
    signals: &RelaySignals,
    cancel: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, BusError> {
    let mut relay = Relay::new(db.clone(), events.publisher()?);
    if let Some(n) = health {
        relay = relay.with_health(n);
    }
    Ok(vec![
        relay::announce(
            db.clone(),
            relay.leader(),
            signals.announce.clone(),
            cancel.clone(),
        ),
        relay::listen(db.clone(), signals.wake.clone(), cancel.clone()),
        spawn(relay, RELAY_IDLE, signals.wake.clone(), cancel.clone()),
    ])
}

/// What the consumers need.
pub struct ConsumerSetup {
    /// Metadata.
    pub db: Db,
    /// Object storage.
    pub blob: BlobStore,
    /// The event stream.
    pub events: EventBus,
    /// How long past expiry an upload session is left alone.
    pub session_grace: Duration,
    /// Upload session lifetime (the sweeper looks at least this often).
    pub upload_ttl: Duration,
    /// A failpoint run after each verified batch's effect (tests).
    pub after_effect: Option<AfterEffect>,
}

/// Starts the workers that need no HTTP: the event-driven verifier (a
/// consumer group on Kafka), its sweep, and the upload-session sweeper.
pub fn start_consumers(
    setup: ConsumerSetup,
    cancel: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, BusError> {
    let ConsumerSetup {
        db,
        blob,
        events,
        session_grace,
        upload_ttl,
        after_effect,
    } = setup;
    let handler = VerifyEvents::new(db.clone(), blob.clone());
    let source = match &events {
        EventBus::InProcess(bus) => Source::InProcess(bus.subscribe()),
        EventBus::Kafka(config) => {
            Source::Kafka(KafkaGroup::join(config, &Durable::group_of(&handler))?)
        }
    };
    let mut verifier = Durable::new(db.clone(), handler, source);
    if let Some(f) = after_effect {
        verifier = verifier.after_effect(f);
    }
    Ok(vec![
        spawn(
            verifier,
            Duration::ZERO,
            Arc::new(Notify::new()),
            cancel.clone(),
        ),
        spawn(
            Verifier::new(db.clone(), blob.clone()).sweep_after(SWEEP_AFTER),
            VERIFIER_IDLE,
            Arc::new(Notify::new()),
            cancel.clone(),
        ),
        spawn(
            SessionSweeper::new(db, blob, session_grace),
            SWEEPER_IDLE.min(upload_ttl),
            Arc::new(Notify::new()),
            cancel.clone(),
        ),
    ])
}
