//! `POST /v1/uploads/{id}/commit`: trust, then verify.
//!
//! Every registered part must be in S3 (ListParts, not our table) with the
//! size it was registered and signed with; only then is the multipart upload
//! completed, the chunk locations recorded and the files committed, many to a
//! transaction with the rules of one at a time. Every step is idempotent, so a commit retried after any crash
//! (ours or the client's) converges to the same results.

use std::collections::HashMap;

use axum::extract::{Path, State};
use driftless_protocol::DeviceId;
use driftless_protocol::{CommitRequest, CommitResponse, ErrorCode, FileOp, StoredCodec};
use driftless_store::meta::chunks::{self, ChunkLocation, Usable, record_chunks};
use driftless_store::meta::commit::{Commit, commit_many};
use driftless_store::meta::to_db;
use driftless_store::meta::uploads::{self, Part, Session};
use driftless_store::{BlobError, pack_key};

use super::{Pending, ensure_open, owned_session, result, validate};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::state::AppState;
use driftless_protocol::Problem;

/// S3's smallest part, except the last.
const S3_MIN_PART: u64 = 5 << 20;

#[utoipa::path(
    post,
    path = "/v1/uploads/{id}/commit",
    tag = "uploads",
    summary = "Commit: every part checked in storage, then the files, each with its own result",
    params(("id" = String, Path, description = "Upload session id")),
    request_body = CommitRequest,
    responses((status = 200, description = "Per-file results", body = CommitResponse), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
pub(super) async fn commit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<CommitRequest>,
) -> ApiResult<axum::Json<CommitResponse>> {
    // A commit, once started, runs to its end even if the client goes
    // away: cut short between S3's CompleteMultipartUpload and our own
    // transaction, it would leave a session whose parts are gone from S3
    // (a retry would still converge, but nothing is gained by stopping).
    // Tracked: a graceful shutdown waits for it.
    let commits = state.commits.clone();
    commits
        .spawn(run(state, caller, id, req))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
}

async fn run(
    state: AppState,
    caller: Caller,
    id: String,
    req: CommitRequest,
) -> ApiResult<axum::Json<CommitResponse>> {
    let s = owned_session(&state, &caller, &id).await?;
    if let (Some(results), "committed") = (&s.results, s.state.as_str()) {
        let done: CommitResponse = serde_json::from_str(results)
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        return Ok(axum::Json(done));
    }
    ensure_open(&s)?;
    // One commit at a time, under a lease this commit renews while it runs:
    // a second (a client that resumed while its predecessor's commit still
    // runs) waits and retries; one whose server died takes over as soon as
    // the lease lapses (seconds, not minutes).
    let token = format!("{:032x}", rand::random::<u128>());
    let now = driftless_store::db::now_ms();
    if !uploads::begin_commit(&state.db, s.namespace, &s.id, now, now + LEASE_MS, &token).await? {
        return Err(ApiError::code(ErrorCode::UploadBusy));
    }
    let lost = tokio_util::sync::CancellationToken::new();
    let heartbeat = tokio::spawn(renew(state.clone(), s.clone(), token.clone(), lost.clone()));
    // A commit that lost its lease stops: another one runs now. (Every
    // step is idempotent, so where it stops does not matter.)
    let done = tokio::select! {
        done = finish(&state, &caller, &s, req, &token) => done,
        () = lost.cancelled() => Err(ApiError::new(
            ErrorCode::UploadBusy,
            "this commit lost its lease to another; ask again",
        )),
    };
    heartbeat.abort();
    if done.is_err()
        && let Err(e) = uploads::end_commit(&state.db, s.namespace, &s.id, &token).await
    {
        tracing::warn!(upload = %s.id, error = %e, "could not release the commit lease");
    }
    done
}

/// How long a commit's lease lasts unless renewed.
const LEASE_MS: i64 = 30_000;

/// Renews the lease every third of its length; cancels `lost` if it cannot.
async fn renew(
    state: AppState,
    s: Session,
    token: String,
    lost: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis((LEASE_MS / 3) as u64)).await;
        let until = driftless_store::db::now_ms() + LEASE_MS;
        match uploads::renew_commit(&state.db, s.namespace, &s.id, until, &token).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(upload = %s.id, "commit lease lost to another commit; stopping");
                lost.cancel();
                return;
            }
            // The database is away: the lease lapses unless this commit
            // can renew it in time, and then another may take over.
            Err(e) => {
                tracing::warn!(upload = %s.id, error = %e, "could not renew the commit lease")
            }
        }
    }
}

async fn finish(
    state: &AppState,
    caller: &Caller,
    s: &Session,
    req: CommitRequest,
    token: &str,
) -> ApiResult<axum::Json<CommitResponse>> {
    let parts = uploads::parts(&state.db, s.namespace, &s.id).await?;
    let etags: HashMap<u32, String> = req
        .parts
        .into_iter()
        .map(|p| (p.part_number, p.etag))
        .collect();
    let total = verify_and_complete(state, s, &parts, &etags).await?;
    if driftless_store::env::var("DRIFTLESS_FAILPOINT").as_deref() == Some("commit-after-complete")
    {
        eprintln!("failpoint commit-after-complete: aborting");
        std::process::abort();
    }

    // Where each chunk landed in the pack.
    let mut locations = Vec::new();
    let mut offset = 0u64;
    for p in &parts {
        for c in &p.chunks {
            locations.push(ChunkLocation {
                hash: c.hash,
                raw_len: c.raw_len,
                offset,
                stored_len: c.stored_len,
                codec: i64::from(c.codec == StoredCodec::Zstd),
            });
            offset += u64::from(c.stored_len);
        }
    }
    // A few thousand rows per transaction: a huge upload does not hold the
    // writer (SQLite's only one) while other users' commits wait. Every
    // step is idempotent, so a commit cut between them is finished by its
    // retry.
    for slice in locations.chunks(chunks::RECORD_PER_TX) {
        let mut tx = state.db.begin().await?;
        record_chunks(&mut tx, to_db(s.namespace.0), &s.pack_id, slice).await?;
        tx.commit().await?;
    }
    prove_contended(state, s, caller.device, &locations).await?;
    // Last: the pack's live bytes are the rows located in it now.
    let mut tx = state.db.begin().await?;
    uploads::complete_pack(&mut tx, s.namespace, &s.pack_id, total).await?;
    tx.commit().await?;
    // Committed files may reference these chunks now; the verifier re-hashes
    // them from storage when their commits' events arrive (trust, then
    // verify), and its sweep catches the chunks no commit names.

    let request = uploads::session_request(&state.db, s.namespace, &s.id)
        .await?
        .unwrap_or_default();
    let pending: Vec<Pending> = serde_json::from_str(&request)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    // The files in order, committed in a few transactions (the same rules
    // as one at a time); an op that fails validation gets its refusal in
    // its place.
    let mut refused = Vec::with_capacity(pending.len());
    let mut commits = Vec::with_capacity(pending.len());
    let ops: Vec<FileOp> = pending.into_iter().map(|p| FileOp::Put(p.op)).collect();
    for op in &ops {
        match validate::op(op, state.settings.max_file_bytes) {
            Ok(change) => {
                refused.push(None);
                commits.push(Commit {
                    namespace: s.namespace,
                    op_id: op.op_id().clone(),
                    digest: validate::digest(op),
                    device: Some(caller.device),
                    reuse: Usable::OfferedTo(caller.device),
                    change,
                });
            }
            Err((code, detail)) => {
                refused.push(Some(driftless_protocol::Outcome::Error { code, detail }))
            }
        }
    }
    let mut committed = commit_many(&state.db, &commits).await?.into_iter();
    let mut results = Vec::with_capacity(ops.len());
    for (op, refused) in ops.iter().zip(refused) {
        let outcome = match refused {
            Some(outcome) => outcome,
            None => committed.next().ok_or_else(|| {
                ApiError::new(ErrorCode::Internal, "a file's commit gave no outcome")
            })?,
        };
        results.push(result(op, outcome));
    }
    state.committed();
    state.metrics.uploaded(total);
    state.metrics.outcomes(&results);
    let response = CommitResponse { results };
    let json = serde_json::to_string(&response)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    if !uploads::finish_commit(&state.db, s.namespace, &s.id, &json, token).await? {
        tracing::info!(upload = %s.id, "another commit of this session finished it");
    }
    tracing::info!(namespace = %s.namespace, upload = %s.id, bytes = total, "upload committed");
    Ok(axum::Json(response))
}

/// Chunks this session uploaded whose recorded copy is another device's
/// and not yet verified are read back and checked now, so that nobody's
/// unproven bytes decide what this session's files hold (the first
/// *verified* copy wins): a good copy becomes verified (this session's is
/// dead bytes in its pack), a bad one corrupt, and this session's copy
/// takes its place. A member who uploads garbage under a hash cannot make
/// an honest upload of that hash point at it.
async fn prove_contended(
    state: &AppState,
    s: &Session,
    device: DeviceId,
    locations: &[ChunkLocation],
) -> ApiResult<()> {
    let mut seen = std::collections::HashSet::new();
    let hashes: Vec<_> = locations
        .iter()
        .map(|c| c.hash)
        .filter(|h| seen.insert(*h))
        .collect();
    let contended = {
        let mut conn = state.db.pool().acquire().await?;
        chunks::unproven(&mut conn, s.namespace, device, &hashes).await?
    };
    if contended.is_empty() {
        return Ok(());
    }
    let mut verifier = driftless_consumer::Verifier::new(state.db.clone(), state.blob.clone());
    for (pack, these) in contended {
        if pack == s.pack_id {
            continue;
        }
        let check = verifier
            .check_chunks(s.namespace, &pack, &these)
            .await
            .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
        let mut tx = state.db.begin().await?;
        let report = driftless_consumer::verify::record(&mut tx, &check).await?;
        tx.commit().await?;
        tracing::info!(namespace = %s.namespace, upload = %s.id, pack, verified = report.verified,
            corrupt = report.corrupt.len(), "another device's unverified copies of this upload's chunks checked");
    }
    // Where the other copy turned out corrupt, this session's replaces it.
    for slice in locations.chunks(chunks::RECORD_PER_TX) {
        let mut tx = state.db.begin().await?;
        record_chunks(&mut tx, to_db(s.namespace.0), &s.pack_id, slice).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Checks every registered part against S3 and completes the upload; returns
/// the pack size. A retry after an earlier completion finds the object whole.
async fn verify_and_complete(
    state: &AppState,
    s: &Session,
    parts: &[Part],
    etags: &HashMap<u32, String>,
) -> ApiResult<u64> {
    let key = pack_key(&s.pack_id);
    let total: u64 = parts.iter().map(|p| p.size).sum();
    if parts.is_empty() {
        state.blob.abort_multipart(&key, &s.s3_upload_id).await?;
        return Ok(0);
    }
    // Completed by an earlier attempt that was cut short (the client went
    // away mid-commit): the pack, unique to this session, is whole.
    if state.blob.size(&key).await? == Some(total) {
        return Ok(total);
    }
    let stored = match state.blob.list_parts(&key, &s.s3_upload_id).await {
        Ok(stored) => stored,
        // Completed by an earlier attempt of this commit: the object is the proof.
        Err(BlobError::NotFound) if state.blob.size(&key).await? == Some(total) => {
            return Ok(total);
        }
        Err(e) => return Err(e.into()),
    };
    if stored.is_empty() && state.blob.size(&key).await? == Some(total) {
        return Ok(total);
    }
    let stored: HashMap<u32, _> = stored.into_iter().map(|p| (p.part_number, p)).collect();
    let last = parts.last().map(|p| p.part_number);
    let mut complete = Vec::with_capacity(parts.len());
    for p in parts {
        let n = p.part_number;
        let Some(held) = stored.get(&n) else {
            return Err(ApiError::new(
                ErrorCode::PartMissing,
                format!("part {n} was never uploaded"),
            ));
        };
        if held.size != p.size {
            return Err(ApiError::new(
                ErrorCode::PartSizeMismatch,
                format!("part {n} holds {} bytes, registered {}", held.size, p.size),
            ));
        }
        if Some(n) != last && p.size < S3_MIN_PART {
            return Err(ApiError::new(
                ErrorCode::PartInvalid,
                format!(
                    "part {n} is {} bytes; every part but the last needs 5 MiB",
                    p.size
                ),
            ));
        }
        // What the store says it holds must be what the client sent: an
        // ETag or checksum that differs names another body (a PUT the
        // client never saw answered, or a part written by someone else).
        if let (Some(sent), Some(held)) = (etags.get(&n), held.etag.as_deref())
            && unquoted(sent) != unquoted(held)
        {
            return Err(ApiError::new(
                ErrorCode::PartChecksumMismatch,
                format!("part {n}: storage holds ETag {held}, the commit names {sent}"),
            ));
        }
        if let Some(held) = held.checksum_crc32c.as_deref()
            && held != p.checksum
        {
            return Err(ApiError::new(
                ErrorCode::PartChecksumMismatch,
                format!(
                    "part {n}: storage holds CRC32C {held}, registered {}",
                    p.checksum
                ),
            ));
        }
        let etag = etags
            .get(&n)
            .cloned()
            .or_else(|| held.etag.clone())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("no ETag for part {n}: send the one its PUT returned"),
                )
            })?;
        complete.push((n, etag, p.checksum.clone()));
    }
    match state
        .blob
        .complete_multipart(&key, &s.s3_upload_id, &complete)
        .await
    {
        Ok(()) => Ok(total),
        // An earlier attempt completed it and was cut short before it
        // could say so (the client went away): the pack, unique to this
        // session, is whole.
        Err(_) if state.blob.size(&key).await? == Some(total) => Ok(total),
        Err(BlobError::Refused { code, message }) => Err(ApiError::new(
            ErrorCode::PartChecksumMismatch,
            format!("storage refused to assemble the parts: {code}: {message}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// An ETag without its quotes (stores and clients differ on sending them).
fn unquoted(etag: &str) -> &str {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    e.trim_matches('"')
}
