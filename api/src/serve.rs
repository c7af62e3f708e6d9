//! Serving connections: what a client may hold. Every connection gets a
//! deadline to send its request headers, which also bounds how long it may
//! sit idle between requests (hyper's header read timeout); one address
//! holds at most `max_connections_per_address` connections and the process
//! at most what its file-descriptor limit leaves room for, so idle or slow
//! clients cannot lock everyone else out. Each request carries its peer's
//! address (`ConnectInfo`) for the per-address limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::metrics::Shed;
use crate::state::AppState;

/// File descriptors kept free for the database, object storage and files.
const FD_RESERVE: u64 = 256;

/// Connections this process may hold: its open-file limit (raised to the
/// hard limit where allowed) less a reserve for everything else.
pub fn connection_budget() -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut lim = getrlimit(Resource::Nofile);
        if lim.current < lim.maximum {
            lim.current = lim.maximum;
            if setrlimit(Resource::Nofile, lim).is_err() {
                lim = getrlimit(Resource::Nofile);
            }
        }
        let soft = lim.current.unwrap_or(1 << 20);
        soft.saturating_sub(FD_RESERVE).clamp(64, 1 << 20) as usize
    }
    #[cfg(not(unix))]
    {
        4096
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, lets requests in progress finish (idle connections close at
/// once) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    state: &AppState,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let budget = Arc::new(tokio::sync::Semaphore::new(connection_budget()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.settings.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) and the like: wait for
                    // connections to close rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = state.limits.connections.try_take(&addr.ip()) else {
            state.metrics.shed(Shed::Connections);
            tracing::debug!(peer = %addr.ip(), "too many connections from one address; closed");
            continue;
        };
        let Ok(permit) = budget.clone().try_acquire_owned() else {
            state.metrics.shed(Shed::Connections);
            tracing::warn!("at the process's connection limit; closed a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let deadline = state.settings.header_read_timeout;
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // The first byte within the header deadline: hyper's own timer
            // starts only once it knows which HTTP version it speaks.
            let mut first = [0u8; 1];
            match tokio::time::timeout(deadline, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return drop((slot, permit)),
            }
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop((slot, permit));
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
