//! Manifests, in both forms: the stored one (36-byte entries the server
//! reads back from its database) decodes to exactly the chunks it encodes
//! or is refused; the download manifest a client receives (JSON) either
//! tiles its file or is refused, and its content hash is computed without
//! a panic whatever the chunk list.
#![no_main]

use driftless_chunker::{ChunkParams, content_hash};
use driftless_protocol::{ChunkSpec, DownloadManifest, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(m) = Manifest::from_bytes(data.to_vec()) {
        assert_eq!(m.len() * 36, data.len());
        let specs: Vec<ChunkSpec> = m.specs().collect();
        assert_eq!(specs.len(), m.len());
        assert_eq!(Manifest::from_specs(&specs), m);
        assert_eq!(
            m.total_len(),
            specs.iter().map(|s| u64::from(s.len)).sum::<u64>()
        );
    } else {
        assert!(!data.len().is_multiple_of(36));
    }

    if let Ok(m) = serde_json::from_slice::<DownloadManifest>(data) {
        if m.check_layout().is_ok() {
            assert_eq!(
                m.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>(),
                m.size
            );
        }
        if let Ok(p) = ChunkParams::new(m.chunking.min, m.chunking.avg, m.chunking.max) {
            let _ = content_hash(p, m.chunks.iter().map(|c| (c.hash.as_bytes(), c.len)));
        }
    }
});
