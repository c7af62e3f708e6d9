//! Prometheus metrics, served at `GET /metrics` in the text exposition
//! format (0.0.4).
//!
//! Counted as they happen: request latency per route and status, bytes of
//! upload parts confirmed in S3, file operations per outcome, requests
//! shed. Read at scrape time: long-polls held, event stream health, and
//! from the database (at most every [`DB_FIGURES_TTL`], so a scrape storm
//! costs one query set): the outbox backlog, the verifier's lag and the
//! last reconcile run. Labels never carry ids or paths: their number
//! stays bounded whatever the users do.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use driftless_protocol::{FileResult, Outcome};
use driftless_store::meta::{journal, marks};

use crate::state::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// How long figures read from the database are reused.
pub const DB_FIGURES_TTL: Duration = Duration::from_secs(10);
/// Longest a scrape waits for the database.
const DB_FIGURES_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// What a request is counted under.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RequestKey {
    method: String,
    /// The route's pattern (`/v1/uploads/{id}`), never the raw path.
    route: String,
    status: u16,
}

/// Why a request was turned away before it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// Too many requests in flight.
    Requests,
    /// Too many long-polls held.
    LongPolls,
    /// Too many sign-in attempts.
    Logins,
    /// Too many connections from one address.
    Connections,
}

/// The process's counters (cheap to share: one per [`AppState`]).
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<HashMap<RequestKey, Histogram>>,
    upload_bytes: AtomicU64,
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
    shed_requests: AtomicU64,
    shed_long_polls: AtomicU64,
    shed_logins: AtomicU64,
    shed_connections: AtomicU64,
    db_figures: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    fn request(&self, key: RequestKey, took: Duration) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Bytes of upload parts S3 confirmed at a commit.
    pub fn uploaded(&self, bytes: u64) {
        self.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The outcomes of a batch of file operations.
    pub fn outcomes(&self, results: &[FileResult]) {
        let mut o = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        for r in results {
            let name = match r.outcome {
                Outcome::Committed { .. } => "committed",
                Outcome::Conflict { .. } => "conflict",
                Outcome::Pending => "pending",
                Outcome::Error { .. } => "error",
            };
            *o.entry(name).or_default() += 1;
        }
    }

    /// A request turned away.
    pub fn shed(&self, why: Shed) {
        match why {
            Shed::Requests => &self.shed_requests,
            Shed::LongPolls => &self.shed_long_polls,
            Shed::Logins => &self.shed_logins,
            Shed::Connections => &self.shed_connections,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    fn counters(&self, s: &mut String) {
        s.push_str(
            "# HELP driftless_http_request_duration_seconds Time to answer an API request, by route and status.\n\
             # TYPE driftless_http_request_duration_seconds histogram\n",
        );
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keys: Vec<_> = requests.keys().collect();
        keys.sort();
        for k in keys {
            let h = &requests[k];
            let labels = format!(
                "method=\"{}\",route=\"{}\",status=\"{}\"",
                k.method, k.route, k.status
            );
            let mut cumulative = 0;
            for (b, n) in BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                let _ = writeln!(
                    s,
                    "driftless_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                s,
                "driftless_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 driftless_http_request_duration_seconds_sum{{{labels}}} {}\n\
                 driftless_http_request_duration_seconds_count{{{labels}}} {}",
                h.count, h.sum, h.count
            );
        }
        drop(requests);
        let _ = writeln!(
            s,
            "# HELP driftless_upload_bytes_total Bytes of upload parts confirmed in object storage at commit.\n\
             # TYPE driftless_upload_bytes_total counter\n\
             driftless_upload_bytes_total {}",
            self.upload_bytes.load(Ordering::Relaxed)
        );
        s.push_str(
            "# HELP driftless_file_operations_total File operations answered, by outcome (committed, conflict, pending, error).\n\
             # TYPE driftless_file_operations_total counter\n",
        );
        let outcomes = self
            .outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for name in ["committed", "conflict", "pending", "error"] {
            let _ = writeln!(
                s,
                "driftless_file_operations_total{{outcome=\"{name}\"}} {}",
                outcomes.get(name).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            s,
            "# HELP driftless_shed_total Requests answered 429 to shed load, by kind.\n\
             # TYPE driftless_shed_total counter\n\
             driftless_shed_total{{kind=\"request\"}} {}\n\
             driftless_shed_total{{kind=\"long_poll\"}} {}\n\
             driftless_shed_total{{kind=\"login\"}} {}\n\
             driftless_shed_total{{kind=\"connection\"}} {}",
            self.shed_requests.load(Ordering::Relaxed),
            self.shed_long_polls.load(Ordering::Relaxed),
            self.shed_logins.load(Ordering::Relaxed),
            self.shed_connections.load(Ordering::Relaxed)
        );
    }
}

/// Times every request under its route's pattern.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    state.metrics.request(
        RequestKey {
            method,
            route,
            status: resp.status().as_u16(),
        },
        started.elapsed(),
    );
    resp
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics (text exposition format 0.0.4)",
    responses((status = 200, description = "The metrics", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn serve(
    State(state): State<AppState>,
    crate::auth::ClientAddr(peer): crate::auth::ClientAddr,
    headers: axum::http::HeaderMap,
) -> Response {
    // The figures say how busy the service is and how far behind: for the
    // operator's scraper, which presents the metrics token, or, with none
    // configured, for this machine only.
    let allowed = match &state.settings.metrics_token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| {
                use subtle_eq::eq;
                eq(t.as_bytes(), token.as_bytes())
            }),
        None => peer.is_none_or(|ip| ip.is_loopback()),
    };
    if !allowed {
        return crate::error::ApiError::new(
            driftless_protocol::ErrorCode::Unauthorized,
            "metrics need the metrics token (DRIFTLESS_METRICS_TOKEN), or a request from this machine",
        )
        .into_response();
    }
    let mut s = String::new();
    state.metrics.counters(&mut s);
    let _ = writeln!(
        s,
        "# HELP driftless_long_polls_held Long-polls this process holds open.\n\
         # TYPE driftless_long_polls_held gauge\n\
         driftless_long_polls_held {}\n\
         # HELP driftless_event_stream_healthy Whether events flow (0: long-polls poll the journal).\n\
         # TYPE driftless_event_stream_healthy gauge\n\
         driftless_event_stream_healthy {}",
        state.notifier.held(),
        u8::from(state.notifier.healthy())
    );
    s.push_str(&db_figures(&state).await);
    let mut resp = s.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Constant-time comparison of secrets.
mod subtle_eq {
    pub(super) fn eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The figures read from the database, cached for [`DB_FIGURES_TTL`].
async fn db_figures(state: &AppState) -> String {
    let mut cached = state.metrics.db_figures.lock().await;
    if let Some((at, text)) = cached.as_ref()
        && at.elapsed() < DB_FIGURES_TTL
    {
        return text.clone();
    }
    let text = match tokio::time::timeout(DB_FIGURES_TIMEOUT, read_db_figures(state)).await {
        Ok(Ok(text)) => format!("{text}{}", up(true)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: database figures unavailable");
            up(false)
        }
        Err(_) => {
            tracing::warn!("metrics: database figures timed out");
            up(false)
        }
    };
    *cached = Some((Instant::now(), text.clone()));
    text
}

fn up(ok: bool) -> String {
    format!(
        "# HELP driftless_metrics_database_up Whether the database figures below could be read.\n\
         # TYPE driftless_metrics_database_up gauge\n\
         driftless_metrics_database_up {}\n",
        u8::from(ok)
    )
}

async fn read_db_figures(state: &AppState) -> Result<String, sqlx::Error> {
    let mut s = String::new();
    let backlog = journal::backlog(&state.db).await?;
    let verifier = marks::consumer_lag(&state.db, "verifier").await?;
    let _ = writeln!(
        s,
        "# HELP driftless_outbox_backlog Committed journal entries not yet published to the event stream.\n\
         # TYPE driftless_outbox_backlog gauge\n\
         driftless_outbox_backlog {backlog}\n\
         # HELP driftless_consumer_lag_entries Journal entries a consumer has not processed yet.\n\
         # TYPE driftless_consumer_lag_entries gauge\n\
         driftless_consumer_lag_entries{{consumer=\"verifier\"}} {}\n\
         # HELP driftless_consumer_lag_folders Folders with entries a consumer has not processed yet.\n\
         # TYPE driftless_consumer_lag_folders gauge\n\
         driftless_consumer_lag_folders{{consumer=\"verifier\"}} {}",
        verifier.entries_behind, verifier.behind
    );
    if let Some(report) = driftless_consumer::reconcile::last_run(&state.db).await?
        && let Some(text) = driftless_consumer::reconcile::report::recorded_prometheus(&report)
    {
        s.push_str(&text);
    }
    Ok(s)
}
