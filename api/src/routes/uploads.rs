//! The upload protocol (DESIGN.md "Upload"): create a session for a batch,
//! register parts for presigned URLs, ask for status, commit, abort.
//!
//! Sessions belong to the user who created them: anyone else, and any id that
//! does not parse, gets `not_found`, exactly like a session that never existed.

mod commit;
mod parts;
mod validate;

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, State};
use base64::Engine;
use driftless_protocol::{
    ChunkHash, CreateUpload, CreatedUpload, ErrorCode, FileOp, FileResult, Outcome, PartState,
    PutFile, SyncPath, UploadId, UploadState, UploadStatus,
};
use driftless_store::meta::commit::{Commit, FileChange, commit_many, live_rev, live_revs};
use driftless_store::meta::uploads::{self, Session};
use driftless_store::meta::{chunks, to_db};
use driftless_store::pack_key;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::state::AppState;
use driftless_protocol::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most operations in one batch.
pub(crate) const MAX_BATCH: usize = 10_000;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(status, abort))
        .routes(routes!(parts::register))
        .routes(routes!(commit::commit))
}

/// A put waiting for this session's chunks, as stored in the session row.
#[derive(Serialize, Deserialize)]
pub(crate) struct Pending {
    pub(crate) op: PutFile,
    pub(crate) digest: String,
}

fn random_token(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Loads a session the caller owns; everything else is `not_found`.
pub(crate) async fn owned_session(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Session> {
    // Session ids are `<namespace>-<random>`.
    let ns = super::namespace_id(id.split_once('-').map_or("", |(ns, _)| ns))?;
    caller.writer(state, ns).await?;
    let session = uploads::session(&state.db, ns, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if session.user_id != caller.user.0 {
        return Err(ApiError::not_found());
    }
    Ok(session)
}

/// Refuses a session that can no longer take parts or a first commit.
pub(crate) fn ensure_open(s: &Session) -> ApiResult<()> {
    let now = driftless_store::db::now_ms();
    match s.state.as_str() {
        "open" if committing(s, now) => Err(ApiError::code(ErrorCode::UploadBusy)),
        "open" if s.expires_at_ms > now => Ok(()),
        "open" | "expired" => Err(ApiError::code(ErrorCode::UploadExpired)),
        _ => Err(ApiError::code(ErrorCode::UploadClosed)),
    }
}

/// Whether a commit of the session is running.
pub(crate) fn committing(s: &Session, now_ms: i64) -> bool {
    s.committing_until_ms.is_some_and(|t| t > now_ms)
}

fn result(op: &FileOp, outcome: Outcome) -> FileResult {
    FileResult {
        op_id: op.op_id().clone(),
        path: op.path().to_owned(),
        outcome,
    }
}

#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/uploads",
    tag = "uploads",
    summary = "Open an upload batch: what is already stored commits now; the rest waits for its chunks",
    params(("ns" = u64, Path, description = "Folder (namespace) id")),
    request_body = CreateUpload,
    responses((status = 200, description = "Per-file results, and the session with the chunks to send", body = CreatedUpload), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
    Json(req): Json<CreateUpload>,
) -> ApiResult<axum::Json<CreatedUpload>> {
    let ns = super::namespace_id(&ns)?;
    caller.writer(&state, ns).await?;
    if req.files.len() > MAX_BATCH {
        return Err(ApiError::new(
            ErrorCode::TooManyFiles,
            format!("at most {MAX_BATCH} operations per batch"),
        ));
    }
    // Validate everything first; find the chunks no valid put can do without.
    let max = state.settings.max_file_bytes;
    let checked: Vec<_> = req.files.iter().map(|f| validate::op(f, max)).collect();
    let mut wanted: Vec<ChunkHash> = Vec::new();
    for (op, c) in req.files.iter().zip(&checked) {
        if let (FileOp::Put(p), Ok(_)) = (op, c) {
            wanted.extend(p.chunks.iter().map(|c| c.hash));
        }
    }
    let mut conn = state.db.pool().acquire().await?;
    let missing: HashSet<ChunkHash> = chunks::missing_in(
        &mut conn,
        to_db(ns.0),
        chunks::Usable::OfferedTo(caller.device),
        wanted.into_iter(),
    )
    .await?
    .into_iter()
    .collect();
    drop(conn);

    // The live revision of every path a pending put would replace, read
    // once; a path an earlier operation of this batch writes is read again
    // after that operation commits. Operations that need no bytes commit in
    // order, many to a transaction, before anything after them that could
    // see them.
    let wants_bytes = |op: &FileOp| match op {
        FileOp::Put(p) => p.chunks.iter().any(|c| missing.contains(&c.hash)),
        _ => false,
    };
    let stale_paths: Vec<&SyncPath> = req
        .files
        .iter()
        .zip(&checked)
        .filter(|(op, _)| wants_bytes(op))
        .filter_map(|(_, c)| match c {
            Ok(FileChange::Put { path, .. }) => Some(path),
            _ => None,
        })
        .collect();
    let live = live_revs(&state.db, ns, &stale_paths).await?;
    let mut results: Vec<Option<FileResult>> = Vec::with_capacity(req.files.len());
    let mut queued: Vec<(usize, Commit)> = Vec::new();
    let mut written: HashSet<SyncPath> = HashSet::new();
    let mut pending = Vec::new();
    let mut needed = Vec::new();
    let mut seen = HashSet::new();
    for (op, change) in req.files.iter().zip(checked) {
        let change = match change {
            Ok(c) => c,
            Err((code, detail)) => {
                results.push(Some(result(op, Outcome::Error { code, detail })));
                continue;
            }
        };
        if let (FileOp::Put(p), FileChange::Put { path, .. }) = (op, &change)
            && wants_bytes(op)
        {
            // A stale base revision would only conflict at commit: say so
            // now, before the client sends any byte.
            let current = if written.contains(path) {
                flush(&state, &mut queued, &mut results, &req.files).await?;
                live_rev(&state.db, ns, path).await?
            } else {
                live.get(path).copied()
            };
            if let Some(current) = current
                && p.base_rev != Some(current)
            {
                results.push(Some(result(
                    op,
                    Outcome::Conflict {
                        current_rev: Some(current),
                    },
                )));
                continue;
            }
            needed.extend(
                p.chunks
                    .iter()
                    .map(|c| c.hash)
                    .filter(|h| missing.contains(h) && seen.insert(*h)),
            );
            pending.push(Pending {
                op: p.clone(),
                digest: hex(&validate::digest(op)),
            });
            results.push(Some(result(op, Outcome::Pending)));
            continue;
        }
        match &change {
            FileChange::Put { path, .. } | FileChange::Delete { path, .. } => {
                written.insert(path.clone());
            }
            FileChange::Move { from, to, .. } => {
                written.insert(from.clone());
                written.insert(to.clone());
            }
        }
        queued.push((
            results.len(),
            Commit {
                namespace: ns,
                op_id: op.op_id().clone(),
                digest: validate::digest(op),
                device: Some(caller.device),
                reuse: chunks::Usable::OfferedTo(caller.device),
                change,
            },
        ));
        results.push(None);
    }
    flush(&state, &mut queued, &mut results, &req.files).await?;
    let results: Vec<FileResult> = results.into_iter().flatten().collect();
    state.committed();
    state.metrics.outcomes(&results);
    if pending.is_empty() {
        return Ok(axum::Json(CreatedUpload {
            upload_id: None,
            expires_at_ms: None,
            needed,
            results,
        }));
    }
    let id = format!("{ns}-{}", random_token(16));
    let pack_id = random_token(16);
    let s3_upload_id = state.blob.create_multipart(&pack_key(&pack_id)).await?;
    let expires_at_ms =
        driftless_store::db::now_ms() + state.settings.upload_ttl.as_millis() as i64;
    let session = Session {
        namespace: ns,
        id: id.clone(),
        user_id: caller.user.0,
        device_id: to_db(caller.device.0),
        pack_id,
        s3_upload_id,
        state: "open".into(),
        results: None,
        expires_at_ms,
        committing_until_ms: None,
    };
    // The chunks the session's files name, once each: a part registration
    // looks up only its own.
    let mut lengths: Vec<(ChunkHash, u32)> = Vec::new();
    let mut named = HashSet::new();
    for p in &pending {
        for c in &p.op.chunks {
            if named.insert(c.hash) {
                lengths.push((c.hash, c.len));
            }
        }
    }
    let request = serde_json::to_string(&pending)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    uploads::create_session(&state.db, &session, &request, &lengths).await?;
    tracing::info!(namespace = %ns, upload = %id, files = pending.len(), chunks = needed.len(), "upload session created");
    let upload_id = UploadId::try_from(id).map_err(|_| ApiError::code(ErrorCode::Internal))?;
    Ok(axum::Json(CreatedUpload {
        upload_id: Some(upload_id),
        expires_at_ms: Some(expires_at_ms),
        needed,
        results,
    }))
}

pub(crate) fn hex(b: &[u8; 32]) -> String {
    ChunkHash::from_bytes(*b).to_string()
}

/// The chunks the session's pending puts still lack, given the parts S3 holds.
pub(crate) fn uncovered(
    pending: &[Pending],
    covered: &HashSet<ChunkHash>,
    present: &HashSet<ChunkHash>,
) -> Vec<ChunkHash> {
    let mut seen = HashSet::new();
    pending
        .iter()
        .flat_map(|p| p.op.chunks.iter().map(|c| c.hash))
        .filter(|h| !covered.contains(h) && !present.contains(h) && seen.insert(*h))
        .collect()
}

#[utoipa::path(
    get,
    path = "/v1/uploads/{id}",
    tag = "uploads",
    summary = "A session's state, as object storage has it (for resuming)",
    params(("id" = String, Path, description = "Upload session id")),
    responses((status = 200, description = "Parts done and chunks still needed", body = UploadStatus), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<UploadStatus>> {
    let s = owned_session(&state, &caller, &id).await?;
    let registered = uploads::parts(&state.db, s.namespace, &s.id).await?;
    // Ask S3, not our table: a part registered but never PUT is not done.
    let key = pack_key(&s.pack_id);
    let total: u64 = registered.iter().map(|p| p.size).sum();
    let busy = committing(&s, driftless_store::db::now_ms());
    let stored: HashMap<u32, u64> = match s.state.as_str() {
        // While a commit runs, S3 is mid-assembly: say so, ask nothing.
        "open" if busy => HashMap::new(),
        // A commit cut short after S3 assembled the parts: the whole pack
        // (unique to this session) is there, so every registered part is
        // stored, and the client's retried commit finishes the job.
        "open" if total > 0 && state.blob.size(&key).await? == Some(total) => {
            registered.iter().map(|p| (p.part_number, p.size)).collect()
        }
        "open" => state
            .blob
            .list_parts(&key, &s.s3_upload_id)
            .await
            .map(|parts| parts.into_iter().map(|p| (p.part_number, p.size)).collect())
            .unwrap_or_default(),
        _ => HashMap::new(),
    };
    let parts: Vec<PartState> = registered
        .iter()
        .map(|p| PartState {
            part_number: p.part_number,
            size: p.size,
            stored: stored.get(&p.part_number) == Some(&p.size),
        })
        .collect();
    let covered: HashSet<ChunkHash> = registered
        .iter()
        .filter(|p| stored.get(&p.part_number) == Some(&p.size))
        .flat_map(|p| p.chunks.iter().map(|c| c.hash))
        .collect();
    let request = uploads::session_request(&state.db, s.namespace, &s.id).await?;
    let pending: Vec<Pending> =
        serde_json::from_str(request.as_deref().unwrap_or("[]")).unwrap_or_default();
    let needed = if s.state == "open" && !busy {
        uncovered(&pending, &covered, &HashSet::new())
    } else {
        Vec::new()
    };
    let state_view = match s.state.as_str() {
        "open" if busy => UploadState::Committing,
        "committed" => UploadState::Committed,
        "aborted" => UploadState::Aborted,
        "open" if s.expires_at_ms > driftless_store::db::now_ms() => UploadState::Open,
        _ => UploadState::Expired,
    };
    let upload_id =
        UploadId::try_from(s.id.clone()).map_err(|_| ApiError::code(ErrorCode::Internal))?;
    Ok(axum::Json(UploadStatus {
        upload_id,
        state: state_view,
        expires_at_ms: s.expires_at_ms,
        parts,
        needed,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/uploads/{id}",
    tag = "uploads",
    summary = "Abort a session",
    params(("id" = String, Path, description = "Upload session id")),
    responses((status = 204, description = "Aborted"), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn abort(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    let s = owned_session(&state, &caller, &id).await?;
    if s.state == "committed" {
        return Err(ApiError::code(ErrorCode::UploadClosed));
    }
    if committing(&s, driftless_store::db::now_ms()) {
        return Err(ApiError::code(ErrorCode::UploadBusy));
    }
    state
        .blob
        .abort_multipart(&pack_key(&s.pack_id), &s.s3_upload_id)
        .await?;
    uploads::close_session(&state.db, s.namespace, &s.id, "aborted", None).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Commits the queued operations (in order, many to a transaction) and puts
/// each outcome in its slot.
async fn flush(
    state: &AppState,
    queued: &mut Vec<(usize, Commit)>,
    results: &mut [Option<FileResult>],
    ops: &[FileOp],
) -> ApiResult<()> {
    if queued.is_empty() {
        return Ok(());
    }
    let (slots, commits): (Vec<usize>, Vec<Commit>) = std::mem::take(queued).into_iter().unzip();
    let outcomes = commit_many(&state.db, &commits).await?;
    for (slot, outcome) in slots.into_iter().zip(outcomes) {
        results[slot] = Some(result(&ops[slot], outcome));
    }
    Ok(())
}
