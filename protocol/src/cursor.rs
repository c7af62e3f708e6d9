//! `Cursor`: where a device is in a namespace's changes, opaque and signed.
//!
//! The server hands cursors out and takes them back; HMAC-SHA256 makes them
//! tamper-evident, so a client cannot skip ahead, point a cursor at another
//! folder, or widen its path prefix. A key id in each cursor lets the server
//! rotate keys while old cursors stay readable.
//!
//! Layout (before base64url without padding):
//! `version=1 | key id | kind | namespace u64 | seq u64 | flags | [after] | [prefix] | [stamp u64] | mac[16]`
//! where `[after]` and `[prefix]` are a u16 length and UTF-8 bytes.
//!
//! The stamp identifies the journal entry at `seq` (see [`Cursor::stamp`]):
//! a folder restored from a backup reuses sequence numbers for other
//! changes, and a cursor from before the restore must not be read as a
//! position in the new history.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::ErrorCode;
use crate::ids::{NamespaceId, Seq};
use crate::path::SyncPath;

const VERSION: u8 = 1;
const MAC_LEN: usize = 16;
const KIND_SNAPSHOT: u8 = 0;
const KIND_JOURNAL: u8 = 1;
const HAS_AFTER: u8 = 1;
const HAS_PREFIX: u8 = 2;
const HAS_STAMP: u8 = 4;

/// A server secret that signs cursors. Never logged (no `Debug` of the bytes).
#[derive(Clone)]
pub struct CursorKey {
    id: u8,
    mac: Hmac<Sha256>,
}

impl CursorKey {
    /// A key with id `id` from a secret of any length (32 random bytes advised).
    pub fn new(id: u8, secret: &[u8]) -> Self {
        // HMAC accepts keys of any length; this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        Self { id, mac }
    }

    /// The key's id, written into every cursor it signs.
    pub fn id(&self) -> u8 {
        self.id
    }
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CursorKey {{ id: {}, secret: <redacted> }}", self.id)
    }
}

/// Where in a namespace's history a device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// Paging through the current files of the namespace (bootstrap of a new
    /// device), sorted by path. `as_of` is the journal head when the snapshot
    /// began: afterwards the device continues from the journal after it.
    Snapshot {
        /// Journal head when the snapshot began.
        as_of: Seq,
        /// The last path already delivered, if any.
        after: Option<SyncPath>,
    },
    /// Following the journal: every entry with `seq > after` is still to come.
    Journal {
        /// The last journal entry the device has seen.
        after: Seq,
    },
}

/// A decoded, verified cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The folder this cursor belongs to.
    pub namespace: NamespaceId,
    /// Only changes under this folder, if set.
    pub prefix: Option<SyncPath>,
    /// Where the device is.
    pub position: Position,
    /// Which journal entry is at the cursor's seq (a digest of it, from
    /// [`entry_stamp`]); `None` for seq 0 and for cursors written before
    /// stamps existed. A server whose entry at that seq has another stamp
    /// has lost the history the cursor points into (a restore).
    pub stamp: Option<u64>,
}

/// The stamp of a journal entry: the first 8 bytes of a SHA-256 of what
/// makes it that entry and no other (when, what, by whom).
pub fn entry_stamp(committed_at_ms: i64, path: &str, kind: i64, device: Option<u64>) -> u64 {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(committed_at_ms.to_le_bytes());
    h.update(kind.to_le_bytes());
    h.update(device.unwrap_or(u64::MAX).to_le_bytes());
    h.update(path.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize()[..8]);
    u64::from_le_bytes(out)
}

/// Why a cursor string was refused. The API answers every variant with the
/// same code, `cursor_invalid`; the variants are for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not base64url, too short, or an unknown layout version.
    #[error("malformed cursor")]
    Malformed,
    /// Signed by a key the server does not hold.
    #[error("cursor signed with an unknown key")]
    UnknownKey,
    /// The signature does not match: the cursor was altered.
    #[error("cursor signature mismatch")]
    BadSignature,
    /// A valid cursor of another namespace.
    #[error("cursor belongs to another folder")]
    WrongNamespace,
}

impl CursorError {
    /// The stable protocol code.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::CursorInvalid
    }
}

impl Cursor {
    /// The cursor of a device that has seen the journal up to `after`.
    pub fn journal(namespace: NamespaceId, after: Seq) -> Self {
        Self {
            namespace,
            prefix: None,
            position: Position::Journal { after },
            stamp: None,
        }
    }

    /// The journal seq the cursor stands on (a snapshot's `as_of`).
    pub fn seq(&self) -> Seq {
        match self.position {
            Position::Snapshot { as_of, .. } => as_of,
            Position::Journal { after } => after,
        }
    }

    /// Signs and encodes the cursor.
    pub fn encode(&self, key: &CursorKey) -> String {
        let (kind, seq, after) = match &self.position {
            Position::Snapshot { as_of, after } => (KIND_SNAPSHOT, *as_of, after.as_ref()),
            Position::Journal { after } => (KIND_JOURNAL, *after, None),
        };
        let mut b = Vec::with_capacity(32 + MAC_LEN);
        b.extend_from_slice(&[VERSION, key.id, kind]);
        b.extend_from_slice(&self.namespace.0.to_be_bytes());
        b.extend_from_slice(&seq.0.to_be_bytes());
        let flags = if after.is_some() { HAS_AFTER } else { 0 }
            | if self.prefix.is_some() { HAS_PREFIX } else { 0 }
            | if self.stamp.is_some() { HAS_STAMP } else { 0 };
        b.push(flags);
        for p in [after, self.prefix.as_ref()].into_iter().flatten() {
            // A SyncPath is at most 4096 bytes: it fits a u16.
            b.extend_from_slice(&(p.as_str().len() as u16).to_be_bytes());
            b.extend_from_slice(p.as_str().as_bytes());
        }
        if let Some(s) = self.stamp {
            b.extend_from_slice(&s.to_be_bytes());
        }
        let mut mac = key.mac.clone();
        mac.update(&b);
        b.extend_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(b)
    }

    /// Verifies and decodes a cursor signed by one of `keys`.
    pub fn decode(s: &str, keys: &[CursorKey]) -> Result<Self, CursorError> {
        // 20 KiB of base64 is far beyond any cursor we write.
        if s.len() > 20_000 {
            return Err(CursorError::Malformed);
        }
        let b = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| CursorError::Malformed)?;
        if b.len() < 20 + MAC_LEN || b[0] != VERSION {
            return Err(CursorError::Malformed);
        }
        let (body, tag) = b.split_at(b.len() - MAC_LEN);
        let key = keys
            .iter()
            .find(|k| k.id == body[1])
            .ok_or(CursorError::UnknownKey)?;
        let mut mac = key.mac.clone();
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| CursorError::BadSignature)?;
        // Signed by us: a layout error now is a bug of ours, still not a panic.
        parse_body(body).ok_or(CursorError::Malformed)
    }

    /// Decodes and checks that the cursor belongs to `namespace`.
    pub fn decode_for(
        s: &str,
        keys: &[CursorKey],
        namespace: NamespaceId,
    ) -> Result<Self, CursorError> {
        let cursor = Self::decode(s, keys)?;
        if cursor.namespace != namespace {
            return Err(CursorError::WrongNamespace);
        }
        Ok(cursor)
    }
}

fn parse_body(b: &[u8]) -> Option<Cursor> {
    let kind = b[2];
    let namespace = NamespaceId(u64::from_be_bytes(b[3..11].try_into().ok()?));
    let seq = Seq(u64::from_be_bytes(b[11..19].try_into().ok()?));
    let flags = b[19];
    let mut rest = &b[20..];
    let mut take_path = |present: bool| -> Option<Option<SyncPath>> {
        if !present {
            return Some(None);
        }
        let len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
        let text = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
        rest = &rest[2 + len..];
        SyncPath::parse(text).ok().map(Some)
    };
    let after = take_path(flags & HAS_AFTER != 0)?;
    let prefix = take_path(flags & HAS_PREFIX != 0)?;
    let stamp = if flags & HAS_STAMP != 0 {
        let s = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        rest = &rest[8..];
        Some(s)
    } else {
        None
    };
    if !rest.is_empty() || flags & !(HAS_AFTER | HAS_PREFIX | HAS_STAMP) != 0 {
        return None;
    }
    let position = match kind {
        KIND_SNAPSHOT => Position::Snapshot { as_of: seq, after },
        KIND_JOURNAL if after.is_none() => Position::Journal { after: seq },
        _ => return None,
    };
    Some(Cursor {
        namespace,
        prefix,
        position,
        stamp,
    })
}
