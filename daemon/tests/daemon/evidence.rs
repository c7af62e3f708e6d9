//! The `driftless` daemon as users run it, in the situations that used to
//! lose files or stall sync: a folder it may not read (as a user that is
//! not root), and a folder some other program reads and writes all day.

use std::time::Duration;

use driftless_tests::TestApp;

use crate::cli::{Cli, until, write};

async fn server_paths(app: &TestApp, ns: u64) -> Vec<String> {
    use sqlx::Row;
    sqlx::query("SELECT path FROM files WHERE namespace_id = $1 AND deleted = 0 ORDER BY path")
        .bind(ns as i64)
        .fetch_all(app.state.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_the_daemon_cannot_read_is_not_deleted() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("ada", None).await;
    let cli = Cli::new(&app.url, Some(&token), "laptop");
    let dir = tempfile::tempdir().unwrap();
    for p in [
        "a.txt",
        "b.txt",
        "private/1.txt",
        "private/2.txt",
        "private/sub/3.txt",
    ] {
        write(&dir.path().join(p), p.as_bytes());
    }
    let d = dir.path().to_str().unwrap();
    let out = cli
        .unprivileged(&["sync", d, "--once"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server_paths(&app, ns).await.len(), 5);

    // The user locks one folder away from the daemon.
    use std::os::unix::fs::PermissionsExt;
    let private = dir.path().join("private");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o000)).unwrap();
    let out = cli
        .unprivileged(&["--json", "sync", d, "--once"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(report["deleted_there"], 0, "{report}");
    assert_eq!(
        server_paths(&app, ns).await,
        [
            "a.txt",
            "b.txt",
            "private/1.txt",
            "private/2.txt",
            "private/sub/3.txt"
        ]
    );
    // Status says so, and does not call the folder in sync.
    let out = cli
        .unprivileged(&["--json", "status", d])
        .output()
        .await
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(st["pending"].as_array().unwrap().is_empty(), "{st}");
    assert!(
        st["failed"].as_array().unwrap().iter().any(
            |e| e["path"] == "private" && e["why"].as_str().unwrap().contains("cannot be read")
        ),
        "{st}"
    );
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = cli
        .unprivileged(&["sync", d, "--once"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(server_paths(&app, ns).await.len(), 5);
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_folder_still_syncs_both_ways_within_seconds_and_an_idle_daemon_sleeps() {
    let app = TestApp::spawn().await;
    let (token_a, _) = app.user("ada", None).await;
    let token_b = app.device("ada", "desk").await;
    let a = Cli::new(&app.url, Some(&token_a), "laptop");
    let b = Cli::new(&app.url, Some(&token_b), "desk");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for i in 0..2000 {
        write(
            &dir_a.path().join(format!("tree/{:02}/{i}.txt", i % 40)),
            format!("file {i}\n").as_bytes(),
        );
    }
    write(&dir_a.path().join("busy/read.me"), b"read all day");
    let da = a
        .command(&["sync", dir_a.path().to_str().unwrap()])
        .spawn()
        .unwrap();
    let _db = b
        .command(&["sync", dir_b.path().to_str().unwrap()])
        .spawn()
        .unwrap();
    until(Duration::from_secs(120), || {
        dir_b.path().join("tree/39/1999.txt").exists()
    })
    .await
    .expect("the first sync never finished");

    // Idle: the daemon's own reads must not wake it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = da.id().unwrap();
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = cpu_seconds(pid) - before;
    eprintln!("idle daemon over 2,000 files: {idle:.2} s of CPU in 10 s");
    assert!(idle < 0.5, "an idle daemon used {idle:.2} s of CPU in 10 s");

    // Another program reads one file and appends to a log, every 0.1 s.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let (stop, dir) = (stop.clone(), dir_a.path().to_owned());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("busy/app.log"))
                .unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::read(dir.join("busy/read.me"));
                writeln!(log, "line {n}").unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut worst = Duration::ZERO;
    for round in 0..3 {
        // Out: a file saved on the busy laptop reaches the desk.
        let name = format!("out-{round}.md");
        write(&dir_a.path().join(&name), b"from the busy laptop");
        let took = until(Duration::from_secs(30), || {
            dir_b.path().join(&name).exists()
        })
        .await
        .expect("a change in a busy folder never went out");
        worst = worst.max(took);
        // In: a file from the desk reaches the busy laptop.
        let name = format!("in-{round}.md");
        write(&dir_b.path().join(&name), b"from the desk");
        let took = until(Duration::from_secs(30), || {
            dir_a.path().join(&name).exists()
        })
        .await
        .expect("a remote change never reached the busy folder");
        worst = worst.max(took);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    eprintln!("busy folder: slowest change either way {worst:?}");
    assert!(worst < Duration::from_secs(4), "{worst:?}");
}
