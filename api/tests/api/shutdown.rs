//! SIGTERM: long-polls let go, the commit in flight finishes and is
//! published, the process exits 0; its logs are JSON without secrets.

use std::time::{Duration, Instant};

use driftless_protocol::*;
use driftless_tests::{ServerProcess, TestBroker, TestDb, TestS3};
use serde_json::{Value, json};

use crate::changes::drain;
use crate::client::{Api, pack, prepare, send_part};
use crate::ops::{scrape, server_bin};

#[tokio::test]
async fn sigterm_lets_long_polls_go_finishes_the_commit_in_flight_publishes_it_and_exits_0() {
    let broker = TestBroker::start().await;
    let kafka = broker.fresh_topic();
    let db = TestDb::postgres().await;
    let s3 = TestS3::start(Duration::from_secs(300)).await;
    let mut server = ServerProcess::start_with(
        server_bin(),
        &db,
        &s3,
        &[
            ("DRIFTLESS_KAFKA_BROKERS", kafka.brokers.clone()),
            ("DRIFTLESS_KAFKA_TOPIC", kafka.topic.clone()),
            ("DRIFTLESS_KAFKA_PARTITIONS", "4".into()),
            ("DRIFTLESS_LOG_FORMAT", "json".into()),
            ("DRIFTLESS_SHUTDOWN_GRACE_SECS", "20".into()),
            // One device holds the 20 long-polls of this test.
            ("DRIFTLESS_MAX_LONG_POLLS_PER_DEVICE", "32".into()),
            ("RUST_LOG", "info".into()),
        ],
    )
    .await;
    let token = server
        .admin(&["create-user", "tess", "--device", "laptop"], "")
        .await;
    let token = token.trim().to_owned();
    let api = Api::new(&server.url, &token);
    let (_, v) = api.get("/v1/namespaces").await;
    let ns = v[0]["id"].as_u64().unwrap();
    let (_, cursor) = drain(&api, ns, "").await;

    // 20 long-polls held.
    let polls: Vec<_> = (0..20)
        .map(|_| {
            let url = format!(
                "{}/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout=60",
                server.url
            );
            let token = token.clone();
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.json::<Value>().await.unwrap(),
                    Instant::now(),
                )
            })
        })
        .collect();
    let held_by = Instant::now() + Duration::from_secs(30);
    while scrape(&server.url).await["driftless_long_polls_held"] < 20.0 {
        assert!(
            Instant::now() < held_by,
            "the 20 long-polls were never all held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A commit of 400 files, in flight when SIGTERM comes.
    let contents: Vec<Vec<u8>> = (0..400)
        .map(|i| format!("file number {i} of the shutdown test").into_bytes())
        .collect();
    let files: Vec<_> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| prepare(&format!("batch/{i}.txt"), c, None, &format!("op-{i}")))
        .collect();
    let ops: Vec<FileOp> = files.iter().map(|f| FileOp::Put(f.put.clone())).collect();
    let (status, v) = api
        .post(
            &format!("/v1/namespaces/{ns}/uploads"),
            &json!({"files": ops}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let created: CreatedUpload = serde_json::from_value(v).unwrap();
    let upload_id = created.upload_id.unwrap();
    let mut done = Vec::new();
    for p in pack(&files, &created.needed) {
        let etag = send_part(&api, upload_id.as_str(), &p).await;
        done.push(CompletedPart {
            part_number: p.request.part_number,
            etag,
        });
    }
    let commit = {
        let url = format!("{}/v1/uploads/{upload_id}/commit", server.url);
        let body = serde_json::to_value(CommitRequest { parts: done }).unwrap();
        let token = token.clone();
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = api.get(&format!("/v1/uploads/{upload_id}")).await;
        if v["state"] == "committing" {
            break;
        }
        assert!(
            v["state"] == "open" && Instant::now() < deadline,
            "the commit was not seen running: {v}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let sigterm = Instant::now();
    server.terminate();
    // Every long-poll lets go at once, telling the device to come back soon.
    for p in polls {
        let (status, v, at) = p.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["changed"], false, "{v}");
        assert!(v["backoff_ms"].as_u64().unwrap() <= 2_000, "{v}");
        assert!(
            at.duration_since(sigterm) < Duration::from_secs(3),
            "a long-poll held {:?} past SIGTERM",
            at.duration_since(sigterm)
        );
    }
    // The commit in flight finishes.
    let (status, v) = commit.await.unwrap();
    assert_eq!(status, 200, "{v}");
    let committed: CommitResponse = serde_json::from_value(v).unwrap();
    assert_eq!(committed.results.len(), 400);
    let mut seqs = Vec::new();
    for r in &committed.results {
        match r.outcome {
            Outcome::Committed { seq, .. } => seqs.push(seq.0),
            ref other => panic!("{}: {other:?}", r.path),
        }
    }
    let status = server
        .exited(Duration::from_secs(25))
        .await
        .expect("the server did not exit within its grace");
    assert!(status.success(), "exit status {status}");
    println!(
        "SIGTERM to exit: {:.2?} (20 long-polls, a 400-file commit)",
        sigterm.elapsed()
    );

    // Nothing committed is left unpublished: the relay drained the outbox
    // and the producer flushed before the process exited.
    let unsent = driftless_store::meta::journal::backlog(&db.db)
        .await
        .unwrap();
    assert_eq!(unsent, 0, "outbox rows left unsent at exit");
    let on_topic: std::collections::BTreeSet<u64> = driftless_tests::read_topic(&kafka)
        .await
        .into_iter()
        .map(|(_, _, e)| e.seq.0)
        .collect();
    for s in &seqs {
        assert!(on_topic.contains(s), "seq {s} never reached the topic");
    }

    // Logs: one JSON object per line, the shutdown told, no secret.
    let log = server.log();
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        messages.push(v["message"].as_str().unwrap_or_default().to_owned());
    }
    for want in [
        "SIGTERM received",
        "shutting down: draining long-polls and requests",
        "stopped",
    ] {
        assert!(
            messages.iter().any(|m| m == want),
            "no {want:?} in {messages:?}"
        );
    }
    for secret in [
        s3.config.secret_key.as_str(),
        "a test cursor secret",
        "X-Amz-Signature",
        &token,
    ] {
        assert!(!log.contains(secret), "the log holds a secret");
    }

    // Started again: everything committed is there.
    server.restart().await;
    let (entries, _) = drain(&api, ns, "").await;
    assert_eq!(entries.len(), 400);
}
