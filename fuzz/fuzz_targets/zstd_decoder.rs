//! The zstd decoder sees chunks as stored in S3, which a folder member or
//! the store could have written: any bytes with any declared raw length
//! decode to exactly that many bytes or are refused, within the memory the
//! declared length allows (no bombs), and never panic.
#![no_main]

use driftless_chunker::{Codec, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (len, stored) = data.split_at(4);
    // Up to 16 MiB declared (past the largest chunk, to reach the refusal).
    let raw_len = (u32::from_le_bytes(len.try_into().unwrap()) & 0x00ff_ffff) as usize;
    let mut dec = Decoder::new().unwrap();
    for codec in [Codec::Zstd, Codec::None] {
        if let Ok(out) = dec.decode(codec, stored, raw_len) {
            assert_eq!(out.len(), raw_len);
        }
    }
});
