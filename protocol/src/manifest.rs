//! A version's manifest as the server stores it: per chunk, the 32-byte
//! BLAKE3 hash and the raw length as u32 little-endian (36 bytes a chunk,
//! 450 KB for 50 GB).

use crate::{ChunkHash, ChunkSpec};

const ENTRY: usize = 36;

/// An ordered list of chunks in its stored form.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest(Vec<u8>);

impl Manifest {
    /// From the chunks of a request.
    pub fn from_specs(chunks: &[ChunkSpec]) -> Self {
        let mut b = Vec::with_capacity(chunks.len() * ENTRY);
        for c in chunks {
            b.extend_from_slice(c.hash.as_bytes());
            b.extend_from_slice(&c.len.to_le_bytes());
        }
        Self(b)
    }

    /// From stored bytes; `None` if they are not a whole number of entries.
    pub fn from_bytes(b: Vec<u8>) -> Option<Self> {
        b.len().is_multiple_of(ENTRY).then_some(Self(b))
    }

    /// The stored form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The chunks in order.
    pub fn specs(&self) -> impl Iterator<Item = ChunkSpec> + '_ {
        self.0.chunks_exact(ENTRY).map(|e| {
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&e[..32]);
            let mut len = [0u8; 4];
            len.copy_from_slice(&e[32..]);
            ChunkSpec {
                hash: ChunkHash::from_bytes(hash),
                len: u32::from_le_bytes(len),
            }
        })
    }

    /// The chunk hashes in order (repeats included).
    pub fn hashes(&self) -> impl Iterator<Item = ChunkHash> + '_ {
        self.specs().map(|s| s.hash)
    }

    /// The file size.
    pub fn total_len(&self) -> u64 {
        self.specs().map(|s| u64::from(s.len)).sum()
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.0.len() / ENTRY
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
