//! Chunking parameters as a value: the sizes FastCDC aims for, validated once.
//!
//! The parameters are part of every manifest and of the file `content_hash`, so
//! changing the defaults never invalidates what was stored before.
//!
//! FastCDC runs without normalized chunking (level 0): normalization picks a
//! harder mask before the average size and an easier one after it, so whether a
//! position is a cut candidate depends on where the chunk started, and after an
//! insert the old and new chunkings can stay out of phase for several chunks.
//! Measured over 800 random 1 MiB inserts (`benches/resync.rs`): level 1 lost
//! up to 5 old chunks, level 0 never more than 3. The price is a wider spread of
//! chunk sizes (mean about 1.36 MiB with the defaults, 3% cut at the maximum).

use fastcdc::v2020 as cdc;

/// Files larger than this use [`ChunkParams::LARGE`]: fewer, bigger chunks keep a
/// 50 GB manifest near 12,500 entries instead of 50,000.
pub const LARGE_FILE_THRESHOLD: u64 = 8 << 30;

/// Minimum, average and maximum chunk size for FastCDC v2020 (normalization level 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkParams {
    min: u32,
    avg: u32,
    max: u32,
}

/// Why a set of chunk sizes was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// A size lies outside what FastCDC v2020 supports.
    #[error("chunk {which} size {value} is outside [{lo}, {hi}]")]
    OutOfRange {
        /// `min`, `avg` or `max`.
        which: &'static str,
        /// The refused value.
        value: u32,
        /// Lowest allowed value.
        lo: u32,
        /// Highest allowed value.
        hi: u32,
    },
    /// Sizes must satisfy min < avg < max.
    #[error("chunk sizes must satisfy min < avg < max (got {min}/{avg}/{max})")]
    NotIncreasing {
        /// Minimum size.
        min: u32,
        /// Average size.
        avg: u32,
        /// Maximum size.
        max: u32,
    },
    /// FastCDC's two-byte scan silently shifts boundaries for odd sizes.
    #[error("chunk sizes must be even (got {min}/{avg}/{max})")]
    Odd {
        /// Minimum size.
        min: u32,
        /// Average size.
        avg: u32,
        /// Maximum size.
        max: u32,
    },
}

impl ChunkParams {
    /// 256 KiB / 1 MiB / 4 MiB: the default for files up to [`LARGE_FILE_THRESHOLD`].
    pub const DEFAULT: Self = Self {
        min: 256 << 10,
        avg: 1 << 20,
        max: 4 << 20,
    };

    /// 1 MiB / 4 MiB / 16 MiB: for very large files (FastCDC v2020's upper limits).
    pub const LARGE: Self = Self {
        min: 1 << 20,
        avg: 4 << 20,
        max: 16 << 20,
    };

    /// Validated parameters.
    pub fn new(min: u32, avg: u32, max: u32) -> Result<Self, ParamsError> {
        let check = |which, value: u32, lo: usize, hi: usize| {
            if (lo..=hi).contains(&(value as usize)) {
                Ok(())
            } else {
                Err(ParamsError::OutOfRange {
                    which,
                    value,
                    lo: lo as u32,
                    hi: hi as u32,
                })
            }
        };
        check("min", min, cdc::MINIMUM_MIN, cdc::MINIMUM_MAX)?;
        check("avg", avg, cdc::AVERAGE_MIN, cdc::AVERAGE_MAX)?;
        check("max", max, cdc::MAXIMUM_MIN, cdc::MAXIMUM_MAX)?;
        if !(min < avg && avg < max) {
            return Err(ParamsError::NotIncreasing { min, avg, max });
        }
        if !(min.is_multiple_of(2) && avg.is_multiple_of(2) && max.is_multiple_of(2)) {
            return Err(ParamsError::Odd { min, avg, max });
        }
        Ok(Self { min, avg, max })
    }

    /// The parameters a file of `len` bytes is chunked with.
    pub fn for_file_size(len: u64) -> Self {
        if len > LARGE_FILE_THRESHOLD {
            Self::LARGE
        } else {
            Self::DEFAULT
        }
    }

    /// Smallest chunk (except a file's last).
    pub fn min(&self) -> u32 {
        self.min
    }

    /// Target average chunk size.
    pub fn avg(&self) -> u32 {
        self.avg
    }

    /// Largest chunk.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// A stable byte encoding of the algorithm and sizes, mixed into `content_hash`.
    pub fn tag(&self) -> [u8; 16] {
        let mut tag = [0u8; 16];
        tag[..4].copy_from_slice(b"F20\0"); // FastCDC v2020, normalization level 0
        tag[4..8].copy_from_slice(&self.min.to_le_bytes());
        tag[8..12].copy_from_slice(&self.avg.to_le_bytes());
        tag[12..16].copy_from_slice(&self.max.to_le_bytes());
        tag
    }

    pub(crate) fn masks(&self) -> Masks {
        let (mask_s, mask_l) = cdc::select_masks(self.avg as usize, cdc::Normalization::Level0);
        Masks {
            mask_s,
            mask_l,
            mask_s_ls: mask_s << 1,
            mask_l_ls: mask_l << 1,
        }
    }
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// FastCDC's normalized-chunking masks, computed once per chunker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Masks {
    mask_s: u64,
    mask_l: u64,
    mask_s_ls: u64,
    mask_l_ls: u64,
}

impl Masks {
    /// Length of the next chunk at the start of `window`. `window` must hold at
    /// least `max` bytes unless it is the end of the input.
    #[inline]
    pub(crate) fn next_len(&self, p: &ChunkParams, window: &[u8]) -> usize {
        let (_, len) = cdc::cut(
            window,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s_ls,
            self.mask_l_ls,
        );
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_scale_up() {
        for p in [ChunkParams::DEFAULT, ChunkParams::LARGE] {
            assert_eq!(ChunkParams::new(p.min, p.avg, p.max), Ok(p));
        }
        assert_eq!(ChunkParams::for_file_size(0), ChunkParams::DEFAULT);
        assert_eq!(ChunkParams::for_file_size(8 << 30), ChunkParams::DEFAULT);
        assert_eq!(
            ChunkParams::for_file_size(50_000_000_000),
            ChunkParams::LARGE
        );
    }

    #[test]
    fn refuses_bad_sizes() {
        assert!(matches!(
            ChunkParams::new(32, 1024, 4096),
            Err(ParamsError::OutOfRange { which: "min", .. })
        ));
        assert!(matches!(
            ChunkParams::new(4096, 1024, 8192),
            Err(ParamsError::NotIncreasing { .. })
        ));
        assert!(matches!(
            ChunkParams::new(4097, 8192, 16384),
            Err(ParamsError::Odd { .. })
        ));
        assert!(matches!(
            ChunkParams::new(1 << 20, 4 << 20, 32 << 20),
            Err(ParamsError::OutOfRange { which: "max", .. })
        ));
    }

    #[test]
    fn tag_distinguishes_params() {
        assert_ne!(ChunkParams::DEFAULT.tag(), ChunkParams::LARGE.tag());
    }
}
