//! The event stream on a real Kafka-protocol broker (tansu): the relay,
//! the notifier, the verifier's consumer group.

use std::time::{Duration, Instant};

use driftless_tests::{TestApp, TestBroker};
use sqlx::Row;

use crate::changes::{drain, put};
use crate::client::Api;

async fn unsent(app: &TestApp) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn commits_reach_the_topic_and_wake_long_polls_through_kafka() {
    let broker = TestBroker::start().await;
    let app = TestApp::spawn_kafka(&broker).await;
    let (token, ns) = app.user("kim", None).await;
    let api = std::sync::Arc::new(Api::new(&app.url, &token));
    let reader = std::sync::Arc::new(Api::new(&app.url, &app.device("kim", "phone").await));
    put(&api, ns, "seed.txt", None, "s").await;
    let (_, cursor) = drain(&api, ns, "").await;
    let poll = {
        let api = reader.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let r = api
                .get(&format!(
                    "/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout=30"
                ))
                .await;
            (r, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    put(&api, ns, "new.txt", None, "n").await;
    let ((status, v), _) = poll.await.unwrap();
    assert_eq!((status, v["changed"].as_bool()), (200, Some(true)), "{v}");
    println!("woke {:?} after the commit", t.elapsed());
    let deadline = Instant::now() + Duration::from_secs(20);
    while unsent(&app).await > 0 {
        assert!(Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A long-poll from `cursor`; how long it took to answer `changed`.
async fn poll_until_changed(api: &Api, ns: u64, cursor: &str) -> Duration {
    let start = Instant::now();
    let (status, v) = api
        .get(&format!(
            "/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout=60"
        ))
        .await;
    assert_eq!((status, v["changed"].as_bool()), (200, Some(true)), "{v}");
    start.elapsed()
}

#[tokio::test]
async fn with_the_broker_down_commits_succeed_long_polls_poll_and_the_backlog_drains_after() {
    let mut broker = TestBroker::start().await;
    let app = TestApp::spawn_kafka(&broker).await;
    let kafka = match &app.state.events {
        driftless_store::EventBus::Kafka(k) => k.clone(),
        _ => unreachable!(),
    };
    let (token, ns) = app.user("lou", None).await;
    let api = std::sync::Arc::new(Api::new(&app.url, &token));
    let reader = std::sync::Arc::new(Api::new(&app.url, &app.device("lou", "phone").await));
    put(&api, ns, "seed.txt", None, "seed").await;
    wait_until(
        "the seed to be published",
        Duration::from_secs(20),
        async || unsent(&app).await == 0,
    )
    .await;

    broker.kill9();
    wait_until(
        "the notifier to notice",
        Duration::from_secs(30),
        async || !app.state.notifier.healthy(),
    )
    .await;
    // Commits still succeed; each wakes a long-poll within the 1 s journal
    // polling that replaces events while the stream is down.
    for i in 0..5 {
        let (_, cursor) = drain(&api, ns, "").await;
        let poll = {
            let api = reader.clone();
            tokio::spawn(async move { poll_until_changed(&api, ns, &cursor).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        put(
            &api,
            ns,
            &format!("down/{i}.txt"),
            None,
            &format!("down-{i}"),
        )
        .await;
        poll.await.unwrap();
        let woke = t.elapsed();
        assert!(
            woke < Duration::from_secs(3),
            "woke {woke:?} after the commit"
        );
    }
    for i in 0..50 {
        put(
            &api,
            ns,
            &format!("more/{i}.txt"),
            None,
            &format!("more-{i}"),
        )
        .await;
    }
    assert!(
        unsent(&app).await >= 55,
        "nothing reached the stopped broker"
    );

    // The broker returns: the backlog drains, every entry reaches the topic,
    // and long-polls are woken by events again.
    broker.restart().await;
    wait_until(
        "the backlog to drain",
        Duration::from_secs(90),
        async || unsent(&app).await == 0,
    )
    .await;
    wait_until(
        "the notifier to recover",
        Duration::from_secs(30),
        async || app.state.notifier.healthy(),
    )
    .await;
    let on_topic: std::collections::BTreeSet<u64> = driftless_tests::read_topic(&kafka)
        .await
        .into_iter()
        .map(|(_, _, e)| e.seq.0)
        .collect();
    let head = 1 + 5 + 50;
    assert_eq!(
        on_topic,
        (1..=head).collect(),
        "every entry is on the topic"
    );
    let (_, cursor) = drain(&api, ns, "").await;
    let poll = {
        let api = reader.clone();
        tokio::spawn(async move { poll_until_changed(&api, ns, &cursor).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    put(&api, ns, "after.txt", None, "after").await;
    poll.await.unwrap();
    println!("after recovery: woke {:?} after the commit", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "woke {:?} after the commit",
        t.elapsed()
    );
}
