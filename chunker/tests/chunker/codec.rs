//! The codec round-trips whatever it is given and never trusts stored bytes.

use driftless_chunker::{
    Codec, DecodeError, Decoder, Encoder, FormatHint, MAX_CHUNK_LEN, Policy, single_frame,
};
use proptest::prelude::*;

use crate::data::{kind, make};

fn policy() -> impl Strategy<Value = Policy> {
    (1i32..=6, prop_oneof![Just(4096usize), Just(64 << 10)]).prop_map(|(level, sample_len)| {
        Policy {
            level,
            sample_len,
            min_saving_percent: 10,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encode_decode_round_trips(kind in kind(), seed: u64, len in 0usize..(4 << 20), policy in policy()) {
        let raw = make(kind, seed, len);
        let mut enc = Encoder::new(policy)?;
        let mut dec = Decoder::new()?;
        let encoded = enc.encode(&raw, FormatHint::Unknown);
        let (codec, stored) = (encoded.codec, encoded.bytes.to_vec());
        if codec == Codec::Zstd {
            prop_assert!(stored.len() < raw.len() * 9 / 10, "zstd kept without a 10% saving");
            prop_assert_eq!(single_frame(&stored), Ok(()));
        } else {
            prop_assert_eq!(&stored, &raw);
        }
        prop_assert_eq!(dec.decode(codec, &stored, raw.len()).map(<[u8]>::to_vec), Ok(raw));
    }

    #[test]
    fn damaged_frames_are_refused_or_exact(seed: u64, len in 1usize..(1 << 20), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let raw = make(crate::data::Kind::Text, seed, len);
        let stored = zstd::bulk::compress(&raw, 1)?;
        let mut damaged = stored.clone();
        for (at, x) in flips {
            let i = at % damaged.len();
            damaged[i] ^= x | 1;
        }
        let mut dec = Decoder::new()?;
        // Either an error, or (if the damage missed everything that matters)
        // exactly raw_len bytes; never a panic, never more output.
        if let Ok(out) = dec.decode(Codec::Zstd, &damaged, raw.len()) {
            prop_assert_eq!(out.len(), raw.len());
        }
    }
}

#[test]
fn a_lying_raw_length_is_refused_before_any_allocation() {
    let mut dec = Decoder::new().expect("zstd");
    let frame = zstd::bulk::compress(&[0u8; 1000], 1).expect("compress");
    assert_eq!(
        dec.decode(Codec::Zstd, &frame, usize::MAX),
        Err(DecodeError::RawLenTooLarge(usize::MAX))
    );
    assert_eq!(
        dec.decode(Codec::None, &frame, MAX_CHUNK_LEN + 2),
        Err(DecodeError::RawLenTooLarge(MAX_CHUNK_LEN + 2))
    );
}

#[test]
fn known_compressed_formats_are_not_recompressed() {
    let mut enc = Encoder::new(Policy::default()).expect("zstd");
    let text = make(crate::data::Kind::Text, 1, 1 << 20);
    let hint = FormatHint::detect("archive.zip", b"PK\x03\x04");
    assert_eq!(enc.encode(&text, hint).codec, Codec::None);
    assert_eq!(enc.encode(&text, FormatHint::Unknown).codec, Codec::Zstd);
}
