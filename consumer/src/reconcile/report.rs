//! What one reconcile run found and changed: counts per kind of drift,
//! the routine work it did, and every change, as JSON, as text for a
//! person, and as Prometheus text (node_exporter's textfile collector).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Every kind of drift, in report order. A kind is drift when the stores
/// disagree in a way no healthy run of the system leaves behind.
pub const DRIFT_KINDS: [&str; 11] = [
    "unpublished_outbox",
    "unseen_journal",
    "expired_session",
    "stale_pack_row",
    "stray_multipart",
    "missing_chunk",
    "corrupt_chunk",
    "dead_chunk",
    "pack_liveness",
    "orphan_object",
    "missing_pack_row",
];

/// How much of one kind of drift a run found, and repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Tally {
    /// Instances found.
    pub found: u64,
    /// Instances repaired (0 in a dry run).
    pub repaired: u64,
}

/// One change made (or, in a dry run, that would be made).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The drift kind or maintenance task.
    pub kind: &'static str,
    /// What was done: `deleted`, `aborted`, `marked_corrupt`, …
    pub action: &'static str,
    /// What it was done to (an object key, `ns/pack`, `ns/seq..seq`, …).
    pub target: String,
}

/// The report of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Start, ms since the epoch.
    pub started_at_ms: i64,
    /// How long the run took.
    pub duration_ms: u64,
    /// Whether it only looked.
    pub dry_run: bool,
    /// Why the run did nothing, if it did nothing (another run holds the lock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Drift per kind (every kind present, zeros included).
    pub drift: BTreeMap<&'static str, Tally>,
    /// Routine work and figures: packs compacted, bytes reclaimed, journal
    /// entries compacted, chunks scrubbed, references counted, …
    pub work: BTreeMap<&'static str, u64>,
    /// How long each check took (ms).
    pub timings_ms: BTreeMap<&'static str, u64>,
    /// Every change, in the order made.
    pub changes: Vec<Change>,
    /// Things an operator should know (a check the store cannot do, …).
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report for a run starting now.
    pub fn new(started_at_ms: i64, dry_run: bool) -> Self {
        Self {
            started_at_ms,
            dry_run,
            drift: DRIFT_KINDS.iter().map(|k| (*k, Tally::default())).collect(),
            ..Self::default()
        }
    }

    /// Counts `n` instances of drift `kind` found.
    pub fn found(&mut self, kind: &'static str, n: u64) {
        self.drift.entry(kind).or_default().found += n;
    }

    /// Counts `n` instances of drift `kind` repaired, with the change.
    pub fn repaired(&mut self, kind: &'static str, n: u64, action: &'static str, target: String) {
        self.drift.entry(kind).or_default().repaired += n;
        self.changes.push(Change {
            kind,
            action,
            target,
        });
    }

    /// In a dry run, the change that would have been made.
    pub fn would(&mut self, kind: &'static str, action: &'static str, target: String) {
        self.changes.push(Change {
            kind,
            action,
            target,
        });
    }

    /// Adds `n` to the figure `what`.
    pub fn work(&mut self, what: &'static str, n: u64) {
        *self.work.entry(what).or_default() += n;
    }

    /// A routine change (not drift), counted under `what`.
    pub fn did(&mut self, what: &'static str, action: &'static str, target: String) {
        self.work(what, 1);
        self.changes.push(Change {
            kind: what,
            action,
            target,
        });
    }

    /// Drift found, every kind.
    pub fn total_found(&self) -> u64 {
        self.drift.values().map(|t| t.found).sum()
    }

    /// Drift repaired, every kind.
    pub fn total_repaired(&self) -> u64 {
        self.drift.values().map(|t| t.repaired).sum()
    }

    /// Drift found and not repaired.
    pub fn unrepaired(&self) -> u64 {
        self.drift
            .values()
            .map(|t| t.found.saturating_sub(t.repaired))
            .sum()
    }

    /// The report for a person.
    pub fn human(&self) -> String {
        let mut s = String::new();
        if let Some(why) = &self.skipped {
            let _ = writeln!(s, "reconcile skipped: {why}");
            return s;
        }
        let _ = writeln!(
            s,
            "reconcile{} took {:.2} s: {} drift found, {} repaired, {} left",
            if self.dry_run { " (dry run)" } else { "" },
            self.duration_ms as f64 / 1000.0,
            self.total_found(),
            self.total_repaired(),
            self.unrepaired()
        );
        let _ = writeln!(s, "{:<26} {:>10} {:>10}", "drift", "found", "repaired");
        for (kind, t) in &self.drift {
            let _ = writeln!(s, "{kind:<26} {:>10} {:>10}", t.found, t.repaired);
        }
        let _ = writeln!(
            s,
            "checks (ms): {}",
            self.timings_ms
                .iter()
                .map(|(c, ms)| format!("{c} {ms}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !self.work.is_empty() {
            let _ = writeln!(s, "work:");
            for (what, n) in &self.work {
                let _ = writeln!(s, "  {what:<32} {n}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        if !self.changes.is_empty() {
            let _ = writeln!(
                s,
                "{}:",
                if self.dry_run {
                    "changes it would make"
                } else {
                    "changes"
                }
            );
            for c in &self.changes {
                let _ = writeln!(s, "  {:<26} {:<16} {}", c.kind, c.action, c.target);
            }
        }
        s
    }

    /// The figures in the Prometheus text format.
    pub fn prometheus(&self) -> String {
        Figures {
            started_at_ms: self.started_at_ms,
            duration_ms: self.duration_ms,
            dry_run: self.dry_run,
            drift: self.drift.iter().map(|(k, t)| (*k, *t)).collect(),
            timings_ms: self.timings_ms.iter().map(|(k, v)| (*k, *v)).collect(),
            work: self.work.iter().map(|(k, v)| (*k, *v)).collect(),
        }
        .prometheus()
    }
}

/// A recorded run as `reconcile_runs` keeps it (the report's JSON).
#[derive(serde::Deserialize)]
struct Recorded {
    started_at_ms: i64,
    duration_ms: u64,
    dry_run: bool,
    #[serde(default)]
    drift: BTreeMap<String, Tally>,
    #[serde(default)]
    timings_ms: BTreeMap<String, u64>,
    #[serde(default)]
    work: BTreeMap<String, u64>,
}

/// The Prometheus figures of a report recorded as JSON (the API's
/// `/metrics` serves the last run's this way); `None` if it does not parse.
pub fn recorded_prometheus(json: &str) -> Option<String> {
    let r: Recorded = serde_json::from_str(json).ok()?;
    Some(
        Figures {
            started_at_ms: r.started_at_ms,
            duration_ms: r.duration_ms,
            dry_run: r.dry_run,
            drift: r.drift.iter().map(|(k, t)| (k.as_str(), *t)).collect(),
            timings_ms: r.timings_ms.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
            work: r.work.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
        }
        .prometheus(),
    )
}

/// What the Prometheus text is made of.
struct Figures<'a> {
    started_at_ms: i64,
    duration_ms: u64,
    dry_run: bool,
    drift: Vec<(&'a str, Tally)>,
    timings_ms: Vec<(&'a str, u64)>,
    work: Vec<(&'a str, u64)>,
}

impl Figures<'_> {
    fn prometheus(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP driftless_reconcile_last_run_timestamp_seconds When the last reconcile run started.\n\
             # TYPE driftless_reconcile_last_run_timestamp_seconds gauge\n\
             driftless_reconcile_last_run_timestamp_seconds {}",
            self.started_at_ms as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "# HELP driftless_reconcile_duration_seconds How long the last reconcile run took.\n\
             # TYPE driftless_reconcile_duration_seconds gauge\n\
             driftless_reconcile_duration_seconds {}",
            self.duration_ms as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "# HELP driftless_reconcile_dry_run Whether the last run only looked.\n\
             # TYPE driftless_reconcile_dry_run gauge\n\
             driftless_reconcile_dry_run {}",
            u8::from(self.dry_run)
        );
        let _ = writeln!(
            s,
            "# HELP driftless_reconcile_drift_found Drift the last run found, per kind.\n\
             # TYPE driftless_reconcile_drift_found gauge"
        );
        for (kind, t) in &self.drift {
            let _ = writeln!(
                s,
                "driftless_reconcile_drift_found{{kind=\"{kind}\"}} {}",
                t.found
            );
        }
        let _ = writeln!(
            s,
            "# HELP driftless_reconcile_drift_repaired Drift the last run repaired, per kind.\n\
             # TYPE driftless_reconcile_drift_repaired gauge"
        );
        for (kind, t) in &self.drift {
            let _ = writeln!(
                s,
                "driftless_reconcile_drift_repaired{{kind=\"{kind}\"}} {}",
                t.repaired
            );
        }
        let _ = writeln!(
            s,
            "# HELP driftless_reconcile_check_seconds How long each check of the last run took.\n\
             # TYPE driftless_reconcile_check_seconds gauge"
        );
        for (check, ms) in &self.timings_ms {
            let _ = writeln!(
                s,
                "driftless_reconcile_check_seconds{{check=\"{check}\"}} {}",
                *ms as f64 / 1000.0
            );
        }
        let _ = writeln!(
            s,
            "# HELP driftless_reconcile_work Routine work of the last run.\n\
             # TYPE driftless_reconcile_work gauge"
        );
        for (what, n) in &self.work {
            let _ = writeln!(s, "driftless_reconcile_work{{what=\"{what}\"}} {n}");
        }
        s
    }
}
