//! The driftless server's adapters: SQL metadata on PostgreSQL or SQLite
//! (one set of queries through sqlx's Any driver), the S3 blob store
//! (aws-sdk-s3, presigned multipart uploads), and the embedded S3 endpoint
//! (s3s-fs over a local folder) that lets the server run with no services.
//!
//! Business rules beyond a single transaction live in the API, not here.

pub mod blob;
pub mod db;
pub mod embedded_fs;
pub mod embedded_s3;
pub mod env;
pub mod events;
pub mod kafka;
pub mod lease;
pub mod meta;

pub use blob::{
    BlobConfig, BlobError, BlobStore, ListedObject, ListedUpload, Page, Presigned, StoredPart,
    cors_rule_xml, pack_key,
};
pub use db::{Db, Dialect};
pub use embedded_s3::EmbeddedS3;
pub use events::{
    BusError, Event, EventBus, InProcessBus, InProcessSubscription, Publisher, Received,
};
pub use kafka::{Delivered, KafkaConfig, KafkaFollower, KafkaGroup, KafkaProducer};
pub use lease::{Lease, LeaseGuard};
