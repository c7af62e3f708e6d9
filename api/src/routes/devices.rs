//! A user's devices: list them (name, last seen), sign one out on the
//! server (its next request is 401 and its long-polls end), sign out the
//! device asking.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use driftless_protocol::{DeviceId, DeviceView, ErrorCode, Problem};
use driftless_store::meta::accounts;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(revoke))
        .routes(routes!(logout))
}

#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "accounts",
    operation_id = "list_devices",
    summary = "The caller's user's devices, with when each was last seen",
    responses((status = 200, description = "Devices, oldest first", body = Vec<DeviceView>), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<DeviceView>>> {
    let all = accounts::devices_of(&state.db, caller.user).await?;
    Ok(axum::Json(
        all.into_iter()
            .map(|d| DeviceView {
                current: d.id == caller.device,
                id: d.id,
                name: d.name,
                created_at_ms: d.created_at_ms,
                last_seen_at_ms: d.last_seen_at_ms,
                expires_at_ms: d.expires_at_ms,
                revoked_at_ms: d.revoked_at_ms,
            })
            .collect(),
    ))
}

/// Signs `device` out: its token stops working now, and its long-polls
/// on this process end (elsewhere, at their timeout).
async fn sign_out(state: &AppState, caller: &Caller, device: DeviceId) -> ApiResult<StatusCode> {
    if !accounts::revoke_device_of(&state.db, caller.user, device).await? {
        return Err(ApiError::not_found());
    }
    let _ = state.revoked.send(device);
    tracing::info!(user = caller.user.0, device = %device, by = %caller.device, "device signed out on the server");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/devices/{id}",
    tag = "accounts",
    operation_id = "revoke_device",
    summary = "Sign one of the caller's user's devices out (its token stops working)",
    params(("id" = u64, Path, description = "Device id")),
    responses((status = 204, description = "Signed out"), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "a device id is a number"))?;
    sign_out(&state, &caller, DeviceId(id)).await
}

#[utoipa::path(
    post,
    path = "/v1/logout",
    tag = "accounts",
    operation_id = "logout",
    summary = "Sign the device asking out (its token stops working)",
    responses((status = 204, description = "Signed out"), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    let device = caller.device;
    sign_out(&state, &caller, device).await
}
