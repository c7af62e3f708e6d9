//! The store's adapters against real services: PostgreSQL on 127.0.0.1:5432
//! (a fresh database per test), SQLite in a temporary folder, and an S3 server
//! with SigV4 (s3s-fs, in process unless `DRIFTLESS_TEST_S3_ENDPOINT` names one).

// Test helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod accounts;
mod batch;
mod blob;
mod cancel;
mod commit;
mod lease;
mod schema;
