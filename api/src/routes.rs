//! The HTTP routes, one module each, merged by [`crate::app`].

use driftless_protocol::{NamespaceId, SyncPath};

use crate::error::{ApiError, ApiResult};

pub mod changes;
pub mod devices;
pub mod downloads;
pub mod history;
pub mod namespaces;
pub mod uploads;

/// A namespace id from a URL. Anything that is not one answers exactly like a
/// namespace that does not exist (never a hint of what ids are valid).
pub(crate) fn namespace_id(s: &str) -> ApiResult<NamespaceId> {
    s.parse().map_err(|_| ApiError::not_found())
}

/// A path from a request, refused with its own stable code.
pub(crate) fn sync_path(s: &str) -> ApiResult<SyncPath> {
    SyncPath::parse(s).map_err(|e| ApiError::new(e.code(), e.to_string()))
}
