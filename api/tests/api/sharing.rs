//! Shared folders and roles, version history and restore, CORS.

use driftless_protocol::*;
use driftless_tests::TestApp;
use serde_json::json;

use crate::client::{Api, accept, prepare, share, upload};

#[tokio::test]
async fn shared_folders_enforce_roles() {
    let app = TestApp::spawn().await;
    let (alice_token, _) = app.user("alice", None).await;
    let (bob_token, _) = app.user("bob", None).await;
    let (carol_token, _) = app.user("carol", None).await;
    let (alice, bob, carol) = (
        Api::new(&app.url, &alice_token),
        Api::new(&app.url, &bob_token),
        Api::new(&app.url, &carol_token),
    );

    let (status, v) = alice.post("/v1/namespaces", &json!({"name": "team"})).await;
    assert_eq!(status, 201, "{v}");
    let team = v["id"].as_u64().unwrap();
    let doc = vec![7u8; 2 << 20];
    upload(&alice, team, &[prepare("plan.txt", &doc, None, "a-1")]).await;

    // Not shared yet: Bob sees nothing, and sharing is owner-only.
    assert_eq!(
        bob.get(&format!("/v1/namespaces/{team}/manifest?path=plan.txt"))
            .await
            .0,
        404
    );
    assert_eq!(
        share(&carol, team, "bob", "editor").await,
        404,
        "a non-member cannot even see the folder"
    );
    // Sharing says the same whether or not the user exists.
    assert_eq!(share(&alice, team, "nobody", "viewer").await, 202);
    assert_eq!(share(&alice, team, "bob", "admin").await, 400);
    assert_eq!(share(&alice, team, "bob", "viewer").await, 202);
    // An invitation is not a membership until Bob accepts it.
    assert_eq!(
        bob.get(&format!("/v1/namespaces/{team}/manifest?path=plan.txt"))
            .await
            .0,
        404
    );
    accept(&bob, team).await;

    // A viewer reads but cannot write or share.
    let (_, list) = bob.get("/v1/namespaces").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == team && n["role"] == "viewer"),
        "{list}"
    );
    assert_eq!(
        bob.get(&format!("/v1/namespaces/{team}/manifest?path=plan.txt"))
            .await
            .0,
        200
    );
    let attempt = json!({"files": [FileOp::Put(prepare("bob.txt", b"hi", None, "b-1").put)]});
    let (status, v) = bob
        .post(&format!("/v1/namespaces/{team}/uploads"), &attempt)
        .await;
    assert_eq!((status, v["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(share(&bob, team, "carol", "viewer").await, 403);

    // An editor writes.
    assert_eq!(share(&alice, team, "bob", "editor").await, 204);
    let (results, _) = upload(
        &bob,
        team,
        &[prepare("bob.txt", b"hello from bob", None, "b-2")],
    )
    .await;
    assert!(
        matches!(results[0].outcome, Outcome::Committed { .. }),
        "{results:?}"
    );
}

#[tokio::test]
async fn history_and_restore() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("dana", None).await;
    let api = Api::new(&app.url, &token);
    let v1 = b"first draft".to_vec();
    let v2 = b"second draft, much better".to_vec();
    let (r, _) = upload(&api, ns, &[prepare("essay.txt", &v1, None, "e-1")]).await;
    let Outcome::Committed { rev: rev1, .. } = r[0].outcome else {
        panic!("{r:?}")
    };
    let (r, _) = upload(&api, ns, &[prepare("essay.txt", &v2, Some(rev1), "e-2")]).await;
    let Outcome::Committed { rev: rev2, .. } = r[0].outcome else {
        panic!("{r:?}")
    };
    let del = json!({"files": [{"op": "delete", "op_id": "e-3", "path": "essay.txt", "base_rev": rev2.0}]});
    let (_, v) = api
        .post(&format!("/v1/namespaces/{ns}/uploads"), &del)
        .await;
    let rev3 = Rev(v["results"][0]["rev"].as_u64().unwrap());

    let (status, v) = api
        .get(&format!("/v1/namespaces/{ns}/versions?path=essay.txt"))
        .await;
    assert_eq!(status, 200);
    let revs: Vec<(u64, bool, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["rev"].as_u64().unwrap(),
                e["deleted"].as_bool().unwrap(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        revs,
        vec![
            (rev3.0, true, 0),
            (rev2.0, false, v2.len() as u64),
            (rev1.0, false, v1.len() as u64)
        ]
    );
    assert_eq!(
        api.get(&format!("/v1/namespaces/{ns}/content?path=essay.txt"))
            .await
            .0,
        404,
        "deleted"
    );

    // Restoring a deletion makes no sense; restoring from a stale base conflicts.
    let (status, v) = api
        .post(
            &format!("/v1/namespaces/{ns}/restore"),
            &json!({"op_id": "r-0", "path": "essay.txt", "rev": rev3.0, "base_rev": null}),
        )
        .await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_request")));
    let (status, v) = api
        .post(
            &format!("/v1/namespaces/{ns}/restore"),
            &json!({"op_id": "r-1", "path": "essay.txt", "rev": rev1.0, "base_rev": null}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "committed");
    let resp = api
        .http
        .get(format!(
            "{}/v1/namespaces/{ns}/content?path=essay.txt",
            api.url
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        &resp.bytes().await.unwrap()[..],
        &v1[..],
        "the first draft is back, no bytes uploaded"
    );
    let (_, v) = api
        .post(
            &format!("/v1/namespaces/{ns}/restore"),
            &json!({"op_id": "r-2", "path": "essay.txt", "rev": rev2.0, "base_rev": rev1.0}),
        )
        .await;
    assert_eq!(v["status"], "conflict", "{v}");
    assert_eq!(
        api.get(&format!("/v1/namespaces/{ns}/versions?path=nothing.txt"))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/namespaces", app.url),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(
        ok.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("https://app.example")
    );
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
}
