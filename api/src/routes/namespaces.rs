//! Folders: the caller's folders, new shared folders, invitations (a share
//! is an invitation the invitee accepts, never a fact imposed on them), and
//! members' roles.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use driftless_protocol::{CreateNamespace, ErrorCode, InvitationView, NamespaceId, NamespaceView};
use driftless_store::meta::accounts::{self, MembershipChange, Role};
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
        .routes(routes!(share, unshare))
        .routes(routes!(invitations))
        .routes(routes!(accept, decline))
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
    if let Err(e) = crate::names::check("name", &req.name, 255) {
        return Err(ApiError::new(ErrorCode::InvalidRequest, e));
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
    operation_id = "share_folder",
    summary = "Invite a user to a folder, or change a member's role (owners only)",
    description = "A user who is not yet a member is invited: they become a member only when they accept (`POST /v1/invitations/{ns}`). The answer is the same whether or not a user of that name exists. A member's role changes at once; the last owner cannot be demoted.",
    params(("ns" = u64, Path, description = "Folder (namespace) id"), ("user" = String, Path, description = "User name")),
    request_body = Membership,
    responses((status = 202, description = "Invited (if such a user exists)"), (status = 204, description = "A member's role changed"), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn share(
    State(state): State<AppState>,
    caller: Caller,
    Path((ns, user)): Path<(String, String)>,
    Json(req): Json<Membership>,
) -> ApiResult<StatusCode> {
    let ns = super::namespace_id(&ns)?;
    owner_only(&state, &caller, ns).await?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::new(ErrorCode::InvalidRequest, "role is owner, editor or viewer")
    })?;
    let Some((member, _)) = accounts::user_by_name(&state.db, &user).await? else {
        // Said exactly as for a user who exists: sharing does not tell who
        // has an account.
        return Ok(StatusCode::ACCEPTED);
    };
    match accounts::set_role(&state.db, ns, member, role).await? {
        MembershipChange::Done => {
            tracing::info!(namespace = %ns, member = member.0, role = role.as_str(), "member's role changed");
            Ok(StatusCode::NO_CONTENT)
        }
        MembershipChange::LastOwner => Err(last_owner()),
        MembershipChange::NotMember => {
            accounts::invite(&state.db, ns, member, role, caller.user).await?;
            tracing::info!(namespace = %ns, invitee = member.0, role = role.as_str(), "user invited to a folder");
            Ok(StatusCode::ACCEPTED)
        }
    }
}

async fn owner_only(state: &AppState, caller: &Caller, ns: NamespaceId) -> ApiResult<()> {
    if caller.role(state, ns).await? != Role::Owner {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only an owner can share this folder",
        ));
    }
    Ok(())
}

fn last_owner() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "a folder keeps at least one owner, and a home folder its user: make another member owner first",
    )
}

#[utoipa::path(
    delete,
    path = "/v1/namespaces/{ns}/members/{user}",
    tag = "folders",
    operation_id = "unshare_folder",
    summary = "Remove a member or withdraw an invitation (owners), or leave a folder (anyone, as themselves)",
    params(("ns" = u64, Path, description = "Folder (namespace) id"), ("user" = String, Path, description = "User name")),
    responses((status = 204, description = "Removed (or nothing to remove)"), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn unshare(
    State(state): State<AppState>,
    caller: Caller,
    Path((ns, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let ns = super::namespace_id(&ns)?;
    let role = caller.role(&state, ns).await?;
    let member = accounts::user_by_name(&state.db, &user)
        .await?
        .map(|(u, _)| u);
    let myself = member == Some(caller.user);
    if role != Role::Owner && !myself {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only an owner can remove others from this folder",
        ));
    }
    let Some(member) = member else {
        return Ok(StatusCode::NO_CONTENT);
    };
    match accounts::remove_member(&state.db, ns, member).await? {
        MembershipChange::LastOwner => Err(last_owner()),
        MembershipChange::Done | MembershipChange::NotMember => {
            tracing::info!(namespace = %ns, member = member.0, by = caller.user.0, "member removed");
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/invitations",
    tag = "folders",
    operation_id = "list_invitations",
    summary = "The folders the caller is invited to",
    responses((status = 200, description = "Invitations, oldest first", body = Vec<InvitationView>), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn invitations(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<InvitationView>>> {
    let all = accounts::invitations_of(&state.db, caller.user).await?;
    Ok(axum::Json(
        all.into_iter()
            .map(|i| InvitationView {
                namespace: i.namespace,
                name: i.name,
                role: i.role.as_str().into(),
                invited_by: i.invited_by,
                created_at_ms: i.created_at_ms,
            })
            .collect(),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/invitations/{ns}",
    tag = "folders",
    operation_id = "accept_invitation",
    summary = "Accept an invitation: the caller becomes a member (never their home folder)",
    params(("ns" = u64, Path, description = "Folder (namespace) id")),
    responses((status = 200, description = "Now a member", body = NamespaceView), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
) -> ApiResult<axum::Json<NamespaceView>> {
    let ns = super::namespace_id(&ns)?;
    let role = accounts::accept_invitation(&state.db, ns, caller.user)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let view = accounts::namespaces_of(&state.db, caller.user)
        .await?
        .into_iter()
        .find(|n| n.id == ns)
        .map(|n| NamespaceView {
            id: n.id,
            name: n.name,
            home: n.is_home,
            role: n.role.as_str().into(),
        })
        .ok_or_else(ApiError::not_found)?;
    tracing::info!(namespace = %ns, user = caller.user.0, role = role.as_str(), "invitation accepted");
    Ok(axum::Json(view))
}

#[utoipa::path(
    delete,
    path = "/v1/invitations/{ns}",
    tag = "folders",
    operation_id = "decline_invitation",
    summary = "Decline an invitation",
    params(("ns" = u64, Path, description = "Folder (namespace) id")),
    responses((status = 204, description = "Declined"), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn decline(
    State(state): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
) -> ApiResult<StatusCode> {
    let ns = super::namespace_id(&ns)?;
    if !accounts::decline_invitation(&state.db, ns, caller.user).await? {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}
