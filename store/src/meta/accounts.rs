//! Users, devices, namespaces and memberships.

use driftless_protocol::{DeviceId, NamespaceId};
use sqlx::Row;

use super::{from_db, to_db};
use crate::db::{Db, now_ms};

mod devices;
pub use devices::*;

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
    sqlx::query(
        "INSERT INTO memberships (namespace_id, user_id, role, is_home) VALUES ($1, $2, 'owner', $3)",
    )
    .bind(id)
    .bind(owner.0)
    .bind(i64::from(is_home))
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

/// Why a membership change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Done.
    Done,
    /// The user is not a member.
    NotMember,
    /// It would leave the folder without an owner.
    LastOwner,
}

/// Changes the role of an existing member of `ns`; never leaves the folder
/// without an owner.
pub async fn set_role(
    db: &Db,
    ns: NamespaceId,
    user: UserId,
    role: Role,
) -> Result<MembershipChange, sqlx::Error> {
    let mut tx = db.begin().await?;
    let Some(current) = role_for_update(&mut tx, ns, user).await? else {
        return Ok(MembershipChange::NotMember);
    };
    if current == Role::Owner && role != Role::Owner && owners(&mut tx, ns).await? <= 1 {
        return Ok(MembershipChange::LastOwner);
    }
    sqlx::query("UPDATE memberships SET role = $1 WHERE namespace_id = $2 AND user_id = $3")
        .bind(role.as_str())
        .bind(to_db(ns.0))
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(MembershipChange::Done)
}

/// Removes `user` from `ns` (and any invitation); never the last owner,
/// never from their home folder.
pub async fn remove_member(
    db: &Db,
    ns: NamespaceId,
    user: UserId,
) -> Result<MembershipChange, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM invitations WHERE namespace_id = $1 AND user_id = $2")
        .bind(to_db(ns.0))
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
    let Some(current) = role_for_update(&mut tx, ns, user).await? else {
        tx.commit().await?;
        return Ok(MembershipChange::NotMember);
    };
    let home: i64 =
        sqlx::query("SELECT is_home FROM memberships WHERE namespace_id = $1 AND user_id = $2")
            .bind(to_db(ns.0))
            .bind(user.0)
            .fetch_one(&mut *tx)
            .await?
            .try_get("is_home")?;
    if home == 1 || (current == Role::Owner && owners(&mut tx, ns).await? <= 1) {
        return Ok(MembershipChange::LastOwner);
    }
    sqlx::query("DELETE FROM memberships WHERE namespace_id = $1 AND user_id = $2")
        .bind(to_db(ns.0))
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(MembershipChange::Done)
}

/// The member's role, locking the folder's membership against a
/// concurrent change (the namespace row is the lock).
async fn role_for_update(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    ns: NamespaceId,
    user: UserId,
) -> Result<Option<Role>, sqlx::Error> {
    // Touch the namespace row first: it serializes membership changes of
    // the folder (PostgreSQL row lock; SQLite has one writer anyway).
    sqlx::query("UPDATE namespaces SET name = name WHERE id = $1")
        .bind(to_db(ns.0))
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query("SELECT role FROM memberships WHERE namespace_id = $1 AND user_id = $2")
        .bind(to_db(ns.0))
        .bind(user.0)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match row {
        Some(r) => Role::parse(&r.try_get::<String, _>("role")?),
        None => None,
    })
}

async fn owners(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    ns: NamespaceId,
) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM memberships WHERE namespace_id = $1 AND role = 'owner'")
        .bind(to_db(ns.0))
        .fetch_one(&mut **tx)
        .await?
        .try_get("n")
}

/// Invites `user` to `ns` with `role` (replacing an earlier invitation). A
/// member is not invited again.
pub async fn invite(
    db: &Db,
    ns: NamespaceId,
    user: UserId,
    role: Role,
    by: UserId,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO invitations (namespace_id, user_id, role, invited_by, created_at_ms) \
         SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM memberships \
         WHERE namespace_id = $1 AND user_id = $2) \
         ON CONFLICT (namespace_id, user_id) DO UPDATE SET role = excluded.role, \
         invited_by = excluded.invited_by, created_at_ms = excluded.created_at_ms",
    )
    .bind(to_db(ns.0))
    .bind(user.0)
    .bind(role.as_str())
    .bind(by.0)
    .bind(now_ms())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// An invitation as its invitee sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    /// The folder.
    pub namespace: NamespaceId,
    /// Its name.
    pub name: String,
    /// The role offered.
    pub role: Role,
    /// Who invited (user name).
    pub invited_by: String,
    /// When (ms since the epoch).
    pub created_at_ms: i64,
}

/// The invitations waiting for `user`.
pub async fn invitations_of(db: &Db, user: UserId) -> Result<Vec<Invitation>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT i.namespace_id, n.name, i.role, u.name AS inviter, i.created_at_ms \
         FROM invitations i JOIN namespaces n ON n.id = i.namespace_id \
         JOIN users u ON u.id = i.invited_by WHERE i.user_id = $1 ORDER BY i.created_at_ms",
    )
    .bind(user.0)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Invitation {
                namespace: NamespaceId(from_db(r.try_get("namespace_id")?)),
                name: r.try_get("name")?,
                role: Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::Viewer),
                invited_by: r.try_get("inviter")?,
                created_at_ms: r.try_get("created_at_ms")?,
            })
        })
        .collect()
}

/// Accepts `user`'s invitation to `ns`: they become a member with the role
/// offered (never their home). `None` if there was no invitation.
pub async fn accept_invitation(
    db: &Db,
    ns: NamespaceId,
    user: UserId,
) -> Result<Option<Role>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let row = sqlx::query(
        "DELETE FROM invitations WHERE namespace_id = $1 AND user_id = $2 RETURNING role",
    )
    .bind(to_db(ns.0))
    .bind(user.0)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(role) = row
        .map(|r| r.try_get::<String, _>("role"))
        .transpose()?
        .and_then(|r| Role::parse(&r))
    else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO memberships (namespace_id, user_id, role, is_home) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (namespace_id, user_id) DO NOTHING",
    )
    .bind(to_db(ns.0))
    .bind(user.0)
    .bind(role.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(role))
}

/// Declines (deletes) `user`'s invitation to `ns`; whether there was one.
pub async fn decline_invitation(
    db: &Db,
    ns: NamespaceId,
    user: UserId,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM invitations WHERE namespace_id = $1 AND user_id = $2")
        .bind(to_db(ns.0))
        .bind(user.0)
        .execute(db.pool())
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Makes `user` a member of `ns` with `role` at once (an operator's tool and
/// tests; users share through invitations).
pub async fn set_membership(
    db: &Db,
    ns: NamespaceId,
    user: UserId,
    role: Role,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO memberships (namespace_id, user_id, role, is_home) VALUES ($1, $2, $3, 0) \
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
        "SELECT n.id, n.name, m.is_home, m.role FROM memberships m \
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
