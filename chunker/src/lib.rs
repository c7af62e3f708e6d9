//! Content-defined chunking for driftless: FastCDC v2020 boundaries, BLAKE3
//! chunk hashes, the file content hash, and the zstd policy and codec.
//!
//! This crate only transforms bytes it is given (from a slice or any
//! [`std::io::Read`]); it never opens files, talks to a network or stores
//! anything. Memory is bounded by the chunk parameters, not the input size.

mod codec;
mod content;
mod params;
mod readahead;
mod sniff;
mod stream;

pub use codec::{
    Codec, DecodeError, Decoder, Encoded, Encoder, MAX_CHUNK_LEN, Policy, WINDOW_LOG_MAX,
    single_frame,
};
pub use content::{ContentHasher, content_hash};
pub use params::{ChunkParams, LARGE_FILE_THRESHOLD, ParamsError};
pub use sniff::FormatHint;
pub use stream::{Chunk, ChunkInfo, SliceChunker, StreamChunker, chunk_reader, chunk_slice};
