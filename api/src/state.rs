//! What every handler shares: the database, the blob store, cursor keys and
//! the limits in force.

use std::sync::Arc;
use std::time::Duration;

use driftless_consumer::Notifier;
use driftless_consumer::run::RelaySignals;
use driftless_protocol::CursorKey;
use driftless_store::{BlobStore, Db, EventBus, InProcessBus};

/// Limits and lifetimes.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Upload session lifetime.
    pub upload_ttl: Duration,
    /// Origins allowed to call the API from a browser (empty: no CORS).
    pub cors_origins: Vec<String>,
    /// How long past its expiry a session is left before it is aborted
    /// (longer than any commit takes, so none is cut off mid-way).
    pub session_grace: Duration,
    /// Long-polls one process holds before it asks idle clients to back off.
    pub long_poll_soft_limit: usize,
    /// Whether this process also runs the durable consumers (the verifier)
    /// and the sweepers; production may run them in `driftless-consumer`
    /// instead. The relay and the notifier always run with the API.
    pub run_consumers: bool,
}

/// Shared handler state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Metadata.
    pub db: Db,
    /// Object storage.
    pub blob: BlobStore,
    /// Keys that verify cursors; the first signs new ones.
    pub cursor_keys: Arc<Vec<CursorKey>>,
    /// Limits and lifetimes.
    pub settings: Arc<Settings>,
    /// An argon2 hash checked when a login names an unknown user (equal timing).
    pub dummy_password_hash: String,
    /// Tell the outbox relay (here or elsewhere) that a commit wrote rows.
    pub relay: RelaySignals,
    /// The event stream (in process by default; Kafka in production).
    pub events: EventBus,
    /// Wakes long-polls by namespace.
    pub notifier: Notifier,
}

impl AppState {
    /// State over a database and bucket with fresh workers' signals.
    pub fn new(
        db: Db,
        blob: BlobStore,
        cursor_keys: Vec<CursorKey>,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            db,
            blob,
            cursor_keys: Arc::new(cursor_keys),
            settings: Arc::new(settings),
            dummy_password_hash: crate::auth::hash_password("not a real password")?,
            relay: RelaySignals::default(),
            events: EventBus::InProcess(InProcessBus::default()),
            notifier: Notifier::default(),
        })
    }

    /// The same state on another event stream.
    pub fn with_events(mut self, events: EventBus) -> Self {
        self.events = events;
        self
    }

    /// Called after commits: the relay publishes their outbox rows now
    /// (this process's, or through NOTIFY the leader elsewhere).
    pub fn committed(&self) {
        self.relay.wake.notify_one();
        self.relay.announce.notify_one();
    }
}
