//! The upload and commit request bodies, as a client (or an attacker) may
//! send them: any bytes parse into the typed requests or are refused; what
//! parses serializes and parses back to itself; each put's path, chunking
//! parameters and content hash are checked as the server checks them,
//! without a panic.
#![no_main]

use driftless_chunker::{ChunkParams, content_hash};
use driftless_protocol::{CommitRequest, CreateUpload, FileOp, PartRequest, SyncPath};
use libfuzzer_sys::fuzz_target;

fn round_trips<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_vec(v).unwrap();
    let back: T = serde_json::from_slice(&text).unwrap();
    assert_eq!(&back, v);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<CreateUpload>(data) {
        round_trips(&req);
        for op in &req.files {
            if let FileOp::Put(p) = op {
                let _ = SyncPath::parse(&p.path);
                if let Ok(params) = ChunkParams::new(p.chunking.min, p.chunking.avg, p.chunking.max)
                {
                    let _ =
                        content_hash(params, p.chunks.iter().map(|c| (c.hash.as_bytes(), c.len)));
                    let _ = p.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>();
                }
            }
        }
    }
    if let Ok(req) = serde_json::from_slice::<PartRequest>(data) {
        round_trips(&req);
        let _ = req
            .chunks
            .iter()
            .map(|c| u64::from(c.stored_len))
            .sum::<u64>();
    }
    if let Ok(req) = serde_json::from_slice::<CommitRequest>(data) {
        round_trips(&req);
    }
});
