//! The reconciliation job (DESIGN.md "Reconciliation"): one run compares
//! the metadata database, object storage and the event stream, repairs
//! the drift it finds, and reports counts per kind and every change.
//!
//! Each check is its own module, run in this order (each leaves the next
//! a cleaner picture):
//! - [`stream`]: outbox rows the relay never published, and journal ranges
//!   published but never seen by a durable consumer: published (again);
//! - [`uploads`]: expired upload sessions, pack rows of closed sessions,
//!   multipart uploads no open session owns: aborted and closed;
//! - [`objects`]: the pack objects in the bucket against the pack rows, in
//!   one merge of two sorted listings: objects of no pack deleted after a
//!   grace period (never one a chunk row still names), retired packs'
//!   objects deleted once no presigned URL can name them, and packs whose
//!   bytes are missing or cut short: their chunks marked corrupt;
//! - [`scrub`]: a sample of packs read back and every chunk re-hashed;
//!   chunks that fail are marked corrupt. Corrupt chunks of live files get
//!   `repair` entries on the changes feed, which ask the devices holding
//!   the bytes to upload them again;
//! - [`liveness`]: chunk references counted from every version's manifest
//!   (and open sessions'), unreferenced chunk rows removed, each pack's
//!   live bytes recomputed, packs with nothing live retired;
//! - [`compact`]: packs under half live rewritten with their live chunks
//!   (each re-hashed on the way), the old pack retired;
//! - [`journal`]: journal and outbox entries below every active device's
//!   cursor, every consumer's mark and the retention window deleted (older
//!   cursors then get 410 `cursor_reset`).
//!
//! Two runs never overlap: a run takes the `driftless-reconcile` lease (a
//! PostgreSQL advisory lock) and a second run finds it held and skips.
//! Every repair is a transaction or is idempotent, so a run killed at any
//! point leaves nothing half-done that the next run does not finish.

mod compact;
mod journal;
mod liveness;
mod objects;
pub mod report;
mod scrub;
mod stream;
mod uploads;

use std::time::{Duration, Instant};

use driftless_store::db::now_ms;
use driftless_store::{BlobError, BlobStore, Db, Dialect, Lease, Publisher};

pub use report::{Change, Report, Tally};

/// The checks, by name (`--only`).
pub const CHECKS: [&str; 7] = [
    "stream", "uploads", "objects", "scrub", "liveness", "compact", "journal",
];

/// How a run behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Only look: report what would change, change nothing.
    pub dry_run: bool,
    /// Checks to run (names from [`CHECKS`]); all by default.
    pub only: Vec<String>,
    /// An object with no pack row is deleted once it is older than this:
    /// longer than an upload session plus a presigned URL's lifetime.
    pub orphan_grace: Duration,
    /// Presigned URL lifetime: a retired pack's object outlives it.
    pub presign_ttl: Duration,
    /// How long past its expiry an open upload session is left alone (a
    /// commit that started just before the deadline finishes).
    pub session_grace: Duration,
    /// Chunk rows younger than this are never removed as unreferenced
    /// (their commit may be on its way).
    pub chunk_grace: Duration,
    /// Outbox rows unpublished, or published and unseen, for longer than
    /// this are drift (the relay and the consumers normally take < 1 s).
    pub stale: Duration,
    /// Fraction of packs the deep scrub reads back per run (0..=1).
    pub scrub_fraction: f64,
    /// Journal entries are kept at least this long; a device that has not
    /// reported a cursor within it no longer holds compaction back.
    pub retention: Duration,
    /// Packs with less than this percentage live are rewritten.
    pub compact_below_pct: u64,
    /// Largest live size of a pack rewritten in one piece (held in memory).
    pub max_rewrite_bytes: u64,
}

impl Options {
    /// The defaults for a deployment whose sessions live `upload_ttl` and
    /// whose presigned URLs live `presign_ttl`.
    pub fn for_deployment(upload_ttl: Duration, presign_ttl: Duration) -> Self {
        let grace = upload_ttl + presign_ttl + Duration::from_secs(3600);
        Self {
            dry_run: false,
            only: Vec::new(),
            orphan_grace: grace,
            presign_ttl,
            session_grace: presign_ttl,
            chunk_grace: grace,
            stale: Duration::from_secs(300),
            scrub_fraction: 0.01,
            retention: Duration::from_secs(30 * 86_400),
            compact_below_pct: 50,
            max_rewrite_bytes: 256 << 20,
        }
    }

    fn runs(&self, check: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|c| c == check)
    }
}

/// Why a run stopped before the end (what it did so far is committed).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The metadata database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Object storage failed.
    #[error("object storage: {0}")]
    Blob(#[from] BlobError),
    /// The event stream failed.
    #[error("event stream: {0}")]
    Stream(String),
    /// No zstd decoder could be made.
    #[error("decoder: {0}")]
    Decoder(std::io::Error),
    /// A check name that does not exist.
    #[error("unknown check {0:?} (known: {known})", known = CHECKS.join(", "))]
    UnknownCheck(String),
}

/// What every check works with.
pub(crate) struct Cx<'a> {
    db: &'a Db,
    blob: &'a BlobStore,
    publisher: Option<&'a mut Publisher>,
    opts: &'a Options,
    report: &'a mut Report,
    /// "Now" for the whole run, ms since the epoch.
    now: i64,
}

impl Cx<'_> {
    fn dry(&self) -> bool {
        self.opts.dry_run
    }

    fn before(&self, age: Duration) -> i64 {
        self.now - i64::try_from(age.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// `ORDER BY`/comparison collation that matches S3's byte order of keys.
    fn bytewise(&self) -> &'static str {
        match self.db.dialect() {
            Dialect::Postgres => " COLLATE \"C\"",
            Dialect::Sqlite => "",
        }
    }
}

/// Runs reconciliation over one deployment.
pub struct Reconciler {
    db: Db,
    blob: BlobStore,
    publisher: Option<Publisher>,
    lease: Lease,
}

/// The lease two runs share.
const LEASE: &str = "driftless-reconcile";

impl Reconciler {
    /// A reconciler; `publisher` reaches the event stream the consumers
    /// read (without one, unpublished rows are left to the relay).
    pub fn new(db: Db, blob: BlobStore, publisher: Option<Publisher>) -> Self {
        Self {
            lease: Lease::new(db.clone(), LEASE),
            db,
            blob,
            publisher,
        }
    }

    /// One run: every check in order, then the report (also recorded in
    /// `reconcile_runs`). A run that finds the lease held skips.
    pub async fn run_once(&mut self, opts: &Options) -> Result<Report, ReconcileError> {
        if let Some(bad) = opts.only.iter().find(|c| !CHECKS.contains(&c.as_str())) {
            return Err(ReconcileError::UnknownCheck(bad.clone()));
        }
        let started = Instant::now();
        let mut report = Report::new(now_ms(), opts.dry_run);
        if self.lease.acquire().await?.is_none() {
            report.skipped = Some("another reconcile run holds the lock".into());
            return Ok(report);
        }
        let result = self.checks(opts, &mut report).await;
        report.duration_ms = started.elapsed().as_millis() as u64;
        // Let go of the lock whatever happened (closing its session).
        self.lease.release().await;
        result?;
        record(&self.db, &report).await?;
        tracing::info!(
            found = report.total_found(),
            repaired = report.total_repaired(),
            dry_run = opts.dry_run,
            ms = report.duration_ms,
            "reconcile run done"
        );
        Ok(report)
    }

    async fn checks(&mut self, opts: &Options, report: &mut Report) -> Result<(), ReconcileError> {
        let mut cx = Cx {
            db: &self.db,
            blob: &self.blob,
            publisher: self.publisher.as_mut(),
            opts,
            now: report.started_at_ms,
            report,
        };
        if opts.runs("stream") {
            let t = Instant::now();
            stream::check(&mut cx).await?;
            cx.report
                .timings_ms
                .insert("stream", t.elapsed().as_millis() as u64);
        }
        if opts.runs("uploads") {
            let t = Instant::now();
            uploads::check(&mut cx).await?;
            cx.report
                .timings_ms
                .insert("uploads", t.elapsed().as_millis() as u64);
        }
        if opts.runs("objects") {
            let t = Instant::now();
            objects::check(&mut cx).await?;
            cx.report
                .timings_ms
                .insert("objects", t.elapsed().as_millis() as u64);
        }
        if opts.runs("scrub") {
            let t = Instant::now();
            scrub::check(&mut cx).await?;
            cx.report
                .timings_ms
                .insert("scrub", t.elapsed().as_millis() as u64);
        }
        if opts.runs("liveness") {
            let t = Instant::now();
            liveness::check(&mut cx).await?;
            cx.report
                .timings_ms
                .insert("liveness", t.elapsed().as_millis() as u64);
        }
        if opts.runs("compact") {
            let t = Instant::now();
            compact::check(&mut cx).await?;
            cx.report
                .timings_ms
                .insert("compact", t.elapsed().as_millis() as u64);
        }
        if opts.runs("journal") {
            let t = Instant::now();
            journal::check(&mut cx).await?;
            cx.report
                .timings_ms
                .insert("journal", t.elapsed().as_millis() as u64);
        }
        Ok(())
    }
}

/// Keeps the run's figures and report for metrics and for reading back.
async fn record(db: &Db, r: &Report) -> Result<(), sqlx::Error> {
    let json = serde_json::to_string(r).unwrap_or_default();
    sqlx::query(
        "INSERT INTO reconcile_runs (started_at_ms, duration_ms, dry_run, found, repaired, \
         unrepaired, report) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (started_at_ms) DO NOTHING",
    )
    .bind(r.started_at_ms)
    .bind(i64::try_from(r.duration_ms).unwrap_or(i64::MAX))
    .bind(i64::from(r.dry_run))
    .bind(i64::try_from(r.total_found()).unwrap_or(i64::MAX))
    .bind(i64::try_from(r.total_repaired()).unwrap_or(i64::MAX))
    .bind(i64::try_from(r.unrepaired()).unwrap_or(i64::MAX))
    .bind(json)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// The most recent run's report, if any (for `/metrics` and operators).
pub async fn last_run(db: &Db) -> Result<Option<String>, sqlx::Error> {
    use sqlx::Row;
    let row = sqlx::query("SELECT report FROM reconcile_runs ORDER BY started_at_ms DESC LIMIT 1")
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| r.try_get(0)).transpose()
}

/// Marks chunks of a pack corrupt and asks for them again: every live file
/// using one gets a `repair` entry, in the same transaction. Counts them
/// as drift `kind`; in a dry run only counts. Returns how many changed.
async fn mark_corrupt(
    cx: &mut Cx<'_>,
    kind: &'static str,
    ns: driftless_protocol::NamespaceId,
    pack: &str,
    bad: driftless_store::meta::chunks::Bad<'_>,
) -> Result<u64, ReconcileError> {
    use driftless_store::meta::{chunks, repair};
    let mut tx = cx.db.begin().await?;
    let changed = chunks::mark_corrupt(&mut tx, ns, pack, bad).await?;
    if changed.is_empty() {
        return Ok(0);
    }
    let n = changed.len() as u64;
    cx.report.found(kind, n);
    let target = format!("{ns}/{pack}: {n} chunks, first {}", changed[0]);
    if cx.dry() {
        // Dropping the transaction rolls the marks back.
        cx.report.would(kind, "mark_corrupt", target);
        return Ok(n);
    }
    let set: std::collections::HashSet<_> = changed.iter().copied().collect();
    let damaged = repair::live_users(&mut tx, ns, &set).await?;
    let asked = repair::report(&mut tx, ns, &damaged).await?;
    tx.commit().await?;
    tracing::warn!(namespace = %ns, pack, chunks = n, files = damaged.len(), kind,
        "chunks missing or corrupt; devices are asked to upload them again");
    cx.report.repaired(kind, n, "marked_corrupt", target);
    cx.report.work("repair_requests", asked.len() as u64);
    Ok(n)
}
