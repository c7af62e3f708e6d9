//! The `driftless` binary as a user runs it: `login` keeps a private
//! token; `upload`, `ls`, `download`, `history` and `restore` round-trip;
//! `upload` and `download` killed with -9 continue where they stopped.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use driftless_tests::TestApp;
use tokio::process::Command;

use crate::random;

/// One user's `driftless` with its own config folder.
pub(crate) struct Cli {
    pub(crate) config: tempfile::TempDir,
    server: String,
    token: Option<String>,
    device: String,
}

impl Cli {
    pub(crate) fn new(server: &str, token: Option<&str>, device: &str) -> Self {
        Self {
            config: tempfile::tempdir().unwrap(),
            server: server.to_owned(),
            token: token.map(str::to_owned),
            device: device.to_owned(),
        }
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        self.command_as(None, args)
    }

    /// `driftless` as a user without the power to read every file: root
    /// without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (`setpriv`), so
    /// permission bits apply to it as to any desktop user.
    pub(crate) fn unprivileged(&self, args: &[&str]) -> Command {
        self.command_as(
            Some(&["--bounding-set=-dac_override,-dac_read_search"]),
            args,
        )
    }

    fn command_as(&self, setpriv: Option<&[&str]>, args: &[&str]) -> Command {
        let bin = env!("CARGO_BIN_EXE_driftless");
        let mut c = match setpriv {
            Some(flags) => {
                let mut c = Command::new("setpriv");
                c.args(flags).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        c.args(args)
            .env("DRIFTLESS_CONFIG_DIR", self.config.path())
            .env("DRIFTLESS_DEVICE", &self.device)
            // DRIFTLESS_TEST_CLI_LOG=debug shows the daemons' debug logs.
            .env(
                "RUST_LOG",
                std::env::var("DRIFTLESS_TEST_CLI_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("DRIFTLESS_SERVER")
            .env_remove("DRIFTLESS_TOKEN")
            .kill_on_drop(true);
        if let Some(t) = &self.token {
            c.env("DRIFTLESS_SERVER", &self.server)
                .env("DRIFTLESS_TOKEN", t);
        }
        c
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.unwrap()
    }

    /// Runs and expects success; returns standard output.
    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "driftless {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `driftless login`, the password on standard input.
    pub(crate) async fn login(&self, server: &str, user: &str, password: &[u8]) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .command(&[
                "login",
                "--server",
                server,
                "--user",
                user,
                "--password-stdin",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password)
            .await
            .unwrap();
        child.wait_with_output().await.unwrap()
    }

    pub(crate) async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all).await;
        serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap()
    }
}

pub(crate) fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Files in `dir` whose names mark a download in progress.
pub(crate) fn partials(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if e
                .file_name()
                .to_string_lossy()
                .contains(".driftless-partial-")
            {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_keeps_a_private_token_and_the_commands_round_trip() {
    let app = TestApp::spawn().await;
    app.user("ada", Some("correct horse battery")).await;
    let cli = Cli::new(&app.url, None, "laptop");

    // Not signed in yet: a clear refusal.
    let out = cli.run(&["ls"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("driftless login"));

    // A wrong password is refused and stores nothing.
    assert!(
        !cli.login(&app.url, "ada", b"wrong\n")
            .await
            .status
            .success()
    );
    assert!(!cli.config.path().join("credentials.json").exists());

    let out = cli.login(&app.url, "ada", b"correct horse battery\n").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds = cli.config.path().join("credentials.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token file is private");
    }
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    assert!(stored["token"].as_str().unwrap().len() > 20);
    // The token never reaches the terminal.
    assert!(!String::from_utf8_lossy(&out.stdout).contains(stored["token"].as_str().unwrap()));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(stored["token"].as_str().unwrap()));

    // upload → ls → download, an edit, history, restore.
    let work = tempfile::tempdir().unwrap();
    let v1 = random(3 << 20, 7);
    write(&work.path().join("v1.bin"), &v1);
    let up = cli
        .json(&[
            "upload",
            work.path().join("v1.bin").to_str().unwrap(),
            "docs/report.bin",
        ])
        .await;
    assert_eq!(up["size"], v1.len() as u64);
    let rev1 = up["rev"].as_u64().unwrap();
    let listed = cli.ok(&["--json", "ls", "docs/"]).await;
    let entries: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["path"], "docs/report.bin");
    assert_eq!(entries[0]["size"], v1.len() as u64);

    let got = work.path().join("got.bin");
    cli.json(&["download", "docs/report.bin", got.to_str().unwrap()])
        .await;
    assert_eq!(std::fs::read(&got).unwrap(), v1);

    let v2 = random(3 << 20, 8);
    write(&work.path().join("v2.bin"), &v2);
    let up2 = cli
        .json(&[
            "upload",
            work.path().join("v2.bin").to_str().unwrap(),
            "docs/report.bin",
        ])
        .await;
    assert!(up2["rev"].as_u64().unwrap() > rev1);
    let history = cli.json(&["history", "docs/report.bin"]).await;
    assert_eq!(history.as_array().unwrap().len(), 2);
    cli.json(&["restore", "docs/report.bin", &rev1.to_string()])
        .await;
    cli.json(&["download", "docs/report.bin", got.to_str().unwrap()])
        .await;
    assert_eq!(
        std::fs::read(&got).unwrap(),
        v1,
        "the restored revision is live"
    );
    let old = work.path().join("old.bin");
    cli.json(&[
        "download",
        "--rev",
        &up2["rev"].to_string(),
        "docs/report.bin",
        old.to_str().unwrap(),
    ])
    .await;
    assert_eq!(
        std::fs::read(&old).unwrap(),
        v2,
        "an earlier revision on demand"
    );

    // Bad input: clear errors, nothing written.
    let out = cli
        .run(&[
            "upload",
            work.path().join("v1.bin").to_str().unwrap(),
            "../escape.bin",
        ])
        .await;
    assert!(!out.status.success());
    let out = cli
        .run(&[
            "download",
            "docs/missing.bin",
            work.path().join("m").to_str().unwrap(),
        ])
        .await;
    assert!(!out.status.success());
    assert!(!work.path().join("m").exists());
    assert!(partials(work.path()).is_empty());
}

/// Parts the server has registered for the namespace's open sessions.
async fn registered_parts(app: &TestApp, ns: u64) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM upload_parts WHERE namespace_id = $1")
        .bind(ns as i64)
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_killed_with_sigkill_resumes_and_sends_only_what_is_missing() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("ada", None).await;
    let cli = Cli::new(&app.url, Some(&token), "laptop");
    let work = tempfile::tempdir().unwrap();
    let big = random(60 << 20, 11);
    let file = work.path().join("big.bin");
    write(&file, &big);

    // Kill once at least two 5 MiB parts are in S3: a fifth part is only
    // registered after one of the first four finished, a sixth after two.
    let mut child = cli
        .command(&["upload", file.to_str().unwrap(), "big.bin"])
        .env("DRIFTLESS_PART_MIB", "5")
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if registered_parts(&app, ns).await >= 6 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the upload finished before it could be killed"
        );
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let mut again = cli.command(&["--json", "upload", file.to_str().unwrap(), "big.bin"]);
    again.env("DRIFTLESS_PART_MIB", "5");
    let out = again.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["parts_resumed"].as_u64().unwrap() >= 2, "{r}");
    assert!(
        r["bytes_sent"].as_u64().unwrap() <= big.len() as u64 - (10 << 20),
        "the parts already stored are not sent again: {r}"
    );
    let got = work.path().join("got.bin");
    cli.json(&["download", "big.bin", got.to_str().unwrap()])
        .await;
    assert!(std::fs::read(&got).unwrap() == big);
    // One session, committed; nothing left open.
    let open: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM upload_sessions WHERE namespace_id = $1 AND state = 'open'",
    )
    .bind(ns as i64)
    .fetch_one(app.state.db.pool())
    .await
    .unwrap();
    assert_eq!(open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_killed_with_sigkill_leaves_no_file_and_resumes() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("ada", None).await;
    let cli = Cli::new(&app.url, Some(&token), "laptop");
    let work = tempfile::tempdir().unwrap();
    let big = random(64 << 20, 12);
    write(&work.path().join("src.bin"), &big);
    cli.json(&[
        "upload",
        work.path().join("src.bin").to_str().unwrap(),
        "big.bin",
    ])
    .await;
    let _ = ns;

    let target = work.path().join("out").join("big.bin");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let mut resumed = 0u64;
    let mut kills = 0;
    for delay_ms in [30u64, 60, 90, 120, 160, 200, 250, 300, 400, 500, 700, 1000] {
        let mut child = cli
            .command(&["download", "big.bin", target.to_str().unwrap()])
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        kills += 1;
        assert!(
            !target.exists(),
            "a killed download leaves no file at its path"
        );
        let r = cli
            .json(&["download", "big.bin", target.to_str().unwrap()])
            .await;
        assert_eq!(std::fs::read(&target).unwrap(), big);
        resumed = resumed.max(r["resumed"].as_u64().unwrap());
        std::fs::remove_file(&target).unwrap();
        assert!(partials(target.parent().unwrap()).is_empty());
        if resumed > 0 && kills >= 3 {
            break;
        }
    }
    assert!(kills >= 1, "the download was never caught in flight");
    assert!(resumed > 0, "no run found chunks from the killed one");
}

/// Waits until `cond` holds, up to `limit`; returns how long it took.
pub(crate) async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t = std::time::Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_running_daemons_follow_each_other_live() {
    let app = TestApp::spawn().await;
    let (token_a, _) = app.user("ada", None).await;
    let token_b = app.device("ada", "desk").await;
    let a = Cli::new(&app.url, Some(&token_a), "laptop");
    let b = Cli::new(&app.url, Some(&token_b), "desk");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _da = a
        .command(&["sync", dir_a.path().to_str().unwrap()])
        .spawn()
        .unwrap();
    let _db = b
        .command(&["sync", dir_b.path().to_str().unwrap()])
        .spawn()
        .unwrap();

    // A second daemon on the same folder is refused: they would undo each other.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let twin = a.run(&["sync", dir_a.path().to_str().unwrap()]).await;
    assert!(!twin.status.success());
    assert!(String::from_utf8_lossy(&twin.stderr).contains("already syncing"));

    // A file saved on the laptop shows up on the desk: the watcher sees it,
    // the desk's long-poll wakes.
    write(
        &dir_a.path().join("notes/today.md"),
        b"written on the laptop\n",
    );
    let took = until(Duration::from_secs(20), || {
        std::fs::read(dir_b.path().join("notes/today.md"))
            .ok()
            .as_deref()
            == Some(&b"written on the laptop\n"[..])
    })
    .await
    .expect("the desk never got the laptop's file");
    eprintln!("laptop -> desk in {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // And back: a rename on the desk is a rename on the laptop.
    std::fs::rename(
        dir_b.path().join("notes/today.md"),
        dir_b.path().join("notes/yesterday.md"),
    )
    .unwrap();
    until(Duration::from_secs(20), || {
        dir_a.path().join("notes/yesterday.md").exists()
            && !dir_a.path().join("notes/today.md").exists()
    })
    .await
    .expect("the laptop never saw the desk's rename");

    // Deleting on the laptop deletes on the desk.
    std::fs::remove_file(dir_a.path().join("notes/yesterday.md")).unwrap();
    until(Duration::from_secs(20), || {
        !dir_b.path().join("notes/yesterday.md").exists()
    })
    .await
    .expect("the desk never saw the delete");

    // `status --json` tells what is in sync and that nothing is pending.
    let mut status = serde_json::Value::Null;
    for _ in 0..50 {
        status = b.json(&["status", dir_b.path().to_str().unwrap()]).await;
        if status["pending"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status["pending"].as_array().unwrap().len(), 0, "{status}");
    assert!(status["last_pass_ms"].as_i64().is_some(), "{status}");
}

/// Peak resident memory of a `driftless upload` of `mib` MiB, in KiB.
async fn upload_peak_kib(cli: &Cli, work: &Path, mib: usize, name: &str) -> u64 {
    let file = work.join(name);
    write(&file, &random(mib << 20, mib as u64));
    let mut child = cli
        .command(&["--json", "upload", file.to_str().unwrap(), name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut peak = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kib) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        {
            peak = peak.max(kib);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(child.wait().await.unwrap().success());
    std::fs::remove_file(&file).unwrap();
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_memory_does_not_grow_with_the_file() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("ada", None).await;
    let cli = Cli::new(&app.url, Some(&token), "laptop");
    let work = tempfile::tempdir().unwrap();
    // Both sizes fill the pipeline: parts of 16 MiB, 4 PUT at once and 4
    // queued behind them, whatever the file size.
    let small = upload_peak_kib(&cli, work.path(), 192, "small.bin").await;
    let large = upload_peak_kib(&cli, work.path(), 768, "large.bin").await;
    eprintln!(
        "peak RSS: 192 MiB file {} MiB, 768 MiB file {} MiB",
        small / 1024,
        large / 1024
    );
    // The smaller file (12 parts) may end before its pipeline is at its
    // fullest: peaks have differed by up to ~51 MiB between runs (on
    // Garage, which takes parts more slowly than s3s-fs). Memory that grew
    // with the file would differ by hundreds (576 MiB more bytes), so four
    // parts of slack still tells the two apart.
    assert!(large < small + 64 * 1024, "{small} KiB vs {large} KiB");
    assert!(large < 256 * 1024, "{large} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_bars_show_on_a_terminal_only() {
    let app = TestApp::spawn().await;
    let (token, _) = app.user("ada", None).await;
    let cli = Cli::new(&app.url, Some(&token), "laptop");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("f.bin");
    write(&file, &random(24 << 20, 3));
    // Not a terminal: no bar on standard error.
    let out = cli
        .run(&["upload", file.to_str().unwrap(), "piped.bin"])
        .await;
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("eta") && !err.contains('\r'), "{err}");
    // On a terminal (a pseudo-terminal from `script`): a bar.
    let cmd = format!(
        "{} upload {} tty.bin",
        env!("CARGO_BIN_EXE_driftless"),
        file.to_str().unwrap()
    );
    let mut script = cli.command(&[]);
    let script = script
        .as_std_mut()
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect::<Vec<_>>();
    let out = tokio::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .envs(script)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("tty.bin") && shown.contains("MiB"),
        "{shown}"
    );
}
