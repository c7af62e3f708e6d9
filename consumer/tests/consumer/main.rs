//! Integration tests of the background workers against real PostgreSQL,
//! SQLite and a SigV4 S3 server.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod durable;
mod stream;
mod verify;
