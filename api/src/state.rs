//! What every handler shares: the database, the blob store, cursor keys and
//! the limits in force.

use std::sync::Arc;
use std::time::Duration;

use driftless_consumer::Notifier;
use driftless_consumer::run::RelaySignals;
use driftless_protocol::CursorKey;
use driftless_store::{BlobStore, Db, EventBus, InProcessBus};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::{Buckets, Slots};
use crate::metrics::Metrics;

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
    /// Long-polls one process holds at most; more are answered 429.
    pub max_long_polls: usize,
    /// Other requests one process runs at once; more are answered 429.
    pub max_in_flight: usize,
    /// How long a graceful shutdown waits for commits and workers.
    pub shutdown_grace: Duration,
    /// Whether this process also runs the durable consumers (the verifier)
    /// and the sweepers; production may run them in `driftless-consumer`
    /// instead. The relay and the notifier always run with the API.
    pub run_consumers: bool,
    /// The largest file a commit accepts (a manifest can name one small
    /// chunk many times: this bounds what every member's disk is asked to
    /// hold).
    pub max_file_bytes: u64,
    /// A device token stops working after this long unused (`None`: never).
    /// Every use moves the expiry on, so an active device never notices.
    pub token_ttl: Option<Duration>,
    /// Per caller: requests one user runs at once (more: 429).
    pub max_in_flight_per_user: usize,
    /// Per caller: long-polls one device holds at once (more: 429).
    pub max_long_polls_per_device: usize,
    /// Per caller: open connections from one address (more are closed).
    pub max_connections_per_address: usize,
    /// Login attempts from one address: a burst, then one per this long.
    pub login_burst: u32,
    /// See `login_burst`.
    pub login_every: Duration,
    /// Password checks (argon2, ~19 MiB each) run at once, process-wide.
    pub login_concurrency: usize,
    /// How long a connection may take to send a request's headers, and
    /// stay idle between requests.
    pub header_read_timeout: Duration,
    /// The bearer token `/metrics` asks of scrapers (`None`: only requests
    /// from this machine are answered).
    pub metrics_token: Option<String>,
}

/// The largest file by default: 50 GiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 50 << 30;

impl Default for Settings {
    /// Production's defaults (`deploy/driftless.toml`).
    fn default() -> Self {
        Self {
            upload_ttl: Duration::from_secs(86_400),
            cors_origins: Vec::new(),
            session_grace: Duration::from_secs(900),
            long_poll_soft_limit: 50_000,
            max_long_polls: 100_000,
            max_in_flight: 512,
            shutdown_grace: Duration::from_secs(30),
            run_consumers: true,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            token_ttl: None,
            max_in_flight_per_user: 64,
            max_long_polls_per_device: 16,
            max_connections_per_address: 256,
            login_burst: 10,
            login_every: Duration::from_secs(2),
            login_concurrency: 2,
            header_read_timeout: Duration::from_secs(10),
            metrics_token: None,
        }
    }
}

/// The per-caller limits in force (see `crate::limits`).
pub struct Limits {
    /// Login attempts per client address.
    pub logins_by_address: Buckets<std::net::IpAddr>,
    /// Failed logins per user name (a password guesser spread over many
    /// addresses still meets this one).
    pub failures_by_user: Buckets<String>,
    /// Password checks running.
    pub password_checks: Arc<tokio::sync::Semaphore>,
    /// Requests per user.
    pub in_flight: Slots<i64>,
    /// Long-polls per device.
    pub long_polls: Slots<driftless_protocol::DeviceId>,
    /// Connections per address.
    pub connections: Slots<std::net::IpAddr>,
}

impl Limits {
    fn new(s: &Settings) -> Self {
        Self {
            logins_by_address: Buckets::new(s.login_burst, s.login_every),
            failures_by_user: Buckets::new(s.login_burst, s.login_every * 5),
            password_checks: Arc::new(tokio::sync::Semaphore::new(s.login_concurrency.max(1))),
            in_flight: Slots::new(s.max_in_flight_per_user),
            long_polls: Slots::new(s.max_long_polls_per_device),
            connections: Slots::new(s.max_connections_per_address),
        }
    }
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
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Admits requests while the process is not overloaded.
    pub admission: Arc<tokio::sync::Semaphore>,
    /// Fires when the server starts shutting down: long-polls return,
    /// `/readyz` answers 503.
    pub stopping: CancellationToken,
    /// Commits in progress (they run to their end even if their client
    /// leaves; shutdown waits for them).
    pub commits: TaskTracker,
    /// Per-caller limits.
    pub limits: Arc<Limits>,
    /// Devices signed out on the server here: their long-polls end.
    pub revoked: tokio::sync::broadcast::Sender<driftless_protocol::DeviceId>,
}

impl AppState {
    /// State over a database and bucket with fresh workers' signals.
    pub fn new(
        db: Db,
        blob: BlobStore,
        cursor_keys: Vec<CursorKey>,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let settings_in_flight = settings.max_in_flight;
        let limits = Arc::new(Limits::new(&settings));
        Ok(Self {
            db,
            blob,
            cursor_keys: Arc::new(cursor_keys),
            settings: Arc::new(settings),
            dummy_password_hash: crate::auth::hash_password("not a real password")?,
            relay: RelaySignals::default(),
            events: EventBus::InProcess(InProcessBus::default()),
            notifier: Notifier::default(),
            metrics: Arc::default(),
            admission: Arc::new(tokio::sync::Semaphore::new(settings_in_flight)),
            stopping: CancellationToken::new(),
            commits: TaskTracker::new(),
            limits,
            revoked: tokio::sync::broadcast::channel(1024).0,
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
