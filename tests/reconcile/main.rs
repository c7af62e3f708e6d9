//! The reconciliation job against real services (PostgreSQL, the tansu
//! broker, an S3 server with SigV4): thousands of injected drifts found
//! and repaired with nothing referenced deleted, runs beside live uploads
//! that lose nothing, and the `driftless-server reconcile` command.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../e2e/device.rs"]
#[allow(dead_code)]
mod device;

mod cli;
mod inject;
mod live;

use std::time::Duration;

use driftless_consumer::reconcile::{Options, Report};

/// Options for tests on a system nobody else uses: no grace anywhere, the
/// whole bucket scrubbed, journal entries kept only as cursors need them.
pub(crate) fn eager() -> Options {
    let mut o = Options::for_deployment(Duration::from_secs(3600), Duration::from_secs(300));
    o.orphan_grace = Duration::ZERO;
    o.chunk_grace = Duration::ZERO;
    o.session_grace = Duration::ZERO;
    o.presign_ttl = Duration::ZERO;
    o.stale = Duration::ZERO;
    o.scrub_fraction = 1.0;
    o.retention = Duration::ZERO;
    o
}

pub(crate) fn found(r: &Report, kind: &str) -> u64 {
    r.drift.get(kind).map_or(0, |t| t.found)
}

pub(crate) fn repaired(r: &Report, kind: &str) -> u64 {
    r.drift.get(kind).map_or(0, |t| t.repaired)
}

pub(crate) fn work(r: &Report, what: &str) -> u64 {
    r.work.get(what).copied().unwrap_or(0)
}
