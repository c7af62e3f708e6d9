//! The OpenAPI document matches the routes.

use driftless_protocol::*;
use driftless_tests::TestApp;
use serde_json::Value;

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
        ("DELETE", "/v1/namespaces/{ns}/members/{user}"),
        ("GET", "/v1/invitations"),
        ("POST", "/v1/invitations/{ns}"),
        ("DELETE", "/v1/invitations/{ns}"),
        ("GET", "/v1/devices"),
        ("DELETE", "/v1/devices/{id}"),
        ("POST", "/v1/logout"),
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
