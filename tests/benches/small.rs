//! Many small files: the first sync up, and the first download on a fresh
//! device, of a tree of tiny files and of a source-like tree, through the
//! daemon's sync pass (the code `driftless sync --once` runs) with the
//! server on SQLite and on PostgreSQL, next to `rclone copy` (up and down)
//! and `restic backup`, all against the same Garage node on loopback, in
//! one run. Every figure is printed with its ratio to the peers.
//!
//!   scripts/bench-sync.sh                       # both benches
//!   DRIFTLESS_BENCH_TINY=2000 DRIFTLESS_BENCH_TREE=1000 \
//!     cargo bench -p driftless-tests --bench small
//!
//! Goals (issue 19): tiny files up within 3× restic on SQLite and 4× on
//! PostgreSQL; the source tree up ≤ 1.0× rclone; the first download
//! ≤ 1.0× rclone copy down.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftless_daemon::http::ApiClient;
use driftless_daemon::local::{Root, STATE_DIR};
use driftless_daemon::state::State;
use driftless_daemon::sync::Syncer;
use driftless_protocol::NamespaceId;
use driftless_store::BlobConfig;
use driftless_tests::{AppOptions, GarageCluster, TestApp, TestDb};

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift: the same bytes in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const WORDS: &[&str] = &[
    "fn", "let", "mut", "impl", "struct", "match", "self", "return", "async", "await", "pub",
    "use", "crate", "where", "Result", "Option", "Some", "None", "Ok", "Err", "value", "index",
    "buffer", "len", "path", "file", "chunk", "hash", "error", "state",
];

/// Text of `len` bytes, like source code: compressible, never twice the same.
fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let w = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        out.push(if rng.next().is_multiple_of(9) {
            b'\n'
        } else {
            b' '
        });
        if rng.next().is_multiple_of(31) {
            out.extend_from_slice(format!("{}", rng.next() % 100_000).as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// What a case writes: `(relative path, bytes)`.
fn tiny_tree(n: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x0715_71e5);
    (0..n)
        .map(|i| {
            let len = 1024 + (rng.next() % 3073) as usize;
            (format!("tiny/{:03}/{i}.txt", i % 200), text(&mut rng, len))
        })
        .collect()
}

/// A source-like tree: nested folders, files from 200 B to 64 KiB (most
/// small, a few large), like a checkout of a project.
fn source_tree(n: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x50_c0de);
    (0..n)
        .map(|i| {
            let len = match rng.next() % 100 {
                0..=59 => 200 + rng.next() % 4_000,
                60..=94 => 4_000 + rng.next() % 16_000,
                _ => 20_000 + rng.next() % 45_000,
            } as usize;
            let depth = 1 + rng.next() % 4;
            let dirs: Vec<String> = (0..depth)
                .map(|d| format!("m{}", (i / 7 + d * 13) % (11 + d * 5)))
                .collect();
            (
                format!("src/{}/f{i}.rs", dirs.join("/")),
                text(&mut rng, len),
            )
        })
        .collect()
}

fn write_tree(dir: &Path, files: &[(String, Vec<u8>)]) -> u64 {
    let mut bytes = 0;
    for (p, b) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
        bytes += b.len() as u64;
    }
    bytes
}

fn rclone(c: &BlobConfig, from: &str, to: &str) -> Duration {
    let t = Instant::now();
    let out = Command::new("rclone")
        .args(["copy", from, to])
        .args(["--exclude", &format!("{STATE_DIR}/**")])
        .args(["--transfers", "4", "--checkers", "8"])
        .args(["--s3-no-check-bucket", "--config", "/dev/null"])
        // This machine points AWS_CA_BUNDLE at a bundle rclone cannot load;
        // the endpoint is plain HTTP on loopback anyway.
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG_BENCH_TYPE", "s3")
        .env("RCLONE_CONFIG_BENCH_PROVIDER", "Other")
        .env("RCLONE_CONFIG_BENCH_ENDPOINT", &c.endpoint)
        .env("RCLONE_CONFIG_BENCH_REGION", &c.region)
        .env("RCLONE_CONFIG_BENCH_ACCESS_KEY_ID", &c.access_key)
        .env("RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY", &c.secret_key)
        .env("RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE", "true")
        .output()
        .expect("rclone is not installed: scripts/bench-sync.sh installs it");
    assert!(
        out.status.success(),
        "rclone failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn restic(c: &BlobConfig, repo: &str, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new("restic")
        .args(["-r", &format!("s3:{}/{}/{repo}", c.endpoint, c.bucket)])
        .args(["-o", &format!("s3.region={}", c.region)])
        .args(["-o", "s3.bucket-lookup=path", "--quiet", "--no-cache"])
        .args(args)
        .env_remove("AWS_CA_BUNDLE")
        .env("AWS_ACCESS_KEY_ID", &c.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &c.secret_key)
        .env("RESTIC_PASSWORD", "bench")
        .output()
        .expect("restic is not installed: scripts/bench-sync.sh installs it");
    assert!(
        out.status.success(),
        "restic {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn syncer(app: &TestApp, token: &str, ns: u64, dir: &Path, name: &str) -> Syncer {
    let root = Root::open(dir).unwrap();
    std::fs::create_dir_all(root.dir().join(STATE_DIR)).unwrap();
    let state = Arc::new(State::open(&root.dir().join(STATE_DIR).join("state.db")).unwrap());
    Syncer::new(
        ApiClient::new(&app.url, token),
        NamespaceId(ns),
        root,
        state,
        name,
    )
}

fn count_files(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name.to_string_lossy() == STATE_DIR {
            continue;
        }
        let t = e.file_type().unwrap();
        if t.is_dir() {
            n += count_files(&e.path());
        } else if t.is_file() {
            n += 1;
        }
    }
    n
}

/// One case's figures, seconds.
struct Figures {
    up: f64,
    rclone_up: f64,
    restic_up: f64,
    down: f64,
    rclone_down: f64,
}

async fn case(
    app: &TestApp,
    db: &str,
    label: &str,
    files: &[(String, Vec<u8>)],
    n: usize,
) -> Figures {
    let c = &app.s3.config;
    let user = format!("bench{n}");
    let (token, ns) = app.user(&user, None).await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = write_tree(dir.path(), files);
    let tree = dir.path().to_str().unwrap().to_owned();
    let prefix = format!("rclone-{n}");

    let rclone_up = rclone(c, &tree, &format!("bench:{}/{prefix}", c.bucket));
    restic(c, &format!("restic-{n}"), &["init"]);
    let restic_up = restic(c, &format!("restic-{n}"), &["backup", &tree]);
    let a = syncer(app, &token, ns, dir.path(), "a");
    let t = Instant::now();
    let r = a.pass().await.unwrap();
    let up = t.elapsed();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.uploaded, files.len() as u64, "{r:?}");

    // A fresh device, then rclone into another empty folder.
    let down_dir = tempfile::tempdir().unwrap();
    let b = syncer(app, &app.device(&user, "b").await, ns, down_dir.path(), "b");
    let t = Instant::now();
    let r = b.pass().await.unwrap();
    let down = t.elapsed();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(count_files(down_dir.path()), files.len() as u64);
    let rclone_dir = tempfile::tempdir().unwrap();
    let rclone_down = rclone(
        c,
        &format!("bench:{}/{prefix}", c.bucket),
        rclone_dir.path().to_str().unwrap(),
    );
    assert_eq!(count_files(rclone_dir.path()), files.len() as u64);

    let f = Figures {
        up: up.as_secs_f64(),
        rclone_up: rclone_up.as_secs_f64(),
        restic_up: restic_up.as_secs_f64(),
        down: down.as_secs_f64(),
        rclone_down: rclone_down.as_secs_f64(),
    };
    println!(
        "| {label}, {} files, {:.1} MB, {db} | up {:.2} s | rclone {:.2} s ({:.2}×) | restic {:.2} s ({:.2}×) | down {:.2} s | rclone down {:.2} s ({:.2}×) |",
        files.len(),
        bytes as f64 / 1e6,
        f.up,
        f.rclone_up,
        f.up / f.rclone_up,
        f.restic_up,
        f.up / f.restic_up,
        f.down,
        f.rclone_down,
        f.down / f.rclone_down,
    );
    f
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tiny = tiny_tree(env_num("DRIFTLESS_BENCH_TINY", 20_000));
    let source = source_tree(env_num("DRIFTLESS_BENCH_TREE", 4_500));
    let dbs: Vec<String> = std::env::var("DRIFTLESS_BENCH_DBS")
        .unwrap_or_else(|_| "sqlite,postgres".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let garage = GarageCluster::shared().await;
    println!("# small files: the daemon's first sync up and a fresh device's first download");
    println!("# vs rclone copy (4 transfers, 8 checkers) up and down, and restic backup,");
    println!("# all on one Garage node on loopback; ratio = driftless / peer");
    let mut verdicts = Vec::new();
    for db in &dbs {
        let test_db = match db.as_str() {
            "sqlite" => TestDb::sqlite().await,
            "postgres" => TestDb::postgres().await,
            other => panic!("unknown database {other}"),
        };
        let app = TestApp::spawn_configured(
            test_db,
            AppOptions {
                garage: Some(garage.clone()),
                ..AppOptions::default()
            },
        )
        .await;
        let t = case(&app, db, "tiny 1-4 KiB", &tiny, 1).await;
        let s = case(&app, db, "source tree", &source, 2).await;
        let restic_goal = if db == "sqlite" { 3.0 } else { 4.0 };
        verdicts.push((
            format!("{db}: tiny files up / restic"),
            t.up / t.restic_up,
            restic_goal,
        ));
        verdicts.push((
            format!("{db}: source tree up / rclone"),
            s.up / s.rclone_up,
            1.0,
        ));
        verdicts.push((
            format!("{db}: tiny files down / rclone"),
            t.down / t.rclone_down,
            1.0,
        ));
        verdicts.push((
            format!("{db}: source tree down / rclone"),
            s.down / s.rclone_down,
            1.0,
        ));
    }
    println!();
    for (what, ratio, goal) in verdicts {
        println!(
            "{what:<40} {ratio:6.2}  (goal <= {goal:.1}: {})",
            if ratio <= goal { "ok" } else { "NOT YET" }
        );
    }
}
