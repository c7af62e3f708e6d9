//! Turning one wire operation into a checked [`FileChange`], or the per-file
//! error the client gets for it. Nothing here trusts the client: paths are
//! parsed, chunking parameters checked, sizes summed and the content hash
//! recomputed from the chunk list.

use driftless_chunker::{ChunkParams, content_hash};
use driftless_protocol::{ErrorCode, FileOp, PutFile, SyncPath};
use driftless_store::meta::commit::FileChange;
use driftless_store::meta::manifest::Manifest;

/// Most chunks in one file: a 64 GiB file at the large parameters' average.
pub(crate) const MAX_CHUNKS: usize = 20_000;

/// A refusal of one operation.
pub(crate) type Refusal = (ErrorCode, String);

fn path(s: &str) -> Result<SyncPath, Refusal> {
    SyncPath::parse(s).map_err(|e| (e.code(), e.to_string()))
}

/// BLAKE3 of the operation's canonical JSON: retries must send the same thing.
pub(crate) fn digest(op: &FileOp) -> [u8; 32] {
    *blake3::hash(&serde_json::to_vec(op).unwrap_or_default()).as_bytes()
}

/// Checks a put: path, parameters, chunk lengths, size (at most
/// `max_bytes`) and content hash.
pub(crate) fn put(
    p: &PutFile,
    max_bytes: u64,
) -> Result<(SyncPath, ChunkParams, Manifest), Refusal> {
    let target = path(&p.path)?;
    let params = ChunkParams::new(p.chunking.min, p.chunking.avg, p.chunking.max)
        .map_err(|e| (ErrorCode::ChunkingInvalid, e.to_string()))?;
    if p.chunks.len() > MAX_CHUNKS {
        return Err((
            ErrorCode::InvalidRequest,
            format!("at most {MAX_CHUNKS} chunks per file"),
        ));
    }
    let last = p.chunks.len().saturating_sub(1);
    for (i, c) in p.chunks.iter().enumerate() {
        if c.len == 0 || c.len > params.max() || (i < last && c.len < params.min()) {
            return Err((
                ErrorCode::SizeMismatch,
                format!("chunk {i} has length {} outside the chunking bounds", c.len),
            ));
        }
    }
    let total: u64 = p.chunks.iter().map(|c| u64::from(c.len)).sum();
    if total > max_bytes {
        return Err((
            ErrorCode::FileTooLarge,
            format!("the file is {total} bytes; this server accepts at most {max_bytes}"),
        ));
    }
    if total != p.size {
        return Err((
            ErrorCode::SizeMismatch,
            format!("size is {} but the chunks add up to {total}", p.size),
        ));
    }
    let expected = content_hash(params, p.chunks.iter().map(|c| (c.hash.as_bytes(), c.len)));
    if expected != *p.content_hash.as_bytes() {
        return Err((
            ErrorCode::HashMismatch,
            "content_hash does not match the chunk list".into(),
        ));
    }
    Ok((target, params, Manifest::from_specs(&p.chunks)))
}

/// Checks any operation and returns the change to commit; a put's file is
/// at most `max_bytes`.
pub(crate) fn op(op: &FileOp, max_bytes: u64) -> Result<FileChange, Refusal> {
    Ok(match op {
        FileOp::Put(p) => {
            let (target, _, manifest) = put(p, max_bytes)?;
            FileChange::Put {
                path: target,
                base_rev: p.base_rev,
                mtime_ms: p.mtime_ms,
                chunking: p.chunking,
                manifest,
                content_hash: p.content_hash,
            }
        }
        FileOp::Delete {
            path: p, base_rev, ..
        } => FileChange::Delete {
            path: path(p)?,
            base_rev: *base_rev,
        },
        FileOp::Move {
            from,
            from_rev,
            to,
            base_rev,
            ..
        } => FileChange::Move {
            from: path(from)?,
            from_rev: *from_rev,
            to: path(to)?,
            base_rev: *base_rev,
        },
    })
}
