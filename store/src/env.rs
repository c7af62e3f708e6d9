//! Reading the adapters' settings from the environment, shared by every
//! server binary (`driftless-server`, `driftless-consumer`). Secrets read
//! here are never logged.

use std::time::Duration;

use crate::blob::BlobConfig;
use crate::kafka::KafkaConfig;

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

/// A variable's value; unset and empty are the same.
pub fn var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
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
