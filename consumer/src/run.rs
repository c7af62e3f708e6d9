//! Starting the workers, the same way in every process: the API server
//! (`driftless-server`) and the standalone `driftless-consumer` call these.

use std::sync::Arc;
use std::time::Duration;

use driftless_store::{BlobStore, BusError, Db, EventBus, KafkaGroup};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::durable::{Durable, Source};
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

/// Failpoints for crash tests, named by `DRIFTLESS_FAILPOINT`: the process
/// aborts (like `kill -9`: no destructor, no flush, no offset commit) at
/// the named point, the first time it is reached with work done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// After the relay published a batch, before it marked the rows sent.
    RelayAfterPublish,
    /// After the verifier's effect committed, before its offsets did.
    VerifierAfterEffect,
}

impl Failpoint {
    /// Parses a failpoint name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "relay-after-publish" => Some(Self::RelayAfterPublish),
            "verifier-after-effect" => Some(Self::VerifierAfterEffect),
            _ => None,
        }
    }

    fn abort(self) -> Box<dyn FnMut(usize) + Send> {
        Box::new(move |n| {
            if n > 0 {
                eprintln!("failpoint {self:?}: aborting after {n} entries");
                std::process::abort();
            }
        })
    }
}

/// Starts the outbox relay (it publishes while it holds the lease), its
/// LISTEN for other processes' commits and its NOTIFY for this one's.
pub fn start_relay(
    db: &Db,
    events: &EventBus,
    health: Option<Notifier>,
    signals: &RelaySignals,
    failpoint: Option<Failpoint>,
    cancel: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, BusError> {
    let mut relay = Relay::new(db.clone(), events.publisher()?);
    if failpoint == Some(Failpoint::RelayAfterPublish) {
        relay = relay.after_publish(Failpoint::RelayAfterPublish.abort());
    }
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
    /// A failpoint (tests).
    pub failpoint: Option<Failpoint>,
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
        failpoint,
    } = setup;
    let handler = VerifyEvents::new(db.clone(), blob.clone());
    let source = match &events {
        EventBus::InProcess(bus) => Source::InProcess(bus.subscribe()),
        EventBus::Kafka(config) => {
            Source::Kafka(KafkaGroup::join(config, &Durable::group_of(&handler))?)
        }
    };
    let mut verifier = Durable::new(db.clone(), handler, source);
    if failpoint == Some(Failpoint::VerifierAfterEffect) {
        let mut abort = Failpoint::VerifierAfterEffect.abort();
        verifier = verifier.after_effect(Box::new(move |n| abort(n as usize)));
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
