//! Uploading a file: hash it, ask the server which chunks it lacks, then
//! stream exactly those (zstd where it pays) into parts that go straight to
//! S3 through presigned URLs, several at once, and commit.
//!
//! Memory is bounded by the part size times the parts in flight: a reader
//! thread fills at most `concurrency` parts ahead of the senders, whatever
//! the file size.

mod parts;
mod resume;

use parts::{Plan, send_parts, wanted_chunks};
use resume::{Resumed, commit, saved_session};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use base64::Engine;
use bytes::Bytes;
use driftless_chunker::{Codec, Encoder, FormatHint, Policy};
use driftless_protocol::{
    ChunkHash, CommitRequest, CompletedPart, CreateUpload, ErrorCode, FileOp, FileResult,
    MAX_PART_SIZE, MAX_PARTS, NamespaceId, OpId, Outcome, PartChunk, PartRequest, PutFile, Rev,
    StoredCodec, UploadId, UploadState,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::hash::{HashedFile, hash_file};
use crate::http::{ApiClient, ClientError};
use crate::progress::Progress;
use crate::state::{SavedPart, State, StateError};

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
    /// The journal of upload sessions failed.
    #[error("state: {0}")]
    State(#[from] StateError),
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
    let hashed = tokio::task::spawn_blocking(move || hash_file(&path, None))
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
    let item = UploadItem {
        local: local.to_owned(),
        hashed: hashed.clone(),
        remote: remote.to_owned(),
        base_rev,
        op_id,
    };
    let batch = upload_batch(
        api,
        ns,
        std::slice::from_ref(&item),
        opts,
        None,
        &Progress::hidden(),
    )
    .await?;
    let result = batch
        .results
        .into_iter()
        .next()
        .ok_or_else(|| UploadError::Protocol("no result for the file".into()))?;
    Ok(UploadReport {
        result,
        bytes_sent: batch.bytes_sent,
        raw_bytes_sent: batch.raw_bytes_sent,
        parts: batch.parts,
        size: hashed.size,
    })
}

/// One file of a batch.
#[derive(Clone, Debug)]
pub struct UploadItem {
    /// The local file.
    pub local: PathBuf,
    /// Its chunks, as announced.
    pub hashed: HashedFile,
    /// The path in the namespace.
    pub remote: String,
    /// The revision it replaces (`None`: a new file).
    pub base_rev: Option<Rev>,
    /// The operation id (the same one again after a crash).
    pub op_id: OpId,
}

/// What a batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// One result per item, in order.
    pub results: Vec<FileResult>,
    /// Bytes PUT to object storage in this run (compressed sizes).
    pub bytes_sent: u64,
    /// Raw bytes of the chunks sent in this run.
    pub raw_bytes_sent: u64,
    /// Parts PUT in this run.
    pub parts: u32,
    /// Parts found already stored from an earlier, interrupted run.
    pub parts_resumed: u32,
}

/// Uploads several files in one session: one request says which chunks the
/// server lacks across all of them, the chunks share parts (thousands of
/// small files fill a few parts), and one commit answers for every file.
///
/// With a `journal`, the session and every part's chunk range are written
/// down before they are used, so a run killed at any point resumes: the
/// same batch again finds its session, asks the server which parts S3
/// holds, and sends only the rest.
pub async fn upload_batch(
    api: &ApiClient,
    ns: NamespaceId,
    items: &[UploadItem],
    opts: UploadOptions,
    journal: Option<Arc<State>>,
    progress: &Progress,
) -> Result<BatchReport, UploadError> {
    let mut report = BatchReport::default();
    if items.is_empty() {
        return Ok(report);
    }
    let key = batch_key(ns, items);
    let resumed = match &journal {
        Some(j) => saved_session(api, j, &key).await?,
        None => None,
    };
    let (upload_id, needed, part_size, saved, stored) = match resumed {
        Some(Resumed::Committed(id)) => {
            // Committed before the crash: the commit's answer is kept.
            let done = commit(api, &id, &CommitRequest { parts: Vec::new() }).await?;
            if let Some(j) = &journal {
                j.forget_upload(&key)?;
            }
            report.results = answer_all(api, ns, items, Vec::new(), done.results).await?;
            return Ok(report);
        }
        Some(Resumed::Open {
            id,
            needed,
            part_size,
            saved,
            stored,
        }) => (id, needed, part_size, saved, stored),
        None => {
            let ops = items.iter().map(put_op).collect();
            let created = api.create_upload(ns, &CreateUpload { files: ops }).await?;
            report.results = created.results;
            let Some(id) = created.upload_id else {
                return Ok(report);
            };
            let part_size = part_size_for(items, opts.part_size);
            if let Some(j) = &journal {
                j.save_upload(&key, &id, &created.needed, part_size)?;
            }
            (id, created.needed, part_size, Vec::new(), HashSet::new())
        }
    };
    let wanted = wanted_chunks(items, &needed.into_iter().collect());
    let plan = Plan {
        part_size,
        saved,
        stored,
    };
    progress.set_length(wanted.iter().map(|w| u64::from(w.len)).sum());
    let sent = send_parts(
        api,
        &upload_id,
        items,
        wanted,
        plan,
        opts,
        journal.clone(),
        progress,
        &mut report,
    )
    .await;
    let parts = match sent {
        Ok(parts) => parts,
        // A local file is not what was announced: this session can never
        // commit, so free it now rather than at its expiry.
        // Storage refuses the session itself (its multipart upload is gone):
        // drop it, so that the next attempt starts a new one.
        Err(UploadError::Client(
            e @ ClientError::Storage {
                status: 403 | 404, ..
            },
        )) => {
            if let Some(j) = &journal {
                j.forget_upload(&key)?;
            }
            return Err(e.into());
        }
        Err(e @ UploadError::Io { .. }) => {
            if let Err(abort) = api.abort_upload(&upload_id).await {
                tracing::warn!(upload = %upload_id, error = %abort, "could not abort the upload session");
            }
            if let Some(j) = &journal {
                j.forget_upload(&key)?;
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let committed = commit(api, &upload_id, &CommitRequest { parts }).await;
    let committed = match committed {
        Ok(c) => c,
        Err(e) => {
            // A session that can no longer commit is dropped; the next
            // attempt starts afresh.
            if let (Some(j), ClientError::Api { problem, .. }) = (&journal, &e)
                && matches!(
                    problem.code,
                    ErrorCode::UploadExpired
                        | ErrorCode::UploadClosed
                        | ErrorCode::PartMissing
                        | ErrorCode::PartSizeMismatch
                        | ErrorCode::PartChecksumMismatch
                        | ErrorCode::PartInvalid
                        | ErrorCode::NotFound
                )
            {
                j.forget_upload(&key)?;
            }
            return Err(e.into());
        }
    };
    if let Some(j) = &journal {
        j.forget_upload(&key)?;
    }
    let created = std::mem::take(&mut report.results);
    report.results = answer_all(api, ns, items, created, committed.results).await?;
    Ok(report)
}

/// One result per item, in order: the commit answers for the files that
/// needed bytes, the creation for the others. A resumed session has no
/// creation answers, so those files are asked again: the server knows
/// their operation ids and answers as it did the first time.
async fn answer_all(
    api: &ApiClient,
    ns: NamespaceId,
    items: &[UploadItem],
    created: Vec<FileResult>,
    committed: Vec<FileResult>,
) -> Result<Vec<FileResult>, UploadError> {
    let mut by_op: HashMap<OpId, FileResult> = created
        .into_iter()
        .chain(committed)
        .map(|r| (r.op_id.clone(), r))
        .collect();
    let unanswered: Vec<&UploadItem> = items
        .iter()
        .filter(|i| !by_op.contains_key(&i.op_id))
        .collect();
    if !unanswered.is_empty() {
        let again = api
            .create_upload(
                ns,
                &CreateUpload {
                    files: unanswered.iter().map(|i| put_op(i)).collect(),
                },
            )
            .await?;
        // Bytes needed after all (storage lost them meanwhile): this session
        // is not ours to finish; those files go again next pass.
        if let Some(id) = again.upload_id
            && let Err(e) = api.abort_upload(&id).await
        {
            tracing::debug!(error = %e, "could not abort a session opened to ask again");
        }
        for r in again.results {
            by_op.insert(r.op_id.clone(), r);
        }
    }
    Ok(items
        .iter()
        .map(|i| {
            by_op.remove(&i.op_id).unwrap_or(FileResult {
                op_id: i.op_id.clone(),
                path: i.remote.clone(),
                outcome: Outcome::Pending,
            })
        })
        .collect())
}

/// The operation that puts `i`.
fn put_op(i: &UploadItem) -> FileOp {
    FileOp::Put(PutFile {
        op_id: i.op_id.clone(),
        path: i.remote.clone(),
        base_rev: i.base_rev,
        size: i.hashed.size,
        mtime_ms: mtime_ms(&i.local),
        chunking: i.hashed.chunking(),
        chunks: i.hashed.chunks.clone(),
        content_hash: i.hashed.content_hash,
    })
}

/// Identifies a batch: the same files, contents and bases give the same key.
pub fn batch_key(ns: NamespaceId, items: &[UploadItem]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&ns.0.to_le_bytes());
    for i in items {
        h.update(i.op_id.as_str().as_bytes());
        h.update(&[0]);
        h.update(i.remote.as_bytes());
        h.update(&[0]);
        h.update(i.hashed.content_hash.as_bytes());
        h.update(&i.base_rev.map_or(0, |r| r.0).to_le_bytes());
    }
    *h.finalize().as_bytes()
}

fn mtime_ms(local: &Path) -> i64 {
    std::fs::metadata(local)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// The part size: the target, raised to stay under S3's part count, with
/// room for one more chunk in a part.
fn part_size_for(items: &[UploadItem], target: u64) -> u64 {
    let total: u64 = items.iter().map(|i| i.hashed.size).sum();
    let max_chunk = items
        .iter()
        .map(|i| u64::from(i.hashed.params.max()))
        .max()
        .unwrap_or(0);
    target
        .max(total.div_ceil(u64::from(MAX_PARTS) - 1))
        .min(MAX_PART_SIZE - max_chunk)
}

/// Whether the server committed the file.
pub fn committed(r: &FileResult) -> Option<Rev> {
    match r.outcome {
        Outcome::Committed { rev, .. } => Some(rev),
        _ => None,
    }
}
