//! Downloads (DESIGN.md "Download"): a version's manifest with presigned
//! ranged GETs into packs, and a streaming `content` endpoint with `Range`
//! support for browsers and curl.
//!
//! The streaming endpoint decodes and re-hashes every chunk before sending any
//! of its bytes: it never serves bytes that do not match their BLAKE3 hash.

use std::collections::{BTreeMap, HashSet};

use axum::body::Body;
use axum::extract::{Path, State};
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
use crate::json::Query;
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

/// What a request's `Range` (and `If-Range`) ask of a file of `size`
/// bytes whose entity tag is `etag` (RFC 9110 §14).
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// The whole file: no range, a range the server ignores (not `bytes`,
    /// several ranges, bad syntax), or an `If-Range` for another version.
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// A valid range that lies outside the file (416).
    Unsatisfiable,
}

fn wanted(headers: &HeaderMap, size: u64, etag: &str) -> Wanted {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Wanted::Whole;
    };
    // A resumed download names the version it has part of: another
    // version means the whole file, never bytes of two versions mixed.
    if let Some(cond) = headers.get(header::IF_RANGE) {
        let same = cond.to_str().is_ok_and(|c| c.trim() == etag);
        if !same {
            return Wanted::Whole;
        }
    }
    let Some(spec) = spec.trim().strip_prefix("bytes=") else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole; // several ranges: the whole file (RFC 9110 allows it)
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Wanted::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => return Wanted::Unsatisfiable,
            Some(n) => (size.saturating_sub(n), size.saturating_sub(1)),
            None => return Wanted::Whole,
        },
        (s, "") => match num(s) {
            Some(s) => (s, size.saturating_sub(1)),
            None => return Wanted::Whole,
        },
        (s, e) => match (num(s), num(e)) {
            (Some(s), Some(e)) if s <= e => (s, e.min(size.saturating_sub(1))),
            _ => return Wanted::Whole,
        },
    };
    if size == 0 || start >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part(start, end)
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
    let (ns, v, located) = readable(&state, &caller, &ns, &q).await?;
    let etag = format!(
        "\"{}\"",
        v.content_hash.map(|h| h.to_string()).unwrap_or_default()
    );
    let (status, start, end) = match wanted(&headers, v.size, &etag) {
        Wanted::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e),
        Wanted::Whole => (StatusCode::OK, 0, v.size.saturating_sub(1)),
        Wanted::Unsatisfiable => {
            let mut resp = ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!("the file has {} bytes", v.size),
            )
            .into_response();
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
    // The first chunk is read and checked before any header goes out: a
    // bad one is a clean 503, not a 200 cut short. A later one that fails
    // (bit rot since the verifier passed it) ends the body early, which the
    // client sees by its length, and is marked corrupt at once so that the
    // next request is refused before its headers and the devices holding
    // the bytes are asked for them.
    let mut plan = plan.into_iter();
    let mut dec = Decoder::new().map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
    let first = match plan.next() {
        Some(item) => match serve_chunk(&state, ns, &mut dec, &item).await {
            Ok(b) => Some(b),
            Err(e) => {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("chunk {} cannot be served: {e}", item.0),
                ));
            }
        },
        None => None,
    };
    let rest = futures_util::stream::unfold(
        (plan, dec, state.clone()),
        move |(mut plan, mut dec, state)| async move {
            let item = plan.next()?;
            let result = serve_chunk(&state, ns, &mut dec, &item)
                .await
                .map_err(std::io::Error::other);
            Some((result, (plan, dec, state)))
        },
    );
    use futures_util::StreamExt;
    let stream = futures_util::stream::iter(first.map(Ok::<Bytes, std::io::Error>)).chain(rest);
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

/// One planned chunk: read from its pack, decoded, checked against its
/// hash, cut to its slice. A chunk that fails is marked corrupt (with
/// `repair` entries for the live files that use it).
async fn serve_chunk(
    state: &AppState,
    ns: NamespaceId,
    dec: &mut Decoder,
    (hash, s, from, to): &(ChunkHash, Stored, usize, usize),
) -> Result<Bytes, String> {
    let raw = state
        .blob
        .get_range(&pack_key(&s.pack_id), s.offset, u64::from(s.stored_len))
        .await
        .map_err(|e| e.to_string())?;
    let codec = if s.codec == 1 {
        Codec::Zstd
    } else {
        Codec::None
    };
    let checked = dec
        .decode(codec, &raw, s.raw_len as usize)
        .ok()
        .filter(|bytes| blake3::hash(bytes).as_bytes() == hash.as_bytes())
        .and_then(|bytes| bytes.get(*from..*to).map(Bytes::copy_from_slice));
    match checked {
        Some(b) => Ok(b),
        None => {
            tracing::error!(namespace = %ns, chunk = %hash, pack = %s.pack_id,
                "stored chunk fails its hash while served; marked corrupt");
            if let Err(e) = mark_corrupt(state, ns, &s.pack_id, *hash).await {
                tracing::warn!(error = %e, "could not mark the chunk corrupt");
            }
            Err("the stored chunk fails its hash".into())
        }
    }
}

/// Marks a chunk that failed while served corrupt (whatever its state)
/// and reports the live files that use it (`repair` entries).
async fn mark_corrupt(
    state: &AppState,
    ns: NamespaceId,
    pack: &str,
    hash: ChunkHash,
) -> Result<(), sqlx::Error> {
    use driftless_store::meta::{chunks, repair};
    let mut tx = state.db.begin().await?;
    let changed = chunks::mark_corrupt(&mut tx, ns, pack, chunks::Bad::Hashes(&[hash])).await?;
    if !changed.is_empty() {
        let set: HashSet<ChunkHash> = changed.into_iter().collect();
        let damaged = repair::live_users(&mut tx, ns, &set).await?;
        repair::report(&mut tx, ns, &damaged).await?;
    }
    tx.commit().await?;
    state.committed();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(range: &str, if_range: Option<&str>) -> Wanted {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, range.parse().unwrap());
        if let Some(c) = if_range {
            h.insert(header::IF_RANGE, c.parse().unwrap());
        }
        wanted(&h, 1000, "\"v1\"")
    }

    #[test]
    fn ranges_are_honoured_ignored_or_refused_as_rfc_9110_says() {
        assert_eq!(asked("bytes=0-99", None), Wanted::Part(0, 99));
        assert_eq!(asked("bytes=990-", None), Wanted::Part(990, 999));
        assert_eq!(asked("bytes=-5", None), Wanted::Part(995, 999));
        assert_eq!(asked("bytes=900-5000", None), Wanted::Part(900, 999));
        assert_eq!(asked("bytes=1000-", None), Wanted::Unsatisfiable);
        assert_eq!(asked("bytes=-0", None), Wanted::Unsatisfiable);
        // Malformed or not understood: ignored, the whole file.
        for bad in [
            "bytes=x-y",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=",
            "bytes=--1",
            "bytes=+1-2",
        ] {
            assert_eq!(asked(bad, None), Wanted::Whole, "{bad}");
        }
        // If-Range: the range only for the version named.
        assert_eq!(asked("bytes=0-9", Some("\"v1\"")), Wanted::Part(0, 9));
        assert_eq!(asked("bytes=0-9", Some("\"v0\"")), Wanted::Whole);
        assert_eq!(
            asked("bytes=0-9", Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Wanted::Whole
        );
    }
}
