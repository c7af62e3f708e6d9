//! Deletes only from evidence: a synced folder that is renamed, replaced,
//! unmounted or partly unreadable, and a server that forgot (restored from
//! a backup, or a new server), never make a device delete a file anywhere.
//! A brake holds back mass deletions until the user confirms them.

use std::path::{Path, PathBuf};

use driftless_daemon::sync::{DeleteBrake, SyncError};
use driftless_tests::TestApp;

use crate::device::{Device, data};

/// Two devices of one user, both holding `files`.
async fn two_in_sync(app: &TestApp, files: &[(&str, &[u8])]) -> (Device, Device, u64) {
    let (token_a, ns) = app.user("ada", None).await;
    let token_b = app.device("ada", "desk").await;
    let a = Device::new(&app.url, &token_a, ns, "laptop");
    let b = Device::new(&app.url, &token_b, ns, "desk");
    for (p, bytes) in files {
        a.write(p, bytes);
    }
    a.pass().await;
    b.pass().await;
    assert_eq!(a.tree(), b.tree());
    (a, b, ns)
}

async fn server_paths(app: &TestApp, ns: u64) -> Vec<String> {
    use sqlx::Row;
    sqlx::query("SELECT path FROM files WHERE namespace_id = $1 AND deleted = 0 ORDER BY path")
        .bind(ns as i64)
        .fetch_all(app.state.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn deletes_in_journal(app: &TestApp, ns: u64) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) FROM journal WHERE namespace_id = $1 AND kind = 1")
        .bind(ns as i64)
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
        .get(0)
}

const FIVE: &[(&str, &[u8])] = &[
    ("a.txt", b"a"),
    ("b.txt", b"b"),
    ("docs/c.md", b"c"),
    ("docs/d.md", b"d"),
    ("pics/e.jpg", b"e"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_or_replaced_folder_deletes_nothing_anywhere() {
    let app = TestApp::spawn().await;
    let (a, b, ns) = two_in_sync(&app, FIVE).await;
    let before = a.tree();
    let dir = a.path().to_owned();
    let aside = dir.with_extension("renamed");

    // Renamed while the daemon runs: the pass refuses, nothing is sent.
    std::fs::rename(&dir, &aside).unwrap();
    let e = a.syncer.pass().await.unwrap_err();
    assert!(matches!(e, SyncError::Folder(_)), "{e}");
    assert!(e.retryable());
    // A new, empty folder at its path (another drive mounted there, or the
    // user made one): not the synced folder.
    std::fs::create_dir(&dir).unwrap();
    let e = a.syncer.pass().await.unwrap_err();
    assert!(matches!(e, SyncError::Folder(_)), "{e}");
    assert_eq!(server_paths(&app, ns).await.len(), 5);
    b.pass().await;
    assert_eq!(b.tree(), before, "the other device lost files");

    // Renamed back: sync goes on, nothing was lost.
    std::fs::remove_dir(&dir).unwrap();
    std::fs::rename(&aside, &dir).unwrap();
    let r = a.pass().await;
    assert_eq!((r.deleted_there, r.deleted_here), (0, 0), "{r:?}");
    assert_eq!(a.tree(), before);
    assert_eq!(deletes_in_journal(&app, ns).await, 0);
}

/// `mount` as the test needs it; the test fails (never skips) without it.
fn mount(args: &[&str]) {
    let out = std::process::Command::new("mount")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount {args:?}: {} (these tests need CAP_SYS_ADMIN, as .ci/run has)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Detaches the mount at `p` (lazily: the daemon holds its state database
/// open on it, as when a drive is pulled out).
fn umount(p: &Path) {
    let out = std::process::Command::new("umount")
        .arg("-l")
        .arg(p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts when dropped (a failed assertion must not leave mounts).
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmounted_drive_is_not_a_delete() {
    let app = TestApp::spawn().await;
    let (token_a, ns) = app.user("ada", None).await;
    let token_b = app.device("ada", "desk").await;
    // The synced folder is a drive's mount point; part of it is another
    // drive mounted at `usb/`.
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("Sync");
    let drive = parent.path().join("drive");
    let usb_backing = parent.path().join("usb-drive");
    for d in [&root, &drive, &usb_backing] {
        std::fs::create_dir(d).unwrap();
    }
    mount(&[
        "-t",
        "tmpfs",
        "-o",
        "size=64m",
        "tmpfs",
        drive.to_str().unwrap(),
    ]);
    let _m1 = Mounted(drive.clone());
    mount(&[
        "-t",
        "tmpfs",
        "-o",
        "size=64m",
        "tmpfs",
        usb_backing.to_str().unwrap(),
    ]);
    let _m2 = Mounted(usb_backing.clone());
    mount(&["--bind", drive.to_str().unwrap(), root.to_str().unwrap()]);
    let _m3 = Mounted(root.clone());
    std::fs::create_dir(root.join("usb")).unwrap();
    mount(&[
        "--bind",
        usb_backing.to_str().unwrap(),
        root.join("usb").to_str().unwrap(),
    ]);
    let _m4 = Mounted(root.join("usb"));

    let a = Device::at(&app.url, &token_a, ns, "laptop", &root);
    let b = Device::new(&app.url, &token_b, ns, "desk");
    a.write("notes.txt", b"on the main drive");
    a.write("usb/photo1.jpg", &data(100_000, 1));
    a.write("usb/photo2.jpg", &data(100_000, 2));
    a.write("usb/deep/photo3.jpg", &data(100_000, 3));
    a.pass().await;
    b.pass().await;
    let all = b.tree();
    assert_eq!(all.len(), 4);

    // The drive at `usb/` goes away: its folder is an empty folder on
    // another file system now. Nothing under it is deleted.
    umount(&root.join("usb"));
    let r = a.pass().await;
    assert_eq!(r.deleted_there, 0, "{r:?}");
    b.pass().await;
    assert_eq!(b.tree(), all);
    // Back: nothing to do.
    mount(&[
        "--bind",
        usb_backing.to_str().unwrap(),
        root.join("usb").to_str().unwrap(),
    ]);
    let r = a.pass().await;
    assert!(!r.changed(), "{r:?}");

    // The drive holding the whole folder goes away: the mount point is an
    // empty folder of the parent file system. The pass refuses.
    umount(&root.join("usb"));
    umount(&root);
    let e = a.syncer.pass().await.unwrap_err();
    assert!(matches!(e, SyncError::Folder(_)), "{e}");
    b.pass().await;
    assert_eq!(b.tree(), all, "the other device lost files");
    assert_eq!(deletes_in_journal(&app, ns).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_server_gets_the_newer_files_again_and_no_device_deletes_them() {
    let app = TestApp::spawn().await;
    let (a, b, ns) = two_in_sync(&app, &[("old.txt", b"old"), ("edited.txt", b"v1")]).await;
    let backup = app.snapshot_folder(ns).await;

    // Written after the backup, on both devices.
    a.write("new1.txt", b"written after the backup");
    a.write("dir/new2.bin", &data(3 << 20, 7));
    a.write("edited.txt", b"v2, after the backup");
    a.pass().await;
    b.pass().await;
    let want = a.digests();
    assert_eq!(b.digests(), want);

    // The operator restores the server from the backup.
    app.restore_folder(&backup).await;
    assert_eq!(server_paths(&app, ns).await, ["edited.txt", "old.txt"]);

    // Neither device deletes anything; the newer files go up again.
    let r = b.pass().await;
    assert_eq!(r.deleted_here, 0, "{r:?}");
    assert_eq!(b.digests(), want);
    let r = a.pass().await;
    assert_eq!(r.deleted_here, 0, "{r:?}");
    assert_eq!(a.digests(), want);
    assert_eq!(
        server_paths(&app, ns).await,
        ["dir/new2.bin", "edited.txt", "new1.txt", "old.txt"]
    );
    // And the server's bytes are the newest: a third device gets them.
    let token_c = app.device("ada", "tablet").await;
    let c = Device::new(&app.url, &token_c, ns, "tablet");
    c.pass().await;
    assert_eq!(c.digests(), want);
    // A delete after the restore is still a delete.
    a.remove("old.txt");
    a.pass().await;
    b.pass().await;
    assert!(b.read("old.txt").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_pointed_at_a_new_server_uploads_its_folder_instead_of_wiping_it() {
    let old = TestApp::spawn().await;
    let (token, ns) = old.user("ada", None).await;
    let mut a = Device::new(&old.url, &token, ns, "laptop");
    a.write("one.txt", b"1");
    a.write("sub/two.txt", b"2");
    a.write("sub/three.bin", &data(2 << 20, 3));
    a.pass().await;
    let want = a.tree();
    drop(old);

    // A new, empty server at another address; the same user signs in.
    let fresh = TestApp::spawn().await;
    let (token, ns) = fresh.user("ada", None).await;
    let a = Device::reopen(&fresh.url, &token, ns, "laptop", a.take_dir());
    let r = a.pass().await;
    assert_eq!(r.deleted_here, 0, "{r:?}");
    assert_eq!(a.tree(), want, "files were deleted");
    assert_eq!(
        server_paths(&fresh, ns).await,
        ["one.txt", "sub/three.bin", "sub/two.txt"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_deletes_wait_for_confirmation() {
    let app = TestApp::spawn().await;
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("f/{i}.txt"), format!("file {i}").into_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let (a, b, ns) = two_in_sync(&app, &refs).await;
    // Deleting a few is ordinary.
    for i in 0..5 {
        a.remove(&format!("f/{i}.txt"));
    }
    let r = a.pass().await;
    assert_eq!((r.deleted_there, r.deletes_held), (5, 0), "{r:?}");
    // Most of the folder at once: held, said, nothing sent.
    for i in 5..30 {
        a.remove(&format!("f/{i}.txt"));
    }
    let r = a.pass().await;
    assert_eq!((r.deleted_there, r.deletes_held), (0, 25), "{r:?}");
    let st = driftless_daemon::status::status(a.syncer.root(), a.syncer.state()).unwrap();
    assert_eq!(st.deletes_held, 25);
    assert!(!st.in_sync());
    assert_eq!(server_paths(&app, ns).await.len(), 35);
    // Held again on the next pass, until the user confirms.
    assert_eq!(a.pass().await.deletes_held, 25);
    a.syncer
        .state()
        .set(driftless_daemon::sync::CONFIRM_DELETES_KEY, "1")
        .unwrap();
    let r = a.pass().await;
    assert_eq!((r.deleted_there, r.deletes_held), (25, 0), "{r:?}");
    b.pass().await;
    assert_eq!(b.tree().len(), 10);
    // The count threshold: with a brake of 3 files, 4 deletions wait.
    let mut a = a;
    a.syncer.set_delete_brake(DeleteBrake {
        max_files: 3,
        ..DeleteBrake::default()
    });
    for i in 30..34 {
        a.remove(&format!("f/{i}.txt"));
    }
    assert_eq!(a.pass().await.deletes_held, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_cannot_sync_is_listed_with_its_reason_and_nothing_else_stops() {
    let app = TestApp::spawn().await;
    let (a, b, _) = two_in_sync(&app, &[("report", b"a file named report")]).await;
    // Offline, B makes `report` a folder, and spells `Docs` two ways.
    b.remove("report");
    b.write("report/child.txt", b"under a folder named report");
    a.write("docs/one.txt", b"A's docs");
    a.pass().await;
    b.write("Docs/two.txt", b"B's Docs");
    b.write("fine.txt", b"this one syncs");
    // B's pass: the file `report` is deleted before `report/child.txt`
    // goes up; `Docs/two.txt` meets the folder `docs` and fails, alone.
    let r = b.syncer.pass().await.unwrap();
    let failed: Vec<&str> = r.problems.iter().map(|p| p.path.as_str()).collect();
    assert!(failed.contains(&"Docs/two.txt"), "{r:?}");
    assert!(
        r.problems
            .iter()
            .any(|p| p.why.contains("folder_collision")),
        "{r:?}"
    );
    // Everything else went through.
    a.pass().await;
    assert_eq!(a.read("fine.txt").as_deref(), Some(&b"this one syncs"[..]));
    // `status` says which files fail and why; it does not call them in sync.
    let st = driftless_daemon::status::status(b.syncer.root(), b.syncer.state()).unwrap();
    assert!(!st.in_sync(), "{st:?}");
    let why: Vec<(&str, &str)> = st
        .failed
        .iter()
        .map(|e| (e.path.as_str(), e.why.as_str()))
        .collect();
    assert!(
        why.iter()
            .any(|(p, w)| *p == "Docs/two.txt" && w.contains("folder")),
        "{why:?}"
    );
    // The user moves the file into the folder as spelled: the failure clears.
    b.rename("Docs/two.txt", "docs/two.txt");
    std::fs::remove_dir(b.path().join("Docs")).unwrap();
    let r = b.syncer.pass().await.unwrap();
    assert!(r.problems.is_empty(), "{r:?}");
    let st = driftless_daemon::status::status(b.syncer.root(), b.syncer.state()).unwrap();
    assert!(st.failed.is_empty(), "{st:?}");
    // The file that became a folder synced as such, on the first pass.
    a.pass().await;
    assert_eq!(a.tree(), b.tree());
    assert_eq!(
        a.read("report/child.txt").as_deref(),
        Some(&b"under a folder named report"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_file_swapped_for_a_fifo_neither_hangs_nor_is_deleted() {
    let app = TestApp::spawn().await;
    let bytes = data(3 << 20, 9);
    let (a, b, ns) = two_in_sync(&app, &[("src.bin", &bytes)]).await;
    // On B, the synced file becomes a FIFO (nobody ever writes to it).
    b.remove("src.bin");
    let made = std::process::Command::new("mkfifo")
        .arg(b.path().join("src.bin"))
        .status()
        .unwrap();
    assert!(made.success());
    // A adds a copy: B's download would reuse src.bin's chunks, and must
    // not block opening it.
    a.write("copy.bin", &bytes);
    a.pass().await;
    let r = tokio::time::timeout(std::time::Duration::from_secs(30), b.syncer.pass())
        .await
        .expect("the pass hung on a FIFO")
        .unwrap();
    assert_eq!(r.downloaded, 1, "{r:?}");
    assert_eq!(b.read("copy.bin").as_deref(), Some(&bytes[..]));
    // A FIFO is not a file: src.bin is not deleted on the server.
    assert_eq!(r.deleted_there, 0, "{r:?}");
    assert_eq!(server_paths(&app, ns).await, ["copy.bin", "src.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_would_fill_the_disk_is_refused_and_said() {
    let app = TestApp::spawn().await;
    let (token_a, ns) = app.user("ada", None).await;
    let token_b = app.device("ada", "desk").await;
    let a = Device::new(&app.url, &token_a, ns, "laptop");
    // B's folder is on a 300 MiB disk.
    let disk = tempfile::tempdir().unwrap();
    mount(&[
        "-t",
        "tmpfs",
        "-o",
        "size=300m",
        "tmpfs",
        disk.path().to_str().unwrap(),
    ]);
    let _m = Mounted(disk.path().to_owned());
    let b = Device::at(&app.url, &token_b, ns, "desk", disk.path());
    a.write("small.txt", b"fits");
    a.write("big.bin", &vec![0u8; 96 << 20]);
    a.pass().await;
    let r = b.syncer.pass().await.unwrap();
    assert_eq!(r.downloaded, 1, "{r:?}");
    assert_eq!(b.read("small.txt").as_deref(), Some(&b"fits"[..]));
    assert!(b.read("big.bin").is_none());
    let p = r
        .problems
        .iter()
        .find(|p| p.path == "big.bin")
        .expect("big.bin is a problem");
    assert!(p.why.contains("free disk space"), "{p:?}");
    // Nothing half-written was left, and status says why.
    let names: Vec<String> = std::fs::read_dir(disk.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    let st = driftless_daemon::status::status(b.syncer.root(), b.syncer.state()).unwrap();
    assert!(
        st.failed
            .iter()
            .any(|e| e.path == "big.bin" && e.why.contains("disk space")),
        "{st:?}"
    );
}
