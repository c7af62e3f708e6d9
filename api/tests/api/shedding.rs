//! Load shedding: over its limits the server answers 429 with
//! `Retry-After`, and a reconnect storm degrades instead of failing.

use std::time::{Duration, Instant};

use driftless_protocol::*;
use driftless_tests::{AppOptions, TestApp, TestDb};
use tokio::io::AsyncWriteExt;

use crate::changes::drain;
use crate::client::Api;
use crate::ops::scrape;

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
