//! The file `content_hash`: BLAKE3 over the chunk hashes, tagged with the parameters.
//!
//! Hashing the hashes (not the bytes) lets the server recompute a file's
//! content hash from its manifest alone, and including the chunking parameters
//! means two manifests of the same bytes cut differently never collide.

use crate::params::ChunkParams;

/// BLAKE3 derive-key context: a domain separator for content hashes.
const CONTEXT: &str = "driftless 2026-11 file content hash v1";

/// Builds a `content_hash` from chunk hashes in file order.
#[derive(Clone)]
pub struct ContentHasher {
    inner: blake3::Hasher,
    chunks: u64,
    bytes: u64,
}

impl ContentHasher {
    /// A hasher for a file chunked with `params`.
    pub fn new(params: ChunkParams) -> Self {
        let mut inner = blake3::Hasher::new_derive_key(CONTEXT);
        inner.update(&params.tag());
        Self {
            inner,
            chunks: 0,
            bytes: 0,
        }
    }

    /// Adds the next chunk (its hash and length, in file order).
    pub fn push(&mut self, hash: &[u8; 32], len: u32) {
        self.inner.update(hash);
        self.chunks += 1;
        self.bytes += u64::from(len);
    }

    /// The content hash; binds chunk count and total length as well.
    pub fn finish(&self) -> [u8; 32] {
        let mut h = self.inner.clone();
        h.update(&self.chunks.to_le_bytes());
        h.update(&self.bytes.to_le_bytes());
        *h.finalize().as_bytes()
    }
}

/// The content hash of a file from its chunks (hash, length) in order.
pub fn content_hash<'a>(
    params: ChunkParams,
    chunks: impl IntoIterator<Item = (&'a [u8; 32], u32)>,
) -> [u8; 32] {
    let mut h = ContentHasher::new(params);
    for (hash, len) in chunks {
        h.push(hash, len);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_params_order_and_lengths() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let p = ChunkParams::DEFAULT;
        let base = content_hash(p, [(&a, 10), (&b, 20)]);
        assert_ne!(base, content_hash(p, [(&b, 20), (&a, 10)]));
        assert_ne!(base, content_hash(ChunkParams::LARGE, [(&a, 10), (&b, 20)]));
        assert_ne!(base, content_hash(p, [(&a, 11), (&b, 20)]));
        assert_eq!(base, content_hash(p, [(&a, 10), (&b, 20)]));
        // The empty file has a well-defined hash distinct from any non-empty one.
        assert_ne!(content_hash(p, []), base);
    }
}
