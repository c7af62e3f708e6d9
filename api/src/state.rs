//! What every handler shares: the database, the blob store, cursor keys and
//! the limits in force.

use std::sync::Arc;
use std::time::Duration;

use driftless_consumer::Notifier;
use driftless_protocol::CursorKey;
use driftless_store::{BlobStore, Db, InProcessBus};
use tokio::sync::Notify;

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
    /// Wakes the chunk verifier when a commit recorded new chunks.
    pub verifier_wake: Arc<Notify>,
    /// Wakes the outbox relay when a commit wrote outbox rows.
    pub relay_wake: Arc<Notify>,
    /// The event stream (in process; Kafka in production).
    pub bus: InProcessBus,
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
            verifier_wake: Arc::default(),
            relay_wake: Arc::default(),
            bus: InProcessBus::default(),
            notifier: Notifier::default(),
        })
    }

    /// Called after commits: the relay publishes their outbox rows now.
    pub fn committed(&self) {
        self.relay_wake.notify_one();
    }
}
