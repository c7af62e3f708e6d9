//! The upload protocol (DESIGN.md "Upload"): a batch of file operations, the
//! chunks the server still needs, presigned parts, status, and commit.
//!
//! Paths in requests are plain strings on purpose: the server validates each
//! entry with [`crate::SyncPath::parse`] and answers a bad one with its own
//! per-file error, instead of refusing the whole batch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::{ChunkHash, ContentHash};
use crate::error::ErrorCode;
use crate::ids::{OpId, Rev, Seq, UploadId};

/// Smallest part, except the last (ours; S3's own minimum is 5 MiB).
pub const MIN_PART_SIZE: u64 = 8 << 20;
/// Largest part.
pub const MAX_PART_SIZE: u64 = 64 << 20;
/// Most parts in one upload (S3's limit).
pub const MAX_PARTS: u32 = 10_000;

/// The FastCDC parameters a file was chunked with (part of its manifest).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkingSpec {
    /// Minimum chunk size.
    pub min: u32,
    /// Average chunk size.
    pub avg: u32,
    /// Maximum chunk size.
    pub max: u32,
}

/// One chunk of a file's manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkSpec {
    /// BLAKE3 of the raw chunk.
    pub hash: ChunkHash,
    /// Raw length in bytes.
    pub len: u32,
}

/// Create or replace a file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PutFile {
    /// Client-generated; retries carry the same id.
    pub op_id: OpId,
    /// Validated per entry by the server.
    pub path: String,
    /// The revision the client last saw; `None` for a new file.
    pub base_rev: Option<Rev>,
    /// Total size in bytes (the sum of the chunk lengths).
    pub size: u64,
    /// Modification time, milliseconds since the Unix epoch.
    pub mtime_ms: i64,
    /// How the file was chunked.
    pub chunking: ChunkingSpec,
    /// The chunks in file order.
    pub chunks: Vec<ChunkSpec>,
    /// BLAKE3 over the chunk hashes, tagged with the chunking (checked).
    pub content_hash: ContentHash,
}

/// One operation of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FileOp {
    /// New content.
    Put(PutFile),
    /// A tombstone version.
    Delete {
        /// Client-generated operation id.
        op_id: OpId,
        /// The file to delete.
        path: String,
        /// The revision being deleted (an edit since then wins).
        base_rev: Rev,
    },
    /// A rename or move: metadata only, no bytes.
    Move {
        /// Client-generated operation id.
        op_id: OpId,
        /// The current path.
        from: String,
        /// The revision at `from` the client saw.
        from_rev: Rev,
        /// The new path.
        to: String,
        /// The revision at `to` being replaced, `None` if `to` is free.
        base_rev: Option<Rev>,
    },
}

impl FileOp {
    /// The operation id.
    pub fn op_id(&self) -> &OpId {
        match self {
            FileOp::Put(p) => &p.op_id,
            FileOp::Delete { op_id, .. } | FileOp::Move { op_id, .. } => op_id,
        }
    }

    /// The path the operation writes.
    pub fn path(&self) -> &str {
        match self {
            FileOp::Put(p) => &p.path,
            FileOp::Delete { path, .. } => path,
            FileOp::Move { to, .. } => to,
        }
    }
}

/// `POST /v1/namespaces/{ns}/uploads`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUpload {
    /// The operations, applied in order.
    pub files: Vec<FileOp>,
}

/// What happened to one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Committed as revision `rev` at journal position `seq`.
    Committed {
        /// The new revision.
        rev: Rev,
        /// Its journal entry.
        seq: Seq,
    },
    /// `base_rev` is not the current revision; nothing was written.
    Conflict {
        /// The current revision (`None` if the file does not exist).
        current_rev: Option<Rev>,
    },
    /// Waiting for chunks of this upload; decided at commit.
    Pending,
    /// Refused.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Human detail.
        detail: String,
    },
}

/// The result of one operation, in request order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileResult {
    /// The operation's id.
    pub op_id: OpId,
    /// The path it wrote (as sent).
    pub path: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Answer to [`CreateUpload`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedUpload {
    /// The session to upload parts into; `None` if nothing is needed.
    pub upload_id: Option<UploadId>,
    /// When the session expires (ms since the epoch).
    pub expires_at_ms: Option<i64>,
    /// Chunks the server does not have, each once, in first-use order.
    pub needed: Vec<ChunkHash>,
    /// One result per operation, in request order.
    pub results: Vec<FileResult>,
}

/// How a chunk is stored inside a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StoredCodec {
    /// Raw bytes.
    None,
    /// One zstd frame.
    Zstd,
}

/// A chunk's place inside a part, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartChunk {
    /// BLAKE3 of the raw chunk.
    pub hash: ChunkHash,
    /// Raw length.
    pub raw_len: u32,
    /// Bytes in the part.
    pub stored_len: u32,
    /// Encoding of the stored bytes.
    pub codec: StoredCodec,
}

/// `POST /v1/uploads/{id}/parts`: register a part and get its URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartRequest {
    /// 1..=10,000.
    pub part_number: u32,
    /// Bytes in the part (the sum of `stored_len`).
    pub size: u64,
    /// CRC32C of the part, base64 of the big-endian value (S3's format).
    pub checksum_crc32c: String,
    /// The chunks the part holds, in order.
    pub chunks: Vec<PartChunk>,
}

/// Where and how to PUT one part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresignedPart {
    /// Part number.
    pub part_number: u32,
    /// The presigned URL (a secret: never log it).
    pub url: String,
    /// HTTP method, `PUT`.
    pub method: String,
    /// Headers that are signed into the URL and must be sent as given.
    pub headers: BTreeMap<String, String>,
    /// When the URL stops working (ms since the epoch).
    pub expires_at_ms: i64,
}

/// Lifecycle of an upload session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    /// Accepting parts.
    Open,
    /// A commit is running (parts are being assembled); ask again shortly.
    Committing,
    /// Committed; retrying the commit returns the same results.
    Committed,
    /// Aborted by the client.
    Aborted,
    /// Expired before commit.
    Expired,
}

/// A part as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartState {
    /// Part number.
    pub part_number: u32,
    /// Registered size.
    pub size: u64,
    /// Whether storage holds it with that size (asked of S3, not our table).
    pub stored: bool,
}

/// `GET /v1/uploads/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadStatus {
    /// The session.
    pub upload_id: UploadId,
    /// Its state.
    pub state: UploadState,
    /// Expiry (ms since the epoch).
    pub expires_at_ms: i64,
    /// Registered parts.
    pub parts: Vec<PartState>,
    /// Chunks not yet covered by a stored part.
    pub needed: Vec<ChunkHash>,
}

/// A part the client uploaded, with the ETag S3 answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompletedPart {
    /// Part number.
    pub part_number: u32,
    /// ETag from the PUT response.
    pub etag: String,
}

/// `POST /v1/uploads/{id}/commit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitRequest {
    /// Every part, in any order.
    pub parts: Vec<CompletedPart>,
}

/// Answer to [`CommitRequest`]: one result per operation of the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitResponse {
    /// Results in the order of the original batch.
    pub results: Vec<FileResult>,
}
