//! `driftless-server reconcile`, the command cron runs: its JSON and text
//! reports, exit status, dry run, Prometheus textfile, `--every`, the lock
//! two overlapping runs share, and the embedded default with no services.

use std::process::Stdio;
use std::time::Duration;

use driftless_store::Lease;
use driftless_tests::{TestDb, TestS3};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_driftless-server")
}

fn env_of(db: &TestDb, s3: &TestS3) -> Vec<(&'static str, String)> {
    let c = &s3.config;
    vec![
        ("DRIFTLESS_DATABASE_URL", db.url.clone()),
        ("DRIFTLESS_S3_ENDPOINT", c.endpoint.clone()),
        ("DRIFTLESS_S3_BUCKET", c.bucket.clone()),
        ("DRIFTLESS_S3_REGION", c.region.clone()),
        ("DRIFTLESS_S3_ACCESS_KEY", c.access_key.clone()),
        ("DRIFTLESS_S3_SECRET_KEY", c.secret_key.clone()),
        (
            "DRIFTLESS_CURSOR_SECRET",
            "a test cursor secret of some length".into(),
        ),
        ("RUST_LOG", "warn".into()),
    ]
}

/// Runs the command; returns (exit code, stdout).
async fn reconcile(env: &[(&str, String)], data: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(bin())
        .arg("reconcile")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("DRIFTLESS_DATA_DIR", data)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn drift(report: &Value, kind: &str) -> (u64, u64) {
    let t = &report["drift"][kind];
    (
        t["found"].as_u64().unwrap(),
        t["repaired"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn the_command_reports_repairs_and_exits_as_cron_expects() {
    let db = TestDb::postgres().await;
    let s3 = TestS3::start(Duration::from_secs(300)).await;
    let env = env_of(&db, &s3);
    let data = tempfile::tempdir().unwrap();

    // A clean deployment: nothing found, exit 0.
    let (code, out) = reconcile(&env, data.path(), &["--json"]).await;
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["dry_run"], false);
    assert!(report["drift"].as_object().unwrap().len() >= 10, "{report}");

    // An object no pack row names: a dry run finds it, changes nothing and
    // exits 1 (drift left); the real run deletes it and exits 0.
    s3.store
        .put("packs/left-behind", bytes::Bytes::from_static(b"junk"))
        .await
        .unwrap();
    let (code, out) = reconcile(
        &env,
        data.path(),
        &["--json", "--dry-run", "--orphan-grace", "0"],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(drift(&report, "orphan_object"), (1, 0));
    assert_eq!(report["changes"][0]["action"], "delete");
    assert!(s3.store.size("packs/left-behind").await.unwrap().is_some());
    // Within the default grace (a day and more) it is left alone.
    let (code, out) = reconcile(&env, data.path(), &["--json"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(s3.store.size("packs/left-behind").await.unwrap().is_some());

    let prom = data.path().join("reconcile.prom");
    let (code, out) = reconcile(
        &env,
        data.path(),
        &[
            "--orphan-grace",
            "0",
            "--prometheus",
            prom.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 drift found, 1 repaired, 0 left"), "{out}");
    assert!(
        out.contains("orphan_object") && out.contains("packs/left-behind"),
        "{out}"
    );
    assert!(s3.store.size("packs/left-behind").await.unwrap().is_none());
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("driftless_reconcile_drift_found{kind=\"orphan_object\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("driftless_reconcile_drift_repaired{kind=\"orphan_object\"} 1"));
    assert!(metrics.contains("# TYPE driftless_reconcile_duration_seconds gauge"));

    // Every run is recorded for whoever reads the figures back.
    let runs = driftless_consumer_runs(&db).await;
    assert_eq!(runs, 4);

    // Overlap: while another run holds the lock, a run skips and exits 0.
    let mut held = Lease::new(db.db.clone(), "driftless-reconcile");
    assert!(held.acquire().await.unwrap().is_some());
    let (code, out) = reconcile(&env, data.path(), &["--json"]).await;
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        report["skipped"], "another reconcile run holds the lock",
        "{report}"
    );
    held.release().await;

    // Bad arguments: exit 2, nothing run.
    let (code, _) = reconcile(&env, data.path(), &["--only", "everything"]).await;
    assert_eq!(code, 2);
    let (code, _) = reconcile(&env, data.path(), &["--every", "soon"]).await;
    assert_eq!(code, 2);
    assert_eq!(driftless_consumer_runs(&db).await, 4);

    // `--every` runs again and again (one JSON line per run).
    let mut child = tokio::process::Command::new(bin())
        .args([
            "reconcile",
            "--json",
            "--every",
            "200ms",
            "--only",
            "uploads,journal",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("DRIFTLESS_DATA_DIR", data.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let report: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            report["timings_ms"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["journal", "uploads"]
        );
    }
    child.kill().await.unwrap();
}

async fn driftless_consumer_runs(db: &TestDb) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) FROM reconcile_runs")
        .fetch_one(db.db.pool())
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_embedded_default_reconciles_with_no_services() {
    // No database URL, no S3, no Kafka: SQLite and the blob folder under
    // the data directory, as `driftless-server` with no configuration.
    let data = tempfile::tempdir().unwrap();
    let env = vec![("RUST_LOG", "warn".to_owned())];
    let (code, out) = reconcile(&env, data.path(), &["--json", "--scrub-fraction", "1"]).await;
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["drift"]["orphan_object"]["found"], 0);
    assert!(data.path().join("meta.db").exists());
}
