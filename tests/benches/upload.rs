//! Upload throughput through the whole path against a raw S3 multipart
//! upload of the same bytes, and the bytes sent after small edits.
//!
//! Whole path: chunk + hash (read-ahead thread), ask the API what is missing,
//! read the needed chunks again, zstd where it pays, register each part,
//! PUT it to its presigned URL, commit (the API verifies every part against
//! S3 and completes the multipart upload). Baseline: aws-sdk-s3 multipart of
//! the same file to the same S3 server, same part size, same concurrency,
//! CRC32C checksums on both. Interleaved rounds, best of each.
//!
//!   scripts/bench-upload.sh
//!   DRIFTLESS_BENCH_UPLOAD_MIB=512 DRIFTLESS_BENCH_ROUNDS=2 scripts/bench-upload.sh

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use driftless_daemon::upload::committed;
use driftless_daemon::{ApiClient, UploadOptions, upload_file};
use driftless_protocol::{NamespaceId, OpId};
use driftless_tests::TestApp;

const PART: u64 = 16 << 20;
const CONCURRENCY: usize = 4;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Incompressible bytes (like video or archives): the codec stays out of
/// the way, so the comparison is about the upload path itself.
fn write_random(path: &Path, len: u64, seed: u64) {
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.into_inner().unwrap().sync_all().unwrap();
}

fn s3_client(app: &TestApp) -> aws_sdk_s3::Client {
    let c = &app.s3.config;
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(c.region.clone()))
        .endpoint_url(&c.endpoint)
        .credentials_provider(Credentials::new(
            &c.access_key,
            &c.secret_key,
            None,
            None,
            "bench",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The baseline: a plain multipart upload of the file.
async fn raw_multipart(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, path: &Path) -> Duration {
    let start = Instant::now();
    let len = std::fs::metadata(path).unwrap().len();
    let up = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_owned();
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::new();
    for (i, offset) in (0..len).step_by(PART as usize).enumerate() {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let n = PART.min(len - offset);
        let body = ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(aws_sdk_s3::primitives::Length::Exact(n))
            .build()
            .await
            .unwrap();
        let req = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(i as i32 + 1)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(body);
        tasks.push(tokio::spawn(async move {
            let out = req.send().await.unwrap();
            drop(permit);
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(out.e_tag().unwrap())
                .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_owned))
                .build()
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.unwrap());
    }
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let took = start.elapsed();
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    took
}

fn opts() -> UploadOptions {
    UploadOptions {
        part_size: PART,
        concurrency: CONCURRENCY,
        ..UploadOptions::default()
    }
}

async fn user(app: &TestApp, name: &str) -> (ApiClient, NamespaceId) {
    let (token, ns) = app.user(name, None).await;
    (ApiClient::new(&app.url, &token), NamespaceId(ns))
}

fn op(s: &str) -> OpId {
    s.parse().unwrap()
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench());
}

async fn bench() {
    let mib = env_num("DRIFTLESS_BENCH_UPLOAD_MIB", 2048);
    let rounds = env_num("DRIFTLESS_BENCH_ROUNDS", 3);
    let len = mib << 20;
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    write_random(&big, len, 42);
    let s3 = s3_client(&app);
    let bucket = app.s3.config.bucket.clone();

    println!(
        "upload of {mib} MiB (incompressible), parts of {} MiB, {CONCURRENCY} at once, best of {rounds} interleaved rounds",
        PART >> 20
    );
    let mut best_raw = Duration::MAX;
    let mut best_full = Duration::MAX;
    let mut first_user = None;
    for round in 0..rounds {
        best_raw = best_raw.min(raw_multipart(&s3, &bucket, &format!("raw-{round}"), &big).await);
        // A fresh user each round: deduplication is per namespace.
        let (api, ns) = user(&app, &format!("round{round}")).await;
        let start = Instant::now();
        let r = upload_file(
            &api,
            ns,
            &big,
            "big.bin",
            None,
            op(&format!("op-{round}")),
            opts(),
        )
        .await
        .unwrap();
        let took = start.elapsed();
        assert!(committed(&r.result).is_some(), "{:?}", r.result);
        assert_eq!(r.bytes_sent, len, "everything is new");
        best_full = best_full.min(took);
        first_user.get_or_insert((api, ns));
    }
    println!(
        "  raw aws-sdk-s3 multipart     {:>8.0} MB/s",
        mbps(len, best_raw)
    );
    println!(
        "  driftless whole path         {:>8.0} MB/s",
        mbps(len, best_full)
    );
    println!(
        "  whole path / raw multipart   {:>8.2}   (goal >= 0.70)",
        best_raw.as_secs_f64() / best_full.as_secs_f64()
    );

    // The same file again, to another path in the same folder.
    let (api, ns) = first_user.unwrap();
    let start = Instant::now();
    let again = upload_file(&api, ns, &big, "copy.bin", None, op("op-copy"), opts())
        .await
        .unwrap();
    assert!(committed(&again.result).is_some());
    println!(
        "re-upload of the same {mib} MiB: {} bytes sent in {:.2} s (hash only; goal 0 bytes)",
        again.bytes_sent,
        start.elapsed().as_secs_f64()
    );

    // A 1 MiB insert in the middle of a 1 GiB file.
    let gib = (1024u64 << 20).min(len);
    let orig = dir.path().join("doc.bin");
    write_random(&orig, gib, 7);
    let (api, ns) = user(&app, "editor").await;
    let first = upload_file(&api, ns, &orig, "doc.bin", None, op("op-doc-1"), opts())
        .await
        .unwrap();
    let rev = committed(&first.result).unwrap();
    let mut bytes = std::fs::read(&orig).unwrap();
    let insert: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mid = bytes.len() / 2;
    bytes.splice(mid..mid, insert);
    std::fs::write(&orig, &bytes).unwrap();
    let edit = upload_file(
        &api,
        ns,
        &orig,
        "doc.bin",
        Some(rev),
        op("op-doc-2"),
        opts(),
    )
    .await
    .unwrap();
    assert!(committed(&edit.result).is_some(), "{:?}", edit.result);
    println!(
        "1 MiB inserted in the middle of a {} MiB file: {:.2} MiB sent (goal <= 8 MiB)",
        gib >> 20,
        edit.bytes_sent as f64 / (1 << 20) as f64
    );
}
