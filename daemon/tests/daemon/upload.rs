//! `upload_file`: parallel parts, only what the server lacks, and a file
//! that changes under the upload is refused rather than sent wrong.

use driftless_daemon::hash::hash_file;
use driftless_daemon::upload::{committed, upload_hashed};
use driftless_daemon::{ApiClient, UploadOptions, upload_file};
use driftless_protocol::{NamespaceId, OpId, Outcome};
use driftless_tests::TestApp;

use driftless_tests::random_bytes as random;

async fn content(app: &TestApp, token: &str, ns: u64, path: &str) -> Vec<u8> {
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/v1/namespaces/{ns}/content?path={path}",
            app.url
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

fn op(s: &str) -> OpId {
    s.parse().unwrap()
}

#[tokio::test]
async fn uploads_in_parallel_parts_and_sends_only_what_is_missing() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("ada", None).await;
    let api = ApiClient::new(&app.url, &token);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("movie.mkv");
    let mut bytes = random(40 << 20, 5);
    std::fs::write(&path, &bytes).unwrap();
    let opts = UploadOptions {
        part_size: 8 << 20,
        concurrency: 3,
        ..UploadOptions::default()
    };

    let r = upload_file(
        &api,
        NamespaceId(ns),
        &path,
        "movie.mkv",
        None,
        op("o1"),
        opts,
    )
    .await
    .unwrap();
    let rev = committed(&r.result).unwrap_or_else(|| panic!("{:?}", r.result));
    assert_eq!((r.size, r.bytes_sent), (40 << 20, 40 << 20));
    assert!(r.parts >= 4, "{} parts", r.parts);
    assert!(content(&app, &token, ns, "movie.mkv").await == bytes);

    // Unchanged content elsewhere: nothing sent.
    let r = upload_file(
        &api,
        NamespaceId(ns),
        &path,
        "copy.mkv",
        None,
        op("o2"),
        opts,
    )
    .await
    .unwrap();
    assert!(committed(&r.result).is_some());
    assert_eq!((r.bytes_sent, r.parts), (0, 0));

    // A small edit: a few chunks.
    bytes[20 << 20] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let r = upload_file(
        &api,
        NamespaceId(ns),
        &path,
        "movie.mkv",
        Some(rev),
        op("o3"),
        opts,
    )
    .await
    .unwrap();
    assert!(committed(&r.result).is_some(), "{:?}", r.result);
    assert!(r.bytes_sent <= 8 << 20, "sent {}", r.bytes_sent);
    assert!(content(&app, &token, ns, "movie.mkv").await == bytes);

    // A stale base revision is a conflict, decided before any byte is sent.
    let stale = random(3 << 20, 6);
    std::fs::write(&path, &stale).unwrap();
    let r = upload_file(
        &api,
        NamespaceId(ns),
        &path,
        "movie.mkv",
        Some(rev),
        op("o4"),
        opts,
    )
    .await
    .unwrap();
    assert!(
        matches!(r.result.outcome, Outcome::Conflict { .. }),
        "{:?}",
        r.result
    );
    assert_eq!(r.bytes_sent, 0);
}

#[tokio::test]
async fn a_file_that_changed_since_it_was_hashed_is_not_sent() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("bea", None).await;
    let api = ApiClient::new(&app.url, &token);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.bin");
    std::fs::write(&path, random(24 << 20, 9)).unwrap();
    let hashed = hash_file(&path, None).unwrap();
    // Same size, other bytes in the middle: only re-reading can tell.
    let mut changed = std::fs::read(&path).unwrap();
    changed[12 << 20] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    let err = upload_hashed(
        &api,
        NamespaceId(ns),
        &path,
        &hashed,
        "log.bin",
        None,
        op("x1"),
        UploadOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("changed while"), "{err}");
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/v1/namespaces/{ns}/content?path=log.bin",
            app.url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "nothing committed");
    let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM upload_sessions WHERE state = 'open'")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert_eq!(open, 0, "the session was aborted");
}
