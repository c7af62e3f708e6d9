//! Operations endpoints and guards: `/healthz` (the process answers),
//! `/readyz` (it can serve: database, object storage, event stream, not
//! shutting down) and load shedding (429 with `Retry-After`).

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Serialize;

use crate::error::ApiError;
use crate::metrics::Shed;
use crate::state::AppState;

/// Longest a readiness check waits for one dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Routes that are never shed: probes, scrapes, and long-polls (they wait
/// rather than work, and have their own limit).
fn exempt(route: &str) -> bool {
    matches!(
        route,
        "/healthz" | "/readyz" | "/metrics" | "/v1/namespaces/{ns}/changes/wait"
    )
}

/// A delay in whole seconds, spread over `lo..=hi` so that the clients
/// turned away together do not come back together.
pub fn retry_after(lo: u64, hi: u64) -> u64 {
    rand::rng().random_range(lo..=hi)
}

/// Admits a request if fewer than `max_in_flight` others are running;
/// otherwise answers 429 `rate_limited` at once, with `Retry-After`. A
/// reconnect storm then costs the server a cheap refusal per extra
/// request instead of a queue that makes every request time out. (A
/// streamed download body is counted until its handler answers, not
/// until the last byte.)
pub async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if route.is_some_and(exempt) {
        return next.run(req).await;
    }
    let Ok(permit) = state.admission.clone().try_acquire_owned() else {
        state.metrics.shed(Shed::Requests);
        return ApiError::rate_limited(
            format!(
                "the server is at its limit of {} requests at once",
                state.settings.max_in_flight
            ),
            retry_after(1, 5),
        )
        .into_response();
    };
    let resp = next.run(req).await;
    drop(permit);
    resp
}

/// `GET /healthz`: the process answers (liveness).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness: the process answers",
    responses((status = 200, description = "ok", body = String, content_type = "text/plain"))
)]
pub async fn healthz() -> &'static str {
    "ok"
}

/// One dependency's state in `/readyz`.
#[derive(Serialize, utoipa::ToSchema)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    /// The answer says only what failed; the error itself (which may name
    /// internal hosts) goes to the log.
    fn from<E: std::fmt::Display>(
        what: &str,
        r: Result<Result<(), E>, tokio::time::error::Elapsed>,
    ) -> Self {
        let error = match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::warn!(check = what, error = %e, "readiness check failed");
                Some("unavailable".to_owned())
            }
            Err(_) => {
                tracing::warn!(check = what, "readiness check timed out");
                Some(format!("no answer within {CHECK_TIMEOUT:?}"))
            }
        };
        Self {
            ok: error.is_none(),
            error,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    ready: bool,
    stopping: bool,
    database: Check,
    object_storage: Check,
    /// Kafka (or the in-process bus). Not required: commits go on into the
    /// outbox and long-polls poll the journal while it is down.
    events: Check,
}

/// `GET /readyz`: 200 when the database and object storage answer and the
/// server is not shutting down, else 503; the body says which check failed.
/// The event stream is checked and reported but does not make the server
/// unready: taking every API server out of rotation because Kafka is down
/// would turn a degraded service (events late, long-polls polling) into an
/// outage.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: database and object storage answer, not shutting down",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; the body says which check failed", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let db = tokio::time::timeout(CHECK_TIMEOUT, async {
        sqlx::query("SELECT 1")
            .execute(state.db.pool())
            .await
            .map(|_| ())
    });
    let s3 = tokio::time::timeout(CHECK_TIMEOUT, state.blob.check());
    let (db, s3) = tokio::join!(db, s3);
    let events = if state.notifier.healthy() {
        Check {
            ok: true,
            error: None,
        }
    } else {
        Check {
            ok: false,
            error: Some("the event stream is unreachable; long-polls poll the journal".into()),
        }
    };
    let stopping = state.stopping.is_cancelled();
    let r = Readiness {
        database: Check::from("database", db),
        object_storage: Check::from("object_storage", s3),
        events,
        stopping,
        ready: false,
    };
    let ready = !stopping && r.database.ok && r.object_storage.ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(Readiness { ready, ..r })).into_response()
}
