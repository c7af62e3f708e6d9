//! What every handler shares: the database, the blob store, cursor keys and
//! the limits in force.

use std::sync::Arc;
use std::time::Duration;

use driftless_protocol::CursorKey;
use driftless_store::{BlobStore, Db};
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
}
