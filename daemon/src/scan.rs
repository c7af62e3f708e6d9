//! Walking the synced folder: every regular file that may sync, with its
//! stat. Skipped: the daemon's own folder and temporary files, what
//! `.driftignore` (gitignore syntax) excludes, editors' and systems' litter,
//! symlinks (reported: their targets may lie outside the folder), and names
//! that cannot be a [`SyncPath`] (reported).
//!
//! A walk is also the evidence for deletions: a file missing from it counts
//! as deleted only if the walk positively saw it gone ([`Scan::saw_gone`]):
//! the root is still the folder that was synced, every folder above the
//! path was listed without an error, and the folder it was in is still on
//! the file system it was on. A folder that could not be read, a drive
//! that went away, a folder renamed mid-walk: none of them is a delete.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use driftless_protocol::SyncPath;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::local::{FolderError, LocalStat, PARTIAL_PREFIX, Root, STATE_DIR};

/// The ignore file at the root.
pub const IGNORE_FILE: &str = ".driftignore";

/// Names never synced: temporary and system files.
const LITTER: &[&str] = &[
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    ".~lock.*#",
    "~$*",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    "*.tmp",
    "*.crdownload",
    "*.part",
];

/// What to leave out.
#[derive(Clone)]
pub struct Ignore {
    rules: Gitignore,
    digest: [u8; 32],
}

impl Ignore {
    /// The built-in rules plus the root's `.driftignore`, if any.
    pub fn load(root: &Root) -> Self {
        let builtin = || {
            let mut b = GitignoreBuilder::new(root.dir());
            for l in LITTER {
                let _ = b.add_line(None, l);
            }
            b
        };
        let mut b = builtin();
        let file = root.dir().join(IGNORE_FILE);
        let digest = *blake3::hash(&std::fs::read(&file).unwrap_or_default()).as_bytes();
        if file.exists()
            && let Some(e) = b.add(&file)
        {
            tracing::warn!(error = %e, "part of .driftignore could not be read");
        }
        let rules = b.build().unwrap_or_else(|e| {
            tracing::warn!(error = %e, ".driftignore is invalid; using the built-in rules only");
            builtin().build().unwrap_or_else(|_| Gitignore::empty())
        });
        Self { rules, digest }
    }

    /// A digest of the rules file: it changes when the rules do.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Whether `p` (a file, or a folder if `dir`) is left out.
    pub fn ignored(&self, p: &SyncPath, dir: bool) -> bool {
        let name = p.file_name();
        // The root's `.driftignore` is this device's own: never sent (an
        // editor's rules must not silently stop other members' uploads)
        // and never replaced by another device's.
        if name.starts_with(PARTIAL_PREFIX)
            || p.components().next() == Some(STATE_DIR)
            || p.as_str() == IGNORE_FILE
        {
            return true;
        }
        self.rules
            .matched_path_or_any_parents(Path::new(p.as_str()), dir)
            .is_ignore()
    }
}

/// One file found.
#[derive(Clone, Debug)]
pub struct Found {
    /// Its sync path.
    pub path: SyncPath,
    /// Its stat.
    pub stat: LocalStat,
}

/// What a walk found and what it skipped with a reason.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files that may sync.
    pub files: Vec<Found>,
    /// Skipped entries worth telling the user about.
    pub skipped: Vec<(String, &'static str)>,
    /// Temporary files of downloads (left by a killed run if no download
    /// is in flight).
    pub partials: Vec<std::path::PathBuf>,
    /// Folders listed completely (relative, `""` the root), with the file
    /// system each is on.
    listed: HashMap<String, u64>,
    /// Folders that could not be listed completely (relative).
    unread: HashSet<String>,
}

impl Scan {
    /// Whether this walk is evidence that the synced file `p`, last seen
    /// on file system `dev` (0: unknown), was deleted: every folder above
    /// it was listed without error and the nearest one that exists is on
    /// that file system. A file the walk did not see for any other reason
    /// (an unreadable folder, an unmounted drive) is not deleted.
    pub fn saw_gone(&self, p: &SyncPath, dev: u64) -> bool {
        let comps: Vec<&str> = p.components().collect();
        let folders = &comps[..comps.len().saturating_sub(1)];
        let mut at = String::new();
        let mut nearest = None;
        for i in 0..=folders.len() {
            if i > 0 {
                if i > 1 {
                    at.push('/');
                }
                at.push_str(folders[i - 1]);
            }
            if self.unread.contains(&at) {
                return false;
            }
            match self.listed.get(&at) {
                Some(&d) => nearest = Some(d),
                None => break,
            }
        }
        nearest.is_some_and(|d| dev == 0 || d == dev)
    }

    /// Whether a synced file this walk did not list was deleted here:
    /// seen gone ([`Scan::saw_gone`]) or replaced by a folder, and not
    /// merely left out now (ignored, replaced by a symlink, or still on
    /// disk behind a symlinked folder).
    pub fn deleted(&self, root: &Root, ignore: &Ignore, p: &SyncPath, dev: u64) -> bool {
        self.saw_gone(p, dev)
            && !ignore.ignored(p, false)
            && match std::fs::symlink_metadata(root.path_of(p)) {
                Err(_) => true,
                // The file became a folder: it is gone as a file.
                Ok(m) => m.is_dir(),
            }
    }

    /// Folders that could not be read, for the user (relative paths).
    pub fn unread(&self) -> impl Iterator<Item = &str> {
        self.unread.iter().map(String::as_str)
    }
}

/// Walks the folder, folders by name (so runs are reproducible), never
/// descending into an ignored folder or following a symlink. Fails as a
/// whole if the root is not the folder that was synced or cannot be
/// listed (then nothing may be concluded from it).
pub fn scan(root: &Root, ignore: &Ignore) -> Result<Scan, FolderError> {
    root.check()?;
    let mut out = Scan::default();
    let mut stack = vec![root.dir().to_owned()];
    while let Some(dir) = stack.pop() {
        let rel = dir
            .strip_prefix(root.dir())
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default();
        let listing =
            std::fs::symlink_metadata(&dir).and_then(|m| std::fs::read_dir(&dir).map(|rd| (m, rd)));
        let (meta, entries) = match listing {
            Ok(x) => x,
            Err(e) if rel.is_empty() => {
                return Err(FolderError::Unreadable(
                    root.dir().display().to_string(),
                    e.to_string(),
                ));
            }
            Err(e) => {
                out.skipped.push((rel.clone(), io_reason(&e)));
                out.unread.insert(rel);
                continue;
            }
        };
        let mut complete = true;
        let mut ok = Vec::new();
        for e in entries {
            match e {
                Ok(e) => ok.push(e),
                Err(_) => complete = false,
            }
        }
        let mut entries = ok;
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for entry in entries {
            let Ok(ft) = entry.file_type() else {
                complete = false;
                continue;
            };
            let local = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(PARTIAL_PREFIX) && ft.is_file() {
                out.partials.push(local);
                continue;
            }
            // A name not in Unicode NFC (as macOS writes them) is stored under
            // its NFC form, so that the path the server knows is the path on
            // disk; if that name is taken, the two would be one file on the
            // server and neither is synced until the user renames one.
            let mut local = local;
            if let Ok(p) = SyncPath::from_local(&name)
                && p.as_str() != name
                && !ft.is_symlink()
            {
                let nfc = local.with_file_name(p.as_str());
                if std::fs::symlink_metadata(&nfc).is_ok() {
                    let shown = local.strip_prefix(root.dir()).unwrap_or(&local);
                    out.skipped.push((
                        shown.display().to_string(),
                        "another file has the same name in another Unicode normalization",
                    ));
                    continue;
                }
                if std::fs::rename(&local, &nfc).is_err() {
                    continue;
                }
                local = nfc;
            }
            let Some(p) = root.sync_path(&local) else {
                if name != STATE_DIR && !name.starts_with(PARTIAL_PREFIX) {
                    let shown = local.strip_prefix(root.dir()).unwrap_or(&local);
                    out.skipped
                        .push((shown.display().to_string(), "the name cannot be synced"));
                }
                continue;
            };
            if ignore.ignored(&p, ft.is_dir()) {
                continue;
            }
            if ft.is_symlink() {
                out.skipped
                    .push((p.as_str().to_owned(), "symlinks are not synced"));
            } else if ft.is_dir() {
                stack.push(local);
            } else if ft.is_file() {
                match std::fs::symlink_metadata(&local) {
                    Ok(m) => out.files.push(Found {
                        path: p,
                        stat: LocalStat::of(&m),
                    }),
                    // Gone since the listing: that is a deletion.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        out.skipped.push((p.as_str().to_owned(), io_reason(&e)));
                        complete = false;
                    }
                }
            }
        }
        if complete {
            out.listed.insert(rel, crate::local::dir_id(&meta).0);
        } else {
            out.skipped.push((
                if rel.is_empty() {
                    ".".into()
                } else {
                    rel.clone()
                },
                "the folder could not be listed completely",
            ));
            out.unread.insert(rel);
        }
    }
    // Renamed, replaced or unmounted while we walked: the walk proves nothing.
    root.check()?;
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn io_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied",
        _ => "cannot be read",
    }
}
