//! Garage (crates.io `garage`), a production S3 store that enforces signed
//! checksums and runs as a cluster: one node, or several on loopback, per
//! test that asks for it, each in a temporary folder on free ports, so a
//! test can kill and restart a node. `garage` must be on the PATH
//! (`scripts/test.sh` installs it); a missing or failing store fails the
//! test, it never skips it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::*;

/// The access key every test cluster imports (Garage's key id format:
/// `GK` and 24 hex digits; the secret is 64 hex digits).
const KEY_ID: &str = "GK0123456789abcdef01234567";
const KEY_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The region the nodes answer for.
pub const GARAGE_REGION: &str = "garage";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One Garage process.
pub struct GarageNode {
    /// Its S3 API port.
    pub s3_port: u16,
    rpc_port: u16,
    /// Its admin API port.
    pub admin_port: u16,
    dir: PathBuf,
    child: std::sync::Mutex<Option<Child>>,
    /// `ID@127.0.0.1:PORT`, once known.
    pub node: String,
    /// Whether the process outlives every test of the binary (the shared
    /// node): then it is stopped, and its folders removed, when the test
    /// binary exits, however it exits.
    shared: bool,
}

impl GarageNode {
    fn config(&self) -> PathBuf {
        self.dir.join("garage.toml")
    }

    fn write_config(&self, replication: usize, secret: &str, admin_token: Option<&str>) {
        let d = self.dir.display();
        let admin = self.admin_port;
        let token = admin_token.map_or(String::new(), |t| format!("admin_token = \"{t}\"\n"));
        std::fs::write(
            self.config(),
            format!(
                "metadata_dir = \"{d}/meta\"\n\
                 data_dir = \"{d}/data\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = {replication}\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"{GARAGE_REGION}\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\
                 [admin]\n\
                 api_bind_addr = \"127.0.0.1:{admin}\"\n\
                 {token}",
                rpc = self.rpc_port,
                s3 = self.s3_port,
            ),
        )
        .unwrap();
    }

    /// The `garage` CLI against this node; panics with its output on failure.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("garage")
            .arg("-c")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `garage` ({e}); scripts/test.sh installs it"));
        assert!(
            out.status.success(),
            "garage {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the process (again, on the same ports and folders).
    fn spawn(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("garage.log"))
            .unwrap();
        let mut cmd = if self.shared {
            // No test owns the shared node, so nothing drops it: a shell
            // runs it and kills it once the test binary is gone (the pipe
            // on the shell's stdin closes when the binary exits, even by
            // SIGKILL), then removes its folders.
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(
                    // (A background list's stdin is /dev/null: the pipe
                    // is kept on fd 3 for it.)
                    "exec 3<&0; garage -c \"$1\" server </dev/null 3<&- & p=$!; \
                     (cat <&3 >/dev/null; kill -9 $p 2>/dev/null) & \
                     exec 3<&-; wait $p; s=$?; rm -rf \"$2\"; exit $s",
                )
                .arg("garage-shared")
                .arg(self.config())
                .arg(self.dir.parent().unwrap_or(&self.dir))
                .stdin(Stdio::piped());
            cmd
        } else {
            let mut cmd = Command::new("garage");
            cmd.arg("-c")
                .arg(self.config())
                .arg("server")
                .stdin(Stdio::null());
            cmd
        };
        cmd.env("RUST_LOG", "garage=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Killed when the test drops it (panics included), as the broker is.
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start Garage ({e}); install it with `cargo install garage@2.5.0 \
                 --locked` (scripts/test.sh does)"
            )
        });
        *self.child.lock().unwrap() = Some(child);
    }

    /// Waits until the node answers its CLI (its RPC is up); returns its
    /// `ID@ADDR`.
    async fn wait_up(&self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let exited = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "Garage exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("garage.log")).unwrap_or_default()
                );
            }
            let out = Command::new("garage")
                .arg("-c")
                .arg(self.config())
                .args(["node", "id", "-q"])
                .output()
                .unwrap();
            // `node id` reads the node's key from its folder, which exists
            // before the node listens: wait for its RPC and S3 ports too (a
            // `layout assign` sent before met "connection refused").
            let listening = |port: u16| {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok()
            };
            if out.status.success() && listening(self.rpc_port) && listening(self.s3_port) {
                return String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Garage did not come up: {}",
                std::fs::read_to_string(self.dir.join("garage.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the node with SIGKILL (its folders stay).
    pub fn kill9(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for GarageNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Garage cluster of `n` nodes on loopback, replication `n`, with one
/// access key that may create buckets.
pub struct GarageCluster {
    pub nodes: Vec<GarageNode>,
    _dir: tempfile::TempDir,
}

impl GarageCluster {
    /// One node (replication 1).
    pub async fn single() -> Self {
        Self::start(1).await
    }

    /// One node shared by every test of this test binary, each test on a
    /// bucket of its own: the S3 store of the integration tests. It is
    /// started by the first test that asks and stops when the binary exits.
    pub async fn shared() -> std::sync::Arc<Self> {
        static SHARED: tokio::sync::OnceCell<std::sync::Arc<GarageCluster>> =
            tokio::sync::OnceCell::const_new();
        SHARED
            .get_or_init(|| async { std::sync::Arc::new(Self::start_nodes(1, true).await) })
            .await
            .clone()
    }

    /// `n` nodes, each holding every object (replication `n`).
    pub async fn start(n: usize) -> Self {
        Self::start_nodes(n, false).await
    }

    /// One node as an operator finds it after installing it: no layout,
    /// no key, no bucket; its admin API takes `admin_token`.
    pub async fn bare(admin_token: &str) -> Self {
        Self::spawn_nodes(1, false, Some(admin_token)).await
    }

    async fn start_nodes(n: usize, shared: bool) -> Self {
        let cluster = Self::spawn_nodes(n, shared, None).await;
        cluster.configure();
        cluster
    }

    async fn spawn_nodes(n: usize, shared: bool, admin_token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut node = GarageNode {
                s3_port: free_port(),
                rpc_port: free_port(),
                admin_port: free_port(),
                dir: node_dir,
                child: std::sync::Mutex::new(None),
                node: String::new(),
                shared,
            };
            node.write_config(n, &secret, admin_token);
            node.spawn();
            node.node = node.wait_up().await;
            nodes.push(node);
        }
        Self { nodes, _dir: dir }
    }

    /// Connects the nodes, gives each a role (replication: all of them),
    /// and imports the test key, allowed to create buckets.
    fn configure(&self) {
        let nodes = &self.nodes;
        let first = &nodes[0];
        for other in &nodes[1..] {
            first.cli(&["node", "connect", &other.node]);
        }
        for (i, node) in nodes.iter().enumerate() {
            let id = node.node.split('@').next().unwrap().to_owned();
            first.cli(&[
                "layout",
                "assign",
                "-z",
                &format!("dc{}", i + 1),
                "-c",
                "1G",
                &id,
            ]);
        }
        first.cli(&["layout", "apply", "--version", "1"]);
        first.cli(&[
            "key",
            "import",
            "--yes",
            KEY_ID,
            KEY_SECRET,
            "-n",
            "driftless-tests",
        ]);
        first.cli(&["key", "allow", "--create-bucket", KEY_ID]);
    }

    /// Settings for `bucket` through node `i`'s S3 API.
    pub fn blob_config_via(&self, i: usize, bucket: &str, presign_ttl: Duration) -> BlobConfig {
        BlobConfig {
            endpoint: format!("http://127.0.0.1:{}", self.nodes[i].s3_port),
            region: GARAGE_REGION.into(),
            bucket: bucket.into(),
            access_key: KEY_ID.into(),
            secret_key: KEY_SECRET.into(),
            path_style: true,
            presign_ttl,
            read_timeout: driftless_store::blob::READ_TIMEOUT,
        }
    }

    /// Settings for `bucket` through the first node.
    pub fn blob_config(&self, bucket: &str, presign_ttl: Duration) -> BlobConfig {
        self.blob_config_via(0, bucket, presign_ttl)
    }

    /// A fresh bucket (created through S3 by the test key, which owns it),
    /// once the layout has settled enough to take it.
    pub async fn bucket(&self, presign_ttl: Duration) -> (BlobConfig, BlobStore) {
        let config = self.blob_config(&unique("bucket-"), presign_ttl);
        let store = BlobStore::new(&config);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match store.ensure_bucket().await {
                Ok(()) => return (config, store),
                Err(e) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "Garage at {} is not usable: {e}",
                        config.endpoint
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// A fresh bucket as an operator makes one (`garage bucket create`: a
    /// global name, which Garage needs to apply the bucket's CORS rule to
    /// preflights; a bucket made through S3 `CreateBucket` is only the
    /// key's local alias, and its preflights are answered with `*`), the
    /// test key allowed to read, write and own it.
    pub async fn operator_bucket(&self, presign_ttl: Duration) -> (BlobConfig, BlobStore) {
        let name = unique("bucket-");
        let first = &self.nodes[0];
        first.cli(&["bucket", "create", &name]);
        first.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", &name, "--key", KEY_ID,
        ]);
        let config = self.blob_config(&name, presign_ttl);
        let store = BlobStore::new(&config);
        store
            .ensure_bucket()
            .await
            .unwrap_or_else(|e| panic!("Garage bucket {name} is not usable: {e}"));
        (config, store)
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill9(&self, i: usize) {
        self.nodes[i].kill9();
    }

    /// Starts node `i` again on its ports and folders.
    pub async fn restart(&self, i: usize) {
        self.nodes[i].kill9();
        self.nodes[i].spawn();
        self.nodes[i].wait_up().await;
    }

    /// Whether every node is up and sees every other (`garage status`
    /// through node `i` lists no failed node).
    pub fn healthy_via(&self, i: usize) -> bool {
        let out = Command::new("garage")
            .arg("-c")
            .arg(self.nodes[i].config())
            .arg("status")
            .output();
        matches!(out, Ok(o) if o.status.success()
            && !String::from_utf8_lossy(&o.stdout).contains("FAILED NODES"))
    }
}
