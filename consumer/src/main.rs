//! `driftless-consumer`: the event-stream workers on their own, for
//! deployments that scale them apart from the API (`DRIFTLESS_RUN_CONSUMERS
//! =false` on the API servers): the outbox relay (standing by while another
//! process holds its lease), the chunk verifier in its Kafka consumer group
//! with its sweep, and the upload-session sweeper. `lag` prints how far the
//! consumers and the devices are behind the journal.
//!
//! Configuration is the server's (see `driftless-api`'s `config.rs`):
//! `DRIFTLESS_DATABASE_URL`, `DRIFTLESS_S3_*`, `DRIFTLESS_KAFKA_*`. For
//! crash tests, `DRIFTLESS_FAILPOINT=relay-after-publish` aborts the process
//! between publishing a batch and marking it sent, and
//! `verifier-after-effect` between the verifier's effect and its offset
//! commit.

use anyhow::Context;
use clap::Parser;
use driftless_consumer::cli::{Cli, Command};
use driftless_consumer::run::{
    ConsumerSetup, Failpoint, RelaySignals, start_consumers, start_relay,
};
use driftless_store::env::{secs, var};
use driftless_store::meta::{journal, marks};
use driftless_store::{BlobStore, Db, EventBus};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    driftless_consumer::cli::start(cli.config.as_deref())?;
    let url = var("DRIFTLESS_DATABASE_URL").context("DRIFTLESS_DATABASE_URL is required")?;
    let db = Db::connect(&url)
        .await
        .context("opening the metadata database")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(db).await,
        Command::Lag { json } => lag(&db, json).await,
    }
}

async fn run(db: Db) -> anyhow::Result<()> {
    let kafka = driftless_store::env::kafka()?.context(
        "DRIFTLESS_KAFKA_BROKERS is required (without Kafka the workers run inside driftless-server)",
    )?;
    let presign_ttl = secs("DRIFTLESS_PRESIGN_TTL_SECS", 900)?;
    let bucket = var("DRIFTLESS_S3_BUCKET").unwrap_or_else(|| "driftless".into());
    let blob = BlobStore::new(&driftless_store::env::blob(&bucket, presign_ttl)?);
    let events = EventBus::Kafka(kafka);
    events
        .prepare()
        .await
        .context("preparing the Kafka topic")?;
    let failpoint = match var("DRIFTLESS_FAILPOINT") {
        Some(name) => Some(
            Failpoint::parse(&name)
                .with_context(|| format!("unknown DRIFTLESS_FAILPOINT {name:?}"))?,
        ),
        None => None,
    };
    let cancel = CancellationToken::new();
    let mut tasks = start_relay(
        &db,
        &events,
        None,
        &RelaySignals::default(),
        failpoint,
        &cancel,
    )?;
    tasks.extend(start_consumers(
        ConsumerSetup {
            db: db.clone(),
            blob,
            events,
            session_grace: presign_ttl,
            upload_ttl: secs("DRIFTLESS_UPLOAD_TTL_SECS", 86_400)?,
            failpoint,
        },
        &cancel,
    )?);
    tracing::info!("driftless consumer up");
    driftless_consumer::cli::terminated().await;
    // The workers finish their step; the relay publishes what is committed
    // and flushes its producer.
    let grace = secs("DRIFTLESS_SHUTDOWN_GRACE_SECS", 30)?;
    cancel.cancel();
    if tokio::time::timeout(grace, futures_util::future::join_all(tasks))
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "workers still busy after the shutdown grace; leaving them"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

async fn lag(db: &Db, json: bool) -> anyhow::Result<()> {
    let backlog = journal::backlog(db).await?;
    let verifier = marks::consumer_lag(db, "verifier").await?;
    let devices = marks::device_lag(db).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "outbox_backlog": backlog,
                "consumers": {"verifier": verifier},
                "devices": devices,
            })
        );
    } else {
        println!("outbox rows not yet published: {backlog}");
        println!(
            "verifier: {} folders behind, {} entries, at most {} in one folder",
            verifier.behind, verifier.entries_behind, verifier.max_behind
        );
        println!(
            "devices:  {} cursors behind, {} entries, at most {} for one device",
            devices.behind, devices.entries_behind, devices.max_behind
        );
    }
    Ok(())
}
