//! Idle and slow connections cannot lock other clients out: a connection
//! that sends no complete request headers within the deadline is closed
//! (the same deadline bounds idling between requests), and one address
//! holds a bounded number of connections.

use std::time::Duration;

use driftless_tests::{AppOptions, TestApp, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn connect_from(
    ip: &str,
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(format!("{ip}:0").parse().unwrap())?;
    s.connect(to).await
}

/// Whether the server closed the connection (EOF or reset) within `limit`.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(limit, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => {
            // An answer (408 or similar), then the close.
            matches!(
                tokio::time::timeout(limit, s.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        }
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_idle_connections_from_one_address_lock_nobody_out() {
    let app = TestApp::spawn_configured(
        TestDb::postgres().await,
        AppOptions {
            header_read_timeout: Duration::from_secs(2),
            ..AppOptions::default()
        },
    )
    .await;
    let addr: std::net::SocketAddr = app.url.trim_start_matches("http://").parse().unwrap();
    // 1,100 connections that never send a byte, and 20 that send half a
    // request line and stall (slowloris), all from one address.
    let mut idle = Vec::new();
    for _ in 0..1100 {
        if let Ok(s) = connect_from("127.0.0.2", addr).await {
            idle.push(s);
        }
    }
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from("127.0.0.2", addr).await.unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        slow.push(s);
    }
    // Everyone else is served at once.
    let t = std::time::Instant::now();
    let c = reqwest::Client::builder()
        .local_address("127.0.0.1".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let resp = c.get(format!("{}/healthz", app.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The address got at most its share; the rest were closed at once.
    let mut open_now = 0;
    for s in &mut idle {
        if !closed_within(s, Duration::from_millis(20)).await {
            open_now += 1;
        }
    }
    assert!(
        open_now <= 256,
        "{open_now} connections of one address stayed open"
    );
    // And the idle and slow ones are closed by their deadline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for s in idle.iter_mut().chain(slow.iter_mut()) {
        assert!(
            closed_within(s, Duration::from_secs(1)).await,
            "an idle connection outlived its header deadline"
        );
    }
    // A keep-alive connection that idles after a request is closed too.
    let mut s = connect_from("127.0.0.3", addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut s, Duration::from_secs(4)).await,
        "an idle keep-alive connection was kept"
    );
}
