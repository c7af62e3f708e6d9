//! The driftless wire contract: request and response types of the upload and
//! changes protocol, the event schema, error codes, and the validated newtypes
//! both sides parse at their edge (`ChunkHash`, `SyncPath`, `Cursor`, ids).
//!
//! No I/O: no network, no storage, no clock. Everything here is a value that
//! serializes to and from JSON the same way on the server and on the client.

mod accounts;
mod changes;
mod cursor;
mod digest;
mod download;
mod error;
mod ids;
mod manifest;
#[cfg(feature = "openapi")]
mod openapi;
mod path;
mod upload;

pub use accounts::{
    CreateNamespace, DeviceView, InvitationView, LoginRequest, LoginResponse, NamespaceView,
    RestoreRequest, VersionView,
};
pub use changes::{ChangeEntry, ChangeKind, ChangesPage, JournalEvent, WaitResponse};
pub use cursor::{Cursor, CursorError, CursorKey, Position, entry_stamp};
pub use digest::{ChunkHash, ContentHash, DigestError};
pub use download::{DownloadManifest, FetchRange, ManifestChunk, RangeChunk};
pub use error::{ErrorCode, Problem};
pub use ids::{DeviceId, IdError, NamespaceId, OpId, Rev, Seq, UploadId};
pub use manifest::Manifest;
pub use path::{MAX_NAME_BYTES, MAX_PATH_BYTES, PathError, Portability, SyncPath};
pub use upload::{
    ChunkSpec, ChunkingSpec, CommitRequest, CommitResponse, CompletedPart, CreateUpload,
    CreatedUpload, FileOp, FileResult, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, Outcome, PartChunk,
    PartRequest, PartState, PresignedPart, PutFile, StoredCodec, UploadState, UploadStatus,
};
