//! Reconcile beside live traffic: two devices upload, edit, delete, move
//! and copy back old content while the job runs again and again with no
//! grace at all on chunks and objects, and a history prune keeps making
//! chunks dead under it. Nothing may be lost: both devices and a fresh one
//! end with the same files, every download hash-checked, and no run may
//! take live data for drift (missing, corrupt, orphaned, stray).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use driftless_consumer::reconcile::{Reconciler, Report};
use driftless_tests::{TestApp, TestBroker};

use crate::device::{Device, data};
use crate::{eager, found};

/// Kinds that live traffic must never produce.
const NEVER_LIVE: [&str; 7] = [
    "missing_chunk",
    "corrupt_chunk",
    "orphan_object",
    "stray_multipart",
    "missing_pack_row",
    "expired_session",
    "stale_pack_row",
];

fn digests(d: &Device) -> BTreeMap<String, String> {
    d.tree()
        .into_iter()
        .map(|(p, b)| (p, blake3::hash(&b).to_hex()[..16].to_owned()))
        .collect()
}

fn same(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, who: &str) {
    let diff: Vec<String> = want
        .iter()
        .filter(|(p, h)| got.get(*p) != Some(*h))
        .map(|(p, h)| format!("{p}: {h} vs {:?}", got.get(p)))
        .chain(
            got.keys()
                .filter(|p| !want.contains_key(*p))
                .map(|p| format!("{p}: only on {who}")),
        )
        .collect();
    assert!(diff.is_empty(), "{who} differs from the laptop: {diff:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_runs_beside_live_uploads_and_commits_and_loses_nothing() {
    let broker = TestBroker::start().await;
    let app = TestApp::spawn_kafka(&broker).await;
    let (token, ns) = app.user("carol", None).await;
    let desk_token = app.device("carol", "desk").await;
    let laptop = Device::new(&app.url, &token, ns, "laptop");
    let desk = Device::new(&app.url, &desk_token, ns, "desk");
    let db = app.state.db.clone();

    let mut opts = eager();
    // Clients hold presigned URLs for minutes; the relay is live.
    opts.presign_ttl = Duration::from_secs(300);
    opts.stale = Duration::from_secs(10);
    let stop = Arc::new(AtomicBool::new(false));
    let job = {
        let (db, blob, stop) = (db.clone(), app.s3.store.clone(), stop.clone());
        let publisher = app.state.events.publisher().unwrap();
        tokio::spawn(async move {
            let mut job = Reconciler::new(db, blob, Some(publisher));
            let mut reports: Vec<Report> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                reports.push(job.run_once(&opts).await.unwrap());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            reports
        })
    };

    let mut seed = 0u64;
    let mut next = || {
        seed += 1;
        seed
    };
    let mut old_contents: Vec<Vec<u8>> = Vec::new();
    for round in 0..12usize {
        let (writer, other) = if round % 2 == 0 {
            (&laptop, &desk)
        } else {
            (&desk, &laptop)
        };
        for i in 0..30 {
            let len = if i % 10 == 0 { 1 << 20 } else { 2000 + i * 97 };
            writer.write(&format!("r{round}/new{i}.bin"), &data(len, next()));
        }
        if round > 0 {
            let prev = round - 1;
            for i in 0..20 {
                let p = format!("r{prev}/new{i}.bin");
                if let Some(old) = writer.read(&p) {
                    old_contents.push(old);
                }
                writer.write(&p, &data(3000 + i, next()));
            }
            writer.remove(&format!("r{prev}/new29.bin"));
            writer.rename(&format!("r{prev}/new28.bin"), &format!("moved/r{prev}.bin"));
        }
        // Content whose only versions may just have been pruned comes back.
        if let Some(old) = old_contents.get(round.saturating_sub(2) * 10) {
            writer.write(&format!("copies/r{round}.bin"), old);
        }
        writer.pass().await;
        other.pass().await;
        // A retention prune the job was not told about: non-head versions go.
        sqlx::query(
            "DELETE FROM versions WHERE namespace_id = $1 AND rev < (SELECT f.rev FROM files f \
             WHERE f.namespace_id = versions.namespace_id AND f.path = versions.path)",
        )
        .bind(ns as i64)
        .execute(db.pool())
        .await
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let reports = job.await.unwrap();

    laptop.pass().await;
    desk.pass().await;
    laptop.pass().await;
    let fresh = Device::new(&app.url, &token, ns, "fresh");
    fresh.pass().await;
    let tree = digests(&laptop);
    assert!(tree.len() > 300);
    let (d, f) = (digests(&desk), digests(&fresh));
    if d != tree || f != tree {
        use sqlx::Row;
        for r in sqlx::query(
            "SELECT j.seq, j.path, j.kind, j.moved_from, j.device_id, \
             (SELECT compacted_seq FROM namespaces WHERE id = $1) FROM journal j \
             WHERE j.namespace_id = $1 AND (j.path LIKE 'copies/%' OR j.path LIKE 'moved/%' \
             OR j.path LIKE '%new28%' OR j.path LIKE '%new29%') ORDER BY seq",
        )
        .bind(ns as i64)
        .fetch_all(db.pool())
        .await
        .unwrap()
        {
            eprintln!(
                "journal {} {} kind {} from {:?} device {:?} (compacted to {})",
                r.get::<i64, _>(0),
                r.get::<String, _>(1),
                r.get::<i64, _>(2),
                r.get::<Option<String>, _>(3),
                r.get::<Option<i64>, _>(4),
                r.get::<i64, _>(5)
            );
        }
        for r in sqlx::query(
            "SELECT path, rev, deleted FROM files WHERE namespace_id = $1 ORDER BY path",
        )
        .bind(ns as i64)
        .fetch_all(db.pool())
        .await
        .unwrap()
        {
            let p: String = r.get(0);
            if p.starts_with("copies/") || p.starts_with("moved/") || p.contains("new28") {
                eprintln!(
                    "file {p} rev {} deleted {}",
                    r.get::<i64, _>(1),
                    r.get::<i64, _>(2)
                );
            }
        }
    }
    same(&digests(&desk), &tree, "desk");
    same(&digests(&fresh), &tree, "fresh");

    assert!(reports.len() >= 3, "only {} runs", reports.len());
    for kind in NEVER_LIVE {
        let n: u64 = reports.iter().map(|r| found(r, kind)).sum();
        assert_eq!(n, 0, "{kind} reported during live traffic");
    }
    let dead: u64 = reports.iter().map(|r| found(r, "dead_chunk")).sum();
    let compacted: u64 = reports
        .iter()
        .map(|r| crate::work(r, "packs_compacted") + crate::work(r, "packs_retired"))
        .sum();
    assert!(dead > 0, "the prune made chunks dead while traffic ran");
    assert!(
        compacted > 0,
        "mostly dead packs were compacted while traffic ran"
    );
    eprintln!(
        "{} runs beside 12 rounds of traffic: {dead} dead chunks removed, {compacted} packs \
         compacted or retired, nothing lost",
        reports.len()
    );
}
