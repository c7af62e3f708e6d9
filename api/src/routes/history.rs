//! A file's version history and the restore of an earlier version.
//!
//! A restore is a new version with an old manifest: no bytes move, the
//! journal records it like any edit, and it conflicts like any edit when the
//! file changed since `base_rev`.

use axum::extract::{Path, State};
use driftless_protocol::{
    DeviceId, ErrorCode, NamespaceId, Outcome, RestoreRequest, SyncPath, VersionView,
};
use driftless_store::meta::commit::{Commit, FileChange, commit};
use driftless_store::meta::versions;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{Json, Query};
use crate::state::AppState;
use driftless_protocol::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(restore))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// The file's path.
    path: String,
    /// Most versions returned (default 100, at most 1000).
    limit: Option<u32>,
}

fn parse(ns: &str, path: &str) -> ApiResult<(NamespaceId, SyncPath)> {
    Ok((super::namespace_id(ns)?, super::sync_path(path)?))
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/versions",
    tag = "files",
    summary = "A file's versions, newest first",
    params(("ns" = u64, Path, description = "Folder (namespace) id"), HistoryQuery),
    responses((status = 200, description = "Versions", body = Vec<VersionView>), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<axum::Json<Vec<VersionView>>> {
    let (ns, path) = parse(&ns, &q.path)?;
    caller.role(&state, ns).await?;
    let entries = versions::history(&state.db, ns, &path, q.limit.unwrap_or(100).min(1000)).await?;
    if entries.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(axum::Json(
        entries
            .into_iter()
            .map(|e| VersionView {
                rev: e.rev,
                deleted: e.deleted,
                size: e.size,
                content_hash: e.content_hash,
                mtime_ms: e.mtime_ms,
                moved_from: e.moved_from,
                device_id: e.device_id.map(DeviceId),
                committed_at_ms: e.committed_at_ms,
            })
            .collect(),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/restore",
    tag = "files",
    summary = "Restore an earlier version (a new version, no bytes moved)",
    params(("ns" = u64, Path, description = "Folder (namespace) id")),
    request_body = RestoreRequest,
    responses((status = 200, description = "The outcome: committed, or a conflict", body = Outcome), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
    Json(req): Json<RestoreRequest>,
) -> ApiResult<axum::Json<Outcome>> {
    let (ns, path) = parse(&ns, &req.path)?;
    caller.writer(&state, ns).await?;
    let old = versions::version(&state.db, ns, &path, Some(req.rev))
        .await?
        .ok_or_else(ApiError::not_found)?;
    let content_hash = match (old.deleted, old.content_hash) {
        (false, Some(h)) => h,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "that revision is a deletion; restore an earlier one",
            ));
        }
    };
    let digest =
        *blake3::hash(format!("restore {ns} {path} {} {:?}", req.rev, req.base_rev).as_bytes())
            .as_bytes();
    let c = Commit {
        namespace: ns,
        op_id: req.op_id,
        digest,
        device: Some(caller.device),
        // A version already committed here: its chunks are the folder's.
        reuse: driftless_store::meta::chunks::Usable::Stored,
        change: FileChange::Put {
            path,
            base_rev: req.base_rev,
            mtime_ms: old.mtime_ms,
            chunking: old.chunking,
            manifest: old.manifest,
            content_hash,
        },
    };
    let outcome = commit(&state.db, &c).await?;
    state.committed();
    Ok(axum::Json(outcome))
}
