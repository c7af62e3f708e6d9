//! The driftless client library: what the desktop daemon does to a file.
//!
//! [`hash::hash_file`] chunks and fingerprints a file in bounded memory;
//! [`upload::upload_file`] asks the server what it lacks and sends only
//! that, compressed where it pays, in parallel parts PUT straight to S3
//! through presigned URLs; [`http::ApiClient`] speaks the JSON protocol.
//!
//! It talks to the API over HTTP and to S3 only through presigned URLs: no
//! server-side crate (SQL, S3 SDK, Kafka) is linked.

pub mod download;
pub mod hash;
pub mod http;
pub mod local;
pub mod progress;
pub mod run;
pub mod scan;
pub mod state;
pub mod status;
pub mod sync;
pub mod upload;

pub use http::{ApiClient, ClientError};
pub use upload::{UploadOptions, UploadReport, upload_file};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
