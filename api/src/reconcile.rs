//! `driftless-server reconcile`: the reconciliation job as a command, for
//! cron or a systemd timer (one run, then exit) or as a service
//! (`--every 1h`). Configuration is the server's; see `config.rs`.
//!
//! Exit status: 0 when no drift is left (none found, or all repaired, or
//! the run was skipped because another holds the lock); 1 when drift was
//! found and not repaired (always so for drift in a `--dry-run`) or the
//! run failed; 2 for bad arguments.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use driftless_consumer::reconcile::{CHECKS, Options, Reconciler, Report};

use crate::config::Config;

/// The reconcile command's arguments.
#[derive(Args, Debug, Clone)]
pub struct ReconcileArgs {
    /// Run again every DURATION (e.g. `1h`, `30m`) instead of once.
    #[arg(long, value_parser = duration)]
    pub every: Option<Duration>,
    /// Report what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON (one object per run, one line).
    #[arg(long)]
    pub json: bool,
    /// Only these checks (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_parser = CHECKS)]
    pub only: Vec<String>,
    /// Fraction of packs the deep scrub reads back (0..=1).
    #[arg(long, default_value_t = 0.01)]
    pub scrub_fraction: f64,
    /// Keep journal entries at least this long.
    #[arg(long, value_parser = duration, default_value = "30d")]
    pub retention: Duration,
    /// Delete objects of no pack only when older than this (default: upload
    /// session lifetime + presigned URL lifetime + 1 h).
    #[arg(long, value_parser = duration)]
    pub orphan_grace: Option<Duration>,
    /// Remove unreferenced chunk rows only when older than this (default:
    /// as the orphan grace).
    #[arg(long, value_parser = duration)]
    pub chunk_grace: Option<Duration>,
    /// Outbox rows unpublished (or unseen) this long are drift.
    #[arg(long, value_parser = duration, default_value = "5m")]
    pub stale: Duration,
    /// Also write the run's figures here in the Prometheus text format
    /// (for node_exporter's textfile collector), replaced atomically.
    #[arg(long)]
    pub prometheus: Option<std::path::PathBuf>,
}

/// `90`, `90s`, `15m`, `2h`, `30d`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 90s, 15m, 2h, 30d)"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

impl ReconcileArgs {
    fn options(&self, config: &Config) -> Options {
        let mut o = Options::for_deployment(config.upload_ttl, config.presign_ttl);
        o.dry_run = self.dry_run;
        o.only = self.only.clone();
        o.scrub_fraction = self.scrub_fraction;
        o.retention = self.retention;
        o.stale = self.stale;
        if let Some(g) = self.orphan_grace {
            o.orphan_grace = g;
            o.chunk_grace = g;
        }
        if let Some(g) = self.chunk_grace {
            o.chunk_grace = g;
        }
        o
    }
}

/// Runs the command; returns the exit status.
pub async fn run(config: &Config, args: &ReconcileArgs) -> anyhow::Result<i32> {
    let server = crate::Server::start(config).await?;
    let publisher = match &config.kafka {
        Some(k) => {
            let bus = driftless_store::EventBus::Kafka(k.clone());
            bus.prepare().await.context("preparing the Kafka topic")?;
            Some(bus.publisher().context("connecting to Kafka")?)
        }
        // The in-process bus lives in the server process: rows it has not
        // published are its relay's to send.
        None => None,
    };
    let mut reconciler = Reconciler::new(
        server.state.db.clone(),
        server.state.blob.clone(),
        publisher,
    );
    let options = args.options(config);
    loop {
        let status = match reconciler.run_once(&options).await {
            Ok(report) => {
                print(&report, args);
                if let Some(path) = &args.prometheus {
                    write_atomically(path, &report.prometheus())
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                i32::from(report.unrepaired() > 0)
            }
            Err(e) => {
                tracing::error!(error = %e, "reconcile run failed");
                if args.json {
                    println!("{}", serde_json::json!({ "error": e.to_string() }));
                } else {
                    eprintln!("reconcile failed: {e}");
                }
                1
            }
        };
        let Some(every) = args.every else {
            return Ok(status);
        };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(status),
        }
    }
}

fn print(report: &Report, args: &ReconcileArgs) {
    if args.json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else {
        print!("{}", report.human());
    }
}

fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(duration("soon").is_err());
        assert!(duration("5y").is_err());
    }
}
