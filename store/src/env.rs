//! The server binaries' settings (`driftless-server`, `driftless-consumer`):
//! one list of names ([`ENV`]), read from the environment, else from a
//! configuration file, else the built-in default. Secrets read here are
//! never logged.
//!
//! The file is TOML, named by `--config FILE` or `DRIFTLESS_CONFIG`; its
//! keys are the variables' names in lower case without `DRIFTLESS_`
//! (`database_url = "postgres://…"` is `DRIFTLESS_DATABASE_URL`). An
//! unknown key is an error, not a silently ignored typo. The environment
//! overrides the file, so a deployment can keep one file and change a
//! setting per host. `driftless-server config` prints the settings in
//! force and where each came from, secrets redacted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::blob::BlobConfig;
use crate::kafka::KafkaConfig;

/// Every setting the server binaries read. Tests check this list against
/// the code and docker-compose.yml against it.
pub const ENV: &[&str] = &[
    "DRIFTLESS_CONFIG",
    "DRIFTLESS_LISTEN",
    "DRIFTLESS_DATA_DIR",
    "DRIFTLESS_DATABASE_URL",
    "DRIFTLESS_S3_ENDPOINT",
    "DRIFTLESS_S3_BUCKET",
    "DRIFTLESS_S3_REGION",
    "DRIFTLESS_S3_ACCESS_KEY",
    "DRIFTLESS_S3_SECRET_KEY",
    "DRIFTLESS_S3_PATH_STYLE",
    "DRIFTLESS_EMBEDDED_S3_LISTEN",
    "DRIFTLESS_CURSOR_SECRET",
    "DRIFTLESS_PRESIGN_TTL_SECS",
    "DRIFTLESS_UPLOAD_TTL_SECS",
    "DRIFTLESS_CORS_ORIGINS",
    "DRIFTLESS_KAFKA_BROKERS",
    "DRIFTLESS_KAFKA_TOPIC",
    "DRIFTLESS_KAFKA_PARTITIONS",
    "DRIFTLESS_KAFKA_REPLICATION",
    "DRIFTLESS_KAFKA_DEBUG",
    "DRIFTLESS_RUN_CONSUMERS",
    "DRIFTLESS_MAX_IN_FLIGHT",
    "DRIFTLESS_MAX_LONG_POLLS",
    "DRIFTLESS_LONG_POLL_SOFT_LIMIT",
    "DRIFTLESS_SHUTDOWN_GRACE_SECS",
    "DRIFTLESS_MAX_FILE_BYTES",
    "DRIFTLESS_TOKEN_TTL_SECS",
    "DRIFTLESS_MAX_IN_FLIGHT_PER_USER",
    "DRIFTLESS_MAX_LONG_POLLS_PER_DEVICE",
    "DRIFTLESS_MAX_CONNECTIONS_PER_ADDRESS",
    "DRIFTLESS_LOGIN_BURST",
    "DRIFTLESS_LOGIN_INTERVAL_MS",
    "DRIFTLESS_LOGIN_CONCURRENCY",
    "DRIFTLESS_HEADER_READ_TIMEOUT_SECS",
    "DRIFTLESS_METRICS_TOKEN",
    "DRIFTLESS_LOG_FORMAT",
    "DRIFTLESS_FAILPOINT",
];

/// Settings whose values are credentials: printed as `<redacted>`.
/// (`DRIFTLESS_DATABASE_URL` may carry a password: printed without it.)
pub const SECRETS: &[&str] = &[
    "DRIFTLESS_S3_SECRET_KEY",
    "DRIFTLESS_CURSOR_SECRET",
    "DRIFTLESS_METRICS_TOKEN",
];

/// The file's values, by variable name (loaded once, at start).
static FILE: OnceLock<BTreeMap<String, String>> = OnceLock::new();

/// The file key of a variable: `DRIFTLESS_DATABASE_URL` → `database_url`.
pub fn file_key(name: &str) -> String {
    name.trim_start_matches("DRIFTLESS_").to_ascii_lowercase()
}

/// Loads the configuration file: `path`, else the one `DRIFTLESS_CONFIG`
/// names, else none. Call once, before reading any setting (and before
/// logging starts: the log format is a setting too); returns warnings to
/// log once it has.
pub fn load(path: Option<&Path>) -> Result<Vec<String>, EnvError> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => match std::env::var("DRIFTLESS_CONFIG")
            .ok()
            .filter(|v| !v.is_empty())
        {
            Some(p) => p.into(),
            None => return Ok(Vec::new()),
        },
    };
    let mut warnings = Vec::new();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| bad("DRIFTLESS_CONFIG", &format!("{}: {e}", path.display())))?;
    let values = parse_file(&text)
        .map_err(|e| bad("DRIFTLESS_CONFIG", &format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    if values.keys().any(|k| SECRETS.contains(&k.as_str())) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(&path)
            && m.permissions().mode() & 0o077 != 0
        {
            warnings.push(format!(
                "{} holds secrets and others can read it; chmod 600 it",
                path.display()
            ));
        }
    }
    FILE.set(values)
        .map_err(|_| bad("DRIFTLESS_CONFIG", "the configuration was loaded twice"))?;
    Ok(warnings)
}

/// Parses a configuration file into variable names and values.
pub fn parse_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let name = format!("DRIFTLESS_{}", key.to_ascii_uppercase());
        if !ENV.contains(&name.as_str())
            || name == "DRIFTLESS_CONFIG"
            || key != key.to_ascii_lowercase()
        {
            let known: Vec<String> = ENV[1..].iter().map(|n| file_key(n)).collect();
            return Err(format!(
                "unknown setting {key:?} (known: {})",
                known.join(", ")
            ));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{key}: a list holds strings only"))
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            _ => {
                return Err(format!(
                    "{key}: must be a string, a number, a boolean or a list of strings"
                ));
            }
        };
        out.insert(name, value);
    }
    Ok(out)
}

/// Where a setting's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The environment.
    Env,
    /// The configuration file.
    File,
    /// Not set: the built-in default applies.
    Default,
}

/// A setting's value and where it came from.
pub fn lookup(key: &str) -> (Option<String>, Source) {
    if let Some(v) = std::env::var(key).ok().filter(|v| !v.is_empty()) {
        return (Some(v), Source::Env);
    }
    match FILE
        .get()
        .and_then(|f| f.get(key))
        .filter(|v| !v.is_empty())
    {
        Some(v) => (Some(v.clone()), Source::File),
        None => (None, Source::Default),
    }
}

/// Every setting as it may be shown: secrets redacted, a database URL
/// without its password.
pub fn shown() -> Vec<(&'static str, Option<String>, Source)> {
    ENV.iter()
        .map(|&key| {
            let (value, source) = lookup(key);
            let value = value.map(|v| {
                if SECRETS.contains(&key) {
                    "<redacted>".to_owned()
                } else if key == "DRIFTLESS_DATABASE_URL" {
                    without_password(&v)
                } else {
                    v
                }
            });
            (key, value, source)
        })
        .collect()
}

/// `scheme://user:password@host/db` → `scheme://user:<redacted>@host/db`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_owned(),
    }
}

/// Why a setting is unusable.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct EnvError {
    /// The variable.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(key: &str, problem: &str) -> EnvError {
    EnvError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A setting's value (environment, else file); unset and empty are the same.
pub fn var(key: &str) -> Option<String> {
    lookup(key).0
}

/// A number of seconds.
pub fn secs(key: &str, default: u64) -> Result<Duration, EnvError> {
    number(key, default).map(Duration::from_secs)
}

/// A number.
pub fn number<T: std::str::FromStr>(key: &str, default: T) -> Result<T, EnvError> {
    match var(key) {
        Some(v) => v.parse().map_err(|_| bad(key, "must be a number")),
        None => Ok(default),
    }
}

/// A flag: `true`/`1`/`yes` or `false`/`0`/`no`.
pub fn flag(key: &str, default: bool) -> Result<bool, EnvError> {
    match var(key).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(_) => Err(bad(key, "must be true or false")),
    }
}

/// The external S3 store named by `DRIFTLESS_S3_*`.
pub fn blob(bucket: &str, presign_ttl: Duration) -> Result<BlobConfig, EnvError> {
    let need =
        |key: &str| var(key).ok_or_else(|| bad(key, "is required with DRIFTLESS_S3_ENDPOINT"));
    Ok(BlobConfig {
        endpoint: need("DRIFTLESS_S3_ENDPOINT")?,
        region: var("DRIFTLESS_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
        bucket: bucket.into(),
        access_key: need("DRIFTLESS_S3_ACCESS_KEY")?,
        secret_key: need("DRIFTLESS_S3_SECRET_KEY")?,
        path_style: var("DRIFTLESS_S3_PATH_STYLE").is_none_or(|v| v != "false"),
        presign_ttl,
        read_timeout: crate::blob::READ_TIMEOUT,
    })
}

/// The Kafka settings, if `DRIFTLESS_KAFKA_BROKERS` is set.
pub fn kafka() -> Result<Option<KafkaConfig>, EnvError> {
    let Some(brokers) = var("DRIFTLESS_KAFKA_BROKERS") else {
        return Ok(None);
    };
    Ok(Some(KafkaConfig {
        brokers,
        topic: var("DRIFTLESS_KAFKA_TOPIC").unwrap_or_else(|| "driftless.journal".into()),
        partitions: number("DRIFTLESS_KAFKA_PARTITIONS", 64)?,
        replication: number("DRIFTLESS_KAFKA_REPLICATION", 1)?,
        debug: var("DRIFTLESS_KAFKA_DEBUG"),
    }))
}
