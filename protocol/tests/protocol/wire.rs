//! JSON shapes of the wire types: what a client in any language sees.

use driftless_protocol::*;
use serde_json::json;

fn hash(b: u8) -> ChunkHash {
    ChunkHash::from_bytes([b; 32])
}

#[test]
fn digests_are_64_lowercase_hex() {
    let h = hash(0xab);
    let text = h.to_string();
    assert_eq!(text, "ab".repeat(32));
    assert_eq!(text.parse::<ChunkHash>(), Ok(h));
    assert_eq!(serde_json::to_value(h).unwrap(), json!("ab".repeat(32)));
    for bad in [
        "AB".repeat(32),
        "ab".repeat(31),
        "ab".repeat(33),
        "zz".repeat(32),
        format!("{} ", "a".repeat(63)),
        String::new(),
    ] {
        assert!(bad.parse::<ChunkHash>().is_err(), "{bad:?}");
        assert!(serde_json::from_value::<ChunkHash>(json!(bad)).is_err());
    }
    // 64 bytes but 32 characters: the error names the character, not a byte of it.
    assert_eq!(
        "ÿ".repeat(32).parse::<ContentHash>(),
        Err(DigestError::Character('ÿ'))
    );
    assert_eq!(
        "ab".repeat(31).parse::<ContentHash>(),
        Err(DigestError::Length(62))
    );
}

#[test]
fn upload_batch_json_shape() {
    let req = CreateUpload {
        files: vec![
            FileOp::Put(PutFile {
                op_id: "op-1".parse().unwrap(),
                path: "docs/a.txt".into(),
                base_rev: None,
                size: 5,
                mtime_ms: 1_700_000_000_000,
                chunking: ChunkingSpec {
                    min: 262_144,
                    avg: 1_048_576,
                    max: 4_194_304,
                },
                chunks: vec![ChunkSpec {
                    hash: hash(1),
                    len: 5,
                }],
                content_hash: ContentHash::from_bytes([2; 32]),
            }),
            FileOp::Delete {
                op_id: "op-2".parse().unwrap(),
                path: "old.txt".into(),
                base_rev: Rev(4),
            },
            FileOp::Move {
                op_id: "op-3".parse().unwrap(),
                from: "a".into(),
                from_rev: Rev(5),
                to: "b".into(),
                base_rev: None,
            },
        ],
    };
    let v = serde_json::to_value(&req).unwrap();
    assert_eq!(v["files"][0]["op"], "put");
    assert_eq!(v["files"][0]["chunks"][0]["hash"], "01".repeat(32));
    assert_eq!(
        v["files"][1],
        json!({"op": "delete", "op_id": "op-2", "path": "old.txt", "base_rev": 4})
    );
    assert_eq!(v["files"][2]["op"], "move");
    assert_eq!(serde_json::from_value::<CreateUpload>(v).unwrap(), req);
}

#[test]
fn results_are_tagged_by_status() {
    let results = vec![
        FileResult {
            op_id: "a".parse().unwrap(),
            path: "x".into(),
            outcome: Outcome::Committed {
                rev: Rev(8),
                seq: Seq(8),
            },
        },
        FileResult {
            op_id: "b".parse().unwrap(),
            path: "y".into(),
            outcome: Outcome::Conflict {
                current_rev: Some(Rev(3)),
            },
        },
        FileResult {
            op_id: "c".parse().unwrap(),
            path: "z".into(),
            outcome: Outcome::Pending,
        },
        FileResult {
            op_id: "d".parse().unwrap(),
            path: "../w".into(),
            outcome: Outcome::Error {
                code: ErrorCode::PathTraversal,
                detail: "no".into(),
            },
        },
    ];
    let v = serde_json::to_value(CommitResponse {
        results: results.clone(),
    })
    .unwrap();
    assert_eq!(
        v["results"][0],
        json!({"op_id": "a", "path": "x", "status": "committed", "rev": 8, "seq": 8})
    );
    assert_eq!(v["results"][1]["status"], "conflict");
    assert_eq!(v["results"][1]["current_rev"], 3);
    assert_eq!(
        v["results"][2],
        json!({"op_id": "c", "path": "z", "status": "pending"})
    );
    assert_eq!(v["results"][3]["code"], "path_traversal");
    assert_eq!(
        serde_json::from_value::<CommitResponse>(v).unwrap().results,
        results
    );
}

#[test]
fn malformed_requests_are_refused_by_serde() {
    for bad in [
        json!({"files": [{"op": "put", "op_id": "has space", "path": "a"}]}),
        json!({"files": [{"op": "explode", "op_id": "x", "path": "a"}]}),
        json!({"files": "not a list"}),
        json!({"files": [{"op": "delete", "op_id": "x", "path": "a", "base_rev": -1}]}),
    ] {
        assert!(
            serde_json::from_value::<CreateUpload>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn parts_changes_and_events() {
    let part = PartRequest {
        part_number: 1,
        size: 100,
        checksum_crc32c: "AAAAAA==".into(),
        chunks: vec![PartChunk {
            hash: hash(3),
            raw_len: 300,
            stored_len: 100,
            codec: StoredCodec::Zstd,
        }],
    };
    let v = serde_json::to_value(&part).unwrap();
    assert_eq!(v["chunks"][0]["codec"], "zstd");
    assert_eq!(serde_json::from_value::<PartRequest>(v).unwrap(), part);

    let entry = ChangeEntry {
        seq: Some(Seq(12)),
        path: "b".into(),
        from: Some("a".into()),
        rev: Rev(12),
        kind: ChangeKind::Move,
        size: 10,
        content_hash: Some(ContentHash::from_bytes([9; 32])),
        mtime_ms: 1,
        device_id: Some(DeviceId(3)),
        committed_at_ms: 2,
    };
    let event = JournalEvent {
        v: 1,
        namespace_id: NamespaceId(5),
        seq: Seq(12),
        change: entry.clone(),
    };
    let v = serde_json::to_value(&event).unwrap();
    assert_eq!(v["change"]["kind"], "move");
    assert_eq!(serde_json::from_value::<JournalEvent>(v).unwrap(), event);
    let wait = WaitResponse {
        changed: false,
        backoff_ms: None,
        cursor: None,
    };
    assert_eq!(
        serde_json::to_value(wait).unwrap(),
        json!({"changed": false})
    );
    let own = WaitResponse {
        changed: false,
        backoff_ms: Some(2000),
        cursor: Some("abc".into()),
    };
    let v = serde_json::to_value(&own).unwrap();
    assert_eq!(
        v,
        json!({"changed": false, "backoff_ms": 2000, "cursor": "abc"})
    );
    assert_eq!(serde_json::from_value::<WaitResponse>(v).unwrap(), own);
}
