//! Presigned multipart uploads against a real SigV4 S3 server: what is signed
//! in is enforced, and the parts S3 reports are the truth.

use std::time::Duration;

use base64::Engine;
use driftless_store::{BlobError, Presigned, pack_key};

use driftless_tests::TestS3;

fn crc32c_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(data).to_be_bytes())
}

async fn send(p: &Presigned, body: Vec<u8>) -> reqwest::Response {
    let client = reqwest::Client::new();
    let mut req = client.request(p.method.parse().unwrap(), &p.url);
    for (k, v) in &p.headers {
        req = req.header(k, v);
    }
    req.body(body).send().await.unwrap()
}

fn etag(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn multipart_round_trip_through_presigned_urls() {
    let s3 = TestS3::start(Duration::from_secs(300)).await;
    let key = pack_key("roundtrip");
    let upload = s3.store.create_multipart(&key).await.unwrap();
    let part1: Vec<u8> = (0..(5 << 20)).map(|i| (i % 251) as u8).collect();
    let part2: Vec<u8> = b"the last part may be small".to_vec();
    let mut done = Vec::new();
    for (n, body) in [(1u32, &part1), (2, &part2)] {
        let crc = crc32c_b64(body);
        let p = s3
            .store
            .presign_upload_part(&key, &upload, n, body.len() as u64, &crc)
            .await
            .unwrap();
        assert_eq!(p.method, "PUT");
        let signed = p
            .url
            .split("X-Amz-SignedHeaders=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned();
        assert!(
            signed.contains("content-length"),
            "content-length not signed: {signed}"
        );
        assert!(
            signed.contains("x-amz-checksum-crc32c"),
            "checksum not signed: {signed}"
        );
        let resp = send(&p, body.clone()).await;
        assert!(resp.status().is_success(), "part {n}: {}", resp.status());
        done.push((n, etag(&resp), crc));
    }
    let listed = s3.store.list_parts(&key, &upload).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|p| (p.part_number, p.size))
            .collect::<Vec<_>>(),
        vec![(1, part1.len() as u64), (2, part2.len() as u64)]
    );
    s3.store
        .complete_multipart(&key, &upload, &done)
        .await
        .unwrap();

    let total = (part1.len() + part2.len()) as u64;
    assert_eq!(s3.store.size(&key).await.unwrap(), Some(total));
    let tail = s3
        .store
        .get_range(&key, part1.len() as u64 - 3, 10)
        .await
        .unwrap();
    let mut expected = part1[part1.len() - 3..].to_vec();
    expected.extend_from_slice(&part2[..7]);
    assert_eq!(&tail[..], &expected[..]);
    // A presigned ranged GET returns exactly the signed range.
    let g = s3.store.presign_get_range(&key, 100, 50).await.unwrap();
    let resp = send(&g, Vec::new()).await;
    assert!(resp.status().is_success());
    assert_eq!(&resp.bytes().await.unwrap()[..], &part1[100..150]);
}

#[tokio::test]
async fn what_is_signed_in_is_enforced() {
    let s3 = TestS3::start(Duration::from_secs(300)).await;
    let key = pack_key("enforced");
    let upload = s3.store.create_multipart(&key).await.unwrap();
    let body = vec![42u8; 1 << 20];
    let crc = crc32c_b64(&body);
    let p = s3
        .store
        .presign_upload_part(&key, &upload, 1, body.len() as u64, &crc)
        .await
        .unwrap();

    // A changed signature.
    let mut tampered = p.clone();
    let sig_at = tampered.url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let flipped = if &tampered.url[sig_at..sig_at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    tampered.url.replace_range(sig_at..sig_at + 1, flipped);
    let status = send(&tampered, body.clone()).await.status();
    assert!(
        status.is_client_error(),
        "tampered signature accepted: {status}"
    );

    // The same URL used for another part number.
    let mut other_part = p.clone();
    other_part.url = other_part.url.replace("partNumber=1", "partNumber=2");
    assert_ne!(other_part.url, p.url);
    let status = send(&other_part, body.clone()).await.status();
    assert!(status.is_client_error(), "URL reused for part 2: {status}");

    // A body of another size than signed.
    let mut short = p.clone();
    for (k, v) in &mut short.headers {
        if k.eq_ignore_ascii_case("content-length") {
            *v = (body.len() - 1).to_string();
        }
    }
    let status = send(&short, body[1..].to_vec()).await.status();
    assert!(status.is_client_error(), "wrong size accepted: {status}");

    // None of these left a part behind.
    assert!(s3.store.list_parts(&key, &upload).await.unwrap().is_empty());
    // The genuine request still works.
    assert!(send(&p, body).await.status().is_success());
    assert_eq!(s3.store.list_parts(&key, &upload).await.unwrap().len(), 1);

    s3.store.abort_multipart(&key, &upload).await.unwrap();
    // Real S3 answers NoSuchUpload; s3s-fs lists no parts. Either way nothing is held.
    match s3.store.list_parts(&key, &upload).await {
        Err(BlobError::NotFound) => {}
        Ok(parts) => assert!(parts.is_empty(), "parts survived the abort: {parts:?}"),
        Err(e) => panic!("list after abort: {e}"),
    }
}

#[tokio::test]
async fn expired_urls_are_refused() {
    let s3 = TestS3::start(Duration::from_secs(1)).await;
    let key = pack_key("expired");
    let upload = s3.store.create_multipart(&key).await.unwrap();
    let body = vec![1u8; 1024];
    let p = s3
        .store
        .presign_upload_part(&key, &upload, 1, 1024, &crc32c_b64(&body))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let status = send(&p, body).await.status();
    assert!(status.is_client_error(), "expired URL accepted: {status}");
    assert!(s3.store.list_parts(&key, &upload).await.unwrap().is_empty());
}

#[tokio::test]
async fn config_debug_hides_the_secret() {
    let s3 = TestS3::start(Duration::from_secs(60)).await;
    let shown = format!("{:?}", s3.config);
    assert!(!shown.contains(&s3.config.secret_key));
    assert!(shown.contains("<redacted>"));
}
