//! PROTOCOL.md's test vectors (`protocol/vectors.json`) against the code:
//! every chunk list, chunk hash and content hash is what the chunker gives,
//! the op and part are what the daemon would send, the zstd frame decodes,
//! the FastCDC loop written in PROTOCOL.md §1.2 (with the table and masks
//! of the vectors file) cuts exactly where the chunker cuts, and the error
//! table lists every code as the code defines it.
//!
//! `DRIFTLESS_WRITE_VECTORS=1 cargo test -p driftless-tests --test protocol vectors`
//! rewrites the file from the code (then review the diff: a change in it is
//! a protocol change).

use std::path::PathBuf;

use base64::Engine;
use driftless_chunker::{
    ChunkParams, Codec, Decoder, Encoder, FormatHint, chunk_slice, content_hash,
};
use driftless_protocol::{
    ChunkHash, ChunkSpec, ChunkingSpec, ContentHash, ErrorCode, FileOp, PartChunk, PartRequest,
    Problem, PutFile, StoredCodec,
};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `len` bytes of BLAKE3's extendable output for `seed`.
fn xof(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// FastCDC 2020 without normalization exactly as PROTOCOL.md §1.2 writes
/// it: one byte at a time, one mask, no cut candidate at the last position
/// of an odd window.
fn spec_cut(b: &[u8], min: usize, max: usize, gear: &[u64; 256], mask: u64) -> usize {
    let n = b.len().min(max);
    if n <= min {
        return n;
    }
    let mut h: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(n & !1).skip(min) {
        h = (h << 1).wrapping_add(gear[byte as usize]);
        if h & mask == 0 {
            return i;
        }
    }
    n
}

fn spec_chunks(data: &[u8], p: ChunkParams, gear: &[u64; 256], mask: u64) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let len = spec_cut(&data[at..], p.min() as usize, p.max() as usize, gear, mask);
        out.push((at as u64, len as u32));
        at += len;
    }
    out
}

fn params_json(p: ChunkParams) -> Value {
    json!({"min": p.min(), "avg": p.avg(), "max": p.max()})
}

/// A file's vector: where its bytes come from, its chunks and content hash.
fn file_vector(name: &str, source: Value, data: &[u8], p: ChunkParams) -> Value {
    let chunks = chunk_slice(data, p);
    let content = content_hash(p, chunks.iter().map(|c| (&c.hash, c.len)));
    json!({
        "name": name,
        "source": source,
        "size": data.len(),
        "chunking": params_json(p),
        "chunks": chunks.iter().map(|c| json!({
            "offset": c.offset, "len": c.len, "hash": hex(&c.hash)
        })).collect::<Vec<_>>(),
        "content_hash": hex(&content),
    })
}

/// Every vector, computed from the code.
fn vectors(gear: &[String], mask_table: &[String]) -> Value {
    let small = ChunkParams::new(256, 1024, 4096).unwrap();
    let d = ChunkParams::DEFAULT;
    let big = xof("driftless protocol vector", 3 << 20);
    let little = xof("driftless protocol vector, small chunks", 64 << 10);
    let files = vec![
        file_vector("empty", json!({"utf8": ""}), b"", d),
        file_vector(
            "hello",
            json!({"utf8": "hello world\n"}),
            b"hello world\n",
            d,
        ),
        file_vector(
            "xof-3MiB",
            json!({"blake3_xof": "driftless protocol vector", "len": big.len()}),
            &big,
            d,
        ),
        file_vector(
            "xof-64KiB-small-chunks",
            json!({"blake3_xof": "driftless protocol vector, small chunks", "len": little.len()}),
            &little,
            small,
        ),
    ];

    // The put the daemon would send for the 3 MiB file, and its one part.
    let chunks = chunk_slice(&big, d);
    let spec = ChunkingSpec {
        min: d.min(),
        avg: d.avg(),
        max: d.max(),
    };
    let op = FileOp::Put(PutFile {
        op_id: "vector-op-1".parse().unwrap(),
        path: "vectors/xof.bin".into(),
        base_rev: None,
        size: big.len() as u64,
        mtime_ms: 1_764_547_200_000,
        chunking: spec,
        chunks: chunks
            .iter()
            .map(|c| ChunkSpec {
                hash: ChunkHash::from_bytes(c.hash),
                len: c.len,
            })
            .collect(),
        content_hash: ContentHash::from_bytes(content_hash(
            d,
            chunks.iter().map(|c| (&c.hash, c.len)),
        )),
    });
    let crc = crc32c::crc32c(&big);
    let part = PartRequest {
        part_number: 1,
        size: big.len() as u64,
        checksum_crc32c: base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes()),
        chunks: chunks
            .iter()
            .map(|c| PartChunk {
                hash: ChunkHash::from_bytes(c.hash),
                raw_len: c.len,
                stored_len: c.len,
                codec: StoredCodec::None,
            })
            .collect(),
    };

    // A stored zstd chunk and what it decodes to.
    let raw = "the quick brown fox jumps over the lazy dog\n".repeat(100);
    let mut enc = Encoder::new(driftless_chunker::Policy::default()).unwrap();
    let stored = enc.encode(raw.as_bytes(), FormatHint::Unknown);
    assert_eq!(stored.codec, Codec::Zstd);
    let zstd = json!({
        "raw_utf8": raw,
        "raw_len": raw.len(),
        "hash": hex(blake3::hash(raw.as_bytes()).as_bytes()),
        "stored_hex": hex(stored.bytes),
    });

    let problem = Problem::new(
        ErrorCode::Conflict,
        Some("docs/a.txt is at revision 9".into()),
    );
    json!({
        "about": "Test vectors of PROTOCOL.md, checked against the code by tests/protocol/vectors.rs",
        "gear": gear,
        "mask_table": mask_table,
        "masks": {
            "1048576": mask_table[20],
            "4194304": mask_table[22],
            "1024": mask_table[10],
        },
        "content_hash_context": "driftless 2026-11 file content hash v1",
        "files": files,
        "op": serde_json::to_value(&op).unwrap(),
        "part": {
            "of": "xof-3MiB",
            "request": serde_json::to_value(&part).unwrap(),
            "crc32c_u32": crc,
        },
        "zstd": zstd,
        "error": serde_json::to_value(&problem).unwrap(),
    })
}

fn parse_u64(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn vectors_match_the_code() {
    let file = repo().join("protocol/vectors.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let strings = |k: &str| -> Vec<String> {
        committed[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let (gear, mask_table) = (strings("gear"), strings("mask_table"));
    let now = vectors(&gear, &mask_table);
    if std::env::var_os("DRIFTLESS_WRITE_VECTORS").is_some() {
        std::fs::write(&file, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        return;
    }
    assert_eq!(
        now, committed,
        "protocol/vectors.json differs from the code: a protocol change? \
         (DRIFTLESS_WRITE_VECTORS=1 rewrites it)"
    );
    // The stored zstd frame decodes to its chunk.
    let z = &committed["zstd"];
    let stored: Vec<u8> = (0..z["stored_hex"].as_str().unwrap().len() / 2)
        .map(|i| parse_u64(&z["stored_hex"].as_str().unwrap()[2 * i..2 * i + 2]) as u8)
        .collect();
    let raw_len = z["raw_len"].as_u64().unwrap() as usize;
    let mut dec = Decoder::new().unwrap();
    let raw = dec.decode(Codec::Zstd, &stored, raw_len).unwrap();
    assert_eq!(raw, z["raw_utf8"].as_str().unwrap().as_bytes());
}

#[test]
fn the_written_fastcdc_loop_cuts_where_the_chunker_cuts() {
    let file = repo().join("protocol/vectors.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let gear: Vec<u64> = v["gear"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| parse_u64(g.as_str().unwrap()))
        .collect();
    let gear: [u64; 256] = gear.try_into().unwrap();
    let table: Vec<u64> = v["mask_table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| parse_u64(g.as_str().unwrap()))
        .collect();
    // Mask index: round(log2(avg)).
    let mask = |avg: u32| table[(f64::from(avg)).log2().round() as usize];
    let mut checked = 0;
    for (seed, (min, avg, max)) in [
        (256, 1024, 4096),
        (2048, 8192, 32768),
        (64, 256, 1024),
        (3072, 12288, 49152),
        (262_144, 1_048_576, 4_194_304),
    ]
    .into_iter()
    .enumerate()
    {
        let p = ChunkParams::new(min, avg, max).unwrap();
        // Odd and even lengths, random and all-zero data (cut at the max).
        for len in [
            0usize, 1, 63, 64, 65, 1023, 4097, 100_001, 2_000_000, 9_000_001,
        ] {
            if len > 64 * max as usize {
                continue;
            }
            for data in [xof(&format!("cdc {seed} {len}"), len), vec![0u8; len]] {
                let ours: Vec<(u64, u32)> = chunk_slice(&data, p)
                    .iter()
                    .map(|c| (c.offset, c.len))
                    .collect();
                assert_eq!(
                    spec_chunks(&data, p, &gear, mask(avg)),
                    ours,
                    "params {min}/{avg}/{max}, {len} bytes"
                );
                checked += ours.len();
            }
        }
    }
    assert!(checked > 500, "{checked}");
}

#[test]
fn the_error_table_lists_every_code() {
    let doc = std::fs::read_to_string(repo().join("PROTOCOL.md")).unwrap();
    let rows: Vec<(String, u16, bool, String)> = doc
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (
                cells[0].trim_matches('`').to_owned(),
                cells[1].parse().unwrap(),
                cells[2] == "yes",
                cells[3].replace("\\|", "|"),
            )
        })
        .collect();
    let code: Vec<(String, u16, bool, String)> = ErrorCode::ALL
        .iter()
        .map(|c| {
            (
                c.as_str().to_owned(),
                c.status(),
                c.retryable(),
                c.title().to_owned(),
            )
        })
        .collect();
    assert_eq!(rows, code, "PROTOCOL.md section 7 differs from ErrorCode");
}
