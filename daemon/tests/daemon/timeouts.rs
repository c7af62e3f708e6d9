//! The client against servers and storage that misbehave: one that accepts
//! and never answers, one that answers without end, and a route to storage
//! that freezes mid-download. Each costs a timeout or an error, never a
//! hang or the memory, and a download resumes once storage is reachable.

use std::time::{Duration, Instant};

use driftless_tests::{AppOptions, BlackHole, TestApp, TestDb};

use crate::cli::{Cli, write};
use crate::random;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_and_never_answers_costs_a_timeout() {
    let hole = BlackHole::start().await;
    let cli = Cli::new(&hole.url(), Some("dl_sometoken"), "laptop");
    let t = Instant::now();
    let out = cli
        .command(&["ls"])
        .env("DRIFTLESS_HTTP_TIMEOUT_SECS", "3")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("transport"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_is_cut_off_in_bounded_memory() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let endless = || async {
        let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
        let stream =
            futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        axum::body::Body::from_stream(stream)
    };
    let app = axum::Router::new().route("/v1/namespaces", get(endless));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cli = Cli::new(&url, Some("dl_sometoken"), "laptop");
    let mut child = cli
        .command(&["folder", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let t = Instant::now();
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(l) = s.lines().find(|l| l.starts_with("VmRSS:"))
        {
            let kib: u64 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
            peak_kib = peak_kib.max(kib);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "still reading after a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = child.wait_with_output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "endless answer: cut off after {:?}, peak {} MiB",
        t.elapsed(),
        peak_kib / 1024
    );
    assert!(!status.success());
    assert!(err.contains("longer than"), "{err}");
    assert!(
        peak_kib < 300 << 10,
        "the client grew to {} MiB",
        peak_kib / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_over_a_frozen_storage_route_resumes_once_storage_answers() {
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            s3_proxy: Some(Duration::from_secs(5)),
            ..AppOptions::default()
        },
    )
    .await;
    let (token, _) = app.user("ada", None).await;
    let cli = Cli::new(&app.url, Some(&token), "laptop");
    let work = tempfile::tempdir().unwrap();
    let bytes = random(24 << 20, 5);
    write(&work.path().join("big.bin"), &bytes);
    cli.ok(&[
        "upload",
        work.path().join("big.bin").to_str().unwrap(),
        "big.bin",
    ])
    .await;

    // Storage goes dark in the middle of the download (8 MiB in), and
    // comes back a second later: the connections open then stay dead.
    let proxy = app.s3_proxy.as_ref().unwrap();
    proxy.freeze_after(8 << 20);
    let target = work.path().join("copy.bin");
    let download = cli
        .command(&["download", "big.bin", target.to_str().unwrap()])
        .env("DRIFTLESS_HTTP_TIMEOUT_SECS", "3")
        .output();
    let thaw = async {
        while !proxy.frozen() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.thaw();
    };
    let t = Instant::now();
    let (out, ()) = tokio::join!(download, thaw);
    let out = out.unwrap();
    eprintln!("download across a frozen route: {:?}", t.elapsed());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(40), "{:?}", t.elapsed());
    assert_eq!(std::fs::read(&target).unwrap(), bytes);
}
