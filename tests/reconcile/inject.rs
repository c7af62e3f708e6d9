//! Drift injection: a populated system (two users, 4,000 + 1,000 files in
//! ~45 packs, all verified), the server stopped, then at least 1,000
//! drifts of every kind the job looks for injected at random spots:
//!
//! | kind | injected |
//! |---|---|
//! | orphan_object | 1,000 objects under `packs/` no row names |
//! | missing_chunk | the pack objects of 11 rounds deleted (1,100 chunks) |
//! | corrupt_chunk | every chunk of 11 other rounds' packs flipped in place (1,100) |
//! | dead_chunk | history of 1,150 files pruned, their chunks left behind |
//! | pack_liveness / missing_pack_row | live bytes falsified, a pack row deleted |
//! | expired_session | 1,000 open sessions past expiry, each with a multipart upload |
//! | stale_pack_row | 1,000 packs `uploading` for sessions that were aborted |
//! | stray_multipart | 1,000 multipart uploads no session knows |
//! | unpublished_outbox | 1,000 outbox rows never published |
//! | unseen_journal | 1,200 journal entries the verifier never saw |
//!
//! One run must find every one of them (exact counts) and repair it, delete
//! no object a chunk row names, compact the mostly-dead packs and the
//! journal; then the devices take the repair requests, a fresh device
//! downloads every file with correct hashes, and a second run finds nothing.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use driftless_consumer::reconcile::Reconciler;
use driftless_daemon::sync::CURSOR_KEY;
use driftless_protocol::NamespaceId;
use driftless_store::meta::uploads::{self, Session};
use driftless_store::{BlobStore, Db, pack_key};
use driftless_tests::{TestApp, TestBroker};
use rand::seq::SliceRandom;
use sqlx::Row;

use crate::device::{Device, data};
use crate::{eager, found, repaired, work};

const ROUNDS: usize = 40;
const PER_ROUND: usize = 100;
/// Rounds whose pack objects are deleted, corrupted, mostly edited away,
/// wholly edited away, and left alone (with falsified rows).
const MISSING: std::ops::Range<usize> = 0..11;
const CORRUPT: std::ops::Range<usize> = 11..22;
const EDITED: std::ops::Range<usize> = 22..37;
const REPLACED: usize = 37;
/// Of each edited round's files, these many get new content.
const EDITS_PER_ROUND: usize = 70;

fn path(round: usize, i: usize) -> String {
    format!("r{round:02}/f{i:03}.bin")
}

async fn count(db: &Db, sql: &str, ns: i64) -> u64 {
    let n: i64 = sqlx::query(sql)
        .bind(ns)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    n as u64
}

async fn scalar(db: &Db, sql: &str) -> u64 {
    let n: i64 = sqlx::query(sql).fetch_one(db.pool()).await.unwrap().get(0);
    n as u64
}

async fn complete_packs(db: &Db, ns: i64) -> BTreeSet<String> {
    sqlx::query("SELECT id FROM packs WHERE namespace_id = $1 AND state = 'complete'")
        .bind(ns)
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn chunks_in(db: &Db, packs: &[String]) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    for p in packs {
        for r in sqlx::query(
            "SELECT pack_id, pack_offset, stored_len FROM chunks WHERE pack_id = $1 ORDER BY pack_offset",
        )
        .bind(p)
        .fetch_all(db.pool())
        .await
        .unwrap()
        {
            out.push((r.get(0), r.get(1), r.get(2)));
        }
    }
    out
}

/// Waits until every chunk is verified and every entry published and applied.
async fn settle(db: &Db) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = scalar(db, "SELECT COUNT(*) FROM chunks WHERE state = 0").await;
        let unsent = scalar(db, "SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL").await;
        let behind = scalar(
            db,
            "SELECT COUNT(*) FROM namespaces n LEFT JOIN consumer_marks m ON m.namespace_id = n.id \
             AND m.consumer = 'verifier' WHERE n.head_seq > COALESCE(m.seq, 0)",
        )
        .await;
        if pending == 0 && unsent == 0 && behind == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the system did not settle: {pending} chunks pending, {unsent} rows unsent, {behind} folders behind"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn uploads_in_progress(blob: &BlobStore) -> usize {
    let mut n = 0;
    let mut from = None;
    loop {
        let page = blob
            .list_uploads_page("packs/", from.take())
            .await
            .unwrap()
            .expect("the test S3 server lists multipart uploads");
        n += page.items.len();
        match page.next {
            Some(next) => from = Some(next),
            None => return n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_injected_drifts_are_all_found_and_repaired_and_nothing_referenced_is_lost() {
    let started = Instant::now();
    let broker = TestBroker::start().await;
    let mut app = TestApp::spawn_kafka(&broker).await;
    let db = app.state.db.clone();
    let blob = app.s3.store.clone();
    let (token, ns) = app.user("alice", None).await;
    let (bob_token, bob_ns) = app.user("bob", None).await;
    let (nsi, bob_nsi) = (ns as i64, bob_ns as i64);

    // Populate: one pack per round.
    let laptop = Device::new(&app.url, &token, ns, "laptop");
    let mut round_packs: Vec<Vec<String>> = Vec::new();
    let mut known = BTreeSet::new();
    let mut early_cursor = None;
    for r in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let seed = (r * PER_ROUND + i) as u64;
            laptop.write(&path(r, i), &data(3000 + (seed as usize * 37) % 2000, seed));
        }
        assert_eq!(laptop.pass().await.uploaded as usize, PER_ROUND);
        let now = complete_packs(&db, nsi).await;
        round_packs.push(now.difference(&known).cloned().collect());
        known = now;
        if r == 0 {
            early_cursor = laptop.syncer.state().get(CURSOR_KEY).unwrap();
        }
    }
    assert!(round_packs.iter().all(|p| p.len() == 1), "{round_packs:?}");
    // New content for most files of the edited rounds and all of one more.
    let mut edited = Vec::new();
    for r in EDITED {
        for i in 0..EDITS_PER_ROUND {
            edited.push(path(r, i));
        }
    }
    for i in 0..PER_ROUND {
        edited.push(path(REPLACED, i));
    }
    for (k, p) in edited.iter().enumerate() {
        laptop.write(p, &data(3500, 1_000_000 + k as u64));
    }
    assert_eq!(laptop.pass().await.uploaded as usize, edited.len());
    let bob = Device::new(&app.url, &bob_token, bob_ns, "bob-laptop");
    for i in 0..1000 {
        bob.write(&format!("notes/{i:04}.txt"), format!("note {i}").as_bytes());
    }
    assert_eq!(bob.pass().await.uploaded, 1000);
    settle(&db).await;
    let populated = started.elapsed();
    let before = laptop.tree();
    let chunk_rows = count(
        &db,
        "SELECT COUNT(*) FROM chunks WHERE namespace_id = $1",
        nsi,
    )
    .await;

    // The server (relay, verifier, sweepers) stops; drift goes in.
    app.pause().await;
    let t_inject = Instant::now();
    let packs_of = |rounds: std::ops::Range<usize>| -> Vec<String> {
        rounds.flat_map(|r| round_packs[r].clone()).collect()
    };
    let mut rng = rand::rng();

    let mut orphans: Vec<String> = (0..1000).map(|i| format!("packs/orphan-{i:04}")).collect();
    orphans.shuffle(&mut rng);
    for (i, key) in orphans.iter().enumerate() {
        blob.put(key, data(16 + i % 64, i as u64).into())
            .await
            .unwrap();
    }

    let missing = chunks_in(&db, &packs_of(MISSING)).await;
    for p in packs_of(MISSING) {
        blob.delete(&pack_key(&p)).await.unwrap();
    }

    let corrupt = chunks_in(&db, &packs_of(CORRUPT)).await;
    for p in packs_of(CORRUPT) {
        let size = blob.size(&pack_key(&p)).await.unwrap().unwrap();
        let mut bytes = blob
            .get_range(&pack_key(&p), 0, size)
            .await
            .unwrap()
            .to_vec();
        for (_, offset, len) in corrupt.iter().filter(|c| c.0 == p) {
            bytes[(offset + len / 2) as usize] ^= 0x5a;
        }
        blob.put(&pack_key(&p), bytes.into()).await.unwrap();
    }

    // A history prune the job was not told about: the edited files' first
    // versions go, and with them every reference to their chunks.
    let pruned = sqlx::query(
        "DELETE FROM versions WHERE namespace_id = $1 AND path >= 'r22/' AND path < 'r38/' \
         AND rev < (SELECT f.rev FROM files f WHERE f.namespace_id = versions.namespace_id \
         AND f.path = versions.path)",
    )
    .bind(nsi)
    .execute(db.pool())
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(pruned as usize, edited.len());

    // Live bytes falsified on the corrupt rounds' packs and one more; the
    // last round's pack row deleted outright.
    let mut falsified = packs_of(CORRUPT);
    falsified.push(round_packs[38][0].clone());
    for p in &falsified {
        sqlx::query("UPDATE packs SET live_bytes = live_bytes + 4321 WHERE id = $1")
            .bind(p)
            .execute(db.pool())
            .await
            .unwrap();
    }
    let rowless = round_packs[39][0].clone();
    sqlx::query("DELETE FROM packs WHERE id = $1")
        .bind(&rowless)
        .execute(db.pool())
        .await
        .unwrap();

    // Sessions: expired ones (with multipart uploads), aborted ones whose
    // pack row was left `uploading`, and uploads no session knows.
    let (user, _) = driftless_store::meta::accounts::user_by_name(&db, "alice")
        .await
        .unwrap()
        .unwrap();
    let device: i64 = sqlx::query("SELECT MIN(id) FROM devices WHERE user_id = $1")
        .bind(user.0)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    let past = driftless_store::db::now_ms() - 60_000;
    for i in 0..2000 {
        let pack = format!("injected-{i:04}");
        let expired = i < 1000;
        let s3_upload_id = if expired {
            blob.create_multipart(&pack_key(&pack)).await.unwrap()
        } else {
            String::new()
        };
        uploads::create_session(
            &db,
            &Session {
                namespace: NamespaceId(ns),
                id: format!("{ns}-injected-{i:04}"),
                user_id: user.0,
                device_id: device,
                pack_id: pack,
                s3_upload_id,
                state: "open".into(),
                results: None,
                expires_at_ms: if expired { past } else { past + 3_600_000 },
                committing_until_ms: None,
            },
            "[]",
            &[],
        )
        .await
        .unwrap();
    }
    sqlx::query(
        "UPDATE upload_sessions SET state = 'aborted' WHERE id LIKE $1 AND expires_at_ms > $2",
    )
    .bind(format!("{ns}-injected-%"))
    .bind(past)
    .execute(db.pool())
    .await
    .unwrap();
    for i in 0..1000 {
        blob.create_multipart(&pack_key(&format!("stray-{i:04}")))
            .await
            .unwrap();
    }
    assert_eq!(uploads_in_progress(&blob).await, 2000);

    // The stream: bob's entries never published, alice's last 1,200 never
    // seen by the verifier (published, then lost).
    let unpublished = sqlx::query("UPDATE outbox SET sent_at_ms = NULL WHERE namespace_id = $1")
        .bind(bob_nsi)
        .execute(db.pool())
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(unpublished, 1000);
    sqlx::query("UPDATE consumer_marks SET seq = seq - 1200 WHERE namespace_id = $1 AND consumer = 'verifier'")
        .bind(nsi)
        .execute(db.pool())
        .await
        .unwrap();
    let journal_before = count(
        &db,
        "SELECT COUNT(*) FROM journal WHERE namespace_id = $1",
        nsi,
    )
    .await;

    // One run.
    let t = Instant::now();
    let mut job = Reconciler::new(
        db.clone(),
        blob.clone(),
        Some(app.state.events.publisher().unwrap()),
    );
    let report = job.run_once(&eager()).await.unwrap();
    let took = t.elapsed();
    eprintln!(
        "{}",
        report
            .human()
            .lines()
            .take(16)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let injected_in = t_inject.elapsed() - took;
    let expect = [
        ("orphan_object", 1000),
        ("missing_chunk", missing.len() as u64),
        ("corrupt_chunk", corrupt.len() as u64),
        (
            "dead_chunk",
            (EDITED.len() * EDITS_PER_ROUND + PER_ROUND) as u64,
        ),
        ("pack_liveness", falsified.len() as u64),
        ("missing_pack_row", 1),
        ("expired_session", 1000),
        ("stale_pack_row", 1000),
        ("stray_multipart", 1000),
        ("unpublished_outbox", 1000),
        ("unseen_journal", 1200),
    ];
    for (kind, n) in expect {
        assert_eq!(found(&report, kind), n, "{kind} found\n{}", report.human());
        assert_eq!(
            repaired(&report, kind),
            n,
            "{kind} repaired\n{}",
            report.human()
        );
    }
    assert!(missing.len() >= 1000 && corrupt.len() >= 1000);
    let injected: u64 = expect.iter().map(|(_, n)| n).sum();
    assert_eq!(report.total_found(), injected);
    assert_eq!(report.unrepaired(), 0);
    assert_eq!(
        work(&report, "packs_compacted"),
        EDITED.len() as u64,
        "{}",
        report.human()
    );
    assert_eq!(work(&report, "packs_retired"), 1, "{}", report.human());
    assert!(work(&report, "bytes_reclaimed") > 0);
    assert!(work(&report, "repair_requests") >= (MISSING.len() + CORRUPT.len()) as u64 * 100);
    assert!(
        work(&report, "journal_entries_compacted") >= 1000,
        "{}",
        report.human()
    );
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM journal WHERE namespace_id = $1",
            nsi
        )
        .await
            < journal_before
    );

    // Nothing a chunk row names was deleted: every object deleted was an
    // injected orphan or a pack retired with no row left in it, and every
    // chunk not marked corrupt still has its pack object.
    let orphan_set: HashSet<&str> = orphans.iter().map(String::as_str).collect();
    for c in report.changes.iter().filter(|c| c.action == "deleted") {
        if orphan_set.contains(c.target.as_str()) {
            continue;
        }
        assert_eq!(c.kind, "retired_objects_deleted", "{c:?}");
        let pack = c.target.trim_start_matches("packs/");
        assert_eq!(
            scalar(
                &db,
                &format!("SELECT COUNT(*) FROM chunks WHERE pack_id = '{pack}'")
            )
            .await,
            0,
            "{c:?}"
        );
    }
    let live_packs: Vec<String> =
        sqlx::query("SELECT DISTINCT pack_id FROM chunks WHERE state <> 2")
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    for p in &live_packs {
        assert!(
            blob.size(&pack_key(p)).await.unwrap().is_some(),
            "pack {p} lost"
        );
    }
    assert_eq!(uploads_in_progress(&blob).await, 0);
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM packs WHERE state = 'uploading'").await,
        0
    );
    let row: String = sqlx::query("SELECT state FROM packs WHERE id = $1")
        .bind(&rowless)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(row, "complete");

    // The server back: the verifier applies what it never saw, a device
    // asked for its bytes sends them, an old cursor is told to start over.
    app.resume().await;
    let t_after = Instant::now();
    settle(&db).await;
    let client = driftless_daemon::http::ApiClient::new(&app.url, &token);
    let reset = client
        .changes(NamespaceId(ns), early_cursor.as_deref(), 10)
        .await
        .unwrap_err();
    assert!(reset.to_string().contains("cursor_reset"), "{reset}");
    let repaired_pass = laptop.pass().await;
    assert_eq!(
        repaired_pass.uploaded as usize,
        missing.len() + corrupt.len(),
        "{repaired_pass:?}"
    );
    settle(&db).await;
    let desk = Device::new(&app.url, &token, ns, "desk");
    desk.pass().await;
    assert_eq!(
        desk.tree(),
        before,
        "a fresh device downloads every file, hash-checked"
    );
    let after = t_after.elapsed();

    // A second run finds nothing left.
    let mut calm = eager();
    calm.stale = Duration::from_secs(30);
    let second = job.run_once(&calm).await.unwrap();
    assert_eq!(second.total_found(), 0, "{}", second.human());
    eprintln!(
        "{injected} drifts over {chunk_rows} chunks: populated in {:.1} s, injected in {:.1} s, \
         one reconcile run {:.2} s, devices repaired and downloaded in {:.1} s, whole test {:.1} s",
        populated.as_secs_f64(),
        injected_in.as_secs_f64(),
        took.as_secs_f64(),
        after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
