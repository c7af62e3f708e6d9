//! Test fixtures shared by the driftless crates: a fresh PostgreSQL database
//! or SQLite file per test, a fresh bucket on a SigV4 S3 server (s3s-fs in
//! process, or the server `DRIFTLESS_TEST_S3_ENDPOINT` names), and a running
//! API server on port 0. A missing service fails the test loudly.

// Fixtures panic on setup failure: that is the test's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

mod broker;
mod garage;
mod process;
mod proxy;
mod s3;
mod watchdog;

pub use broker::{TestBroker, read_topic};
pub use garage::{GARAGE_REGION, GarageCluster, GarageNode};
pub use process::{ConsumerProcess, ServerProcess};
pub use proxy::{BlackHole, TcpProxy};
pub use s3::TestS3;
pub use watchdog::Watchdog;

use driftless_store::{BlobConfig, BlobStore, Db, EmbeddedS3};
use rand::Rng;
use sqlx::Executor;
use sqlx::postgres::PgPoolOptions;

/// Where the test PostgreSQL server is (a database per test is created on it).
pub fn pg_base_url() -> String {
    std::env::var("DRIFTLESS_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Deterministic, incompressible bytes (xorshift64), the same for a seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::rng().random::<u64>())
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub db: Db,
    /// The URL a separate process (a server under test) connects with.
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
    _watchdog: Watchdog,
}

impl TestDb {
    pub async fn postgres() -> Self {
        let name = unique("driftless_test_");
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{}/postgres", pg_base_url()))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {} ({e}); start it with \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
                    pg_base_url()
                )
            });
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        admin.close().await;
        let url = format!("{}/{name}", pg_base_url());
        let db = Db::connect(&url).await.unwrap();
        Self {
            db,
            url,
            pg_name: Some(name),
            _dir: None,
            _watchdog: Watchdog::arm(),
        }
    }

    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("meta.db").display());
        let db = Db::connect(&url).await.unwrap();
        Self {
            db,
            url,
            pg_name: None,
            _dir: Some(dir),
            _watchdog: Watchdog::arm(),
        }
    }

    /// Both databases, for tests that must behave the same on each.
    pub async fn both() -> [Self; 2] {
        [Self::postgres().await, Self::sqlite().await]
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Async work cannot run in Drop: a short-lived runtime on a thread does
        // it. It must not touch this test's pool (its connections belong to the
        // test's runtime, which is blocked here); FORCE ends their sessions.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(admin) = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&format!("{}/postgres", pg_base_url()))
                    .await
                {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = admin.execute(drop.as_str()).await;
                }
            });
        })
        .join();
    }
}

/// How a test server is set up.
pub struct AppOptions {
    /// Upload session lifetime.
    pub upload_ttl: Duration,
    /// The event stream: Kafka, or the in-process bus.
    pub kafka: Option<driftless_store::KafkaConfig>,
    /// Whether the server runs the verifier and the sweepers itself.
    pub run_consumers: bool,
    /// Requests run at once before 429.
    pub max_in_flight: usize,
    /// Long-polls held at once before 429.
    pub max_long_polls: usize,
    /// Requests one user runs at once before 429.
    pub max_in_flight_per_user: usize,
    /// Long-polls one device holds before 429.
    pub max_long_polls_per_device: usize,
    /// How long a device token lives unused.
    pub token_ttl: Option<Duration>,
    /// Time to send request headers, and to stay idle between requests.
    pub header_read_timeout: Duration,
    /// Object storage reached through a [`TcpProxy`] the test can freeze
    /// (the server's calls and the presigned URLs alike), with this silence
    /// limit for the server's S3 client.
    pub s3_proxy: Option<Duration>,
    /// The token `/metrics` asks for.
    pub metrics_token: Option<String>,
    /// Object storage on this Garage cluster (a fresh bucket) instead of
    /// the default S3 server.
    pub garage: Option<std::sync::Arc<GarageCluster>>,
    /// How long presigned URLs live.
    pub presign_ttl: Duration,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            upload_ttl: Duration::from_secs(3600),
            kafka: None,
            run_consumers: true,
            max_in_flight: 512,
            max_long_polls: 100_000,
            max_in_flight_per_user: 64,
            max_long_polls_per_device: 16,
            token_ttl: None,
            header_read_timeout: Duration::from_secs(10),
            s3_proxy: None,
            metrics_token: None,
            garage: None,
            presign_ttl: Duration::from_secs(300),
        }
    }
}

/// The API server on port 0 over a fresh PostgreSQL database and S3 bucket.
pub struct TestApp {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The server's state (for direct database checks).
    pub state: driftless_api::state::AppState,
    /// The bucket.
    pub s3: TestS3,
    /// The database (dropped with the app).
    pub db: TestDb,
    /// The proxy in front of object storage, if the options asked for one.
    pub s3_proxy: Option<TcpProxy>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// On PostgreSQL (production's database).
    pub async fn spawn() -> Self {
        Self::spawn_on(TestDb::postgres().await).await
    }

    /// On SQLite (the embedded default's database).
    pub async fn spawn_sqlite() -> Self {
        Self::spawn_on(TestDb::sqlite().await).await
    }

    /// A server on PostgreSQL whose upload sessions live `upload_ttl`.
    pub async fn spawn_with_upload_ttl(upload_ttl: Duration) -> Self {
        Self::spawn_configured(
            TestDb::postgres().await,
            AppOptions {
                upload_ttl,
                ..AppOptions::default()
            },
        )
        .await
    }

    /// On PostgreSQL, with its events on a fresh topic of `broker`.
    pub async fn spawn_kafka(broker: &TestBroker) -> Self {
        Self::spawn_configured(
            TestDb::postgres().await,
            AppOptions {
                kafka: Some(broker.fresh_topic()),
                ..AppOptions::default()
            },
        )
        .await
    }

    async fn spawn_on(db: TestDb) -> Self {
        Self::spawn_configured(db, AppOptions::default()).await
    }

    /// A server over `db` as `options` say.
    pub async fn spawn_configured(db: TestDb, options: AppOptions) -> Self {
        let AppOptions {
            upload_ttl,
            kafka,
            run_consumers,
            max_in_flight,
            max_long_polls,
            max_in_flight_per_user,
            max_long_polls_per_device,
            token_ttl,
            header_read_timeout,
            s3_proxy,
            metrics_token,
            garage,
            presign_ttl,
        } = options;
        // RUST_LOG=debug shows the server's logs (500s carry their detail there).
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        // The embedded default (SQLite) keeps its in-process S3 endpoint;
        // the production set (PostgreSQL) runs on Garage.
        let s3 = match garage {
            Some(cluster) => TestS3::on_garage(cluster, presign_ttl).await,
            None if db.db.dialect() == driftless_store::Dialect::Sqlite => {
                TestS3::embedded(presign_ttl).await
            }
            None => TestS3::start(presign_ttl).await,
        };
        let (store, proxy) = match s3_proxy {
            None => (s3.store.clone(), None),
            Some(read_timeout) => {
                let target = s3
                    .config
                    .endpoint
                    .trim_start_matches("http://")
                    .parse()
                    .unwrap();
                let proxy = TcpProxy::start(target).await;
                let config = BlobConfig {
                    endpoint: proxy.url(),
                    read_timeout,
                    ..s3.config.clone()
                };
                (BlobStore::new(&config), Some(proxy))
            }
        };
        let state = driftless_api::state::AppState::new(
            db.db.clone(),
            store,
            vec![driftless_protocol_key()],
            driftless_api::state::Settings {
                upload_ttl,
                cors_origins: vec!["https://app.example".into()],
                session_grace: Duration::ZERO,
                long_poll_soft_limit: 50_000,
                max_long_polls,
                max_in_flight,
                shutdown_grace: Duration::from_secs(10),
                run_consumers,
                max_in_flight_per_user,
                max_long_polls_per_device,
                token_ttl,
                header_read_timeout,
                metrics_token,
                ..driftless_api::state::Settings::default()
            },
        )
        .unwrap();
        let state = match kafka {
            Some(k) => state.with_events(driftless_store::EventBus::Kafka(k)),
            None => state,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut app = Self {
            url,
            state,
            s3,
            db,
            s3_proxy: proxy,
            stop: None,
            served: None,
        };
        app.serve(listener);
        app
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        self.served = Some(tokio::spawn(driftless_api::run(
            listener,
            self.state.clone(),
            async move {
                let _ = stopped.await;
            },
        )));
    }

    /// Stops the server and its workers (relay, verifier, sweepers) and
    /// waits for them; the database and the bucket stay.
    pub async fn pause(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
    }

    /// Serves again, on the same address, after [`TestApp::pause`].
    pub async fn resume(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        self.serve(listener);
    }

    /// Creates a user; returns a device token and the home namespace.
    pub async fn user(&self, name: &str, password: Option<&str>) -> (String, u64) {
        let token = driftless_api::create_user(&self.state, name, password, "test-device")
            .await
            .unwrap();
        let (user, _) = driftless_store::meta::accounts::user_by_name(&self.state.db, name)
            .await
            .unwrap()
            .unwrap();
        let home = driftless_store::meta::accounts::namespaces_of(&self.state.db, user)
            .await
            .unwrap()
            .into_iter()
            .find(|n| n.is_home)
            .unwrap();
        (token, home.id.0)
    }
}

impl TestApp {
    /// Another device of user `name`; returns its token.
    pub async fn device(&self, name: &str, device: &str) -> String {
        let (user, _) = driftless_store::meta::accounts::user_by_name(&self.state.db, name)
            .await
            .unwrap()
            .unwrap();
        let (token, hash) = driftless_api::auth::new_token();
        driftless_store::meta::accounts::create_device(&self.state.db, user, device, &hash, None)
            .await
            .unwrap();
        token
    }
}

/// Every table that belongs to a folder (keyed by `namespace_id`).
pub const FOLDER_TABLES: &[&str] = &[
    "packs",
    "chunks",
    "versions",
    "files",
    "journal",
    "outbox",
    "ops",
    "upload_sessions",
    "upload_parts",
    "upload_chunks",
    "upload_requests",
    "device_cursors",
    "consumer_marks",
];

/// A copy of one folder's rows (see [`TestApp::snapshot_folder`]).
pub struct FolderSnapshot {
    ns: u64,
    tag: String,
}

impl TestApp {
    /// Copies every row of folder `ns` (its tables and its `namespaces`
    /// row) aside: a backup of that folder's metadata as of now.
    pub async fn snapshot_folder(&self, ns: u64) -> FolderSnapshot {
        let tag = unique("snap_");
        let pool = self.state.db.pool();
        for t in FOLDER_TABLES {
            sqlx::query(&format!(
                "CREATE TABLE {tag}_{t} AS SELECT * FROM {t} WHERE namespace_id = {ns}"
            ))
            .execute(pool)
            .await
            .unwrap();
        }
        sqlx::query(&format!(
            "CREATE TABLE {tag}_namespaces AS SELECT * FROM namespaces WHERE id = {ns}"
        ))
        .execute(pool)
        .await
        .unwrap();
        FolderSnapshot { ns, tag }
    }

    /// Puts folder `snap.ns` back as it was at the snapshot, in one
    /// transaction: what an operator's restore from a backup does to it
    /// (everything committed since is forgotten; objects in S3 stay).
    pub async fn restore_folder(&self, snap: &FolderSnapshot) {
        // The workers keep writing meanwhile (the verifier's marks, say):
        // a deadlock with one of them is retried, as an operator would.
        for attempt in 0.. {
            match self.try_restore(snap).await {
                Ok(()) => return,
                Err(e) if attempt < 20 => {
                    eprintln!("restore of folder {} retried: {e}", snap.ns);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("restore of folder {} failed: {e}", snap.ns),
            }
        }
    }

    async fn try_restore(&self, snap: &FolderSnapshot) -> Result<(), sqlx::Error> {
        let FolderSnapshot { ns, tag } = snap;
        let mut tx = self.state.db.begin().await?;
        // The namespace row first: it is the commit lock, so no commit of
        // this folder interleaves with the restore.
        sqlx::query(&format!(
            "UPDATE namespaces SET head_seq = (SELECT head_seq FROM {tag}_namespaces), \
             compacted_seq = (SELECT compacted_seq FROM {tag}_namespaces) WHERE id = {ns}"
        ))
        .execute(&mut *tx)
        .await?;
        for t in FOLDER_TABLES {
            sqlx::query(&format!("DELETE FROM {t} WHERE namespace_id = {ns}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("INSERT INTO {t} SELECT * FROM {tag}_{t}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn driftless_protocol_key() -> driftless_protocol::CursorKey {
    driftless_protocol::CursorKey::new(1, b"test cursor secret, not for production")
}
