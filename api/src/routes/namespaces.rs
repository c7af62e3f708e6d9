//! `GET /v1/namespaces`: the folders the caller belongs to.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use driftless_protocol::{CreateNamespace, ErrorCode, NamespaceView};
use driftless_store::meta::accounts::{self, Role};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/namespaces", get(list).post(create))
        .route("/v1/namespaces/{ns}/members/{user}", put(share))
}

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
#[derive(Serialize, Deserialize)]
pub struct Membership {
    /// `owner`, `editor` or `viewer`.
    pub role: String,
}

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
