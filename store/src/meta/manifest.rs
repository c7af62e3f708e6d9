//! A version's manifest as stored (the encoding lives in the protocol crate,
//! where the fuzz target reaches it without the server's dependencies).

pub use driftless_protocol::Manifest;
