//! OpenAPI schemas of the types whose JSON form is not what their Rust
//! shape says (hex digests, validated paths, error codes as strings).
//! With the `openapi` feature only.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use crate::{ChunkHash, ContentHash, ErrorCode, SyncPath};

fn string(description: &str, pattern: Option<&str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .into()
}

macro_rules! string_schema {
    ($ty:ident, $description:expr, $pattern:expr) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                string($description, $pattern)
            }
        }

        impl utoipa::ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
        }
    };
}

string_schema!(
    ChunkHash,
    "BLAKE3-256 of a chunk's raw bytes, lowercase hex.",
    Some("^[0-9a-f]{64}$")
);
string_schema!(
    ContentHash,
    "A file's content hash (BLAKE3 over its chunk list and chunking), lowercase hex.",
    Some("^[0-9a-f]{64}$")
);
string_schema!(
    SyncPath,
    "A path relative to the synced folder: NFC, '/'-separated, no '.' or '..', at most 4096 bytes.",
    None
);

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A stable machine-readable error code (clients treat unknown codes as `internal`).",
            ))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}
