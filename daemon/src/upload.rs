//! Uploading a file: hash it, ask the server which chunks it lacks, then
//! stream exactly those (zstd where it pays) into parts that go straight to
//! S3 through presigned URLs, several at once, and commit.
//!
//! Memory is bounded by the part size times the parts in flight: a reader
//! thread fills at most `concurrency` parts ahead of the senders, whatever
//! the file size.

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
        Some(j) => resume(api, j, &key).await?,
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

/// What an interrupted run left.
enum Resumed {
    Committed(UploadId),
    Open {
        id: UploadId,
        needed: Vec<ChunkHash>,
        part_size: u64,
        saved: Vec<SavedPart>,
        stored: HashSet<u32>,
    },
}

/// Finds the session an earlier run of the same batch left, if it can
/// still be used.
async fn resume(
    api: &ApiClient,
    j: &State,
    key: &[u8; 32],
) -> Result<Option<Resumed>, UploadError> {
    let Some(saved) = j.saved_upload(key)? else {
        return Ok(None);
    };
    j.touch_upload(key)?;
    // A commit of it may still be running (the killed run's, finishing on
    // the server): wait for its end rather than act on a half-assembled
    // upload.
    let waited = std::time::Instant::now();
    let status = loop {
        match api.upload_status(&saved.upload_id).await {
            Ok(s) if s.state == UploadState::Committing && waited.elapsed() < BUSY_WAIT => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Ok(s) => break s,
            Err(ClientError::Api { problem, .. }) if problem.code == ErrorCode::NotFound => {
                j.forget_upload(key)?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    };
    // A margin so that the session does not expire halfway through.
    let margin = 5 * 60 * 1000;
    match status.state {
        UploadState::Committed => Ok(Some(Resumed::Committed(saved.upload_id))),
        UploadState::Open if status.expires_at_ms > crate::now_ms() + margin => {
            // A part counts as done only if S3 holds it and its ETag was
            // noted; one killed between its PUT and the note is sent again
            // (same number, same bytes), which gives its ETag anew.
            let noted: HashSet<u32> = saved
                .parts
                .iter()
                .filter(|p| p.etag.is_some())
                .map(|p| p.part_number)
                .collect();
            let stored: HashSet<u32> = status
                .parts
                .iter()
                .filter(|p| p.stored && noted.contains(&p.part_number))
                .map(|p| p.part_number)
                .collect();
            tracing::info!(upload = %saved.upload_id, stored = stored.len(), "resuming an interrupted upload");
            Ok(Some(Resumed::Open {
                id: saved.upload_id,
                needed: saved.needed,
                part_size: saved.part_size,
                saved: saved.parts,
                stored,
            }))
        }
        _ => {
            if status.state == UploadState::Open
                && let Err(e) = api.abort_upload(&saved.upload_id).await
            {
                tracing::debug!(error = %e, "could not abort a nearly expired session");
            }
            j.forget_upload(key)?;
            Ok(None)
        }
    }
}

/// How long to wait for a running commit of the same session.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Commits, waiting while another commit of the session runs.
async fn commit(
    api: &ApiClient,
    id: &UploadId,
    req: &CommitRequest,
) -> Result<driftless_protocol::CommitResponse, ClientError> {
    let waited = std::time::Instant::now();
    loop {
        match api.commit(id, req).await {
            Err(ClientError::Api { problem, .. })
                if problem.code == ErrorCode::UploadBusy && waited.elapsed() < BUSY_WAIT =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
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

/// A chunk to send: which item, where in it, and its hash.
#[derive(Clone, Copy)]
struct Wanted {
    item: usize,
    offset: u64,
    len: u32,
    hash: ChunkHash,
}

/// The needed chunks in batch order, each once (a deterministic list: a
/// resumed run finds the same chunk at the same index).
fn wanted_chunks(items: &[UploadItem], needed: &HashSet<ChunkHash>) -> Vec<Wanted> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (n, i) in items.iter().enumerate() {
        for (c, off) in i.hashed.chunks.iter().zip(&i.hashed.offsets) {
            if needed.contains(&c.hash) && seen.insert(c.hash) {
                out.push(Wanted {
                    item: n,
                    offset: *off,
                    len: c.len,
                    hash: c.hash,
                });
            }
        }
    }
    out
}

/// How the parts are cut: the parts an earlier run wrote down (kept as
/// they were, skipped if S3 holds them), then new ones.
struct Plan {
    part_size: u64,
    saved: Vec<SavedPart>,
    stored: HashSet<u32>,
}

/// Streams the needed chunks into parts and PUTs them; returns the ETags.
#[allow(clippy::too_many_arguments)]
async fn send_parts(
    api: &ApiClient,
    upload_id: &UploadId,
    items: &[UploadItem],
    wanted: Vec<Wanted>,
    plan: Plan,
    opts: UploadOptions,
    journal: Option<Arc<State>>,
    progress: &Progress,
    report: &mut BatchReport,
) -> Result<Vec<CompletedPart>, UploadError> {
    let resumed_etags: Vec<CompletedPart> = plan
        .saved
        .iter()
        .filter(|p| plan.stored.contains(&p.part_number))
        .filter_map(|p| {
            p.etag.clone().map(|etag| CompletedPart {
                part_number: p.part_number,
                etag,
            })
        })
        .collect();
    report.parts_resumed = plan
        .saved
        .iter()
        .filter(|p| plan.stored.contains(&p.part_number))
        .count() as u32;
    let journal_etags = journal.clone();
    let (tx, mut rx) = mpsc::channel::<Result<Part, UploadError>>(opts.concurrency.max(1));
    let files: Vec<(PathBuf, String)> = items
        .iter()
        .map(|i| {
            let name = i.remote.rsplit('/').next().unwrap_or(&i.remote).to_owned();
            (i.local.clone(), name)
        })
        .collect();
    let policy = opts.policy;
    let id = upload_id.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut packer = Packer::new(files, policy, plan.part_size, tx.clone());
        if let Err(e) = packer.run(&wanted, &plan, journal.as_deref(), &id) {
            let _ = tx.blocking_send(Err(e));
        }
    });

    let mut inflight = JoinSet::new();
    // Parts stored by an earlier run: their ETags as that run noted them
    // (the server falls back to asking S3 for any it lacks).
    let mut done: Vec<CompletedPart> = resumed_etags;
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
                    let progress = progress.clone();
                    inflight.spawn(async move {
                        let raw = part.raw_len;
                        let done = send_one(&api, &id, part, opts.attempts).await;
                        progress.inc(raw);
                        done
                    });
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        match inflight.join_next().await {
            Some(r) => {
                let part = r.map_err(|e| UploadError::Protocol(e.to_string()))??;
                if let Some(j) = &journal_etags {
                    j.save_upload_etag(upload_id, part.part_number, &part.etag)?;
                }
                done.push(part);
            }
            None => break,
        }
    }
    reader
        .await
        .map_err(|e| UploadError::Protocol(e.to_string()))?;
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

/// Reads the wanted chunks in batch order, encodes them and seals parts.
struct Packer {
    files: Vec<(PathBuf, String)>,
    open: Option<(usize, File, FormatHint)>,
    encoder: Option<Encoder>,
    policy: Policy,
    part_size: u64,
    tx: mpsc::Sender<Result<Part, UploadError>>,
    raw: Vec<u8>,
}

impl Packer {
    fn new(
        files: Vec<(PathBuf, String)>,
        policy: Policy,
        part_size: u64,
        tx: mpsc::Sender<Result<Part, UploadError>>,
    ) -> Self {
        Self {
            files,
            open: None,
            encoder: None,
            policy,
            part_size,
            tx,
            raw: Vec::new(),
        }
    }

    /// Saved parts not in storage are cut again exactly as before (same
    /// chunks, same number); the chunks after them go into new parts, each
    /// written down in the journal before it is registered.
    fn run(
        &mut self,
        wanted: &[Wanted],
        plan: &Plan,
        journal: Option<&State>,
        upload: &UploadId,
    ) -> Result<(), UploadError> {
        let mut saved = plan.saved.clone();
        saved.sort_by_key(|p| p.start);
        let mut next_start = 0usize;
        let mut next_number = 1u32;
        for p in &saved {
            next_start = next_start.max(p.end as usize);
            next_number = next_number.max(p.part_number + 1);
            if plan.stored.contains(&p.part_number) {
                continue;
            }
            let range = wanted
                .get(p.start as usize..p.end as usize)
                .ok_or_else(|| UploadError::Protocol("a saved part is outside the batch".into()))?;
            let mut part = Part::numbered(p.part_number);
            let mut buf = Vec::new();
            for w in range {
                self.add(w, &mut part, &mut buf)?;
            }
            if !self.send(seal(part, buf)) {
                return Ok(());
            }
        }
        let mut part = Part::numbered(next_number);
        let mut start = next_start;
        let mut buf = Vec::with_capacity(self.part_size as usize + (16 << 20));
        let rest = wanted.get(next_start..).unwrap_or_default();
        for (i, w) in rest.iter().enumerate() {
            self.add(w, &mut part, &mut buf)?;
            let end = next_start + i + 1;
            let last = end == wanted.len();
            if buf.len() as u64 >= self.part_size || (last && !buf.is_empty()) {
                let n = part.request.part_number;
                if let Some(j) = journal {
                    j.save_upload_part(upload, n, start as u64, end as u64)?;
                }
                let sealed = seal(
                    std::mem::replace(&mut part, Part::numbered(n + 1)),
                    std::mem::replace(
                        &mut buf,
                        Vec::with_capacity(self.part_size as usize + (16 << 20)),
                    ),
                );
                if !self.send(sealed) {
                    return Ok(());
                }
                start = end;
            }
        }
        Ok(())
    }

    /// `false` when the sender gave up.
    fn send(&self, part: Part) -> bool {
        self.tx.blocking_send(Ok(part)).is_ok()
    }

    fn add(&mut self, w: &Wanted, part: &mut Part, buf: &mut Vec<u8>) -> Result<(), UploadError> {
        let (path, name) = &self.files[w.item];
        let io_err = |source| UploadError::Io {
            path: path.display().to_string(),
            source,
        };
        if self.open.as_ref().is_none_or(|(n, _, _)| *n != w.item) {
            let mut file = File::open(path).map_err(io_err)?;
            let mut head = [0u8; 512];
            let n = file.read(&mut head).map_err(io_err)?;
            let hint = FormatHint::detect(name, &head[..n]);
            self.open = Some((w.item, file, hint));
        }
        let Some((_, file, hint)) = self.open.as_mut() else {
            return Err(UploadError::Protocol("no open file".into()));
        };
        file.seek(SeekFrom::Start(w.offset)).map_err(io_err)?;
        self.raw.resize(w.len as usize, 0);
        file.read_exact(&mut self.raw).map_err(io_err)?;
        // The file changed since it was hashed: stop rather than send bytes
        // that do not match what the server was told.
        if blake3::hash(&self.raw).as_bytes() != w.hash.as_bytes() {
            return Err(io_err(io::Error::other(
                "the file changed while it was being uploaded",
            )));
        }
        let encoder = match &mut self.encoder {
            Some(e) => e,
            None => self
                .encoder
                .insert(Encoder::new(self.policy).map_err(io_err)?),
        };
        let e = encoder.encode(&self.raw, *hint);
        part.request.chunks.push(PartChunk {
            hash: w.hash,
            raw_len: w.len,
            stored_len: e.bytes.len() as u32,
            codec: match e.codec {
                Codec::Zstd => StoredCodec::Zstd,
                Codec::None => StoredCodec::None,
            },
        });
        buf.extend_from_slice(e.bytes);
        part.raw_len += u64::from(w.len);
        Ok(())
    }
}

impl Part {
    fn numbered(n: u32) -> Self {
        Part {
            request: PartRequest {
                part_number: n,
                size: 0,
                checksum_crc32c: String::new(),
                chunks: Vec::new(),
            },
            bytes: Bytes::new(),
            raw_len: 0,
        }
    }
}

fn seal(mut part: Part, bytes: Vec<u8>) -> Part {
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
