//! Cursors come back from clients: any string decodes to a cursor the
//! server signed or is refused, never panics. Cursors built from the input
//! (any folder, position, prefix, stamp) encode and decode to themselves,
//! are refused under another key, and a copy with one character changed
//! is refused or (base64 slack) decodes to the same cursor.
#![no_main]

use driftless_protocol::{Cursor, CursorKey, NamespaceId, Position, Seq, SyncPath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = CursorKey::new(1, b"the fuzzing cursor secret, long enough");
    let other = CursorKey::new(1, b"another secret entirely, also long enough");
    let keys = std::slice::from_ref(&key);
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(c) = Cursor::decode(s, keys)
    {
        assert_eq!(Cursor::decode(&c.encode(&key), keys), Ok(c));
    }

    if data.len() < 26 {
        return;
    }
    let word = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
    let rest = std::str::from_utf8(&data[26..]).unwrap_or("");
    let position = if data[24] & 1 == 0 {
        Position::Journal {
            after: Seq(word(8)),
        }
    } else {
        Position::Snapshot {
            as_of: Seq(word(8)),
            after: SyncPath::parse(rest).ok(),
        }
    };
    let cursor = Cursor {
        namespace: NamespaceId(word(0) >> 1),
        prefix: if data[24] & 2 == 0 {
            None
        } else {
            SyncPath::parse(rest).ok()
        },
        position,
        stamp: (data[24] & 4 != 0).then(|| word(16)),
    };
    let text = cursor.encode(&key);
    assert_eq!(Cursor::decode(&text, keys).as_ref(), Ok(&cursor));
    assert!(Cursor::decode(&text, std::slice::from_ref(&other)).is_err());
    let mut bytes = text.into_bytes();
    let at = usize::from(data[25]) % bytes.len();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    if let Ok(changed) = std::str::from_utf8(&bytes)
        && let Ok(c) = Cursor::decode(changed, keys)
    {
        assert_eq!(c, cursor, "a changed cursor decoded to another position");
    }
});
