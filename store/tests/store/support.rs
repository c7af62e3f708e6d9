//! Fresh databases and buckets for each test; loud failures when a service is missing.

use std::time::Duration;

use driftless_store::{BlobConfig, BlobStore, Db, EmbeddedS3};
use rand::Rng;
use sqlx::Executor;
use sqlx::postgres::PgPoolOptions;

/// Where the test PostgreSQL server is (a database per test is created on it).
pub(crate) fn pg_base_url() -> String {
    std::env::var("DRIFTLESS_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::rng().random::<u64>())
}

/// A database that exists for one test and is dropped after it.
pub(crate) struct TestDb {
    pub(crate) db: Db,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub(crate) async fn postgres() -> Self {
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
        let db = Db::connect(&format!("{}/{name}", pg_base_url()))
            .await
            .unwrap();
        Self {
            db,
            pg_name: Some(name),
            _dir: None,
        }
    }

    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("meta.db").display());
        let db = Db::connect(&url).await.unwrap();
        Self {
            db,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// Both databases, for tests that must behave the same on each.
    pub(crate) async fn both() -> [Self; 2] {
        [Self::postgres().await, Self::sqlite().await]
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let db = self.db.clone();
        // Async work cannot run in Drop: a short-lived runtime on a thread does it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                db.close().await;
                if let Ok(admin) = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&format!("{}/postgres", pg_base_url()))
                    .await
                {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

/// An S3 server and a fresh bucket on it.
pub(crate) struct TestS3 {
    pub(crate) config: BlobConfig,
    pub(crate) store: BlobStore,
    _server: Option<EmbeddedS3>,
    _dir: Option<tempfile::TempDir>,
}

impl TestS3 {
    pub(crate) async fn start(presign_ttl: Duration) -> Self {
        let bucket = unique("bucket-");
        let (config, server, dir) = match std::env::var("DRIFTLESS_TEST_S3_ENDPOINT") {
            Ok(endpoint) => {
                let config = BlobConfig {
                    endpoint,
                    region: "us-east-1".into(),
                    bucket,
                    access_key: std::env::var("DRIFTLESS_TEST_S3_ACCESS_KEY")
                        .expect("DRIFTLESS_TEST_S3_ACCESS_KEY"),
                    secret_key: std::env::var("DRIFTLESS_TEST_S3_SECRET_KEY")
                        .expect("DRIFTLESS_TEST_S3_SECRET_KEY"),
                    path_style: true,
                    presign_ttl,
                };
                (config, None, None)
            }
            Err(_) => {
                let dir = tempfile::tempdir().unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let secret = unique("secret");
                let server = EmbeddedS3::start(dir.path(), listener, "test-access", &secret)
                    .await
                    .unwrap();
                (
                    server.blob_config(&bucket, presign_ttl),
                    Some(server),
                    Some(dir),
                )
            }
        };
        let store = BlobStore::new(&config);
        store
            .ensure_bucket()
            .await
            .unwrap_or_else(|e| panic!("S3 server at {} is not usable: {e}", config.endpoint));
        Self {
            config,
            store,
            _server: server,
            _dir: dir,
        }
    }
}
