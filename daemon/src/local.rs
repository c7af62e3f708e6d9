//! The synced folder on disk, confined: every path the daemon writes comes
//! from a validated [`SyncPath`] and lands inside the root, whatever the
//! server sends. A component that exists as a symlink, or as a file where a
//! folder should be, stops the write (a symlink could lead outside).
//!
//! Files arrive through a temporary file in their own folder
//! (`.driftless-partial-*`, a name no [`SyncPath`] can take), fsynced, then
//! renamed into place: a crash leaves either the old file or the new one at
//! the path, never a part of one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use driftless_protocol::SyncPath;

/// Prefix of the daemon's temporary files.
pub const PARTIAL_PREFIX: &str = ".driftless-partial-";
/// The daemon's own folder at the root (state, logs).
pub const STATE_DIR: &str = ".driftless";

/// What the file system says about a file: the scanner's change test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Inode number (0 where there is none).
    pub inode: u64,
    /// The file system (device) it lives on (0: unknown). A file whose
    /// folder now sits on another file system was not deleted: the file
    /// system it was on is not mounted there any more.
    pub dev: u64,
}

impl LocalStat {
    /// A stat no file has: the file must be looked at again.
    pub const UNKNOWN: LocalStat = LocalStat {
        size: u64::MAX,
        mtime_ns: i64::MIN,
        inode: 0,
        dev: 0,
    };

    /// From metadata.
    pub fn of(m: &fs::Metadata) -> Self {
        let mtime_ns = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        #[cfg(unix)]
        let (inode, dev) = (
            std::os::unix::fs::MetadataExt::ino(m),
            std::os::unix::fs::MetadataExt::dev(m),
        );
        #[cfg(not(unix))]
        let (inode, dev) = (0, 0);
        Self {
            size: m.len(),
            mtime_ns,
            inode,
            dev,
        }
    }
}

/// Why a path cannot be used locally.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A component on the way is a symlink or not a folder.
    #[error("{path}: {why}")]
    Unsafe {
        /// The sync path.
        path: String,
        /// What is in the way.
        why: &'static str,
    },
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The sync path.
        path: String,
        /// The error.
        source: io::Error,
    },
}

impl LocalError {
    fn io(path: &SyncPath, source: io::Error) -> Self {
        Self::Io {
            path: path.as_str().to_owned(),
            source,
        }
    }
}

/// Why the synced folder cannot be trusted as a whole right now: nothing
/// is sent or applied until it is back (a missing folder is not a folder
/// whose files were all deleted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FolderError {
    /// Nothing is at the folder's path (renamed, moved, or its drive unmounted).
    #[error("the synced folder {0} is missing (renamed, moved or unmounted?)")]
    Missing(String),
    /// Another folder now has its path (a drive mounted or unmounted there,
    /// the folder replaced).
    #[error(
        "{0} is no longer the synced folder (replaced, or a drive was mounted or unmounted there)"
    )]
    Replaced(String),
    /// The folder has no `.driftless` state folder: it is not the one synced.
    #[error("{0} has lost its .driftless folder; it is not the folder that was synced")]
    NoMarker(String),
    /// The folder itself cannot be read.
    #[error("the synced folder {0} cannot be read: {1}")]
    Unreadable(String, String),
}

/// The root of a synced folder.
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
    /// (device, inode) of the folder when it was opened.
    id: (u64, u64),
}

impl Root {
    /// The folder at `dir` (created if missing), canonicalized.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let id = dir_id(&fs::metadata(&dir)?);
        Ok(Self { dir, id })
    }

    /// Checks that the folder at the root's path is still the one opened,
    /// holding its `.driftless` folder. Every pass starts with this: a
    /// folder renamed, replaced or unmounted must never read as "every
    /// file was deleted".
    pub fn check(&self) -> Result<(), FolderError> {
        let shown = || self.dir.display().to_string();
        let m = match fs::metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FolderError::Missing(shown()));
            }
            Err(e) => return Err(FolderError::Unreadable(shown(), e.to_string())),
        };
        if !m.is_dir() || dir_id(&m) != self.id {
            return Err(FolderError::Replaced(shown()));
        }
        match fs::symlink_metadata(self.dir.join(STATE_DIR)) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(FolderError::NoMarker(shown())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(FolderError::NoMarker(shown())),
            Err(e) => Err(FolderError::Unreadable(shown(), e.to_string())),
        }
    }

    /// Opens the regular file at `p` for reading without following a
    /// symlink anywhere on the way and without blocking on a FIFO or a
    /// device; `expect` (device, inode) must match when given, so a file
    /// swapped in after the scan is refused rather than read.
    pub fn open_file(&self, p: &SyncPath, expect: Option<(u64, u64)>) -> io::Result<File> {
        open_regular(&self.path_of(p), expect)
    }

    /// The root folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `p` lives on disk (no check; see [`Root::prepare`]).
    pub fn path_of(&self, p: &SyncPath) -> PathBuf {
        let mut out = self.dir.clone();
        for c in p.components() {
            out.push(c);
        }
        out
    }

    /// The sync path of a file under the root, if it can be one.
    pub fn sync_path(&self, local: &Path) -> Option<SyncPath> {
        let rel = local.strip_prefix(&self.dir).ok()?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                std::path::Component::Normal(s) => parts.push(s.to_str()?),
                _ => return None,
            }
        }
        SyncPath::from_local(&parts.join("/")).ok()
    }

    /// Checks every folder on the way to `p` (creating missing ones) and
    /// that `p` itself is not a symlink or a folder; returns its disk path.
    pub fn prepare(&self, p: &SyncPath) -> Result<PathBuf, LocalError> {
        let mut at = self.dir.clone();
        let comps: Vec<&str> = p.components().collect();
        let (last, folders) = comps.split_last().ok_or_else(|| LocalError::Unsafe {
            path: p.as_str().into(),
            why: "empty path",
        })?;
        for c in folders {
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(LocalError::Unsafe {
                        path: p.as_str().into(),
                        why: "a folder on the way is a symlink",
                    });
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(LocalError::Unsafe {
                        path: p.as_str().into(),
                        why: "a file stands where a folder should be",
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).map_err(|e| LocalError::io(p, e))?;
                }
                Err(e) => return Err(LocalError::io(p, e)),
            }
        }
        at.push(last);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => Err(LocalError::Unsafe {
                path: p.as_str().into(),
                why: "the file is a symlink",
            }),
            Ok(m) if m.is_dir() => Err(LocalError::Unsafe {
                path: p.as_str().into(),
                why: "a folder stands where the file should be",
            }),
            _ => Ok(at),
        }
    }

    /// The file at `p` if it is a regular file (not a symlink).
    pub fn stat(&self, p: &SyncPath) -> Option<LocalStat> {
        let m = fs::symlink_metadata(self.path_of(p)).ok()?;
        m.is_file().then(|| LocalStat::of(&m))
    }

    /// A new temporary file next to where `p` goes.
    pub fn temp_for(&self, p: &SyncPath) -> Result<(PathBuf, File), LocalError> {
        let target = self.prepare(p)?;
        let dir = target.parent().unwrap_or(&self.dir).to_owned();
        for _ in 0..16 {
            let name = format!("{PARTIAL_PREFIX}{:016x}", rand::random::<u64>());
            let tmp = dir.join(name);
            match OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => return Ok((tmp, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(LocalError::io(p, e)),
            }
        }
        Err(LocalError::io(
            p,
            io::Error::other("no free temporary name"),
        ))
    }

    /// Moves a finished temporary file to `p` (fsynced first, and the folder
    /// after), setting its modification time.
    pub fn install(
        &self,
        tmp: &Path,
        file: File,
        p: &SyncPath,
        mtime_ms: i64,
    ) -> Result<LocalStat, LocalError> {
        let when = UNIX_EPOCH + Duration::from_millis(mtime_ms.max(0) as u64);
        file.set_modified(when).map_err(|e| LocalError::io(p, e))?;
        file.sync_all().map_err(|e| LocalError::io(p, e))?;
        drop(file);
        let target = self.prepare(p)?;
        fs::rename(tmp, &target).map_err(|e| LocalError::io(p, e))?;
        sync_dir(target.parent().unwrap_or(&self.dir));
        stat_after(&target, p)
    }

    /// Removes the file at `p` and then any folders it leaves empty.
    pub fn remove(&self, p: &SyncPath) -> Result<(), LocalError> {
        let target = self.prepare(p)?;
        match fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LocalError::io(p, e)),
        }
        self.prune(target.parent());
        Ok(())
    }

    /// Renames `from` to `to` (both confined); `to` must not exist.
    pub fn rename(&self, from: &SyncPath, to: &SyncPath) -> Result<LocalStat, LocalError> {
        let src = self.prepare(from)?;
        let dst = self.prepare(to)?;
        if fs::symlink_metadata(&dst).is_ok() {
            return Err(LocalError::Unsafe {
                path: to.as_str().into(),
                why: "something is already there",
            });
        }
        fs::rename(&src, &dst).map_err(|e| LocalError::io(from, e))?;
        sync_dir(dst.parent().unwrap_or(&self.dir));
        self.prune(src.parent());
        stat_after(&dst, to)
    }

    /// Removes empty folders from `dir` up to (not including) the root.
    fn prune(&self, mut dir: Option<&Path>) {
        while let Some(d) = dir {
            if d == self.dir || !d.starts_with(&self.dir) || fs::remove_dir(d).is_err() {
                return;
            }
            dir = d.parent();
        }
    }
}

/// The stat of a file the daemon just put in place. Someone may have
/// deleted (or changed) it in the instant since: then it is recorded with
/// a stat no file has, and the next pass sees what they did (a delete is
/// sent as one, never undone by fetching the file again).
fn stat_after(at: &Path, p: &SyncPath) -> Result<LocalStat, LocalError> {
    match fs::symlink_metadata(at) {
        Ok(m) if m.is_file() => Ok(LocalStat::of(&m)),
        Ok(_) => Ok(LocalStat::UNKNOWN),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LocalStat::UNKNOWN),
        Err(e) => Err(LocalError::io(p, e)),
    }
}

/// (device, inode) of a file or folder.
pub fn dir_id(m: &fs::Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        (0, 0)
    }
}

/// Opens a regular file for reading: no symlink is followed at the last
/// component (`O_NOFOLLOW`), a FIFO or device does not block the open
/// (`O_NONBLOCK`) and is refused by the `fstat` after it, and `expect`
/// (device, inode), when given, must be the file opened.
pub fn open_regular(path: &Path, expect: Option<(u64, u64)>) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc_flags::NOFOLLOW | libc_flags::NONBLOCK);
    }
    let f = o.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc_flags::ELOOP) {
            io::Error::new(io::ErrorKind::InvalidInput, "the file is a symlink")
        } else {
            e
        }
    })?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or folder took its place)",
        ));
    }
    if let Some(id) = expect
        && id != (0, 0)
        && dir_id(&m) != id
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the file was replaced since it was scanned",
        ));
    }
    Ok(f)
}

/// The open flags, from rustix (no `unsafe`, no libc binding of our own).
mod libc_flags {
    #[cfg(unix)]
    pub(super) const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    #[cfg(unix)]
    pub(super) const NONBLOCK: i32 = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    #[cfg(unix)]
    pub(super) const ELOOP: i32 = rustix::io::Errno::LOOP.raw_os_error();
    #[cfg(not(unix))]
    pub(super) const ELOOP: i32 = -1;
}

/// fsyncs a folder so a rename in it survives a crash (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// `name (conflicted copy from <device> <yyyy-mm-dd>).ext` next to `p`,
/// numbered if that is taken too (`exists` says whether a path is taken).
pub fn conflicted_copy(
    p: &SyncPath,
    device: &str,
    now: SystemTime,
    exists: impl Fn(&SyncPath) -> bool,
) -> Option<SyncPath> {
    let name = p.file_name();
    // A leading dot is part of the stem (".bashrc"), not an extension.
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let day = date(now);
    let device: String = device
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '/' | '\\'))
        .take(64)
        .collect();
    for n in 1..1000 {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!(" {n}")
        };
        let candidate = format!("{stem} (conflicted copy from {device} {day}{suffix}){ext}");
        let full = match p.parent() {
            Some(parent) => parent.join(&candidate).ok(),
            None => SyncPath::parse(&candidate).ok(),
        };
        if let Some(full) = full
            && !exists(&full)
        {
            return Some(full);
        }
    }
    None
}

/// `yyyy-mm-dd` (UTC) of a time.
fn date(t: SystemTime) -> String {
    let days = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SyncPath {
        SyncPath::parse(s).unwrap()
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(date(UNIX_EPOCH), "1970-01-01");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_384_451);
        assert_eq!(date(t), "2026-11-22");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(date(leap), "2000-02-29");
    }

    #[test]
    fn conflicted_copies_keep_the_extension_and_number_themselves() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_384_451);
        let c = conflicted_copy(&p("docs/report.txt"), "laptop", t, |_| false).unwrap();
        assert_eq!(
            c.as_str(),
            "docs/report (conflicted copy from laptop 2026-11-22).txt"
        );
        let c = conflicted_copy(&p(".bashrc"), "pc", t, |_| false).unwrap();
        assert_eq!(c.as_str(), ".bashrc (conflicted copy from pc 2026-11-22)");
        let taken = "a (conflicted copy from pc 2026-11-22)";
        let c = conflicted_copy(&p("a"), "pc", t, |q| q.as_str() == taken).unwrap();
        assert_eq!(c.as_str(), "a (conflicted copy from pc 2026-11-22 2)");
        // A device name cannot smuggle in a separator.
        let c = conflicted_copy(&p("a.md"), "x/../y", t, |_| false).unwrap();
        assert_eq!(c.as_str(), "a (conflicted copy from x..y 2026-11-22).md");
    }

    #[test]
    fn only_the_scanned_regular_file_is_ever_opened() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        fs::write(outside.path().join("id_ed25519"), b"PRIVATE KEY").unwrap();
        fs::write(root.dir().join("notes.txt"), b"notes").unwrap();
        let scanned = dir_id(&fs::symlink_metadata(root.dir().join("notes.txt")).unwrap());
        assert!(root.open_file(&p("notes.txt"), Some(scanned)).is_ok());
        // Swapped for a symlink to a secret after the scan: refused, unread.
        fs::remove_file(root.dir().join("notes.txt")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("id_ed25519"),
            root.dir().join("notes.txt"),
        )
        .unwrap();
        let e = root.open_file(&p("notes.txt"), None).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        // Swapped for another file (the scanned one kept elsewhere, so its
        // inode is not reused): refused by its identity.
        fs::remove_file(root.dir().join("notes.txt")).unwrap();
        fs::write(root.dir().join("kept.txt"), b"notes").unwrap();
        let kept = dir_id(&fs::symlink_metadata(root.dir().join("kept.txt")).unwrap());
        fs::write(root.dir().join("notes.txt"), b"another file").unwrap();
        let scanned = kept;
        fs::rename(root.dir().join("notes.txt"), root.dir().join("other.txt")).unwrap();
        fs::rename(root.dir().join("other.txt"), root.dir().join("notes.txt")).unwrap();
        let e = root.open_file(&p("notes.txt"), Some(scanned)).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        // Swapped for a FIFO: refused at once, never blocking.
        fs::remove_file(root.dir().join("notes.txt")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(root.dir().join("notes.txt"))
            .status()
            .unwrap();
        assert!(made.success());
        let t = std::time::Instant::now();
        let e = root.open_file(&p("notes.txt"), None).unwrap_err();
        assert!(e.to_string().contains("regular"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(1));
        let e = crate::hash::hash_file(&root.dir().join("notes.txt"), None).unwrap_err();
        assert!(e.to_string().contains("regular"), "{e}");
    }

    #[test]
    fn writes_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        // A symlinked folder inside the root pointing outside is refused.
        std::os::unix::fs::symlink(outside.path(), root.dir().join("link")).unwrap();
        assert!(matches!(
            root.prepare(&p("link/evil.txt")),
            Err(LocalError::Unsafe { .. })
        ));
        assert!(matches!(
            root.temp_for(&p("link/evil.txt")),
            Err(LocalError::Unsafe { .. })
        ));
        // A symlink at the file's own path is not followed either.
        std::os::unix::fs::symlink(outside.path().join("f"), root.dir().join("f")).unwrap();
        assert!(matches!(
            root.prepare(&p("f")),
            Err(LocalError::Unsafe { .. })
        ));
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // Ordinary nested paths are created.
        let (tmp, f) = root.temp_for(&p("a/b/c.txt")).unwrap();
        let st = root
            .install(&tmp, f, &p("a/b/c.txt"), 1_700_000_000_000)
            .unwrap();
        assert_eq!(st.size, 0);
        assert_eq!(
            root.sync_path(&root.dir().join("a/b/c.txt")),
            Some(p("a/b/c.txt"))
        );
        root.remove(&p("a/b/c.txt")).unwrap();
        assert!(!root.dir().join("a").exists(), "empty folders pruned");
    }
}
