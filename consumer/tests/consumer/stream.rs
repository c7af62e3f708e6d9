//! The relay and the verifier's consumer group as processes on a real
//! Kafka-protocol broker (tansu), killed at the worst moments: nothing
//! committed is lost, nothing is applied twice.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use driftless_protocol::{
    ChangeKind, ChunkSpec, ChunkingSpec, ContentHash, NamespaceId, Outcome, Seq, SyncPath,
};
use driftless_store::meta::commit::{Commit, FileChange, commit};
use driftless_store::meta::manifest::Manifest;
use driftless_store::meta::{accounts, marks};
use driftless_store::{Db, KafkaConfig, pack_key};
use driftless_tests::{ConsumerProcess, TestBroker, TestDb, TestS3, read_topic};
use rand::Rng;
use sqlx::Row;

use crate::verify::{add, committed_pack};

const CHUNKING: ChunkingSpec = ChunkingSpec {
    min: 262_144,
    avg: 1_048_576,
    max: 4_194_304,
};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_driftless-consumer"))
}

/// Commits a put of `manifest` at `path` straight through the store (no
/// API process, so the consumer under test is the only relay).
async fn put(db: &Db, ns: NamespaceId, path: &str, manifest: &Manifest) -> Seq {
    let c = Commit {
        namespace: ns,
        op_id: format!("op-{}", rand::rng().random::<u64>())
            .parse()
            .unwrap(),
        digest: *blake3::hash(path.as_bytes()).as_bytes(),
        device: None,
        reuse: driftless_store::meta::chunks::Usable::Stored,
        change: FileChange::Put {
            path: SyncPath::parse(path).unwrap(),
            base_rev: None,
            mtime_ms: 1,
            chunking: CHUNKING,
            manifest: manifest.clone(),
            content_hash: ContentHash::from_bytes(*blake3::hash(manifest.as_bytes()).as_bytes()),
        },
    };
    match commit(db, &c).await.unwrap() {
        Outcome::Committed { seq, .. } => seq,
        other => panic!("{path}: {other:?}"),
    }
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(db.pool()).await.unwrap().get(0)
}

/// Every journal entry, as (namespace, seq).
async fn journal(db: &Db) -> BTreeSet<(u64, u64)> {
    sqlx::query("SELECT namespace_id, seq FROM journal")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0) as u64, r.get::<i64, _>(1) as u64))
        .collect()
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn users(db: &Db, n: usize) -> Vec<NamespaceId> {
    let mut out = Vec::new();
    for i in 0..n {
        let (_, ns) = accounts::create_user(db, &format!("user{i}"), None)
            .await
            .unwrap()
            .unwrap();
        out.push(ns);
    }
    out
}

/// What the topic holds: every entry, with how often and in which order
/// each folder's entries first appeared.
struct TopicCheck {
    distinct: BTreeSet<(u64, u64)>,
    duplicates: usize,
    reordered: usize,
}

async fn check_topic(kafka: &KafkaConfig) -> TopicCheck {
    let records = read_topic(kafka).await;
    let mut distinct = BTreeSet::new();
    let mut duplicates = 0;
    let mut reordered = 0;
    let mut high: HashMap<u64, u64> = HashMap::new();
    for (_, _, e) in &records {
        let key = (e.namespace_id.0, e.seq.0);
        if !distinct.insert(key) {
            duplicates += 1;
            continue;
        }
        // A folder's first sightings must come in seq order.
        let h = high.entry(e.namespace_id.0).or_insert(0);
        if e.seq.0 < *h {
            reordered += 1;
        }
        *h = (*h).max(e.seq.0);
    }
    TopicCheck {
        distinct,
        duplicates,
        reordered,
    }
}

#[tokio::test]
async fn a_relay_killed_mid_batch_loses_no_committed_entry() {
    let t = TestDb::postgres().await;
    let db = &t.db;
    let s3 = TestS3::start(Duration::from_secs(300)).await;
    let broker = TestBroker::start().await;
    let kafka = broker.fresh_topic();
    kafka.ensure_topic().await.unwrap();
    let folders = users(db, 6).await;
    let empty = Manifest::from_specs(&[]);

    // 1. Killed between publishing a batch and marking it sent: the batch
    //    is on the topic, the rows are not marked.
    for i in 0..300 {
        put(db, folders[i % 6], &format!("first/{i}.txt"), &empty).await;
    }
    let mut relay = ConsumerProcess::start(
        bin(),
        &t,
        &s3,
        &kafka,
        &[("DRIFTLESS_FAILPOINT", "relay-after-publish")],
    );
    let status = relay
        .exited(Duration::from_secs(60))
        .await
        .expect("the failpoint did not fire");
    assert!(!status.success(), "{status}");
    let unsent = "SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL";
    assert_eq!(count(db, unsent).await, 300, "nothing was marked sent");
    let published = check_topic(&kafka).await.distinct.len();
    assert!(published > 0, "the batch was published before the abort");

    // 2. Writers keep committing while the relay is killed with SIGKILL
    //    at random moments and restarted.
    relay.clear_failpoint();
    relay.restart();
    let writer = {
        let db = db.clone();
        let folders = folders.clone();
        tokio::spawn(async move {
            for i in 0..2400 {
                put(
                    &db,
                    folders[i % 6],
                    &format!("second/{i}.txt"),
                    &Manifest::from_specs(&[]),
                )
                .await;
                if i % 40 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let mut kills = 0;
    while !writer.is_finished() || kills < 10 {
        let pause = rand::rng().random_range(50..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        relay.kill9();
        kills += 1;
        relay.restart();
    }
    writer.await.unwrap();

    // 3. The last relay drains the outbox; the topic holds every entry.
    wait_for(
        "the outbox to drain",
        Duration::from_secs(120),
        async || count(db, unsent).await == 0,
    )
    .await;
    let entries = journal(db).await;
    assert_eq!(entries.len(), 2700);
    let topic = check_topic(&kafka).await;
    let lost: Vec<_> = entries.difference(&topic.distinct).collect();
    assert!(
        lost.is_empty(),
        "{} entries never reached the topic: {lost:?}",
        lost.len()
    );
    assert_eq!(topic.distinct, entries, "nothing else is on the topic");
    assert_eq!(
        topic.reordered, 0,
        "each folder's entries first appear in order"
    );
    assert!(
        topic.duplicates > 0,
        "the aborted batch was published again"
    );
    println!(
        "{} entries, {kills} kills, {} published twice, 0 lost",
        entries.len(),
        topic.duplicates
    );
}

#[tokio::test]
async fn a_consumer_crashed_between_its_effect_and_its_offset_commit_applies_each_entry_once() {
    let t = TestDb::postgres().await;
    let db = &t.db;
    let s3 = TestS3::start(Duration::from_secs(300)).await;
    let broker = TestBroker::start().await;
    let kafka = broker.fresh_topic();
    kafka.ensure_topic().await.unwrap();
    let (user, ns) = accounts::create_user(db, "wren", None)
        .await
        .unwrap()
        .unwrap();
    let device = accounts::create_device(db, user, "laptop", &[1; 32], None)
        .await
        .unwrap();

    // A pack whose second chunk's bytes are not what was hashed.
    let mut pack = Vec::new();
    let good = add(&mut pack, &[7u8; 3000], false);
    let bad = add(&mut pack, &[9u8; 2000], false);
    pack[bad.location.offset as usize + 10] ^= 1;
    s3.store
        .put(&pack_key("p1"), Bytes::from(pack))
        .await
        .unwrap();
    committed_pack(db, ns, device, user.0, "p1", &[good.location, bad.location]).await;
    let spec = |c: &crate::verify::Stored| ChunkSpec {
        hash: c.hash,
        len: c.location.raw_len,
    };
    put(db, ns, "good.bin", &Manifest::from_specs(&[spec(&good)])).await;
    put(db, ns, "bad.bin", &Manifest::from_specs(&[spec(&bad)])).await;
    put(
        db,
        ns,
        "both.bin",
        &Manifest::from_specs(&[spec(&good), spec(&bad)]),
    )
    .await;
    for i in 0..50 {
        put(db, ns, &format!("empty/{i}"), &Manifest::from_specs(&[])).await;
    }
    let repairs = || async {
        sqlx::query(
            "SELECT path, rev FROM journal WHERE namespace_id = $1 AND kind = 3 ORDER BY path",
        )
        .bind(ns.0 as i64)
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect::<Vec<_>>()
    };

    // The verifier applies its first batch, and the process dies before
    // committing the batch's offsets.
    let mut consumer = ConsumerProcess::start(
        bin(),
        &t,
        &s3,
        &kafka,
        &[("DRIFTLESS_FAILPOINT", "verifier-after-effect")],
    );
    let status = consumer
        .exited(Duration::from_secs(60))
        .await
        .expect("the failpoint did not fire");
    assert!(!status.success(), "{status}");
    let after_crash = marks::all(db, "verifier").await.unwrap();
    assert!(
        after_crash.iter().any(|m| m.applied > 0),
        "the effect was durable before the crash"
    );
    let state = |h: driftless_protocol::ChunkHash| async move {
        count_bound(
            db,
            "SELECT state FROM chunks WHERE hash = $1",
            h.as_bytes().to_vec(),
        )
        .await
    };
    assert_eq!(state(good.hash).await, 1, "verified before the crash");
    assert_eq!(state(bad.hash).await, 2, "found corrupt before the crash");
    let reported = repairs().await;
    assert_eq!(
        reported.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["bad.bin", "both.bin"],
        "every live file using the corrupt chunk is reported"
    );

    // Restarted, it is handed the same batch again (its offsets were never
    // committed) and goes on from its marks.
    consumer.clear_failpoint();
    consumer.restart();
    let head = || async {
        count_bound(
            db,
            "SELECT head_seq FROM namespaces WHERE id = $1",
            ns.0 as i64,
        )
        .await as u64
    };
    // A member killed with -9 holds its partitions until its session times
    // out (6 s) and the broker's group rebalance completes.
    let restarted = Instant::now();
    wait_for(
        "the verifier to reach the head",
        Duration::from_secs(120),
        async || {
            let h = head().await;
            marks::all(db, "verifier")
                .await
                .unwrap()
                .iter()
                .any(|m| m.namespace == ns && m.seq == Seq(h))
        },
    )
    .await;
    println!(
        "restarted verifier at the head after {:?}",
        restarted.elapsed()
    );
    let h = head().await;
    let mark = marks::all(db, "verifier")
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.namespace == ns)
        .unwrap();
    assert_eq!(h, 53 + 2, "53 puts and 2 repair entries");
    assert_eq!(
        mark.applied, h,
        "each entry applied exactly once, none lost"
    );
    assert_eq!(repairs().await, reported, "no damage reported twice");
    // The changes feed carries the repair entries with the damaged content's hash.
    let entries = driftless_store::meta::journal::journal_page(db, ns, None, Seq(53), 10)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    // The lag report agrees: nothing left for the verifier, nothing unsent.
    let lag: serde_json::Value =
        serde_json::from_str(&consumer.command(&["lag", "--json"]).await).unwrap();
    assert_eq!(lag["consumers"]["verifier"]["entries_behind"], 0, "{lag}");
    assert!(
        entries
            .iter()
            .all(|e| e.kind == ChangeKind::Repair && e.content_hash.is_some()),
        "{entries:?}"
    );
}

async fn count_bound<T>(db: &Db, sql: &'static str, bind: T) -> i64
where
    T: 'static + Send + sqlx::Encode<'static, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0)
}
