//! Changes (DESIGN.md "Changes, cursors and events"): the snapshot a new
//! device bootstraps from, journal pages after a signed cursor, the
//! long-poll that returns as soon as the namespace moves, and the cursor a
//! device reports as applied.
//!
//! A bootstrap lists the live files as they are while it pages (each entry
//! with its rev), then hands over a journal cursor at the head seen when it
//! began: a change made during the bootstrap may arrive twice, never zero
//! times, and a client applies an entry only if its rev is newer.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use driftless_consumer::Wake;
use driftless_protocol::{
    ChangeKind, ChangesPage, Cursor, DeviceId, ErrorCode, NamespaceId, Position, Seq, SyncPath,
    WaitResponse,
};
use driftless_store::meta::journal::{self, Bounds};
use rand::Rng;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{Json, Query};
use crate::metrics::Shed;
use crate::state::AppState;
use driftless_protocol::Problem;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Entries per page unless asked otherwise, and at most.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 5000;
/// Long-poll timeout unless asked otherwise, and the bounds.
const DEFAULT_WAIT: u64 = 60;
const MAX_WAIT: u64 = 300;
/// How often a waiter re-reads the journal itself: rarely while the event
/// stream delivers, every second while it does not.
const POLL_HEALTHY: Duration = Duration::from_secs(30);
const POLL_DEGRADED: Duration = Duration::from_secs(1);

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(changes))
        .routes(routes!(wait))
        .routes(routes!(report_cursor))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ChangesQuery {
    /// Where the last page ended (none: start with a snapshot).
    cursor: Option<String>,
    /// Most entries in the page.
    limit: Option<usize>,
    /// Only changes under this folder path.
    prefix: Option<String>,
}

fn cursor_for(state: &AppState, ns: NamespaceId, s: &str) -> ApiResult<Cursor> {
    Cursor::decode_for(s, &state.cursor_keys, ns)
        .map_err(|e| ApiError::new(e.code(), e.to_string()))
}

/// Signs a cursor, stamped with the journal entry it stands on.
async fn encode(state: &AppState, c: &Cursor) -> ApiResult<String> {
    let key = state
        .cursor_keys
        .first()
        .ok_or_else(|| ApiError::code(ErrorCode::Internal))?;
    let mut c = c.clone();
    c.stamp = journal::stamp(&state.db, c.namespace, c.seq()).await?;
    Ok(c.encode(key))
}

/// A cursor into a history this folder no longer has: its journal entry
/// at the cursor's seq is another one now (the folder was restored from a
/// backup and has committed other changes since), or is missing though
/// not compacted. The device must start over, and compare (410).
async fn check_history(state: &AppState, b: &Bounds, c: &Cursor) -> ApiResult<()> {
    let Some(stamp) = c.stamp else {
        return Ok(());
    };
    let seq = c.seq();
    if seq <= b.compacted || seq > b.head {
        return Ok(()); // check_retained decides
    }
    if journal::stamp(&state.db, c.namespace, seq).await? != Some(stamp) {
        return Err(ApiError::new(
            ErrorCode::CursorReset,
            format!(
                "the folder's history changed since this cursor (seq {} is another change now: restored from a backup?); bootstrap again without a cursor",
                seq.0
            ),
        ));
    }
    Ok(())
}

async fn bounds(state: &AppState, ns: NamespaceId) -> ApiResult<Bounds> {
    journal::bounds(&state.db, ns)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// A position the journal can no longer serve: start again without a cursor.
fn check_retained(b: &Bounds, seq: Seq) -> ApiResult<()> {
    if seq < b.compacted || seq > b.head {
        return Err(ApiError::new(
            ErrorCode::CursorReset,
            format!(
                "the journal holds seq {}..={}; bootstrap again without a cursor",
                b.compacted.0 + 1,
                b.head.0
            ),
        ));
    }
    Ok(())
}

/// After reading journal entries past `after`: if compaction moved past
/// `after` meanwhile, the page may have lost entries to it, silently. The
/// caller must start over (410), never take the page.
async fn still_retained(state: &AppState, ns: NamespaceId, after: Seq) -> ApiResult<()> {
    let now = bounds(state, ns).await?;
    if after < now.compacted {
        return check_retained(&now, after);
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/changes",
    tag = "changes",
    summary = "A page of the folder's changes: a snapshot first, then the journal from the cursor",
    params(("ns" = u64, Path, description = "Folder (namespace) id"), ChangesQuery),
    responses((status = 200, description = "A page and the cursor after it", body = ChangesPage), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn changes(
    State(state): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
    Query(q): Query<ChangesQuery>,
) -> ApiResult<axum::Json<ChangesPage>> {
    let ns = super::namespace_id(&ns)?;
    caller.role(&state, ns).await?;
    // Read before the page: everything up to this head is visible to it.
    let b = bounds(&state, ns).await?;
    let cursor = match &q.cursor {
        Some(c) => cursor_for(&state, ns, c)?,
        None => Cursor {
            namespace: ns,
            prefix: q.prefix.as_deref().map(super::sync_path).transpose()?,
            position: Position::Snapshot {
                as_of: b.head,
                after: None,
            },
            stamp: None,
        },
    };
    check_history(&state, &b, &cursor).await?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let prefix = cursor.prefix.clone();
    let next = |position| Cursor {
        namespace: ns,
        prefix: prefix.clone(),
        position,
        stamp: None,
    };
    let page = match &cursor.position {
        Position::Snapshot { as_of, after } => {
            check_retained(&b, *as_of)?;
            let mut entries =
                journal::snapshot_page(&state.db, ns, prefix.as_ref(), after.as_ref(), limit + 1)
                    .await?;
            let more = entries.len() > limit;
            entries.truncate(limit);
            let position = match entries.last() {
                Some(last) if more => Position::Snapshot {
                    as_of: *as_of,
                    after: Some(
                        SyncPath::parse(&last.path)
                            .map_err(|_| ApiError::code(ErrorCode::Internal))?,
                    ),
                },
                _ => Position::Journal { after: *as_of },
            };
            ChangesPage {
                entries,
                cursor: encode(&state, &next(position)).await?,
                has_more: more || b.head > *as_of,
                snapshot: true,
            }
        }
        Position::Journal { after } => {
            check_retained(&b, *after)?;
            let mut entries =
                journal::journal_page(&state.db, ns, prefix.as_ref(), *after, limit + 1).await?;
            still_retained(&state, ns, *after).await?;
            let more = entries.len() > limit;
            entries.truncate(limit);
            let last = entries.last().and_then(|e| e.seq).unwrap_or(*after);
            // A full page stops at its last entry; otherwise nothing up to
            // the head read before the page is left (a prefix may skip many).
            let upto = if more { last } else { last.max(b.head) };
            ChangesPage {
                entries,
                cursor: encode(&state, &next(Position::Journal { after: upto })).await?,
                has_more: more,
                snapshot: false,
            }
        }
    };
    Ok(axum::Json(page))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WaitQuery {
    /// The cursor to wait past.
    cursor: String,
    /// Seconds to hold the request (1 to the server's maximum).
    timeout: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/namespaces/{ns}/changes/wait",
    tag = "changes",
    summary = "Long-poll: returns when the folder moves past the cursor, or at the timeout",
    params(("ns" = u64, Path, description = "Folder (namespace) id"), WaitQuery),
    responses((status = 200, description = "Whether the folder changed; under load, a backoff", body = WaitResponse), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn wait(
    State(state): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<axum::Json<WaitResponse>> {
    let ns = super::namespace_id(&ns)?;
    caller.role(&state, ns).await?;
    let cursor = cursor_for(&state, ns, &q.cursor)?;
    let mut after = match cursor.position {
        Position::Journal { after } => after,
        // Still bootstrapping: there is a page to fetch now.
        Position::Snapshot { .. } => return Ok(answer(true, None)),
    };
    let b = bounds(&state, ns).await?;
    check_retained(&b, after)?;
    check_history(&state, &b, &cursor).await?;
    let mut echo = Echo {
        state: &state,
        ns,
        cursor: &cursor,
        device: caller.device,
        skipped: false,
    };
    if b.head > after && !echo.own_only(&mut after, b.head).await? {
        return echo.moved(after).await;
    }
    let secs = q.timeout.unwrap_or(DEFAULT_WAIT).clamp(1, MAX_WAIT);
    // Jitter spreads the reconnects of many devices that started together.
    let jitter = rand::rng().random_range(0..=secs * 100);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(secs) + Duration::from_millis(jitter);
    // One device holds a few long-polls at most (one per folder it
    // syncs, and some slack): one token cannot take every slot.
    let Some(_slot) = state.limits.long_polls.try_take(&caller.device) else {
        state.metrics.shed(Shed::LongPolls);
        return Err(ApiError::rate_limited(
            format!(
                "this device holds {} long-polls already",
                state.limits.long_polls.max()
            ),
            crate::ops::retry_after(5, 30),
        ));
    };
    let mut revoked = state.revoked.subscribe();
    let notifier = &state.notifier;
    if notifier.held() >= state.settings.max_long_polls {
        state.metrics.shed(Shed::LongPolls);
        return Err(ApiError::rate_limited(
            format!(
                "this server holds its limit of {} long-polls",
                state.settings.max_long_polls
            ),
            crate::ops::retry_after(5, 30),
        ));
    }
    let mut waiter = notifier.subscribe(ns);
    loop {
        // Registered first, checked second: a commit in between still wakes us.
        let head = bounds(&state, ns).await?.head;
        if head > after && !echo.own_only(&mut after, head).await? {
            return echo.moved(after).await;
        }
        let poll = if notifier.healthy() {
            POLL_HEALTHY
        } else {
            POLL_DEGRADED
        };
        let woke = async {
            loop {
                match waiter.next().await {
                    Wake::Moved(seq) if seq > after => return,
                    Wake::Moved(_) => {}
                    Wake::Check => return,
                }
            }
        };
        tokio::select! {
            _ = woke => {}
            _ = tokio::time::sleep(poll) => {}
            _ = tokio::time::sleep_until(deadline) => {
                let mut r = answer(false, echo.advanced(after).await?);
                r.backoff_ms = backoff(&state);
                return Ok(r);
            }
            // Signed out on the server (here): the long-poll ends now.
            r = revoked.recv() => {
                if matches!(r, Ok(d) if d == caller.device) {
                    return Err(ApiError::new(
                        ErrorCode::Unauthorized,
                        "this device was signed out on the server; sign in again",
                    ));
                }
            }
            // Shutting down: let the device go now, to come back (to
            // another server) after a short pause spread over 0-2 s.
            _ = state.stopping.cancelled() => {
                let mut r = answer(false, echo.advanced(after).await?);
                r.backoff_ms = Some(rand::rng().random_range(0..=2_000));
                return Ok(r);
            }
        }
    }
}

/// Most entries a long-poll reads to tell whether a move was the caller's own.
const ECHO_SCAN: usize = 1000;

/// Tells a caller's own changes apart from others': a device is not woken
/// to fetch entries it wrote itself (it would only skip them).
struct Echo<'a> {
    state: &'a AppState,
    ns: NamespaceId,
    cursor: &'a Cursor,
    device: DeviceId,
    /// Whether `after` moved past own entries.
    skipped: bool,
}

impl Echo<'_> {
    /// If every entry in `(after, head]` (under the cursor's prefix) was
    /// written by the caller, moves `after` to `head` and says so.
    async fn own_only(&mut self, after: &mut Seq, head: Seq) -> ApiResult<bool> {
        let entries = journal::journal_page(
            &self.state.db,
            self.ns,
            self.cursor.prefix.as_ref(),
            *after,
            ECHO_SCAN + 1,
        )
        .await?;
        still_retained(self.state, self.ns, *after).await?;
        let within: Vec<_> = entries
            .iter()
            .filter(|e| e.seq.is_some_and(|s| s <= head))
            .collect();
        let mine = within.len() <= ECHO_SCAN
            && within
                .iter()
                .all(|e| e.device_id == Some(self.device) && e.kind != ChangeKind::Repair);
        if mine {
            // A prefix may have filtered every entry: the cursor moves to the
            // head all the same (nothing under it changed).
            *after = head;
            self.skipped = true;
        }
        Ok(mine)
    }

    async fn advanced(&self, after: Seq) -> ApiResult<Option<String>> {
        if !self.skipped {
            return Ok(None);
        }
        let c = Cursor {
            namespace: self.ns,
            prefix: self.cursor.prefix.clone(),
            position: Position::Journal { after },
            stamp: None,
        };
        encode(self.state, &c).await.map(Some)
    }

    async fn moved(&self, after: Seq) -> ApiResult<axum::Json<WaitResponse>> {
        Ok(answer(true, self.advanced(after).await?))
    }
}

fn answer(changed: bool, cursor: Option<String>) -> axum::Json<WaitResponse> {
    axum::Json(WaitResponse {
        changed,
        backoff_ms: None,
        cursor,
    })
}

/// Under load (more long-polls held than the process is sized for), ask
/// idle clients to wait a little before polling again.
fn backoff(state: &AppState) -> Option<u64> {
    let held = state.notifier.held();
    let limit = state.settings.long_poll_soft_limit;
    (held > limit).then(|| rand::rng().random_range(1_000..=10_000))
}

#[derive(Deserialize, serde::Serialize, utoipa::ToSchema)]
struct CursorReport {
    cursor: String,
}

#[utoipa::path(
    post,
    path = "/v1/namespaces/{ns}/cursor",
    tag = "changes",
    summary = "Report the cursor this device has applied (never moves back)",
    params(("ns" = u64, Path, description = "Folder (namespace) id")),
    request_body = CursorReport,
    responses((status = 204, description = "Recorded"), (status = "default", description = "An RFC 9457 problem document with a stable `code`", body = Problem, content_type = "application/problem+json")),
    security(("device_token" = []))
)]
async fn report_cursor(
    State(state): State<AppState>,
    caller: Caller,
    Path(ns): Path<String>,
    Json(body): Json<CursorReport>,
) -> ApiResult<StatusCode> {
    let ns = super::namespace_id(&ns)?;
    caller.role(&state, ns).await?;
    let cursor = cursor_for(&state, ns, &body.cursor)?;
    if let Position::Journal { after } = cursor.position {
        journal::set_device_cursor(&state.db, ns, caller.device, after).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
