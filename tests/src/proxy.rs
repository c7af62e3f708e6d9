//! A TCP proxy a test can freeze, as a network does: bytes stop flowing on
//! every connection open at that moment, for good (a dead route, a NAT
//! mapping gone), and new connections wait until it thaws. What a client
//! or server needs to survive that is a timeout on its side. It can also
//! flip one bit on the way to the server, as a damaged link would, and
//! count the answers that name an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Switch {
    frozen: AtomicBool,
    epoch: AtomicU64,
    /// Bytes forwarded so far, and after how many to freeze.
    moved: AtomicU64,
    freeze_at: AtomicU64,
    /// Bytes sent towards the server so far, and at which of them to flip
    /// a bit (once), as a damaged link or NIC would.
    sent: AtomicU64,
    flip_at: AtomicU64,
    flipped: AtomicBool,
    /// Answers from the server that held this needle, counted.
    needle: std::sync::Mutex<Vec<u8>>,
    needle_seen: AtomicU64,
}

impl Default for Switch {
    fn default() -> Self {
        Self {
            frozen: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            moved: AtomicU64::new(0),
            freeze_at: AtomicU64::new(u64::MAX),
            sent: AtomicU64::new(0),
            flip_at: AtomicU64::new(u64::MAX),
            flipped: AtomicBool::new(false),
            needle: std::sync::Mutex::new(Vec::new()),
            needle_seen: AtomicU64::new(0),
        }
    }
}

impl Switch {
    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn moved(&self, n: usize) {
        let total = self.moved.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let at = self.freeze_at.load(Ordering::SeqCst);
        if total >= at
            && self
                .freeze_at
                .compare_exchange(at, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.freeze();
        }
    }

    /// Flips a bit of `buf` (bytes going to the server) if the flip point
    /// falls inside it.
    fn damage(&self, buf: &mut [u8]) {
        let start = self.sent.fetch_add(buf.len() as u64, Ordering::SeqCst);
        let at = self.flip_at.load(Ordering::SeqCst);
        if (start..start + buf.len() as u64).contains(&at)
            && self
                .flip_at
                .compare_exchange(at, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            buf[(at - start) as usize] ^= 0x10;
            self.flipped.store(true, Ordering::SeqCst);
        }
    }

    /// Counts an answer from the server that holds the needle.
    fn watch(&self, buf: &[u8]) {
        let needle = self.needle.lock().unwrap_or_else(|e| e.into_inner());
        if !needle.is_empty() && buf.windows(needle.len()).any(|w| w == needle.as_slice()) {
            self.needle_seen.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits until a connection of `epoch` may move bytes; one frozen
    /// waits for ever (its task ends with the proxy).
    async fn go(&self, epoch: u64) {
        while self.frozen.load(Ordering::SeqCst) || self.epoch.load(Ordering::SeqCst) != epoch {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A proxy to one address.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    switch: Arc<Switch>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards connections on a fresh port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let switch = Arc::new(Switch::default());
        let s = switch.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let epoch = s.epoch.load(Ordering::SeqCst);
                    s.go(epoch).await;
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(
                        pipe(cr, sw, &s, epoch, Way::ToServer),
                        pipe(sr, cw, &s, epoch, Way::ToClient)
                    );
                });
            }
        });
        Self { addr, switch, task }
    }

    /// The proxy's URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops every open connection for good, and new ones until [`thaw`].
    ///
    /// [`thaw`]: TcpProxy::thaw
    pub fn freeze(&self) {
        self.switch.freeze();
    }

    /// Freezes (as [`TcpProxy::freeze`]) once `bytes` more have gone
    /// through, in the middle of whatever is flowing then.
    pub fn freeze_after(&self, bytes: u64) {
        let now = self.switch.moved.load(Ordering::SeqCst);
        self.switch.freeze_at.store(now + bytes, Ordering::SeqCst);
    }

    /// Whether the proxy is frozen now.
    pub fn frozen(&self) -> bool {
        self.switch.frozen.load(Ordering::SeqCst)
    }

    /// New connections flow again (the frozen ones stay frozen).
    pub fn thaw(&self) {
        self.switch.frozen.store(false, Ordering::SeqCst);
    }

    /// Flips one bit of the byte `bytes` from now on the way to the
    /// server (counted over every connection), once.
    pub fn flip_bit_after(&self, bytes: u64) {
        let now = self.switch.sent.load(Ordering::SeqCst);
        self.switch.flip_at.store(now + bytes, Ordering::SeqCst);
    }

    /// Whether the bit asked for has been flipped.
    pub fn flipped(&self) -> bool {
        self.switch.flipped.load(Ordering::SeqCst)
    }

    /// Counts, from now, the reads from the server that hold `needle`
    /// (an S3 error code, say); see [`TcpProxy::needle_seen`].
    pub fn watch_answers_for(&self, needle: &str) {
        *self.switch.needle.lock().unwrap_or_else(|e| e.into_inner()) = needle.as_bytes().to_vec();
        self.switch.needle_seen.store(0, Ordering::SeqCst);
    }

    /// How many reads from the server held the watched needle.
    pub fn needle_seen(&self) -> u64 {
        self.switch.needle_seen.load(Ordering::SeqCst)
    }
}

/// Which way a pipe carries bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    ToServer,
    ToClient,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    s: &Switch,
    epoch: u64,
    way: Way,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        s.go(epoch).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match way {
            Way::ToServer => s.damage(&mut buf[..n]),
            Way::ToClient => s.watch(&buf[..n]),
        }
        s.go(epoch).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        s.moved(n);
    }
    let _ = to.shutdown().await;
}

/// A listener that accepts connections and never answers (nor closes).
pub struct BlackHole {
    /// Where clients connect.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    /// A black hole on a fresh port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        Self { addr, task }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
