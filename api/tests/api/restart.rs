//! The server killed with SIGKILL in the middle of an upload session and
//! started again: the session's state comes back from the database and S3,
//! the client sends only the parts S3 does not hold, and the commit succeeds.

use std::time::Duration;

use driftless_protocol::*;
use driftless_tests::{ServerProcess, TestDb, TestS3};
use serde_json::{Value, json};

use crate::client::{Api, begin, prepare, send_part};
use crate::uploads::{data, download_both_ways};

#[tokio::test]
async fn a_session_survives_kill_9_and_resumes_with_only_the_missing_parts() {
    let db = TestDb::postgres().await;
    let s3 = TestS3::start(Duration::from_secs(300)).await;
    let mut server = ServerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_driftless-server")),
        &db,
        &s3,
    )
    .await;
    let token = server
        .admin(&["create-user", "rita", "--device", "laptop"], "")
        .await;
    let api = Api::new(&server.url, token.trim());
    let (status, v) = api.get("/v1/namespaces").await;
    assert_eq!(status, 200, "{v}");
    let ns = v[0]["id"].as_u64().unwrap_or_else(|| panic!("{v}"));

    let bytes = data(40 << 20, 21);
    let file = prepare("video.bin", &bytes, None, "op-video");
    let (upload_id, parts) = begin(&api, ns, &file).await;
    assert!(parts.len() >= 3, "{} parts", parts.len());

    // Parts 1 and 2 reach S3; part 3 is registered (URL issued) but never PUT.
    let mut etags: Vec<Value> = Vec::new();
    for p in &parts[..2] {
        let etag = send_part(&api, upload_id.as_str(), p).await;
        etags.push(json!({"part_number": p.request.part_number, "etag": etag}));
    }
    let (status, _) = api
        .post(
            &format!("/v1/uploads/{upload_id}/parts"),
            &serde_json::to_value(&parts[2].request).unwrap(),
        )
        .await;
    assert_eq!(status, 200);

    server.kill9();
    let dead = api.http.get(format!("{}/healthz", server.url)).send().await;
    assert!(dead.is_err(), "the server is down");
    server.restart().await;

    // S3, not memory, says what is done.
    let (status, v) = api.get(&format!("/v1/uploads/{upload_id}")).await;
    assert_eq!(status, 200, "{v}");
    let st: UploadStatus = serde_json::from_value(v).unwrap();
    assert_eq!(st.state, UploadState::Open);
    let stored: Vec<(u32, bool)> = st.parts.iter().map(|p| (p.part_number, p.stored)).collect();
    assert_eq!(stored, vec![(1, true), (2, true), (3, false)]);
    let rest: Vec<ChunkHash> = parts[2..]
        .iter()
        .flat_map(|p| p.request.chunks.iter().map(|c| c.hash))
        .collect();
    assert_eq!(st.needed, rest, "exactly the chunks of the unsent parts");

    // The client sends only those parts, then commits.
    let mut sent = 0u64;
    for p in &parts[2..] {
        let etag = send_part(&api, upload_id.as_str(), p).await;
        sent += p.bytes.len() as u64;
        etags.push(json!({"part_number": p.request.part_number, "etag": etag}));
    }
    let expected: u64 = parts[2..].iter().map(|p| p.bytes.len() as u64).sum();
    assert_eq!(sent, expected);
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload_id}/commit"),
            &json!({"parts": etags}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "committed", "{v}");

    // Killed again right after the commit: the committed file is there.
    server.kill9();
    server.restart().await;
    download_both_ways(&api, ns, "video.bin", &bytes).await;
}

#[tokio::test]
async fn a_server_killed_mid_commit_lets_the_retry_through_within_seconds() {
    let db = TestDb::postgres().await;
    let s3 = TestS3::start(Duration::from_secs(300)).await;
    let mut server = ServerProcess::start_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_driftless-server")),
        &db,
        &s3,
        &[("DRIFTLESS_FAILPOINT", "commit-after-complete".into())],
    )
    .await;
    let token = server
        .admin(&["create-user", "rita", "--device", "laptop"], "")
        .await;
    let api = Api::new(&server.url, token.trim());
    let (_, v) = api.get("/v1/namespaces").await;
    let ns = v[0]["id"].as_u64().unwrap();
    let bytes = data(12 << 20, 22);
    let file = prepare("clip.bin", &bytes, None, "op-clip");
    let (upload_id, parts) = begin(&api, ns, &file).await;
    let mut etags: Vec<Value> = Vec::new();
    for p in &parts {
        let etag = send_part(&api, upload_id.as_str(), p).await;
        etags.push(json!({"part_number": p.request.part_number, "etag": etag}));
    }
    // The server dies in the middle of the commit (S3 assembled the pack,
    // nothing is recorded yet), and comes back.
    let commit = json!({ "parts": etags });
    let died = api
        .http
        .post(format!("{}/v1/uploads/{upload_id}/commit", server.url))
        .bearer_auth(&api.token)
        .json(&commit)
        .send()
        .await;
    assert!(died.is_err(), "the commit's server died under it");
    let crashed = std::time::Instant::now();
    server.set_env("DRIFTLESS_FAILPOINT", None);
    server.restart().await;

    // The client retries as it is told: busy while the dead commit's lease
    // runs out (seconds), then the commit goes through.
    let took = loop {
        let (status, v) = api
            .post(&format!("/v1/uploads/{upload_id}/commit"), &commit)
            .await;
        if status == 200 {
            assert_eq!(v["results"][0]["status"], "committed", "{v}");
            break crashed.elapsed();
        }
        assert_eq!(
            (status, v["code"].as_str()),
            (409, Some("upload_busy")),
            "{v}"
        );
        assert!(
            crashed.elapsed() < Duration::from_secs(60),
            "still busy after a minute"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("commit retried through {took:?} after the crash");
    assert!(took < Duration::from_secs(45), "{took:?}");
    download_both_ways(&api, ns, "clip.bin", &bytes).await;
}
