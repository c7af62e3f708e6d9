//! `SyncPath`: a file's path inside a synced folder, valid by construction.
//!
//! Hard rules (never a valid path on any side): non-empty, relative, `/`
//! separated, no `.` or `..` component, no empty component, no NUL or control
//! character, no backslash (a separator on Windows), NFC, at most 255 bytes a
//! component and 4096 in all, and not one of driftless's own names.
//!
//! Portability issues (valid on Linux and macOS, not creatable on Windows) are
//! reported, not refused: a Linux user can sync `aux.c`; a Windows device
//! reports it as unsyncable there instead of losing it. [`SyncPath::parse_portable`]
//! refuses them too, for servers configured that way.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use unicode_normalization::{UnicodeNormalization, is_nfc};

use crate::error::ErrorCode;

/// Longest path, in UTF-8 bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest component, in UTF-8 bytes (the common file-system limit).
pub const MAX_NAME_BYTES: usize = 255;

/// The daemon's state folder inside the sync root.
const STATE_DIR: &str = ".driftless";
/// Prefix of the daemon's temporary files (downloads before their rename).
const PARTIAL_PREFIX: &str = ".driftless-partial-";

/// Why a string is not a [`SyncPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The empty string.
    #[error("the path is empty")]
    Empty,
    /// Starts with `/`, `\` or a drive letter.
    #[error("the path must be relative to the synced folder")]
    Absolute,
    /// A `.` or `..` component.
    #[error("the path must not contain '.' or '..' components")]
    Traversal,
    /// Longer than [`MAX_PATH_BYTES`].
    #[error("the path is {0} bytes, the limit is {MAX_PATH_BYTES}")]
    TooLong(usize),
    /// Not in Unicode normalization form C.
    #[error("the path is not in Unicode normalization form C")]
    NotNfc,
    /// `a//b` or a trailing `/`.
    #[error("the path has an empty component")]
    EmptyName,
    /// A component longer than [`MAX_NAME_BYTES`].
    #[error("a name is {0} bytes, the limit is {MAX_NAME_BYTES}")]
    NameTooLong(usize),
    /// NUL, C0/C1 control characters or DEL.
    #[error("a name contains the control character U+{:04X}", u32::from(*.0))]
    ControlChar(char),
    /// A backslash.
    #[error("a name contains a backslash")]
    Backslash,
    /// The daemon's own state folder or temporary-file names.
    #[error("{0:?} is reserved by driftless")]
    Reserved(String),
    /// Refused by [`SyncPath::parse_portable`].
    #[error("{0}")]
    NotPortable(Portability),
}

impl PathError {
    /// The stable protocol code.
    pub fn code(&self) -> ErrorCode {
        match self {
            PathError::Empty => ErrorCode::PathEmpty,
            PathError::Absolute => ErrorCode::PathAbsolute,
            PathError::Traversal => ErrorCode::PathTraversal,
            PathError::TooLong(_) => ErrorCode::PathTooLong,
            PathError::NotNfc => ErrorCode::PathNotNfc,
            PathError::EmptyName => ErrorCode::NameEmpty,
            PathError::NameTooLong(_) => ErrorCode::NameTooLong,
            PathError::ControlChar(_) => ErrorCode::NameControlChar,
            PathError::Backslash => ErrorCode::NameInvalidChar,
            PathError::Reserved(_) => ErrorCode::NameReserved,
            PathError::NotPortable(p) => p.code(),
        }
    }
}

/// Why a valid path cannot be created on every platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Portability {
    /// `CON`, `NUL`, `COM1`, `LPT1`... with or without an extension.
    #[error("{0:?} is a reserved device name on Windows")]
    WindowsReserved(String),
    /// Windows silently drops a trailing dot or space.
    #[error("{0:?} ends with a dot or a space")]
    TrailingDotSpace(String),
    /// One of `< > : " | ? *`.
    #[error("a name contains {0:?}, which Windows forbids")]
    WindowsChar(char),
}

impl Portability {
    /// The stable protocol code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Portability::WindowsReserved(_) => ErrorCode::NameWindowsReserved,
            Portability::TrailingDotSpace(_) => ErrorCode::NameTrailingDotSpace,
            Portability::WindowsChar(_) => ErrorCode::NameWindowsChar,
        }
    }
}

/// A validated relative path inside a synced folder (see the module docs).
///
/// ```
/// use driftless_protocol::{ErrorCode, SyncPath};
///
/// let p = SyncPath::parse("photos/2026/aux.jpg")?;
/// assert_eq!(p.file_name(), "aux.jpg");
/// // Valid here, but Windows cannot create it: flagged, not refused.
/// assert_eq!(p.portability().map(|i| i.code()), Some(ErrorCode::NameWindowsReserved));
/// assert_eq!(SyncPath::parse("../etc/passwd").unwrap_err().code(), ErrorCode::PathTraversal);
/// # Ok::<(), driftless_protocol::PathError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncPath(String);

impl SyncPath {
    /// Parses a path as sent on the wire: it must already be NFC.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        validate(s)?;
        Ok(Self(s.to_owned()))
    }

    /// Parses a path read from a local file system, normalizing it to NFC
    /// first (macOS may hand out NFD names).
    pub fn from_local(s: &str) -> Result<Self, PathError> {
        if is_nfc(s) {
            return Self::parse(s);
        }
        let nfc: String = s.nfc().collect();
        Self::parse(&nfc)
    }

    /// Like [`SyncPath::parse`], and refuses names Windows cannot hold.
    pub fn parse_portable(s: &str) -> Result<Self, PathError> {
        let path = Self::parse(s)?;
        match path.portability() {
            Some(p) => Err(PathError::NotPortable(p)),
            None => Ok(path),
        }
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The containing folder, or `None` at the top level.
    pub fn parent(&self) -> Option<SyncPath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| SyncPath(parent.to_owned()))
    }

    /// This path with `name` (one or more components) appended.
    pub fn join(&self, name: &str) -> Result<SyncPath, PathError> {
        SyncPath::parse(&format!("{}/{}", self.0, name))
    }

    /// Whether `self` is `other` or lies inside it, by whole components.
    pub fn starts_with(&self, other: &SyncPath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The key two paths share when they differ only by case or Unicode
    /// normalization (canonical caseless match, Unicode D145): such paths
    /// conflict, because macOS and Windows cannot hold both.
    pub fn collision_key(&self) -> String {
        let nfd: String = self.0.nfd().collect();
        caseless::default_case_fold_str(&nfd).nfd().collect()
    }

    /// The first reason this path cannot be created on Windows, if any.
    pub fn portability(&self) -> Option<Portability> {
        self.components().find_map(name_portability)
    }
}

fn validate(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(s.len()));
    }
    let b = s.as_bytes();
    let drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    if b[0] == b'/' || b[0] == b'\\' || drive {
        return Err(PathError::Absolute);
    }
    // `..` is traversal whichever separator a platform uses.
    if s.split(['/', '\\']).any(|c| c == "." || c == "..") {
        return Err(PathError::Traversal);
    }
    if let Some(c) = s.chars().find(|&c| is_control(c)) {
        return Err(PathError::ControlChar(c));
    }
    if s.contains('\\') {
        return Err(PathError::Backslash);
    }
    if !is_nfc(s) {
        return Err(PathError::NotNfc);
    }
    for name in s.split('/') {
        if name.is_empty() {
            return Err(PathError::EmptyName);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(PathError::NameTooLong(name.len()));
        }
        if name.eq_ignore_ascii_case(STATE_DIR)
            || name
                .get(..PARTIAL_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(PARTIAL_PREFIX))
        {
            return Err(PathError::Reserved(name.to_owned()));
        }
    }
    Ok(())
}

/// C0 controls, DEL and C1 controls.
fn is_control(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f'..='\u{9f}')
}

const WINDOWS_DEVICES: &[&str] = &["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"];

fn name_portability(name: &str) -> Option<Portability> {
    if let Some(c) = name.chars().find(|c| "<>:\"|?*".contains(*c)) {
        return Some(Portability::WindowsChar(c));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Some(Portability::TrailingDotSpace(name.to_owned()));
    }
    // Windows reserves device names with any extension and trailing spaces.
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    let upper = stem.to_uppercase();
    let numbered = ["COM", "LPT"].iter().any(|p| {
        upper.strip_prefix(p).is_some_and(|n| {
            matches!(
                n,
                "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"
            )
        })
    });
    if numbered || WINDOWS_DEVICES.contains(&upper.as_str()) {
        return Some(Portability::WindowsReserved(name.to_owned()));
    }
    None
}

impl fmt::Display for SyncPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SyncPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncPath({:?})", self.0)
    }
}

impl Serialize for SyncPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SyncPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        SyncPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn navigation() {
        let p = SyncPath::parse("docs/2026/report.pdf").unwrap();
        assert_eq!(p.file_name(), "report.pdf");
        assert_eq!(p.parent().unwrap().as_str(), "docs/2026");
        assert_eq!(p.components().count(), 3);
        assert!(p.starts_with(&SyncPath::parse("docs").unwrap()));
        assert!(!p.starts_with(&SyncPath::parse("doc").unwrap()));
        assert!(
            !SyncPath::parse("docsx/a")
                .unwrap()
                .starts_with(&SyncPath::parse("docs").unwrap())
        );
        assert_eq!(
            p.parent().unwrap().join("x/y").unwrap().as_str(),
            "docs/2026/x/y"
        );
        assert_eq!(p.join(".."), Err(PathError::Traversal));
    }

    #[test]
    fn collisions_by_case_and_normalization() {
        let key = |s: &str| SyncPath::from_local(s).unwrap().collision_key();
        assert_eq!(key("Readme.TXT"), key("README.txt"));
        assert_eq!(key("cafe\u{301}"), key("CAFÉ"));
        assert_eq!(key("Straße"), key("STRASSE"));
        assert_ne!(key("a"), key("b"));
    }
}
