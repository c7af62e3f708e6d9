//! Uploading a file: hash it, ask the server which chunks it lacks, then
//! stream exactly those (zstd where it pays) into parts that go straight to
//! S3 through presigned URLs, several at once, and commit.
//!
//! Memory is bounded by the part size times the parts in flight: a reader
//! thread fills at most `concurrency` parts ahead of the senders, whatever
//! the file size.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::UNIX_EPOCH;

use base64::Engine;
use bytes::Bytes;
use driftless_chunker::{Codec, Encoder, FormatHint, Policy};
use driftless_protocol::{
    CommitRequest, CompletedPart, CreateUpload, FileOp, FileResult, MAX_PART_SIZE, MAX_PARTS,
    NamespaceId, OpId, Outcome, PartChunk, PartRequest, PutFile, Rev, StoredCodec, UploadId,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::hash::{HashedFile, hash_file};
use crate::http::{ApiClient, ClientError};

/// How parts are cut and sent.
#[derive(Clone, Copy, Debug)]
pub struct UploadOptions {
    /// Target part size (raised for huge files to stay under 10,000 parts).
    pub part_size: u64,
    /// Parts PUT at once.
    pub concurrency: usize,
    /// Compression policy.
    pub policy: Policy,
    /// Attempts per part before the upload gives up.
    pub attempts: u32,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            part_size: 16 << 20,
            concurrency: 4,
            policy: Policy::default(),
            attempts: 5,
        }
    }
}

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadReport {
    /// The server's answer for the file.
    pub result: FileResult,
    /// Bytes PUT to object storage (compressed sizes).
    pub bytes_sent: u64,
    /// Raw bytes of the chunks sent.
    pub raw_bytes_sent: u64,
    /// Parts PUT.
    pub parts: u32,
    /// The file's size.
    pub size: u64,
}

/// Why an upload failed (nothing was committed).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Reading the local file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The server or storage refused, or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server's answer did not fit the request.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

/// One sealed part on its way to S3.
struct Part {
    request: PartRequest,
    bytes: Bytes,
    raw_len: u64,
}

/// Uploads the file at `local` to `remote` in namespace `ns`.
pub async fn upload_file(
    api: &ApiClient,
    ns: NamespaceId,
    local: &Path,
    remote: &str,
    base_rev: Option<Rev>,
    op_id: OpId,
    opts: UploadOptions,
) -> Result<UploadReport, UploadError> {
    let io_err = |source| UploadError::Io {
        path: local.display().to_string(),
        source,
    };
    let path = local.to_owned();
    let hashed = tokio::task::spawn_blocking(move || hash_file(&path))
        .await
        .map_err(|e| io_err(io::Error::other(e)))?
        .map_err(io_err)?;
    upload_hashed(api, ns, local, &hashed, remote, base_rev, op_id, opts).await
}

/// Uploads a file already hashed into `hashed`. If the file no longer
/// matches (it changed since), nothing is committed and the error says so.
#[allow(clippy::too_many_arguments)]
pub async fn upload_hashed(
    api: &ApiClient,
    ns: NamespaceId,
    local: &Path,
    hashed: &HashedFile,
    remote: &str,
    base_rev: Option<Rev>,
    op_id: OpId,
    opts: UploadOptions,
) -> Result<UploadReport, UploadError> {
    let mtime_ms = std::fs::metadata(local)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let put = PutFile {
        op_id,
        path: remote.to_owned(),
        base_rev,
        size: hashed.size,
        mtime_ms,
        chunking: hashed.chunking(),
        chunks: hashed.chunks.clone(),
        content_hash: hashed.content_hash,
    };
    let created = api
        .create_upload(
            ns,
            &CreateUpload {
                files: vec![FileOp::Put(put)],
            },
        )
        .await?;
    let first = created
        .results
        .into_iter()
        .next()
        .ok_or_else(|| UploadError::Protocol("no result for the file".into()))?;
    let mut report = UploadReport {
        result: first,
        bytes_sent: 0,
        raw_bytes_sent: 0,
        parts: 0,
        size: hashed.size,
    };
    let Some(upload_id) = created.upload_id else {
        return Ok(report);
    };
    let needed: HashSet<_> = created.needed.into_iter().collect();
    let sent = send_parts(
        api,
        &upload_id,
        local,
        remote,
        hashed,
        &needed,
        opts,
        &mut report,
    )
    .await;
    let parts = match sent {
        Ok(parts) => parts,
        // The local file is not what was announced: this session can never
        // commit, so free it now rather than at its expiry.
        Err(e @ UploadError::Io { .. }) => {
            if let Err(abort) = api.abort_upload(&upload_id).await {
                tracing::warn!(upload = %upload_id, error = %abort, "could not abort the upload session");
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let committed = api.commit(&upload_id, &CommitRequest { parts }).await?;
    report.result = committed
        .results
        .into_iter()
        .next()
        .ok_or_else(|| UploadError::Protocol("no commit result for the file".into()))?;
    Ok(report)
}

/// Streams the needed chunks into parts and PUTs them; returns the ETags.
#[allow(clippy::too_many_arguments)]
async fn send_parts(
    api: &ApiClient,
    upload_id: &UploadId,
    local: &Path,
    remote: &str,
    hashed: &HashedFile,
    needed: &HashSet<driftless_protocol::ChunkHash>,
    opts: UploadOptions,
    report: &mut UploadReport,
) -> Result<Vec<CompletedPart>, UploadError> {
    // Keep under S3's part count, and leave room for one more chunk in a part.
    let max_chunk = u64::from(hashed.params.max());
    let part_size = opts
        .part_size
        .max(hashed.size.div_ceil(u64::from(MAX_PARTS) - 1))
        .min(MAX_PART_SIZE - max_chunk);
    let mut seen = HashSet::new();
    let wanted: Vec<(u64, u32, driftless_protocol::ChunkHash)> = hashed
        .chunks
        .iter()
        .zip(&hashed.offsets)
        .filter(|(c, _)| needed.contains(&c.hash) && seen.insert(c.hash))
        .map(|(c, off)| (*off, c.len, c.hash))
        .collect();
    let (tx, mut rx) = mpsc::channel::<io::Result<Part>>(opts.concurrency.max(1));
    let path = local.to_owned();
    let name = remote.rsplit('/').next().unwrap_or(remote).to_owned();
    let policy = opts.policy;
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = pack_parts(&path, &name, &wanted, part_size, policy, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });

    let mut inflight = JoinSet::new();
    let mut done = Vec::new();
    let io_err = |source| UploadError::Io {
        path: local.display().to_string(),
        source,
    };
    loop {
        // Refill up to the concurrency limit, then wait for one to finish.
        while inflight.len() < opts.concurrency.max(1) {
            match rx.recv().await {
                Some(Ok(part)) => {
                    report.bytes_sent += part.bytes.len() as u64;
                    report.raw_bytes_sent += part.raw_len;
                    report.parts += 1;
                    let api = api.clone();
                    let id = upload_id.clone();
                    inflight.spawn(async move { send_one(&api, &id, part, opts.attempts).await });
                }
                Some(Err(e)) => return Err(io_err(e)),
                None => break,
            }
        }
        match inflight.join_next().await {
            Some(r) => done.push(r.map_err(|e| UploadError::Protocol(e.to_string()))??),
            None => break,
        }
    }
    reader.await.map_err(|e| io_err(io::Error::other(e)))?;
    done.sort_by_key(|p: &CompletedPart| p.part_number);
    Ok(done)
}

/// Registers and PUTs one part, retrying what can be retried (a fresh URL
/// each time, so an expired one is no obstacle).
async fn send_one(
    api: &ApiClient,
    id: &UploadId,
    part: Part,
    attempts: u32,
) -> Result<CompletedPart, ClientError> {
    let mut wait = std::time::Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let result = async {
            let url = api.register_part(id, &part.request).await?;
            api.put_part(&url, part.bytes.clone()).await
        }
        .await;
        match result {
            Ok(etag) => {
                return Ok(CompletedPart {
                    part_number: part.request.part_number,
                    etag,
                });
            }
            Err(e) if attempt < attempts && e.retryable() => {
                tracing::warn!(part = part.request.part_number, attempt, error = %e, "part failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads the wanted chunks in file order, encodes them and seals parts of
/// at least `part_size` bytes (the last may be smaller).
fn pack_parts(
    path: &Path,
    name: &str,
    wanted: &[(u64, u32, driftless_protocol::ChunkHash)],
    part_size: u64,
    policy: Policy,
    tx: &mpsc::Sender<io::Result<Part>>,
) -> io::Result<()> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 512];
    let n = file.read(&mut head)?;
    let hint = FormatHint::detect(name, &head[..n]);
    let mut encoder = Encoder::new(policy)?;
    let mut raw = Vec::new();
    let mut pos = u64::MAX;
    let new_part = |n: u32| Part {
        request: PartRequest {
            part_number: n,
            size: 0,
            checksum_crc32c: String::new(),
            chunks: Vec::new(),
        },
        bytes: Bytes::new(),
        raw_len: 0,
    };
    let mut part = new_part(1);
    let mut buf: Vec<u8> = Vec::with_capacity(part_size as usize + (16 << 20));
    for &(offset, len, hash) in wanted {
        if pos != offset {
            file.seek(SeekFrom::Start(offset))?;
        }
        raw.resize(len as usize, 0);
        file.read_exact(&mut raw)?;
        pos = offset + u64::from(len);
        // The file changed since it was hashed: stop rather than send bytes
        // that do not match what the server was told.
        if blake3::hash(&raw).as_bytes() != hash.as_bytes() {
            return Err(io::Error::other(
                "the file changed while it was being uploaded",
            ));
        }
        let e = encoder.encode(&raw, hint);
        part.request.chunks.push(PartChunk {
            hash,
            raw_len: len,
            stored_len: e.bytes.len() as u32,
            codec: match e.codec {
                Codec::Zstd => StoredCodec::Zstd,
                Codec::None => StoredCodec::None,
            },
        });
        buf.extend_from_slice(e.bytes);
        part.raw_len += u64::from(len);
        if buf.len() as u64 >= part_size {
            let next = new_part(part.request.part_number + 1);
            let sealed = seal(std::mem::replace(&mut part, next), &mut buf, part_size);
            if tx.blocking_send(Ok(sealed)).is_err() {
                return Ok(()); // the sender gave up
            }
        }
    }
    if !buf.is_empty() {
        let _ = tx.blocking_send(Ok(seal(part, &mut buf, part_size)));
    }
    Ok(())
}

fn seal(mut part: Part, buf: &mut Vec<u8>, part_size: u64) -> Part {
    let bytes = std::mem::replace(buf, Vec::with_capacity(part_size as usize + (16 << 20)));
    part.request.size = bytes.len() as u64;
    part.request.checksum_crc32c =
        base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(&bytes).to_be_bytes());
    part.bytes = Bytes::from(bytes);
    part
}

/// Whether the server committed the file.
pub fn committed(r: &FileResult) -> Option<Rev> {
    match r.outcome {
        Outcome::Committed { rev, .. } => Some(rev),
        _ => None,
    }
}
