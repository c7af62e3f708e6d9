//! Downloading a version: its manifest names every chunk; chunks this
//! device already holds (in synced files, per the state's chunk index) are
//! copied locally, the rest come through the presigned ranged GETs, several
//! at once. Every chunk is BLAKE3-checked before it is written, and the
//! manifest's content hash is recomputed from its chunk list. Bytes go to a
//! temporary file next to the target; [`Fetched::install`] fsyncs it and
//! renames it into place, so the path never holds a partial file.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use driftless_chunker::{ChunkParams, Codec, Decoder, content_hash};
use driftless_protocol::{
    ChunkHash, ContentHash, DownloadManifest, NamespaceId, Rev, StoredCodec, SyncPath,
};
use tokio::task::JoinSet;

use crate::http::{ApiClient, ClientError};
use crate::local::{LocalError, LocalStat, PARTIAL_PREFIX, Root};
use crate::progress::Progress;
use crate::state::{State, StateError};

/// Ranged GETs in flight at once.
const CONCURRENCY: usize = 4;

/// Why a download failed (nothing was installed).
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server or storage refused, or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The bytes or the manifest do not add up (never installed).
    #[error("{path}: {why}")]
    Corrupt {
        /// The file.
        path: String,
        /// What does not match.
        why: String,
    },
    /// The local folder refused.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// The state database failed.
    #[error("state: {0}")]
    State(#[from] StateError),
    /// Not enough free disk space for the file (nothing was written).
    #[error("{path}: needs {need} bytes of free disk space, {free} are free")]
    NoSpace {
        /// The file.
        path: String,
        /// Bytes needed (the file plus a reserve).
        need: u64,
        /// Bytes free.
        free: u64,
    },
}

/// Free space a download always leaves on the disk.
pub const SPACE_RESERVE: u64 = 256 << 20;

/// Refuses a download of `size` bytes into `dir` that would leave less
/// than [`SPACE_RESERVE`] free (a file of a hostile size must not fill the
/// disk, and a full disk breaks every other program too).
pub fn ensure_space(path: &str, dir: &std::path::Path, size: u64) -> Result<(), DownloadError> {
    #[cfg(unix)]
    {
        let Ok(st) = rustix::fs::statvfs(dir) else {
            return Ok(()); // a file system that cannot say: the write will
        };
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let need = size.saturating_add(SPACE_RESERVE);
        if free < need {
            return Err(DownloadError::NoSpace {
                path: path.to_owned(),
                need,
                free,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, dir, size);
    Ok(())
}

impl DownloadError {
    /// Whether trying again later can help.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Client(e) => e.retryable(),
            Self::Corrupt { .. } => true, // storage may be repaired meanwhile
            Self::NoSpace { .. } => true, // space may be freed meanwhile
            Self::Local(_) | Self::State(_) => false,
        }
    }
}

/// A version fetched into a temporary file, not yet in place.
pub struct Fetched {
    /// The file.
    pub path: SyncPath,
    /// Its revision.
    pub rev: Rev,
    /// Its content hash.
    pub content_hash: ContentHash,
    /// Modification time to give it (ms).
    pub mtime_ms: i64,
    /// Its chunks: hash, offset, length.
    pub chunks: Vec<(ChunkHash, u64, u32)>,
    /// Bytes that came over the network (stored, possibly compressed).
    pub fetched: u64,
    /// Raw bytes copied from local files instead.
    pub reused: u64,
    tmp: PathBuf,
    file: File,
}

impl Fetched {
    /// fsyncs the file and renames it to its path.
    pub fn install(self, root: &Root) -> Result<LocalStat, LocalError> {
        root.install(&self.tmp, self.file, &self.path, self.mtime_ms)
    }

    /// Installs it under another name (a conflicted copy, say).
    pub fn install_as(self, root: &Root, path: &SyncPath) -> Result<LocalStat, LocalError> {
        root.install(&self.tmp, self.file, path, self.mtime_ms)
    }

    /// Drops the temporary file.
    pub fn discard(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn corrupt(path: &str, why: impl Into<String>) -> DownloadError {
    DownloadError::Corrupt {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// Fetches version `rev` (the live one if `None`) of `path` into a
/// temporary file next to it.
pub async fn fetch(
    api: &ApiClient,
    ns: NamespaceId,
    root: &Root,
    state: &State,
    path: &SyncPath,
    rev: Option<Rev>,
) -> Result<Fetched, DownloadError> {
    let m = api.manifest(ns, path.as_str(), rev).await?;
    check_manifest(path.as_str(), &m)?;
    ensure_space(path.as_str(), root.dir(), m.size)?;
    let (tmp, file) = root.temp_for(path)?;
    let result = fill(api, root, state, path, &m, &file).await;
    match result {
        Ok((fetched, reused)) => Ok(Fetched {
            path: path.clone(),
            rev: m.rev,
            content_hash: m.content_hash,
            mtime_ms: m.mtime_ms,
            chunks: m.chunks.iter().map(|c| (c.hash, c.offset, c.len)).collect(),
            fetched,
            reused,
            tmp,
            file,
        }),
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The manifest is about this file and its chunk list adds up to its size
/// and its content hash.
fn check_manifest(path: &str, m: &DownloadManifest) -> Result<(), DownloadError> {
    if m.path != path {
        return Err(corrupt(path, "the manifest names another file"));
    }
    let params = ChunkParams::new(m.chunking.min, m.chunking.avg, m.chunking.max)
        .map_err(|e| corrupt(path, format!("chunking: {e}")))?;
    m.check_layout().map_err(|why| corrupt(path, why))?;
    let h = content_hash(params, m.chunks.iter().map(|c| (c.hash.as_bytes(), c.len)));
    if ContentHash::from_bytes(h) != m.content_hash {
        return Err(corrupt(
            path,
            "the chunk list does not match the content hash",
        ));
    }
    Ok(())
}

/// Writes every chunk into `file`; returns (bytes fetched, bytes reused).
async fn fill(
    api: &ApiClient,
    root: &Root,
    state: &State,
    path: &SyncPath,
    m: &DownloadManifest,
    file: &File,
) -> Result<(u64, u64), DownloadError> {
    file.set_len(m.size).map_err(|e| LocalError::Io {
        path: path.as_str().into(),
        source: e,
    })?;
    fill_with(
        api,
        path.as_str(),
        m,
        file,
        &Progress::hidden(),
        |h, len| local_copy(root, state, h, len).map(|b| b.map(Have::Bytes)),
    )
    .await
}

/// A chunk found before any network fetch.
enum Have {
    /// Its bytes, from elsewhere (written at every offset).
    Bytes(Vec<u8>),
    /// Already in place at every offset (a resumed download).
    InPlace,
}

/// Writes every chunk into `file` (already sized): first what `have` finds,
/// then the rest over the network. Returns (bytes fetched, bytes reused).
async fn fill_with(
    api: &ApiClient,
    label: &str,
    m: &DownloadManifest,
    file: &File,
    progress: &Progress,
    mut have: impl FnMut(&ChunkHash, u32) -> Result<Option<Have>, DownloadError>,
) -> Result<(u64, u64), DownloadError> {
    let path = &label.to_owned();
    // Where each distinct chunk goes.
    let mut wanted: HashMap<ChunkHash, (u32, Vec<u64>)> = HashMap::new();
    for c in &m.chunks {
        wanted
            .entry(c.hash)
            .or_insert((c.len, Vec::new()))
            .1
            .push(c.offset);
    }
    let out = Arc::new(file.try_clone().map_err(|e| LocalError::Io {
        path: path.as_str().into(),
        source: e,
    })?);
    // 1. Chunks this device already has.
    let mut reused = 0u64;
    let hashes: Vec<ChunkHash> = wanted.keys().copied().collect();
    for h in hashes {
        let (len, offsets) = &wanted[&h];
        let found = have(&h, *len)?;
        if let Some(Have::Bytes(bytes)) = &found {
            for o in offsets {
                write_at(&out, bytes, *o).map_err(|e| io_err(path, e))?;
            }
        }
        if found.is_some() {
            let n = u64::from(*len) * offsets.len() as u64;
            reused += n;
            progress.inc(n);
            wanted.remove(&h);
        }
    }
    // 2. The rest over the network, a few ranges at once.
    let mut fetched = 0u64;
    let wanted = Arc::new(wanted);
    let mut tasks = JoinSet::new();
    let mut ranges = m
        .ranges
        .iter()
        .filter(|r| r.chunks.iter().any(|c| wanted.contains_key(&c.hash)));
    let mut done: usize = 0;
    loop {
        while tasks.len() < CONCURRENCY {
            let Some(r) = ranges.next() else { break };
            let api = api.clone();
            let r = r.clone();
            let wanted = wanted.clone();
            let out = out.clone();
            let path = path.clone();
            let progress = progress.clone();
            tasks.spawn(async move {
                // Streamed: each chunk is checked and written as soon as its
                // bytes are in, so memory stays at about one chunk per range
                // and a killed run keeps every chunk written so far.
                let mut resp = api.open_range(&r).await?;
                let mut chunks = r.chunks.clone();
                chunks.sort_by_key(|c| c.at);
                let mut decoder = Decoder::new().map_err(|e| io_err(&path, e))?;
                let mut buf: Vec<u8> = Vec::new();
                let mut buf_at = 0u64; // range offset of buf[0]
                let mut received = 0u64;
                let mut next = 0usize;
                let mut n = 0usize;
                loop {
                    let piece = resp.chunk().await.map_err(ClientError::from)?;
                    let Some(piece) = piece else { break };
                    received += piece.len() as u64;
                    if received > r.length {
                        return Err(corrupt(&path, "a range came back longer than asked"));
                    }
                    buf.extend_from_slice(&piece);
                    while let Some(c) = chunks.get(next) {
                        let end = c.at + u64::from(c.stored_len);
                        if c.at < buf_at || end > buf_at + buf.len() as u64 {
                            if c.at < buf_at {
                                return Err(corrupt(&path, "chunks overlap in a range"));
                            }
                            break;
                        }
                        next += 1;
                        let Some((len, offsets)) = wanted.get(&c.hash) else {
                            continue;
                        };
                        // The stored chunk must fill exactly the slot the
                        // manifest gives it: shorter bytes would leave zeros
                        // nobody wrote.
                        if c.raw_len != *len {
                            return Err(corrupt(
                                &path,
                                format!(
                                    "chunk {} is {} bytes in storage but {} in the file",
                                    c.hash, c.raw_len, len
                                ),
                            ));
                        }
                        let stored = &buf[(c.at - buf_at) as usize..(end - buf_at) as usize];
                        let codec = match c.codec {
                            StoredCodec::None => Codec::None,
                            StoredCodec::Zstd => Codec::Zstd,
                        };
                        let raw = decoder
                            .decode(codec, stored, c.raw_len as usize)
                            .map_err(|e| corrupt(&path, format!("chunk {}: {e}", c.hash)))?;
                        if blake3::hash(raw).as_bytes() != c.hash.as_bytes() {
                            return Err(corrupt(&path, format!("chunk {} fails its hash", c.hash)));
                        }
                        for o in offsets {
                            write_at(&out, raw, *o).map_err(|e| io_err(&path, e))?;
                        }
                        progress.inc(u64::from(c.raw_len) * offsets.len() as u64);
                        n += 1;
                    }
                    // Drop what no later chunk needs.
                    let keep_from = chunks.get(next).map_or(buf_at + buf.len() as u64, |c| {
                        c.at.min(buf_at + buf.len() as u64)
                    });
                    if keep_from > buf_at {
                        buf.drain(..(keep_from - buf_at) as usize);
                        buf_at = keep_from;
                    }
                }
                if received != r.length || next < chunks.len() {
                    return Err(corrupt(&path, "a range came back shorter than asked"));
                }
                Ok::<_, DownloadError>((r.length, n))
            });
        }
        let Some(res) = tasks.join_next().await else {
            break;
        };
        let (len, n) = res.map_err(|e| corrupt(path, e.to_string()))??;
        fetched += len;
        done += n;
    }
    // Each distinct chunk is written once per range holding it; a range
    // that holds a chunk twice is harmless. What matters: all were covered.
    let mut covered: std::collections::HashSet<ChunkHash> = std::collections::HashSet::new();
    for r in &m.ranges {
        for c in &r.chunks {
            if wanted.contains_key(&c.hash) {
                covered.insert(c.hash);
            }
        }
    }
    if covered.len() != wanted.len() || done < wanted.len() {
        return Err(corrupt(path, "the manifest has no range for some chunks"));
    }
    Ok((fetched, reused))
}

fn io_err(path: &str, e: io::Error) -> DownloadError {
    DownloadError::Local(LocalError::Io {
        path: path.into(),
        source: e,
    })
}

/// A chunk read from a synced local file, if one still holds it intact.
fn local_copy(
    root: &Root,
    state: &State,
    hash: &ChunkHash,
    len: u32,
) -> Result<Option<Vec<u8>>, DownloadError> {
    for src in state.chunk_sources(hash)? {
        if src.len != len {
            continue;
        }
        let Ok(f) = crate::local::open_regular(&root.path_of(&src.path), None) else {
            continue;
        };
        let mut buf = vec![0u8; len as usize];
        if read_exact_at(&f, &mut buf, src.offset).is_ok()
            && blake3::hash(&buf).as_bytes() == hash.as_bytes()
        {
            return Ok(Some(buf));
        }
    }
    Ok(None)
}

#[cfg(unix)]
fn write_at(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, offset)
}

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

/// What [`download_to`] did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Downloaded {
    /// The revision written.
    pub rev: Rev,
    /// Its size.
    pub size: u64,
    /// Bytes fetched over the network (stored sizes).
    pub fetched: u64,
    /// Raw bytes already in place from an interrupted run.
    pub resumed: u64,
}

/// Downloads version `rev` (the live one if `None`) of `remote` to the
/// local file `target`, anywhere on disk. Bytes go to a hidden partial
/// file next to it, named after the version: a run killed at any point
/// leaves `target` untouched, and running again keeps every chunk already
/// written (each re-checked against its hash) and fetches only the rest.
pub async fn download_to(
    api: &ApiClient,
    ns: NamespaceId,
    remote: &str,
    rev: Option<Rev>,
    target: &std::path::Path,
    progress: &Progress,
) -> Result<Downloaded, DownloadError> {
    let m = api.manifest(ns, remote, rev).await?;
    check_manifest(remote, &m)?;
    let label = target.display().to_string();
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    ensure_space(&label, &dir, m.size)?;
    let name = target
        .file_name()
        .ok_or_else(|| io_err(&label, io::Error::other("the target names no file")))?
        .to_string_lossy()
        .into_owned();
    let mut id = blake3::Hasher::new();
    id.update(&ns.0.to_le_bytes());
    id.update(remote.as_bytes());
    id.update(m.content_hash.as_bytes());
    id.update(name.as_bytes());
    // The reserved prefix: a download into a synced folder is never taken
    // for a file of the folder (and uploaded half-written).
    let partial = dir.join(format!("{PARTIAL_PREFIX}{}", &id.finalize().to_hex()[..24]));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&partial)
        .map_err(|e| io_err(&label, e))?;
    let had = file.metadata().map_err(|e| io_err(&label, e))?.len();
    file.set_len(m.size).map_err(|e| io_err(&label, e))?;
    progress.set_length(m.size);
    // Chunks an earlier run already wrote (only within what it had written).
    let offsets: HashMap<ChunkHash, Vec<u64>> =
        m.chunks.iter().fold(HashMap::new(), |mut acc, c| {
            acc.entry(c.hash).or_default().push(c.offset);
            acc
        });
    let reader = file.try_clone().map_err(|e| io_err(&label, e))?;
    let mut buf = Vec::new();
    let (fetched, resumed) = fill_with(api, &label, &m, &file, progress, |h, len| {
        let all = &offsets[h];
        if had == 0 || all.iter().any(|o| o + u64::from(len) > had) {
            return Ok(None);
        }
        buf.resize(len as usize, 0);
        for o in all {
            if read_exact_at(&reader, &mut buf, *o).is_err()
                || blake3::hash(&buf).as_bytes() != h.as_bytes()
            {
                return Ok(None);
            }
        }
        Ok(Some(Have::InPlace))
    })
    .await?;
    file.sync_all().map_err(|e| io_err(&label, e))?;
    drop(file);
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.mtime_ms.max(0) as u64);
    if let Ok(f) = File::options().write(true).open(&partial) {
        let _ = f.set_modified(mtime);
    }
    std::fs::rename(&partial, target).map_err(|e| io_err(&label, e))?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    progress.finish_and_clear();
    Ok(Downloaded {
        rev: m.rev,
        size: m.size,
        fetched,
        resumed,
    })
}
