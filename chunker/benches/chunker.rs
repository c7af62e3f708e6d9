//! Criterion benches of the chunker's hot paths on 64 MiB inputs, for tracking
//! regressions between commits. The headline figures with their same-run
//! baselines come from `benches/throughput.rs` (`scripts/bench-chunker.sh`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftless_chunker::{ChunkParams, Decoder, Encoder, FormatHint, Policy, SliceChunker};

const LEN: usize = 64 << 20;

fn random(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn text(len: usize) -> Vec<u8> {
    let words: Vec<String> = (0..2048)
        .map(|i| format!("w{:x}{}", i * 7919, "ab".repeat(i % 5)))
        .collect();
    let mut x = 7u64;
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(x >> 53) as usize].as_bytes());
        out.push(if x & 15 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

fn chunking(c: &mut Criterion) {
    let data = random(LEN);
    let p = ChunkParams::DEFAULT;
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);
    g.bench_function("fastcdc_only", |b| {
        b.iter(|| {
            let (min, avg, max) = (p.min() as usize, p.avg() as usize, p.max() as usize);
            black_box(
                fastcdc::v2020::FastCDC::with_level(
                    &data,
                    min,
                    avg,
                    max,
                    fastcdc::v2020::Normalization::Level0,
                )
                .count(),
            )
        })
    });
    g.bench_function("blake3_only", |b| b.iter(|| black_box(blake3::hash(&data))));
    g.bench_function("chunk_and_hash", |b| {
        b.iter(|| black_box(SliceChunker::new(&data, p).count()))
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let p = ChunkParams::DEFAULT;
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);
    for (name, data) in [("random", random(LEN)), ("text", text(LEN))] {
        let chunks: Vec<_> = SliceChunker::new(&data, p).collect();
        let raw = |c: &driftless_chunker::ChunkInfo| &data[c.offset as usize..][..c.len as usize];
        g.bench_function(format!("encode_{name}"), |b| {
            let mut e = Encoder::new(Policy::default()).expect("zstd");
            b.iter(|| {
                for c in &chunks {
                    black_box(e.encode(raw(c), FormatHint::Unknown).bytes.len());
                }
            })
        });
        let mut e = Encoder::new(Policy::default()).expect("zstd");
        let stored: Vec<_> = chunks
            .iter()
            .map(|c| {
                let enc = e.encode(raw(c), FormatHint::Unknown);
                (enc.codec, enc.bytes.to_vec(), c.len as usize)
            })
            .collect();
        g.bench_function(format!("decode_{name}"), |b| {
            let mut d = Decoder::new().expect("zstd");
            b.iter(|| {
                for (codec, bytes, len) in &stored {
                    black_box(d.decode(*codec, bytes, *len).expect("decode").len());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, chunking, codec);
criterion_main!(benches);
