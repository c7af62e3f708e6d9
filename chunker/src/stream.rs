//! Chunk boundaries and BLAKE3 hashes over any reader, in bounded memory.
//!
//! A few buffers of a few maximum chunk sizes are reused for the whole input,
//! so a 50 GB file needs the same memory as a 5 MB one. Reading either happens
//! inline (one buffer, compacted as it is consumed) or on a read-ahead thread
//! ([`StreamChunker::read_ahead`]) that overlaps I/O with scanning and hashing.

use std::io::{self, Read};

use crate::params::{ChunkParams, Masks};
use crate::readahead::{ReadAhead, fill};

/// Fresh bytes per refill: at least 8 MiB so refills and syscalls are rare.
fn fresh_len(params: &ChunkParams) -> usize {
    (params.max() as usize).max(8 << 20)
}

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
    params: ChunkParams,
    masks: Masks,
    /// The current block; `buf[pos..end]` is input not yet yielded.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// Input offset of `buf[pos]`.
    offset: u64,
    /// Whether `buf[..end]` reaches the end of the input.
    eof: bool,
    hash: bool,
    feed: Feed<R>,
}

enum Feed<R> {
    Inline(R),
    Ahead(ReadAhead),
}

impl<R: Read> StreamChunker<R> {
    /// A chunker that reads on the calling thread: right for small inputs and
    /// readers that cannot move to another thread.
    pub fn new(reader: R, params: ChunkParams) -> Self {
        let cap = params.max() as usize + fresh_len(&params);
        Self::with_feed(Feed::Inline(reader), vec![0u8; cap], params)
    }

    fn with_feed(feed: Feed<R>, buf: Vec<u8>, params: ChunkParams) -> Self {
        Self {
            params,
            masks: params.masks(),
            buf,
            pos: 0,
            end: 0,
            offset: 0,
            eof: false,
            hash: true,
            feed,
        }
    }

    /// Stops hashing: the yielded `hash` is all zeroes. Used to measure the
    /// boundary scan alone; production code always hashes.
    pub fn boundaries_only(mut self) -> Self {
        self.hash = false;
        self
    }

    /// The parameters this chunker cuts with.
    pub fn params(&self) -> ChunkParams {
        self.params
    }

    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk<'_>>> {
        let max = self.params.max() as usize;
        // The cut looks at most `max` bytes ahead; with fewer it is only
        // final at the end of the input.
        if !self.eof && self.end - self.pos < max {
            self.refill()?;
        }
        if self.pos == self.end {
            return Ok(None);
        }
        let window = &self.buf[self.pos..self.end];
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
        self.pos += len;
        self.offset += len as u64;
        Ok(Some(chunk))
    }

    fn refill(&mut self) -> io::Result<()> {
        match &mut self.feed {
            Feed::Inline(reader) => {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
                let (end, eof) = fill(reader, &mut self.buf, self.end)?;
                self.end = end;
                self.eof = eof;
            }
            Feed::Ahead(ahead) => {
                let left = self.end - self.pos;
                let spent = std::mem::take(&mut self.buf);
                let block = ahead.next(Some(spent))?;
                // The reader repeats the last `max` bytes of each block at the
                // start of the next, and `left < max`: the tail is in the carry.
                debug_assert!(left <= block.carry);
                self.buf = block.data;
                self.pos = block.carry - left;
                self.end = block.len;
                self.eof = block.eof;
            }
        }
        Ok(())
    }
}

impl<R: Read + Send + 'static> StreamChunker<R> {
    /// A chunker whose reads happen on a separate thread, ahead of the scan.
    /// Memory: three blocks of `max + max(max, 8 MiB)` bytes (36 MiB with the
    /// default parameters), whatever the input size.
    pub fn read_ahead(reader: R, params: ChunkParams) -> io::Result<Self> {
        let ahead = ReadAhead::spawn(reader, params.max() as usize, fresh_len(&params))?;
        Ok(Self::with_feed(Feed::Ahead(ahead), Vec::new(), params))
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
