//! The client library against a real server (PostgreSQL + SigV4 S3).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod upload;
