//! Device bearer tokens and password login.
//!
//! A token is 256 random bits (`dl_` + base64url); the database keeps only its
//! BLAKE3 hash, which is enough for a secret of that entropy. Passwords are
//! hashed with argon2id. Missing, unknown and revoked tokens all answer 401
//! `unauthorized`; wrong names and wrong passwords both answer `login_failed`.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use driftless_protocol::Problem;
use driftless_protocol::{DeviceId, ErrorCode, LoginRequest, LoginResponse, NamespaceId};
use driftless_store::meta::accounts::{self, DeviceAuth, Role, UserId};
use rand::RngCore;

use crate::error::{ApiError, ApiResult};
use crate::json::Json;
use crate::state::AppState;

const TOKEN_PREFIX: &str = "dl_";

/// A new bearer token and the hash to store.
pub fn new_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    let hash = token_hash(&token);
    (token, hash)
}

fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// An argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
        .to_string())
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The authenticated device making a request.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// The device.
    pub device: DeviceId,
    /// Its user.
    pub user: UserId,
}

impl Caller {
    /// The caller's role in `ns`; not a member answers exactly like a missing namespace.
    pub async fn role(&self, state: &AppState, ns: NamespaceId) -> ApiResult<Role> {
        accounts::role_in(&state.db, self.user, ns)
            .await?
            .ok_or_else(ApiError::not_found)
    }

    /// Like [`Caller::role`], and the role must allow writing.
    pub async fn writer(&self, state: &AppState, ns: NamespaceId) -> ApiResult<Role> {
        let role = self.role(state, ns).await?;
        if role.can_write() {
            Ok(role)
        } else {
            Err(ApiError::code(ErrorCode::Forbidden))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| t.starts_with(TOKEN_PREFIX) && t.len() < 100)
            .ok_or_else(|| ApiError::code(ErrorCode::Unauthorized))?;
        match accounts::device_by_token_hash(&state.db, &token_hash(token)).await? {
            Some(DeviceAuth { device_id, user_id }) => Ok(Caller {
                device: device_id,
                user: user_id,
            }),
            None => Err(ApiError::code(ErrorCode::Unauthorized)),
        }
    }
}

/// Issues a device token for a user name and password.
#[utoipa::path(
    post,
    path = "/v1/login",
    tag = "accounts",
    summary = "Sign a device in with a user name and password; returns its token",
    request_body = LoginRequest,
    responses((status = 200, description = "The new device's token", body = LoginResponse), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json"))
)]
pub async fn login(
    State(state): State<AppState>,
    Json(req): Json<LoginRequest>,
) -> ApiResult<axum::Json<LoginResponse>> {
    if req.device_name.is_empty() || req.device_name.len() > 100 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "device_name must be 1 to 100 bytes",
        ));
    }
    let found = accounts::user_by_name(&state.db, &req.user).await?;
    // Verify against a dummy hash when the user is unknown, so timing does not
    // reveal which user names exist.
    let (user, phc) = match found {
        Some((user, Some(phc))) => (Some(user), phc),
        _ => (None, state.dummy_password_hash.clone()),
    };
    let password = req.password;
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        return Err(ApiError::code(ErrorCode::LoginFailed));
    };
    let (token, hash) = new_token();
    let device_id = accounts::create_device(&state.db, user, &req.device_name, &hash).await?;
    tracing::info!(user = user.0, device = %device_id, "device logged in");
    Ok(axum::Json(LoginResponse { token, device_id }))
}
