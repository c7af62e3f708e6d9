//! The driftless client library: what the desktop daemon does to a file.
//!
//! [`hash::hash_file`] chunks and fingerprints a file in bounded memory;
//! [`upload::upload_file`] asks the server what it lacks and sends only
//! that, compressed where it pays, in parallel parts PUT straight to S3
//! through presigned URLs; [`http::ApiClient`] speaks the JSON protocol.
//!
//! It talks to the API over HTTP and to S3 only through presigned URLs: no
//! server-side crate (SQL, S3 SDK, Kafka) is linked.

pub mod hash;
pub mod http;
pub mod upload;

pub use http::{ApiClient, ClientError};
pub use upload::{UploadOptions, UploadReport, upload_file};
