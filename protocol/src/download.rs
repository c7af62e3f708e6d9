//! The download protocol (DESIGN.md "Download"): a version's manifest with
//! presigned ranged GETs into packs, adjacent chunks coalesced.

use serde::{Deserialize, Serialize};

use crate::digest::{ChunkHash, ContentHash};
use crate::ids::Rev;
use crate::upload::{ChunkingSpec, StoredCodec};

/// One chunk of the file, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestChunk {
    /// BLAKE3 of the raw chunk: verify before use.
    pub hash: ChunkHash,
    /// Raw length.
    pub len: u32,
    /// Offset in the file.
    pub offset: u64,
}

/// Where one chunk's stored bytes sit inside a [`FetchRange`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RangeChunk {
    /// BLAKE3 of the raw chunk.
    pub hash: ChunkHash,
    /// Offset of its stored bytes within the range's body.
    pub at: u64,
    /// Stored length.
    pub stored_len: u32,
    /// Raw length (the decoder's bound).
    pub raw_len: u32,
    /// Encoding.
    pub codec: StoredCodec,
}

/// A presigned ranged GET covering adjacent stored chunks of one pack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FetchRange {
    /// Presigned URL (a secret until it expires).
    pub url: String,
    /// Signed headers to send as given (the `Range` among them).
    pub headers: std::collections::BTreeMap<String, String>,
    /// Expiry (ms since the epoch).
    pub expires_at_ms: i64,
    /// Bytes the GET returns.
    pub length: u64,
    /// The chunks inside, in body order.
    pub chunks: Vec<RangeChunk>,
}

/// `GET /v1/namespaces/{ns}/manifest?path=&rev=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DownloadManifest {
    /// The file.
    pub path: String,
    /// Its revision.
    pub rev: Rev,
    /// Size in bytes.
    pub size: u64,
    /// Content hash (recompute from `chunks` to check).
    pub content_hash: ContentHash,
    /// Modification time (ms since the epoch).
    pub mtime_ms: i64,
    /// Chunking parameters.
    pub chunking: ChunkingSpec,
    /// The file's chunks in order (a chunk may repeat).
    pub chunks: Vec<ManifestChunk>,
    /// Where to fetch each distinct chunk once.
    pub ranges: Vec<FetchRange>,
}

impl DownloadManifest {
    /// Whether the chunk list tiles the file: each chunk starts where the
    /// one before it ended, and they add up to `size`. (The content hash,
    /// recomputed from the list with the chunker, is the other half of a
    /// client's check.)
    pub fn check_layout(&self) -> Result<(), &'static str> {
        let mut at = 0u64;
        for c in &self.chunks {
            if c.offset != at {
                return Err("chunk offsets do not tile the file");
            }
            at = at
                .checked_add(u64::from(c.len))
                .ok_or("chunk lengths overflow")?;
        }
        if at != self.size {
            return Err("chunk lengths do not add up to the size");
        }
        Ok(())
    }
}
