//! The chunk verifier: trust, then verify (DESIGN.md "Upload", step 6).
//!
//! A commit records its chunks as pending. The verifier reads each pending
//! chunk back from its pack, decodes it with the bounded decoder and checks
//! its BLAKE3 hash, then settles it as verified (from then on offered for
//! deduplication to every device) or corrupt (never served, asked for again
//! by the next upload that contains it, and reported: every live file that
//! uses it gets a `repair` entry on the changes feed).
//!
//! It runs two ways over the same code: as a durable consumer of the event
//! stream ([`VerifyEvents`], a consumer group in production, so the work is
//! shared by partition), and as a sweep over the pending-chunks index
//! ([`Verifier`] as a [`Worker`]) that catches whatever the stream missed.
//! Settling only moves a chunk out of `pending`, so doing a pack twice is
//! harmless and reports its damage once.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use driftless_chunker::{Codec, Decoder};
use driftless_protocol::{ChangeKind, ChunkHash, JournalEvent, NamespaceId, Seq, SyncPath};
use driftless_store::meta::chunks::{self, ChunkLocation, state};
use driftless_store::meta::{repair, versions};
use driftless_store::{BlobError, BlobStore, Db, pack_key};
use sqlx::{Any, Transaction};

use crate::durable::Handler;
use crate::worker::{Step, Worker};

/// Longest single read from a pack.
const MAX_READ: u64 = 64 << 20;

/// Packs looked at per unit of work.
const PACKS_PER_STEP: usize = 8;

/// What settling one pack changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackReport {
    /// Chunks newly settled as verified.
    pub verified: u64,
    /// Chunks newly settled as corrupt (bytes missing or not matching).
    pub corrupt: Vec<ChunkHash>,
    /// The `repair` entries written for live files that use them.
    pub repairs: Vec<Seq>,
}

/// What reading one pack back found (nothing written yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackCheck {
    /// The folder.
    pub namespace: NamespaceId,
    /// The pack.
    pub pack_id: String,
    /// Pending chunks whose bytes decode to their hash.
    pub good: Vec<ChunkHash>,
    /// Pending chunks whose bytes are missing or do not match.
    pub bad: Vec<ChunkHash>,
}

/// Why a pack could not be verified now (it stays pending).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The metadata database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Object storage failed in a way that says nothing about the bytes.
    #[error("object storage: {0}")]
    Blob(BlobError),
    /// No zstd context could be made.
    #[error("decoder: {0}")]
    Decoder(#[from] std::io::Error),
}

/// Re-hashes committed chunks from object storage.
pub struct Verifier {
    db: Db,
    blob: BlobStore,
    decoder: Option<Decoder>,
    sweep_after: Duration,
}

impl Verifier {
    /// A verifier over this database and bucket. As a sweep it takes every
    /// pending pack at once; see [`Verifier::sweep_after`].
    pub fn new(db: Db, blob: BlobStore) -> Self {
        Self {
            db,
            blob,
            decoder: None,
            sweep_after: Duration::ZERO,
        }
    }

    /// As a sweep, leaves packs recorded less than `age` ago to the
    /// event-driven verifier.
    pub fn sweep_after(mut self, age: Duration) -> Self {
        self.sweep_after = age;
        self
    }

    /// Verifies every pending chunk of one pack and settles each.
    pub async fn verify_pack(
        &mut self,
        ns: NamespaceId,
        pack_id: &str,
    ) -> Result<PackReport, VerifyError> {
        let check = self.check_pack(ns, pack_id).await?;
        let mut tx = self.db.begin().await?;
        let report = record(&mut tx, &check).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Reads the pending chunks of one pack back and judges each (no writes).
    pub async fn check_pack(
        &mut self,
        ns: NamespaceId,
        pack_id: &str,
    ) -> Result<PackCheck, VerifyError> {
        let pending = chunks::pending_in_pack(&self.db, ns, pack_id).await?;
        self.check_chunks(ns, pack_id, &pending).await
    }

    /// Reads `these` chunks of one pack back (in pack order) and judges each
    /// (no writes): the verifier's pending chunks, reconcile's scrub sample.
    pub async fn check_chunks(
        &mut self,
        ns: NamespaceId,
        pack_id: &str,
        these: &[ChunkLocation],
    ) -> Result<PackCheck, VerifyError> {
        let pending = these;
        let key = pack_key(pack_id);
        let mut good = Vec::with_capacity(pending.len());
        let mut bad = Vec::new();
        for run in runs(pending) {
            let start = run[0].offset;
            let len = run
                .iter()
                .map(|c| c.offset + u64::from(c.stored_len))
                .max()
                .unwrap_or(start)
                - start;
            let bytes = match self.blob.get_range(&key, start, len).await {
                Ok(b) => b,
                // The object or the range is gone: these bytes are not there.
                Err(BlobError::NotFound) => bytes::Bytes::new(),
                Err(BlobError::Refused { code, .. }) if code == "InvalidRange" => {
                    bytes::Bytes::new()
                }
                Err(e) => return Err(VerifyError::Blob(e)),
            };
            if self.decoder.is_none() {
                self.decoder = Some(Decoder::new()?);
            }
            let decoder = self
                .decoder
                .as_mut()
                .ok_or_else(|| VerifyError::Decoder(std::io::Error::other("no zstd decoder")))?;
            for c in run {
                let at = (c.offset - start) as usize;
                let stored = bytes.get(at..at + c.stored_len as usize);
                if stored.is_some_and(|s| decodes_to(decoder, c, s)) {
                    good.push(c.hash);
                } else {
                    bad.push(c.hash);
                }
            }
        }
        Ok(PackCheck {
            namespace: ns,
            pack_id: pack_id.to_owned(),
            good,
            bad,
        })
    }

    /// The packs holding pending chunks of the versions these events put.
    async fn packs_of(
        &self,
        events: &[JournalEvent],
    ) -> Result<BTreeSet<(NamespaceId, String)>, VerifyError> {
        let mut packs = BTreeSet::new();
        let mut conn = self.db.pool().acquire().await?;
        for e in events {
            if e.change.kind != ChangeKind::Put {
                continue;
            }
            let Ok(path) = SyncPath::parse(&e.change.path) else {
                continue;
            };
            let ns = e.namespace_id;
            let Some(v) = versions::version_in(&mut conn, ns, &path, Some(e.change.rev)).await?
            else {
                continue;
            };
            let hashes: Vec<ChunkHash> = v.manifest.hashes().collect();
            for stored in versions::locations(&mut conn, ns, &hashes)
                .await?
                .into_values()
            {
                if stored.state == state::PENDING {
                    packs.insert((ns, stored.pack_id));
                }
            }
        }
        Ok(packs)
    }
}

/// Settles what [`Verifier::check_pack`] found, inside `tx`, and writes a
/// `repair` entry for each live file that uses a chunk newly found corrupt.
pub async fn record(
    tx: &mut Transaction<'static, Any>,
    check: &PackCheck,
) -> Result<PackReport, sqlx::Error> {
    let (ns, pack) = (check.namespace, check.pack_id.as_str());
    let verified = chunks::settle(tx, ns, pack, &check.good, state::VERIFIED).await?;
    let corrupt = chunks::settle(tx, ns, pack, &check.bad, state::CORRUPT).await?;
    let mut repairs = Vec::new();
    if !corrupt.is_empty() {
        let set: HashSet<ChunkHash> = corrupt.iter().copied().collect();
        let damaged = repair::live_users(tx, ns, &set).await?;
        repairs = repair::report(tx, ns, &damaged).await?;
        tracing::warn!(namespace = %ns, pack, corrupt = corrupt.len(), first = %corrupt[0],
            files = damaged.len(), "chunks fail their hash; devices are asked to upload them again");
    } else if !verified.is_empty() {
        tracing::debug!(namespace = %ns, pack, verified = verified.len(), "pack verified");
    }
    Ok(PackReport {
        verified: verified.len() as u64,
        corrupt,
        repairs,
    })
}

fn decodes_to(decoder: &mut Decoder, c: &ChunkLocation, stored: &[u8]) -> bool {
    let codec = if c.codec == 1 {
        Codec::Zstd
    } else {
        Codec::None
    };
    decoder
        .decode(codec, stored, c.raw_len as usize)
        .is_ok_and(|raw| blake3::hash(raw).as_bytes() == c.hash.as_bytes())
}

/// Adjacent chunks grouped into reads of at most [`MAX_READ`] bytes.
fn runs(chunks: &[ChunkLocation]) -> Vec<&[ChunkLocation]> {
    let mut out = Vec::new();
    let mut begin = 0;
    for i in 1..=chunks.len() {
        let split = i == chunks.len() || {
            let (first, prev, next) = (&chunks[begin], &chunks[i - 1], &chunks[i]);
            let end = prev.offset + u64::from(prev.stored_len);
            next.offset != end || next.offset + u64::from(next.stored_len) - first.offset > MAX_READ
        };
        if split {
            out.push(&chunks[begin..i]);
            begin = i;
        }
    }
    out
}

impl Worker for Verifier {
    fn name(&self) -> &'static str {
        "verifier-sweep"
    }

    async fn work(&mut self) -> Result<Step, String> {
        let by = driftless_store::db::now_ms() - self.sweep_after.as_millis() as i64;
        let packs = chunks::pending_packs(&self.db, by, PACKS_PER_STEP)
            .await
            .map_err(|e| e.to_string())?;
        if packs.is_empty() {
            return Ok(Step::Idle);
        }
        for (ns, pack) in packs {
            self.verify_pack(ns, &pack)
                .await
                .map_err(|e| format!("pack {pack} in namespace {ns}: {e}"))?;
        }
        Ok(Step::Busy)
    }
}

/// The verifier as a durable consumer of the event stream: each batch of
/// events names the versions just committed; their pending packs are read
/// back, then settled in the consumer's transaction.
pub struct VerifyEvents {
    verifier: Verifier,
}

impl VerifyEvents {
    /// The event-driven verifier.
    pub fn new(db: Db, blob: BlobStore) -> Self {
        Self {
            verifier: Verifier::new(db, blob),
        }
    }
}

impl Handler for VerifyEvents {
    type Effect = Vec<PackCheck>;

    fn name(&self) -> &'static str {
        "verifier"
    }

    async fn prepare(&mut self, events: &[JournalEvent]) -> Result<Vec<PackCheck>, String> {
        let packs = self
            .verifier
            .packs_of(events)
            .await
            .map_err(|e| e.to_string())?;
        let mut checks = Vec::with_capacity(packs.len());
        for (ns, pack) in packs {
            checks.push(
                self.verifier
                    .check_pack(ns, &pack)
                    .await
                    .map_err(|e| format!("pack {pack} in namespace {ns}: {e}"))?,
            );
        }
        Ok(checks)
    }

    async fn write(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        checks: Vec<PackCheck>,
    ) -> Result<(), sqlx::Error> {
        for c in &checks {
            record(tx, c).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, len: u32) -> ChunkLocation {
        ChunkLocation {
            hash: ChunkHash::from_bytes([0; 32]),
            raw_len: len,
            offset,
            stored_len: len,
            codec: 0,
        }
    }

    #[test]
    fn adjacent_chunks_share_a_read_and_gaps_split() {
        let cs = [at(0, 10), at(10, 5), at(20, 5), at(25, 1)];
        let lens: Vec<usize> = runs(&cs).iter().map(|r| r.len()).collect();
        assert_eq!(lens, [2, 2]);
    }

    #[test]
    fn reads_stop_at_the_limit() {
        let big = (MAX_READ / 2) as u32;
        let cs = [
            at(0, big),
            at(u64::from(big), big),
            at(2 * u64::from(big), 1),
        ];
        let lens: Vec<usize> = runs(&cs).iter().map(|r| r.len()).collect();
        assert_eq!(lens, [2, 1]);
        assert!(runs(&[]).is_empty());
    }
}
