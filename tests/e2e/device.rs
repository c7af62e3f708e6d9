//! A device: a folder, its state, and a syncer for one namespace.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use driftless_daemon::http::ApiClient;
use driftless_daemon::local::{Root, STATE_DIR};
use driftless_daemon::state::State;
use driftless_daemon::sync::{PassReport, Syncer};
use driftless_protocol::NamespaceId;

pub(crate) struct Device {
    _dir: tempfile::TempDir,
    pub(crate) syncer: Syncer,
}

impl Device {
    pub(crate) fn new(url: &str, token: &str, ns: u64, name: &str) -> Self {
        Self::reopen(url, token, ns, name, tempfile::tempdir().unwrap())
    }

    /// A device on an existing folder and state (a restarted daemon).
    pub(crate) fn reopen(
        url: &str,
        token: &str,
        ns: u64,
        name: &str,
        dir: tempfile::TempDir,
    ) -> Self {
        let path = dir.path().to_owned();
        Self::open(url, token, ns, name, &path, dir)
    }

    /// A device syncing the folder at `root` (which the test owns).
    pub(crate) fn at(url: &str, token: &str, ns: u64, name: &str, root: &Path) -> Self {
        Self::open(url, token, ns, name, root, tempfile::tempdir().unwrap())
    }

    fn open(
        url: &str,
        token: &str,
        ns: u64,
        name: &str,
        root: &Path,
        dir: tempfile::TempDir,
    ) -> Self {
        let root = Root::open(root).unwrap();
        std::fs::create_dir_all(root.dir().join(STATE_DIR)).unwrap();
        let state = Arc::new(State::open(&root.dir().join(STATE_DIR).join("state.db")).unwrap());
        let syncer = Syncer::new(
            ApiClient::new(url, token),
            NamespaceId(ns),
            root,
            state,
            name,
        );
        Self { _dir: dir, syncer }
    }

    /// Gives up the folder (to reopen it); this device is then unusable.
    pub(crate) fn take_dir(&mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap())
    }

    pub(crate) fn path(&self) -> &Path {
        self.syncer.root().dir()
    }

    pub(crate) async fn pass(&self) -> PassReport {
        let r = self.syncer.pass().await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        r
    }

    pub(crate) fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }

    pub(crate) fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path().join(rel)).unwrap();
    }

    pub(crate) fn rename(&self, from: &str, to: &str) {
        let to = self.path().join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::rename(self.path().join(from), to).unwrap();
    }

    pub(crate) fn read(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path().join(rel)).ok()
    }

    /// Every file under the folder but the daemon's own, with its bytes.
    pub(crate) fn tree(&self) -> BTreeMap<String, Vec<u8>> {
        tree(self.path())
    }

    /// Every file with a short digest of its bytes (for readable asserts).
    pub(crate) fn digests(&self) -> BTreeMap<String, String> {
        self.tree()
            .into_iter()
            .map(|(k, v)| (k, blake3::hash(&v).to_hex()[..12].to_owned()))
            .collect()
    }
}

pub(crate) fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == STATE_DIR {
                continue;
            }
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

pub(crate) use driftless_tests::random_bytes as data;
