//! Accounts, folders and history on the wire: login, the folder list,
//! shared-folder creation, a file's versions and restoring one.

use serde::{Deserialize, Serialize};

use crate::digest::ContentHash;
use crate::ids::{DeviceId, NamespaceId, OpId, Rev};

/// `POST /v1/login` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// A name for the new device ("laptop").
    pub device_name: String,
}

/// `POST /v1/login` answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    /// The device's bearer token (shown once).
    pub token: String,
    /// The new device's id.
    pub device_id: DeviceId,
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// One folder as the caller sees it (`GET /v1/namespaces`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NamespaceView {
    /// Id.
    pub id: NamespaceId,
    /// Name.
    pub name: String,
    /// The caller's home folder?
    pub home: bool,
    /// `owner`, `editor` or `viewer`.
    pub role: String,
}

/// An invitation to a folder, as its invitee sees it (`GET /v1/invitations`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvitationView {
    /// The folder.
    pub namespace: NamespaceId,
    /// Its name.
    pub name: String,
    /// The role offered: `owner`, `editor` or `viewer`.
    pub role: String,
    /// Who invited (user name).
    pub invited_by: String,
    /// When (ms since the epoch).
    pub created_at_ms: i64,
}

/// One of the caller's devices (`GET /v1/devices`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceView {
    /// Id.
    pub id: DeviceId,
    /// Name.
    pub name: String,
    /// When it signed in (ms since the epoch).
    pub created_at_ms: i64,
    /// When it was last seen (to the minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at_ms: Option<i64>,
    /// When its sign-in expires unless it is used (a server setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    /// When it was signed out on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
    /// Whether this is the device asking.
    pub current: bool,
}

/// `POST /v1/namespaces` body: a new shared folder owned by the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateNamespace {
    /// Display name (1 to 255 bytes).
    pub name: String,
}

/// One version of a file (`GET /v1/namespaces/{ns}/versions?path=`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionView {
    /// Revision.
    pub rev: Rev,
    /// A tombstone?
    pub deleted: bool,
    /// Size.
    pub size: u64,
    /// Content hash.
    pub content_hash: Option<ContentHash>,
    /// Modification time (ms).
    pub mtime_ms: i64,
    /// For a move, the old path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
    /// The writing device.
    pub device_id: Option<DeviceId>,
    /// Commit time (ms).
    pub committed_at_ms: i64,
}

/// `POST /v1/namespaces/{ns}/restore` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreRequest {
    /// Client operation id.
    pub op_id: OpId,
    /// The file.
    pub path: String,
    /// The revision whose content comes back.
    pub rev: Rev,
    /// The current revision the client saw (`None` if the file is deleted).
    pub base_rev: Option<Rev>,
}
