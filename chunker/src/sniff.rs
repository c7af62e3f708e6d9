//! Recognises formats that are already compressed, so no CPU is spent on them.
//!
//! Two cheap signals, either of which is enough: the file's extension and the
//! magic bytes at its start. The zstd sample in [`crate::codec`] catches the rest.

/// What is known about a file's format before compressing its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FormatHint {
    /// Nothing known: let the sample decide chunk by chunk.
    #[default]
    Unknown,
    /// Already compressed (archive, image, audio, video): never compress.
    Compressed,
}

impl FormatHint {
    /// Looks at the file name and its first bytes (any length; 16 is plenty).
    pub fn detect(file_name: &str, head: &[u8]) -> Self {
        if has_compressed_extension(file_name) || has_compressed_magic(head) {
            Self::Compressed
        } else {
            Self::Unknown
        }
    }
}

const COMPRESSED_EXTENSIONS: &[&str] = &[
    "7z", "aac", "apk", "avif", "br", "bz2", "cab", "docx", "dmg", "epub", "flac", "gif", "gz",
    "heic", "heif", "ipa", "jar", "jpeg", "jpg", "jxl", "lz4", "lzma", "m4a", "m4v", "mkv", "mov",
    "mp3", "mp4", "odp", "ods", "odt", "ogg", "opus", "png", "pptx", "rar", "tgz", "txz", "webm",
    "webp", "woff", "woff2", "xlsx", "xz", "zip", "zst",
];

fn has_compressed_extension(file_name: &str) -> bool {
    let Some((_, ext)) = file_name.rsplit_once('.') else {
        return false;
    };
    COMPRESSED_EXTENSIONS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(ext))
}

/// Magic numbers of compressed containers and media, at offset 0.
const MAGIC: &[&[u8]] = &[
    b"\x1f\x8b",                       // gzip
    b"PK\x03\x04",                     // zip, docx, xlsx, jar, apk, epub
    b"PK\x05\x06",                     // empty zip
    b"\x28\xb5\x2f\xfd",               // zstd
    b"\xfd7zXZ\x00",                   // xz
    b"BZh",                            // bzip2
    b"7z\xbc\xaf\x27\x1c",             // 7-zip
    b"Rar!\x1a\x07",                   // rar
    b"\x04\x22\x4d\x18",               // lz4
    b"\x89PNG\r\n\x1a\n",              // png
    b"\xff\xd8\xff",                   // jpeg
    b"GIF8",                           // gif
    b"\x1a\x45\xdf\xa3",               // matroska, webm
    b"OggS",                           // ogg, opus
    b"fLaC",                           // flac
    b"ID3",                            // mp3 with ID3 tag
    b"wOFF",                           // woff
    b"wOF2",                           // woff2
    b"MSCF",                           // cab
    b"\x00\x00\x00\x0cjP  \r\n\x87\n", // jpeg 2000
];

fn has_compressed_magic(head: &[u8]) -> bool {
    if MAGIC.iter().any(|m| head.starts_with(m)) {
        return true;
    }
    // ISO base media (mp4, mov, heic, avif): a size, then "ftyp".
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        return true;
    }
    // RIFF container holding WebP.
    head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_extension_or_magic() {
        use FormatHint::*;
        assert_eq!(FormatHint::detect("photo.JPG", b""), Compressed);
        assert_eq!(FormatHint::detect("a.tar.gz", b""), Compressed);
        assert_eq!(FormatHint::detect("notes", b"\x1f\x8b\x08\x00"), Compressed);
        assert_eq!(
            FormatHint::detect("clip", b"\x00\x00\x00\x18ftypmp42"),
            Compressed
        );
        assert_eq!(
            FormatHint::detect("img", b"RIFF\x10\x00\x00\x00WEBPVP8 "),
            Compressed
        );
        assert_eq!(FormatHint::detect("notes.txt", b"hello world"), Unknown);
        assert_eq!(FormatHint::detect("Makefile", b""), Unknown);
        assert_eq!(FormatHint::detect("zip", b""), Unknown);
    }
}
