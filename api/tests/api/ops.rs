//! Operations: `/readyz` per dependency, `/metrics`, load shedding (429
//! with `Retry-After`), graceful shutdown on SIGTERM with JSON logs, and
//! the configuration file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use driftless_protocol::*;
use driftless_tests::{AppOptions, ServerProcess, TestApp, TestBroker, TestDb, TestS3};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::changes::drain;
use crate::client::{Api, pack, prepare, send_part, upload};

fn server_bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_driftless-server"))
}

/// `/metrics` as `name{labels}` → value, checking every line's shape.
async fn scrape(url: &str) -> BTreeMap<String, f64> {
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

/// A request admitted and then held: its head is sent, its body never
/// finishes, so it keeps its place until the connection is dropped.
async fn hold(url: &str, token: &str, ns: u64) -> tokio::net::TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/namespaces/{ns}/uploads HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"files\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

async fn shed_answer(r: reqwest::Response, lo: u64, hi: u64) {
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((lo..=hi).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let p: Problem = r.json().await.unwrap();
    assert_eq!((p.code, p.retryable), (ErrorCode::RateLimited, true));
}

#[tokio::test]
async fn over_its_limits_the_server_answers_429_with_retry_after_and_serves_again_after() {
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            max_in_flight: 2,
            max_long_polls: 2,
            ..AppOptions::default()
        },
    )
    .await;
    let (token, ns) = app.user("ned", None).await;
    let api = Api::new(&app.url, &token);
    let (_, cursor) = drain(&api, ns, "").await;

    // Two requests in progress fill the server.
    let held = [
        hold(&app.url, &token, ns).await,
        hold(&app.url, &token, ns).await,
    ];
    while app.state.admission.available_permits() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = api
        .http
        .get(format!("{}/v1/namespaces", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    shed_answer(r, 1, 5).await;
    // Probes, scrapes and long-polls are not shed.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let r = reqwest::get(format!("{}{probe}", app.url)).await.unwrap();
        assert_eq!(r.status(), 200, "{probe}");
    }
    // Long-polls have their own limit.
    let wait_url = format!(
        "{}/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout=30",
        app.url
    );
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let (url, token) = (wait_url.clone(), token.clone());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
            })
        })
        .collect();
    while app.state.notifier.held() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = api
        .http
        .get(&wait_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    shed_answer(r, 5, 30).await;

    // Room again: served.
    drop(held);
    while app.state.admission.available_permits() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, v) = api.get("/v1/namespaces").await;
    assert_eq!(status, 200, "{v}");
    for p in polls {
        p.abort();
    }
    let m = scrape(&app.url).await;
    assert_eq!(m["driftless_shed_total{kind=\"request\"}"], 1.0);
    assert_eq!(m["driftless_shed_total{kind=\"long_poll\"}"], 1.0);
    assert_eq!(
        m["driftless_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/namespaces\",status=\"429\"}"],
        1.0
    );
}

#[tokio::test]
async fn a_reconnect_storm_is_shed_and_every_device_gets_through_by_waiting_as_told() {
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            max_in_flight: 4,
            ..AppOptions::default()
        },
    )
    .await;
    let (token, ns) = app.user("storm", None).await;
    let api = Api::new(&app.url, &token);
    for i in 0..20 {
        crate::changes::put(&api, ns, &format!("f/{i}.txt"), None, &format!("op-{i}")).await;
    }
    let started = Instant::now();
    let devices: Vec<_> = (0..150)
        .map(|_| {
            let url = format!("{}/v1/namespaces/{ns}/changes?limit=500", app.url);
            let token = token.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut refused = 0u32;
                loop {
                    let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
                    match r.status().as_u16() {
                        200 => {
                            let page: ChangesPage = r.json().await.unwrap();
                            assert_eq!(page.entries.len(), 20);
                            return refused;
                        }
                        429 => {
                            refused += 1;
                            let secs: u64 = r.headers()["retry-after"]
                                .to_str()
                                .unwrap()
                                .parse()
                                .unwrap();
                            tokio::time::sleep(Duration::from_secs(secs)).await;
                        }
                        other => panic!("HTTP {other} in the storm"),
                    }
                }
            })
        })
        .collect();
    let mut refusals = 0;
    for d in devices {
        refusals += d.await.unwrap();
    }
    let took = started.elapsed();
    println!(
        "storm: 150 devices, limit 4 in flight: {refusals} refusals (429), all served in {took:.1?}"
    );
    assert!(
        refusals > 0,
        "a storm of 150 against 4 slots was never shed"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
}

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
    while scrape(&server.url).await["driftless_long_polls_held"] < 20.0 {
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

#[tokio::test]
async fn the_configuration_file_sets_what_the_environment_does_not_and_config_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("driftless.toml");
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             data_dir = \"{}\"\n\
             embedded_s3_listen = \"127.0.0.1:0\"\n\
             database_url = \"postgres://app:hunter2@db.internal/driftless\"\n\
             s3_bucket = \"from-file\"\n\
             s3_secret_key = \"file-secret-key\"\n\
             cors_origins = [\"https://a.example\", \"https://b.example\"]\n\
             max_in_flight = 64\n",
            data.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(server_bin());
        c.args(args);
        for (k, _) in
            std::env::vars().filter(|(k, _)| driftless_api::config::ENV.contains(&k.as_str()))
        {
            c.env_remove(k);
        }
        c.envs(env.iter().copied());
        c.output().unwrap()
    };
    let out = run(
        &["--config", file.to_str().unwrap(), "config", "--json"],
        &[("DRIFTLESS_S3_BUCKET", "from-env")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["DRIFTLESS_S3_BUCKET"],
        json!({"value": "from-env", "source": "env"})
    );
    assert_eq!(
        v["DRIFTLESS_MAX_IN_FLIGHT"],
        json!({"value": "64", "source": "file"})
    );
    assert_eq!(
        v["DRIFTLESS_CORS_ORIGINS"]["value"],
        "https://a.example,https://b.example"
    );
    assert_eq!(v["DRIFTLESS_S3_SECRET_KEY"]["value"], "<redacted>");
    assert_eq!(
        v["DRIFTLESS_DATABASE_URL"]["value"],
        "postgres://app:<redacted>@db.internal/driftless"
    );
    assert_eq!(
        v["DRIFTLESS_KAFKA_BROKERS"],
        json!({"value": null, "source": "default"})
    );
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!all.contains("hunter2") && !all.contains("file-secret-key"));
    // The file holds secrets and others may read it: a warning.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A typo is refused by name, listing what is known.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:1\"\nmax_inflight = 3\n").unwrap();
    let out = run(&["--config", bad.to_str().unwrap(), "config"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown setting \"max_inflight\"") && err.contains("max_in_flight"),
        "{err}"
    );
    // A bad value is refused before anything starts.
    let out = run(
        &["--config", file.to_str().unwrap(), "config"],
        &[("DRIFTLESS_MAX_IN_FLIGHT", "lots")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DRIFTLESS_MAX_IN_FLIGHT"));

    // The server runs on what the file says (the embedded default, no
    // database URL, listening where the file says).
    let served = dir.path().join("served.toml");
    std::fs::write(
        &served,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nembedded_s3_listen = \"127.0.0.1:0\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut c = std::process::Command::new(server_bin());
    for (k, _) in std::env::vars().filter(|(k, _)| driftless_api::config::ENV.contains(&k.as_str()))
    {
        c.env_remove(k);
    }
    let mut child = c
        .args(["serve"])
        .env("DRIFTLESS_CONFIG", &served)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "no server on the file's port");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(data.join("meta.db").exists(), "the file's data_dir is used");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn the_openapi_document_is_served_and_matches_the_routes() {
    let app = TestApp::spawn_sqlite().await;
    let r = reqwest::get(format!("{}/openapi.json", app.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            documented.insert((method.to_uppercase(), path.clone()));
            let tag = op["tags"][0].as_str().unwrap_or_default();
            // Every API operation documents its problem answers and its auth.
            if tag != "operations" {
                assert!(
                    op["responses"]["default"]["content"]["application/problem+json"].is_object(),
                    "{method} {path}: no problem response"
                );
                let needs_token = path != "/v1/login";
                assert_eq!(
                    op["security"][0]["device_token"].is_array(),
                    needs_token,
                    "{method} {path}: security"
                );
            }
        }
    }
    // The protocol's surface, as DESIGN.md names it.
    let expected: std::collections::BTreeSet<(String, String)> = [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/login"),
        ("GET", "/v1/namespaces"),
        ("POST", "/v1/namespaces"),
        ("PUT", "/v1/namespaces/{ns}/members/{user}"),
        ("POST", "/v1/namespaces/{ns}/uploads"),
        ("GET", "/v1/uploads/{id}"),
        ("DELETE", "/v1/uploads/{id}"),
        ("POST", "/v1/uploads/{id}/parts"),
        ("POST", "/v1/uploads/{id}/commit"),
        ("GET", "/v1/namespaces/{ns}/manifest"),
        ("GET", "/v1/namespaces/{ns}/content"),
        ("GET", "/v1/namespaces/{ns}/versions"),
        ("POST", "/v1/namespaces/{ns}/restore"),
        ("GET", "/v1/namespaces/{ns}/changes"),
        ("GET", "/v1/namespaces/{ns}/changes/wait"),
        ("POST", "/v1/namespaces/{ns}/cursor"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(documented, expected);

    // Every documented operation reaches a handler: never the fallback
    // ("no such route") and never 405.
    let http = reqwest::Client::new();
    for (method, path) in &documented {
        let url = format!(
            "{}{}",
            app.url,
            path.replace("{ns}", "1")
                .replace("{id}", "1-none")
                .replace("{user}", "nobody")
        );
        let r = http
            .request(method.parse().unwrap(), &url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}");
        assert!(!body.contains("no such route"), "{method} {path}: {body}");
    }
    // And what is not documented is not routed.
    let r = http
        .get(format!("{}/v1/not-a-route", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let p: Problem = r.json().await.unwrap();
    assert_eq!(p.detail.as_deref(), Some("no such route"));
    let r = http
        .patch(format!("{}/v1/namespaces", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // The router is built from the documented handlers only: no route is
    // added any other way.
    for file in walk(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains(".route(") && !text.contains("axum::routing::"),
            "{} adds a route the OpenAPI document does not see",
            file.display()
        );
    }
    // Every schema the document refers to is in it.
    let text = doc.to_string();
    for (i, _) in text.match_indices("#/components/schemas/") {
        let name: String = text[i + "#/components/schemas/".len()..]
            .chars()
            .take_while(|c| *c != '"')
            .collect();
        assert!(
            doc["components"]["schemas"][&name].is_object(),
            "{name} is referred to but not defined"
        );
    }
}

fn walk(dir: std::path::PathBuf) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(p));
        } else {
            out.push(p);
        }
    }
    out
}
