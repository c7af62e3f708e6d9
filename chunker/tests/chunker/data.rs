//! Deterministic test inputs of the shapes the chunker meets: random bytes,
//! text-like bytes, and long runs (which force cuts at the maximum size).

use proptest::prelude::*;

/// Kinds of content.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Random,
    Text,
    Runs,
}

pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `len` bytes of `kind`, the same for the same seed.
pub(crate) fn make(kind: Kind, seed: u64, len: usize) -> Vec<u8> {
    let mut x = splitmix(seed) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = vec![0u8; len];
    match kind {
        Kind::Random => {
            for w in out.chunks_mut(8) {
                w.copy_from_slice(&next().to_le_bytes()[..w.len()]);
            }
        }
        Kind::Text => {
            const WORDS: [&[u8]; 8] = [
                b"sync ",
                b"folder ",
                b"chunk ",
                b"the ",
                b"device\n",
                b"cursor ",
                b"of ",
                b"namespace ",
            ];
            let mut i = 0;
            while i < len {
                let w = WORDS[(next() % 8) as usize];
                let n = w.len().min(len - i);
                out[i..i + n].copy_from_slice(&w[..n]);
                i += n;
            }
        }
        Kind::Runs => {
            let mut i = 0;
            while i < len {
                let r = next();
                let n = ((r >> 8) as usize % (6 << 20)).min(len - i);
                out[i..i + n].fill(r as u8);
                i += n;
            }
        }
    }
    out
}

pub(crate) fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Random), Just(Kind::Text), Just(Kind::Runs)]
}
