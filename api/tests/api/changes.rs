//! The changes feed: bootstrap snapshot, journal pages, prefixes, cursor
//! errors, long-polls, and many pollers following many writers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftless_protocol::*;
use driftless_tests::TestApp;
use serde_json::json;

use crate::client::{Api, prepare, upload};
use crate::uploads::committed;

pub(crate) async fn page(api: &Api, ns: u64, query: &str) -> ChangesPage {
    let (status, v) = api
        .get(&format!("/v1/namespaces/{ns}/changes?{query}"))
        .await;
    assert_eq!(status, 200, "{v}");
    serde_json::from_value(v).unwrap()
}

/// Pages from `cursor` (or a bootstrap) until `has_more` is false.
pub(crate) async fn drain(api: &Api, ns: u64, first: &str) -> (Vec<ChangeEntry>, String) {
    let mut entries = Vec::new();
    let mut p = page(api, ns, first).await;
    loop {
        entries.extend(p.entries.clone());
        if !p.has_more {
            return (entries, p.cursor);
        }
        p = page(api, ns, &format!("cursor={}&limit=2", p.cursor)).await;
    }
}

/// Puts `path` with already-stored content: commits at once, no bytes.
pub(crate) async fn put(api: &Api, ns: u64, path: &str, base: Option<Rev>, op: &str) -> Rev {
    let f = prepare(path, b"shared content", base, op);
    let (r, _) = upload(api, ns, &[f]).await;
    committed(&r[0])
}

#[tokio::test]
async fn bootstrap_then_journal_with_prefixes_and_cursor_errors_on_postgres() {
    bootstrap_then_journal(TestApp::spawn().await).await;
}

#[tokio::test]
async fn bootstrap_then_journal_with_prefixes_and_cursor_errors_on_sqlite() {
    bootstrap_then_journal(TestApp::spawn_sqlite().await).await;
}

async fn bootstrap_then_journal(app: TestApp) {
    let (token, ns) = app.user("cora", None).await;
    let api = Api::new(&app.url, &token);
    let mut revs = Vec::new();
    for (i, p) in [
        "docs/a.txt",
        "docs/b.txt",
        "docs/c/d.txt",
        "pics/x.jpg",
        "docsy.txt",
    ]
    .iter()
    .enumerate()
    {
        revs.push(put(&api, ns, p, None, &format!("p{i}")).await);
    }

    // Bootstrap in pages of 2: every live file once, sorted, then a journal cursor.
    let (entries, cursor) = drain(&api, ns, "limit=2").await;
    let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "docs/a.txt",
            "docs/b.txt",
            "docs/c/d.txt",
            "docsy.txt",
            "pics/x.jpg"
        ]
    );
    assert!(
        entries
            .iter()
            .all(|e| e.seq.is_none() && e.kind == ChangeKind::Put)
    );
    // A prefix is a folder: `docsy.txt` is not under `docs`.
    let (docs, _) = drain(&api, ns, "limit=2&prefix=docs").await;
    let paths: Vec<_> = docs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["docs/a.txt", "docs/b.txt", "docs/c/d.txt"]);
    let (_, docs_cursor) = drain(&api, ns, "prefix=docs").await;

    // Journal: an edit, a delete, a move out of docs, each once, in order, by whom.
    put(&api, ns, "docs/a.txt", Some(revs[0]), "e1").await;
    let del = json!({"files": [{"op": "delete", "op_id": "e2", "path": "docs/b.txt", "base_rev": revs[1].0}]});
    let (status, v) = api
        .post(&format!("/v1/namespaces/{ns}/uploads"), &del)
        .await;
    assert_eq!(status, 200, "{v}");
    let mv = json!({"files": [{"op": "move", "op_id": "e3", "from": "docs/c/d.txt", "from_rev": revs[2].0, "to": "pics/d.txt", "base_rev": null}]});
    let (status, v) = api.post(&format!("/v1/namespaces/{ns}/uploads"), &mv).await;
    assert_eq!(status, 200, "{v}");
    put(&api, ns, "pics/y.jpg", None, "e4").await;

    let (entries, _) = drain(&api, ns, &format!("cursor={cursor}")).await;
    let got: Vec<_> = entries
        .iter()
        .map(|e| (e.seq.unwrap().0, e.kind, e.path.as_str(), e.from.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (6, ChangeKind::Put, "docs/a.txt", None),
            (7, ChangeKind::Delete, "docs/b.txt", None),
            (8, ChangeKind::Move, "pics/d.txt", Some("docs/c/d.txt")),
            (9, ChangeKind::Put, "pics/y.jpg", None),
        ]
    );
    assert!(
        entries.iter().all(|e| e.device_id.is_some()),
        "the writer is named"
    );
    assert_eq!(entries[1].size, 0);
    assert!(entries[2].content_hash.is_some());
    // Under the docs prefix: the move counts (it left docs), pics/y.jpg does not.
    let (entries, docs_next) = drain(&api, ns, &format!("cursor={docs_cursor}")).await;
    let seqs: Vec<_> = entries.iter().map(|e| e.seq.unwrap().0).collect();
    assert_eq!(seqs, [6, 7, 8]);
    // Nothing new: an empty page whose cursor has moved past seq 9.
    let p = page(&api, ns, &format!("cursor={docs_next}")).await;
    assert!(p.entries.is_empty() && !p.has_more);

    // A device reports what it applied.
    let (status, _) = api
        .post(
            &format!("/v1/namespaces/{ns}/cursor"),
            &json!({"cursor": docs_next}),
        )
        .await;
    assert_eq!(status, 204);

    // A tampered cursor, another folder's cursor, garbage: 400 cursor_invalid.
    let mut tampered = docs_next.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (token_b, ns_b) = app.user("dave", None).await;
    let api_b = Api::new(&app.url, &token_b);
    let (_, other) = drain(&api_b, ns_b, "").await;
    for bad in [tampered.as_str(), "garbage", other.as_str()] {
        for path in ["changes", "changes/wait"] {
            let (status, v) = api
                .get(&format!(
                    "/v1/namespaces/{ns}/{path}?cursor={bad}&timeout=1"
                ))
                .await;
            assert_eq!(
                (status, v["code"].as_str()),
                (400, Some("cursor_invalid")),
                "{v}"
            );
        }
    }
    // Another user's namespace, with its own valid cursor: not found.
    let (status, v) = api_b
        .get(&format!("/v1/namespaces/{ns}/changes?cursor={docs_next}"))
        .await;
    assert_eq!((status, v["code"].as_str()), (404, Some("not_found")));

    // Compacted below the cursor: 410 cursor_reset.
    sqlx::query("UPDATE namespaces SET compacted_seq = 7 WHERE id = $1")
        .bind(ns as i64)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    for path in ["changes", "changes/wait"] {
        let (status, v) = api
            .get(&format!("/v1/namespaces/{ns}/{path}?cursor={cursor}"))
            .await;
        assert_eq!(
            (status, v["code"].as_str()),
            (410, Some("cursor_reset")),
            "{v}"
        );
    }
}

#[tokio::test]
async fn a_long_poll_returns_when_the_namespace_moves_or_at_its_timeout() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("eve", None).await;
    let writer = Api::new(&app.url, &token);
    // Another device of the same user follows the folder.
    let api = Arc::new(Api::new(&app.url, &app.device("eve", "phone").await));
    put(&writer, ns, "seed.txt", None, "s").await;
    let (_, cursor) = drain(&api, ns, "").await;

    let start = Instant::now();
    let (status, v) = api
        .get(&format!(
            "/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout=1"
        ))
        .await;
    let waited = start.elapsed();
    assert_eq!((status, v["changed"].as_bool()), (200, Some(false)), "{v}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    let poll = {
        let api = api.clone();
        let cursor = cursor.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let r = api
                .get(&format!(
                    "/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout=30"
                ))
                .await;
            (r, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let committed_at = Instant::now();
    put(&writer, ns, "new.txt", None, "n").await;
    let ((status, v), total) = poll.await.unwrap();
    assert_eq!((status, v["changed"].as_bool()), (200, Some(true)), "{v}");
    assert!(total < Duration::from_secs(5), "woke after {total:?}");
    assert!(v.get("cursor").is_none(), "{v}");
    println!("wake after commit: {:?}", committed_at.elapsed());

    // The writer is not woken by its own commits: its long-poll runs to
    // the timeout and hands back a cursor past them, with nothing to fetch.
    let (_, writer_cursor) = drain(&writer, ns, "").await;
    put(&writer, ns, "mine-1.txt", None, "m1").await;
    put(&writer, ns, "mine-2.txt", None, "m2").await;
    let (status, v) = writer
        .get(&format!(
            "/v1/namespaces/{ns}/changes/wait?cursor={writer_cursor}&timeout=1"
        ))
        .await;
    assert_eq!((status, v["changed"].as_bool()), (200, Some(false)), "{v}");
    let past_own = v["cursor"].as_str().expect("a cursor past its own changes");
    let p = page(&writer, ns, &format!("cursor={past_own}")).await;
    assert!(p.entries.is_empty() && !p.has_more, "{p:?}");
    // Another device's commit does wake it, and its entries are there.
    let poll = {
        let writer = Api::new(&app.url, &token);
        let past_own = past_own.to_owned();
        tokio::spawn(async move {
            writer
                .get(&format!(
                    "/v1/namespaces/{ns}/changes/wait?cursor={past_own}&timeout=30"
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    put(&api, ns, "theirs.txt", None, "t").await;
    let (status, v) = poll.await.unwrap();
    assert_eq!((status, v["changed"].as_bool()), (200, Some(true)), "{v}");
    let p = page(&writer, ns, &format!("cursor={past_own}")).await;
    let paths: Vec<_> = p.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["theirs.txt"]);
}

#[tokio::test]
async fn a_hundred_pollers_see_every_seq_of_64_writers_once_in_order() {
    hundred_pollers_64_writers(busy_app(None).await).await;
}

/// A server where one user may run many requests at once: these tests
/// load the journal with one user's 64 writers and 100 devices.
async fn busy_app(kafka: Option<driftless_store::KafkaConfig>) -> TestApp {
    TestApp::spawn_configured(
        driftless_tests::TestDb::postgres().await,
        driftless_tests::AppOptions {
            kafka,
            max_in_flight_per_user: 1_000,
            ..driftless_tests::AppOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_hundred_pollers_see_every_seq_of_64_writers_once_in_order_through_kafka() {
    let broker = driftless_tests::TestBroker::start().await;
    let app = busy_app(Some(broker.fresh_topic())).await;
    assert!(matches!(
        app.state.events,
        driftless_store::EventBus::Kafka(_)
    ));
    hundred_pollers_64_writers(app).await;
}

/// 100 long-pollers follow 64 concurrent writers: each sees every seq once,
/// in order, and all are done within seconds of the last commit (woken by
/// events, not by their 30 s journal re-check).
async fn hundred_pollers_64_writers(app: TestApp) {
    let (token, ns) = app.user("fay", None).await;
    let api = Arc::new(Api::new(&app.url, &token));
    // The pollers are other devices of the folder's owner (a device holds
    // only a few long-polls at once).
    let mut followers = Vec::new();
    for i in 0..100 {
        followers.push(Arc::new(Api::new(
            &app.url,
            &app.device("fay", &format!("phone-{i}")).await,
        )));
    }
    put(&api, ns, "seed.txt", None, "seed").await;
    let (_, cursor) = drain(&api, ns, "").await;
    const WRITERS: u64 = 64;
    const EACH: u64 = 4;
    let last = 1 + WRITERS * EACH;

    let pollers: Vec<_> = followers
        .iter()
        .map(|follower| {
            let api = follower.clone();
            let mut cursor = cursor.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.last().copied().unwrap_or(1) < last {
                    let (status, v) = api
                        .get(&format!(
                            "/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout=20"
                        ))
                        .await;
                    assert_eq!(status, 200, "{v}");
                    loop {
                        let p = page(&api, ns, &format!("cursor={cursor}&limit=50")).await;
                        seen.extend(p.entries.iter().map(|e| e.seq.unwrap().0));
                        cursor = p.cursor;
                        if !p.has_more {
                            break;
                        }
                    }
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    put(
                        &api,
                        ns,
                        &format!("w{w}/f{i}.txt"),
                        None,
                        &format!("w{w}-{i}"),
                    )
                    .await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let last_commit = Instant::now();
    let expected: Vec<u64> = (2..=last).collect();
    for p in pollers {
        let seen = tokio::time::timeout(Duration::from_secs(120), p)
            .await
            .expect("a poller stalled")
            .unwrap();
        assert_eq!(seen, expected, "0 skipped, 0 repeated, 0 reordered");
    }
    let caught_up = last_commit.elapsed();
    assert!(
        caught_up < Duration::from_secs(10),
        "pollers caught up {caught_up:?} after the last commit"
    );
    let distinct: BTreeSet<_> = expected.iter().collect();
    assert_eq!(distinct.len() as u64, WRITERS * EACH);
}

/// Journal compaction racing the feed: a page read from a cursor while
/// compaction passes it is whole (starts right after the cursor) or a 410,
/// never a page with its first entries gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_read_while_the_journal_is_compacted_is_whole_or_410() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("gus", None).await;
    let api = Arc::new(Api::new(&app.url, &token));
    // A cursor after every entry.
    let (_, mut cursor) = drain(&api, ns, "").await;
    let mut cursors = vec![cursor.clone()];
    for i in 0..160 {
        put(&api, ns, &format!("f{i}.txt"), None, &format!("op-{i}")).await;
        cursor = drain(&api, ns, &format!("cursor={cursor}")).await.1;
        cursors.push(cursor.clone());
    }
    let (mut whole, mut resets) = (0u32, 0u32);
    for at in (8..150usize).step_by(6) {
        // Compaction walks up to two entries past the cursor, one at a time,
        // while pages are read from it.
        let db = app.state.db.clone();
        let compactor = tokio::spawn(async move {
            for upto in (at as i64 - 4)..=(at as i64 + 2) {
                let mut tx = db.begin().await.unwrap();
                for table in ["journal", "outbox"] {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE namespace_id = $1 AND seq <= $2"
                    ))
                    .bind(ns as i64)
                    .bind(upto)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                }
                sqlx::query("UPDATE namespaces SET compacted_seq = $1 WHERE id = $2")
                    .bind(upto)
                    .bind(ns as i64)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        loop {
            let (status, v) = api
                .get(&format!(
                    "/v1/namespaces/{ns}/changes?cursor={}&limit=3",
                    cursors[at]
                ))
                .await;
            if status == 410 {
                assert_eq!(v["code"], "cursor_reset", "{v}");
                resets += 1;
                break;
            }
            assert_eq!(status, 200, "{v}");
            let p: ChangesPage = serde_json::from_value(v).unwrap();
            let first = p.entries.first().and_then(|e| e.seq);
            assert_eq!(
                first,
                Some(Seq(at as u64 + 1)),
                "entries lost to compaction: {p:?}"
            );
            whole += 1;
        }
        compactor.await.unwrap();
    }
    assert!(
        whole > 0 && resets > 0,
        "{whole} whole pages, {resets} resets"
    );
}
