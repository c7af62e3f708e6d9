//! `driftless sync` killed with -9 at random points, at least 25 times
//! while it uploads and 25 times while it downloads: a file at its final
//! path is always a whole version (never a partial one), a restart removes
//! the temporary files, resumes interrupted upload sessions, and both
//! folders converge.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use driftless_tests::TestApp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cli::{Cli, partials};
use crate::random;

fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let name = e.file_name().to_string_lossy().into_owned();
            if rel == ".driftless" || name.contains(".driftless-partial-") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Paths whose presence or bytes differ.
fn diff(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |t: &BTreeMap<String, Vec<u8>>| {
                t.get(k).map_or("absent".to_owned(), |v| {
                    format!("{} bytes {}", v.len(), &blake3::hash(v).to_hex()[..8])
                })
            };
            format!("{k}: {} vs {}", show(a), show(b))
        })
        .collect()
}

/// Runs `sync --once` and kills it with SIGKILL after `delay` if it is
/// still running; returns whether the kill hit a running process, and
/// its standard error.
async fn sync_killed_after(cli: &Cli, dir: &Path, delay: Duration) -> (bool, String) {
    let mut child = cli
        .command(&["sync", "--once", dir.to_str().unwrap()])
        .env("DRIFTLESS_PART_MIB", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut s = String::new();
        let mut r = stderr;
        let _ = r.read_to_string(&mut s).await;
        s
    });
    let finished = tokio::time::timeout(delay, child.wait()).await;
    let hit = match finished {
        Ok(status) => {
            assert!(
                status.unwrap().success(),
                "sync failed: {}",
                log.await.unwrap()
            );
            false
        }
        Err(_) => {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
            true
        }
    };
    (hit, log.await.unwrap())
}

async fn sync_to_rest(cli: &Cli, dir: &Path) -> String {
    let mut log = String::new();
    for _ in 0..4 {
        let out = cli
            .command(&["--json", "sync", "--once", dir.to_str().unwrap()])
            .output()
            .await
            .unwrap();
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{log}");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(r["problems"].as_array().unwrap().is_empty(), "{r}\n{log}");
        let moved: u64 = [
            "downloaded",
            "uploaded",
            "deleted_here",
            "deleted_there",
            "moved",
        ]
        .iter()
        .map(|k| r[k].as_u64().unwrap())
        .sum();
        if moved == 0 {
            return log;
        }
    }
    panic!("no rest after 4 passes: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_killed_at_fifty_random_points_leaves_no_partial_file_and_converges() {
    let app = TestApp::spawn().await;
    let (token_a, _ns) = app.user("ada", None).await;
    let token_b = app.device("ada", "desk").await;
    let a = Cli::new(&app.url, Some(&token_a), "laptop");
    let b = Cli::new(&app.url, Some(&token_b), "desk");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let seed: u64 = std::env::var("DRIFTLESS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("DRIFTLESS_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    // Every content each path ever had: what a file in B may hold.
    let mut seen: HashMap<String, HashSet<[u8; 32]>> = HashMap::new();

    let mutate = |rng: &mut StdRng, round: u64, seen: &mut HashMap<String, HashSet<[u8; 32]>>| {
        let root = dir_a.path();
        let mut put = |rel: String, bytes: Vec<u8>| {
            let p = root.join(&rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &bytes).unwrap();
            seen.entry(rel)
                .or_default()
                .insert(*blake3::hash(&bytes).as_bytes());
        };
        let big = format!("big/{}.bin", rng.random_range(0..3));
        put(big, random(rng.random_range(8..20) << 20, round * 1000 + 1));
        for k in 0..12 {
            let rel = format!("small/{:02}.txt", rng.random_range(0..40));
            put(
                rel,
                random(rng.random_range(1..64) << 10, round * 1000 + 10 + k),
            );
        }
        let victim = root.join(format!("small/{:02}.txt", rng.random_range(0..40)));
        let _ = std::fs::remove_file(victim);
        let from = format!("small/{:02}.txt", rng.random_range(0..40));
        let to = format!("moved/{round}.txt");
        if std::fs::rename(root.join(&from), root.join(&to)).is_ok() {
            let bytes = std::fs::read(root.join(&to)).unwrap();
            std::fs::create_dir_all(root.join("moved")).unwrap();
            seen.entry(to)
                .or_default()
                .insert(*blake3::hash(&bytes).as_bytes());
        }
    };

    // How long a pass takes, as kills find it: one that came after the pass
    // ended shortens the estimate, one that hit lengthens it a little.
    let adapt = |d: Duration, hit: bool| d.mul_f64(if hit { 1.1 } else { 0.75 });

    // Calibrate: how long an uninterrupted pass takes on each side.
    std::fs::create_dir_all(dir_a.path().join("moved")).unwrap();
    mutate(&mut rng, 0, &mut seen);
    let t = Instant::now();
    sync_to_rest(&a, dir_a.path()).await;
    let mut up = t.elapsed();
    let t = Instant::now();
    sync_to_rest(&b, dir_b.path()).await;
    let mut down = t.elapsed();
    eprintln!("uninterrupted: upload side {up:?}, download side {down:?}");

    let (mut up_kills, mut down_kills, mut resumed) = (0, 0, 0);
    let mut round = 1;
    while (up_kills < 25 || down_kills < 25) && round < 200 {
        if up_kills < 25 {
            mutate(&mut rng, round, &mut seen);
            let expected = tree(dir_a.path());
            let delay = up.mul_f64(rng.random_range(0.02..1.1));
            let (hit, log) = sync_killed_after(&a, dir_a.path(), delay).await;
            up_kills += usize::from(hit);
            up = adapt(up, hit);
            resumed += log.matches("resuming an interrupted upload").count();
            let d = diff(&tree(dir_a.path()), &expected);
            assert!(
                d.is_empty(),
                "the writer's own files changed: {d:?} (seed {seed})\n{log}"
            );
        }
        if down_kills < 25 {
            // Let A's changes reach the server first, then follow them.
            let log = sync_to_rest(&a, dir_a.path()).await;
            resumed += log.matches("resuming an interrupted upload").count();
            let delay = down.mul_f64(rng.random_range(0.02..1.1));
            let (hit, _) = sync_killed_after(&b, dir_b.path(), delay).await;
            down_kills += usize::from(hit);
            // (The calibration downloaded the whole first tree; a round's
            // changes take less, and a loaded machine varies: a kill that
            // came too late aims earlier next time.)
            down = adapt(down, hit);
            for (rel, bytes) in tree(dir_b.path()) {
                let h = *blake3::hash(&bytes).as_bytes();
                assert!(
                    seen.get(&rel).is_some_and(|s| s.contains(&h)),
                    "{rel} in the downloading folder is not a whole version (seed {seed})"
                );
            }
        }
        round += 1;
    }
    eprintln!(
        "kills: {up_kills} uploading, {down_kills} downloading; {resumed} upload sessions resumed; {round} rounds"
    );
    assert!(up_kills >= 25 && down_kills >= 25, "seed {seed}");

    // Restart both until nothing moves: identical trees, no temporary file.
    sync_to_rest(&a, dir_a.path()).await;
    sync_to_rest(&b, dir_b.path()).await;
    sync_to_rest(&a, dir_a.path()).await;
    let d = diff(&tree(dir_a.path()), &tree(dir_b.path()));
    assert!(d.is_empty(), "{d:?} (seed {seed})");
    assert!(partials(dir_a.path()).is_empty() && partials(dir_b.path()).is_empty());
    assert!(resumed > 0, "no killed upload was resumed (seed {seed})");
}
