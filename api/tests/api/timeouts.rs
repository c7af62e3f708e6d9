//! The server's calls to object storage have deadlines: a frozen route to
//! storage costs a commit a retryable error and `/readyz` its readiness,
//! never a hang; once storage answers, the same commit goes through.

use std::time::{Duration, Instant};

use driftless_tests::{AppOptions, TestApp, TestDb};
use serde_json::json;

use crate::client::{Api, begin, send_part};
use crate::uploads::data;

#[tokio::test]
async fn a_frozen_store_costs_a_commit_an_error_and_readiness_never_a_hang() {
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            s3_proxy: Some(Duration::from_secs(2)),
            ..AppOptions::default()
        },
    )
    .await;
    let (token, ns) = app.user("ada", None).await;
    let api = Api::new(&app.url, &token);
    let bytes = data(9 << 20, 3);
    let file = crate::client::prepare("f.bin", &bytes, None, "f-1");
    let (upload, parts) = begin(&api, ns, &file).await;
    let mut done = Vec::new();
    for p in &parts {
        let etag = send_part(&api, upload.as_str(), p).await;
        done.push(json!({"part_number": p.request.part_number, "etag": etag}));
    }
    app.s3_proxy.as_ref().unwrap().freeze();
    let t = Instant::now();
    let resp = api
        .http
        .post(format!("{}/v1/uploads/{upload}/commit", app.url))
        .bearer_auth(&api.token)
        .json(&json!({"parts": done}))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").is_some();
    let v: serde_json::Value = resp.json().await.unwrap();
    eprintln!(
        "commit on a frozen store answered {status} in {:?}",
        t.elapsed()
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    assert_eq!(v["retryable"], true);
    assert!(retry_after, "a 503 says when to come back");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    let t = Instant::now();
    let (status, ready) = api.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // Storage answers again: the retried commit goes through at once (it
    // did not leave the session busy).
    app.s3_proxy.as_ref().unwrap().thaw();
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload}/commit"),
            &json!({"parts": done}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "committed", "{v}");
}
