//! Chunk boundaries and BLAKE3 hashes over any reader, in bounded memory.
//!
//! One buffer of a few maximum chunk sizes is reused for the whole input, so a
//! 50 GB file needs the same memory as a 5 MB one. Bytes are read just ahead of
//! the scan in small top-ups, so each chunk is cut and hashed while it is still
//! in the CPU cache the read left it in.

use std::io::{self, Read};

use crate::params::{ChunkParams, Masks};

/// How much is read per top-up. Small enough that the bytes are still in cache
/// when they are cut and hashed, large enough that syscalls cost nothing.
const READ_STEP: usize = 1 << 20;

/// One content-defined chunk of the input, borrowed from the chunker's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// Byte offset of the chunk in the input.
    pub offset: u64,
    /// The chunk's raw bytes (valid until the next call on the chunker).
    pub data: &'a [u8],
    /// BLAKE3-256 of `data`.
    pub hash: [u8; 32],
}

impl Chunk<'_> {
    /// Length of the chunk in bytes.
    pub fn len(&self) -> u32 {
        // A chunk never exceeds the maximum chunk size (16 MiB).
        self.data.len() as u32
    }

    /// Whether the chunk is empty (never true for chunks this crate yields).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Offset, length and hash without the borrowed bytes.
    pub fn info(&self) -> ChunkInfo {
        ChunkInfo {
            offset: self.offset,
            len: self.len(),
            hash: self.hash,
        }
    }
}

/// Where a chunk lies and what it hashes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkInfo {
    /// Byte offset of the chunk in the input.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// BLAKE3-256 of the chunk's bytes.
    pub hash: [u8; 32],
}

/// FastCDC v2020 + BLAKE3 over a reader, one chunk at a time.
///
/// ```
/// # use driftless_chunker::{ChunkParams, StreamChunker};
/// let data = vec![7u8; 3_000_000];
/// let mut chunker = StreamChunker::new(&data[..], ChunkParams::DEFAULT);
/// let mut total = 0;
/// while let Some(chunk) = chunker.next_chunk()? {
///     total += chunk.data.len();
/// }
/// assert_eq!(total, data.len());
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct StreamChunker<R> {
    reader: R,
    params: ChunkParams,
    masks: Masks,
    buf: Box<[u8]>,
    /// Start of the bytes not yet yielded.
    start: usize,
    /// End of the bytes read so far.
    end: usize,
    /// Input offset of `buf[start]`.
    offset: u64,
    eof: bool,
    hash: bool,
}

impl<R: Read> StreamChunker<R> {
    /// A chunker that hashes every chunk.
    pub fn new(reader: R, params: ChunkParams) -> Self {
        // Four maximum chunks: compaction then moves at most one max chunk per
        // three read, which keeps the copy overhead small.
        let cap = 4 * params.max() as usize;
        Self {
            reader,
            params,
            masks: params.masks(),
            buf: vec![0u8; cap].into_boxed_slice(),
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
            hash: true,
        }
    }

    /// A chunker that only finds boundaries (the yielded `hash` is all zeroes).
    /// Used to measure the boundary scan alone; production code always hashes.
    pub fn boundaries_only(reader: R, params: ChunkParams) -> Self {
        Self {
            hash: false,
            ..Self::new(reader, params)
        }
    }

    /// The parameters this chunker cuts with.
    pub fn params(&self) -> ChunkParams {
        self.params
    }

    /// Bytes of memory the chunker holds, whatever the input size.
    pub fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk<'_>>> {
        let max = self.params.max() as usize;
        while !self.eof && self.end - self.start < max {
            self.top_up()?;
        }
        if self.start == self.end {
            return Ok(None);
        }
        let window = &self.buf[self.start..self.end];
        let len = self.masks.next_len(&self.params, window);
        let data = &window[..len];
        let hash = if self.hash {
            *blake3::hash(data).as_bytes()
        } else {
            [0u8; 32]
        };
        let chunk = Chunk {
            offset: self.offset,
            data,
            hash,
        };
        self.start += len;
        self.offset += len as u64;
        Ok(Some(chunk))
    }

    /// Reads up to [`READ_STEP`] more bytes, compacting the buffer first if the
    /// read would not fit.
    fn top_up(&mut self) -> io::Result<()> {
        if self.buf.len() - self.end < READ_STEP {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = READ_STEP.min(self.buf.len() - self.end);
        loop {
            match self.reader.read(&mut self.buf[self.end..self.end + want]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Chunks an in-memory buffer (no copy) and returns every chunk's position and hash.
pub fn chunk_slice(data: &[u8], params: ChunkParams) -> Vec<ChunkInfo> {
    SliceChunker::new(data, params).collect()
}

/// Iterator over the chunks of an in-memory buffer, hashing each one.
pub struct SliceChunker<'a> {
    data: &'a [u8],
    pos: usize,
    params: ChunkParams,
    masks: Masks,
}

impl<'a> SliceChunker<'a> {
    /// Chunks `data` with `params`.
    pub fn new(data: &'a [u8], params: ChunkParams) -> Self {
        Self {
            data,
            pos: 0,
            params,
            masks: params.masks(),
        }
    }

    /// The next chunk with its borrowed bytes.
    pub fn next_chunk(&mut self) -> Option<Chunk<'a>> {
        if self.pos == self.data.len() {
            return None;
        }
        let window = &self.data[self.pos..];
        let len = self.masks.next_len(&self.params, window);
        let data = &window[..len];
        let chunk = Chunk {
            offset: self.pos as u64,
            data,
            hash: *blake3::hash(data).as_bytes(),
        };
        self.pos += len;
        Some(chunk)
    }
}

impl Iterator for SliceChunker<'_> {
    type Item = ChunkInfo;

    fn next(&mut self) -> Option<ChunkInfo> {
        self.next_chunk().map(|c| c.info())
    }
}

/// Chunks everything `reader` yields and returns every chunk's position and hash.
pub fn chunk_reader<R: Read>(reader: R, params: ChunkParams) -> io::Result<Vec<ChunkInfo>> {
    let mut chunker = StreamChunker::new(reader, params);
    let mut out = Vec::new();
    while let Some(chunk) = chunker.next_chunk()? {
        out.push(chunk.info());
    }
    Ok(out)
}
