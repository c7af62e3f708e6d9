//! The wire contract: path validation, cursors, digests and JSON shapes.

// Test helpers outside #[test] functions unwrap too: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod cursor;
mod paths;
mod wire;
