//! What the folder holds that must not sync, and what the event path can
//! miss: `.driftignore` (gitignore syntax), editors' litter and temporary
//! files, symlinks (skipped, never followed), and a cursor that skipped
//! changes (the first pass's full reconcile brings them anyway).

use driftless_daemon::sync::CURSOR_KEY;
use driftless_tests::TestApp;

use crate::device::Device;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_files_litter_and_symlinks_stay_local() {
    let app = TestApp::spawn().await;
    let (token_a, ns) = app.user("ada", None).await;
    let token_b = app.device("ada", "desk").await;
    let a = Device::new(&app.url, &token_a, ns, "laptop");
    let b = Device::new(&app.url, &token_b, ns, "desk");
    a.write(".driftignore", b"build/\n*.log\n!keep.log\n");
    a.write("src/main.rs", b"fn main() {}\n");
    a.write("build/out.o", b"object code");
    a.write("debug.log", b"noise");
    a.write("keep.log", b"kept on purpose");
    a.write("notes.txt~", b"editor backup");
    a.write(".~lock.report.odt#", b"office lock");
    a.write("download.crdownload", b"half a download");
    a.write(".DS_Store", b"finder");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside the folder").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), a.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), a.path().join("linkdir")).unwrap();
    a.pass().await;
    b.pass().await;
    // The root `.driftignore` is the device's own: it does not travel.
    let got: Vec<String> = b.tree().into_keys().collect();
    assert_eq!(got, ["keep.log", "src/main.rs"], "{got:?}");

    // Rules that ignore everything on one device stop nothing on another
    // (an editor's `*` used to stop every member's uploads): B's files go
    // up; A does not take what its own rules ignore, and says so.
    a.write(".driftignore", b"*\n");
    a.pass().await;
    b.write("notes/plan.md", b"B's plan");
    b.write("build/tool.o", b"B builds here");
    let r = b.pass().await;
    assert_eq!(r.uploaded, 2, "{r:?}");
    let st = driftless_daemon::status::status(b.syncer.root(), b.syncer.state()).unwrap();
    assert!(st.in_sync() && st.pending.is_empty(), "{st:?}");
    a.pass().await;
    assert!(
        a.read("notes/plan.md").is_none(),
        "A ignores everything now"
    );
    let st = driftless_daemon::status::status(a.syncer.root(), a.syncer.state()).unwrap();
    assert!(
        st.pending.is_empty(),
        "ignored files are not 'pending deleted': {st:?}"
    );
    assert_eq!(st.ignored, 2, "{st:?}");
    // A drops the rule: what it no longer ignores arrives.
    a.write(".driftignore", b"build/\n");
    a.pass().await;
    assert_eq!(a.read("notes/plan.md").as_deref(), Some(&b"B's plan"[..]));
    assert!(a.read("build/tool.o").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_pass_reconciles_what_the_cursor_skipped() {
    let app = TestApp::spawn().await;
    let (token_a, ns) = app.user("ada", None).await;
    let token_b = app.device("ada", "desk").await;
    let a = Device::new(&app.url, &token_a, ns, "laptop");
    let mut b = Device::new(&app.url, &token_b, ns, "desk");
    a.write("kept.txt", b"v1");
    a.write("gone.txt", b"doomed");
    a.pass().await;
    b.pass().await;

    // A changes things; B's cursor jumps past them (as if their events were
    // lost): only the full comparison can find them.
    a.write("kept.txt", b"v2");
    a.write("new.txt", b"brand new");
    a.remove("gone.txt");
    a.pass().await;
    let head = driftless_daemon::http::ApiClient::new(&app.url, &token_b)
        .changes(
            driftless_protocol::NamespaceId(ns),
            b.syncer.state().get(CURSOR_KEY).unwrap().as_deref(),
            1000,
        )
        .await
        .unwrap()
        .cursor;
    b.syncer.state().set(CURSOR_KEY, &head).unwrap();

    // The same daemon's next pass sees nothing new on the feed...
    let r = b.pass().await;
    assert!(!r.changed(), "{r:?}");
    // ...but a restarted one reconciles on its first pass.
    let dir = b.take_dir();
    b = Device::reopen(&app.url, &token_b, ns, "desk", dir);
    let r = b.pass().await;
    assert_eq!((r.downloaded, r.deleted_here), (2, 1), "{r:?}");
    assert_eq!(a.tree(), b.tree());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_nfd_is_synced_under_its_nfc_form() {
    let app = TestApp::spawn().await;
    let (token_a, ns) = app.user("ada", None).await;
    let token_b = app.device("ada", "desk").await;
    let a = Device::new(&app.url, &token_a, ns, "laptop");
    let b = Device::new(&app.url, &token_b, ns, "desk");
    let (nfd, nfc) = ("cafe\u{301}.txt", "caf\u{e9}.txt");
    a.write(nfd, b"written by a Mac");
    let r = a.pass().await;
    assert_eq!(r.uploaded, 1);
    assert!(
        a.read(nfc).is_some() && !a.path().join(nfd).exists(),
        "renamed to NFC on disk"
    );
    b.pass().await;
    assert_eq!(b.read(nfc).as_deref(), Some(&b"written by a Mac"[..]));
    // Nothing left to do: the path on disk is the path the server knows.
    assert!(!a.pass().await.changed() && !b.pass().await.changed());
    assert_eq!(a.tree(), b.tree());

    // Both forms at once on one device: one file on the server, so the
    // other is left alone (reported), never overwritten.
    a.write(nfd, b"a second file with the same name in NFD");
    a.pass().await;
    assert_eq!(a.read(nfc).as_deref(), Some(&b"written by a Mac"[..]));
    assert_eq!(
        std::fs::read(a.path().join(nfd)).unwrap(),
        b"a second file with the same name in NFD"
    );
}

#[tokio::test]
async fn an_own_unrecorded_commit_reached_through_an_older_entry_does_not_undo_a_later_delete() {
    let app = TestApp::spawn().await;
    let (token, ns) = app.user("ada", None).await;
    let a = Device::new(&app.url, &token, ns, "laptop");
    a.pass().await;
    let before = a.syncer.state().get(CURSOR_KEY).unwrap().unwrap();
    a.write("x.txt", b"first");
    a.pass().await;
    a.remove("x.txt");
    a.pass().await;
    a.write("x.txt", b"third");
    a.pass().await;
    // As a kill between the commit of "third" and its record leaves it:
    // the path forgotten (by the delete before), the content noted as
    // sent, the cursor still before every entry of the path.
    let p = driftless_protocol::SyncPath::parse("x.txt").unwrap();
    let state = a.syncer.state();
    let third = state.synced(&p).unwrap().unwrap().content_hash;
    state.forget(&p).unwrap();
    state.note_sent(&p, &third).unwrap();
    state.set(CURSOR_KEY, &before).unwrap();
    // The user deletes the file; the next pass meets "first" (live version
    // "third", this device's own) before anything else.
    a.remove("x.txt");
    let r = a.pass().await;
    assert_eq!(r.downloaded, 0, "{r:?}");
    assert_eq!(a.read("x.txt"), None, "the delete was undone");
    // The delete reached the server.
    let other = Device::new(&app.url, &app.device("ada", "desk").await, ns, "desk");
    other.pass().await;
    assert_eq!(other.read("x.txt"), None);
}
