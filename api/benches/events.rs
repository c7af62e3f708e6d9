//! Event-stream figures, each next to a baseline measured in the same run.
//!
//! 1. Wake latency: one device commits, another follows with long-polls
//!    woken through Kafka (tansu on loopback); baseline: a third device
//!    polling the journal every second. Latency runs from the moment the
//!    commit request is sent to the moment the follower holds the entry.
//! 2. Idle long-polls: one server process (Kafka events) holds N long-polls
//!    of devices spread over many folders; its resident memory against its
//!    own idle baseline, and how fast one commit wakes a folder's pollers.
//! 3. Reconnect storm: M devices each 1,000 changes behind catch up at the
//!    same moment; total time and per-device p50/p99 against one device
//!    catching up alone.
//!
//!   scripts/bench-events.sh
//!   DRIFTLESS_BENCH_COMMITS=300 DRIFTLESS_BENCH_POLLS=2000 DRIFTLESS_BENCH_DEVICES=200 scripts/bench-events.sh

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftless_chunker::{ChunkParams, content_hash};
use driftless_protocol::{
    ChangesPage, ChunkingSpec, ContentHash, CreateUpload, CreatedUpload, FileOp, NamespaceId,
    Outcome, PutFile, Rev, WaitResponse,
};
use driftless_store::meta::accounts;
use driftless_tests::{ServerProcess, TestApp, TestBroker, TestDb, TestS3};
use rand::Rng;

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A device's view of the API.
#[derive(Clone)]
struct Device {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Device {
    fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.into(),
            token: token.into(),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        if !status.is_success() {
            return Err(format!("{status}: {}", r.text().await.unwrap_or_default()));
        }
        r.json().await.map_err(|e| e.to_string())
    }

    async fn page(&self, ns: u64, cursor: &str, limit: usize) -> Result<ChangesPage, String> {
        self.get(&format!(
            "/v1/namespaces/{ns}/changes?cursor={cursor}&limit={limit}"
        ))
        .await
    }

    async fn bootstrap(&self, ns: u64) -> String {
        let mut p: ChangesPage = self
            .get(&format!("/v1/namespaces/{ns}/changes"))
            .await
            .unwrap();
        while p.has_more {
            p = self.page(ns, &p.cursor, 5000).await.unwrap();
        }
        p.cursor
    }

    async fn wait(&self, ns: u64, cursor: &str, timeout: u64) -> Result<WaitResponse, String> {
        self.get(&format!(
            "/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout={timeout}"
        ))
        .await
    }

    /// Commits an empty file at `path` (no bytes to send: commits at once).
    async fn put_empty(&self, ns: u64, path: &str) -> Rev {
        let p = ChunkParams::DEFAULT;
        let op = FileOp::Put(PutFile {
            op_id: format!("op-{}", rand::rng().random::<u64>())
                .parse()
                .unwrap(),
            path: path.into(),
            base_rev: None,
            size: 0,
            mtime_ms: 1_700_000_000_000,
            chunking: ChunkingSpec {
                min: p.min(),
                avg: p.avg(),
                max: p.max(),
            },
            chunks: vec![],
            content_hash: ContentHash::from_bytes(content_hash(p, [])),
        });
        let r: CreatedUpload = self
            .http
            .post(format!("{}/v1/namespaces/{ns}/uploads", self.base))
            .bearer_auth(&self.token)
            .json(&CreateUpload { files: vec![op] })
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match &r.results[0].outcome {
            Outcome::Committed { rev, .. } => *rev,
            other => panic!("{path}: {other:?}"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Follows `ns` from `cursor` until it has seen `n` entries named `f<i>`;
/// with `long_poll`, waits for changes, else pages every second.
async fn follow(
    dev: Device,
    ns: u64,
    mut cursor: String,
    n: usize,
    long_poll: bool,
    sent: Arc<Mutex<Vec<Option<Instant>>>>,
) -> Vec<Duration> {
    let mut seen: HashMap<usize, Duration> = HashMap::new();
    while seen.len() < n {
        if long_poll {
            let w = dev.wait(ns, &cursor, 30).await.unwrap();
            if !w.changed {
                continue;
            }
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        loop {
            let p = dev.page(ns, &cursor, 1000).await.unwrap();
            let now = Instant::now();
            for e in &p.entries {
                if let Some(i) = e
                    .path
                    .strip_prefix('f')
                    .and_then(|s| s.parse::<usize>().ok())
                {
                    let at: Instant = sent.lock().unwrap()[i].expect("seen before it was sent");
                    seen.entry(i).or_insert(now - at);
                }
            }
            cursor = p.cursor;
            if !p.has_more {
                break;
            }
        }
    }
    let mut v: Vec<Duration> = seen.into_values().collect();
    v.sort();
    v
}

async fn wake_latency() {
    let n = env_num("DRIFTLESS_BENCH_COMMITS", 1000);
    let broker = TestBroker::start().await;
    let app = TestApp::spawn_kafka(&broker).await;
    let (token, ns) = app.user("writer", None).await;
    let writer = Device::new(&app.url, &token);
    let follower = Device::new(&app.url, &app.device("writer", "follower").await);
    let poller = Device::new(&app.url, &app.device("writer", "poller").await);
    writer.put_empty(ns, "seed").await;
    // Let the stream settle (topic created, follower assigned).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = Arc::new(Mutex::new(vec![None; n]));
    let f = tokio::spawn(follow(
        follower.clone(),
        ns,
        follower.bootstrap(ns).await,
        n,
        true,
        sent.clone(),
    ));
    let p = tokio::spawn(follow(
        poller.clone(),
        ns,
        poller.bootstrap(ns).await,
        n,
        false,
        sent.clone(),
    ));
    let mut rtt = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        sent.lock().unwrap()[i] = Some(t);
        writer.put_empty(ns, &format!("f{i}")).await;
        rtt.push(t.elapsed());
        let pause = rand::rng().random_range(10..40);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    rtt.sort();
    let kafka = f.await.unwrap();
    let polled = p.await.unwrap();
    println!("# 1. commit -> another device holds the entry: {n} commits, 10-40 ms apart");
    println!(
        "  commit round trip itself            p50 {:>9}  p99 {:>9}",
        ms(percentile(&rtt, 0.5)),
        ms(percentile(&rtt, 0.99))
    );
    println!(
        "  long-poll woken through Kafka       p50 {:>9}  p99 {:>9}  max {:>9}",
        ms(percentile(&kafka, 0.5)),
        ms(percentile(&kafka, 0.99)),
        ms(*kafka.last().unwrap())
    );
    println!(
        "  journal polled every 1 s (baseline) p50 {:>9}  p99 {:>9}  max {:>9}",
        ms(percentile(&polled, 0.5)),
        ms(percentile(&polled, 0.99)),
        ms(*polled.last().unwrap())
    );
    let p99 = percentile(&kafka, 0.99);
    println!(
        "  ratio baseline p50 / Kafka p50      {:.1}x; Kafka p99 {} (goal < 100 ms: {})",
        percentile(&polled, 0.5).as_secs_f64() / percentile(&kafka, 0.5).as_secs_f64(),
        ms(p99),
        if p99 < Duration::from_millis(100) {
            "ok"
        } else {
            "MISSED"
        }
    );
}

/// Resident and peak memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `n` devices: `per_folder` in each of `n / per_folder` users' homes.
async fn devices(
    db: &driftless_store::Db,
    prefix: &str,
    n: usize,
    per_folder: usize,
) -> Vec<(String, u64)> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n {
        let (user, ns) = accounts::create_user(db, &format!("{prefix}{i}"), None)
            .await
            .unwrap()
            .unwrap();
        i += 1;
        for d in 0..per_folder.min(n - out.len()) {
            let (token, hash) = driftless_api::auth::new_token();
            accounts::create_device(db, user, &format!("d{d}"), &hash, None)
                .await
                .unwrap();
            out.push((token, ns.0));
        }
    }
    out
}

async fn server_figures() {
    let polls = env_num("DRIFTLESS_BENCH_POLLS", 10_000);
    let storm = env_num("DRIFTLESS_BENCH_DEVICES", 1000);
    let behind = 1000;
    let broker = TestBroker::start().await;
    let kafka = broker.fresh_topic();
    let db = TestDb::postgres().await;
    let s3 = TestS3::start(Duration::from_secs(300)).await;
    let bin = Path::new(env!("CARGO_BIN_EXE_driftless-server"));
    let server = ServerProcess::start_with(
        bin,
        &db,
        &s3,
        &[
            ("DRIFTLESS_KAFKA_BROKERS", kafka.brokers.clone()),
            ("DRIFTLESS_KAFKA_TOPIC", kafka.topic.clone()),
            // The storm queues for the pool on purpose; keep its slow-acquire
            // warnings out of the figures.
            ("RUST_LOG", "warn,sqlx::pool::acquire=error".into()),
        ],
    )
    .await;
    let pid = server.pid().unwrap();

    // 2. Idle long-polls.
    let pollers = devices(&db.db, "idle", polls, 10).await;
    let mut cursors: HashMap<u64, String> = HashMap::new();
    for (token, ns) in &pollers {
        if !cursors.contains_key(ns) {
            let d = Device::new(&server.url, token);
            cursors.insert(*ns, d.bootstrap(*ns).await);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_rss, _) = memory_kib(pid);
    let idle_fds = open_fds(pid);
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut held = Vec::with_capacity(polls);
    for (token, ns) in &pollers {
        let d = Device {
            http: http.clone(),
            base: server.url.clone(),
            token: token.clone(),
        };
        let cursor = cursors[ns].clone();
        let ns = *ns;
        held.push(tokio::spawn(async move {
            let r = d.wait(ns, &cursor, 300).await;
            (ns, r, Instant::now())
        }));
    }
    while open_fds(pid) < idle_fds + polls {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "long-polls not all connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each request is accepted; give the handlers time to reach their wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (held_rss, _) = memory_kib(pid);
    let connect = started.elapsed();
    // One commit in one folder wakes its 10 pollers, nobody else's.
    let (_, first_ns) = pollers[0];
    let t = Instant::now();
    let writer_token = pollers[1].0.clone();
    Device::new(&server.url, &writer_token)
        .put_empty(first_ns, "wake-up")
        .await;
    let mut woken = Vec::new();
    let mut rest = Vec::new();
    for h in held {
        if h.is_finished() {
            woken.push(h);
        } else {
            rest.push(h);
        }
    }
    // Give the folder's pollers a moment, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut still = Vec::new();
    for h in rest {
        if h.is_finished() {
            woken.push(h);
        } else {
            still.push(h);
        }
    }
    let mut woke_ms = Vec::new();
    let mut errors = 0;
    for h in woken {
        let (ns, r, at) = h.await.unwrap();
        match r {
            Ok(w) if w.changed && ns == first_ns => woke_ms.push(at - t),
            Ok(_) => errors += 1,
            Err(_) => errors += 1,
        }
    }
    woke_ms.sort();
    let per_poll = (held_rss.saturating_sub(idle_rss)) as f64 / polls as f64;
    println!(
        "# 2. idle long-polls held by one server process (Kafka events, {} folders)",
        polls / 10
    );
    println!(
        "  server RSS idle (baseline)          {:>8.1} MiB",
        idle_rss as f64 / 1024.0
    );
    println!(
        "  server RSS holding {polls:>6} polls     {:>8.1} MiB  (all connected in {:.1} s)",
        held_rss as f64 / 1024.0,
        connect.as_secs_f64()
    );
    println!("  per held long-poll                  {per_poll:>8.1} KiB");
    println!(
        "  goal 10,000 in < 500 MiB: {:.0} MiB at 10,000 ({})",
        (idle_rss as f64 + per_poll * 10_000.0) / 1024.0,
        if idle_rss as f64 + per_poll * 10_000.0 < 500.0 * 1024.0 {
            "ok"
        } else {
            "MISSED"
        }
    );
    println!(
        "  one commit woke the other {} pollers of its folder in {} (max; the writer's own poll sleeps on);\n  {} polls of other folders stayed asleep, {errors} unexpected answers",
        woke_ms.len(),
        ms(woke_ms.last().copied().unwrap_or_default()),
        still.len()
    );
    for h in still {
        h.abort();
    }
    drop(http);

    // 3. Reconnect storm: one shared folder, `storm` devices all `behind`
    // changes behind, reconnecting at once.
    let (owner, ns) = accounts::create_user(&db.db, "storm-owner", None)
        .await
        .unwrap()
        .unwrap();
    let mut tokens = Vec::with_capacity(storm);
    for d in 0..=storm {
        let (token, hash) = driftless_api::auth::new_token();
        accounts::create_device(&db.db, owner, &format!("s{d}"), &hash, None)
            .await
            .unwrap();
        tokens.push(token);
    }
    let writer = Device::new(&server.url, &tokens[storm]);
    let ns = ns_u64(ns);
    let cursor = writer.bootstrap(ns).await;
    for i in 0..behind {
        writer.put_empty(ns, &format!("storm/{i:04}")).await;
    }
    let catch_up = |d: Device, cursor: String| async move {
        let t = Instant::now();
        let mut c = cursor;
        let mut n = 0;
        let mut errors = 0;
        loop {
            match d.page(ns, &c, 500).await {
                Ok(p) => {
                    n += p.entries.len();
                    c = p.cursor;
                    if !p.has_more {
                        break;
                    }
                }
                Err(_) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        (t.elapsed(), n, errors)
    };
    let mut alone = Vec::new();
    for _ in 0..5 {
        let (t, n, _) = catch_up(Device::new(&server.url, &tokens[0]), cursor.clone()).await;
        assert_eq!(n, behind);
        alone.push(t);
    }
    alone.sort();
    let solo = alone[2];
    let start = Instant::now();
    let tasks: Vec<_> = tokens[..storm]
        .iter()
        .map(|t| tokio::spawn(catch_up(Device::new(&server.url, t), cursor.clone())))
        .collect();
    let mut times = Vec::with_capacity(storm);
    let mut errors = 0;
    for t in tasks {
        let (d, n, e) = t.await.unwrap();
        assert_eq!(n, behind);
        times.push(d);
        errors += e;
    }
    let total = start.elapsed();
    times.sort();
    println!(
        "# 3. reconnect storm: {storm} devices of one folder, each {behind} changes behind, at once (pages of 500)"
    );
    println!("  one device alone (baseline, median of 5)  {}", ms(solo));
    println!(
        "  storm: all caught up in {:.2} s; per device p50 {} p99 {}; {errors} errors",
        total.as_secs_f64(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    println!(
        "  ratio storm total / ({storm} x alone)     {:.2} (below 1: concurrency pays)",
        total.as_secs_f64() / (solo.as_secs_f64() * storm as f64)
    );
}

fn ns_u64(ns: NamespaceId) -> u64 {
    ns.0
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes harness-less benches with --list
    }
    wake_latency().await;
    server_figures().await;
}
