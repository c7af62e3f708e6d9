//! What only an S3 store that checks the checksum signed into each part's
//! URL shows, with the daemon (Garage; s3s-fs takes any bytes).

use std::time::Duration;

use driftless_tests::{AppOptions, GarageCluster, TestApp, TestDb, random_bytes};

use crate::device::Device;

#[tokio::test]
async fn a_part_damaged_on_the_way_is_refused_by_s3_at_put_and_the_daemon_sends_it_again() {
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            garage: Some(GarageCluster::shared().await),
            // Presigned URLs and the server's own calls go through a proxy
            // that can damage bytes on the way.
            s3_proxy: Some(Duration::from_secs(30)),
            ..AppOptions::default()
        },
    )
    .await;
    let (token, ns) = app.user("ines", None).await;
    let desk = app.device("ines", "desk").await;
    let a = Device::new(&app.url, &token, ns, "laptop");
    let b = Device::new(&app.url, &desk, ns, "desk");
    // Incompressible and several parts long.
    let video = random_bytes(40 << 20, 11);
    a.write("video.bin", &video);

    let proxy = app.s3_proxy.as_ref().unwrap();
    proxy.watch_answers_for("InvalidDigest");
    // One bit, well inside the first part's body.
    proxy.flip_bit_after(1 << 20);
    let r = a.pass().await;
    assert!(proxy.flipped(), "the bit was never flipped");
    assert!(
        proxy.needle_seen() >= 1,
        "S3 took a part whose bytes do not match its signed CRC32C"
    );
    assert_eq!(r.uploaded, 1, "{r:?}");

    // What was committed is what was written, on the other device too.
    let r = b.pass().await;
    assert_eq!(r.downloaded, 1, "{r:?}");
    assert!(
        b.read("video.bin").unwrap() == video,
        "the desk holds other bytes than the laptop wrote"
    );
    assert!(!a.pass().await.changed());
}

/// Writes `len` incompressible bytes to `path` (64 MiB at a time) and
/// returns their BLAKE3 hash.
fn write_big(path: &std::path::Path, len: usize, seed: u64) -> blake3::Hash {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    let mut h = blake3::Hasher::new();
    let block = 64 << 20;
    for (i, at) in (0..len).step_by(block).enumerate() {
        let b = random_bytes(block.min(len - at), seed + i as u64);
        h.update(&b);
        f.write_all(&b).unwrap();
    }
    f.sync_all().unwrap();
    h.finalize()
}

fn hash_file(path: &std::path::Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).unwrap()).unwrap();
    h.finalize()
}

/// Parts registered so far (the upload's progress as the server sees it).
async fn parts(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM upload_parts")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
}

/// Waits until `n` more parts than `from` are registered.
async fn until_parts(app: &TestApp, from: i64, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while parts(app).await < from + n {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never reached {n} parts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The story for users who outgrow one machine's disk: three Garage nodes,
/// every object on each (replication 3, writes need two). A node killed
/// with SIGKILL in the middle of a 1 GiB upload, and then the very node
/// the server and the daemon talk to in the middle of another: the first
/// upload completes, the second resumes, nothing committed is lost, both
/// download with their hashes, and reconcile finds no drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_nodes_killed_mid_upload_lose_nothing() {
    let cluster = std::sync::Arc::new(GarageCluster::start(3).await);
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            garage: Some(cluster.clone()),
            ..AppOptions::default()
        },
    )
    .await;
    let (token, ns) = app.user("olu", None).await;
    let desk = app.device("olu", "desk").await;
    let a = Device::new(&app.url, &token, ns, "laptop");
    let b = Device::new(&app.url, &desk, ns, "desk");
    a.write("notes/small.txt", b"committed before anything breaks");
    a.pass().await;
    let big = write_big(&a.path().join("media/big.bin"), 1 << 30, 100);

    // A storage node dies three parts into the upload and comes back
    // eight parts later; the two left hold the quorum.
    let before = parts(&app).await;
    let chaos = async {
        until_parts(&app, before, 3).await;
        cluster.kill9(2);
        until_parts(&app, before, 11).await;
        cluster.restart(2).await;
    };
    let (r, ()) = tokio::join!(a.syncer.pass(), chaos);
    let r = r.unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.uploaded, 1, "{r:?}");

    // The node everyone talks to dies two parts into the next upload: the
    // pass fails or leaves the file for later; once it is back, the upload
    // resumes from what storage holds.
    let second = write_big(&a.path().join("media/second.bin"), 256 << 20, 200);
    let before = parts(&app).await;
    let chaos = async {
        until_parts(&app, before, 2).await;
        cluster.kill9(0);
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.restart(0).await;
    };
    let (first, ()) = tokio::join!(a.syncer.pass(), chaos);
    eprintln!(
        "the pass during which the endpoint node died: {:?}",
        first
            .as_ref()
            .map(|r| (r.uploaded, r.bytes_up, &r.problems))
    );
    // "Back" means back in the cluster: a restarted node answers 503 until
    // it has its peers again (seconds, more on a busy machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !cluster.healthy_via(0) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut sent = first.as_ref().map_or(0, |r| r.bytes_up);
    let mut done = first.as_ref().is_ok_and(|r| r.uploaded == 1);
    for _ in 0..10 {
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let res = a.syncer.pass().await;
        eprintln!(
            "a pass after the node came back: {:?}",
            res.as_ref().map(|r| (r.uploaded, r.bytes_up, &r.problems))
        );
        if let Ok(r) = res {
            sent += r.bytes_up;
            done = r.uploaded == 1 && r.problems.is_empty();
        }
    }
    assert!(done, "the second upload never completed: {first:?}");
    eprintln!("the second upload sent {sent} bytes for 256 MiB in all");
    assert!(
        sent < (256 << 20) * 3 / 2,
        "the second upload started over: {sent} bytes sent for 256 MiB"
    );

    // Everything committed is there, with its bytes.
    let r = b.pass().await;
    assert_eq!(r.downloaded, 3, "{r:?}");
    assert_eq!(hash_file(&b.path().join("media/big.bin")), big);
    assert_eq!(hash_file(&b.path().join("media/second.bin")), second);
    assert_eq!(
        b.read("notes/small.txt").unwrap(),
        b"committed before anything breaks"
    );

    // Database, storage and stream agree.
    let mut job = driftless_consumer::reconcile::Reconciler::new(
        app.state.db.clone(),
        app.s3.store.clone(),
        None,
    );
    let report = job
        .run_once(&driftless_consumer::reconcile::Options::for_deployment(
            Duration::from_secs(3600),
            Duration::from_secs(300),
        ))
        .await
        .unwrap();
    assert_eq!(report.total_found(), 0, "{}", report.human());
}
