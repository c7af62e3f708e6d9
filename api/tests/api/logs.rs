//! No secret reaches a log at any level: the embedded server at
//! `RUST_LOG=trace` serves a whole upload and download through presigned
//! URLs, and its log holds no signature, no `Authorization` header and no
//! device token.

use driftless_tests::ServerProcess;

use crate::client::{Api, prepare, upload};
use crate::uploads::{data, download_both_ways};

#[tokio::test]
async fn at_trace_level_the_log_holds_no_presigned_url_signature_or_token() {
    let mut server = ServerProcess::start_embedded(
        std::path::Path::new(env!("CARGO_BIN_EXE_driftless-server")),
        &[("RUST_LOG", "trace".into())],
    )
    .await;
    let token = server
        .admin(&["create-user", "rita", "--device", "laptop"], "")
        .await;
    let token = token.trim().to_owned();
    let api = Api::new(&server.url, &token);
    let (_, v) = api.get("/v1/namespaces").await;
    let ns = v[0]["id"].as_u64().unwrap();
    let bytes = data(12 << 20, 31);
    upload(&api, ns, &[prepare("doc.bin", &bytes, None, "op-doc")]).await;
    download_both_ways(&api, ns, "doc.bin", &bytes).await;
    server.terminate();
    let _ = server.exited(std::time::Duration::from_secs(20)).await;
    let log = server.log();
    assert!(
        log.len() > 10_000,
        "trace logging is on ({} bytes)",
        log.len()
    );
    for secret in [
        "X-Amz-Signature",
        "x-amz-signature",
        "Signature=",
        "authorization: AWS4",
        "Authorization: AWS4",
        "AWS4-HMAC-SHA256 Credential",
        token.as_str(),
    ] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
}
