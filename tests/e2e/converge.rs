//! Two or three devices editing one folder converge to identical trees,
//! with no edit lost: creates, edits, deletes, moves, conflicts, an edit
//! racing a delete, names that differ only by case.

use driftless_tests::{TestApp, TestBroker};

use crate::device::{Device, data};

struct Setup {
    _broker: TestBroker,
    app: TestApp,
    ns: u64,
    tokens: Vec<String>,
}

async fn setup(devices: usize) -> Setup {
    let broker = TestBroker::start().await;
    let app = TestApp::spawn_kafka(&broker).await;
    let (first, ns) = app.user("ada", None).await;
    let mut tokens = vec![first];
    for i in 1..devices {
        tokens.push(app.device("ada", &format!("device-{i}")).await);
    }
    Setup {
        _broker: broker,
        app,
        ns,
        tokens,
    }
}

impl Setup {
    fn device(&self, i: usize, name: &str) -> Device {
        Device::new(&self.app.url, &self.tokens[i], self.ns, name)
    }
}

async fn journal_kinds(app: &TestApp, ns: u64) -> Vec<(String, i64)> {
    use sqlx::Row;
    sqlx::query("SELECT path, kind FROM journal WHERE namespace_id = $1 ORDER BY seq")
        .bind(ns as i64)
        .fetch_all(app.state.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn creates_edits_deletes_and_moves_converge_and_moves_send_no_bytes() {
    let s = setup(2).await;
    let (a, b) = (s.device(0, "laptop"), s.device(1, "desk"));
    let big = data(12 << 20, 1);
    a.write("a.txt", b"first version of a");
    a.write("dir/b.bin", &big);
    a.write("c.txt", b"c");
    a.write("empty", b"");
    let r = a.pass().await;
    assert_eq!(r.uploaded, 4);
    let r = b.pass().await;
    assert_eq!(r.downloaded, 4);
    assert_eq!(a.tree(), b.tree());

    // B edits, deletes and moves; A follows.
    b.write("a.txt", b"second version of a, from the desk");
    b.remove("c.txt");
    b.rename("dir/b.bin", "moved/b.bin");
    let r = b.pass().await;
    assert_eq!((r.uploaded, r.deleted_there, r.moved), (1, 1, 1), "{r:?}");
    assert_eq!(
        r.bytes_up,
        b"second version of a, from the desk".len() as u64,
        "a move sends no bytes"
    );
    let r = a.pass().await;
    assert_eq!((r.downloaded, r.deleted_here, r.moved), (1, 1, 1), "{r:?}");
    assert_eq!(
        r.bytes_down,
        b"second version of a, from the desk".len() as u64,
        "the move is a rename here too"
    );
    assert_eq!(a.tree(), b.tree());
    assert!(
        a.read("dir/b.bin").is_none() && !a.path().join("dir").exists(),
        "the emptied folder goes too"
    );
    assert!(
        journal_kinds(&s.app, s.ns)
            .await
            .contains(&("moved/b.bin".into(), 2))
    );

    // A new file reuses chunks the device already holds: only its last
    // chunk (at most 4 MiB) differs from b.bin's and is fetched.
    let mut derived = big.clone();
    derived.extend_from_slice(b"a tail");
    a.write("derived.bin", &derived);
    a.pass().await;
    let r = b.pass().await;
    assert_eq!(r.downloaded, 1);
    assert!(r.bytes_reused >= 8 << 20, "{r:?}");
    assert!(r.bytes_down <= (4 << 20) + 64, "{r:?}");
    assert_eq!(a.tree(), b.tree());

    // Nothing left to do on either side.
    assert!(!a.pass().await.changed());
    assert!(!b.pass().await.changed());
}

#[tokio::test]
async fn a_concurrent_edit_becomes_a_conflicted_copy_and_an_edit_beats_a_delete() {
    let s = setup(3).await;
    let (a, b, c) = (
        s.device(0, "laptop"),
        s.device(1, "desk"),
        s.device(2, "phone"),
    );
    a.write("notes.md", b"base");
    a.write("doomed.txt", b"to be deleted");
    a.pass().await;
    b.pass().await;
    c.pass().await;

    // Both edit notes.md; A commits first.
    a.write("notes.md", b"A's edit");
    b.write("notes.md", b"B's edit");
    // A deletes doomed.txt while B edits it.
    a.remove("doomed.txt");
    b.write("doomed.txt", b"B still needs this");
    a.pass().await;
    let r = b.pass().await;
    assert_eq!(r.conflicts, 1, "{r:?}");
    a.pass().await;
    c.pass().await;
    let tree = a.tree();
    assert_eq!(tree, b.tree());
    assert_eq!(tree, c.tree());
    assert_eq!(
        tree["notes.md"], b"A's edit",
        "the first commit keeps the name"
    );
    let copies: Vec<_> = tree
        .iter()
        .filter(|(k, _)| k.starts_with("notes (conflicted copy from desk "))
        .collect();
    assert_eq!(copies.len(), 1, "{:?}", tree.keys());
    assert!(copies[0].0.ends_with(").md"));
    assert_eq!(copies[0].1, b"B's edit", "no edit is lost");
    assert_eq!(
        tree["doomed.txt"], b"B still needs this",
        "the edit beats the delete"
    );
}

#[tokio::test]
async fn names_that_differ_only_by_case_never_overwrite_each_other() {
    let s = setup(2).await;
    let (a, b) = (s.device(0, "laptop"), s.device(1, "desk"));
    a.write("Readme.md", b"from the laptop");
    b.write("README.md", b"from the desk");
    a.pass().await;
    b.pass().await;
    a.pass().await;
    let tree = a.tree();
    assert_eq!(tree, b.tree());
    assert_eq!(tree.len(), 2, "{:?}", tree.keys());
    let mut contents: Vec<_> = tree.values().cloned().collect();
    contents.sort();
    assert_eq!(
        contents,
        [b"from the desk".to_vec(), b"from the laptop".to_vec()]
    );
}
