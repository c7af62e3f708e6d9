//! Chunks tile the input, respect the size bounds, and do not depend on how the
//! input arrives (slice, inline reader, read-ahead thread, short reads).

use std::io::{self, Read};

use driftless_chunker::{
    ChunkInfo, ChunkParams, ContentHasher, StreamChunker, chunk_reader, chunk_slice, content_hash,
};
use proptest::prelude::*;

use crate::data::{Kind, kind, make, splitmix};

/// Small parameters so a few MiB hold hundreds of chunks.
fn small() -> ChunkParams {
    ChunkParams::new(4 << 10, 16 << 10, 64 << 10).expect("valid")
}

fn params() -> impl Strategy<Value = ChunkParams> {
    prop_oneof![Just(small()), Just(ChunkParams::DEFAULT)]
}

/// A reader that returns at most a pseudo-random handful of bytes per call.
struct Trickle<'a> {
    data: &'a [u8],
    state: u64,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.state = splitmix(self.state);
        let n = (1 + self.state as usize % 70_000)
            .min(buf.len())
            .min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn read_ahead(data: Vec<u8>, p: ChunkParams) -> Vec<ChunkInfo> {
    let mut c = StreamChunker::read_ahead(io::Cursor::new(data), p).expect("spawn");
    let mut out = Vec::new();
    while let Some(chunk) = c.next_chunk().expect("read") {
        out.push(chunk.info());
    }
    out
}

fn check_tiling(data: &[u8], chunks: &[ChunkInfo], p: ChunkParams) -> Result<(), TestCaseError> {
    let mut at = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        prop_assert_eq!(
            c.offset,
            at,
            "chunk {} does not start where the previous ended",
            i
        );
        let last = i + 1 == chunks.len();
        prop_assert!(
            c.len >= 1 && c.len <= p.max(),
            "chunk {} has length {}",
            i,
            c.len
        );
        if !last {
            prop_assert!(c.len >= p.min(), "chunk {} shorter than min: {}", i, c.len);
        }
        let bytes = &data[c.offset as usize..][..c.len as usize];
        prop_assert_eq!(c.hash, *blake3::hash(bytes).as_bytes());
        at += u64::from(c.len);
    }
    prop_assert_eq!(at, data.len() as u64, "chunks do not cover the input");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn chunks_tile_the_input(kind in kind(), seed: u64, len in 0usize..12 << 20, p in params()) {
        let data = make(kind, seed, len);
        let chunks = chunk_slice(&data, p);
        check_tiling(&data, &chunks, p)?;
        // Same input, same chunks.
        prop_assert_eq!(&chunks, &chunk_slice(&data, p));
    }

    #[test]
    fn every_reader_gives_the_same_chunks(kind in kind(), seed: u64, len in 0usize..20 << 20) {
        let p = small();
        let data = make(kind, seed, len);
        let expected = chunk_slice(&data, p);
        prop_assert_eq!(&chunk_reader(&data[..], p)?, &expected);
        prop_assert_eq!(&chunk_reader(Trickle { data: &data, state: seed }, p)?, &expected);
        prop_assert_eq!(&read_ahead(data.clone(), p), &expected);
        // The default parameters too, across several read-ahead blocks.
        let expected = chunk_slice(&data, ChunkParams::DEFAULT);
        prop_assert_eq!(&read_ahead(data, ChunkParams::DEFAULT), &expected);
    }

    #[test]
    fn content_hash_is_incremental(seed: u64, len in 0usize..4 << 20) {
        let p = small();
        let chunks = chunk_slice(&make(Kind::Random, seed, len), p);
        let mut h = ContentHasher::new(p);
        for c in &chunks {
            h.push(&c.hash, c.len);
        }
        prop_assert_eq!(h.finish(), content_hash(p, chunks.iter().map(|c| (&c.hash, c.len))));
    }
}

#[test]
fn empty_input_has_no_chunks() {
    assert!(chunk_slice(&[], ChunkParams::DEFAULT).is_empty());
    assert!(
        chunk_reader(io::empty(), ChunkParams::DEFAULT)
            .expect("read")
            .is_empty()
    );
    assert!(read_ahead(Vec::new(), ChunkParams::DEFAULT).is_empty());
}

#[test]
fn read_errors_surface() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }
    let err = chunk_reader(Failing(30 << 20), ChunkParams::DEFAULT).expect_err("must fail");
    assert_eq!(err.to_string(), "disk on fire");
    let mut c = StreamChunker::read_ahead(Failing(30 << 20), ChunkParams::DEFAULT).expect("spawn");
    let err = loop {
        match c.next_chunk() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a failing reader must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.to_string(), "disk on fire");
}
