//! The API over HTTP against real PostgreSQL and a SigV4 S3 server.

// Test helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod access;
mod accounts;
mod changes;
mod client;
mod concurrency;
mod config;
mod connections;
mod costs;
mod events;
mod garage;
mod integrity;
mod logs;
mod openapi;
mod ops;
mod reconcile;
mod requests;
mod restart;
mod sharing;
mod shedding;
mod shutdown;
mod start_script;
mod timeouts;
mod trust;
mod uploads;
