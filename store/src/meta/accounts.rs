//! Users, devices, namespaces and memberships.

use driftless_protocol::{DeviceId, NamespaceId};
use sqlx::Row;

use super::{from_db, to_db};
use crate::db::{Db, now_ms};

/// A user id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);

/// A member's role in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Can read.
    Viewer,
    /// Can read and write.
    Editor,
    /// Can read, write and share.
    Owner,
}

impl Role {
    /// The value stored in `memberships.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }

    /// Parses a stored or requested role.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    /// Whether the role may commit changes.
    pub fn can_write(self) -> bool {
        self >= Role::Editor
    }
}

/// What a bearer token resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceAuth {
    /// The device.
    pub device_id: DeviceId,
    /// Its user.
    pub user_id: UserId,
}

/// A namespace as one member sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Its id.
    pub id: NamespaceId,
    /// Display name.
    pub name: String,
    /// Whether it is the member's home folder.
    pub is_home: bool,
    /// The member's role.
    pub role: Role,
}

/// Creates a user with a home namespace they own. `Ok(None)` if the name is taken.
pub async fn create_user(
    db: &Db,
    name: &str,
    password_hash: Option<&str>,
) -> Result<Option<(UserId, NamespaceId)>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let now = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO users (name, password_hash, created_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(name)
    .bind(password_hash)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = inserted else {
        return Ok(None);
    };
    let user = UserId(row.try_get(0)?);
    let ns = insert_namespace(&mut tx, user, name, true).await?;
    tx.commit().await?;
    Ok(Some((user, ns)))
}

async fn insert_namespace(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    owner: UserId,
    name: &str,
    is_home: bool,
) -> Result<NamespaceId, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO namespaces (name, is_home, owner_id, created_at_ms) VALUES ($1, $2, $3, $4) \
         RETURNING id",
    )
    .bind(name)
    .bind(i64::from(is_home))
    .bind(owner.0)
    .bind(now_ms())
    .fetch_one(&mut **tx)
    .await?;
    let id: i64 = row.try_get(0)?;
    sqlx::query("INSERT INTO memberships (namespace_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(id)
        .bind(owner.0)
        .execute(&mut **tx)
        .await?;
    Ok(NamespaceId(from_db(id)))
}

/// Creates a shared namespace owned by `owner`.
pub async fn create_shared_namespace(
    db: &Db,
    owner: UserId,
    name: &str,
) -> Result<NamespaceId, sqlx::Error> {
    let mut tx = db.begin().await?;
    let ns = insert_namespace(&mut tx, owner, name, false).await?;
    tx.commit().await?;
    Ok(ns)
}

/// Grants `user` a role in `ns` (replacing any earlier role).
pub async fn set_membership(
    db: &Db,
    ns: NamespaceId,
    user: UserId,
    role: Role,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO memberships (namespace_id, user_id, role) VALUES ($1, $2, $3) \
         ON CONFLICT (namespace_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(to_db(ns.0))
    .bind(user.0)
    .bind(role.as_str())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The user's role in `ns`, or `None` if they are not a member (or `ns` does
/// not exist: callers answer both the same way).
pub async fn role_in(db: &Db, user: UserId, ns: NamespaceId) -> Result<Option<Role>, sqlx::Error> {
    let row = sqlx::query("SELECT role FROM memberships WHERE namespace_id = $1 AND user_id = $2")
        .bind(to_db(ns.0))
        .bind(user.0)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(r) => Role::parse(&r.try_get::<String, _>(0)?),
        None => None,
    })
}

/// Every namespace the user belongs to.
pub async fn namespaces_of(db: &Db, user: UserId) -> Result<Vec<NamespaceInfo>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT n.id, n.name, n.is_home, m.role FROM memberships m \
         JOIN namespaces n ON n.id = m.namespace_id WHERE m.user_id = $1 ORDER BY n.id",
    )
    .bind(user.0)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(NamespaceInfo {
                id: NamespaceId(from_db(r.try_get(0)?)),
                name: r.try_get(1)?,
                is_home: r.try_get::<i64, _>(2)? == 1,
                role: Role::parse(&r.try_get::<String, _>(3)?).unwrap_or(Role::Viewer),
            })
        })
        .collect()
}

/// The user's id and password hash, by name.
pub async fn user_by_name(
    db: &Db,
    name: &str,
) -> Result<Option<(UserId, Option<String>)>, sqlx::Error> {
    let row = sqlx::query("SELECT id, password_hash FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| Ok((UserId(r.try_get(0)?), r.try_get(1)?)))
        .transpose()
}

/// Registers a device whose bearer token hashes to `token_hash`.
pub async fn create_device(
    db: &Db,
    user: UserId,
    name: &str,
    token_hash: &[u8; 32],
) -> Result<DeviceId, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO devices (user_id, name, token_hash, created_at_ms) VALUES ($1, $2, $3, $4) \
         RETURNING id",
    )
    .bind(user.0)
    .bind(name)
    .bind(&token_hash[..])
    .bind(now_ms())
    .fetch_one(db.pool())
    .await?;
    Ok(DeviceId(from_db(row.try_get(0)?)))
}

/// The device a token hash belongs to, unless revoked.
pub async fn device_by_token_hash(
    db: &Db,
    token_hash: &[u8; 32],
) -> Result<Option<DeviceAuth>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, user_id FROM devices WHERE token_hash = $1 AND revoked_at_ms IS NULL",
    )
    .bind(&token_hash[..])
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| {
        Ok(DeviceAuth {
            device_id: DeviceId(from_db(r.try_get(0)?)),
            user_id: UserId(r.try_get(1)?),
        })
    })
    .transpose()
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
