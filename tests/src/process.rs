//! The server and consumer binaries as child processes, configured through
//! the environment production uses, so a test can kill them with -9.

use super::*;

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
        let stores: Vec<(&str, String)> = stores_env(db, s3).into_iter().collect();
        Self::launch(bin, stores, extra).await
    }

    /// The embedded default (SQLite and the in-process S3 endpoint in its
    /// data folder, the in-process event bus), with `extra` environment.
    pub async fn start_embedded(bin: &std::path::Path, extra: &[(&str, String)]) -> Self {
        let s3_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let embedded = vec![(
            "DRIFTLESS_EMBEDDED_S3_LISTEN",
            format!("127.0.0.1:{s3_port}"),
        )];
        Self::launch(bin, embedded, extra).await
    }

    async fn launch(
        bin: &std::path::Path,
        stores: Vec<(&str, String)>,
        extra: &[(&str, String)],
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = [
            ("DRIFTLESS_LISTEN", format!("127.0.0.1:{port}")),
            ("DRIFTLESS_DATA_DIR", data.path().display().to_string()),
            (
                "DRIFTLESS_CURSOR_SECRET",
                "a test cursor secret of some length".into(),
            ),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .chain(stores)
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

    /// What the server wrote to stderr (its logs) so far, every run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._data.path().join("server.log")).unwrap_or_default()
    }

    /// Asks the server to stop, as docker and systemd do (SIGTERM).
    pub fn terminate(&self) {
        let pid = self.pid().expect("the server runs");
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
    }

    /// Waits up to `timeout` for the server to exit; its status if it did.
    pub async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

    /// Sets (or with `None` removes) a variable of the environment the next
    /// [`ServerProcess::restart`] starts the server with.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_owned(), v.to_owned()));
        }
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
        // Logs go to a file (appended across restarts) that a test can read;
        // a failing test prints it.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._data.path().join("server.log"))
            .unwrap();
        self.child = Some(
            std::process::Command::new(&self.bin)
                .arg("serve")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stderr(log)
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
        if std::thread::panicking() {
            eprintln!(
                "--- server log ---\n{}--- end of server log ---",
                self.log()
            );
        }
    }
}

/// The database and S3 settings both binaries read, as production sets them.
fn stores_env(db: &TestDb, s3: &TestS3) -> [(&'static str, String); 6] {
    let c = &s3.config;
    [
        ("DRIFTLESS_DATABASE_URL", db.url.clone()),
        ("DRIFTLESS_S3_ENDPOINT", c.endpoint.clone()),
        ("DRIFTLESS_S3_BUCKET", c.bucket.clone()),
        ("DRIFTLESS_S3_REGION", c.region.clone()),
        ("DRIFTLESS_S3_ACCESS_KEY", c.access_key.clone()),
        ("DRIFTLESS_S3_SECRET_KEY", c.secret_key.clone()),
    ]
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
        let mut env: Vec<(String, String)> = [
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
        .chain(stores_env(db, s3))
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
