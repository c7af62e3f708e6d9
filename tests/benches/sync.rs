//! Initial sync of a tree of many small files plus a few large ones, and
//! the re-sync after editing 1% of the small files: the daemon's sync pass
//! (the code `driftless sync --once` runs) against `rclone copy` of the
//! same tree to the same S3 server, in the same run.
//!
//! The daemon does more than copy: it hashes every chunk, asks the server
//! what it lacks, compresses, commits each file (journal, outbox) and keeps
//! its state database. rclone only PUTs objects (and on the re-sync lists
//! the bucket and compares sizes and times).
//!
//!   scripts/bench-sync.sh
//!   DRIFTLESS_BENCH_FILES=2000 DRIFTLESS_BENCH_LARGE_MIB=16 scripts/bench-sync.sh

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
use driftless_tests::TestApp;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn small(i: u64, version: u64) -> Vec<u8> {
    let line = format!("file {i} version {version}: the quick brown fox jumps over the lazy dog\n");
    line.repeat(20 + (i % 100) as usize).into_bytes()
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = vec![0u8; len];
    for w in out.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    out
}

fn rclone(app: &TestApp, tree: &Path) -> Duration {
    let c = &app.s3.config;
    let t = Instant::now();
    let out = Command::new("rclone")
        .args(["copy", tree.to_str().unwrap()])
        // The bucket's root: rclone HEADs a prefix to see whether it is a
        // file, and s3s-fs answers 500 for a prefix that is a folder on its
        // disk, which rclone retries for about 90 s. The tree's folders do
        // not collide with the server's packs/.
        .arg(format!("bench:{}", c.bucket))
        .args([
            "--exclude",
            &format!("{STATE_DIR}/**"),
            "--transfers",
            "4",
            "--checkers",
            "8",
            // Check each file with a HEAD instead of listing the bucket:
            // s3s-fs answers a listing of a bucket this size in about 50 s
            // (then a 500), which would measure s3s-fs, not rclone.
            "--no-traverse",
        ])
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let files = env_num("DRIFTLESS_BENCH_FILES", 10_000);
    let large = env_num("DRIFTLESS_BENCH_LARGE", 3);
    let large_mib = env_num("DRIFTLESS_BENCH_LARGE_MIB", 64);
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("bench", None).await;

    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path();
    let mut bytes = 0u64;
    for i in 0..files {
        let p = tree.join(format!("docs/{:03}/{i}.txt", i % 100));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let b = small(i, 1);
        bytes += b.len() as u64;
        std::fs::write(p, b).unwrap();
    }
    for i in 0..large {
        let b = random((large_mib << 20) as usize, i + 1);
        bytes += b.len() as u64;
        std::fs::create_dir_all(tree.join("media")).unwrap();
        std::fs::write(tree.join(format!("media/{i}.bin")), b).unwrap();
    }
    println!(
        "tree: {files} small files + {large} x {large_mib} MiB = {:.1} MiB",
        bytes as f64 / 1048576.0
    );

    let root = Root::open(tree).unwrap();
    std::fs::create_dir_all(root.dir().join(STATE_DIR)).unwrap();
    let state = Arc::new(State::open(&root.dir().join(STATE_DIR).join("state.db")).unwrap());
    let syncer = Syncer::new(
        ApiClient::new(&app.url, &token),
        NamespaceId(ns),
        root,
        state,
        "bench",
    );

    let rclone_initial = rclone(&app, tree);
    let t = Instant::now();
    let r = syncer.pass().await.unwrap();
    let ours_initial = t.elapsed();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.uploaded, files + large);

    // Edit 1% of the small files (new mtime and content).
    let edited = (files / 100).max(1);
    for i in 0..edited {
        let k = i * 100;
        let p = tree.join(format!("docs/{:03}/{k}.txt", k % 100));
        std::fs::write(p, small(k, 2)).unwrap();
    }
    let t = Instant::now();
    let r = syncer.pass().await.unwrap();
    let ours_resync = t.elapsed();
    assert_eq!(r.uploaded, edited, "{r:?}");
    let rclone_resync = rclone(&app, tree);

    let mb = bytes as f64 / 1e6;
    println!("| | driftless | rclone copy | ratio (driftless / rclone) |");
    println!("|---|---|---|---|");
    println!(
        "| initial sync | {:.2} s ({:.1} MB/s) | {:.2} s ({:.1} MB/s) | {:.2} |",
        ours_initial.as_secs_f64(),
        mb / ours_initial.as_secs_f64(),
        rclone_initial.as_secs_f64(),
        mb / rclone_initial.as_secs_f64(),
        ours_initial.as_secs_f64() / rclone_initial.as_secs_f64()
    );
    println!(
        "| re-sync after editing {edited} files (1%) | {:.2} s | {:.2} s | {:.2} |",
        ours_resync.as_secs_f64(),
        rclone_resync.as_secs_f64(),
        ours_resync.as_secs_f64() / rclone_resync.as_secs_f64()
    );
}
