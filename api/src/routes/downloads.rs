//! Downloads (DESIGN.md "Download"): a version's manifest with presigned
//! ranged GETs into packs, and a streaming `content` endpoint with `Range`
//! support for browsers and curl.
//!
//! The streaming endpoint decodes and re-hashes every chunk before sending any
//! of its bytes: it never serves bytes that do not match their BLAKE3 hash.

use std::collections::{BTreeMap, HashSet};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use driftless_chunker::{Codec, Decoder};
use driftless_protocol::{
    ChunkHash, DownloadManifest, ErrorCode, FetchRange, ManifestChunk, NamespaceId, RangeChunk,
    Rev, StoredCodec,
};
use driftless_store::meta::versions::{self, Stored, Version};
use driftless_store::pack_key;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use driftless_protocol::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest single ranged GET: coalescing stops here.
const MAX_RANGE: u64 = 64 << 20;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(manifest))
        .routes(routes!(content))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct FileQuery {
    /// The file's path.
    path: String,
    /// A revision (default: the live one).
    rev: Option<u64>,
}

/// The live (or requested) version of a file the caller can read.
async fn readable(
    state: &AppState,
    caller: &Caller,
    ns: &str,
    q: &FileQuery,
) -> ApiResult<(NamespaceId, Version, Vec<(ChunkHash, Stored)>)> {
    let ns = super::namespace_id(ns)?;
    caller.role(state, ns).await?;
    let path = super::sync_path(&q.path)?;
    let v = versions::version(&state.db, ns, &path, q.rev.map(Rev))
        .await?
        .filter(|v| !v.deleted)
        .ok_or_else(ApiError::not_found)?;
    let mut seen = HashSet::new();
    let distinct: Vec<ChunkHash> = v.manifest.hashes().filter(|h| seen.insert(*h)).collect();
    let mut conn = state.db.pool().acquire().await?;
    let mut found = versions::locations(&mut conn, ns, &distinct).await?;
    let mut located = Vec::with_capacity(distinct.len());
    for h in distinct {
        let stored = found.remove(&h).ok_or_else(|| {
            tracing::error!(namespace = %ns, chunk = %h, "committed version references an unknown chunk");
            ApiError::code(ErrorCode::Internal)
        })?;
        if stored.state == 2 {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("chunk {h} failed verification and awaits re-upload"),
            ));
        }
        located.push((h, stored));
    }
    // Every chunk must fill exactly its slot in the file: a version whose
    // manifest gives a chunk another length than the stored one (committed
    // before commits checked this) is never served as if it were whole.
    let raw: std::collections::HashMap<ChunkHash, u32> =
        located.iter().map(|(h, s)| (*h, s.raw_len)).collect();
    if let Some(bad) = v
        .manifest
        .specs()
        .find(|c| raw.get(&c.hash) != Some(&c.len))
    {
        tracing::error!(namespace = %ns, path = %path, rev = v.rev.0, chunk = %bad.hash,
            "committed version gives a chunk another length than the stored one");
        return Err(ApiError::code(ErrorCode::Internal));
    }
    Ok((ns, v, located))
}

fn codec(c: i64) -> StoredCodec {
    if c == 1 {
        StoredCodec::Zstd
    } else {
        StoredCodec::None
    }
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/manifest",
    tag = "files",
    summary = "A version's chunks with presigned ranged GETs to fetch them from storage",
    params(("ns" = u64, Path, description = "Folder (namespace) id"), FileQuery),
    responses((status = 200, description = "The manifest", body = DownloadManifest), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn manifest(
    State(state): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
    Query(q): Query<FileQuery>,
) -> ApiResult<axum::Json<DownloadManifest>> {
    let (_, v, mut located) = readable(&state, &caller, &ns, &q).await?;
    let mut offset = 0;
    let chunks = v
        .manifest
        .specs()
        .map(|s| {
            let c = ManifestChunk {
                hash: s.hash,
                len: s.len,
                offset,
            };
            offset += u64::from(s.len);
            c
        })
        .collect();
    // Each distinct chunk once, in pack order, adjacent ones in one GET.
    located.sort_by(|a, b| (&a.1.pack_id, a.1.offset).cmp(&(&b.1.pack_id, b.1.offset)));
    let mut groups: Vec<(String, u64, u64, Vec<RangeChunk>)> = Vec::new();
    for (hash, s) in &located {
        let chunk = |at| RangeChunk {
            hash: *hash,
            at,
            stored_len: s.stored_len,
            raw_len: s.raw_len,
            codec: codec(s.codec),
        };
        match groups.last_mut() {
            Some((pack, start, len, cs))
                if *pack == s.pack_id
                    && *start + *len == s.offset
                    && *len + u64::from(s.stored_len) <= MAX_RANGE =>
            {
                cs.push(chunk(*len));
                *len += u64::from(s.stored_len);
            }
            _ => groups.push((
                s.pack_id.clone(),
                s.offset,
                u64::from(s.stored_len),
                vec![chunk(0)],
            )),
        }
    }
    let mut ranges = Vec::with_capacity(groups.len());
    for (pack, start, length, chunks) in groups {
        let p = state
            .blob
            .presign_get_range(&pack_key(&pack), start, length)
            .await?;
        ranges.push(FetchRange {
            url: p.url,
            headers: p.headers.into_iter().collect::<BTreeMap<_, _>>(),
            expires_at_ms: p.expires_at_ms,
            length,
            chunks,
        });
    }
    Ok(axum::Json(DownloadManifest {
        path: q.path,
        rev: v.rev,
        size: v.size,
        content_hash: v
            .content_hash
            .ok_or_else(|| ApiError::code(ErrorCode::Internal))?,
        mtime_ms: v.mtime_ms,
        chunking: v.chunking,
        chunks,
        ranges,
    }))
}

/// Parses a single `bytes=` range against `size`: `Ok(None)` for no (or an
/// ignorable multi-) range, `Err(())` when unsatisfiable.
fn byte_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: answer with the whole file (RFC 9110 allows it)
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (s, e) => {
            let (s, e): (u64, u64) = (s.parse().map_err(|_| ())?, e.parse().map_err(|_| ())?);
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if size == 0 || start > end || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/content",
    tag = "files",
    summary = "A version's bytes through the API (verified, decompressed; Range supported)",
    params(("ns" = u64, Path, description = "Folder (namespace) id"), FileQuery),
    responses((status = 200, description = "The whole file", content_type = "application/octet-stream", body = Vec<u8>), (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn content(
    State(state): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
    Query(q): Query<FileQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, v, located) = readable(&state, &caller, &ns, &q).await?;
    let etag = format!(
        "\"{}\"",
        v.content_hash.map(|h| h.to_string()).unwrap_or_default()
    );
    let (status, start, end) = match byte_range(&headers, v.size) {
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Ok(None) => (StatusCode::OK, 0, v.size.saturating_sub(1)),
        Err(()) => {
            let mut resp =
                ApiError::new(ErrorCode::InvalidRequest, "range not satisfiable").into_response();
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", v.size))
                    .unwrap_or(HeaderValue::from_static("bytes */0")),
            );
            return Ok(resp);
        }
    };
    let length = if v.size == 0 { 0 } else { end - start + 1 };
    // The chunks overlapping [start, end], with the slice of each to send.
    let stored: std::collections::HashMap<ChunkHash, Stored> = located.into_iter().collect();
    let mut plan = Vec::new();
    let mut offset = 0u64;
    for spec in v.manifest.specs() {
        let (c_start, c_end) = (offset, offset + u64::from(spec.len));
        offset = c_end;
        if v.size == 0 || c_end <= start || c_start > end {
            continue;
        }
        let from = start.saturating_sub(c_start) as usize;
        let to = ((end + 1).min(c_end) - c_start) as usize;
        let Some(s) = stored.get(&spec.hash) else {
            return Err(ApiError::code(ErrorCode::Internal));
        };
        plan.push((spec.hash, s.clone(), from, to));
    }
    let blob = state.blob.clone();
    let stream = futures_util::stream::unfold(
        (plan.into_iter(), Decoder::new().ok()),
        move |(mut plan, mut dec)| {
            let blob = blob.clone();
            async move {
                let (hash, s, from, to) = plan.next()?;
                let result = async {
                let dec = dec.as_mut().ok_or_else(|| std::io::Error::other("zstd decoder unavailable"))?;
                let raw = blob
                    .get_range(&pack_key(&s.pack_id), s.offset, u64::from(s.stored_len))
                    .await
                    .map_err(std::io::Error::other)?;
                let codec = if s.codec == 1 { Codec::Zstd } else { Codec::None };
                let bytes = dec.decode(codec, &raw, s.raw_len as usize).map_err(std::io::Error::other)?;
                if blake3::hash(bytes).as_bytes() != hash.as_bytes() {
                    tracing::error!(chunk = %hash, "stored chunk fails its hash; download aborted");
                    return Err(std::io::Error::other("stored chunk fails its hash"));
                }
                let slice = bytes.get(from..to).ok_or_else(|| std::io::Error::other("stored chunk is shorter than its slot"))?;
                Ok(Bytes::copy_from_slice(slice))
            }
            .await;
                Some((result, (plan, dec)))
            }
        },
    );
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(e) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, e);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(r) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", v.size))
    {
        h.insert(header::CONTENT_RANGE, r);
    }
    Ok(resp)
}
