//! The changes protocol (DESIGN.md "Changes, cursors and events"): pages of
//! journal entries, the long-poll answer, and the event published to Kafka.

use serde::{Deserialize, Serialize};

use crate::digest::ContentHash;
use crate::ids::{DeviceId, NamespaceId, Rev, Seq};

/// What a journal entry did to its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// New content at `path`.
    Put,
    /// A tombstone at `path`.
    Delete,
    /// `from` was moved to `path` (no bytes changed).
    Move,
    /// The tree did not change, but the server lost bytes of the version
    /// `rev` at `path` (a chunk failed verification): a device whose copy
    /// has this `content_hash` uploads it again.
    Repair,
}

/// One change, from the snapshot (no `seq`) or the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeEntry {
    /// Journal position; `None` for snapshot entries.
    pub seq: Option<Seq>,
    /// The path written (validated by the client before any use).
    pub path: String,
    /// For a move, the old path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The revision now at `path`.
    pub rev: Rev,
    /// What happened.
    pub kind: ChangeKind,
    /// Size of the new content (0 for a delete).
    pub size: u64,
    /// Content hash of the new content (`None` for a delete).
    pub content_hash: Option<ContentHash>,
    /// The file's modification time (ms since the epoch).
    pub mtime_ms: i64,
    /// The device that wrote it: a device skips its own changes.
    pub device_id: Option<DeviceId>,
    /// When the server committed it (ms since the epoch).
    pub committed_at_ms: i64,
}

/// `GET /v1/namespaces/{ns}/changes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangesPage {
    /// Entries in order.
    pub entries: Vec<ChangeEntry>,
    /// Where to continue from (opaque, signed).
    pub cursor: String,
    /// Whether another page is ready right now.
    pub has_more: bool,
    /// Whether these entries come from the snapshot (bootstrap).
    pub snapshot: bool,
}

/// `GET /v1/namespaces/{ns}/changes/wait`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitResponse {
    /// Whether the namespace moved past the cursor.
    pub changed: bool,
    /// Under load: wait this long before polling again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// Set when the namespace moved only by the caller's own changes: a
    /// cursor past them, to wait from next (nothing there to apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The Kafka record of one journal entry (key: the namespace id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JournalEvent {
    /// Schema version, 1.
    pub v: u8,
    /// The folder; also the record key, so a folder's events stay in order.
    pub namespace_id: NamespaceId,
    /// Journal position: consumers deduplicate by (namespace_id, seq).
    pub seq: Seq,
    /// The change itself.
    pub change: ChangeEntry,
}
