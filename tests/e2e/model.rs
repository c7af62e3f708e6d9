//! A randomized model test: two devices make random creates, edits,
//! deletes and renames on a handful of names, sync at random, go offline,
//! and get cut off mid-pass (the pass is dropped at a random moment, and
//! the device restarts on the same folder and state, as after a lost
//! connection or a crash). Faults on top: the synced folder renamed away
//! mid-pass (and back), a folder in it made unreadable mid-pass (an empty
//! read-only file system mounted over it, as when a share drops), the
//! server's copy of the folder restored to an earlier backup, and another
//! program reading and appending to files in the folder all along.
//!
//! Afterwards both folders must be identical, hold no bytes nobody wrote,
//! and no edit may be lost: every content a device wrote and no device
//! replaced or deleted while holding it is still somewhere in the folder.
//! That is the invariant "a file that exists on some device is never
//! deleted unless a device deleted it" — a fault is not a device.
//!
//! 200 seeds in CI; `DRIFTLESS_MODEL_SEEDS=N` runs N, and
//! `DRIFTLESS_MODEL_SEED=S` replays one.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use driftless_tests::TestApp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::device::Device;

const NAMES: &[&str] = &["a.txt", "b.txt", "c.md", "d/e.txt", "d/f.txt", "g/h.bin"];
/// Written by the busy program, not by the model's devices.
const BUSY_LOG: &str = "busy.log";
const STEPS: usize = 30;

/// What the model knows of one device.
struct Side {
    device: Device,
    online: bool,
    name: String,
    url: String,
    token: String,
    ns: u64,
}

impl Side {
    fn restart(&mut self) {
        self.device = Device::reopen(
            &self.url,
            &self.token,
            self.ns,
            &self.name,
            self.device.take_dir(),
        );
    }
}

/// The folder as the model's devices wrote it: the busy program's log
/// (and conflicted copies of it) left out.
fn current(d: &Device) -> BTreeMap<String, Vec<u8>> {
    let mut t = d.tree();
    t.retain(|k, _| !k.starts_with("busy"));
    t
}

/// The busy program's files.
fn busy_files(d: &Device) -> BTreeMap<String, Vec<u8>> {
    let mut t = d.tree();
    t.retain(|k, _| k.starts_with("busy"));
    t
}

/// Another program in the folder: reads files and appends to a log, all
/// the time, until stopped.
fn busy(dir: std::path::PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let _ = std::fs::read(dir.join(NAMES[n as usize % NAMES.len()]));
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(BUSY_LOG))
            {
                let _ = writeln!(f, "busy {n}");
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Runs `cmd`; a fault the test cannot inject fails it loudly.
fn must(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {} (the model's faults need CAP_SYS_ADMIN, as .ci/run has)",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn run_seed(app: &TestApp, seed: u64) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let user = format!("model-{seed}");
    let (token_a, ns) = app.user(&user, None).await;
    let token_b = app.device(&user, "desk").await;
    let mut sides = [
        Side {
            device: Device::new(&app.url, &token_a, ns, "laptop"),
            online: true,
            name: "laptop".into(),
            url: app.url.clone(),
            token: token_a,
            ns,
        },
        Side {
            device: Device::new(&app.url, &token_b, ns, "desk"),
            online: true,
            name: "desk".into(),
            url: app.url.clone(),
            token: token_b,
            ns,
        },
    ];
    let mut written: HashSet<Vec<u8>> = HashSet::new();
    let mut superseded: HashSet<Vec<u8>> = HashSet::new();
    let mut log = Vec::new();
    let mut counter = 0u64;
    let mut backup = None;
    let stop_busy = Arc::new(AtomicBool::new(false));
    let busy_at = rng.random_range(0..2usize);
    let busy_thread = busy(sides[busy_at].device.path().to_owned(), stop_busy.clone());
    for step in 0..STEPS {
        let who = rng.random_range(0..2usize);
        let side = &mut sides[who];
        let d = &side.device;
        let name = NAMES[rng.random_range(0..NAMES.len())];
        let files = current(d);
        match rng.random_range(0..100) {
            0..30 => {
                counter += 1;
                let bytes =
                    format!("{seed}:{counter} from {} at step {step}\n", side.name).into_bytes();
                let bytes = if name.ends_with(".bin") {
                    bytes.repeat(20_000) // a few chunks' worth
                } else {
                    bytes
                };
                if let Some(old) = files.get(name) {
                    superseded.insert(old.clone());
                }
                d.write(name, &bytes);
                written.insert(bytes);
                log.push(format!("{step}: {} writes {name}", side.name));
            }
            30..40 => {
                if let Some(old) = files.get(name) {
                    superseded.insert(old.clone());
                    d.remove(name);
                    log.push(format!("{step}: {} deletes {name}", side.name));
                }
            }
            40..50 => {
                let to = NAMES[rng.random_range(0..NAMES.len())];
                if files.contains_key(name) && !files.contains_key(to) && to != name {
                    d.rename(name, to);
                    log.push(format!("{step}: {} renames {name} to {to}", side.name));
                }
            }
            50..58 => {
                side.online = !side.online;
                log.push(format!(
                    "{step}: {} goes {}",
                    side.name,
                    if side.online { "online" } else { "offline" }
                ));
            }
            58..66 if side.online => {
                // Cut off mid-pass, then restart on the same folder and state.
                let after = Duration::from_millis(rng.random_range(1..40));
                let _ = tokio::time::timeout(after, d.syncer.pass()).await;
                side.restart();
                log.push(format!("{step}: {} is cut off after {after:?}", side.name));
            }
            66..69 if side.online => {
                // The folder is renamed away mid-pass, then back.
                let dir = d.path().to_owned();
                let away = dir.with_extension("away");
                let after = Duration::from_millis(rng.random_range(0..30));
                let rename = async {
                    tokio::time::sleep(after).await;
                    std::fs::rename(&dir, &away).unwrap();
                };
                let (r, ()) = tokio::join!(d.syncer.pass(), rename);
                std::fs::rename(&away, &dir).unwrap();
                log.push(format!(
                    "{step}: {}'s folder is renamed away after {after:?} ({})",
                    side.name,
                    if r.is_ok() {
                        "pass done"
                    } else {
                        "pass refused"
                    }
                ));
            }
            69..72 if side.online => {
                // A folder in it becomes unreadable mid-pass: an empty,
                // read-only file system is mounted over it, then removed.
                let sub = d.path().join("d");
                std::fs::create_dir_all(&sub).unwrap();
                let after = Duration::from_millis(rng.random_range(0..30));
                let hide = async {
                    tokio::time::sleep(after).await;
                    // The pass may prune the folder if it empties it: make
                    // it again until the mount takes.
                    for _ in 0..20 {
                        let _ = std::fs::create_dir_all(&sub);
                        let out = std::process::Command::new("mount")
                            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
                            .arg(&sub)
                            .output()
                            .unwrap();
                        if out.status.success() {
                            return;
                        }
                    }
                    must(
                        std::process::Command::new("mount")
                            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
                            .arg(&sub),
                    );
                };
                let (r, ()) = tokio::join!(d.syncer.pass(), hide);
                let r2 = d.syncer.pass().await;
                must(std::process::Command::new("umount").arg(&sub));
                log.push(format!(
                    "{step}: {}'s folder d/ unreadable after {after:?} ({}, {})",
                    side.name,
                    if r.is_ok() {
                        "pass done"
                    } else {
                        "pass refused"
                    },
                    if r2.is_ok() {
                        "pass done"
                    } else {
                        "pass refused"
                    }
                ));
            }
            72..75 => {
                // The server's copy of the folder: a backup, or a restore of it.
                match backup.take() {
                    None => {
                        backup = Some(app.snapshot_folder(ns).await);
                        log.push(format!("{step}: the server is backed up"));
                    }
                    Some(b) => {
                        app.restore_folder(&b).await;
                        log.push(format!("{step}: the server is restored from the backup"));
                    }
                }
            }
            _ if side.online => {
                if let Err(e) = d.syncer.pass().await {
                    // A 401 seen once in CI (1 seed of 200, never locally in
                    // 2,000): say whether the server still holds the token.
                    let row: Option<(i64, Option<i64>, Option<i64>)> = sqlx::query_as(
                        "SELECT id, revoked_at_ms, expires_at_ms FROM devices WHERE token_hash = $1",
                    )
                    .bind(blake3::hash(side.token.as_bytes()).as_bytes().to_vec())
                    .fetch_optional(app.state.db.pool())
                    .await
                    .unwrap_or_default();
                    return Err(format!(
                        "{}'s pass at step {step} failed: {e} (token {}…; its device row now: {row:?})\n{}",
                        side.name,
                        &side.token[..8],
                        log.join("\n")
                    ));
                }
                log.push(format!("{step}: {} syncs", side.name));
            }
            _ => {}
        }
    }
    // The busy program stops; everyone back online until nothing moves.
    stop_busy.store(true, Ordering::Relaxed);
    let _ = busy_thread.join();
    for s in &mut sides {
        s.restart();
    }
    let mut quiet = false;
    for _ in 0..6 {
        let mut changed = false;
        for s in &sides {
            let r = s
                .device
                .syncer
                .pass()
                .await
                .map_err(|e| format!("final pass failed: {e}\n{}", log.join("\n")))?;
            if !r.problems.is_empty() {
                return Err(format!("problems: {:?}\n{}", r.problems, log.join("\n")));
            }
            changed |= r.changed();
        }
        if !changed {
            quiet = true;
            break;
        }
    }
    if busy_files(&sides[0].device) != busy_files(&sides[1].device) {
        return Err(format!("the busy log differs\n{}", log.join("\n")));
    }
    let (ta, tb) = (current(&sides[0].device), current(&sides[1].device));
    let show = |t: &BTreeMap<String, Vec<u8>>| {
        t.iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    String::from_utf8_lossy(&v[..v.len().min(40)]).trim_end()
                )
            })
            .collect::<Vec<_>>()
    };
    if !quiet {
        return Err(format!("never quiet\n{}", log.join("\n")));
    }
    if ta != tb {
        return Err(format!(
            "folders differ:\n  A {:?}\n  B {:?}\n{}\njournal:\n{}\nstates:\n{}\n{}",
            show(&ta),
            show(&tb),
            log.join("\n"),
            journal(app, ns).await,
            states(&sides[0].device),
            states(&sides[1].device),
        ));
    }
    let present: HashSet<&Vec<u8>> = ta.values().collect();
    for (path, c) in &ta {
        if !written.contains(c) {
            return Err(format!(
                "a file holds bytes nobody wrote: {path} = {:?} ({} bytes)\n  final {:?}\n{}\njournal:\n{}",
                String::from_utf8_lossy(&c[..c.len().min(60)]),
                c.len(),
                show(&ta),
                log.join("\n"),
                journal(app, ns).await,
            ));
        }
    }
    for c in written.difference(&superseded) {
        if !present.contains(c) {
            return Err(format!(
                "lost edit: {:?}\n  final {:?}\n{}",
                String::from_utf8_lossy(&c[..c.len().min(40)]),
                show(&ta),
                log.join("\n")
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_with_random_operations_and_disconnects_converge_without_losing_an_edit() {
    let app = TestApp::spawn().await;
    let seeds: Vec<u64> = match std::env::var("DRIFTLESS_MODEL_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => {
            let n: u64 = std::env::var("DRIFTLESS_MODEL_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let base: u64 = rand::random::<u32>().into();
            (base..base + n).collect()
        }
    };
    let n = seeds.len();
    let started = std::time::Instant::now();
    let app = &app;
    use futures_util::stream::{self, StreamExt};
    let failures: Vec<(u64, String)> = stream::iter(seeds)
        .map(|seed| async move { (seed, run_seed(app, seed).await) })
        .buffer_unordered(8)
        .filter_map(|(seed, r)| async move { r.err().map(|e| (seed, e)) })
        .collect()
        .await;
    eprintln!("{n} seeds in {:?}", started.elapsed());
    if let Some((seed, why)) = failures.first() {
        let all: Vec<String> = failures
            .iter()
            .map(|(s, w)| format!("  seed {s}: {}", w.lines().next().unwrap_or_default()))
            .collect();
        panic!(
            "{} of {n} seeds failed:\n{}\nreplay with DRIFTLESS_MODEL_SEED={seed}\n{why}",
            failures.len(),
            all.join("\n")
        );
    }
}

/// The namespace's journal, for a failure report.
async fn journal(app: &TestApp, ns: u64) -> String {
    use sqlx::Row;
    sqlx::query(
        "SELECT seq, path, rev, kind, moved_from, device_id FROM journal \
         WHERE namespace_id = $1 ORDER BY seq",
    )
    .bind(ns as i64)
    .fetch_all(app.state.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| {
        format!(
            "  seq {} {} rev {} kind {} from {:?} device {:?}",
            r.get::<i64, _>(0),
            r.get::<String, _>(1),
            r.get::<i64, _>(2),
            r.get::<i64, _>(3),
            r.get::<Option<String>, _>(4),
            r.get::<Option<i64>, _>(5)
        )
    })
    .collect::<Vec<_>>()
    .join("\n")
}

/// A device's synced records, for a failure report.
fn states(d: &Device) -> String {
    d.syncer
        .state()
        .all_synced()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "  {} rev {} {}",
                s.path,
                s.rev.0,
                &s.content_hash.to_string()[..8]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
