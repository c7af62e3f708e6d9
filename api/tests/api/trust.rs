//! What one member's uploads may make other members' files hold: only
//! bytes someone proved. A chunk uploaded as garbage under a hash cannot
//! take the place of an honest upload of that hash (the first *verified*
//! copy wins); a session cannot commit chunks it neither uploaded nor may
//! reuse; a chunk named with another length than stored is refused (and a
//! version that does so is never served); a file is bounded in size.

use driftless_protocol::*;
use driftless_tests::TestApp;
use serde_json::json;

use crate::client::{Api, pack, prepare, send_part, team_folder, upload};
use crate::uploads::data;

/// Uploads `parts` into a session for `put` and commits; returns the
/// commit's per-file results.
async fn commit_parts(
    api: &Api,
    upload_id: &str,
    parts: &[crate::client::PartBody],
) -> serde_json::Value {
    let mut done = Vec::new();
    for p in parts {
        let etag = send_part(api, upload_id, p).await;
        done.push(json!({"part_number": p.request.part_number, "etag": etag}));
    }
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload_id}/commit"),
            &json!({"parts": done}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Mallory uploads garbage under the chunk hashes of `honest`, as parts of
/// a put he lets conflict (he creates its path elsewhere before the
/// commit), so no file of his names them.
async fn upload_garbage_as(mallory: &Api, ns: u64, honest: &crate::client::Prepared<'_>) {
    let mut put = honest.put.clone();
    let path = format!("race-{}", honest.put.op_id.as_str());
    put.op_id = format!("mallory-{}", honest.put.op_id.as_str())
        .parse()
        .unwrap();
    put.path = path.clone();
    let (status, v) = mallory
        .post(
            &format!("/v1/namespaces/{ns}/uploads"),
            &json!({"files": [FileOp::Put(put)]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let created: CreatedUpload = serde_json::from_value(v).unwrap();
    let id = created.upload_id.expect("the chunks are new to the folder");
    let garbage: Vec<Vec<u8>> = honest.chunks.iter().map(|c| vec![0x5a; c.len()]).collect();
    let fake = crate::client::Prepared {
        put: honest.put.clone(),
        chunks: garbage.iter().map(Vec::as_slice).collect(),
    };
    let parts = pack(std::slice::from_ref(&fake), &created.needed);
    let op = format!("mallory-race-{}", honest.put.op_id.as_str());
    upload(mallory, ns, &[prepare(&path, b"first", None, &op)]).await;
    let v = commit_parts(mallory, id.as_str(), &parts).await;
    assert_eq!(v["results"][0]["status"], "conflict", "{v}");
}

async fn content(api: &Api, ns: u64, path: &str) -> (u16, Vec<u8>) {
    let resp = api
        .http
        .get(format!(
            "{}/v1/namespaces/{ns}/content?path={path}",
            api.url
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn garbage_uploaded_under_a_hash_never_wins_over_an_honest_upload() {
    let app = TestApp::spawn().await;
    let (alice_token, _) = app.user("alice", None).await;
    let (mallory_token, _) = app.user("mallory", None).await;
    let alice = Api::new(&app.url, &alice_token);
    let mallory = Api::new(&app.url, &mallory_token);
    let ns = team_folder(&alice, "team", &[("mallory", &mallory)]).await;

    // Mallory first, Alice second.
    let report = data(3 << 20, 41);
    let honest = prepare("report.bin", &report, None, "a-1");
    upload_garbage_as(&mallory, ns, &honest).await;
    let (results, sent) = upload(&alice, ns, &[prepare("report.bin", &report, None, "a-1")]).await;
    assert!(
        matches!(results[0].outcome, Outcome::Committed { .. }),
        "{results:?}"
    );
    assert!(sent > 0, "Alice sent her own copy");
    assert_eq!(
        content(&alice, ns, "report.bin").await,
        (200, report.clone())
    );

    // Alice first, Mallory second: his garbage does not replace her copy.
    let notes = data(2 << 20, 42);
    let (results, _) = upload(&alice, ns, &[prepare("notes.bin", &notes, None, "a-2")]).await;
    assert!(
        matches!(results[0].outcome, Outcome::Committed { .. }),
        "{results:?}"
    );
    upload_garbage_as(&mallory, ns, &prepare("notes.bin", &notes, None, "a-2")).await;
    assert_eq!(content(&alice, ns, "notes.bin").await, (200, notes.clone()));
    // Another member's later upload of the same bytes reuses the good copy.
    let (results, _) = upload(&mallory, ns, &[prepare("copy.bin", &notes, None, "m-2")]).await;
    assert!(
        matches!(results[0].outcome, Outcome::Committed { .. }),
        "{results:?}"
    );
    assert_eq!(content(&alice, ns, "copy.bin").await, (200, notes));
}

#[tokio::test]
async fn a_session_cannot_commit_chunks_it_neither_uploaded_nor_may_reuse() {
    let app = TestApp::spawn().await;
    let (alice_token, _) = app.user("alice", None).await;
    let (mallory_token, _) = app.user("mallory", None).await;
    let alice = Api::new(&app.url, &alice_token);
    let mallory = Api::new(&app.url, &mallory_token);
    let ns = team_folder(&alice, "team", &[("mallory", &mallory)]).await;
    let bytes = data(1 << 20, 43);
    let honest = prepare("x.bin", &bytes, None, "x-1");
    upload_garbage_as(&mallory, ns, &honest).await;

    // Alice's session needs the chunks; she commits without sending them.
    let (status, v) = alice
        .post(
            &format!("/v1/namespaces/{ns}/uploads"),
            &json!({"files": [FileOp::Put(honest.put.clone())]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let created: CreatedUpload = serde_json::from_value(v).unwrap();
    assert!(!created.needed.is_empty());
    let id = created.upload_id.unwrap();
    let v = commit_parts(&alice, id.as_str(), &[]).await;
    assert_eq!(v["results"][0]["status"], "error", "{v}");
    assert_eq!(v["results"][0]["code"], "chunk_missing", "{v}");
    // Nothing points at Mallory's bytes.
    assert_eq!(content(&alice, ns, "x.bin").await.0, 404);
}

#[tokio::test]
async fn a_chunk_length_that_is_not_the_stored_one_is_refused_and_never_served() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("alice", None).await;
    let api = Api::new(&app.url, &token);
    let small = data(1000, 44);
    upload(&api, ns, &[prepare("small.bin", &small, None, "s-1")]).await;

    // The same chunk named as 2,000 bytes (content hash computed to match).
    let mut lie = prepare("lie.bin", &small, None, "l-1").put;
    lie.chunks[0].len = 2000;
    lie.size = 2000;
    let p = driftless_chunker::ChunkParams::DEFAULT;
    lie.content_hash = ContentHash::from_bytes(driftless_chunker::content_hash(
        p,
        lie.chunks.iter().map(|c| (c.hash.as_bytes(), c.len)),
    ));
    let (status, v) = api
        .post(
            &format!("/v1/namespaces/{ns}/uploads"),
            &json!({"files": [FileOp::Put(lie.clone())]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["code"], "size_mismatch", "{v}");

    // A version written that way before commits checked it (forged in the
    // database here) is refused with a problem document, never served.
    use sqlx::Row;
    let row =
        sqlx::query("SELECT manifest FROM versions WHERE namespace_id = $1 AND path = 'small.bin'")
            .bind(ns as i64)
            .fetch_one(app.state.db.pool())
            .await
            .unwrap();
    let mut manifest: Vec<u8> = row.get(0);
    manifest[32..36].copy_from_slice(&2000u32.to_le_bytes());
    sqlx::query("UPDATE versions SET manifest = $1, size = 2000 WHERE namespace_id = $2 AND path = 'small.bin'")
        .bind(manifest)
        .bind(ns as i64)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    for what in ["manifest", "content"] {
        let resp = api
            .http
            .get(format!(
                "{}/v1/namespaces/{ns}/{what}?path=small.bin",
                api.url
            ))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 500, "{what}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_file_larger_than_the_server_allows_is_refused_before_any_byte() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("alice", None).await;
    let api = Api::new(&app.url, &token);
    // One 4 MiB chunk of zeros, stored once (a few hundred bytes in S3)...
    let zeros = vec![0u8; 4 << 20];
    let one = prepare("zeros.bin", &zeros, None, "z-1");
    assert_eq!(one.put.chunks.len(), 1);
    upload(&api, ns, &[prepare("zeros.bin", &zeros, None, "z-1")]).await;
    // ...named 20,000 times: an 80 GiB file from a 1 MiB request.
    let mut bomb = one.put.clone();
    bomb.op_id = "bomb-1".parse().unwrap();
    bomb.path = "bomb.bin".into();
    bomb.chunks = vec![one.put.chunks[0]; 20_000];
    bomb.size = 20_000 * (4 << 20);
    bomb.content_hash = ContentHash::from_bytes(driftless_chunker::content_hash(
        driftless_chunker::ChunkParams::DEFAULT,
        bomb.chunks.iter().map(|c| (c.hash.as_bytes(), c.len)),
    ));
    let (status, v) = api
        .post(
            &format!("/v1/namespaces/{ns}/uploads"),
            &json!({"files": [FileOp::Put(bomb)]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["code"], "file_too_large", "{v}");
    assert_eq!(content(&api, ns, "bomb.bin").await.0, 404);
}

/// The commit names each part's ETag (what its PUT returned); storage says
/// what it holds. A commit naming another ETag than the one stored is
/// refused, naming the part, and nothing is committed; the right one then
/// commits.
#[tokio::test]
async fn a_commit_naming_another_etag_than_storage_holds_is_refused() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("etag", None).await;
    let api = Api::new(&app.url, &token);
    let bytes = data(20 << 20, 3);
    let file = prepare("e.bin", &bytes, None, "op-1");
    let (upload_id, parts) = crate::client::begin(&api, ns, &file).await;
    assert!(parts.len() >= 2);
    wrong_etag_refused_then_right_ones_commit(&api, ns, upload_id.as_str(), &parts, "e.bin").await;
}

/// Sends `parts` of the one-file upload `upload_id` (for `path`), then
/// commits naming a wrong ETag for the second part: refused as
/// `part_checksum_mismatch` naming that part, nothing committed; then the
/// right ETags commit.
pub(crate) async fn wrong_etag_refused_then_right_ones_commit(
    api: &Api,
    ns: u64,
    upload_id: &str,
    parts: &[crate::client::PartBody],
    path: &str,
) {
    let mut done = Vec::new();
    for p in parts {
        let etag = send_part(api, upload_id, p).await;
        done.push(json!({"part_number": p.request.part_number, "etag": etag}));
    }
    let mut wrong = done.clone();
    wrong[1]["etag"] = json!("\"0123456789abcdef0123456789abcdef\"");
    let commit = format!("/v1/uploads/{upload_id}/commit");
    let (status, v) = api.post(&commit, &json!({ "parts": wrong })).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (422, Some("part_checksum_mismatch")),
        "{v}"
    );
    let n = parts[1].request.part_number;
    assert!(
        v["detail"].as_str().unwrap().contains(&format!("part {n}")),
        "{v}"
    );
    let (status, v) = api
        .get(&format!("/v1/namespaces/{ns}/manifest?path={path}"))
        .await;
    assert_eq!(status, 404, "nothing committed: {v}");

    let (status, v) = api.post(&commit, &json!({ "parts": done })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "committed", "{v}");
}
