//! How well chunk boundaries survive an edit: insert 1 MiB of new bytes at a
//! random point in the middle of random data and count the old chunks lost (no
//! longer present, so re-uploaded) and new chunks added, over many trials.
//!
//! `DRIFTLESS_RESYNC_TRIALS` (default 400) and `DRIFTLESS_RESYNC_MIB` (default 32;
//! only the neighbourhood of the insert matters, so more data changes nothing).

use std::collections::{BTreeMap, HashSet};

use driftless_chunker::{ChunkParams, chunk_slice};

fn main() {
    let trials: u64 = env_or("DRIFTLESS_RESYNC_TRIALS", 400);
    let len = (env_or("DRIFTLESS_RESYNC_MIB", 32) as usize) << 20;
    let p = ChunkParams::DEFAULT;
    let mut lost_hist = BTreeMap::new();
    let mut added_hist = BTreeMap::new();
    let (mut chunks, mut at_max, mut bytes) = (0usize, 0usize, 0usize);
    for trial in 0..trials {
        let base = fill(trial * 2 + 1, len);
        let insert = fill(trial * 2 + 2, 1 << 20);
        let at = len / 2 + (splitmix(trial) as usize % (1 << 20));
        let mut edited = Vec::with_capacity(len + insert.len());
        edited.extend_from_slice(&base[..at]);
        edited.extend_from_slice(&insert);
        edited.extend_from_slice(&base[at..]);
        let before = chunk_slice(&base, p);
        let after = chunk_slice(&edited, p);
        let old: HashSet<_> = before.iter().map(|c| c.hash).collect();
        let new: HashSet<_> = after.iter().map(|c| c.hash).collect();
        let lost = before.iter().filter(|c| !new.contains(&c.hash)).count();
        let added = after.iter().filter(|c| !old.contains(&c.hash)).count();
        *lost_hist.entry(lost).or_insert(0u64) += 1;
        *added_hist.entry(added).or_insert(0u64) += 1;
        chunks += before.len();
        at_max += before.iter().filter(|c| c.len == p.max()).count();
        bytes += base.len();
    }
    println!(
        "# resync after a 1 MiB insert: {trials} trials on {} MiB of random data, params {}/{}/{} KiB",
        len >> 20,
        p.min() >> 10,
        p.avg() >> 10,
        p.max() >> 10
    );
    println!("old chunks lost  -> trials: {lost_hist:?}");
    println!("new chunks added -> trials: {added_hist:?}");
    let within = lost_hist.range(..=3).map(|(_, n)| n).sum::<u64>();
    println!("trials with at most 3 old chunks lost: {within}/{trials}");
    println!(
        "mean chunk {} KiB, {:.1}% of chunks cut at the maximum",
        bytes / chunks / 1024,
        100.0 * at_max as f64 / chunks as f64
    );
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut x = splitmix(seed) | 1;
    let mut out = vec![0u8; len];
    for w in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
    }
    out
}
