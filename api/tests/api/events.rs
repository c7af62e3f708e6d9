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
    put(&api, ns, "seed.txt", None, "s").await;
    let (_, cursor) = drain(&api, ns, "").await;
    let poll = {
        let api = api.clone();
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
