//! `driftless status`: what a folder holds that is not yet agreed with the
//! server, judged by the same rules as the push (a file counts as deleted
//! only if the walk saw it gone), and everything that keeps it from being
//! in sync: files that failed with their reasons, folders that cannot be
//! read, deletions held by the brake, a folder that is missing, the last
//! pass's failure.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::local::Root;
use crate::scan::{Ignore, scan};
use crate::state::{State, StateError};
use crate::sync::{CURSOR_KEY, HELD_DELETES_KEY, LAST_ERROR_KEY};

/// A path and why it is listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The path in the folder.
    pub path: String,
    /// `new`, `modified`, `deleted`; or the reason it failed or was skipped.
    pub why: String,
}

/// A folder's sync status.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The folder.
    pub folder: String,
    /// Its namespace on the server.
    pub namespace: Option<String>,
    /// Files agreed with the server.
    pub synced_files: usize,
    /// Local changes not yet sent.
    pub pending: Vec<Entry>,
    /// Files that failed in the last pass, with the reason (retried each pass).
    pub failed: Vec<Entry>,
    /// Entries the walk skipped (symlinks, names that cannot sync,
    /// unreadable folders), with the reason.
    pub skipped: Vec<Entry>,
    /// Synced files this device now ignores (its `.driftignore`): neither
    /// sent nor deleted.
    pub ignored: usize,
    /// Deletions held back by the brake (`driftless sync --confirm-deletes`).
    pub deletes_held: u64,
    /// Why the folder cannot sync at all right now, if so.
    pub folder_problem: Option<String>,
    /// The last pass's failure, if it failed as a whole.
    pub last_error: Option<String>,
    /// Upload sessions in flight (resumed by the next pass).
    pub uploads_in_flight: u64,
    /// When the last pass ended (ms since the epoch).
    pub last_pass_ms: Option<i64>,
    /// Whether the folder has followed the server's journal yet.
    pub bootstrapped: bool,
    /// Conflicted copies: (copy, original, when).
    pub conflicts: Vec<(String, String, i64)>,
}

impl Status {
    /// Whether nothing stands between the folder and the server.
    pub fn in_sync(&self) -> bool {
        self.pending.is_empty()
            && self.failed.is_empty()
            && self.deletes_held == 0
            && self.folder_problem.is_none()
            && self.last_error.is_none()
    }
}

/// The status of the folder at `root` with its state.
pub fn status(root: &Root, state: &State) -> Result<Status, StateError> {
    let synced = state.all_synced()?;
    let ignore = Ignore::load(root);
    let mut pending = Vec::new();
    let mut skipped = Vec::new();
    let mut ignored = 0;
    let folder_problem = match scan(root, &ignore) {
        Err(e) => Some(e.to_string()),
        Ok(found) => {
            let by_path: HashMap<_, _> = synced.iter().map(|s| (&s.path, s)).collect();
            let present: HashSet<_> = found.files.iter().map(|f| &f.path).collect();
            for f in &found.files {
                match by_path.get(&f.path) {
                    Some(s) if s.stat == f.stat => {}
                    Some(_) => pending.push(entry(f.path.as_str(), "modified")),
                    None => pending.push(entry(f.path.as_str(), "new")),
                }
            }
            for s in &synced {
                if present.contains(&s.path) {
                    continue;
                }
                if ignore.ignored(&s.path, false) {
                    ignored += 1;
                } else if found.deleted(root, &ignore, &s.path, s.stat.dev) {
                    pending.push(entry(s.path.as_str(), "deleted"));
                }
            }
            skipped = found.skipped.iter().map(|(p, why)| entry(p, why)).collect();
            None
        }
    };
    let failed = state
        .problems()?
        .into_iter()
        .map(|(path, why, _)| Entry { path, why })
        .collect();
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    Ok(Status {
        folder: root.dir().display().to_string(),
        namespace: state.get("namespace")?,
        synced_files: synced.len(),
        pending,
        failed,
        skipped,
        ignored,
        deletes_held: state
            .get(HELD_DELETES_KEY)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        folder_problem,
        last_error: nonempty(state.get(LAST_ERROR_KEY)?),
        uploads_in_flight: state.saved_upload_count()?,
        last_pass_ms: state.get("last_pass_ms")?.and_then(|l| l.parse().ok()),
        bootstrapped: state.get(CURSOR_KEY)?.is_some(),
        conflicts: state.conflicts()?,
    })
}

fn entry(path: &str, why: &str) -> Entry {
    Entry {
        path: path.to_owned(),
        why: why.to_owned(),
    }
}
