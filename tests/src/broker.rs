//! A Kafka-protocol broker (tansu) per test, and reading a topic back.

use super::*;

/// A Kafka-protocol broker (tansu, sqlite storage) of one test's own, in a
/// temporary folder on a free port, so a test can kill and restart it.
/// `tansu` must be on the PATH (`.ci/run` installs it); a missing broker
/// fails the test, it never skips it.
pub struct TestBroker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    _watchdog: crate::Watchdog,
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
            _watchdog: crate::Watchdog::arm(),
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
