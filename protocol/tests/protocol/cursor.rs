//! Cursors round-trip, and any change to one is detected.

use driftless_protocol::{Cursor, CursorError, CursorKey, NamespaceId, Position, Seq, SyncPath};
use proptest::prelude::*;

fn keys() -> Vec<CursorKey> {
    vec![
        CursorKey::new(1, b"old secret"),
        CursorKey::new(2, b"current secret 32 bytes long...."),
    ]
}

fn cursor() -> impl Strategy<Value = Cursor> {
    let path = prop::option::of(
        "[a-z]{1,12}(/[a-z0-9 ]{1,12}){0,3}".prop_map(|s| SyncPath::parse(&s).unwrap()),
    );
    (
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        path.clone(),
        path,
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(ns, seq, snap, after, prefix, stamp)| Cursor {
            namespace: NamespaceId(ns),
            prefix,
            stamp,
            position: if snap {
                Position::Snapshot {
                    as_of: Seq(seq),
                    after,
                }
            } else {
                Position::Journal { after: Seq(seq) }
            },
        })
}

proptest! {
    #[test]
    fn round_trips_with_any_held_key(c in cursor(), which in 0usize..2) {
        let keys = keys();
        let text = c.encode(&keys[which]);
        prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        prop_assert_eq!(Cursor::decode(&text, &keys), Ok(c.clone()));
        prop_assert_eq!(Cursor::decode_for(&text, &keys, c.namespace), Ok(c.clone()));
        let other = NamespaceId(c.namespace.0.wrapping_add(1));
        prop_assert_eq!(Cursor::decode_for(&text, &keys, other), Err(CursorError::WrongNamespace));
    }

    #[test]
    fn any_altered_byte_is_refused(c in cursor(), at: usize, flip in 1u8..) {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let keys = keys();
        let mut raw = engine.decode(c.encode(&keys[1])).unwrap();
        let i = at % raw.len();
        raw[i] ^= flip;
        let tampered = engine.encode(&raw);
        prop_assert!(Cursor::decode(&tampered, &keys).is_err(), "byte {} altered and accepted", i);
    }

    #[test]
    fn garbage_is_refused_without_panic(s in "\\PC{0,200}") {
        prop_assert!(Cursor::decode(&s, &keys()).is_err());
    }
}

#[test]
fn foreign_keys_and_truncation_are_refused() {
    let c = Cursor::journal(NamespaceId(7), Seq(99));
    let text = c.encode(&CursorKey::new(2, b"attacker's guess"));
    assert_eq!(
        Cursor::decode(&text, &keys()),
        Err(CursorError::BadSignature)
    );
    let text = c.encode(&CursorKey::new(9, b"retired"));
    assert_eq!(Cursor::decode(&text, &keys()), Err(CursorError::UnknownKey));
    let good = c.encode(&keys()[1]);
    assert!(Cursor::decode(&good[..good.len() - 2], &keys()).is_err());
    assert_eq!(Cursor::decode("", &keys()), Err(CursorError::Malformed));
    assert_eq!(Cursor::decode("!!!", &keys()), Err(CursorError::Malformed));
    assert!(!format!("{:?}", keys()[1]).contains("current secret"));
}
