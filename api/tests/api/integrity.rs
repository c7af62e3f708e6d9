//! Trust, then verify: bytes that do not match their chunks are caught by our
//! own re-hash even where S3 accepted them, never served, and repaired by the
//! next upload; expired sessions are aborted in S3.

use std::time::{Duration, Instant};

use driftless_protocol::*;
use driftless_tests::TestApp;
use serde_json::json;
use sqlx::Row;

use crate::changes::drain;
use crate::client::{Api, begin, prepare, seal, send_part, upload};
use crate::uploads::{data, download_both_ways};

/// Waits until the verifier has settled every chunk of the namespace.
async fn settled(app: &TestApp, ns: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: i64 =
            sqlx::query("SELECT COUNT(*) FROM chunks WHERE namespace_id = $1 AND state = 0")
                .bind(ns as i64)
                .fetch_one(app.state.db.pool())
                .await
                .unwrap()
                .get(0);
        if pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pending} chunks still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn corrupt_chunks(app: &TestApp, ns: u64) -> Vec<ChunkHash> {
    sqlx::query("SELECT hash FROM chunks WHERE namespace_id = $1 AND state = 2")
        .bind(ns as i64)
        .fetch_all(app.state.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| ChunkHash::from_bytes(r.get::<Vec<u8>, _>(0).try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn bytes_that_do_not_match_their_chunks_are_caught_never_served_and_repaired() {
    caught_reported_repaired(TestApp::spawn().await).await;
}

#[tokio::test]
async fn bytes_that_do_not_match_their_chunks_are_caught_by_the_verifier_group_on_kafka() {
    let broker = driftless_tests::TestBroker::start().await;
    caught_reported_repaired(TestApp::spawn_kafka(&broker).await).await;
}

async fn caught_reported_repaired(app: TestApp) {
    let (token, ns) = app.user("tess", None).await;
    let api = Api::new(&app.url, &token);
    let (_, start) = drain(&api, ns, "").await;
    let bytes = data(20 << 20, 11);
    let file = prepare("doc.bin", &bytes, None, "op-1");
    let (upload_id, mut parts) = begin(&api, ns, &file).await;
    assert!(parts.len() >= 2);

    // One byte of the first chunk of part 2 flips before the client computes
    // the part's checksum (a bit flip in memory): size and CRC32C agree with
    // the bytes, so no S3 can object. Only the BLAKE3 re-hash can.
    let victim = parts[1].request.chunks[0];
    parts[1].bytes[victim.stored_len as usize / 2] ^= 0x40;
    seal(&mut parts[1]);
    let mut done = Vec::new();
    for p in &parts {
        let etag = send_part(&api, upload_id.as_str(), p).await;
        done.push(json!({"part_number": p.request.part_number, "etag": etag}));
    }
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload_id}/commit"),
            &json!({"parts": done}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "committed", "{v}");
    let rev = v["results"][0]["rev"].as_u64().unwrap();

    settled(&app, ns).await;
    assert_eq!(corrupt_chunks(&app, ns).await, vec![victim.hash]);

    // Reported on the changes feed: a repair entry for the file's revision,
    // with the content hash a device's copy must match to upload it again.
    let (entries, _) = drain(&api, ns, &format!("cursor={start}")).await;
    let repairs: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == ChangeKind::Repair)
        .map(|e| (e.path.as_str(), e.rev, e.content_hash))
        .collect();
    assert_eq!(
        repairs,
        [("doc.bin", Rev(rev), Some(file.put.content_hash))],
        "{entries:?}"
    );

    // Never served: both download paths refuse, naming the chunk.
    for path in ["manifest", "content"] {
        let (status, v) = api
            .get(&format!("/v1/namespaces/{ns}/{path}?path=doc.bin"))
            .await;
        assert_eq!(
            (status, v["code"].as_str()),
            (503, Some("unavailable")),
            "{v}"
        );
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains(&victim.hash.to_string()),
            "{v}"
        );
    }

    // The next upload of the file is asked for that chunk and nothing else.
    let again = prepare("doc.bin", &bytes, Some(Rev(rev)), "op-2");
    let (results, sent) = upload(&api, ns, std::slice::from_ref(&again)).await;
    assert!(
        matches!(results[0].outcome, Outcome::Committed { .. }),
        "{results:?}"
    );
    assert_eq!(sent, u64::from(victim.stored_len));
    settled(&app, ns).await;
    assert!(corrupt_chunks(&app, ns).await.is_empty());
    download_both_ways(&api, ns, "doc.bin", &bytes).await;
}

#[tokio::test]
async fn an_expired_session_is_aborted_in_storage() {
    let app = TestApp::spawn_with_upload_ttl(Duration::from_secs(4)).await;
    let (token, ns) = app.user("uma", None).await;
    let api = Api::new(&app.url, &token);
    let bytes = data(24 << 20, 12);
    let file = prepare("late.bin", &bytes, None, "op-late");
    let (upload_id, parts) = begin(&api, ns, &file).await;
    let etag = send_part(&api, upload_id.as_str(), &parts[0]).await;
    // A URL for part 2, issued while the session was open.
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload_id}/parts"),
            &serde_json::to_value(&parts[1].request).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let late_url: PresignedPart = serde_json::from_value(v).unwrap();

    // The sweeper marks it expired and aborts the multipart upload.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row =
            sqlx::query("SELECT state FROM upload_sessions WHERE namespace_id = $1 AND id = $2")
                .bind(ns as i64)
                .bind(upload_id.as_str())
                .fetch_one(app.state.db.pool())
                .await
                .unwrap();
        if row.get::<String, _>(0) == "expired" {
            break;
        }
        assert!(Instant::now() < deadline, "session never swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pack_state: String =
        sqlx::query("SELECT state FROM packs WHERE namespace_id = $1 AND upload_id = $2")
            .bind(ns as i64)
            .bind(upload_id.as_str())
            .fetch_one(app.state.db.pool())
            .await
            .unwrap()
            .get(0);
    assert_eq!(pack_state, "deleted");

    // S3 no longer has the upload: the still-valid URL is refused.
    let mut put = api.http.put(&late_url.url);
    for (k, v) in &late_url.headers {
        put = put.header(k, v);
    }
    // Refused: a 4xx, or (Garage) the store hangs up on the headers alone
    // while the body is still being sent.
    match put.body(parts[1].bytes.clone()).send().await {
        Ok(resp) => assert!(
            resp.status().is_client_error(),
            "PUT after abort: {}",
            resp.status()
        ),
        Err(e) => {
            let e = format!("{e:?}");
            assert!(
                e.contains("BrokenPipe") || e.contains("ConnectionReset"),
                "PUT after abort: {e}"
            );
        }
    }

    let (status, v) = api.get(&format!("/v1/uploads/{upload_id}")).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("expired")), "{v}");
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload_id}/commit"),
            &json!({"parts": [{"part_number": 1, "etag": etag}]}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (410, Some("upload_expired")),
        "{v}"
    );
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload_id}/parts"),
            &serde_json::to_value(&parts[1].request).unwrap(),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (410, Some("upload_expired")),
        "{v}"
    );
}

/// Bit rot after the verifier passed a chunk: the download checks every
/// chunk as it streams. A bad first chunk is a clean 503 before any header;
/// a bad later one ends the body short of its Content-Length (the client
/// sees it), is marked corrupt on the spot with a repair entry, and the
/// next request is refused before its headers.
#[tokio::test]
async fn a_chunk_that_rots_after_verification_is_caught_while_streaming() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("rot", None).await;
    let api = Api::new(&app.url, &token);
    let bytes = data(12 << 20, 5);
    let file = prepare("big.bin", &bytes, None, "op-1");
    let (results, _) = upload(&api, ns, std::slice::from_ref(&file)).await;
    assert!(matches!(results[0].outcome, Outcome::Committed { .. }));
    settled(&app, ns).await;
    assert!(corrupt_chunks(&app, ns).await.is_empty());
    let (_, start) = drain(&api, ns, "").await;

    // Where the file's last chunk lies in storage.
    let last = *file.put.chunks.last().unwrap();
    assert!(file.put.chunks.len() >= 3);
    let row = sqlx::query(
        "SELECT pack_id, pack_offset, stored_len FROM chunks WHERE namespace_id = $1 AND hash = $2",
    )
    .bind(ns as i64)
    .bind(last.hash.as_bytes().to_vec())
    .fetch_one(app.state.db.pool())
    .await
    .unwrap();
    let (pack, offset, stored): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let key = driftless_store::pack_key(&pack);
    let size = app.state.blob.size(&key).await.unwrap().unwrap();
    let mut whole = app
        .state
        .blob
        .get_range(&key, 0, size)
        .await
        .unwrap()
        .to_vec();
    whole[(offset + stored / 2) as usize] ^= 0x01;
    app.state.blob.put(&key, whole.into()).await.unwrap();

    let url = format!("{}/v1/namespaces/{ns}/content?path=big.bin", app.url);
    let resp = api.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the first chunks are sound");
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, bytes.len());
    // The body stops short of its length: an error, never a whole-looking file.
    assert!(
        resp.bytes().await.is_err(),
        "a short body must not read as whole"
    );

    assert_eq!(corrupt_chunks(&app, ns).await, vec![last.hash]);
    let (entries, _) = drain(&api, ns, &format!("cursor={start}")).await;
    assert!(
        entries
            .iter()
            .any(|e| e.kind == ChangeKind::Repair && e.path == "big.bin"),
        "{entries:?}"
    );
    let (status, v) = api
        .get(&format!("/v1/namespaces/{ns}/content?path=big.bin"))
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
}
