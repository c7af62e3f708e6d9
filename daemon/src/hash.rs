//! Chunking and fingerprinting a local file: FastCDC boundaries, a BLAKE3
//! hash per chunk, the file's content hash. Memory is the read-ahead buffer
//! plus 48 bytes per chunk, whatever the file size.

use std::fs::File;
use std::io;
use std::path::Path;

use driftless_chunker::{ChunkParams, ContentHasher, StreamChunker};
use driftless_protocol::{ChunkHash, ChunkSpec, ChunkingSpec, ContentHash};

/// A file's chunks and hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedFile {
    /// Bytes hashed.
    pub size: u64,
    /// The chunking parameters used (chosen by size).
    pub params: ChunkParams,
    /// Chunks in file order.
    pub chunks: Vec<ChunkSpec>,
    /// Offset of each chunk in the file.
    pub offsets: Vec<u64>,
    /// Hash over the chunk list.
    pub content_hash: ContentHash,
    /// (device, inode) of the file that was read: a later read of its
    /// chunks must find the same file, not one swapped in since.
    pub id: (u64, u64),
}

impl HashedFile {
    /// The chunking as the protocol states it.
    pub fn chunking(&self) -> ChunkingSpec {
        ChunkingSpec {
            min: self.params.min(),
            avg: self.params.avg(),
            max: self.params.max(),
        }
    }
}

/// Chunks and hashes the regular file at `path` (read on a read-ahead
/// thread). Opened without following a symlink or blocking on a FIFO;
/// `expect` (device, inode), when given, must be the file opened: a
/// symlink or FIFO swapped in after the scan is refused, never read.
pub fn hash_file(path: &Path, expect: Option<(u64, u64)>) -> io::Result<HashedFile> {
    hash_open(crate::local::open_regular(path, expect)?)
}

/// Chunks and hashes an open file from its start.
pub fn hash_open(file: File) -> io::Result<HashedFile> {
    let meta = file.metadata()?;
    let id = crate::local::dir_id(&meta);
    let len = meta.len();
    let params = ChunkParams::for_file_size(len);
    let mut chunker = StreamChunker::read_ahead(file, params)?;
    let mut content = ContentHasher::new(params);
    let mut chunks = Vec::with_capacity((len / u64::from(params.avg())) as usize + 1);
    let mut offsets = Vec::with_capacity(chunks.capacity());
    let mut size = 0;
    while let Some(c) = chunker.next_chunk()? {
        content.push(&c.hash, c.len());
        chunks.push(ChunkSpec {
            hash: ChunkHash::from_bytes(c.hash),
            len: c.len(),
        });
        offsets.push(c.offset);
        size += u64::from(c.len());
    }
    Ok(HashedFile {
        size,
        params,
        chunks,
        offsets,
        content_hash: ContentHash::from_bytes(content.finish()),
        id,
    })
}
