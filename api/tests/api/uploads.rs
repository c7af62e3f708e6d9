//! Upload → commit → read back, deduplication, moves, and the commit's checks
//! against what S3 really holds.

use driftless_chunker::{Codec, Decoder};
use driftless_protocol::*;
use driftless_store::pack_key;
use driftless_tests::TestApp;
use serde_json::json;
use sqlx::Row;

use crate::client::{Api, begin, prepare, send_part, upload};

pub(crate) fn data(len: usize, seed: u64) -> Vec<u8> {
    // Half random, half text-like: some chunks compress, some do not.
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len / 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("line {i} of the synced document {}\n", i * seed % 977).as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Reads a committed file back from S3 through the chunk locations the
/// server recorded, checking every chunk's BLAKE3.
async fn read_back(app: &TestApp, ns: u64, path: &str) -> Vec<u8> {
    let db = app.state.db.pool();
    let row = sqlx::query("SELECT manifest FROM versions v JOIN files f ON f.namespace_id = v.namespace_id AND f.path = v.path AND f.rev = v.rev WHERE v.namespace_id = $1 AND v.path = $2")
        .bind(ns as i64)
        .bind(path)
        .fetch_one(db)
        .await
        .unwrap();
    let manifest = driftless_store::meta::manifest::Manifest::from_bytes(row.get(0)).unwrap();
    let mut out = Vec::new();
    let mut dec = Decoder::new().unwrap();
    for spec in manifest.specs() {
        let loc = sqlx::query("SELECT pack_id, pack_offset, stored_len, codec FROM chunks WHERE namespace_id = $1 AND hash = $2")
            .bind(ns as i64)
            .bind(spec.hash.as_bytes().to_vec())
            .fetch_one(db)
            .await
            .unwrap();
        let (pack, off, len, codec): (String, i64, i64, i64) =
            (loc.get(0), loc.get(1), loc.get(2), loc.get(3));
        let stored = app
            .s3
            .store
            .get_range(&pack_key(&pack), off as u64, len as u64)
            .await
            .unwrap();
        let codec = if codec == 1 { Codec::Zstd } else { Codec::None };
        let raw = dec.decode(codec, &stored, spec.len as usize).unwrap();
        assert_eq!(
            blake3::hash(raw).as_bytes(),
            spec.hash.as_bytes(),
            "stored chunk does not hash to its name"
        );
        out.extend_from_slice(raw);
    }
    out
}

pub(crate) fn committed(r: &FileResult) -> Rev {
    match r.outcome {
        Outcome::Committed { rev, .. } => rev,
        ref other => panic!("{} not committed: {other:?}", r.path),
    }
}

#[tokio::test]
async fn round_trip_dedup_and_rename_on_postgres() {
    round_trip_dedup_and_rename(TestApp::spawn().await).await;
}

#[tokio::test]
async fn round_trip_dedup_and_rename_on_sqlite() {
    round_trip_dedup_and_rename(TestApp::spawn_sqlite().await).await;
}

async fn round_trip_dedup_and_rename(app: TestApp) {
    let (token, ns) = app.user("alice", None).await;
    let api = Api::new(&app.url, &token);
    let bytes = data(40 << 20, 7);

    let file = prepare("videos/raw.bin", &bytes, None, "op-1");
    let (results, sent) = upload(&api, ns, std::slice::from_ref(&file)).await;
    let rev = committed(&results[0]);
    assert!(
        sent > 8 << 20 && sent < bytes.len() as u64,
        "multi-part, partly compressed upload: sent {sent}"
    );
    let back = read_back(&app, ns, "videos/raw.bin").await;
    assert!(back == bytes, "bytes read back differ");
    download_both_ways(&api, ns, "videos/raw.bin", &bytes).await;

    // The same content again (another path): nothing is sent.
    let again = prepare("backup/raw-copy.bin", &bytes, None, "op-2");
    let (results, sent) = upload(&api, ns, &[again]).await;
    committed(&results[0]);
    assert_eq!(sent, 0, "identical content must upload 0 bytes");

    // A rename is a move: 0 bytes, the content follows.
    let mv = json!({"files": [{"op": "move", "op_id": "op-3", "from": "videos/raw.bin", "from_rev": rev.0, "to": "videos/renamed.bin", "base_rev": null}]});
    let (status, v) = api.post(&format!("/v1/namespaces/{ns}/uploads"), &mv).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["upload_id"], serde_json::Value::Null);
    assert_eq!(v["results"][0]["status"], "committed", "{v}");
    assert!(read_back(&app, ns, "videos/renamed.bin").await == bytes);

    // A 1 MiB insert in the middle re-sends only the chunks around it.
    let mut edited = bytes.clone();
    let insert = data(1 << 20, 99);
    edited.splice(20 << 20..20 << 20, insert);
    let new_rev = results_rev(&api, ns, "backup/raw-copy.bin").await;
    let edit = prepare("backup/raw-copy.bin", &edited, Some(new_rev), "op-4");
    let (results, sent) = upload(&api, ns, &[edit]).await;
    committed(&results[0]);
    assert!(sent <= 8 << 20, "a 1 MiB insert sent {sent} bytes");
    assert!(read_back(&app, ns, "backup/raw-copy.bin").await == edited);
}

async fn results_rev(api: &Api, ns: u64, path: &str) -> Rev {
    // No listing API yet: the head revision comes from a deliberate conflict.
    let probe = prepare(path, b"probe", None, &format!("probe-{}", path.len()));
    let (status, v) = api
        .post(
            &format!("/v1/namespaces/{ns}/uploads"),
            &json!({"files": [FileOp::Put(probe.put)]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "conflict", "{v}");
    Rev(v["results"][0]["current_rev"].as_u64().unwrap())
}

#[tokio::test]
async fn commit_checks_parts_against_storage() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("bob", None).await;
    let api = Api::new(&app.url, &token);
    let bytes = data(20 << 20, 3);
    let file = prepare("big.bin", &bytes, None, "op-a");
    let (upload_id, parts) = begin(&api, ns, &file).await;
    assert!(parts.len() >= 2, "need several parts, got {}", parts.len());

    // Only the first part is PUT; the commit names the missing one.
    let etag = send_part(&api, upload_id.as_str(), &parts[0]).await;
    for p in &parts[1..] {
        let (status, _) = api
            .post(
                &format!("/v1/uploads/{upload_id}/parts"),
                &serde_json::to_value(&p.request).unwrap(),
            )
            .await;
        assert_eq!(status, 200);
    }
    let commit = json!({"parts": [{"part_number": 1, "etag": etag}]});
    let (status, v) = api
        .post(&format!("/v1/uploads/{upload_id}/commit"), &commit)
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (422, Some("part_missing")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("part 2"), "{v}");

    // Status asks S3: part 1 stored, the others not, their chunks still needed.
    let (status, v) = api.get(&format!("/v1/uploads/{upload_id}")).await;
    assert_eq!(status, 200);
    let st: UploadStatus = serde_json::from_value(v).unwrap();
    assert_eq!(st.state, UploadState::Open);
    assert!(st.parts[0].stored && st.parts[1..].iter().all(|p| !p.stored));
    let later: Vec<_> = parts[1..]
        .iter()
        .flat_map(|p| p.request.chunks.iter().map(|c| c.hash))
        .collect();
    assert_eq!(st.needed, later);

    // Part 1 re-registered with another size but not re-sent: S3 holds the old size.
    let mut resized = parts[0].request.clone();
    resized.chunks.pop();
    resized.size = resized.chunks.iter().map(|c| u64::from(c.stored_len)).sum();
    let (status, _) = api
        .post(
            &format!("/v1/uploads/{upload_id}/parts"),
            &serde_json::to_value(&resized).unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    let mut etags = vec![json!({"part_number": 1, "etag": etag})];
    for p in &parts[1..] {
        let e = send_part(&api, upload_id.as_str(), p).await;
        etags.push(json!({"part_number": p.request.part_number, "etag": e}));
    }
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload_id}/commit"),
            &json!({"parts": etags}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (422, Some("part_size_mismatch")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("part 1"), "{v}");

    // Nothing was committed by the failed commits.
    let journal: i64 = sqlx::query("SELECT COUNT(*) FROM journal WHERE namespace_id = $1")
        .bind(ns as i64)
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(journal, 0);

    // Part 1 re-sent as registered: now it commits, and a retried commit agrees.
    // (Its checksum is the shorter body's: S3 checks the signed CRC32C.)
    let mut shorter = crate::client::PartBody {
        request: resized.clone(),
        bytes: parts[0].bytes[..resized.size as usize].to_vec(),
    };
    crate::client::seal(&mut shorter);
    let etag = send_part(&api, upload_id.as_str(), &shorter).await;
    etags[0] = json!({"part_number": 1, "etag": etag});
    let (status, first) = api
        .post(
            &format!("/v1/uploads/{upload_id}/commit"),
            &json!({"parts": etags}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    // The chunk dropped from part 1 is in no part: that file cannot commit.
    assert_eq!(first["results"][0]["status"], "error", "{first}");
    assert_eq!(first["results"][0]["code"], "chunk_missing", "{first}");
    let (status, again) = api
        .post(
            &format!("/v1/uploads/{upload_id}/commit"),
            &json!({"parts": etags}),
        )
        .await;
    assert_eq!((status, &again), (200, &first));
}

/// Downloads through both paths: the streaming endpoint (with ranges) and the
/// manifest's presigned ranged GETs, decoded and verified like a client does.
pub(crate) async fn download_both_ways(api: &Api, ns: u64, path: &str, expected: &[u8]) {
    let url = format!("{}/v1/namespaces/{ns}/content?path={path}", api.url);
    let resp = api
        .http
        .get(&url)
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    assert!(
        resp.bytes().await.unwrap() == expected,
        "full content differs"
    );
    let size = expected.len();
    for (range, from, to) in [
        ("bytes=100-199".to_string(), 100, 200),
        (format!("bytes={}-", size - 10), size - 10, size),
        ("bytes=-5".to_string(), size - 5, size),
        (
            format!("bytes={}-{}", (4 << 20) - 3, (9 << 20) + 2),
            (4 << 20) - 3,
            (9 << 20) + 3,
        ),
    ] {
        let resp = api
            .http
            .get(&url)
            .bearer_auth(&api.token)
            .header("range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes {from}-{}/{size}", to - 1).as_str(),
            "{range}"
        );
        assert!(
            resp.bytes().await.unwrap() == expected[from..to],
            "{range}: wrong bytes"
        );
    }
    let resp = api
        .http
        .get(&url)
        .bearer_auth(&api.token)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (&v["status"], &v["code"]),
        (&json!(416), &json!("range_not_satisfiable"))
    );
    // A Range the server does not understand is ignored (RFC 9110): the
    // whole file, never an error.
    for bad in ["bytes=x-y", "bytes=9-3", "lines=1-2"] {
        let resp = api
            .http
            .get(&url)
            .bearer_auth(&api.token)
            .header("range", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{bad}");
        assert!(resp.bytes().await.unwrap() == expected, "{bad}");
    }
    // If-Range: the range only for the version the client has part of;
    // another version answers the whole file, never a mix of two.
    let etag = api
        .http
        .get(&url)
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    for (cond, status, body) in [
        (etag.as_str(), 206, &expected[..10]),
        ("\"an-older-version\"", 200, expected),
    ] {
        let resp = api
            .http
            .get(&url)
            .bearer_auth(&api.token)
            .header("range", "bytes=0-9")
            .header("if-range", cond)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "If-Range {cond}");
        assert!(resp.bytes().await.unwrap() == body, "If-Range {cond}");
    }

    let (status, v) = api
        .get(&format!("/v1/namespaces/{ns}/manifest?path={path}"))
        .await;
    assert_eq!(status, 200, "{v}");
    let m: DownloadManifest = serde_json::from_value(v).unwrap();
    let mut raw_by_hash = std::collections::HashMap::new();
    let mut dec = Decoder::new().unwrap();
    for r in &m.ranges {
        let mut req = api.http.get(&r.url);
        for (k, v) in &r.headers {
            req = req.header(k, v);
        }
        let body = req.send().await.unwrap().bytes().await.unwrap();
        assert_eq!(body.len() as u64, r.length);
        for c in &r.chunks {
            let stored = &body[c.at as usize..][..c.stored_len as usize];
            let codec = if c.codec == StoredCodec::Zstd {
                Codec::Zstd
            } else {
                Codec::None
            };
            let raw = dec
                .decode(codec, stored, c.raw_len as usize)
                .unwrap()
                .to_vec();
            assert_eq!(blake3::hash(&raw).as_bytes(), c.hash.as_bytes());
            raw_by_hash.insert(c.hash, raw);
        }
    }
    let mut rebuilt = Vec::with_capacity(size);
    for c in &m.chunks {
        assert_eq!(c.offset as usize, rebuilt.len());
        rebuilt.extend_from_slice(&raw_by_hash[&c.hash]);
    }
    assert!(rebuilt == expected, "manifest download differs");
    assert!(
        m.ranges.len() < m.chunks.len(),
        "adjacent chunks must be coalesced ({} ranges for {} chunks)",
        m.ranges.len(),
        m.chunks.len()
    );
}

/// Each operation of a batch sees the ones before it: a delete frees its
/// path for a new file sent later in the same batch, a stale base is
/// refused before any byte is sent, and a put whose chunks are stored
/// already commits at once, in order with the others.
#[tokio::test]
async fn a_batch_applies_in_order_with_its_early_checks() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("orderly", None).await;
    let api = Api::new(&app.url, &token);
    let one = data(300_000, 1);
    let (r, _) = upload(&api, ns, &[prepare("a.txt", &one, None, "first-a")]).await;
    let rev_a = committed(&r[0]);
    let two = data(200_000, 2);
    let (r, _) = upload(&api, ns, &[prepare("b.txt", &two, None, "first-b")]).await;
    let rev_b = committed(&r[0]);

    let new_a = data(250_000, 3);
    let new_a = prepare("a.txt", &new_a, None, "new-a");
    let new_b = data(260_000, 4);
    let new_b = prepare("b.txt", &new_b, Some(Rev(rev_b.0 - 1)), "stale-b");
    let copy = prepare("c.txt", &one, None, "copy-c");
    let ops = vec![
        FileOp::Delete {
            op_id: "delete-a".parse().unwrap(),
            path: "a.txt".into(),
            base_rev: rev_a,
        },
        FileOp::Put(new_a.put.clone()),
        FileOp::Put(new_b.put.clone()),
        FileOp::Put(copy.put.clone()),
    ];
    let (status, v) = api
        .post(
            &format!("/v1/namespaces/{ns}/uploads"),
            &json!({ "files": ops }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let created: CreatedUpload = serde_json::from_value(v).unwrap();
    let outcomes: Vec<&Outcome> = created.results.iter().map(|r| &r.outcome).collect();
    assert!(
        matches!(outcomes[0], Outcome::Committed { .. }),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[1],
        &Outcome::Pending,
        "the delete before it freed a.txt"
    );
    assert_eq!(
        outcomes[2],
        &Outcome::Conflict {
            current_rev: Some(rev_b)
        }
    );
    assert!(
        matches!(outcomes[3], Outcome::Committed { .. }),
        "{outcomes:?}"
    );
    // The session holds only what the pending put needs.
    let wanted: std::collections::HashSet<ChunkHash> =
        new_a.put.chunks.iter().map(|c| c.hash).collect();
    assert!(created.needed.iter().all(|h| wanted.contains(h)));
    let upload_id = created.upload_id.unwrap();
    let mut done = Vec::new();
    for p in &crate::client::pack(std::slice::from_ref(&new_a), &created.needed) {
        done.push(CompletedPart {
            part_number: p.request.part_number,
            etag: send_part(&api, upload_id.as_str(), p).await,
        });
    }
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload_id}/commit"),
            &serde_json::to_value(CommitRequest { parts: done }).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let done: CommitResponse = serde_json::from_value(v).unwrap();
    let rev = committed(&done.results[0]);
    assert!(rev > rev_b);
    assert_eq!(read_back(&app, ns, "a.txt").await, data(250_000, 3));
}
