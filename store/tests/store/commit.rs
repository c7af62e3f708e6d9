//! The commit transaction: gap-free journal under concurrency, exactly one
//! winner per base revision, idempotent retries, and the rules for conflicts,
//! deletes, moves and name collisions, on PostgreSQL and SQLite.

use std::sync::Arc;

use driftless_protocol::{
    ChunkHash, ChunkSpec, ChunkingSpec, ContentHash, ErrorCode, NamespaceId, Outcome, Rev, SyncPath,
};
use driftless_store::Db;
use driftless_store::meta::accounts;
use driftless_store::meta::chunks::{ChunkLocation, record_chunks};
use driftless_store::meta::commit::{Commit, FileChange, commit};
use driftless_store::meta::manifest::Manifest;
use sqlx::Row;

use driftless_tests::TestDb;

const CHUNKING: ChunkingSpec = ChunkingSpec {
    min: 262_144,
    avg: 1_048_576,
    max: 4_194_304,
};

async fn setup(db: &Db) -> (NamespaceId, Manifest) {
    let (_, ns) = accounts::create_user(db, "carol", None)
        .await
        .unwrap()
        .unwrap();
    let hash = ChunkHash::from_bytes([9; 32]);
    let mut conn = db.pool().acquire().await.unwrap();
    let loc = ChunkLocation {
        hash,
        raw_len: 100,
        offset: 0,
        stored_len: 100,
        codec: 0,
    };
    record_chunks(&mut conn, ns.0 as i64, "pack-1", &[loc])
        .await
        .unwrap();
    (ns, Manifest::from_specs(&[ChunkSpec { hash, len: 100 }]))
}

fn put(ns: NamespaceId, op: &str, path: &str, base: Option<Rev>, manifest: &Manifest) -> Commit {
    Commit {
        namespace: ns,
        op_id: op.parse().unwrap(),
        digest: *blake3::hash(format!("{op}{path}{base:?}").as_bytes()).as_bytes(),
        device: None,
        reuse: driftless_store::meta::chunks::Usable::Stored,
        change: FileChange::Put {
            path: SyncPath::parse(path).unwrap(),
            base_rev: base,
            mtime_ms: 1,
            chunking: CHUNKING,
            manifest: manifest.clone(),
            content_hash: ContentHash::from_bytes([1; 32]),
        },
    }
}

fn with(ns: NamespaceId, op: &str, change: FileChange) -> Commit {
    Commit {
        namespace: ns,
        op_id: op.parse().unwrap(),
        digest: *blake3::hash(op.as_bytes()).as_bytes(),
        device: None,
        reuse: driftless_store::meta::chunks::Usable::Stored,
        change,
    }
}

fn rev(o: &Outcome) -> Rev {
    match o {
        Outcome::Committed { rev, .. } => *rev,
        other => panic!("expected a commit, got {other:?}"),
    }
}

async fn journal_seqs(db: &Db, ns: NamespaceId) -> (Vec<i64>, Vec<i64>) {
    let j = sqlx::query("SELECT seq FROM journal WHERE namespace_id = $1 ORDER BY seq")
        .bind(ns.0 as i64)
        .fetch_all(db.pool())
        .await
        .unwrap();
    let o = sqlx::query("SELECT seq FROM outbox WHERE namespace_id = $1 ORDER BY seq")
        .bind(ns.0 as i64)
        .fetch_all(db.pool())
        .await
        .unwrap();
    (
        j.iter().map(|r| r.get(0)).collect(),
        o.iter().map(|r| r.get(0)).collect(),
    )
}

#[tokio::test]
async fn journal_is_gap_free_under_concurrent_commits_and_conflicts() {
    for t in TestDb::both().await {
        let db = Arc::new(t.db.clone());
        let (ns, m) = setup(&db).await;
        // 64 writers: each creates its own file, then all fight over one shared
        // file (rolled-back conflicts must not leave holes).
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (db, m) = (db.clone(), m.clone());
                tokio::spawn(async move {
                    let own = commit(
                        &db,
                        &put(ns, &format!("own-{i}"), &format!("dir/file-{i}"), None, &m),
                    )
                    .await
                    .unwrap();
                    let shared = commit(
                        &db,
                        &put(ns, &format!("shared-{i}"), "shared.txt", None, &m),
                    )
                    .await
                    .unwrap();
                    (own, shared)
                })
            })
            .collect();
        let mut committed = 0;
        let mut shared_wins = 0;
        for task in tasks {
            let (own, shared) = task.await.unwrap();
            rev(&own);
            committed += 1;
            match shared {
                Outcome::Committed { .. } => {
                    shared_wins += 1;
                    committed += 1;
                }
                Outcome::Conflict {
                    current_rev: Some(_),
                } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(shared_wins, 1, "exactly one writer creates shared.txt");
        let (journal, outbox) = journal_seqs(&db, ns).await;
        assert_eq!(
            journal,
            (1..=committed).collect::<Vec<i64>>(),
            "journal seq must be 1..=n without gaps"
        );
        assert_eq!(outbox, journal, "one outbox row per journal entry");
    }
}

#[tokio::test]
async fn twenty_commits_on_one_base_rev_one_wins_and_retries_apply_once() {
    for t in TestDb::both().await {
        let db = Arc::new(t.db.clone());
        let (ns, m) = setup(&db).await;
        let base = rev(&commit(&db, &put(ns, "create", "doc.txt", None, &m))
            .await
            .unwrap());
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (db, m) = (db.clone(), m.clone());
                tokio::spawn(async move {
                    commit(
                        &db,
                        &put(ns, &format!("edit-{i}"), "doc.txt", Some(base), &m),
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let winners: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Committed { .. }))
            .collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        let new_rev = rev(winners[0]);
        for o in &outcomes {
            if !matches!(o, Outcome::Committed { .. }) {
                assert_eq!(
                    o,
                    &Outcome::Conflict {
                        current_rev: Some(new_rev)
                    }
                );
            }
        }

        // 100 retries of one operation, concurrently: one version, one answer.
        let retry = put(ns, "retried-op", "retried.txt", None, &m);
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (db, c) = (db.clone(), retry.clone());
                tokio::spawn(async move { commit(&db, &c).await.unwrap() })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "retries disagree: {answers:?}"
        );
        rev(&answers[0]);
        let versions: i64 = sqlx::query(
            "SELECT COUNT(*) FROM versions WHERE namespace_id = $1 AND path = 'retried.txt'",
        )
        .bind(ns.0 as i64)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
        assert_eq!(versions, 1);
        // The same op id for a different operation is refused.
        let mut other = put(ns, "retried-op", "elsewhere.txt", None, &m);
        other.digest = [0; 32];
        assert!(matches!(
            commit(&db, &other).await.unwrap(),
            Outcome::Error {
                code: ErrorCode::OpIdReused,
                ..
            }
        ));
        let (journal, _) = journal_seqs(&db, ns).await;
        assert_eq!(journal, (1..=3).collect::<Vec<i64>>());
    }
}

#[tokio::test]
async fn conflicts_deletes_moves_and_collisions() {
    for t in TestDb::both().await {
        let db = &t.db;
        let (ns, m) = setup(db).await;
        let p = |s: &str| SyncPath::parse(s).unwrap();
        let r1 = rev(&commit(db, &put(ns, "a1", "README.md", None, &m))
            .await
            .unwrap());
        // Creating an existing file without its base revision is a conflict.
        assert_eq!(
            commit(db, &put(ns, "a2", "README.md", None, &m))
                .await
                .unwrap(),
            Outcome::Conflict {
                current_rev: Some(r1)
            }
        );
        // Case and normalization twins of a live file are refused.
        let twin = commit(db, &put(ns, "a3", "readme.MD", None, &m))
            .await
            .unwrap();
        assert!(
            matches!(
                twin,
                Outcome::Error {
                    code: ErrorCode::PathCollision,
                    ..
                }
            ),
            "{twin:?}"
        );
        // A delete from a stale revision loses to the edit.
        let r2 = rev(&commit(db, &put(ns, "a4", "README.md", Some(r1), &m))
            .await
            .unwrap());
        let stale = with(
            ns,
            "d1",
            FileChange::Delete {
                path: p("README.md"),
                base_rev: r1,
            },
        );
        assert_eq!(
            commit(db, &stale).await.unwrap(),
            Outcome::Conflict {
                current_rev: Some(r2)
            }
        );
        let r3 = rev(&commit(
            db,
            &with(
                ns,
                "d2",
                FileChange::Delete {
                    path: p("README.md"),
                    base_rev: r2,
                },
            ),
        )
        .await
        .unwrap());
        // Deleting again is a no-op that reports the tombstone.
        assert_eq!(
            rev(&commit(
                db,
                &with(
                    ns,
                    "d3",
                    FileChange::Delete {
                        path: p("README.md"),
                        base_rev: r2
                    }
                )
            )
            .await
            .unwrap()),
            r3
        );
        // An edit from before the delete recreates the file: edit beats delete.
        let r4 = rev(&commit(db, &put(ns, "a5", "README.md", Some(r1), &m))
            .await
            .unwrap());
        // A case-only rename is a move, not a collision with itself.
        let mv = with(
            ns,
            "m1",
            FileChange::Move {
                from: p("README.md"),
                from_rev: r4,
                to: p("Readme.md"),
                base_rev: None,
            },
        );
        let r5 = rev(&commit(db, &mv).await.unwrap());
        let heads = sqlx::query(
            "SELECT path, rev, deleted FROM files WHERE namespace_id = $1 ORDER BY path",
        )
        .bind(ns.0 as i64)
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<String, _>(0),
                r.get::<i64, _>(1),
                r.get::<i64, _>(2),
            )
        })
        .collect::<Vec<_>>();
        assert_eq!(
            heads,
            vec![
                ("README.md".into(), r5.0 as i64, 1),
                ("Readme.md".into(), r5.0 as i64, 0)
            ]
        );
        // Moving from a stale revision is a conflict; moving a missing file is not found.
        let stale_mv = with(
            ns,
            "m2",
            FileChange::Move {
                from: p("Readme.md"),
                from_rev: r4,
                to: p("x.md"),
                base_rev: None,
            },
        );
        assert_eq!(
            commit(db, &stale_mv).await.unwrap(),
            Outcome::Conflict {
                current_rev: Some(r5)
            }
        );
        let gone = with(
            ns,
            "m3",
            FileChange::Move {
                from: p("nope.md"),
                from_rev: r4,
                to: p("x.md"),
                base_rev: None,
            },
        );
        assert!(matches!(
            commit(db, &gone).await.unwrap(),
            Outcome::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ));

        // A manifest naming a chunk the namespace does not hold commits nothing.
        let unknown = Manifest::from_specs(&[ChunkSpec {
            hash: ChunkHash::from_bytes([3; 32]),
            len: 5,
        }]);
        let missing = commit(db, &put(ns, "c1", "new.bin", None, &unknown))
            .await
            .unwrap();
        assert!(
            matches!(
                missing,
                Outcome::Error {
                    code: ErrorCode::ChunkMissing,
                    ..
                }
            ),
            "{missing:?}"
        );
        let (journal, outbox) = journal_seqs(db, ns).await;
        assert_eq!(
            journal,
            (1..=r5.0 as i64).collect::<Vec<_>>(),
            "refusals leave no journal entry and no gap"
        );
        assert_eq!(outbox, journal);
    }
}

fn code(o: &Outcome) -> ErrorCode {
    match o {
        Outcome::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_path_cannot_be_a_file_and_a_folder_nor_one_folder_spelled_two_ways() {
    for t in TestDb::both().await {
        let db = &t.db;
        let (ns, m) = setup(db).await;
        let ok = |o: Outcome| rev(&o);
        ok(commit(db, &put(ns, "f", "report", None, &m)).await.unwrap());
        ok(commit(db, &put(ns, "d", "dir/a.txt", None, &m))
            .await
            .unwrap());
        // A file under a file (also when the case differs).
        let o = commit(db, &put(ns, "x1", "report/child", None, &m))
            .await
            .unwrap();
        assert_eq!(code(&o), ErrorCode::PathUnderFile, "{o:?}");
        let o = commit(db, &put(ns, "x2", "REPORT/deep/child", None, &m))
            .await
            .unwrap();
        assert_eq!(code(&o), ErrorCode::PathUnderFile, "{o:?}");
        // A file over a folder.
        let o = commit(db, &put(ns, "x3", "dir", None, &m)).await.unwrap();
        assert_eq!(code(&o), ErrorCode::PathIsFolder, "{o:?}");
        let o = commit(db, &put(ns, "x4", "Dir", None, &m)).await.unwrap();
        assert_eq!(code(&o), ErrorCode::PathIsFolder, "{o:?}");
        // One folder spelled two ways.
        let o = commit(db, &put(ns, "x5", "DIR/b.txt", None, &m))
            .await
            .unwrap();
        assert_eq!(code(&o), ErrorCode::FolderCollision, "{o:?}");
        let o = commit(db, &put(ns, "x6", "DIR/sub/c.txt", None, &m))
            .await
            .unwrap();
        assert_eq!(code(&o), ErrorCode::FolderCollision, "{o:?}");
        // A move is held to the same rules.
        let a_rev = rev(&commit(db, &put(ns, "y", "y.txt", None, &m)).await.unwrap());
        let mv = |op: &str, to: &str| {
            with(
                ns,
                op,
                FileChange::Move {
                    from: SyncPath::parse("y.txt").unwrap(),
                    from_rev: a_rev,
                    to: SyncPath::parse(to).unwrap(),
                    base_rev: None,
                },
            )
        };
        let o = commit(db, &mv("m1", "report/y.txt")).await.unwrap();
        assert_eq!(code(&o), ErrorCode::PathUnderFile, "{o:?}");
        let o = commit(db, &mv("m2", "DIR/y.txt")).await.unwrap();
        assert_eq!(code(&o), ErrorCode::FolderCollision, "{o:?}");
        // Spelled alike, anything goes; a folder emptied frees its name.
        ok(commit(db, &put(ns, "g1", "dir/b.txt", None, &m))
            .await
            .unwrap());
        ok(commit(db, &mv("m3", "dir/sub/y.txt")).await.unwrap());
        let o = commit(db, &put(ns, "x7", "dir/sub", None, &m))
            .await
            .unwrap();
        assert_eq!(code(&o), ErrorCode::PathIsFolder, "{o:?}");
        let (rows, _) = journal_seqs(db, ns).await;
        assert_eq!(
            rows.len(),
            5,
            "only the five accepted commits are journaled"
        );
    }
}

#[tokio::test]
async fn a_chunk_named_with_another_length_than_stored_is_refused() {
    for t in TestDb::both().await {
        let db = &t.db;
        let (ns, _) = setup(db).await;
        // The stored chunk is 100 bytes; a manifest naming it 200 would make
        // readers fill the other 100 with bytes nobody wrote.
        let hash = ChunkHash::from_bytes([9; 32]);
        let lying = Manifest::from_specs(&[ChunkSpec { hash, len: 200 }]);
        let o = commit(db, &put(ns, "l", "lie.bin", None, &lying))
            .await
            .unwrap();
        assert_eq!(code(&o), ErrorCode::SizeMismatch, "{o:?}");
        assert_eq!(journal_seqs(db, ns).await.0.len(), 0);
    }
}
