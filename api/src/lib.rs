//! The driftless HTTP API (axum): auth, namespaces, upload sessions with
//! presigned multipart uploads and trust-but-verify commits, downloads.
//!
//! A library with a thin `main`: [`Server::start`] opens the database and the
//! blob store (embedded or external), [`app`] builds the router, [`run`]
//! serves it until the shutdown future resolves. Tests call the same
//! functions on port 0.

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod openapi;
pub mod ops;
pub mod reconcile;
pub mod routes;
pub mod serve;
pub mod state;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use driftless_consumer::run::{ConsumerSetup, start_consumers, start_relay};
use driftless_protocol::{CursorKey, ErrorCode};
use driftless_store::{BlobStore, Db, EmbeddedS3, EventBus};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{Config, S3Choice};
use crate::error::ApiError;
use crate::state::{AppState, Settings};

/// Largest request body (a batch with a 50 GB file's manifest is ~2 MB).
pub const BODY_LIMIT: usize = 16 << 20;

/// The whole API.
pub fn app(state: AppState) -> Router {
    let cors = cors(&state.settings.cors_origins);
    let router: Router<AppState> = api_routes().into();
    let router = router
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Outermost last: shed before any work, time everything (429s too).
        .layer(middleware::from_fn_with_state(state.clone(), ops::admit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Every route, with its OpenAPI description.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(metrics::serve))
        .routes(routes!(openapi_json))
        .routes(routes!(auth::login))
        .merge(routes::namespaces::router())
        .merge(routes::devices::router())
        .merge(routes::uploads::router())
        .merge(routes::downloads::router())
        .merge(routes::history::router())
        .merge(routes::changes::router())
}

/// The OpenAPI document of every route (see [`api_routes`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This API's OpenAPI 3.1 document",
    responses((status = 200, description = "The document", content_type = "application/json"))
)]
async fn openapi_json() -> impl axum::response::IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| openapi().to_pretty_json().unwrap_or_default());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.as_str(),
    )
}

/// CORS for the configured browser origins; none configured, no CORS headers.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderValue, Method, header};
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::RANGE])
            .expose_headers([header::CONTENT_RANGE, header::ETAG])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, with the
/// background work beside it: the outbox relay (published by whichever
/// process holds its lease) and the notifier that wakes long-polls, and,
/// with `run_consumers`, the chunk verifier (event-driven and sweep) and
/// the session sweeper.
///
/// Shutdown is graceful, in this order: `/readyz` turns 503 and held
/// long-polls return at once (`changed: false`, a short jittered
/// `backoff_ms`: the device reconnects, to another server); no new
/// connection is accepted and requests in progress finish; commits still
/// running for a client that left are waited for; then the workers stop,
/// the relay publishing what was committed and flushing its producer. All
/// of it within `shutdown_grace`; past it the rest is abandoned (every
/// step is safe to cut: commits are idempotent, unpublished rows stay in
/// the outbox).
pub async fn run(
    listener: TcpListener,
    mut state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // A fresh token per run: a server paused and served again (tests)
    // starts out not stopping.
    state.stopping = CancellationToken::new();
    let stopping = state.stopping.clone();
    let commits = state.commits.clone();
    commits.reopen();
    let grace = state.settings.shutdown_grace;
    if let Err(e) = state.events.prepare().await {
        tracing::warn!(error = %e, "event stream not ready; the relay retries");
    }
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    // Follow first: a waiter that starts now sees every later event.
    tasks.push(match &state.events {
        EventBus::InProcess(bus) => driftless_consumer::notifier::follow_in_process(
            bus.subscribe(),
            state.notifier.clone(),
            cancel.clone(),
        ),
        EventBus::Kafka(config) => driftless_consumer::notifier::follow_kafka(
            config.clone(),
            state.notifier.clone(),
            cancel.clone(),
        ),
    });
    tasks.extend(
        start_relay(
            &state.db,
            &state.events,
            Some(state.notifier.clone()),
            &state.relay,
            None,
            &cancel,
        )
        .context("starting the outbox relay")?,
    );
    if state.settings.run_consumers {
        let setup = ConsumerSetup {
            db: state.db.clone(),
            blob: state.blob.clone(),
            events: state.events.clone(),
            session_grace: state.settings.session_grace,
            upload_ttl: state.settings.upload_ttl,
            failpoint: None,
        };
        tasks.extend(start_consumers(setup, &cancel).context("starting the consumers")?);
    }
    let router = app(state.clone());
    let serve = serve::serve(listener, router, &state, {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining long-polls and requests");
            stopping.cancel();
        }
    });
    let deadline = async {
        stopping.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let served = tokio::select! {
        () = serve => Ok(()),
        () = deadline => {
            tracing::warn!(?grace, "requests still running after the shutdown grace; leaving them");
            Ok(())
        }
    };
    commits.close();
    let started = tokio::time::Instant::now();
    if tokio::time::timeout(grace, commits.wait()).await.is_err() {
        tracing::warn!(
            running = commits.len(),
            "commits still running after the shutdown grace; their clients retry them"
        );
    }
    cancel.cancel();
    let left = grace
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    if tokio::time::timeout(left, futures_util::future::join_all(tasks))
        .await
        .is_err()
    {
        tracing::warn!("workers still busy after the shutdown grace; leaving them");
    }
    tracing::info!("stopped");
    served
}

/// A started server's parts: the state to serve, and the embedded S3
/// endpoint when there is one (it stops when dropped).
pub struct Server {
    /// Handler state.
    pub state: AppState,
    /// The in-process S3 endpoint, if configured.
    pub embedded_s3: Option<EmbeddedS3>,
}

impl Server {
    /// Opens the database (migrating it) and the blob store.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let db = Db::connect(&config.database_url)
            .await
            .context("opening the metadata database")?;
        let (blob_config, embedded_s3) = match &config.s3 {
            S3Choice::External(c) => (c.clone(), None),
            S3Choice::Embedded { listen } => {
                let keys = config::secret_file(&config.data_dir.join("s3.secret"))?;
                let secret = base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    &keys,
                );
                let listener = TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding embedded S3 on {listen}"))?;
                let s3 = EmbeddedS3::start(
                    &config.data_dir.join("blobs"),
                    listener,
                    "driftless-embedded",
                    &secret,
                )
                .await?;
                (s3.blob_config(&config.bucket, config.presign_ttl), Some(s3))
            }
        };
        let blob = BlobStore::new(&blob_config);
        blob.ensure_bucket()
            .await
            .context("preparing the S3 bucket")?;
        // Browsers on the allowed origins PUT and GET presigned URLs
        // straight from the page: the bucket must answer their CORS
        // preflights. A key that may not set the rule leaves it to the
        // operator (the rule is in the log). The embedded endpoint (s3s-fs)
        // keeps no bucket rules: answering browsers there is the web
        // client's work, not yet done.
        if embedded_s3.is_none() && !config.cors_origins.is_empty() {
            match blob.ensure_cors(&config.cors_origins).await {
                Ok(()) => tracing::info!(origins = ?config.cors_origins, "bucket CORS rule set"),
                Err(e) => tracing::warn!(
                    error = %e,
                    rule = %driftless_store::cors_rule_xml(&config.cors_origins),
                    "could not set the bucket's CORS rule; browsers cannot upload \
                     until an operator sets it"
                ),
            }
        }
        let state = AppState::new(
            db,
            blob,
            vec![CursorKey::new(1, &config.cursor_secret)],
            Settings {
                upload_ttl: config.upload_ttl,
                cors_origins: config.cors_origins.clone(),
                // A URL issued just before expiry works this long after it.
                session_grace: config.presign_ttl,
                long_poll_soft_limit: config.long_poll_soft_limit,
                max_long_polls: config.max_long_polls,
                max_in_flight: config.max_in_flight,
                shutdown_grace: config.shutdown_grace,
                run_consumers: config.run_consumers,
                max_file_bytes: config.max_file_bytes,
                token_ttl: config.token_ttl,
                max_in_flight_per_user: config.max_in_flight_per_user,
                max_long_polls_per_device: config.max_long_polls_per_device,
                max_connections_per_address: config.max_connections_per_address,
                login_burst: config.login_burst,
                login_every: config.login_interval,
                login_concurrency: config.login_concurrency,
                header_read_timeout: config.header_read_timeout,
                metrics_token: config.metrics_token.clone(),
            },
        )?;
        let state = match &config.kafka {
            Some(k) => state.with_events(EventBus::Kafka(k.clone())),
            None => state,
        };
        Ok(Self { state, embedded_s3 })
    }
}

/// Creates a user (with a home folder) and a first device; returns the token.
pub async fn create_user(
    state: &AppState,
    name: &str,
    password: Option<&str>,
    device: &str,
) -> anyhow::Result<String> {
    names::check("user name", name, 64).map_err(anyhow::Error::msg)?;
    names::check("device name", device, 100).map_err(anyhow::Error::msg)?;
    let hash = password.map(auth::hash_password).transpose()?;
    let (user, _) = driftless_store::meta::accounts::create_user(&state.db, name, hash.as_deref())
        .await?
        .with_context(|| format!("user {name:?} already exists"))?;
    let (token, token_hash) = auth::new_token();
    let expires = state
        .settings
        .token_ttl
        .map(|ttl| driftless_store::db::now_ms() + ttl.as_millis() as i64);
    driftless_store::meta::accounts::create_device(&state.db, user, device, &token_hash, expires)
        .await?;
    Ok(token)
}
