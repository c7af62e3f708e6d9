//! tests/outside/client.py, a client written from PROTOCOL.md alone,
//! against a real server: it must reproduce every vector, upload through
//! presigned parts, commit, download and verify, follow the changes with a
//! cursor and a long-poll, and read a file the Rust client wrote (zstd
//! chunks); then the Rust client downloads what it wrote.

use std::process::Command;

use driftless_daemon::download::download_to;
use driftless_daemon::http::ApiClient;
use driftless_daemon::progress::Progress;
use driftless_daemon::upload::{UploadOptions, upload_file};
use driftless_protocol::{NamespaceId, OpId, Outcome};
use driftless_tests::TestApp;

/// The PyPI packages the client needs; scripts/test.sh installs them.
fn python_ready() {
    let out = Command::new("python3")
        .args(["-c", "import blake3, zstandard"])
        .output()
        .expect("python3 is missing");
    assert!(
        out.status.success(),
        "the outside client needs the PyPI packages blake3 and zstandard \
         (scripts/test.sh installs them: python3 -m pip install blake3 zstandard): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_client_written_from_protocol_md_alone_round_trips() {
    python_ready();
    let app = TestApp::spawn().await;
    let password = "outside-password-1";
    let (token, ns) = app.user("outsider", Some(password)).await;
    let api = ApiClient::new(&app.url, &token);

    // What the Rust client writes (compressible: stored as zstd frames).
    let dir = tempfile::tempdir().unwrap();
    let notes: Vec<u8> = (0..60_000)
        .flat_map(|i| format!("line {i}: notes from the rust client\n").into_bytes())
        .collect();
    std::fs::write(dir.path().join("notes.txt"), &notes).unwrap();
    let up = upload_file(
        &api,
        NamespaceId(ns),
        &dir.path().join("notes.txt"),
        "from-rust/notes.txt",
        None,
        "rust-notes-1".parse::<OpId>().unwrap(),
        UploadOptions::default(),
    )
    .await
    .unwrap();
    assert!(matches!(up.result.outcome, Outcome::Committed { .. }));
    assert!(
        up.bytes_sent < notes.len() as u64 / 2,
        "the notes went up compressed"
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/outside/client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args([
            "--url",
            &app.url,
            "--user",
            "outsider",
            "--password",
            password,
        ])
        .args(["--other", "from-rust/notes.txt"])
        .args(["--other-hash", &blake3::hash(&notes).to_hex()]);
    if !app.s3.enforces_checksums() {
        cmd.arg("--no-tamper-check");
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the outside client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("every vector of protocol/vectors.json reproduced"));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["ok"], true);

    // What the outside client wrote, read by the Rust client: its 4 MiB edit.
    let target = dir.path().join("big.bin");
    let got = download_to(
        &api,
        NamespaceId(ns),
        "outside/big.bin",
        None,
        &target,
        &Progress::hidden(),
    )
    .await
    .unwrap();
    let mut want = vec![0u8; 5 << 20];
    blake3::Hasher::new()
        .update(b"outside client file")
        .finalize_xof()
        .fill(&mut want);
    want.truncate(4 << 20);
    assert_eq!(got.size, want.len() as u64);
    assert_eq!(std::fs::read(&target).unwrap(), want);
    assert_eq!(got.rev.0, summary["edit_rev"].as_u64().unwrap());
}
