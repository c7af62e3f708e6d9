//! The sync engine: one pass pulls the server's changes into the folder,
//! pushes the folder's changes to the server, and pulls again.
//!
//! Every decision is three-way: the server's entry, the file on disk, and
//! what the state database says the file was when both last agreed
//! ([`Synced`]). A file whose stat still matches its synced record is
//! "clean" and takes the server's changes; a "dirty" one is never
//! overwritten: pushing it either commits (its base is current) or
//! conflicts, and then the local edit becomes a conflicted copy next to
//! the server's version. An edit beats a delete on either side.

mod pull;
mod push;
mod reconcile;

pub use reconcile::RECONCILE_EVERY;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use driftless_protocol::{NamespaceId, SyncPath};

use crate::download::DownloadError;
use crate::hash::HashedFile;
use crate::http::{ApiClient, ClientError};
use crate::local::{FolderError, LocalError, Root, conflicted_copy};
use crate::scan::Ignore;
use crate::state::{State, StateError, Synced};
use crate::upload::{UploadError, UploadOptions};

/// Why a pass stopped (per-file problems are counted, not raised).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The server could not be reached or refused the whole request.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The state database failed.
    #[error("state: {0}")]
    State(#[from] StateError),
    /// The synced folder is missing, replaced or unreadable: nothing is
    /// sent or applied until it is back.
    #[error(transparent)]
    Folder(#[from] FolderError),
}

impl SyncError {
    /// Whether the next pass may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Client(e) => e.retryable(),
            Self::State(_) => false,
            // A drive comes back, a folder is renamed back.
            Self::Folder(_) => true,
        }
    }
}

/// A file that could not be synced in a pass, and why (retried next pass;
/// `driftless status` lists them).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The path in the folder (or a folder, or `.` for the whole folder).
    pub path: String,
    /// What went wrong, for the user.
    pub why: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.why)
    }
}

/// When a pass holds back deletions instead of sending them: more than
/// `max_files`, or more than `max_fraction` of the synced files (once
/// more than `min_files` go). A brake for what no other check foresaw;
/// `driftless sync --confirm-deletes` releases it once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeleteBrake {
    /// Deletions in one pass above which it holds.
    pub max_files: usize,
    /// Share of the synced files above which it holds.
    pub max_fraction: f64,
    /// The share rule applies only above this many deletions.
    pub min_files: usize,
}

impl Default for DeleteBrake {
    fn default() -> Self {
        Self {
            max_files: 500,
            max_fraction: 0.30,
            min_files: 10,
        }
    }
}

impl DeleteBrake {
    /// Whether `deletes` of `synced` files is too many to send unconfirmed.
    pub fn holds(&self, deletes: usize, synced: usize) -> bool {
        deletes > self.max_files
            || (deletes > self.min_files
                && (deletes as f64) > self.max_fraction * synced.max(1) as f64)
    }
}

/// The state key of deletions held by the brake (their count).
pub const HELD_DELETES_KEY: &str = "held_deletes";
/// The state key set by `driftless sync --confirm-deletes`.
pub const CONFIRM_DELETES_KEY: &str = "confirm_deletes";
/// The state key of the last pass's failure, if it failed as a whole.
pub const LAST_ERROR_KEY: &str = "last_error";

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassReport {
    /// Files downloaded (new or changed on the server).
    pub downloaded: u64,
    /// Files uploaded.
    pub uploaded: u64,
    /// Local files removed because the server deleted them.
    pub deleted_here: u64,
    /// Server files deleted because they were deleted here.
    pub deleted_there: u64,
    /// Moves applied (either way).
    pub moved: u64,
    /// Conflicted copies made.
    pub conflicts: u64,
    /// Bytes sent to storage.
    pub bytes_up: u64,
    /// Bytes fetched from storage.
    pub bytes_down: u64,
    /// Raw bytes reused from local files instead of fetched.
    pub bytes_reused: u64,
    /// Problems with single files (each retried next pass).
    pub problems: Vec<Problem>,
    /// Deletions found but held back by the brake (0: none).
    pub deletes_held: u64,
}

impl PassReport {
    /// Adds another report's counts and problems to this one.
    pub fn merge(&mut self, o: PassReport) {
        self.downloaded += o.downloaded;
        self.uploaded += o.uploaded;
        self.deleted_here += o.deleted_here;
        self.deleted_there += o.deleted_there;
        self.moved += o.moved;
        self.conflicts += o.conflicts;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
        self.bytes_reused += o.bytes_reused;
        self.problems.extend(o.problems);
        self.deletes_held += o.deletes_held;
    }

    /// Notes a problem with one path.
    pub fn problem(&mut self, path: impl Into<String>, why: impl std::fmt::Display) {
        self.problems.push(Problem {
            path: path.into(),
            why: why.to_string(),
        });
    }

    /// Whether the pass changed anything on either side.
    pub fn changed(&self) -> bool {
        self.downloaded + self.uploaded + self.deleted_here + self.deleted_there + self.moved > 0
    }
}

/// Keeps one folder in sync with one namespace.
pub struct Syncer {
    api: ApiClient,
    ns: NamespaceId,
    root: Root,
    state: Arc<State>,
    device: String,
    opts: UploadOptions,
    /// Whether the temporary files of an earlier, killed run were removed.
    swept: std::sync::atomic::AtomicBool,
    /// When the last full reconcile ran (none yet: the next pass runs one).
    reconciled: std::sync::Mutex<Option<std::time::Instant>>,
    brake: DeleteBrake,
    /// The ignore rules of the last pass.
    ignore_digest: std::sync::Mutex<Option<[u8; 32]>>,
    /// Each folder's entries by collision key, listed once per pull (see
    /// [`Syncer::case_twins`]).
    listings: std::sync::Mutex<HashMap<std::path::PathBuf, Arc<Listing>>>,
}

/// A folder's entries with their collision keys.
type Listing = Vec<(String, SyncPath)>;

/// The state key of the journal cursor.
pub const CURSOR_KEY: &str = "cursor";

impl Syncer {
    /// A syncer of `root` with namespace `ns`; `device` names conflicted copies.
    pub fn new(
        api: ApiClient,
        ns: NamespaceId,
        root: Root,
        state: Arc<State>,
        device: &str,
    ) -> Self {
        Self {
            api,
            ns,
            root,
            state,
            device: device.to_owned(),
            opts: UploadOptions::default(),
            swept: std::sync::atomic::AtomicBool::new(false),
            reconciled: std::sync::Mutex::new(None),
            brake: DeleteBrake::default(),
            ignore_digest: std::sync::Mutex::new(None),
            listings: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// When deletions are held back for confirmation.
    pub fn with_delete_brake(mut self, brake: DeleteBrake) -> Self {
        self.brake = brake;
        self
    }

    /// Changes when deletions are held back.
    pub fn set_delete_brake(&mut self, brake: DeleteBrake) {
        self.brake = brake;
    }

    /// Upload options (part size, parallelism).
    pub fn with_upload_options(mut self, opts: UploadOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The folder.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The state database.
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// The API client.
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// The namespace.
    pub fn namespace(&self) -> NamespaceId {
        self.ns
    }

    /// Makes the next chance (this pass, or the next) run the full
    /// comparison with the server.
    pub(crate) fn reconcile_soon(&self) {
        *self
            .reconciled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Pull, push, pull: afterwards both sides hold what either had,
    /// unless something changed meanwhile (the next pass takes it).
    ///
    /// Nothing happens unless the folder is the one that was synced (it
    /// may have been renamed, unmounted or replaced): a missing folder is
    /// not a folder whose files were all deleted. What failed is written
    /// to the state for `driftless status`.
    pub async fn pass(&self) -> Result<PassReport, SyncError> {
        let result = self.pass_inner().await;
        let now = crate::now_ms();
        match &result {
            Ok(r) => {
                let list: Vec<(String, String)> = r
                    .problems
                    .iter()
                    .map(|p| (p.path.clone(), p.why.clone()))
                    .collect();
                if let Err(e) = self.state.set_problems(&list, now) {
                    tracing::warn!(error = %e, "could not note this pass's problems");
                }
                let _ = self.state.set(LAST_ERROR_KEY, "");
            }
            Err(e) => {
                let _ = self.state.set(LAST_ERROR_KEY, &e.to_string());
            }
        }
        result
    }

    async fn pass_inner(&self) -> Result<PassReport, SyncError> {
        let mut report = PassReport::default();
        self.root.check()?;
        let ignore = Ignore::load(&self.root);
        if !self.swept.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.sweep_partials(&ignore).await;
        }
        // New ignore rules: what they no longer hide is compared again.
        {
            let mut last = self
                .ignore_digest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|d| d != ignore.digest()) {
                self.reconcile_soon();
            }
            *last = Some(ignore.digest());
        }
        self.pull(&ignore, &mut report).await?;
        // A change the pull could not apply is behind the cursor now: the
        // full comparison brings it, this pass or the next.
        if !report.problems.is_empty() {
            self.reconcile_soon();
        }
        let due = self
            .reconciled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_none_or(|t| t.elapsed() >= RECONCILE_EVERY);
        if due {
            self.reconcile(&ignore, &mut report).await?;
            *self
                .reconciled
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(std::time::Instant::now());
        }
        self.push(&ignore, &mut report).await?;
        if report.changed() {
            self.pull(&ignore, &mut report).await?;
        }
        Ok(report)
    }

    /// Removes the temporary files a killed run left (the caller holds the
    /// folder's lock, so no other download is writing them).
    async fn sweep_partials(&self, ignore: &Ignore) {
        let (root, ignore) = (self.root.clone(), ignore.clone());
        let found = tokio::task::spawn_blocking(move || crate::scan::scan(&root, &ignore)).await;
        let partials = match found {
            Ok(Ok(f)) => f.partials,
            _ => Vec::new(),
        };
        for p in partials {
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    tracing::info!(file = %p.display(), "removed the temporary file of an interrupted download")
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "could not remove a temporary file")
                }
            }
        }
    }

    /// Moves the local file at `p` aside as a conflicted copy; returns the copy.
    fn set_aside(&self, p: &SyncPath, report: &mut PassReport) -> Result<SyncPath, LocalError> {
        let copy = conflicted_copy(p, &self.device, SystemTime::now(), |q| {
            self.root.stat(q).is_some() || std::fs::symlink_metadata(self.root.path_of(q)).is_ok()
        })
        .ok_or_else(|| LocalError::Unsafe {
            path: p.as_str().into(),
            why: "no free name for a conflicted copy",
        })?;
        self.root.rename(p, &copy)?;
        let now = crate::now_ms();
        if let Err(e) = self.state.note_conflict(&copy, p, now) {
            tracing::warn!(error = %e, "could not note the conflict");
        }
        tracing::warn!(path = %p, copy = %copy, "conflict: the local version is kept as a copy");
        report.conflicts += 1;
        Ok(copy)
    }

    /// Downloads the live (or given) version of `p` and installs it if the
    /// local file is still as `expected` (`None`: absent). Returns whether
    /// it was installed.
    async fn download(
        &self,
        p: &SyncPath,
        rev: Option<driftless_protocol::Rev>,
        expected: Option<crate::local::LocalStat>,
        report: &mut PassReport,
    ) -> Result<bool, DownloadError> {
        let fetched =
            crate::download::fetch(&self.api, self.ns, &self.root, &self.state, p, rev).await?;
        // Checked again right before the rename: an edit made while the
        // bytes were coming is never overwritten.
        if self.root.stat(p) != expected {
            fetched.discard();
            return Ok(false);
        }
        // The live version is this device's own commit whose answer it
        // never recorded (killed in between), reached through an older
        // entry of the path: it is the base of whatever the folder holds
        // now (even nothing: a delete made since), which the push sends
        // on top of it. Writing it would undo that later change.
        if self.state.was_sent(p, &fetched.content_hash)? {
            self.state.record(
                &Synced {
                    path: p.clone(),
                    rev: fetched.rev,
                    content_hash: fetched.content_hash,
                    stat: crate::local::LocalStat::UNKNOWN,
                },
                &[],
            )?;
            fetched.discard();
            return Ok(false);
        }
        // Another name that differs only by case or normalization would be
        // the same file on macOS and Windows: set it aside first.
        for other in self.case_twins(p) {
            if self.state.synced(&other)?.is_none() {
                let _ = self.set_aside(&other, report);
            }
        }
        report.bytes_down += fetched.fetched;
        report.bytes_reused += fetched.reused;
        let (rev, content_hash, chunks) =
            (fetched.rev, fetched.content_hash, fetched.chunks.clone());
        let stat = fetched.install(&self.root)?;
        self.state.record(
            &Synced {
                path: p.clone(),
                rev,
                content_hash,
                stat,
            },
            &chunks,
        )?;
        report.downloaded += 1;
        Ok(true)
    }

    /// Files in `p`'s folder whose names collide with `p`'s but differ.
    ///
    /// Each folder is listed once per pull, not once per file written into
    /// it (that made a first download quadratic in the folder's size). A
    /// twin created after the listing is found by the next pull, or by the
    /// server when it is sent (`path_collision`); on a file system that
    /// ignores case the check right before the rename sees it anyway.
    fn case_twins(&self, p: &SyncPath) -> Vec<SyncPath> {
        let key = p.collision_key();
        let dir = match p.parent() {
            Some(parent) => self.root.path_of(&parent),
            None => self.root.dir().to_owned(),
        };
        let cached = self
            .listings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&dir)
            .cloned();
        let listing = match cached {
            Some(l) => l,
            None => {
                let entries: Listing = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd
                        .filter_map(Result::ok)
                        .filter_map(|e| self.root.sync_path(&e.path()))
                        .map(|q| (q.collision_key(), q))
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let l = Arc::new(entries);
                self.listings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(dir, l.clone());
                l
            }
        };
        listing
            .iter()
            .filter(|(k, q)| q != p && *k == key)
            .map(|(_, q)| q.clone())
            .collect()
    }

    /// Forgets the folder listings of the last pull.
    fn forget_listings(&self) {
        self.listings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

/// What a hashed file's chunks are, as the state records them.
fn chunk_list(h: &HashedFile) -> Vec<(driftless_protocol::ChunkHash, u64, u32)> {
    h.chunks
        .iter()
        .zip(&h.offsets)
        .map(|(c, o)| (c.hash, *o, c.len))
        .collect()
}

impl From<UploadError> for SyncError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Client(c) => Self::Client(c),
            other => Self::Client(ClientError::Protocol(other.to_string())),
        }
    }
}
