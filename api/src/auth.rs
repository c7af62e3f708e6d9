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
use std::sync::Arc;

use driftless_store::meta::accounts::{self, Role, TokenStatus, UserId};

use crate::limits::Slot;
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

/// The authenticated device making a request. It holds one of its user's
/// request slots for as long as the handler runs: one user cannot take
/// every request the process will run.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The device.
    pub device: DeviceId,
    /// Its user.
    pub user: UserId,
    _slot: Option<Arc<Slot<i64>>>,
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

/// Why a request is not signed in, for the client (`detail`) and the log.
fn unauthorized(why: &'static str, device: Option<DeviceId>) -> ApiError {
    match device {
        Some(d) => tracing::info!(device = %d, why, "request refused: 401"),
        None => tracing::info!(why, "request refused: 401"),
    }
    ApiError::new(ErrorCode::Unauthorized, why)
}

/// The long-poll route (see `Caller`).
pub const LONG_POLL_ROUTE: &str = "/v1/namespaces/{ns}/changes/wait";

/// How often a device's last-seen time (and a sliding expiry) is written.
const SEEN_EVERY_MS: i64 = 60_000;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("no bearer token", None))?;
        let token = Some(header)
            .filter(|t| t.starts_with(TOKEN_PREFIX) && t.len() < 100)
            .ok_or_else(|| unauthorized("malformed token", None))?;
        let now = driftless_store::db::now_ms();
        let (auth, last_seen, expires) =
            match accounts::token_status(&state.db, &token_hash(token), now).await? {
                TokenStatus::Valid {
                    auth,
                    last_seen_at_ms,
                    expires_at_ms,
                } => (auth, last_seen_at_ms, expires_at_ms),
                TokenStatus::Revoked(a) => {
                    return Err(unauthorized(
                        "this device was signed out on the server; sign in again",
                        Some(a.device_id),
                    ));
                }
                TokenStatus::Expired(a) => {
                    return Err(unauthorized(
                        "this device's sign-in expired unused; sign in again",
                        Some(a.device_id),
                    ));
                }
                TokenStatus::Unknown => return Err(unauthorized("unknown token", None)),
            };
        // Seen (and, with a token lifetime, renewed) at most once a minute,
        // or four times a lifetime if that is shorter.
        let every = state.settings.token_ttl.map_or(SEEN_EVERY_MS, |ttl| {
            SEEN_EVERY_MS.min(ttl.as_millis() as i64 / 4)
        });
        if last_seen.is_none_or(|t| now - t >= every) {
            let renewed = expires
                .and(state.settings.token_ttl)
                .map(|ttl| now + ttl.as_millis() as i64);
            let db = state.db.clone();
            tokio::spawn(async move {
                if let Err(e) = accounts::seen(&db, auth.device_id, now, renewed).await {
                    tracing::debug!(error = %e, "could not note a device as seen");
                }
            });
        }
        // A long-poll waits rather than works: it is held to the device's
        // own long-poll limit instead of the user's requests.
        let waits = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .is_some_and(|p| p.as_str() == LONG_POLL_ROUTE);
        if waits {
            return Ok(Caller {
                device: auth.device_id,
                user: auth.user_id,
                _slot: None,
            });
        }
        let slot = state
            .limits
            .in_flight
            .try_take(&auth.user_id.0)
            .ok_or_else(|| {
                state.metrics.shed(crate::metrics::Shed::Requests);
                ApiError::rate_limited(
                    format!(
                        "this user has {} requests running already",
                        state.limits.in_flight.max()
                    ),
                    crate::ops::retry_after(1, 3),
                )
            })?;
        Ok(Caller {
            device: auth.device_id,
            user: auth.user_id,
            _slot: Some(Arc::new(slot)),
        })
    }
}

/// The client's address, if the server knows it (it does when it serves
/// the connection itself; behind a proxy, the proxy's).
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// `POST /v1/login`: a password sign-in makes a new device with its own
/// token. Limited per client address and per user name (429 with
/// `Retry-After`), with a few password checks at once.
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
    ClientAddr(addr): ClientAddr,
    Json(req): Json<LoginRequest>,
) -> ApiResult<axum::Json<LoginResponse>> {
    if let Err(e) = crate::names::check("device_name", &req.device_name, 100) {
        return Err(ApiError::new(ErrorCode::InvalidRequest, e));
    }
    // One address may try so often; one user name may fail so often,
    // wherever the guesses come from.
    if let Some(ip) = addr
        && let Err(wait) = state.limits.logins_by_address.take(&ip)
    {
        state.metrics.shed(crate::metrics::Shed::Logins);
        return Err(ApiError::rate_limited(
            "too many sign-in attempts from this address",
            crate::limits::seconds(wait),
        ));
    }
    // Password checks cost ~19 MiB and a core each: a few at once, the
    // rest wait a moment and are turned away, never queued without end.
    let permit = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.limits.password_checks.clone().acquire_owned(),
    )
    .await;
    let Ok(Ok(permit)) = permit else {
        state.metrics.shed(crate::metrics::Shed::Logins);
        return Err(ApiError::rate_limited(
            "the server is checking many passwords; try again shortly",
            crate::ops::retry_after(1, 3),
        ));
    };
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
    drop(permit);
    let Some(user) = user.filter(|_| ok) else {
        if let Err(wait) = state.limits.failures_by_user.take(&req.user) {
            return Err(ApiError::rate_limited(
                "too many failed sign-ins for this user; wait before trying again",
                crate::limits::seconds(wait),
            ));
        }
        return Err(ApiError::code(ErrorCode::LoginFailed));
    };
    let (token, hash) = new_token();
    let expires = state
        .settings
        .token_ttl
        .map(|ttl| driftless_store::db::now_ms() + ttl.as_millis() as i64);
    let device_id =
        accounts::create_device(&state.db, user, &req.device_name, &hash, expires).await?;
    tracing::info!(user = user.0, device = %device_id, "device logged in");
    Ok(axum::Json(LoginResponse { token, device_id }))
}
