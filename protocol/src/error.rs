//! Stable error codes and the RFC 9457 problem document that carries them.
//!
//! A code, once shipped, keeps its meaning forever: clients branch on `code`,
//! never on `title` or `detail`. Each code says whether retrying the same
//! request can succeed (`retryable`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! codes {
    ($($variant:ident = $code:literal, $status:literal, $retry:literal, $title:literal;)*) => {
        /// Every error the protocol can report.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(
                #[doc = $title]
                $variant,
            )*
        }

        impl ErrorCode {
            /// All codes, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The stable snake_case code.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status the API answers with.
            pub const fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// Whether the same request may succeed later without change.
            pub const fn retryable(self) -> bool {
                match self { $(ErrorCode::$variant => $retry,)* }
            }

            /// A short human summary, the same for every occurrence.
            pub const fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)* }
            }
        }

        impl FromStr for ErrorCode {
            type Err = UnknownCode;
            fn from_str(s: &str) -> Result<Self, UnknownCode> {
                match s {
                    $($code => Ok(ErrorCode::$variant),)*
                    _ => Err(UnknownCode),
                }
            }
        }
    };
}

codes! {
    // Request shape
    MalformedJson = "malformed_json", 400, false, "The request body is not valid JSON for this endpoint.";
    InvalidRequest = "invalid_request", 400, false, "A field of the request has an invalid value.";
    BodyTooLarge = "body_too_large", 413, false, "The request body exceeds the limit for this endpoint.";
    UnsupportedMediaType = "unsupported_media_type", 415, false, "The request body must be application/json.";
    MethodNotAllowed = "method_not_allowed", 405, false, "This route does not take that method.";
    // Paths and names
    PathEmpty = "path_empty", 400, false, "The path is empty.";
    PathAbsolute = "path_absolute", 400, false, "Paths are relative to the synced folder.";
    PathTraversal = "path_traversal", 400, false, "The path contains a '.' or '..' component.";
    PathTooLong = "path_too_long", 400, false, "The path exceeds 4096 bytes.";
    PathNotNfc = "path_not_nfc", 400, false, "The path is not in Unicode normalization form C.";
    NameEmpty = "name_empty", 400, false, "The path has an empty component.";
    NameTooLong = "name_too_long", 400, false, "A path component exceeds 255 bytes.";
    NameControlChar = "name_control_char", 400, false, "A name contains a NUL or control character.";
    NameInvalidChar = "name_invalid_char", 400, false, "A name contains a backslash.";
    NameReserved = "name_reserved", 400, false, "The name is reserved by driftless.";
    NameWindowsReserved = "name_windows_reserved", 400, false, "The name is reserved on Windows (CON, NUL, COM1, ...).";
    NameTrailingDotSpace = "name_trailing_dot_space", 400, false, "The name ends with a dot or a space, which Windows drops.";
    NameWindowsChar = "name_windows_char", 400, false, "The name contains a character Windows forbids (< > : \" | ? *).";
    PathCollision = "path_collision", 409, false, "Another file's name differs from this one only by case or Unicode normalization.";
    FolderCollision = "folder_collision", 409, false, "A folder on the path differs from an existing folder only by case or Unicode normalization.";
    PathUnderFile = "path_under_file", 409, false, "A folder on the path is a file.";
    PathIsFolder = "path_is_folder", 409, false, "A folder exists at this path.";
    // Hashes and sizes
    HashMalformed = "hash_malformed", 400, false, "A hash is not 64 lowercase hex characters.";
    HashMismatch = "hash_mismatch", 422, false, "The bytes do not match their declared hash.";
    SizeMismatch = "size_mismatch", 422, false, "A declared size does not match the data.";
    ChunkingInvalid = "chunking_invalid", 400, false, "The chunking parameters are not supported.";
    RangeNotSatisfiable = "range_not_satisfiable", 416, false, "The requested range lies outside the file.";
    FileTooLarge = "file_too_large", 413, false, "The file exceeds the largest file this server accepts.";
    // Cursors
    CursorInvalid = "cursor_invalid", 400, false, "The cursor is malformed, tampered with, or for another folder.";
    CursorReset = "cursor_reset", 410, false, "The cursor is older than the retained journal; start again without one.";
    // Auth
    Unauthorized = "unauthorized", 401, false, "A valid device token is required.";
    LoginFailed = "login_failed", 401, false, "Wrong user name or password.";
    Forbidden = "forbidden", 403, false, "Your role in this folder does not allow this.";
    NotFound = "not_found", 404, false, "No such resource.";
    // Uploads and commits
    UploadExpired = "upload_expired", 410, false, "The upload session expired; start a new one.";
    UploadClosed = "upload_closed", 409, false, "The upload session was already committed or aborted.";
    UploadBusy = "upload_busy", 409, true, "A commit of this upload session is running; ask again shortly.";
    PartInvalid = "part_invalid", 400, false, "The part number or size is outside what S3 accepts.";
    PartMissing = "part_missing", 422, false, "A part was never uploaded to storage.";
    PartSizeMismatch = "part_size_mismatch", 422, false, "A part in storage has a different size than registered.";
    PartChecksumMismatch = "part_checksum_mismatch", 422, false, "A part in storage does not match its registered checksum.";
    ChunkMissing = "chunk_missing", 422, false, "A chunk of the file is neither stored nor in this upload.";
    Conflict = "conflict", 409, false, "The file changed since the base revision.";
    OpIdReused = "op_id_reused", 409, false, "This operation id was already used for a different operation.";
    TooManyFiles = "too_many_files", 400, false, "Too many files in one request.";
    // Capacity and faults
    RateLimited = "rate_limited", 429, true, "Too many requests; retry after the indicated delay.";
    Unavailable = "unavailable", 503, true, "A backing service is unavailable; retry later.";
    Internal = "internal", 500, true, "An internal error occurred.";
}

/// A code string no version of the protocol has defined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code")]
pub struct UnknownCode;

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        // An older client meeting a newer code treats it as an internal error
        // rather than failing to read the whole response.
        Ok(s.parse().unwrap_or(ErrorCode::Internal))
    }
}

/// An RFC 9457 problem document (`application/problem+json`) with the
/// driftless extension members `code` and `retryable`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the problem type: `urn:driftless:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The code's fixed title.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence, for humans. Never secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The stable machine-readable code.
    pub code: ErrorCode,
    /// Whether retrying the same request can succeed.
    pub retryable: bool,
}

impl Problem {
    /// Media type of the document.
    pub const CONTENT_TYPE: &'static str = "application/problem+json";

    /// A problem for `code` with an occurrence-specific detail.
    pub fn new(code: ErrorCode, detail: impl Into<Option<String>>) -> Self {
        Self {
            type_uri: format!("urn:driftless:problem:{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            code,
            retryable: code.retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert!(
                c.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            assert_eq!(c.as_str().parse(), Ok(c));
            assert!((400..600).contains(&c.status()));
        }
    }

    #[test]
    fn unknown_codes_degrade_to_internal() {
        let c: ErrorCode = serde_json::from_str("\"some_future_code\"").unwrap();
        assert_eq!(c, ErrorCode::Internal);
        let p = Problem::new(ErrorCode::CursorReset, Some("compacted below 17".into()));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["type"], "urn:driftless:problem:cursor_reset");
        assert_eq!(json["status"], 410);
        assert_eq!(json["code"], "cursor_reset");
        assert_eq!(serde_json::from_value::<Problem>(json).unwrap(), p);
    }
}
