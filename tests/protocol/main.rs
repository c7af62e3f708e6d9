//! The protocol as a third party meets it: PROTOCOL.md's test vectors
//! against the code, and a client written from PROTOCOL.md alone (Python,
//! tests/outside/client.py) doing a full round trip against a real server
//! (PostgreSQL, Garage), beside the Rust client.

// Test helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod outside;
mod vectors;
