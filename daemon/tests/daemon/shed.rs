//! A server shedding load (429 with `Retry-After`): the client waits as
//! told and gets through, instead of failing or hammering it.

use std::time::{Duration, Instant};

use driftless_daemon::http::ApiClient;
use driftless_tests::{AppOptions, TestApp, TestDb};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_client_turned_away_waits_out_retry_after_and_gets_through() {
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            max_in_flight: 1,
            ..AppOptions::default()
        },
    )
    .await;
    let (token, ns) = app.user("sam", None).await;
    // The one slot is taken by a request whose body never finishes.
    let addr = app.url.trim_start_matches("http://").to_owned();
    let mut held = tokio::net::TcpStream::connect(&addr).await.unwrap();
    held.write_all(
        format!(
            "POST /v1/namespaces/{ns}/uploads HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    while app.state.admission.available_permits() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = ApiClient::new(&app.url, &token);
    let started = Instant::now();
    let call = tokio::spawn(async move { client.namespaces().await });
    // Turned away at least once, then the slot frees.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    let namespaces = call.await.unwrap().expect("the client got through");
    assert_eq!(namespaces.len(), 1);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "answered in {took:?}: it never waited"
    );
    let shed: u64 = reqwest::get(format!("{}/metrics", app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("driftless_shed_total{kind=\"request\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(shed >= 1);
}
