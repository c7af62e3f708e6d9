//! End-to-end: desktop daemons (the `driftless-daemon` library, as
//! `driftless sync` runs it) against a real server on PostgreSQL, a
//! Kafka-protocol broker and a SigV4 S3 server — and against a malicious
//! one.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod converge;
mod device;
mod hostile;
mod local_rules;
mod model;
mod offline;
mod safety;
mod storage;
