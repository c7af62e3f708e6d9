//! A table of bad requests, each with the status and stable code it gets.

use driftless_tests::TestApp;
use serde_json::json;

use crate::client::{Api, prepare};

#[tokio::test]
async fn bad_requests_get_stable_codes() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("erin", Some("correct horse")).await;
    let api = Api::new(&app.url, &token);
    let http = reqwest::Client::new();
    let uploads = format!("{}/v1/namespaces/{ns}/uploads", app.url);

    let good = prepare("ok.txt", b"hello", None, "op-1").put;
    let as_json = |p: &driftless_protocol::PutFile| {
        serde_json::to_value(driftless_protocol::FileOp::Put(p.clone())).unwrap()
    };

    // Whole-request refusals: (what, request, status, code).
    let raw = |body: &'static str, ctype: &'static str| {
        http.post(&uploads)
            .bearer_auth(&token)
            .header("content-type", ctype)
            .body(body)
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("malformed JSON", raw("{\"files\": [", "application/json"), 400, "malformed_json"),
        ("wrong shape", raw("{\"files\": 7}", "application/json"), 400, "malformed_json"),
        ("not JSON content type", raw("{\"files\": []}", "text/plain"), 415, "unsupported_media_type"),
        (
            "malformed hash",
            http.post(&uploads).bearer_auth(&token).json(&json!({"files": [{"op": "put", "op_id": "x", "path": "a", "base_rev": null, "size": 1, "mtime_ms": 0,
                "chunking": {"min": 262144, "avg": 1048576, "max": 4194304}, "chunks": [{"hash": "ABC", "len": 1}], "content_hash": "00"}]})),
            400,
            "hash_malformed",
        ),
        ("oversize body", http.post(&uploads).bearer_auth(&token).header("content-type", "application/json").body(vec![b' '; 17 << 20]), 413, "body_too_large"),
        ("no token", http.post(&uploads).json(&json!({"files": []})), 401, "unauthorized"),
        ("unknown token", http.post(&uploads).bearer_auth("dl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").json(&json!({"files": []})), 401, "unauthorized"),
        ("not a bearer token", http.post(&uploads).header("authorization", "Basic ZXJpbjp4").json(&json!({"files": []})), 401, "unauthorized"),
        ("unknown route", http.get(format!("{}/v1/nope", app.url)).bearer_auth(&token), 404, "not_found"),
        ("wrong method", http.delete(format!("{}/v1/namespaces", app.url)).bearer_auth(&token), 405, "method_not_allowed"),
        (
            "query that does not parse",
            http.get(format!("{}/v1/namespaces/{ns}/changes?cursor=&limit=many", app.url)).bearer_auth(&token),
            400,
            "invalid_request",
        ),
        (
            "query missing its field",
            http.get(format!("{}/v1/namespaces/{ns}/content", app.url)).bearer_auth(&token),
            400,
            "invalid_request",
        ),
        (
            "wrong password",
            http.post(format!("{}/v1/login", app.url)).json(&json!({"user": "erin", "password": "wrong", "device_name": "x"})),
            401,
            "login_failed",
        ),
        (
            "unknown user",
            http.post(format!("{}/v1/login", app.url)).json(&json!({"user": "nobody", "password": "correct horse", "device_name": "x"})),
            401,
            "login_failed",
        ),
    ];
    for (what, req, status, code) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["code"], code, "{what}: {v}");
        assert_eq!(v["status"], status, "{what}");
        assert_eq!(v["type"], format!("urn:driftless:problem:{code}"), "{what}");
    }

    // Per-file refusals inside a batch: the good file still commits.
    let mut traversal = good.clone();
    traversal.path = "../escape.txt".into();
    traversal.op_id = "op-2".parse().unwrap();
    let mut wrong_size = good.clone();
    wrong_size.size = 6;
    wrong_size.path = "size.txt".into();
    wrong_size.op_id = "op-3".parse().unwrap();
    let mut wrong_hash = good.clone();
    wrong_hash.content_hash = driftless_protocol::ContentHash::from_bytes([0; 32]);
    wrong_hash.path = "hash.txt".into();
    wrong_hash.op_id = "op-4".parse().unwrap();
    let mut reserved = good.clone();
    reserved.path = ".driftless/state.db".into();
    reserved.op_id = "op-5".parse().unwrap();
    let mut bad_chunking = good.clone();
    bad_chunking.chunking.min = 3;
    bad_chunking.path = "chunking.txt".into();
    bad_chunking.op_id = "op-6".parse().unwrap();
    let batch = json!({"files": [as_json(&good), as_json(&traversal), as_json(&wrong_size), as_json(&wrong_hash), as_json(&reserved), as_json(&bad_chunking)]});
    let (status, v) = api
        .post(&format!("/v1/namespaces/{ns}/uploads"), &batch)
        .await;
    assert_eq!(status, 200, "{v}");
    let codes: Vec<_> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["code"]
                .as_str()
                .unwrap_or(r["status"].as_str().unwrap())
                .to_owned()
        })
        .collect();
    assert_eq!(
        codes,
        [
            "pending",
            "path_traversal",
            "size_mismatch",
            "hash_mismatch",
            "name_reserved",
            "chunking_invalid"
        ]
    );

    // Login with the right password issues a working token.
    let resp = http
        .post(format!("{}/v1/login", app.url))
        .json(&json!({"user": "erin", "password": "correct horse", "device_name": "phone"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let phone = Api::new(&app.url, v["token"].as_str().unwrap());
    assert_eq!(phone.get("/v1/namespaces").await.0, 200);
}
