//! An edit changes only the chunks around it: a 1 MiB insert in the middle of
//! a 256 MiB input loses at most 3 of the old chunks; all others keep their
//! hashes. Cases use a fixed seed so CI is repeatable; set `PROPTEST_RNG_SEED`
//! and `PROPTEST_CASES` to explore more (`benches/resync.rs` reports the
//! distribution over hundreds of trials).

use std::collections::HashSet;

use driftless_chunker::{ChunkParams, chunk_slice};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use crate::data::{Kind, make};

fn config() -> ProptestConfig {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0000_d1f7_1e55);
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn insert_of_1_mib_changes_at_most_3_chunks(seed: u64, shift in 0usize..1 << 20) {
        let len = 256usize << 20;
        let base = make(Kind::Random, seed, len);
        let insert = make(Kind::Random, !seed, 1 << 20);
        let at = len / 2 - (1 << 19) + shift;
        let mut edited = Vec::with_capacity(len + insert.len());
        edited.extend_from_slice(&base[..at]);
        edited.extend_from_slice(&insert);
        edited.extend_from_slice(&base[at..]);

        let p = ChunkParams::DEFAULT;
        let before = chunk_slice(&base, p);
        let after = chunk_slice(&edited, p);
        let kept: HashSet<_> = after.iter().map(|c| c.hash).collect();
        let lost: Vec<_> = before.iter().filter(|c| !kept.contains(&c.hash)).collect();
        prop_assert!(!lost.is_empty(), "the chunk holding the insert point must change");
        prop_assert!(lost.len() <= 3, "{} old chunks lost: {:?}", lost.len(),
            lost.iter().map(|c| (c.offset, c.len)).collect::<Vec<_>>());
        // The lost chunks are the ones around the insert, nothing far away.
        for c in &lost {
            prop_assert!(c.offset + u64::from(c.len) > (at as u64).saturating_sub(u64::from(p.max())));
            prop_assert!(c.offset < (at + 3 * p.max() as usize) as u64);
        }
    }
}
