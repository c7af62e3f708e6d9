//! Properties of the chunker: boundaries, hashes, edits, and the codec.

mod boundaries;
mod codec;
mod data;
mod edits;
