//! The durable-consumer frame on the in-process bus (the embedded default)
//! and both databases: it catches up from the outbox at start and after a
//! gap, and applies each entry once, in order, whatever the bus delivers.

use std::time::{Duration, Instant};

use driftless_consumer::durable::{Durable, Handler, Source};
use driftless_consumer::worker::spawn;
use driftless_protocol::{ChunkingSpec, ContentHash, JournalEvent, NamespaceId, Outcome, SyncPath};
use driftless_store::meta::commit::{Commit, FileChange, commit};
use driftless_store::meta::manifest::Manifest;
use driftless_store::meta::{accounts, journal, marks};
use driftless_store::{Db, Event, InProcessBus};
use driftless_tests::TestDb;
use sqlx::{Any, Row, Transaction};
use tokio_util::sync::CancellationToken;

/// Records each entry it applies in a table whose key refuses a second copy.
struct Record;

impl Handler for Record {
    type Effect = Vec<(u64, u64)>;

    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn prepare(&mut self, events: &[JournalEvent]) -> Result<Self::Effect, String> {
        Ok(events.iter().map(|e| (e.namespace_id.0, e.seq.0)).collect())
    }

    async fn write(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        effect: Self::Effect,
    ) -> Result<(), sqlx::Error> {
        for (ns, seq) in effect {
            sqlx::query("INSERT INTO test_effects (namespace_id, seq, at) VALUES ($1, $2, (SELECT COUNT(*) FROM test_effects))")
                .bind(ns as i64)
                .bind(seq as i64)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

async fn put(db: &Db, ns: NamespaceId, path: &str) {
    let c = Commit {
        namespace: ns,
        op_id: format!("op-{}", path.replace('/', "-")).parse().unwrap(),
        digest: *blake3::hash(path.as_bytes()).as_bytes(),
        device: None,
        reuse: driftless_store::meta::chunks::Usable::Stored,
        change: FileChange::Put {
            path: SyncPath::parse(path).unwrap(),
            base_rev: None,
            mtime_ms: 1,
            chunking: ChunkingSpec {
                min: 262_144,
                avg: 1_048_576,
                max: 4_194_304,
            },
            manifest: Manifest::from_specs(&[]),
            content_hash: ContentHash::from_bytes([0; 32]),
        },
    };
    assert!(matches!(
        commit(db, &c).await.unwrap(),
        Outcome::Committed { .. }
    ));
}

/// The outbox rows as events, as the relay would publish them.
async fn events(db: &Db) -> Vec<Event> {
    let mut conn = db.pool().acquire().await.unwrap();
    journal::unsent(&mut conn, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| Event {
            namespace: r.namespace,
            seq: r.seq,
            payload: r.payload,
        })
        .collect()
}

/// (namespace, seq) in the order they were applied.
async fn applied(db: &Db) -> Vec<(u64, u64)> {
    sqlx::query("SELECT namespace_id, seq FROM test_effects ORDER BY at")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0) as u64, r.get::<i64, _>(1) as u64))
        .collect()
}

async fn until_applied(db: &Db, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied(db).await.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} applied",
            applied(db).await.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn catches_up_and_applies_each_entry_once_in_order_on_postgres() {
    catches_up_and_applies_once(TestDb::postgres().await).await;
}

#[tokio::test]
async fn catches_up_and_applies_each_entry_once_in_order_on_sqlite() {
    catches_up_and_applies_once(TestDb::sqlite().await).await;
}

async fn catches_up_and_applies_once(t: TestDb) {
    let db = &t.db;
    sqlx::query(
        "CREATE TABLE test_effects (namespace_id BIGINT NOT NULL, seq BIGINT NOT NULL, \
         at BIGINT NOT NULL, PRIMARY KEY (namespace_id, seq))",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let (_, a) = accounts::create_user(db, "ann", None)
        .await
        .unwrap()
        .unwrap();
    let (_, b) = accounts::create_user(db, "bob", None)
        .await
        .unwrap()
        .unwrap();
    // Committed before the consumer exists: the bus never carried them.
    for i in 0..30 {
        put(db, if i % 3 == 0 { b } else { a }, &format!("before/{i}")).await;
    }
    // A bus so small that a burst overflows it (the consumer sees a gap).
    let bus = InProcessBus::new(4);
    let cancel = CancellationToken::new();
    let worker = spawn(
        Durable::new(db.clone(), Record, Source::InProcess(bus.subscribe())),
        Duration::ZERO,
        Default::default(),
        cancel.clone(),
    );
    until_applied(db, 30).await;

    // The stream replays everything (a relay that restarted), then delivers
    // new entries twice, out of order and with a hole, and overflows.
    for i in 0..20 {
        put(db, a, &format!("after/{i}")).await;
    }
    let all = events(db).await;
    bus.publish(&all);
    let fresh: Vec<Event> = all.iter().filter(|e| e.seq.0 > 20).cloned().collect();
    let mut shuffled = fresh.clone();
    shuffled.reverse();
    bus.publish(&shuffled);
    bus.publish(&fresh[5..]);
    until_applied(db, 50).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = applied(db).await;
    assert_eq!(got.len(), 50, "each entry once");
    for ns in [a, b] {
        let seqs: Vec<u64> = got
            .iter()
            .filter(|(n, _)| *n == ns.0)
            .map(|(_, s)| *s)
            .collect();
        let head = journal::bounds(db, ns).await.unwrap().unwrap().head.0;
        assert_eq!(
            seqs,
            (1..=head).collect::<Vec<_>>(),
            "in seq order, none missing"
        );
    }
    let lag = marks::consumer_lag(db, "recorder").await.unwrap();
    assert_eq!((lag.behind, lag.entries_behind), (0, 0));
    cancel.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_notify_from_another_process_wakes_the_relay() {
    let t = TestDb::postgres().await;
    let other = Db::connect(&t.url).await.unwrap();
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let cancel = CancellationToken::new();
    let listener = driftless_consumer::relay::listen(t.db.clone(), wake.clone(), cancel.clone());
    // LISTEN is asynchronous to set up: announce until it is heard.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        other
            .notify(driftless_consumer::relay::CHANNEL)
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(200), wake.notified())
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "NOTIFY never woke the relay");
    }
    // Once listening, every announcement wakes it at once.
    for _ in 0..5 {
        let t0 = Instant::now();
        other
            .notify(driftless_consumer::relay::CHANNEL)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .expect("woken within a second");
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
    }
    cancel.cancel();
    listener.await.unwrap();
}
