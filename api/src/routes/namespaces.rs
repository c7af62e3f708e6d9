//! `GET /v1/namespaces`: the folders the caller belongs to.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use driftless_protocol::{CreateNamespace, ErrorCode, NamespaceView};
use driftless_store::meta::accounts::{self, Role};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::state::AppState;
use driftless_protocol::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(share))
}

#[utoipa::path(
    get,
    path = "/v1/namespaces",
    tag = "folders",
    summary = "The folders the caller belongs to",
    responses((status = 200, description = "Folders, with the caller's role", body = Vec<NamespaceView>), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<NamespaceView>>> {
    let all = accounts::namespaces_of(&state.db, caller.user).await?;
    Ok(axum::Json(
        all.into_iter()
            .map(|n| NamespaceView {
                id: n.id,
                name: n.name,
                home: n.is_home,
                role: n.role.as_str().into(),
            })
            .collect(),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/namespaces",
    tag = "folders",
    summary = "Create a shared folder (the caller owns it)",
    request_body = CreateNamespace,
    responses((status = 201, description = "Created", body = NamespaceView), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateNamespace>,
) -> ApiResult<(StatusCode, axum::Json<NamespaceView>)> {
    if req.name.is_empty() || req.name.len() > 255 || req.name.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "name must be 1 to 255 bytes without control characters",
        ));
    }
    let id = accounts::create_shared_namespace(&state.db, caller.user, &req.name).await?;
    let view = NamespaceView {
        id,
        name: req.name,
        home: false,
        role: Role::Owner.as_str().into(),
    };
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// `PUT /v1/namespaces/{ns}/members/{user}` body.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Membership {
    /// `owner`, `editor` or `viewer`.
    pub role: String,
}

#[utoipa::path(
    put,
    path = "/v1/namespaces/{ns}/members/{user}",
    tag = "folders",
    summary = "Share a folder with a user, or change their role (owners only)",
    params(("ns" = u64, Path, description = "Folder (namespace) id"), ("user" = String, Path, description = "User name")),
    request_body = Membership,
    responses((status = 204, description = "Shared"), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn share(
    State(state): State<AppState>,
    caller: Caller,
    Path((ns, user)): Path<(String, String)>,
    Json(req): Json<Membership>,
) -> ApiResult<StatusCode> {
    let ns = super::namespace_id(&ns)?;
    if caller.role(&state, ns).await? != Role::Owner {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only an owner can share this folder",
        ));
    }
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidRequest, "role is owner, editor or viewer")
    })?;
    let (member, _) = accounts::user_by_name(&state.db, &user)
        .await?
        .ok_or_else(ApiError::not_found)?;
    accounts::set_membership(&state.db, ns, member, role).await?;
    tracing::info!(namespace = %ns, member = member.0, role = role.as_str(), "folder shared");
    Ok(StatusCode::NO_CONTENT)
}
