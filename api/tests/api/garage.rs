//! Against Garage, a production S3 store that enforces what the embedded
//! store (s3s-fs) does not: a part whose bytes do not match the CRC32C
//! signed into its URL is refused at PUT time (not only later by the
//! verifier), an expired or forged URL is refused, and ListParts
//! reports each part's ETag and checksum, which the commit compares with
//! what the client registered.

use std::time::Duration;

use driftless_protocol::*;
use driftless_tests::{AppOptions, GarageCluster, ServerProcess, TestApp, TestDb, TestS3};
use serde_json::json;

use crate::client::{Api, begin, prepare, send_part};
use crate::trust::wrong_etag_refused_then_right_ones_commit;
use crate::uploads::{data, download_both_ways};

async fn on_garage(presign_ttl: Duration) -> TestApp {
    TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            garage: Some(GarageCluster::shared().await),
            presign_ttl,
            ..AppOptions::default()
        },
    )
    .await
}

/// Registers `part` and returns its presigned PUT.
async fn presign(api: &Api, upload: &str, part: &PartRequest) -> PresignedPart {
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload}/parts"),
            &serde_json::to_value(part).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    serde_json::from_value(v).unwrap()
}

/// PUTs `body` to the presigned URL with the headers it signed: the
/// status and body of the answer, or the transport error when the store
/// hung up before taking the whole body (it may refuse on the headers
/// alone and close while the client is still sending).
async fn put(api: &Api, url: &PresignedPart, body: Vec<u8>) -> Result<(u16, String), String> {
    let mut req = api.http.put(&url.url);
    for (k, v) in &url.headers {
        req = req.header(k, v);
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        let resp = req.body(body).send().await.map_err(|e| format!("{e:?}"))?;
        Ok((
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        ))
    })
    .await
    .expect("storage answers a PUT within a minute")
}

#[tokio::test]
async fn storage_refuses_a_part_that_is_not_what_its_url_signed_and_the_right_one_commits() {
    let app = on_garage(Duration::from_secs(300)).await;
    let (token, ns) = app.user("gina", None).await;
    let api = Api::new(&app.url, &token);
    let bytes = data(20 << 20, 21);
    let file = prepare("g.bin", &bytes, None, "op-1");
    let (upload_id, parts) = begin(&api, ns, &file).await;
    assert!(parts.len() >= 2);
    let url = presign(&api, upload_id.as_str(), &parts[0].request).await;

    // One bit flipped in flight: the CRC32C signed into the URL no longer
    // matches, and the store refuses the PUT itself.
    let mut flipped = parts[0].bytes.clone();
    flipped[1000] ^= 0x01;
    // The checksum is known only once the whole body is in: an answer.
    let (status, body) = put(&api, &url, flipped).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("InvalidDigest") || body.contains("BadDigest"),
        "{body}"
    );
    // A tampered signature.
    let mut forged = url.clone();
    let at = forged.url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let c = if &forged.url[at..at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    forged.url.replace_range(at..at + 1, c);
    // Refused on its headers: 403, or the store hangs up mid-body.
    match put(&api, &forged, parts[0].bytes.clone()).await {
        Ok((status, body)) => assert_eq!(status, 403, "{body}"),
        Err(e) => assert!(
            e.contains("BrokenPipe") || e.contains("ConnectionReset"),
            "{e}"
        ),
    }

    // The right bytes go in; a wrong ETag at commit is named in the
    // refusal, the right ones commit, and the file downloads whole.
    wrong_etag_refused_then_right_ones_commit(&api, ns, upload_id.as_str(), &parts, "g.bin").await;
    download_both_ways(&api, ns, "g.bin", &bytes).await;
}

#[tokio::test]
async fn an_expired_presigned_url_is_refused_and_a_fresh_one_works() {
    let app = on_garage(Duration::from_secs(2)).await;
    let (token, ns) = app.user("exp", None).await;
    let api = Api::new(&app.url, &token);
    let bytes = data(1 << 20, 22);
    let file = prepare("e.bin", &bytes, None, "op-1");
    let (upload_id, parts) = begin(&api, ns, &file).await;
    let url = presign(&api, upload_id.as_str(), &parts[0].request).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // S3 answers 403 "Request has expired"; Garage 400 "Date is too old";
    // either may hang up without taking the body.
    match put(&api, &url, parts[0].bytes.clone()).await {
        Ok((status, body)) => {
            assert!([400, 403].contains(&status), "{status}: {body}");
            assert!(
                body.contains("expired") || body.contains("too old"),
                "{body}"
            );
        }
        Err(e) => assert!(
            e.contains("BrokenPipe") || e.contains("ConnectionReset"),
            "{e}"
        ),
    }
    // Registering the part again presigns a fresh URL.
    let etag = send_part(&api, upload_id.as_str(), &parts[0]).await;
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload_id}/commit"),
            &json!({"parts": [{"part_number": 1, "etag": etag}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "committed", "{v}");
}

/// A CORS preflight for `method` on `url` from `origin`: (status, the
/// allowed origin it answers with).
async fn preflight(url: &str, origin: &str, method: &str, headers: &str) -> (u16, Option<String>) {
    let resp = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let allowed = resp
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), allowed)
}

/// Browsers upload and download straight from the page: the server sets
/// the bucket's CORS rule for its allowed origins at start, so a presigned
/// part PUT and a ranged GET pass their preflights from those origins (and
/// the part's ETag is readable by the page), and from no other.
#[tokio::test]
async fn the_server_sets_the_bucket_cors_rule_for_its_browser_origins() {
    let db = TestDb::postgres().await;
    // Made as an operator makes one (a global name): Garage answers the
    // preflights of a bucket only a key's alias names with `*`.
    let s3 = TestS3::on_garage_by_operator(GarageCluster::shared().await, Duration::from_secs(300))
        .await;
    let page = "https://files.example";
    let _server = ServerProcess::start_with(
        std::path::Path::new(env!("CARGO_BIN_EXE_driftless-server")),
        &db,
        &s3,
        &[("DRIFTLESS_CORS_ORIGINS", page.into())],
    )
    .await;

    let body = bytes::Bytes::from_static(b"a part sent from a browser tab");
    let upload = s3.store.create_multipart("packs/cors-probe").await.unwrap();
    let crc = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        crc32c::crc32c(&body).to_be_bytes(),
    );
    let put = s3
        .store
        .presign_upload_part("packs/cors-probe", &upload, 1, body.len() as u64, &crc)
        .await
        .unwrap();
    let signed: Vec<&str> = put.headers.iter().map(|(k, _)| k.as_str()).collect();
    let (status, allowed) = preflight(&put.url, page, "PUT", &signed.join(",")).await;
    assert_eq!((status, allowed.as_deref()), (200, Some(page)));
    let (status, allowed) =
        preflight(&put.url, "https://evil.example", "PUT", &signed.join(",")).await;
    // A browser goes on only after a 2xx preflight (Garage's 403 carries
    // `*` as every error answer does; the status alone stops the page).
    assert!(
        !(200..300).contains(&status),
        "another origin passed the preflight: {status} {allowed:?}"
    );

    // The PUT itself, as the page sends it: the ETag is exposed to it.
    let mut req = reqwest::Client::new().put(&put.url).header("origin", page);
    for (k, v) in &put.headers {
        req = req.header(k, v);
    }
    let resp = req.body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], page);
    assert!(
        h["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("etag"),
        "{h:?}"
    );
    assert!(h.contains_key("etag"));

    // A download's ranged GET from the page.
    s3.store.put("packs/cors-get", body.clone()).await.unwrap();
    let get = s3
        .store
        .presign_get_range("packs/cors-get", 0, body.len() as u64)
        .await
        .unwrap();
    let (status, allowed) = preflight(&get.url, page, "GET", "range").await;
    assert_eq!((status, allowed.as_deref()), (200, Some(page)));
}
