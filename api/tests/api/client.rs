//! A minimal upload client for tests: chunk, ask, compress, pack parts, PUT
//! to presigned URLs, commit. It counts the bytes it sends to S3.

use base64::Engine;
use driftless_chunker::{ChunkParams, Encoder, FormatHint, Policy, SliceChunker, content_hash};
use driftless_protocol::*;
use serde_json::{Value, json};

/// Parts are at least this big (S3 wants 5 MiB except the last; we use 8).
pub(crate) const PART_TARGET: usize = 8 << 20;

pub(crate) struct Api {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(url: &str, token: &str) -> Self {
        Self {
            url: url.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// A file prepared for upload: its put operation and its chunks' bytes.
pub(crate) struct Prepared<'a> {
    pub(crate) put: PutFile,
    pub(crate) chunks: Vec<&'a [u8]>,
}

pub(crate) fn prepare<'a>(
    path: &str,
    data: &'a [u8],
    base_rev: Option<Rev>,
    op: &str,
) -> Prepared<'a> {
    let p = ChunkParams::DEFAULT;
    let mut specs = Vec::new();
    let mut chunks = Vec::new();
    let mut s = SliceChunker::new(data, p);
    while let Some(c) = s.next_chunk() {
        specs.push(ChunkSpec {
            hash: ChunkHash::from_bytes(c.hash),
            len: c.len(),
        });
        chunks.push(c.data);
    }
    let hash = content_hash(p, specs.iter().map(|c| (c.hash.as_bytes(), c.len)));
    Prepared {
        put: PutFile {
            op_id: op.parse().unwrap(),
            path: path.into(),
            base_rev,
            size: data.len() as u64,
            mtime_ms: 1_700_000_000_000,
            chunking: ChunkingSpec {
                min: p.min(),
                avg: p.avg(),
                max: p.max(),
            },
            chunks: specs,
            content_hash: ContentHash::from_bytes(hash),
        },
        chunks,
    }
}

/// One part ready to register and PUT.
pub(crate) struct PartBody {
    pub(crate) request: PartRequest,
    pub(crate) bytes: Vec<u8>,
}

/// Packs the needed chunks (compressed when it pays) into parts.
pub(crate) fn pack(files: &[Prepared<'_>], needed: &[ChunkHash]) -> Vec<PartBody> {
    let mut by_hash = std::collections::HashMap::new();
    for f in files {
        for (spec, bytes) in f.put.chunks.iter().zip(&f.chunks) {
            by_hash.insert(spec.hash, *bytes);
        }
    }
    let mut enc = Encoder::new(Policy::default()).unwrap();
    let mut parts: Vec<PartBody> = Vec::new();
    let mut cur = PartBody {
        request: part_request(1),
        bytes: Vec::new(),
    };
    for h in needed {
        let raw = by_hash[h];
        let e = enc.encode(raw, FormatHint::Unknown);
        cur.request.chunks.push(PartChunk {
            hash: *h,
            raw_len: raw.len() as u32,
            stored_len: e.bytes.len() as u32,
            codec: if e.codec == driftless_chunker::Codec::Zstd {
                StoredCodec::Zstd
            } else {
                StoredCodec::None
            },
        });
        cur.bytes.extend_from_slice(e.bytes);
        if cur.bytes.len() >= PART_TARGET {
            let next = part_request(cur.request.part_number + 1);
            parts.push(finish(std::mem::replace(
                &mut cur,
                PartBody {
                    request: next,
                    bytes: Vec::new(),
                },
            )));
        }
    }
    if !cur.bytes.is_empty() {
        parts.push(finish(cur));
    }
    parts
}

fn part_request(n: u32) -> PartRequest {
    PartRequest {
        part_number: n,
        size: 0,
        checksum_crc32c: String::new(),
        chunks: Vec::new(),
    }
}

fn finish(mut p: PartBody) -> PartBody {
    seal(&mut p);
    p
}

/// Sets the part's size and CRC32C from its bytes.
pub(crate) fn seal(p: &mut PartBody) {
    p.request.size = p.bytes.len() as u64;
    p.request.checksum_crc32c =
        base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(&p.bytes).to_be_bytes());
}

/// Registers a part and PUTs it; returns its ETag.
pub(crate) async fn send_part(api: &Api, upload: &str, part: &PartBody) -> String {
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload}/parts"),
            &serde_json::to_value(&part.request).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "register part: {v}");
    let presigned: PresignedPart = serde_json::from_value(v).unwrap();
    let mut req = api.http.put(&presigned.url);
    for (k, v) in &presigned.headers {
        req = req.header(k, v);
    }
    let resp = req.body(part.bytes.clone()).send().await.unwrap();
    assert!(
        resp.status().is_success(),
        "PUT part {}: {}",
        part.request.part_number,
        resp.status()
    );
    resp.headers()["etag"].to_str().unwrap().to_owned()
}

/// The whole flow for a batch of files; returns the results and the bytes PUT to S3.
pub(crate) async fn upload(api: &Api, ns: u64, files: &[Prepared<'_>]) -> (Vec<FileResult>, u64) {
    let ops: Vec<FileOp> = files.iter().map(|f| FileOp::Put(f.put.clone())).collect();
    let (status, v) = api
        .post(
            &format!("/v1/namespaces/{ns}/uploads"),
            &json!({ "files": ops }),
        )
        .await;
    assert_eq!(status, 200, "create upload: {v}");
    let created: CreatedUpload = serde_json::from_value(v).unwrap();
    let Some(upload) = created.upload_id else {
        return (created.results, 0);
    };
    let parts = pack(files, &created.needed);
    let mut done = Vec::new();
    let mut sent = 0u64;
    for p in &parts {
        let etag = send_part(api, upload.as_str(), p).await;
        sent += p.bytes.len() as u64;
        done.push(CompletedPart {
            part_number: p.request.part_number,
            etag,
        });
    }
    let (status, v) = api
        .post(
            &format!("/v1/uploads/{upload}/commit"),
            &serde_json::to_value(CommitRequest { parts: done }).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "commit: {v}");
    let committed: CommitResponse = serde_json::from_value(v).unwrap();
    let mut results = created.results;
    for r in committed.results {
        if let Some(slot) = results.iter_mut().find(|x| x.op_id == r.op_id) {
            *slot = r;
        }
    }
    (results, sent)
}

/// Opens an upload session for one file and packs the chunks it needs.
pub(crate) async fn begin(api: &Api, ns: u64, file: &Prepared<'_>) -> (UploadId, Vec<PartBody>) {
    let (status, v) = api
        .post(
            &format!("/v1/namespaces/{ns}/uploads"),
            &json!({"files": [FileOp::Put(file.put.clone())]}),
        )
        .await;
    assert_eq!(status, 200, "create upload: {v}");
    let created: CreatedUpload = serde_json::from_value(v).unwrap();
    let id = created.upload_id.expect("chunks to upload");
    (id, pack(std::slice::from_ref(file), &created.needed))
}

/// Makes `member` (a user name) a member of `ns` with `role`, as its owner
/// `owner`; returns the HTTP status of the share.
pub(crate) async fn share(owner: &Api, ns: u64, member: &str, role: &str) -> u16 {
    let resp = owner
        .http
        .put(format!("{}/v1/namespaces/{ns}/members/{member}", owner.url))
        .bearer_auth(&owner.token)
        .json(&json!({ "role": role }))
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

/// Accepts the caller's invitation to `ns`.
pub(crate) async fn accept(member: &Api, ns: u64) -> Value {
    let (status, v) = member
        .post(&format!("/v1/invitations/{ns}"), &json!({}))
        .await;
    assert_eq!(status, 200, "accept: {v}");
    v
}

/// A folder `name` owned by `owner`, shared with each of `members` (user
/// name, and that user's client) as editors, who accept.
pub(crate) async fn team_folder(owner: &Api, name: &str, members: &[(&str, &Api)]) -> u64 {
    let (status, v) = owner.post("/v1/namespaces", &json!({ "name": name })).await;
    assert_eq!(status, 201, "{v}");
    let ns = v["id"].as_u64().unwrap();
    for (m, api) in members {
        assert_eq!(share(owner, ns, m, "editor").await, 202);
        accept(api, ns).await;
    }
    ns
}
