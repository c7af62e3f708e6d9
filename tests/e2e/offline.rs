//! A device offline with 10,000 queued local changes catches up in bulk:
//! new files, edits, deletes and renames go up in batched sessions (not a
//! request per file), and the other device follows them all.

use std::time::Instant;

use driftless_tests::TestApp;

use crate::device::Device;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_offline_changes_catch_up_in_bulk() {
    let app = TestApp::spawn().await;
    let (token_a, ns) = app.user("ada", None).await;
    let token_b = app.device("ada", "desk").await;
    let a = Device::new(&app.url, &token_a, ns, "laptop");
    let mut b = Device::new(&app.url, &token_b, ns, "desk");
    // 1,000 deletions in one pass are what this test is about: not braked.
    b.syncer
        .set_delete_brake(driftless_daemon::sync::DeleteBrake {
            max_files: usize::MAX,
            max_fraction: 1.0,
            min_files: 0,
        });

    // 3,000 files both devices hold.
    for i in 0..3000 {
        a.write(
            &format!("base/{:02}/{i}.txt", i % 50),
            format!("base file {i}\n").as_bytes(),
        );
    }
    let t = Instant::now();
    let r = a.pass().await;
    assert_eq!(r.uploaded, 3000);
    let first_up = t.elapsed();
    let t = Instant::now();
    let r = b.pass().await;
    assert_eq!(r.downloaded, 3000);
    let first_down = t.elapsed();

    // Offline, B queues 10,000 changes: 6,000 new files, 2,000 edits,
    // 1,000 deletes, 1,000 renames.
    for i in 0..6000 {
        b.write(
            &format!("new/{:02}/{i}.md", i % 60),
            format!("new note {i}\n").as_bytes(),
        );
    }
    for i in 0..2000 {
        b.write(
            &format!("base/{:02}/{i}.txt", i % 50),
            format!("edited offline {i}\n").as_bytes(),
        );
    }
    for i in 2000..3000 {
        if i % 2 == 0 {
            b.remove(&format!("base/{:02}/{i}.txt", i % 50));
        } else {
            b.rename(
                &format!("base/{:02}/{i}.txt", i % 50),
                &format!("renamed/{i}.txt"),
            );
        }
    }
    // 500 deletes and 500 renames so far; the other half from the new files.
    for i in 0..500 {
        b.remove(&format!("new/{:02}/{i}.md", i % 60));
    }
    let sessions_before = sessions(&app, ns).await;
    let t = Instant::now();
    let r = b.pass().await;
    let catch_up = t.elapsed();
    let sessions_used = sessions(&app, ns).await - sessions_before;
    assert_eq!(r.uploaded, 5500 + 2000, "{r:?}");
    assert_eq!(r.deleted_there, 500, "{r:?}");
    assert_eq!(r.moved, 500, "renames go as moves: {r:?}");
    assert!(
        sessions_used <= 12,
        "7,500 files went up in {sessions_used} upload sessions"
    );

    let t = Instant::now();
    let r = a.pass().await;
    let follow = t.elapsed();
    assert_eq!(r.downloaded, 7500, "{r:?}");
    assert_eq!(r.deleted_here, 500, "{r:?}");
    assert_eq!(r.moved, 500, "{r:?}");
    assert_eq!(a.tree(), b.tree());
    assert_eq!(a.tree().len(), 3000 - 500 + 5500);
    assert!(!a.pass().await.changed() && !b.pass().await.changed());
    eprintln!(
        "3,000 files: up {first_up:?}, down {first_down:?}; 10,000 offline changes: \
         catch-up {catch_up:?} in {sessions_used} sessions, followed in {follow:?}"
    );
}

async fn sessions(app: &TestApp, ns: u64) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM upload_sessions WHERE namespace_id = $1")
        .bind(ns as i64)
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
}
