//! Configuration: environment variables over an optional TOML file (see
//! `driftless_store::env`), over embedded defaults: with nothing set, the
//! server keeps SQLite metadata and an in-process S3 endpoint under
//! `./driftless-data` and needs no other service. `deploy/driftless.toml`
//! documents every key.
//!
//! | variable | default |
//! |---|---|
//! | `DRIFTLESS_LISTEN` | `127.0.0.1:8440` |
//! | `DRIFTLESS_DATA_DIR` | `./driftless-data` (embedded database, blobs, generated secrets) |
//! | `DRIFTLESS_DATABASE_URL` | `sqlite://$DATA_DIR/meta.db`; set `postgres://…` in production |
//! | `DRIFTLESS_S3_ENDPOINT` | unset: embedded S3 on `DRIFTLESS_EMBEDDED_S3_LISTEN` (`127.0.0.1:8441`) |
//! | `DRIFTLESS_S3_BUCKET`, `_REGION`, `_ACCESS_KEY`, `_SECRET_KEY`, `_PATH_STYLE` | `driftless`, `us-east-1`, -, -, `true` |
//! | `DRIFTLESS_CURSOR_SECRET` | generated once into `$DATA_DIR/cursor.secret` |
//! | `DRIFTLESS_PRESIGN_TTL_SECS` | `900` (presigned URLs live minutes, not days) |
//! | `DRIFTLESS_UPLOAD_TTL_SECS` | `86400` (an upload session, resumable within it) |
//! | `DRIFTLESS_CORS_ORIGINS` | unset: no CORS; a comma-separated list of origins for browser clients |
//! | `DRIFTLESS_KAFKA_BROKERS` | unset: the in-process event bus; else Kafka's `bootstrap.servers` |
//! | `DRIFTLESS_KAFKA_TOPIC`, `_PARTITIONS`, `_REPLICATION` | `driftless.journal`, `64`, `1` (used only to create a missing topic) |
//! | `DRIFTLESS_KAFKA_DEBUG` | unset; librdkafka debug contexts (`cgrp,topic,…`) logged at debug level |
//! | `DRIFTLESS_RUN_CONSUMERS` | `true`: this process also runs the verifier and the sweepers (`false` when `driftless-consumer` does) |
//! | `DRIFTLESS_MAX_IN_FLIGHT` | `512`: requests run at once; more get 429 with `Retry-After` |
//! | `DRIFTLESS_MAX_LONG_POLLS` | `100000`: long-polls held at once; more get 429 with `Retry-After` |
//! | `DRIFTLESS_LONG_POLL_SOFT_LIMIT` | `50000`: above it, long-polls answer with a `backoff_ms` |
//! | `DRIFTLESS_MAX_FILE_BYTES` | `53687091200` (50 GiB): the largest file a commit accepts |
//! | `DRIFTLESS_TOKEN_TTL_SECS` | `0` (never): a device token unused this long stops working; each use renews it |
//! | `DRIFTLESS_MAX_IN_FLIGHT_PER_USER` | `64`: requests one user runs at once; more get 429 |
//! | `DRIFTLESS_MAX_LONG_POLLS_PER_DEVICE` | `16`: long-polls one device holds; more get 429 |
//! | `DRIFTLESS_MAX_CONNECTIONS_PER_ADDRESS` | `256`: connections from one address; more are closed |
//! | `DRIFTLESS_LOGIN_BURST`, `_INTERVAL_MS` | `10`, `2000`: logins from one address (and failures per user name, 5× slower) |
//! | `DRIFTLESS_LOGIN_CONCURRENCY` | `2`: password checks at once (argon2, ~19 MiB each); more wait, then 429 |
//! | `DRIFTLESS_METRICS_TOKEN` | unset: `/metrics` answers requests from this machine only; set, scrapers send it as a bearer token |
//! | `DRIFTLESS_HEADER_READ_TIMEOUT_SECS` | `10`: to send request headers, and to stay idle between requests |
//! | `DRIFTLESS_SHUTDOWN_GRACE_SECS` | `30`: how long a graceful shutdown waits for requests, commits and workers |
//! | `DRIFTLESS_LOG_FORMAT` | `text`; `json` for one JSON object per line (production) |
//! | `DRIFTLESS_CONFIG` | unset; a TOML file with any of these settings (the environment wins) |
//!
//! Secrets are read here and never logged; `Debug` of the config redacts them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use driftless_store::env::{flag, number, secs, var};

pub use driftless_store::env::ENV;

/// Where objects are stored.
#[derive(Clone)]
pub enum S3Choice {
    /// s3s-fs in this process, serving `DATA_DIR/blobs` on `listen`.
    Embedded {
        /// Address of the embedded endpoint (clients PUT here).
        listen: SocketAddr,
    },
    /// An external S3-compatible store.
    External(driftless_store::BlobConfig),
}

/// Everything the server needs to start.
#[derive(Clone)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Embedded data and generated secrets.
    pub data_dir: PathBuf,
    /// Metadata database URL.
    pub database_url: String,
    /// Object storage.
    pub s3: S3Choice,
    /// Bucket name.
    pub bucket: String,
    /// Secret that signs cursors.
    pub cursor_secret: Vec<u8>,
    /// Presigned URL lifetime.
    pub presign_ttl: Duration,
    /// Upload session lifetime.
    pub upload_ttl: Duration,
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<String>,
    /// The event stream: Kafka, or `None` for the in-process bus.
    pub kafka: Option<driftless_store::KafkaConfig>,
    /// Whether the API process runs the durable consumers and sweepers.
    pub run_consumers: bool,
    /// Requests run at once before 429.
    pub max_in_flight: usize,
    /// Long-polls held at once before 429.
    pub max_long_polls: usize,
    /// Long-polls held before idle ones are asked to back off.
    pub long_poll_soft_limit: usize,
    /// How long a graceful shutdown waits.
    pub shutdown_grace: Duration,
    /// The largest file a commit accepts.
    pub max_file_bytes: u64,
    /// How long a device token lives unused (`None`: for ever).
    pub token_ttl: Option<Duration>,
    /// Requests one user runs at once.
    pub max_in_flight_per_user: usize,
    /// Long-polls one device holds at once.
    pub max_long_polls_per_device: usize,
    /// Connections open from one address.
    pub max_connections_per_address: usize,
    /// Login attempts from one address at once, then one per `login_interval`.
    pub login_burst: u32,
    /// See `login_burst`.
    pub login_interval: Duration,
    /// Password checks at once (argon2, ~19 MiB each).
    pub login_concurrency: usize,
    /// Time to send a request's headers, and to stay idle between requests.
    pub header_read_timeout: Duration,
    /// The token scrapers present to `/metrics` (never logged).
    pub metrics_token: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database",
                &self.database_url.split('@').next_back().unwrap_or("?"),
            )
            .field(
                "s3",
                &match &self.s3 {
                    S3Choice::Embedded { listen } => format!("embedded at {listen}"),
                    S3Choice::External(c) => format!("{} bucket {}", c.endpoint, c.bucket),
                },
            )
            .field("presign_ttl", &self.presign_ttl)
            .field("upload_ttl", &self.upload_ttl)
            .field(
                "kafka",
                &self.kafka.as_ref().map(|k| (&k.brokers, &k.topic)),
            )
            .field("run_consumers", &self.run_consumers)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_long_polls", &self.max_long_polls)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("token_ttl", &self.token_ttl)
            .field("max_in_flight_per_user", &self.max_in_flight_per_user)
            .field("max_long_polls_per_device", &self.max_long_polls_per_device)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("login_burst", &self.login_burst)
            .field("login_interval", &self.login_interval)
            .field("login_concurrency", &self.login_concurrency)
            .field("header_read_timeout", &self.header_read_timeout)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// Reads a secret from `path`, creating it (32 random bytes, mode 0600) if missing.
pub fn secret_file(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if let Ok(bytes) = std::fs::read(path)
        && bytes.len() >= 32
    {
        return Ok(bytes);
    }
    use rand::RngCore;
    let mut secret = vec![0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write;
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&secret)?;
    f.sync_all()?;
    Ok(secret)
}

impl Config {
    /// The configuration from the environment (and the file, if loaded),
    /// creating the data folder and generated secrets if missing.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::read(true)
    }

    /// Checks every setting as [`Config::from_env`] reads it, touching nothing.
    pub fn check() -> anyhow::Result<()> {
        Self::read(false).map(|_| ())
    }

    fn read(create: bool) -> anyhow::Result<Self> {
        let d = crate::state::Settings::default();
        let data_dir =
            PathBuf::from(var("DRIFTLESS_DATA_DIR").unwrap_or_else(|| "driftless-data".into()));
        if create {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            // The folder holds password hashes and secrets: owner only.
            #[cfg(unix)]
            std::fs::set_permissions(
                &data_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .with_context(|| format!("restricting {}", data_dir.display()))?;
        }
        let listen = var("DRIFTLESS_LISTEN")
            .unwrap_or_else(|| "127.0.0.1:8440".into())
            .parse()
            .context("DRIFTLESS_LISTEN")?;
        let database_url = var("DRIFTLESS_DATABASE_URL")
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("meta.db").display()));
        let bucket = var("DRIFTLESS_S3_BUCKET").unwrap_or_else(|| "driftless".into());
        let presign_ttl = secs("DRIFTLESS_PRESIGN_TTL_SECS", 900)?;
        let s3 = match var("DRIFTLESS_S3_ENDPOINT") {
            Some(_) => S3Choice::External(driftless_store::env::blob(&bucket, presign_ttl)?),
            None => S3Choice::Embedded {
                listen: var("DRIFTLESS_EMBEDDED_S3_LISTEN")
                    .unwrap_or_else(|| "127.0.0.1:8441".into())
                    .parse()
                    .context("DRIFTLESS_EMBEDDED_S3_LISTEN")?,
            },
        };
        let cursor_secret = match var("DRIFTLESS_CURSOR_SECRET") {
            Some(s) => s.into_bytes(),
            None if create => secret_file(&data_dir.join("cursor.secret"))?,
            None => Vec::new(),
        };
        Ok(Self {
            listen,
            data_dir,
            database_url,
            s3,
            bucket,
            cursor_secret,
            presign_ttl,
            upload_ttl: secs("DRIFTLESS_UPLOAD_TTL_SECS", 86_400)?,
            cors_origins: var("DRIFTLESS_CORS_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            kafka: driftless_store::env::kafka()?,
            run_consumers: flag("DRIFTLESS_RUN_CONSUMERS", true)?,
            max_in_flight: number("DRIFTLESS_MAX_IN_FLIGHT", 512)?,
            max_long_polls: number("DRIFTLESS_MAX_LONG_POLLS", 100_000)?,
            long_poll_soft_limit: number("DRIFTLESS_LONG_POLL_SOFT_LIMIT", 50_000)?,
            shutdown_grace: secs("DRIFTLESS_SHUTDOWN_GRACE_SECS", 30)?,
            max_file_bytes: number(
                "DRIFTLESS_MAX_FILE_BYTES",
                crate::state::DEFAULT_MAX_FILE_BYTES,
            )?,
            token_ttl: Some(secs("DRIFTLESS_TOKEN_TTL_SECS", 0)?).filter(|d| !d.is_zero()),
            max_in_flight_per_user: number(
                "DRIFTLESS_MAX_IN_FLIGHT_PER_USER",
                d.max_in_flight_per_user,
            )?,
            max_long_polls_per_device: number(
                "DRIFTLESS_MAX_LONG_POLLS_PER_DEVICE",
                d.max_long_polls_per_device,
            )?,
            max_connections_per_address: number(
                "DRIFTLESS_MAX_CONNECTIONS_PER_ADDRESS",
                d.max_connections_per_address,
            )?,
            login_burst: number("DRIFTLESS_LOGIN_BURST", d.login_burst)?,
            login_interval: Duration::from_millis(number(
                "DRIFTLESS_LOGIN_INTERVAL_MS",
                d.login_every.as_millis() as u64,
            )?),
            login_concurrency: number("DRIFTLESS_LOGIN_CONCURRENCY", d.login_concurrency)?,
            header_read_timeout: secs(
                "DRIFTLESS_HEADER_READ_TIMEOUT_SECS",
                d.header_read_timeout.as_secs(),
            )?,
            metrics_token: var("DRIFTLESS_METRICS_TOKEN").filter(|t| !t.is_empty()),
        })
    }
}
