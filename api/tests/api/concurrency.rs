//! Racing clients over HTTP: of 20 commits on one base revision exactly one
//! wins and the others are told the current revision; 100 concurrent retries
//! of one operation make one version and get one answer.

use std::sync::Arc;

use driftless_protocol::*;
use driftless_tests::TestApp;
use serde_json::{Value, json};

use crate::client::{Api, prepare, upload};
use crate::uploads::{committed, data};

#[tokio::test]
async fn twenty_racing_commits_one_wins_and_a_hundred_retries_make_one_version() {
    // One user sending 120 requests at once: above the default per-user
    // limit, which this test is not about.
    let app = TestApp::spawn_configured(
        driftless_tests::TestDb::postgres().await,
        driftless_tests::AppOptions {
            max_in_flight_per_user: 1_000,
            ..driftless_tests::AppOptions::default()
        },
    )
    .await;
    let (token, ns) = app.user("quinn", None).await;
    let api = Arc::new(Api::new(&app.url, &token));

    // Twenty contents already stored, so each racing put commits at once.
    let contents: Vec<Vec<u8>> = (0..20).map(|i| data(3000, 100 + i)).collect();
    let stored: Vec<_> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| prepare(&format!("src/{i}.txt"), c, None, &format!("seed-{i}")))
        .collect();
    let (results, _) = upload(&api, ns, &stored).await;
    results.iter().for_each(|r| {
        committed(r);
    });
    let (results, _) = upload(&api, ns, &[prepare("a.txt", b"v1", None, "op-v1")]).await;
    let base = committed(&results[0]);

    let racers: Vec<_> = contents
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let api = api.clone();
            let put = prepare("a.txt", c, Some(base), &format!("race-{i}")).put;
            tokio::spawn(async move {
                let (status, v) = api
                    .post(
                        &format!("/v1/namespaces/{ns}/uploads"),
                        &json!({"files": [FileOp::Put(put)]}),
                    )
                    .await;
                assert_eq!(status, 200, "{v}");
                assert_eq!(v["upload_id"], Value::Null, "nothing to upload: {v}");
                serde_json::from_value::<FileResult>(v["results"][0].clone()).unwrap()
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for r in racers {
        match r.await.unwrap().outcome {
            Outcome::Committed { rev, .. } => winners.push(rev),
            Outcome::Conflict { current_rev } => {
                assert!(current_rev > Some(base), "a loser learns the new revision");
                conflicts += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((winners.len(), conflicts), (1, 19));

    // One operation sent 100 times at once: one version, one answer.
    let put = prepare("b.txt", &contents[0], None, "op-retried").put;
    let retries: Vec<_> = (0..100)
        .map(|_| {
            let api = api.clone();
            let put = put.clone();
            tokio::spawn(async move {
                api.post(
                    &format!("/v1/namespaces/{ns}/uploads"),
                    &json!({"files": [FileOp::Put(put)]}),
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for r in retries {
        let (status, v) = r.await.unwrap();
        assert_eq!(status, 200, "{v}");
        answers.push(v["results"][0].clone());
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(answers[0]["status"], "committed");
    let (status, v) = api
        .get(&format!("/v1/namespaces/{ns}/versions?path=b.txt"))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
}
