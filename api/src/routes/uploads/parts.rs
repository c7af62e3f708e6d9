//! `POST /v1/uploads/{id}/parts`: register a part and presign its PUT.
//!
//! The part's size and CRC32C are signed into the URL; what it holds (which
//! chunks, stored how) is recorded so the commit knows where each chunk lands.

use std::collections::{BTreeMap, HashSet};

use axum::extract::{Path, State};
use base64::Engine;
use driftless_protocol::{
    ChunkHash, ErrorCode, MAX_PART_SIZE, MAX_PARTS, PartRequest, PresignedPart, StoredCodec,
};
use driftless_store::meta::uploads::{self, ClaimRefused, Part};
use driftless_store::pack_key;

use super::{Pending, ensure_open, owned_session};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::state::AppState;
use driftless_protocol::Problem;

#[utoipa::path(
    post,
    path = "/v1/uploads/{id}/parts",
    tag = "uploads",
    summary = "Register a part (its size, CRC32C and chunks) and get its presigned PUT URL",
    params(("id" = String, Path, description = "Upload session id")),
    request_body = PartRequest,
    responses((status = 200, description = "Where to PUT the part", body = PresignedPart), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
pub(super) async fn register(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<PartRequest>,
) -> ApiResult<axum::Json<PresignedPart>> {
    let s = owned_session(&state, &caller, &id).await?;
    ensure_open(&s)?;
    let n = req.part_number;
    if !(1..=MAX_PARTS).contains(&n) {
        return Err(ApiError::new(
            ErrorCode::PartInvalid,
            format!("part number {n} is outside 1..={MAX_PARTS}"),
        ));
    }
    if req.size == 0 || req.size > MAX_PART_SIZE {
        return Err(ApiError::new(
            ErrorCode::PartInvalid,
            format!("part {n}: size {} is outside 1..={MAX_PART_SIZE}", req.size),
        ));
    }
    let stored: u64 = req.chunks.iter().map(|c| u64::from(c.stored_len)).sum();
    if stored != req.size {
        return Err(ApiError::new(
            ErrorCode::SizeMismatch,
            format!(
                "part {n}: chunks hold {stored} bytes, size says {}",
                req.size
            ),
        ));
    }
    let crc = base64::engine::general_purpose::STANDARD
        .decode(&req.checksum_crc32c)
        .ok()
        .filter(|b| b.len() == 4);
    if crc.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "checksum_crc32c must be base64 of 4 bytes",
        ));
    }
    // Every chunk must be one this session's files name, at its declared
    // length, once, and in this part only: a part cannot list a chunk
    // 100,000 times to make the commit do 100,000 times the work.
    let mut distinct = HashSet::with_capacity(req.chunks.len());
    let mut claim = Vec::with_capacity(req.chunks.len());
    for (i, c) in req.chunks.iter().enumerate() {
        if !distinct.insert(c.hash) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("part {n}: chunk {i} ({}) is listed twice", c.hash),
            ));
        }
        let fits = match c.codec {
            StoredCodec::None => c.stored_len == c.raw_len,
            StoredCodec::Zstd => c.stored_len > 0 && c.stored_len < c.raw_len,
        };
        if !fits {
            return Err(ApiError::new(
                ErrorCode::SizeMismatch,
                format!(
                    "part {n}: chunk {i} stored length {} does not fit its codec",
                    c.stored_len
                ),
            ));
        }
        claim.push((c.hash, c.raw_len));
    }
    if !uploads::has_session_chunks(&state.db, s.namespace, &s.id).await? {
        // A session opened before the server kept chunk lists: once.
        let request = uploads::session_request(&state.db, s.namespace, &s.id).await?;
        let pending: Vec<Pending> =
            serde_json::from_str(request.as_deref().unwrap_or("[]")).unwrap_or_default();
        let mut seen = HashSet::new();
        let lengths: Vec<(ChunkHash, u32)> = pending
            .iter()
            .flat_map(|p| p.op.chunks.iter().map(|c| (c.hash, c.len)))
            .filter(|(h, _)| seen.insert(*h))
            .collect();
        uploads::backfill_session_chunks(&state.db, s.namespace, &s.id, &lengths).await?;
    }
    match uploads::claim_chunks(&state.db, s.namespace, &s.id, n, &claim).await? {
        Ok(()) => {}
        Err(ClaimRefused::NotInSession(h)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("part {n}: chunk {h} is not part of this upload"),
            ));
        }
        Err(ClaimRefused::Length { hash, expected }) => {
            return Err(ApiError::new(
                ErrorCode::SizeMismatch,
                format!("part {n}: chunk {hash} has raw length {expected} in the manifest"),
            ));
        }
        Err(ClaimRefused::InOtherPart(h, other)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("part {n}: chunk {h} is registered in another part ({other}) already"),
            ));
        }
    }
    let part = Part {
        part_number: n,
        size: req.size,
        checksum: req.checksum_crc32c.clone(),
        chunks: req.chunks,
    };
    uploads::put_part(&state.db, s.namespace, &s.id, &part).await?;
    let presigned = state
        .blob
        .presign_upload_part(
            &pack_key(&s.pack_id),
            &s.s3_upload_id,
            n,
            req.size,
            &req.checksum_crc32c,
        )
        .await?;
    Ok(axum::Json(PresignedPart {
        part_number: n,
        url: presigned.url,
        method: presigned.method,
        headers: presigned.headers.into_iter().collect::<BTreeMap<_, _>>(),
        expires_at_ms: presigned.expires_at_ms,
    }))
}
