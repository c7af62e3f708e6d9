//! The `driftless-consumer` command line, in the library so that tests can
//! parse what deployments run (docker-compose.yml's commands) with it.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use driftless_store::env::{self, Source};

/// The `driftless-consumer` command line.
#[derive(Parser)]
#[command(
    name = "driftless-consumer",
    version,
    about = "driftless event-stream workers"
)]
pub struct Cli {
    /// A TOML configuration file (also `DRIFTLESS_CONFIG`); the
    /// environment overrides it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    /// What to do (default: run).
    pub command: Option<Command>,
}

/// Its subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the relay, the verifier and the sweepers until interrupted (the default).
    Run,
    /// Print the outbox backlog and the lag of the consumers and the devices.
    Lag {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Loads the configuration file and starts the logs, the same way in every
/// server binary: to stderr (stdout carries answers: a token, `--json`),
/// filtered by `RUST_LOG` (default `info`), as text or, with
/// `DRIFTLESS_LOG_FORMAT=json`, one JSON object per line.
pub fn start(config: Option<&Path>) -> anyhow::Result<()> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let warnings = env::load(config)?;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match env::var("DRIFTLESS_LOG_FORMAT").as_deref() {
        None | Some("text") => layer.boxed(),
        Some("json") => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        Some(other) => anyhow::bail!("DRIFTLESS_LOG_FORMAT: {other:?} is neither text nor json"),
    };
    tracing_subscriber::registry()
        .with(
            layer
                .with_filter(filter)
                .with_filter(tracing_subscriber::filter::filter_fn(secret_safe)),
        )
        .init();
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(())
}

/// Libraries whose debug and trace logs carry request lines and headers:
/// S3 requests (`Authorization`, presigned URLs with their signatures),
/// SigV4 canonical requests, HTTP internals. Their logs stop at `info`
/// whatever `RUST_LOG` says, so no secret reaches a log at any level.
pub const NOISY_SECRET_TARGETS: &[&str] = &[
    "s3s",
    "s3s_fs",
    "aws_sigv4",
    "aws_smithy",
    "aws_sdk_s3",
    "aws_config",
    "aws_runtime",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "tower_http",
];

/// Whether an event may be logged: anything at `info` or above, and
/// debug and trace only from targets outside [`NOISY_SECRET_TARGETS`]
/// (matched by prefix: `aws_smithy` covers `aws_smithy_runtime`).
pub fn secret_safe(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::INFO
        || !NOISY_SECRET_TARGETS
            .iter()
            .any(|t| meta.target().starts_with(t))
}

/// The settings in force, one per line: name, value (secrets redacted)
/// and where it came from; or as a JSON object.
pub fn show_settings(json: bool) -> String {
    let shown = env::shown();
    let source = |s: Source| match s {
        Source::Env => "env",
        Source::File => "file",
        Source::Default => "default",
    };
    if json {
        let map: serde_json::Map<String, serde_json::Value> = shown
            .into_iter()
            .map(|(k, v, s)| {
                (
                    k.to_owned(),
                    serde_json::json!({"value": v, "source": source(s)}),
                )
            })
            .collect();
        return serde_json::Value::Object(map).to_string();
    }
    let mut out = String::new();
    for (k, v, s) in shown {
        out.push_str(&format!(
            "{k:<32} {:<8} {}\n",
            source(s),
            v.as_deref().unwrap_or("(default)")
        ));
    }
    out
}

/// Resolves when the process is asked to stop: SIGTERM (docker, systemd,
/// Kubernetes) or SIGINT (Ctrl-C).
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops gracefully");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
