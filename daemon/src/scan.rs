//! Walking the synced folder: every regular file that may sync, with its
//! stat. Skipped: the daemon's own folder and temporary files, what
//! `.driftignore` (gitignore syntax) excludes, editors' and systems' litter,
//! symlinks (reported: their targets may lie outside the folder), and names
//! that cannot be a [`SyncPath`] (reported).

use std::path::Path;

use driftless_protocol::SyncPath;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::local::{LocalStat, PARTIAL_PREFIX, Root, STATE_DIR};

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
}

impl Ignore {
    /// The built-in rules plus the root's `.driftignore`, if any.
    pub fn load(root: &Root) -> Self {
        let mut b = GitignoreBuilder::new(root.dir());
        for l in LITTER {
            let _ = b.add_line(None, l);
        }
        let file = root.dir().join(IGNORE_FILE);
        if file.exists()
            && let Some(e) = b.add(&file)
        {
            tracing::warn!(error = %e, "part of .driftignore could not be read");
        }
        let rules = b.build().unwrap_or_else(|e| {
            tracing::warn!(error = %e, ".driftignore is invalid; using the built-in rules only");
            Gitignore::empty()
        });
        Self { rules }
    }

    /// Whether `p` (a file, or a folder if `dir`) is left out.
    pub fn ignored(&self, p: &SyncPath, dir: bool) -> bool {
        let name = p.file_name();
        if name.starts_with(PARTIAL_PREFIX) || p.components().next() == Some(STATE_DIR) {
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
}

/// Walks the folder, folders by name (so runs are reproducible), never
/// descending into an ignored folder or following a symlink.
pub fn scan(root: &Root, ignore: &Ignore) -> Scan {
    let mut out = Scan::default();
    let mut stack = vec![root.dir().to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                out.skipped.push((dir.display().to_string(), io_reason(&e)));
                continue;
            }
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for entry in entries {
            let Ok(ft) = entry.file_type() else { continue };
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
            } else if ft.is_file()
                && let Ok(m) = std::fs::symlink_metadata(&local)
            {
                out.files.push(Found {
                    path: p,
                    stat: LocalStat::of(&m),
                });
            }
        }
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn io_reason(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied",
        _ => "cannot be read",
    }
}
