//! Another user's namespace and uploads answer exactly like missing ones.

use driftless_protocol::FileOp;
use driftless_tests::TestApp;
use serde_json::json;

use crate::client::{Api, prepare, upload};

#[tokio::test]
async fn other_users_see_nothing() {
    let app = TestApp::spawn().await;
    let (alice_token, alice_ns) = app.user("alice", None).await;
    let (bob_token, bob_ns) = app.user("bob", None).await;
    let alice = Api::new(&app.url, &alice_token);
    let bob = Api::new(&app.url, &bob_token);

    let secret = vec![5u8; 3 << 20];
    let file = prepare("secret.bin", &secret, None, "a-1");
    let (results, _) = upload(&alice, alice_ns, std::slice::from_ref(&file)).await;
    assert_eq!(results[0].outcome.clone(), results[0].outcome);

    // Bob's list shows only his home.
    let (status, v) = bob.get("/v1/namespaces").await;
    assert_eq!(status, 200);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], bob_ns);

    // Probing chunk existence in Alice's namespace, or committing there,
    // answers exactly like a namespace that does not exist.
    let probe = json!({"files": [FileOp::Put(prepare("x", &secret, None, "b-1").put)]});
    let theirs = bob
        .post(&format!("/v1/namespaces/{alice_ns}/uploads"), &probe)
        .await;
    let missing = bob.post("/v1/namespaces/987654321/uploads", &probe).await;
    let garbage = bob
        .post("/v1/namespaces/not-a-number/uploads", &probe)
        .await;
    assert_eq!(theirs.0, 404);
    assert_eq!(theirs, missing);
    assert_eq!(theirs, garbage);

    // Alice's file cannot be downloaded by Bob, by content or manifest.
    let theirs = bob
        .get(&format!(
            "/v1/namespaces/{alice_ns}/manifest?path=secret.bin"
        ))
        .await;
    let missing = bob
        .get("/v1/namespaces/987654321/manifest?path=secret.bin")
        .await;
    assert_eq!(theirs.0, 404);
    assert_eq!(theirs, missing);
    let theirs = bob
        .get(&format!(
            "/v1/namespaces/{alice_ns}/content?path=secret.bin"
        ))
        .await;
    assert_eq!(theirs, missing);
    let own = alice
        .get(&format!(
            "/v1/namespaces/{alice_ns}/manifest?path=secret.bin"
        ))
        .await;
    assert_eq!(own.0, 200);

    // Alice's upload session is invisible to Bob.
    let (_, v) = alice
        .post(
            &format!("/v1/namespaces/{alice_ns}/uploads"),
            &json!({"files": [FileOp::Put(prepare("y", &vec![6u8; 1 << 20], None, "a-2").put)]}),
        )
        .await;
    let id = v["upload_id"].as_str().unwrap().to_owned();
    let theirs = bob.get(&format!("/v1/uploads/{id}")).await;
    let missing = bob
        .get(&format!("/v1/uploads/{alice_ns}-doesnotexist"))
        .await;
    assert_eq!(theirs.0, 404);
    assert_eq!(theirs, missing);
    let theirs = bob
        .post(&format!("/v1/uploads/{id}/commit"), &json!({"parts": []}))
        .await;
    assert_eq!(theirs.0, 404);
}
