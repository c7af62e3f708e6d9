//! `commit_many` against `commit` one at a time: random batches of puts
//! (case and normalization twins, files over folders, stale and fresh bases,
//! missing and mis-sized chunks, reused op ids, a path twice in one batch),
//! with deletes between the batches, applied to two folders of one database;
//! every outcome and every row (heads, versions, journal, events, op
//! records, the folder's seq) must come out the same. On PostgreSQL and
//! SQLite.

use driftless_protocol::{
    ChunkHash, ChunkSpec, ChunkingSpec, ContentHash, NamespaceId, Outcome, Rev, SyncPath,
};
use driftless_store::Db;
use driftless_store::meta::accounts;
use driftless_store::meta::chunks::{ChunkLocation, Usable, record_chunks};
use driftless_store::meta::commit::{Commit, FileChange, PUTS_PER_TX, commit, commit_many};
use driftless_store::meta::manifest::Manifest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Row;

use driftless_tests::TestDb;

const CHUNKING: ChunkingSpec = ChunkingSpec {
    min: 262_144,
    avg: 1_048_576,
    max: 4_194_304,
};

/// Names that collide with each other by case or normalization, and some
/// that do not.
const NAMES: &[&str] = &["a", "A", "b", "é", "É", "c.txt", "C.TXT", "d"];

fn hash(b: u8) -> ChunkHash {
    ChunkHash::from_bytes([b; 32])
}

async fn folder(db: &Db, user: &str) -> NamespaceId {
    let (_, ns) = accounts::create_user(db, user, None)
        .await
        .unwrap()
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    let locs = [(1u8, 100u32), (2, 200)].map(|(b, len)| ChunkLocation {
        hash: hash(b),
        raw_len: len,
        offset: 0,
        stored_len: len,
        codec: 0,
    });
    record_chunks(&mut conn, ns.0 as i64, "pack-1", &locs)
        .await
        .unwrap();
    ns
}

/// A random manifest: mostly good, sometimes naming a chunk nobody stored
/// or a stored chunk with the wrong length.
fn manifest(rng: &mut StdRng) -> Manifest {
    let specs: Vec<ChunkSpec> = match rng.random_range(0..10) {
        0 => vec![ChunkSpec {
            hash: hash(3),
            len: 50,
        }],
        1 => vec![ChunkSpec {
            hash: hash(1),
            len: 99,
        }],
        n => (0..1 + n % 3)
            .map(|i| {
                let (b, len) = if (n + i) % 2 == 0 { (1, 100) } else { (2, 200) };
                ChunkSpec { hash: hash(b), len }
            })
            .collect(),
    };
    Manifest::from_specs(&specs)
}

/// Mostly fresh names (so that many puts commit), often the colliding ones.
fn random_path(rng: &mut StdRng) -> SyncPath {
    let depth = rng.random_range(1..=3);
    let parts: Vec<String> = (0..depth)
        .map(|_| {
            if rng.random_range(0..10) < 4 {
                NAMES[rng.random_range(0..NAMES.len())].to_owned()
            } else {
                format!("n{}", rng.random_range(0..40))
            }
        })
        .collect();
    SyncPath::parse(&parts.join("/")).unwrap()
}

async fn head(db: &Db, ns: NamespaceId, path: &SyncPath) -> Option<(Rev, bool)> {
    sqlx::query("SELECT rev, deleted FROM files WHERE namespace_id = $1 AND path = $2")
        .bind(ns.0 as i64)
        .bind(path.as_str())
        .fetch_optional(db.pool())
        .await
        .unwrap()
        .map(|r| {
            (
                Rev(r.get::<i64, _>("rev") as u64),
                r.get::<i64, _>("deleted") == 1,
            )
        })
}

/// One put as both folders get it (the digest names its content, so the
/// same op id again with the same content is a retry).
fn put(ns: NamespaceId, op: &str, path: &SyncPath, base: Option<Rev>, m: &Manifest) -> Commit {
    let digest = blake3::hash(format!("{path:?}{base:?}{:?}", m.as_bytes()).as_bytes());
    Commit {
        namespace: ns,
        op_id: op.parse().unwrap(),
        digest: *digest.as_bytes(),
        device: None,
        reuse: Usable::Stored,
        change: FileChange::Put {
            path: path.clone(),
            base_rev: base,
            mtime_ms: 7,
            chunking: CHUNKING,
            manifest: m.clone(),
            content_hash: ContentHash::from_bytes(*blake3::hash(m.as_bytes()).as_bytes()),
        },
    }
}

fn in_folder(c: &Commit, ns: NamespaceId) -> Commit {
    Commit {
        namespace: ns,
        ..c.clone()
    }
}

/// Everything a commit writes, without the folder id and the clock.
async fn rows(db: &Db, ns: NamespaceId) -> Vec<String> {
    let ns = ns.0 as i64;
    let mut out = Vec::new();
    let queries = [
        "SELECT path, collision_key, rev, deleted FROM files WHERE namespace_id = $1 ORDER BY path",
        // A tombstone's mtime is the clock of the delete.
        "SELECT path, rev, deleted, size, content_hash, CASE WHEN deleted = 1 THEN 0 ELSE mtime_ms END, \
         chunk_min, chunk_avg, chunk_max, manifest, moved_from FROM versions WHERE namespace_id = $1 \
         ORDER BY path, rev",
        "SELECT seq, path, rev, kind, moved_from FROM journal WHERE namespace_id = $1 ORDER BY seq",
        "SELECT seq FROM outbox WHERE namespace_id = $1 ORDER BY seq",
        "SELECT op_id, digest, result FROM ops WHERE namespace_id = $1 ORDER BY op_id",
        "SELECT head_seq FROM namespaces WHERE id = $1",
    ];
    for q in queries {
        for r in sqlx::query(q).bind(ns).fetch_all(db.pool()).await.unwrap() {
            let cols: Vec<String> = (0..r.len())
                .map(|i| {
                    r.try_get::<Option<i64>, _>(i)
                        .map(|v| format!("{v:?}"))
                        .or_else(|_| r.try_get::<Option<String>, _>(i).map(|v| format!("{v:?}")))
                        .or_else(|_| r.try_get::<Option<Vec<u8>>, _>(i).map(|v| format!("{v:?}")))
                        .unwrap()
                })
                .collect();
            out.push(format!("{q}: {}", cols.join(" | ")));
        }
    }
    // The events carry the same changes (their clock aside).
    for r in sqlx::query("SELECT payload FROM outbox WHERE namespace_id = $1 ORDER BY seq")
        .bind(ns)
        .fetch_all(db.pool())
        .await
        .unwrap()
    {
        let mut event: serde_json::Value =
            serde_json::from_str(&r.get::<String, _>("payload")).unwrap();
        event["namespace_id"] = serde_json::Value::Null;
        event["change"]["committed_at_ms"] = serde_json::Value::Null;
        if event["change"]["kind"] == "delete" {
            event["change"]["mtime_ms"] = serde_json::Value::Null;
        }
        out.push(format!("event {event}"));
    }
    out
}

/// Outcomes compared by what they mean: the code of a refusal, not the
/// example file its detail happens to name.
fn meaning(o: &Outcome) -> String {
    match o {
        Outcome::Error { code, .. } => format!("error {code:?}"),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn a_batch_commits_exactly_as_its_puts_one_by_one() {
    for t in TestDb::both().await {
        let db = &t.db;
        let one = folder(db, "one").await;
        let many = folder(db, "many").await;
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let mut earlier: Vec<Commit> = Vec::new();
        let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
        for round in 0..40 {
            let n = if round == 39 {
                PUTS_PER_TX + 37 // spans two transactions
            } else {
                rng.random_range(1..40)
            };
            let mut batch = Vec::new();
            for i in 0..n {
                let c = match rng.random_range(0..20) {
                    // A retry of an earlier op, or its id with other content.
                    0 if !earlier.is_empty() => earlier[rng.random_range(0..earlier.len())].clone(),
                    1 if !earlier.is_empty() => {
                        let e = &earlier[rng.random_range(0..earlier.len())];
                        let p = random_path(&mut rng);
                        put(one, e.op_id.as_str(), &p, None, &manifest(&mut rng))
                    }
                    // The same path again in this batch.
                    2 if !batch.is_empty() => {
                        let FileChange::Put { path, .. } =
                            &batch.last().map(|c: &Commit| c.change.clone()).unwrap()
                        else {
                            unreachable!()
                        };
                        let base = head(db, one, path).await.map(|h| h.0);
                        let op = format!("op-{round}-{i}");
                        put(one, &op, path, base, &manifest(&mut rng))
                    }
                    k => {
                        let p = random_path(&mut rng);
                        let base = match (k % 3, head(db, one, &p).await) {
                            (0, _) => None,
                            (1, Some((rev, _))) => Some(rev),
                            _ => Some(Rev(rng.random_range(1..200))),
                        };
                        let op = format!("op-{round}-{i}");
                        put(one, &op, &p, base, &manifest(&mut rng))
                    }
                };
                batch.push(c);
            }
            let mut expected = Vec::new();
            for c in &batch {
                expected.push(commit(db, &in_folder(c, one)).await.unwrap());
            }
            let in_many: Vec<Commit> = batch.iter().map(|c| in_folder(c, many)).collect();
            let got = commit_many(db, &in_many).await.unwrap();
            let expected_meaning: Vec<String> = expected.iter().map(meaning).collect();
            let got_meaning: Vec<String> = got.iter().map(meaning).collect();
            assert_eq!(got_meaning, expected_meaning, "round {round}: {batch:#?}");
            for o in &expected {
                let kind = match o {
                    Outcome::Committed { .. } => "committed".to_owned(),
                    Outcome::Conflict { .. } => "conflict".to_owned(),
                    other => meaning(other),
                };
                *seen.entry(kind).or_default() += 1;
            }
            earlier.extend(batch);

            // A delete in both, so later puts meet tombstones too.
            let live: Vec<(String, i64)> = sqlx::query(
                "SELECT path, rev FROM files WHERE namespace_id = $1 AND deleted = 0 ORDER BY path",
            )
            .bind(one.0 as i64)
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("path"), r.get("rev")))
            .collect();
            if !live.is_empty() {
                let (path, rev) = &live[rng.random_range(0..live.len())];
                let change = FileChange::Delete {
                    path: SyncPath::parse(path).unwrap(),
                    base_rev: Rev(*rev as u64),
                };
                for ns in [one, many] {
                    let c = Commit {
                        namespace: ns,
                        op_id: format!("del-{round}").parse().unwrap(),
                        digest: [round as u8; 32],
                        device: None,
                        reuse: Usable::Stored,
                        change: change.clone(),
                    };
                    let o = commit(db, &c).await.unwrap();
                    assert!(matches!(o, Outcome::Committed { .. }), "{o:?}");
                }
            }
            assert_eq!(rows(db, many).await, rows(db, one).await, "round {round}");
        }
        // The batches exercised every rule, both ways.
        for kind in [
            "committed",
            "conflict",
            "error PathCollision",
            "error FolderCollision",
            "error PathUnderFile",
            "error PathIsFolder",
            "error ChunkMissing",
            "error SizeMismatch",
            "error OpIdReused",
        ] {
            assert!(
                seen.get(kind).copied().unwrap_or(0) >= 5,
                "{kind}: {seen:?}"
            );
        }
        assert!(seen["committed"] > 300, "{seen:?}");
    }
}
