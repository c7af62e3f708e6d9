//! Devices and their bearer tokens: registered at sign-in, looked up on
//! every request, renewed while used, revoked by their user.

use driftless_protocol::DeviceId;
use sqlx::Row;

use super::{DeviceAuth, UserId};
use crate::db::{Db, now_ms};
use crate::meta::{from_db, to_db};

/// Registers a device whose bearer token hashes to `token_hash`; the token
/// stops working at `expires_at_ms` unless used (`None`: never).
pub async fn create_device(
    db: &Db,
    user: UserId,
    name: &str,
    token_hash: &[u8; 32],
    expires_at_ms: Option<i64>,
) -> Result<DeviceId, sqlx::Error> {
    let now = now_ms();
    let row = sqlx::query(
        "INSERT INTO devices (user_id, name, token_hash, created_at_ms, last_seen_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4, $4, $5) RETURNING id",
    )
    .bind(user.0)
    .bind(name)
    .bind(&token_hash[..])
    .bind(now)
    .bind(expires_at_ms)
    .fetch_one(db.pool())
    .await?;
    Ok(DeviceId(from_db(row.try_get(0)?)))
}

/// What a bearer token's hash is, as far as the server knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    /// A device's live token.
    Valid {
        /// Who.
        auth: DeviceAuth,
        /// When it was last seen.
        last_seen_at_ms: Option<i64>,
        /// When it stops working unless used.
        expires_at_ms: Option<i64>,
    },
    /// Revoked (signed out on the server).
    Revoked(DeviceAuth),
    /// Past its lifetime without use.
    Expired(DeviceAuth),
    /// No device has it.
    Unknown,
}

/// The device a token hash belongs to, and whether the token works at `now`.
pub async fn token_status(
    db: &Db,
    token_hash: &[u8; 32],
    now: i64,
) -> Result<TokenStatus, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, user_id, revoked_at_ms, last_seen_at_ms, expires_at_ms FROM devices \
         WHERE token_hash = $1",
    )
    .bind(&token_hash[..])
    .fetch_optional(db.pool())
    .await?;
    let Some(r) = row else {
        return Ok(TokenStatus::Unknown);
    };
    let auth = DeviceAuth {
        device_id: DeviceId(from_db(r.try_get("id")?)),
        user_id: UserId(r.try_get("user_id")?),
    };
    let expires_at_ms: Option<i64> = r.try_get("expires_at_ms")?;
    Ok(if r.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some() {
        TokenStatus::Revoked(auth)
    } else if expires_at_ms.is_some_and(|e| e <= now) {
        TokenStatus::Expired(auth)
    } else {
        TokenStatus::Valid {
            auth,
            last_seen_at_ms: r.try_get("last_seen_at_ms")?,
            expires_at_ms,
        }
    })
}

/// The device a token hash belongs to, unless revoked or expired.
pub async fn device_by_token_hash(
    db: &Db,
    token_hash: &[u8; 32],
) -> Result<Option<DeviceAuth>, sqlx::Error> {
    Ok(match token_status(db, token_hash, now_ms()).await? {
        TokenStatus::Valid { auth, .. } => Some(auth),
        _ => None,
    })
}

/// Notes that `device` was seen at `now`, moving its token's expiry to
/// `expires_at_ms` if it has one (a token in use does not expire).
pub async fn seen(
    db: &Db,
    device: DeviceId,
    now: i64,
    expires_at_ms: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE devices SET last_seen_at_ms = $1, \
         expires_at_ms = CASE WHEN expires_at_ms IS NULL THEN NULL ELSE $2 END \
         WHERE id = $3 AND revoked_at_ms IS NULL",
    )
    .bind(now)
    .bind(expires_at_ms)
    .bind(to_db(device.0))
    .execute(db.pool())
    .await?;
    Ok(())
}

/// A device as its user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its id.
    pub id: DeviceId,
    /// Its name.
    pub name: String,
    /// When it signed in.
    pub created_at_ms: i64,
    /// When it was last seen.
    pub last_seen_at_ms: Option<i64>,
    /// When its token stops working unless used.
    pub expires_at_ms: Option<i64>,
    /// When it was signed out on the server.
    pub revoked_at_ms: Option<i64>,
}

/// Every device of `user`, oldest first.
pub async fn devices_of(db: &Db, user: UserId) -> Result<Vec<DeviceInfo>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, name, created_at_ms, last_seen_at_ms, expires_at_ms, revoked_at_ms \
         FROM devices WHERE user_id = $1 ORDER BY id",
    )
    .bind(user.0)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DeviceInfo {
                id: DeviceId(from_db(r.try_get("id")?)),
                name: r.try_get("name")?,
                created_at_ms: r.try_get("created_at_ms")?,
                last_seen_at_ms: r.try_get("last_seen_at_ms")?,
                expires_at_ms: r.try_get("expires_at_ms")?,
                revoked_at_ms: r.try_get("revoked_at_ms")?,
            })
        })
        .collect()
}

/// Revokes a device's token.
pub async fn revoke_device(db: &Db, device: DeviceId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE devices SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
    )
    .bind(now_ms())
    .bind(to_db(device.0))
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes `device` if it is one of `user`'s; whether it was (and live).
pub async fn revoke_device_of(
    db: &Db,
    user: UserId,
    device: DeviceId,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE devices SET revoked_at_ms = $1 WHERE id = $2 AND user_id = $3 AND revoked_at_ms IS NULL",
    )
    .bind(now_ms())
    .bind(to_db(device.0))
    .bind(user.0)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}
