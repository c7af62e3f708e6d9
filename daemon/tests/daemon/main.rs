//! The client library against a real server (PostgreSQL + SigV4 S3).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod cli;
mod crash;
mod upload;

/// Deterministic bytes.
pub(crate) fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
