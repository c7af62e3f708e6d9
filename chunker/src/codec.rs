//! The zstd policy: compress a chunk only when it pays, decode only what was declared.
//!
//! Encoding: skip formats known to be compressed, then compress a sample (the
//! first 64 KiB of the chunk) at level 1 and keep zstd only if it saves more than
//! 10%; the full result must save 10% too. Contexts and buffers are reused.
//!
//! Decoding treats every stored chunk as hostile: the zstd frame header is read
//! before any work, and the frame must declare exactly the chunk's raw length,
//! use no dictionary and a window no larger than [`WINDOW_LOG_MAX`]; output goes
//! into a buffer of exactly `raw_len` bytes, so a decompression bomb is an error,
//! never an allocation.

use std::io;

use crate::sniff::FormatHint;

/// The largest chunk any supported parameter set produces (FastCDC v2020's maximum).
pub const MAX_CHUNK_LEN: usize = fastcdc::v2020::MAXIMUM_MAX;

/// Largest zstd window a decoder accepts: 2^24 = 16 MiB, the largest chunk.
pub const WINDOW_LOG_MAX: u32 = 24;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How a chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// The raw bytes.
    None,
    /// One zstd frame declaring the raw length.
    Zstd,
}

/// When to compress.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// zstd level (1 = fastest).
    pub level: i32,
    /// Bytes from the start of each chunk compressed to decide.
    pub sample_len: usize,
    /// Keep zstd only if it saves more than this many percent.
    pub min_saving_percent: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            level: 1,
            sample_len: 64 << 10,
            min_saving_percent: 10,
        }
    }
}

impl Policy {
    /// The largest output that still counts as a saving for `len` input bytes.
    fn budget(&self, len: usize) -> usize {
        len - len * usize::from(self.min_saving_percent) / 100 - 1
    }
}

/// A chunk ready to store: its codec and the bytes to upload.
#[derive(Clone, Copy, Debug)]
pub struct Encoded<'a> {
    /// How `bytes` encodes the chunk.
    pub codec: Codec,
    /// The stored form (the raw chunk itself when `codec` is `None`).
    pub bytes: &'a [u8],
}

/// Compresses chunks under a [`Policy`], reusing its zstd context and buffers.
pub struct Encoder {
    policy: Policy,
    zstd: zstd::bulk::Compressor<'static>,
    sample: Vec<u8>,
    out: Vec<u8>,
}

impl Encoder {
    /// An encoder with `policy`.
    pub fn new(policy: Policy) -> io::Result<Self> {
        let mut zstd = zstd::bulk::Compressor::new(policy.level)?;
        zstd.include_contentsize(true)?;
        zstd.include_checksum(false)?;
        zstd.include_dictid(false)?;
        zstd.window_log(WINDOW_LOG_MAX)?;
        Ok(Self {
            policy,
            zstd,
            sample: Vec::with_capacity(policy.sample_len),
            out: Vec::new(),
        })
    }

    /// Encodes one chunk. Returns the raw bytes when compression does not pay.
    pub fn encode<'a>(&'a mut self, raw: &'a [u8], hint: FormatHint) -> Encoded<'a> {
        let raw_form = Encoded {
            codec: Codec::None,
            bytes: raw,
        };
        if hint == FormatHint::Compressed || raw.len() < 64 {
            return raw_form;
        }
        if raw.len() > self.policy.sample_len {
            let sample = &raw[..self.policy.sample_len];
            if !compress_within(
                &mut self.zstd,
                sample,
                &mut self.sample,
                self.policy.budget(sample.len()),
            ) {
                return raw_form;
            }
        }
        if compress_within(
            &mut self.zstd,
            raw,
            &mut self.out,
            self.policy.budget(raw.len()),
        ) {
            Encoded {
                codec: Codec::Zstd,
                bytes: &self.out,
            }
        } else {
            raw_form
        }
    }
}

/// Compresses `src` into `dst` if the result fits in `budget` bytes. zstd stops
/// with "destination too small" as soon as it cannot fit, which is the answer
/// "does not pay".
fn compress_within(
    zstd: &mut zstd::bulk::Compressor<'static>,
    src: &[u8],
    dst: &mut Vec<u8>,
    budget: usize,
) -> bool {
    dst.clear();
    dst.reserve(budget);
    // A Vec's capacity may exceed what was asked; bound the output by a slice.
    dst.resize(budget, 0);
    match zstd.compress_to_buffer(src, &mut dst[..]) {
        Ok(n) => {
            dst.truncate(n);
            true
        }
        Err(_) => false,
    }
}

/// Why a stored chunk could not be decoded. None of these is retryable: the
/// stored bytes are wrong and must be re-uploaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The declared raw length exceeds any chunk we produce.
    #[error("declared raw length {0} exceeds the largest chunk ({MAX_CHUNK_LEN})")]
    RawLenTooLarge(usize),
    /// An uncompressed chunk whose stored length differs from its raw length.
    #[error("stored length {stored} differs from raw length {raw} for an uncompressed chunk")]
    StoredLenMismatch {
        /// Stored bytes.
        stored: usize,
        /// Declared raw length.
        raw: usize,
    },
    /// Not a zstd frame, or a truncated/invalid header.
    #[error("not a valid zstd frame header")]
    BadHeader,
    /// The frame needs a dictionary; chunks are never encoded with one.
    #[error("zstd frame requires a dictionary")]
    Dictionary,
    /// The frame does not declare its content size.
    #[error("zstd frame does not declare its content size")]
    NoContentSize,
    /// The frame declares a size other than the chunk's raw length.
    #[error("zstd frame declares {declared} bytes, chunk is {expected}")]
    ContentSizeMismatch {
        /// What the frame header says.
        declared: u64,
        /// The chunk's raw length.
        expected: usize,
    },
    /// The frame asks for a window above [`WINDOW_LOG_MAX`].
    #[error("zstd window of {0} bytes exceeds the cap")]
    WindowTooLarge(u64),
    /// Bytes after the single frame.
    #[error("trailing bytes after the zstd frame")]
    TrailingData,
    /// zstd refused the data (corrupt, or output past the declared length).
    #[error("corrupt zstd data: {0}")]
    Corrupt(String),
    /// The frame decoded to fewer bytes than declared.
    #[error("zstd frame decoded to {got} bytes, expected {expected}")]
    Short {
        /// Bytes produced.
        got: usize,
        /// Declared raw length.
        expected: usize,
    },
}

/// Decodes stored chunks into a reused buffer, refusing anything that would
/// produce more than the declared raw length.
pub struct Decoder {
    zstd: zstd::bulk::Decompressor<'static>,
    out: Vec<u8>,
}

impl Decoder {
    /// A decoder with the window capped at [`WINDOW_LOG_MAX`].
    pub fn new() -> io::Result<Self> {
        let mut zstd = zstd::bulk::Decompressor::new()?;
        zstd.window_log_max(WINDOW_LOG_MAX)?;
        Ok(Self {
            zstd,
            out: Vec::new(),
        })
    }

    /// Memory held by the zstd context (stays small: output goes straight
    /// into our buffer, so no window is ever allocated).
    pub fn context_bytes(&self) -> usize {
        // Decompressor does not expose its context; a fresh one of the same
        // configuration has the same footprint.
        zstd_safe::DCtx::create().sizeof()
    }

    /// The raw bytes of a stored chunk of `raw_len` bytes.
    pub fn decode<'a>(
        &'a mut self,
        codec: Codec,
        stored: &'a [u8],
        raw_len: usize,
    ) -> Result<&'a [u8], DecodeError> {
        if raw_len > MAX_CHUNK_LEN {
            return Err(DecodeError::RawLenTooLarge(raw_len));
        }
        match codec {
            Codec::None if stored.len() == raw_len => Ok(stored),
            Codec::None => Err(DecodeError::StoredLenMismatch {
                stored: stored.len(),
                raw: raw_len,
            }),
            Codec::Zstd => {
                let header = FrameHeader::parse(stored)?;
                header.check(raw_len)?;
                self.out.clear();
                self.out.resize(raw_len, 0);
                let n = self
                    .zstd
                    .decompress_to_buffer(stored, &mut self.out[..])
                    .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
                if n != raw_len {
                    return Err(DecodeError::Short {
                        got: n,
                        expected: raw_len,
                    });
                }
                Ok(&self.out)
            }
        }
    }
}

/// The parts of a zstd frame header (RFC 8878 §3.1.1.1) that bound decoding.
#[derive(Debug, PartialEq, Eq)]
struct FrameHeader {
    content_size: Option<u64>,
    window_size: u64,
    has_dictionary: bool,
}

impl FrameHeader {
    fn parse(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < 5 || b[..4] != ZSTD_MAGIC {
            return Err(DecodeError::BadHeader);
        }
        let descriptor = b[4];
        let fcs_flag = descriptor >> 6;
        let single_segment = descriptor & 0x20 != 0;
        if descriptor & 0x08 != 0 {
            return Err(DecodeError::BadHeader); // reserved bit
        }
        let dict_len = [0usize, 1, 2, 4][usize::from(descriptor & 0x03)];
        let mut pos = 5;
        let mut window_size = 0u64;
        if !single_segment {
            let wd = *b.get(pos).ok_or(DecodeError::BadHeader)?;
            let log = 10 + u64::from(wd >> 3);
            let base = 1u64 << log;
            window_size = base + (base / 8) * u64::from(wd & 0x07);
            pos += 1;
        }
        let has_dictionary = b
            .get(pos..pos + dict_len)
            .ok_or(DecodeError::BadHeader)?
            .iter()
            .any(|&x| x != 0);
        pos += dict_len;
        let fcs_len = match (fcs_flag, single_segment) {
            (0, false) => 0,
            (0, true) => 1,
            (1, _) => 2,
            (2, _) => 4,
            _ => 8,
        };
        let content_size = if fcs_len == 0 {
            None
        } else {
            let field = b.get(pos..pos + fcs_len).ok_or(DecodeError::BadHeader)?;
            let mut le = [0u8; 8];
            le[..fcs_len].copy_from_slice(field);
            let v = u64::from_le_bytes(le);
            Some(if fcs_len == 2 { v + 256 } else { v })
        };
        if single_segment {
            window_size = content_size.unwrap_or(0);
        }
        Ok(Self {
            content_size,
            window_size,
            has_dictionary,
        })
    }

    fn check(&self, raw_len: usize) -> Result<(), DecodeError> {
        if self.has_dictionary {
            return Err(DecodeError::Dictionary);
        }
        let declared = self.content_size.ok_or(DecodeError::NoContentSize)?;
        if declared != raw_len as u64 {
            return Err(DecodeError::ContentSizeMismatch {
                declared,
                expected: raw_len,
            });
        }
        if self.window_size > 1 << WINDOW_LOG_MAX {
            return Err(DecodeError::WindowTooLarge(self.window_size));
        }
        Ok(())
    }
}

/// Checks that `stored` holds exactly one frame, nothing after it.
pub fn single_frame(stored: &[u8]) -> Result<(), DecodeError> {
    match zstd_safe::find_frame_compressed_size(stored) {
        Ok(n) if n == stored.len() => Ok(()),
        Ok(_) => Err(DecodeError::TrailingData),
        Err(_) => Err(DecodeError::BadHeader),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Vec<u8> {
        let words = [
            "sync ",
            "chunk ",
            "folder ",
            "drift ",
            "namespace ",
            "cursor\n",
        ];
        let mut out = Vec::with_capacity(len + 16);
        let mut i = 0usize;
        while out.len() < len {
            out.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn header_matches_zstd() {
        for len in [0usize, 1, 255, 256, 300, 70_000, 1 << 20] {
            let data = text(len);
            let frame = zstd::bulk::compress(&data, 1).unwrap();
            let h = FrameHeader::parse(&frame).unwrap();
            assert_eq!(h.content_size, Some(len as u64), "len {len}");
            assert!(h.window_size <= 1 << WINDOW_LOG_MAX);
        }
    }

    #[test]
    fn text_compresses_random_does_not() {
        let mut enc = Encoder::new(Policy::default()).unwrap();
        let t = text(1 << 20);
        let e = enc.encode(&t, FormatHint::Unknown);
        assert_eq!(e.codec, Codec::Zstd);
        assert!(e.bytes.len() < t.len() / 2);
        let stored = e.bytes.to_vec();
        let mut dec = Decoder::new().unwrap();
        assert_eq!(dec.decode(Codec::Zstd, &stored, t.len()).unwrap(), &t[..]);

        assert_eq!(enc.encode(&t, FormatHint::Compressed).codec, Codec::None);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let e = enc.encode(&random, FormatHint::Unknown);
        assert_eq!(e.codec, Codec::None);
        assert_eq!(e.bytes, &random[..]);
    }

    #[test]
    fn refuses_mismatched_lengths() {
        let t = text(100_000);
        let frame = zstd::bulk::compress(&t, 1).unwrap();
        let mut dec = Decoder::new().unwrap();
        assert_eq!(
            dec.decode(Codec::Zstd, &frame, 99_999),
            Err(DecodeError::ContentSizeMismatch {
                declared: 100_000,
                expected: 99_999
            })
        );
        assert_eq!(
            dec.decode(Codec::None, &t, 5),
            Err(DecodeError::StoredLenMismatch {
                stored: 100_000,
                raw: 5
            })
        );
        assert_eq!(
            dec.decode(Codec::Zstd, &frame, MAX_CHUNK_LEN + 1),
            Err(DecodeError::RawLenTooLarge(MAX_CHUNK_LEN + 1))
        );
        assert_eq!(
            dec.decode(Codec::Zstd, b"nope", 4),
            Err(DecodeError::BadHeader)
        );
        let mut truncated = frame.clone();
        truncated.truncate(frame.len() / 2);
        assert!(matches!(
            dec.decode(Codec::Zstd, &truncated, 100_000),
            Err(DecodeError::Corrupt(_))
        ));
        assert_eq!(single_frame(&frame), Ok(()));
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        assert_eq!(single_frame(&two), Err(DecodeError::TrailingData));
    }
}
