//! The client library against a real server (PostgreSQL + SigV4 S3).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod accounts;
mod cli;
mod crash;
mod evidence;
mod shed;
mod timeouts;
mod upload;

pub(crate) use driftless_tests::random_bytes as random;
