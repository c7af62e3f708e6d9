//! A malicious server cannot make the daemon write outside its folder:
//! every path it sends is validated again, symlinks on the way are not
//! followed, and bytes that fail their hash are never installed.

use std::collections::BTreeMap;

use axum::Router;
use axum::routing::{get, post};
use driftless_chunker::{ChunkParams, content_hash};
use driftless_protocol::*;
use serde_json::json;

use crate::device::{Device, tree};

fn entry(kind: ChangeKind, path: &str, from: Option<&str>, seq: u64) -> ChangeEntry {
    ChangeEntry {
        seq: Some(Seq(seq)),
        path: path.into(),
        from: from.map(Into::into),
        rev: Rev(seq),
        kind,
        size: 5,
        content_hash: Some(ContentHash::from_bytes([1; 32])),
        mtime_ms: 0,
        device_id: None,
        committed_at_ms: 0,
    }
}

#[tokio::test]
async fn a_malicious_server_cannot_make_the_daemon_write_outside_its_folder() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("victim"), b"keep me").unwrap();
    let before = tree(outside.path());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let escape = outside.path().join("escaped").display().to_string();
    let entries = vec![
        entry(ChangeKind::Put, "../escape.txt", None, 1),
        entry(ChangeKind::Put, &escape, None, 2),
        entry(ChangeKind::Put, "a/../../b.txt", None, 3),
        entry(ChangeKind::Put, ".driftless/state.db", None, 4),
        entry(ChangeKind::Put, "link/evil.txt", None, 5),
        entry(ChangeKind::Move, "moved.txt", Some("../../victim"), 6),
        entry(ChangeKind::Delete, "../victim", None, 7),
        entry(ChangeKind::Put, "sub\\..\\..\\x", None, 8),
        entry(ChangeKind::Put, "lies.txt", None, 9),
        entry(ChangeKind::Put, "bad-bytes.txt", None, 10),
        entry(ChangeKind::Put, "short.txt", None, 11),
    ];
    let page = ChangesPage {
        entries,
        cursor: "c1".into(),
        has_more: false,
        snapshot: false,
    };
    // A manifest whose chunk list is honest for the path asked, served
    // with bytes that do not match it; and one that names another path.
    let hello = *blake3::hash(b"hello").as_bytes();
    let p = ChunkParams::DEFAULT;
    let manifest = move |path: &str, base: &str| DownloadManifest {
        path: path.into(),
        rev: Rev(10),
        size: 5,
        content_hash: ContentHash::from_bytes(content_hash(p, [(&hello, 5)])),
        mtime_ms: 0,
        chunking: ChunkingSpec {
            min: p.min(),
            avg: p.avg(),
            max: p.max(),
        },
        chunks: vec![ManifestChunk {
            hash: ChunkHash::from_bytes(hello),
            len: 5,
            offset: 0,
        }],
        ranges: vec![FetchRange {
            url: format!("{base}/blob"),
            headers: BTreeMap::new(),
            expires_at_ms: i64::MAX,
            length: 5,
            chunks: vec![RangeChunk {
                hash: ChunkHash::from_bytes(hello),
                at: 0,
                stored_len: 5,
                raw_len: 5,
                codec: StoredCodec::None,
            }],
        }],
    };
    let b2 = base.clone();
    let app = Router::new()
        .route(
            "/v1/namespaces/{ns}/changes",
            get(move || {
                let page = page.clone();
                async move { axum::Json(page) }
            }),
        )
        .route("/v1/namespaces/{ns}/cursor", post(|| async { axum::http::StatusCode::NO_CONTENT }))
        .route(
            "/v1/namespaces/{ns}/manifest",
            get(move |q: axum::extract::Query<BTreeMap<String, String>>| {
                let b2 = b2.clone();
                async move {
                    let asked = q.get("path").cloned().unwrap_or_default();
                    if asked == "short.txt" {
                        // Honest bytes for the chunk, but the manifest gives
                        // it 10 bytes in the file: the other 5 would be zeros
                        // nobody wrote.
                        let mut m = manifest(&asked, &b2);
                        m.size = 10;
                        m.chunks[0].len = 10;
                        m.content_hash = ContentHash::from_bytes(content_hash(p, [(&hello, 10)]));
                        m.ranges[0].url = format!("{b2}/blob-ok");
                        return axum::Json(m);
                    }
                    let named = if asked == "lies.txt" { "../lies.txt".to_owned() } else { asked };
                    axum::Json(manifest(&named, &b2))
                }
            }),
        )
        .route("/blob", get(|| async { "hellx" }))
        .route("/blob-ok", get(|| async { "hello" }))
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(json!({"type": "about:blank", "title": "x", "status": 404, "code": "not_found"})),
            )
        });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let d = Device::new(&base, "token", 1, "victim-device");
    std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
    let report = d.syncer.pass().await.unwrap();
    // Every hostile entry was refused and reported; none was written.
    assert_eq!(report.downloaded, 0, "{report:?}");
    assert!(report.problems.len() >= 10, "{:?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.path == "short.txt" && p.why.contains("5 bytes in storage but 10")),
        "{:?}",
        report.problems
    );
    assert_eq!(
        tree(outside.path()),
        before,
        "nothing outside the folder changed"
    );
    let inside: Vec<_> = tree(d.path()).into_keys().collect();
    assert!(
        inside.is_empty(),
        "nothing written inside either: {inside:?}"
    );
    assert!(!outside.path().parent().unwrap().join("escape.txt").exists());
    assert!(!d.path().parent().unwrap().join("escape.txt").exists());
    assert!(!d.path().parent().unwrap().join("b.txt").exists());
    // No temporary file was left behind.
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".driftless-partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
