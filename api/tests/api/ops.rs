//! Operations: `/readyz` per dependency and `/metrics`; the helpers the
//! other operations tests share (the server binary, a checked scrape).

use std::collections::BTreeMap;
use std::time::Duration;

use driftless_protocol::*;
use driftless_tests::TestApp;
use serde_json::{Value, json};

use crate::changes::drain;
use crate::client::{Api, prepare, upload};

pub(crate) fn server_bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_driftless-server"))
}

/// `/metrics` as `name{labels}` → value, checking every line's shape.
pub(crate) async fn scrape(url: &str) -> BTreeMap<String, f64> {
    let r = reqwest::get(format!("{url}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            series.starts_with("driftless_"),
            "unprefixed series {line:?}"
        );
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "series twice: {series}"
        );
    }
    out
}

#[tokio::test]
async fn readyz_checks_the_database_and_object_storage_and_turns_503_when_stopping() {
    let app = TestApp::spawn().await;
    let r = reqwest::get(format!("{}/readyz", app.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"ready": true, "stopping": false, "database": {"ok": true},
               "object_storage": {"ok": true}, "events": {"ok": true}})
    );

    // The same server with its object storage unreachable, then its
    // database closed, then shutting down: 503, naming what failed.
    use tower::ServiceExt;
    let ask = |state: driftless_api::state::AppState| async move {
        let resp = driftless_api::app(state)
            .oneshot(
                axum::http::Request::get("/readyz")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice::<Value>(&body).unwrap())
    };
    let mut no_s3 = app.state.clone();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = app.s3.config.clone();
    config.endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    no_s3.blob = driftless_store::BlobStore::new(&config);
    let (status, v) = ask(no_s3).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["object_storage"]["ok"], false, "{v}");
    assert_eq!(v["database"]["ok"], true, "{v}");
    // Refused at once (one attempt, no retries); the answer does not carry
    // the error (it may name internal hosts).
    assert_eq!(v["object_storage"]["error"], "unavailable", "{v}");
    let error = v["object_storage"]["error"].as_str().unwrap();
    assert!(!error.contains("127.0.0.1"), "{v}");

    let mut no_db = app.state.clone();
    no_db.db = driftless_store::Db::connect(&app.db.url).await.unwrap();
    no_db.db.close().await;
    let (status, v) = ask(no_db).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["database"]["ok"], false, "{v}");

    let stopping = app.state.clone();
    stopping.stopping.cancel();
    let (status, v) = ask(stopping).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(
        (v["stopping"].clone(), v["ready"].clone()),
        (json!(true), json!(false))
    );
}

#[tokio::test]
async fn metrics_count_requests_upload_bytes_outcomes_and_report_backlog_lag_and_reconcile() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("mia", None).await;
    let api = Api::new(&app.url, &token);
    // A reconcile run first: its figures are read from the database.
    let mut reconciler = driftless_consumer::reconcile::Reconciler::new(
        app.state.db.clone(),
        app.state.blob.clone(),
        None,
    );
    let options = driftless_consumer::reconcile::Options::for_deployment(
        Duration::from_secs(3600),
        Duration::from_secs(300),
    );
    reconciler.run_once(&options).await.unwrap();

    let bytes = crate::uploads::data(3 << 20, 5);
    let (results, sent) = upload(&api, ns, &[prepare("a.bin", &bytes, None, "op-a")]).await;
    assert!(matches!(results[0].outcome, Outcome::Committed { .. }));
    assert!(sent > 0);
    // A stale base revision: a conflict.
    let (results, _) = upload(
        &api,
        ns,
        &[prepare("a.bin", b"other", Some(Rev(999)), "op-b")],
    )
    .await;
    assert!(matches!(results[0].outcome, Outcome::Conflict { .. }));
    // One long-poll held while scraping.
    let (_, cursor) = drain(&api, ns, "").await;
    let held = {
        let url = format!(
            "{}/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout=20",
            app.url
        );
        let token = token.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
        })
    };
    while app.state.notifier.held() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let m = scrape(&app.url).await;
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no {k} in {:#?}", m.keys().collect::<Vec<_>>()))
    };
    let uploads = "method=\"POST\",route=\"/v1/namespaces/{ns}/uploads\",status=\"200\"";
    assert_eq!(
        get(&format!(
            "driftless_http_request_duration_seconds_count{{{uploads}}}"
        )),
        2.0
    );
    // Buckets are cumulative and end at the count.
    assert_eq!(
        get(&format!(
            "driftless_http_request_duration_seconds_bucket{{{uploads},le=\"+Inf\"}}"
        )),
        2.0
    );
    assert!(
        get(&format!(
            "driftless_http_request_duration_seconds_bucket{{{uploads},le=\"0.005\"}}"
        )) <= get(&format!(
            "driftless_http_request_duration_seconds_bucket{{{uploads},le=\"60\"}}"
        ))
    );
    assert_eq!(get("driftless_upload_bytes_total"), sent as f64);
    assert_eq!(
        get("driftless_file_operations_total{outcome=\"committed\"}"),
        1.0
    );
    assert_eq!(
        get("driftless_file_operations_total{outcome=\"conflict\"}"),
        1.0
    );
    assert_eq!(get("driftless_long_polls_held"), 1.0);
    assert_eq!(get("driftless_event_stream_healthy"), 1.0);
    assert_eq!(get("driftless_metrics_database_up"), 1.0);
    assert!(get("driftless_outbox_backlog") >= 0.0);
    assert!(get("driftless_consumer_lag_entries{consumer=\"verifier\"}") >= 0.0);
    assert!(get("driftless_reconcile_last_run_timestamp_seconds") > 1.7e9);
    assert_eq!(
        get("driftless_reconcile_drift_found{kind=\"orphan_object\"}"),
        0.0
    );
    // Labels name routes, never ids: the series count stays bounded.
    assert!(
        m.keys().all(|k| !k.contains(&format!("/{ns}/"))),
        "an id in a label"
    );
    held.abort();
}
