//! A reconcile pass over generated metadata: 1,000,000 chunks of 100,000
//! files (10 chunks each) in 10 folders of 100,000 chunks, 1,000 packs of
//! 1,000 chunks, with their pack objects in a SigV4 S3 server, on
//! PostgreSQL. Also at 100,000 and 300,000 chunks, to show how time and
//! memory grow.
//!
//! Baseline, measured in the same run: reading the same metadata once
//! (every version's manifest and every chunk row, paged as the job pages
//! them) with nothing computed: the floor any pass over it pays. The
//! figure is the ratio of the pass to that floor.
//!
//! The pass runs every check but the scrub (whose cost is the bytes it
//! reads: `scrub_fraction` of the bucket per run), on a clean deployment
//! (so it measures looking, not repairing).
//!
//!   scripts/bench-reconcile.sh
//!   DRIFTLESS_BENCH_CHUNKS=300000 scripts/bench-reconcile.sh

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use driftless_consumer::reconcile::{Options, Reconciler};
use driftless_tests::{TestDb, TestS3};
use sqlx::Row;

const CHUNKS_PER_FILE: u64 = 10;
const CHUNKS_PER_PACK: u64 = 1000;
/// Chunks per folder (`DRIFTLESS_BENCH_FOLDER_CHUNKS`): the job holds one
/// folder's referenced hashes at a time, so this sets its memory.
fn chunks_per_folder() -> u64 {
    std::env::var("DRIFTLESS_BENCH_FOLDER_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}
/// Stored bytes per chunk in the generated packs (the pack objects are
/// real, so the objects check compares real sizes).
const STORED: u64 = 64;

fn hash(i: u64) -> [u8; 32] {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn generate(db: &TestDb, s3: &TestS3, chunks: u64) {
    let pool = db.db.pool();
    let folders = chunks.div_ceil(chunks_per_folder());
    for f in 0..folders {
        sqlx::query("INSERT INTO users (name, created_at_ms) VALUES ($1, 0)")
            .bind(format!("user{f}"))
            .execute(pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO namespaces (name, is_home, owner_id, head_seq, created_at_ms) \
             VALUES ('home', 1, (SELECT id FROM users WHERE name = $1), 0, 0)",
        )
        .bind(format!("user{f}"))
        .execute(pool)
        .await
        .unwrap();
    }
    let ns_of = |chunk: u64| (chunk / chunks_per_folder() + 1) as i64;
    // Packs and their objects.
    for p in 0..chunks / CHUNKS_PER_PACK {
        let id = format!("bench-pack-{p:06}");
        let total = (CHUNKS_PER_PACK * STORED) as i64;
        sqlx::query(
            "INSERT INTO packs (namespace_id, id, upload_id, state, total_bytes, live_bytes, \
             created_at_ms) VALUES ($1, $2, 'bench', 'complete', $3, $3, 0)",
        )
        .bind(ns_of(p * CHUNKS_PER_PACK))
        .bind(&id)
        .bind(total)
        .execute(pool)
        .await
        .unwrap();
        s3.store
            .put(
                &driftless_store::pack_key(&id),
                vec![0u8; total as usize].into(),
            )
            .await
            .unwrap();
    }
    // Chunk rows, 1,000 per statement.
    for start in (0..chunks).step_by(1000) {
        let n = 1000.min(chunks - start);
        let mut sql = String::from(
            "INSERT INTO chunks (namespace_id, hash, raw_len, pack_id, pack_offset, stored_len, \
             codec, state, created_at_ms) VALUES ",
        );
        for k in 0..n {
            let b = (k * 4) as usize;
            if k > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, 64, ${}, ${}, 64, 0, 1, 0)",
                b + 1,
                b + 2,
                b + 3,
                b + 4
            ));
        }
        let mut q = sqlx::query(&sql);
        for c in start..start + n {
            q = q
                .bind(ns_of(c))
                .bind(hash(c).to_vec())
                .bind(format!("bench-pack-{:06}", c / CHUNKS_PER_PACK))
                .bind(((c % CHUNKS_PER_PACK) * STORED) as i64);
        }
        q.execute(pool).await.unwrap();
    }
    // Files: one version each, manifest of 10 chunks, and its head row.
    for start in (0..chunks / CHUNKS_PER_FILE).step_by(500) {
        let n = 500.min(chunks / CHUNKS_PER_FILE - start);
        let mut sql = String::from(
            "INSERT INTO versions (namespace_id, path, rev, deleted, size, mtime_ms, chunk_min, \
             chunk_avg, chunk_max, manifest, committed_at_ms) VALUES ",
        );
        let mut files = String::from(
            "INSERT INTO files (namespace_id, path, collision_key, rev, deleted) VALUES ",
        );
        for k in 0..n {
            let b = (k * 3) as usize;
            if k > 0 {
                sql.push_str(", ");
                files.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, 1, 0, 640, 0, 64, 64, 64, ${}, 0)",
                b + 1,
                b + 2,
                b + 3
            ));
            let b = (k * 2) as usize;
            files.push_str(&format!("(${}, ${}, ${}, 1, 0)", b + 1, b + 2, b + 2));
        }
        let mut q = sqlx::query(&sql);
        let mut fq = sqlx::query(&files);
        for file in start..start + n {
            let first = file * CHUNKS_PER_FILE;
            let mut manifest = Vec::with_capacity(36 * CHUNKS_PER_FILE as usize);
            for c in first..first + CHUNKS_PER_FILE {
                manifest.extend_from_slice(&hash(c));
                manifest.extend_from_slice(&64u32.to_le_bytes());
            }
            let path = format!("dir{}/file{file:07}", file % 100);
            q = q.bind(ns_of(first)).bind(path.clone()).bind(manifest);
            fq = fq.bind(ns_of(first)).bind(path);
        }
        q.execute(pool).await.unwrap();
        fq.execute(pool).await.unwrap();
    }
    sqlx::query("ANALYZE").execute(pool).await.unwrap();
}

/// The floor: every manifest and every chunk row read once, paged.
async fn scan(db: &TestDb) -> (u64, Duration) {
    let pool = db.db.pool();
    let t = Instant::now();
    let mut rows = 0u64;
    let namespaces: Vec<i64> = sqlx::query("SELECT id FROM namespaces ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for ns in namespaces {
        let mut after = (String::new(), -1i64);
        loop {
            let page = sqlx::query(
                "SELECT path, rev, manifest FROM versions WHERE namespace_id = $1 AND deleted = 0 \
                 AND (path, rev) > ($2, $3) ORDER BY path, rev LIMIT 2000",
            )
            .bind(ns)
            .bind(&after.0)
            .bind(after.1)
            .fetch_all(pool)
            .await
            .unwrap();
            rows += page.len() as u64;
            match page.last() {
                Some(l) if page.len() == 2000 => after = (l.get(0), l.get(1)),
                _ => break,
            }
        }
        let mut after = Vec::<u8>::new();
        loop {
            let page = sqlx::query(
                "SELECT pack_id, hash, stored_len, created_at_ms FROM chunks WHERE namespace_id = $1 \
                 AND hash > $2 ORDER BY hash LIMIT 2000",
            )
            .bind(ns)
            .bind(&after)
            .fetch_all(pool)
            .await
            .unwrap();
            rows += page.len() as u64;
            match page.last() {
                Some(l) if page.len() == 2000 => after = l.get(1),
                _ => break,
            }
        }
    }
    (rows, t.elapsed())
}

#[tokio::main]
async fn main() {
    let sizes: Vec<u64> = match std::env::var("DRIFTLESS_BENCH_CHUNKS") {
        Ok(v) => v.split(',').map(|s| s.trim().parse().unwrap()).collect(),
        Err(_) => vec![100_000, 300_000, 1_000_000],
    };
    println!(
        "| chunks | files | folders | generate | floor scan | reconcile pass | ratio | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for chunks in sizes {
        let db = TestDb::postgres().await;
        let s3 = TestS3::start(Duration::from_secs(300)).await;
        let t = Instant::now();
        generate(&db, &s3, chunks).await;
        let generated = t.elapsed();
        let mut opts =
            Options::for_deployment(Duration::from_secs(86_400), Duration::from_secs(900));
        opts.only = [
            "stream", "uploads", "objects", "liveness", "compact", "journal",
        ]
        .map(String::from)
        .to_vec();
        let mut job = Reconciler::new(db.db.clone(), s3.store.clone(), None);
        // Best of two of each, interleaved (the first also warms the cache).
        let mut floor = Duration::MAX;
        let mut pass = Duration::MAX;
        let mut report = None;
        for _ in 0..2 {
            let (rows, took) = scan(&db).await;
            assert_eq!(rows, chunks + chunks / CHUNKS_PER_FILE);
            floor = floor.min(took);
            let t = Instant::now();
            let r = job.run_once(&opts).await.unwrap();
            pass = pass.min(t.elapsed());
            assert_eq!(r.total_found(), 0, "{}", r.human());
            report = Some(r);
        }
        let report = report.unwrap();
        assert_eq!(report.work.get("chunk_rows_counted"), Some(&chunks));
        println!(
            "| {chunks} | {} | {} | {:.1} s | {:.2} s | {:.2} s | {:.2} | {:.0} MiB |",
            chunks / CHUNKS_PER_FILE,
            chunks.div_ceil(chunks_per_folder()),
            generated.as_secs_f64(),
            floor.as_secs_f64(),
            pass.as_secs_f64(),
            pass.as_secs_f64() / floor.as_secs_f64(),
            peak_rss_mib()
        );
        eprintln!("  checks (ms): {:?}", report.timings_ms);
    }
}
