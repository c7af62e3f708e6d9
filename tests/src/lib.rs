//! Test fixtures shared by the driftless crates: a fresh PostgreSQL database
//! or SQLite file per test, a fresh bucket on a SigV4 S3 server (s3s-fs in
//! process, or the server `DRIFTLESS_TEST_S3_ENDPOINT` names), and a running
//! API server on port 0. A missing service fails the test loudly.

// Fixtures panic on setup failure: that is the test's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use driftless_store::{BlobConfig, BlobStore, Db, EmbeddedS3};
use rand::Rng;
use sqlx::Executor;
use sqlx::postgres::PgPoolOptions;

/// Where the test PostgreSQL server is (a database per test is created on it).
pub fn pg_base_url() -> String {
    std::env::var("DRIFTLESS_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
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

/// An S3 server and a fresh bucket on it.
pub struct TestS3 {
    pub config: BlobConfig,
    pub store: BlobStore,
    _server: Option<EmbeddedS3>,
    _dir: Option<tempfile::TempDir>,
}

impl TestS3 {
    pub async fn start(presign_ttl: Duration) -> Self {
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

/// How a test server is set up.
pub struct AppOptions {
    /// Upload session lifetime.
    pub upload_ttl: Duration,
    /// The event stream: Kafka, or the in-process bus.
    pub kafka: Option<driftless_store::KafkaConfig>,
    /// Whether the server runs the verifier and the sweepers itself.
    pub run_consumers: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            upload_ttl: Duration::from_secs(3600),
            kafka: None,
            run_consumers: true,
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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
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
        } = options;
        // RUST_LOG=debug shows the server's logs (500s carry their detail there).
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let s3 = TestS3::start(Duration::from_secs(300)).await;
        let state = driftless_api::state::AppState::new(
            db.db.clone(),
            s3.store.clone(),
            vec![driftless_protocol_key()],
            driftless_api::state::Settings {
                upload_ttl,
                cors_origins: vec!["https://app.example".into()],
                session_grace: Duration::ZERO,
                long_poll_soft_limit: 50_000,
                run_consumers,
            },
        )
        .unwrap();
        let state = match kafka {
            Some(k) => state.with_events(driftless_store::EventBus::Kafka(k)),
            None => state,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(driftless_api::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Self {
            url,
            state,
            s3,
            db,
            stop: Some(stop),
        }
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
        driftless_store::meta::accounts::create_device(&self.state.db, user, device, &hash)
            .await
            .unwrap();
        token
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

/// A server binary running as a child process, configured through the same
/// environment variables production uses, so a test can `kill -9` it and
/// start it again on the same database and bucket.
pub struct ServerProcess {
    pub url: String,
    bin: std::path::PathBuf,
    env: Vec<(String, String)>,
    child: Option<std::process::Child>,
    _data: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `bin` against `db` and `s3`, and waits until it answers.
    pub async fn start(bin: &std::path::Path, db: &TestDb, s3: &TestS3) -> Self {
        Self::start_with(bin, db, s3, &[]).await
    }

    /// [`ServerProcess::start`] with more environment (Kafka, say).
    pub async fn start_with(
        bin: &std::path::Path,
        db: &TestDb,
        s3: &TestS3,
        extra: &[(&str, String)],
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = &s3.config;
        let env = [
            ("DRIFTLESS_LISTEN", format!("127.0.0.1:{port}")),
            ("DRIFTLESS_DATA_DIR", data.path().display().to_string()),
            ("DRIFTLESS_DATABASE_URL", db.url.clone()),
            ("DRIFTLESS_S3_ENDPOINT", c.endpoint.clone()),
            ("DRIFTLESS_S3_BUCKET", c.bucket.clone()),
            ("DRIFTLESS_S3_REGION", c.region.clone()),
            ("DRIFTLESS_S3_ACCESS_KEY", c.access_key.clone()),
            ("DRIFTLESS_S3_SECRET_KEY", c.secret_key.clone()),
            (
                "DRIFTLESS_CURSOR_SECRET",
                "a test cursor secret of some length".into(),
            ),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (*k, v.clone())))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut p = Self {
            url: format!("http://127.0.0.1:{port}"),
            bin: bin.to_owned(),
            env,
            child: None,
            _data: data,
        };
        p.restart().await;
        p
    }

    /// Runs an admin subcommand of the same binary with the same
    /// configuration; returns its standard output.
    /// (Async: the test's runtime may be serving the S3 endpoint it needs.)
    pub async fn admin(&self, args: &[&str], stdin: &str) -> String {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(&self.bin)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("admin command hung")
            .unwrap();
        assert!(out.status.success(), "{args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the server with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts the server (again) and waits for `/healthz`.
    pub async fn restart(&mut self) {
        self.kill9();
        self.child = Some(
            std::process::Command::new(&self.bin)
                .arg("serve")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .spawn()
                .unwrap(),
        );
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited at start: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Kafka-protocol broker (tansu, sqlite storage) of one test's own, in a
/// temporary folder on a free port, so a test can kill and restart it.
/// `tansu` must be on the PATH (`.ci/run` installs it); a missing broker
/// fails the test, it never skips it.
pub struct TestBroker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl TestBroker {
    /// Starts a broker and waits until it accepts connections.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut b = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        b.restart().await;
        b
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Settings for a topic no other test uses (created on first use).
    pub fn fresh_topic(&self) -> driftless_store::KafkaConfig {
        driftless_store::KafkaConfig {
            brokers: self.brokers(),
            topic: unique("journal-"),
            partitions: 4,
            replication: 1,
            debug: std::env::var("DRIFTLESS_KAFKA_DEBUG").ok(),
        }
    }

    /// Kills the broker with SIGKILL (its storage stays).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts the broker (again, on the same port and storage).
    pub async fn restart(&mut self) {
        self.kill9();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("broker.log")).unwrap();
        let child = std::process::Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the Kafka-protocol broker `tansu` ({e}); install it with \
                     `cargo install tansu --locked --features libsql` (.ci/run does)"
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log =
                    std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
                panic!("tansu exited at start ({status}): {log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every record of a topic, read from the beginning of every partition up
/// to its end as of now: (partition, offset, event) in partition order.
pub async fn read_topic(
    config: &driftless_store::KafkaConfig,
) -> Vec<(i32, i64, driftless_protocol::JournalEvent)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", "driftless-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(&config.topic), Duration::from_secs(10))
            .unwrap();
        let partitions = md.topics()[0].partitions().len() as i32;
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut ends = std::collections::HashMap::new();
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(&config.topic, p, Duration::from_secs(10))
                .unwrap();
            ends.insert(p, high);
            tpl.add_partition_offset(&config.topic, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut next: std::collections::HashMap<i32, i64> =
            (0..partitions).map(|p| (p, 0)).collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while next.iter().any(|(p, o)| *o < ends[p]) {
            assert!(
                std::time::Instant::now() < deadline,
                "topic not read to its end: {next:?} of {ends:?}"
            );
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.unwrap();
            next.insert(m.partition(), m.offset() + 1);
            let event = serde_json::from_slice(m.payload().unwrap()).unwrap();
            out.push((m.partition(), m.offset(), event));
        }
        out
    })
    .await
    .unwrap()
}

/// `driftless-consumer run` as a child process on the test's database,
/// bucket and topic, so a test can kill it and start it again.
pub struct ConsumerProcess {
    bin: std::path::PathBuf,
    env: Vec<(String, String)>,
    child: Option<tokio::process::Child>,
}

impl ConsumerProcess {
    /// Starts `bin` (with `extra` environment, e.g. a failpoint).
    pub fn start(
        bin: &std::path::Path,
        db: &TestDb,
        s3: &TestS3,
        kafka: &driftless_store::KafkaConfig,
        extra: &[(&str, &str)],
    ) -> Self {
        let c = &s3.config;
        let mut env: Vec<(String, String)> = [
            ("DRIFTLESS_DATABASE_URL", db.url.clone()),
            ("DRIFTLESS_S3_ENDPOINT", c.endpoint.clone()),
            ("DRIFTLESS_S3_BUCKET", c.bucket.clone()),
            ("DRIFTLESS_S3_REGION", c.region.clone()),
            ("DRIFTLESS_S3_ACCESS_KEY", c.access_key.clone()),
            ("DRIFTLESS_S3_SECRET_KEY", c.secret_key.clone()),
            ("DRIFTLESS_KAFKA_BROKERS", kafka.brokers.clone()),
            ("DRIFTLESS_KAFKA_TOPIC", kafka.topic.clone()),
            ("DRIFTLESS_KAFKA_PARTITIONS", kafka.partitions.to_string()),
            // DRIFTLESS_TEST_CHILD_LOG=debug shows the child's logs.
            (
                "RUST_LOG",
                std::env::var("DRIFTLESS_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut p = Self {
            bin: bin.to_owned(),
            env,
            child: None,
        };
        p.restart();
        p
    }

    /// Kills it with SIGKILL (if it runs) and starts it again, without the
    /// extra environment's failpoint.
    pub fn restart(&mut self) {
        self.kill9();
        self.child = Some(
            tokio::process::Command::new(&self.bin)
                .arg("run")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }

    /// Runs another subcommand of the same binary with the same
    /// configuration (`lag --json`, say); returns its standard output.
    pub async fn command(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(&self.bin)
                .args(args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .output(),
        )
        .await
        .expect("command hung")
        .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Forgets the failpoint for the next restarts.
    pub fn clear_failpoint(&mut self) {
        self.env.retain(|(k, _)| k != "DRIFTLESS_FAILPOINT");
    }

    /// Kills it with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            // Reap it so the next start sees the lease and the group free.
            let _ = futures_wait(&mut c);
        }
    }

    /// Waits up to `timeout` for it to exit on its own; its status.
    pub async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let status = tokio::time::timeout(timeout, c.wait()).await.ok()?.ok();
        self.child = None;
        status
    }
}

/// Reaps a killed child without an async context.
fn futures_wait(c: &mut tokio::process::Child) -> Option<std::process::ExitStatus> {
    for _ in 0..200 {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
