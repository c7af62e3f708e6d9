//! Per-caller limits: what one user, device or address may hold or spend,
//! so that no single caller starves the others (the process-wide limits in
//! `ops` protect the process; these protect the other callers).
//!
//! [`Buckets`] are keyed token buckets (login attempts per address and per
//! user name); [`Slots`] count what a key holds at once (long-polls per
//! device, requests per user). Both are in memory, per process: a
//! deployment of N API processes allows N times as much, which is the
//! point of per-process capacity limits and harmless for per-caller ones
//! (a caller is held to a small constant factor of its share).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most keys a [`Buckets`] remembers before it forgets the idle ones.
const MAX_KEYS: usize = 100_000;

/// Keyed token buckets: each key may spend `burst` at once and gets back
/// one token every `every`.
pub struct Buckets<K> {
    burst: f64,
    every: Duration,
    map: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Buckets of `burst` tokens, one back every `every`.
    pub fn new(burst: u32, every: Duration) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            every: every.max(Duration::from_millis(1)),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Spends a token of `key`; if none is left, how long until one is.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_KEYS {
            // Forget the keys whose buckets are full again: they owe nothing.
            let (burst, every) = (self.burst, self.every);
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() / every.as_secs_f64() < burst
            });
        }
        let (tokens, at) = map.entry(key.clone()).or_insert((self.burst, now));
        let refill = now.duration_since(*at).as_secs_f64() / self.every.as_secs_f64();
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(self.every.mul_f64(1.0 - *tokens))
        }
    }
}

/// What each key holds at once, at most `max`.
pub struct Slots<K: Hash + Eq + Clone> {
    max: usize,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

/// One slot of a key, given back when dropped.
pub struct Slot<K: Hash + Eq + Clone> {
    key: K,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// At most `max` slots per key.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            held: Arc::default(),
        }
    }

    /// A slot of `key`, unless it holds `max` already.
    pub fn try_take(&self, key: &K) -> Option<Slot<K>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            key: key.clone(),
            held: self.held.clone(),
        })
    }

    /// The most a key may hold.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl<K: Hash + Eq + Clone + std::fmt::Debug> std::fmt::Debug for Slot<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).finish()
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Seconds to tell a client to wait (`Retry-After`), at least 1.
pub fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_one_per_period_per_key() {
        let b = Buckets::new(3, Duration::from_secs(10));
        for _ in 0..3 {
            assert!(b.take(&"a").is_ok());
        }
        let wait = b.take(&"a").unwrap_err();
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10));
        assert!(b.take(&"b").is_ok(), "another key is not held back");
        assert_eq!(seconds(Duration::from_millis(1500)), 2);
    }

    #[test]
    fn slots_are_counted_per_key_and_given_back() {
        let s = Slots::new(2);
        let one = s.try_take(&1).unwrap();
        let _two = s.try_take(&1).unwrap();
        assert!(s.try_take(&1).is_none());
        assert!(s.try_take(&2).is_some());
        drop(one);
        assert!(s.try_take(&1).is_some());
    }
}
