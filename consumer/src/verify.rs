//! The chunk verifier: trust, then verify (DESIGN.md "Upload", step 6).
//!
//! A commit records its chunks as pending. The verifier reads each pending
//! chunk back from its pack, decodes it with the bounded decoder and checks
//! its BLAKE3 hash, then settles it as verified (from then on offered for
//! deduplication to every device) or corrupt (never served, asked for again
//! by the next upload that contains it). The database is the queue: a
//! verifier killed at any point finds the same pending chunks on restart,
//! and settling twice is harmless.

use driftless_chunker::{Codec, Decoder};
use driftless_protocol::{ChunkHash, NamespaceId};
use driftless_store::meta::chunks::{self, ChunkLocation, state};
use driftless_store::{BlobError, BlobStore, Db, pack_key};

use crate::worker::{Step, Worker};

/// Longest single read from a pack.
const MAX_READ: u64 = 64 << 20;

/// Packs looked at per unit of work.
const PACKS_PER_STEP: usize = 8;

/// What verifying one pack found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackReport {
    /// Chunks whose bytes decode to their hash.
    pub verified: u64,
    /// Chunks whose bytes are missing or do not match.
    pub corrupt: Vec<ChunkHash>,
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
}

impl Verifier {
    /// A verifier over this database and bucket.
    pub fn new(db: Db, blob: BlobStore) -> Self {
        Self {
            db,
            blob,
            decoder: None,
        }
    }

    /// Verifies every pending chunk of one pack and settles each.
    pub async fn verify_pack(
        &mut self,
        ns: NamespaceId,
        pack_id: &str,
    ) -> Result<PackReport, VerifyError> {
        let pending = chunks::pending_in_pack(&self.db, ns, pack_id).await?;
        let key = pack_key(pack_id);
        let mut good = Vec::with_capacity(pending.len());
        let mut bad = Vec::new();
        for run in runs(&pending) {
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
        chunks::settle(&self.db, ns, pack_id, &good, state::VERIFIED).await?;
        chunks::settle(&self.db, ns, pack_id, &bad, state::CORRUPT).await?;
        if bad.is_empty() {
            tracing::debug!(namespace = %ns, pack = pack_id, verified = good.len(), "pack verified");
        } else {
            tracing::warn!(namespace = %ns, pack = pack_id, verified = good.len(), corrupt = bad.len(),
                first = %bad[0], "pack holds chunks that fail their hash; they will be asked for again");
        }
        Ok(PackReport {
            verified: good.len() as u64,
            corrupt: bad,
        })
    }
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
        "verifier"
    }

    async fn work(&mut self) -> Result<Step, String> {
        let packs = chunks::pending_packs(&self.db, PACKS_PER_STEP)
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
