//! Memory stays bounded, measured as the process's peak resident set (which
//! also counts zstd's C allocations and the read-ahead thread). One test per
//! binary on purpose: the peak is process-wide, so nothing may run beside it.
//! Linux only (`/proc/self/status`, `/proc/self/clear_refs`).

use std::io::{self, Read, Write};

use driftless_chunker::{ChunkParams, Codec, DecodeError, Decoder, StreamChunker};

const MIB: u64 = 1 << 20;

/// A `/proc/self/status` memory field (`VmHWM`, `VmRSS`), in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// Resets the peak (`VmHWM`) to the current resident set.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
}

/// Runs `f` and returns how far the peak resident set rose above where it started.
fn growth(f: impl FnOnce()) -> u64 {
    reset_peak();
    let before = status_bytes("VmRSS");
    f();
    status_bytes("VmHWM").saturating_sub(before)
}

/// `len` pseudo-random bytes generated on the fly (never held in memory).
struct Generated {
    left: u64,
    x: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize & !7;
        let n = if n == 0 {
            (buf.len() as u64).min(self.left) as usize
        } else {
            n
        };
        for w in buf[..n].chunks_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            w.copy_from_slice(&self.x.to_le_bytes()[..w.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn chunk_all<R: Read>(mut c: StreamChunker<R>) -> u64 {
    let mut total = 0;
    while let Some(chunk) = c.next_chunk().expect("read") {
        total += chunk.data.len() as u64;
    }
    total
}

#[test]
fn memory_is_bounded_for_any_input_size_and_any_bomb() {
    let len = 3 << 30; // 3 GiB streamed through each chunker
    let p = ChunkParams::DEFAULT;

    let inline = growth(|| {
        let total = chunk_all(StreamChunker::new(Generated { left: len, x: 7 }, p));
        assert_eq!(total, len);
    });
    println!("inline chunker over 3 GiB: peak RSS +{} MiB", inline / MIB);
    assert!(inline < 24 * MIB, "inline chunker grew {inline} bytes");

    let ahead = growth(|| {
        let c = StreamChunker::read_ahead(Generated { left: len, x: 9 }, p).expect("spawn");
        assert_eq!(chunk_all(c), len);
    });
    println!(
        "read-ahead chunker over 3 GiB: peak RSS +{} MiB",
        ahead / MIB
    );
    assert!(ahead < 48 * MIB, "read-ahead chunker grew {ahead} bytes");

    // Bombs: 1 GiB of zeros compresses to a few dozen KiB.
    let gib = 1usize << 30;
    let mut unsized_frame = Vec::new();
    {
        let mut enc = zstd::stream::Encoder::new(&mut unsized_frame, 1).expect("zstd");
        io::copy(&mut io::repeat(0).take(gib as u64), &mut enc).expect("compress");
        enc.finish().expect("finish");
    }
    let mut sized_frame = Vec::new();
    {
        let mut enc = zstd::stream::Encoder::new(&mut sized_frame, 1).expect("zstd");
        enc.set_pledged_src_size(Some(gib as u64)).expect("pledge");
        enc.include_contentsize(true).expect("fcs");
        io::copy(&mut io::repeat(0).take(gib as u64), &mut enc).expect("compress");
        enc.finish().expect("finish");
    }
    // 16 MiB of zeros in a frame whose header is patched to claim 1 MiB.
    let mut lying = zstd::bulk::compress(&vec![0u8; 16 << 20], 1).expect("compress");
    patch_content_size(&mut lying, 1 << 20);
    // A hand-made frame that asks for a 2 GiB window.
    let mut wide = vec![0x28, 0xb5, 0x2f, 0xfd, 0b1000_0000, 21 << 3];
    wide.extend_from_slice(&(1u32 << 20).to_le_bytes());
    wide.extend_from_slice(&[0x01 | (2 << 1), 0x00, 0x80]); // last RLE block, 1 MiB of...
    wide.push(0);
    println!(
        "bomb sizes: {} / {} / {} bytes",
        unsized_frame.len(),
        sized_frame.len(),
        lying.len()
    );

    let mut dec = Decoder::new().expect("zstd");
    let raw_len = 1 << 20;
    let bombs: [(&str, &[u8], DecodeError); 4] = [
        (
            "no content size",
            &unsized_frame,
            DecodeError::NoContentSize,
        ),
        (
            "declares 1 GiB",
            &sized_frame,
            DecodeError::ContentSizeMismatch {
                declared: gib as u64,
                expected: raw_len,
            },
        ),
        ("2 GiB window", &wide, DecodeError::WindowTooLarge(2 << 30)),
        (
            "claims 1 MiB, holds 16 MiB",
            &lying,
            DecodeError::Corrupt(String::new()),
        ),
    ];
    for (name, bomb, expected) in bombs {
        let grew = growth(|| {
            let got = dec.decode(Codec::Zstd, bomb, raw_len).expect_err(name);
            match expected {
                DecodeError::Corrupt(_) => {
                    assert!(matches!(got, DecodeError::Corrupt(_)), "{name}: {got}")
                }
                ref e => assert_eq!(&got, e, "{name}"),
            }
        });
        println!("bomb '{name}' refused: peak RSS +{} KiB", grew / 1024);
        assert!(
            grew < raw_len as u64 + 4 * MIB,
            "bomb '{name}' grew {grew} bytes"
        );
    }
    io::stdout().flush().expect("flush");
}

/// Rewrites the 4-byte Frame_Content_Size of a single-segment or FCS-flag-2 frame.
fn patch_content_size(frame: &mut [u8], size: u32) {
    let descriptor = frame[4];
    assert_eq!(descriptor >> 6, 2, "expected a 4-byte content size field");
    let at = if descriptor & 0x20 != 0 { 5 } else { 6 };
    frame[at..at + 4].copy_from_slice(&size.to_le_bytes());
}
