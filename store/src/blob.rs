//! The S3 blob store: packs written by presigned multipart uploads, read back
//! by ranged GETs. The only module that talks to S3.
//!
//! Presigned `UploadPart` URLs carry the part's `content-length` and CRC32C
//! checksum in their signature: S3 refuses a body of another size outright,
//! and S3 or MinIO refuse one with another checksum. Presigned URLs are
//! secrets for their lifetime: nothing here logs them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

mod cors;
pub use cors::cors_rule_xml;

/// Where the blob store is and how to reach it.
#[derive(Clone)]
pub struct BlobConfig {
    /// S3 endpoint URL, e.g. `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Region name (any value for S3-compatible stores).
    pub region: String,
    /// The bucket holding packs.
    pub bucket: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key (never logged).
    pub secret_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most local stores.
    pub path_style: bool,
    /// Lifetime of presigned URLs: minutes, not days.
    pub presign_ttl: Duration,
    /// How long the store may stay silent (to answer, or within an answer);
    /// a call attempt gets four times this in all.
    pub read_timeout: Duration,
}

/// The store's default silence limit (see [`BlobConfig::read_timeout`]).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for BlobConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("presign_ttl", &self.presign_ttl)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

/// A request a client can make without credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presigned {
    /// The URL (a secret until it expires).
    pub url: String,
    /// HTTP method.
    pub method: String,
    /// Headers signed into the URL: send them exactly.
    pub headers: Vec<(String, String)>,
    /// Expiry, ms since the epoch.
    pub expires_at_ms: i64,
}

/// A part S3 holds for a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPart {
    /// Part number.
    pub part_number: u32,
    /// Size in bytes.
    pub size: u64,
    /// ETag, when the store reports it in ListParts (s3s-fs does not).
    pub etag: Option<String>,
    /// Base64 CRC32C, when the store reports it (Garage does; s3s-fs not).
    pub checksum_crc32c: Option<String>,
}

/// An object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Last modified, ms since the epoch (0 if the store did not say).
    pub modified_ms: i64,
}

/// A multipart upload in progress, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedUpload {
    /// The object key it will write.
    pub key: String,
    /// The S3 upload id.
    pub upload_id: String,
    /// When it was started, ms since the epoch (0 if the store did not say).
    pub initiated_ms: i64,
}

/// One page of a listing and where the next one starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries.
    pub items: Vec<T>,
    /// Pass back to get the next page; `None` at the end.
    pub next: Option<String>,
}

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The object, bucket or multipart upload does not exist.
    #[error("not found in object storage")]
    NotFound,
    /// S3 refused the request.
    #[error("object storage refused the request: {code}: {message}")]
    Refused {
        /// S3 error code, e.g. `InvalidPart`.
        code: String,
        /// S3's message.
        message: String,
    },
    /// S3 could not be reached or failed; retryable.
    #[error("object storage unavailable: {0}")]
    Unavailable(String),
}

impl BlobError {
    /// Whether retrying can help.
    pub fn retryable(&self) -> bool {
        matches!(self, BlobError::Unavailable(_))
    }
}

fn map_err<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("").to_owned();
            if status == 404
                || matches!(
                    code.as_str(),
                    "NoSuchKey" | "NoSuchUpload" | "NoSuchBucket" | "NotFound"
                )
            {
                BlobError::NotFound
            } else if status >= 500 {
                BlobError::Unavailable(format!("{status} {code}"))
            } else {
                BlobError::Refused {
                    code,
                    message: se.err().message().unwrap_or("").to_owned(),
                }
            }
        }
        _ => BlobError::Unavailable(DisplayErrorContext(&e).to_string()),
    }
}

/// How long a connection to the store may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The blob store client.
#[derive(Clone, Debug)]
pub struct BlobStore {
    client: Client,
    bucket: String,
    presign_ttl: Duration,
    /// The deadline of one call attempt (and of a range's body).
    attempt: Duration,
}

impl BlobStore {
    /// A client for `config` (no request is made).
    pub fn new(config: &BlobConfig) -> Self {
        let creds = Credentials::new(
            &config.access_key,
            &config.secret_key,
            None,
            None,
            "driftless",
        );
        // Every call has a deadline: a frozen connection to the store must
        // cost a commit an error (and the client a retry), never a hang.
        // (Assembling a 10,000-part upload is the slowest thing asked of a
        // store: an attempt gets four silences' worth.)
        let attempt = config.read_timeout * 4;
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(config.read_timeout))
            .read_timeout(config.read_timeout)
            .operation_attempt_timeout(attempt)
            .operation_timeout(attempt * 3)
            .build();
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .endpoint_url(&config.endpoint)
            .credentials_provider(creds)
            .force_path_style(config.path_style)
            .timeout_config(timeouts)
            .build();
        Self {
            client: Client::from_conf(conf),
            bucket: config.bucket.clone(),
            presign_ttl: config.presign_ttl,
            attempt,
        }
    }

    /// Whether the store answers and the bucket is there (readiness): one
    /// attempt, no retries, so a store that is down is reported at once.
    pub async fn check(&self) -> Result<(), BlobError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default()
                    .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    /// Creates the bucket if it does not exist.
    pub async fn ensure_bucket(&self) -> Result<(), BlobError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) => match map_err(e) {
                BlobError::NotFound => {}
                // Some stores answer HEAD on a missing bucket with 403/400.
                BlobError::Refused { .. } => {}
                other => return Err(other),
            },
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_err(e) {
                BlobError::Refused { code, .. }
                    if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" =>
                {
                    Ok(())
                }
                other => Err(other),
            },
        }
    }

    /// Starts a multipart upload whose parts carry CRC32C checksums.
    pub async fn create_multipart(&self, key: &str) -> Result<String, BlobError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .map_err(map_err)?;
        out.upload_id.ok_or_else(|| {
            BlobError::Unavailable("CreateMultipartUpload returned no upload id".into())
        })
    }

    /// A presigned `UploadPart` with size and CRC32C (base64) signed in.
    pub async fn presign_upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        size: u64,
        crc32c_b64: &str,
    ) -> Result<Presigned, BlobError> {
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number as i32)
            .content_length(size as i64)
            .checksum_crc32_c(crc32c_b64)
            .presigned(self.presigning()?)
            .await
            .map_err(map_err)?;
        Ok(self.presigned(req))
    }

    /// The parts S3 holds for an upload, in part-number order.
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<StoredPart>, BlobError> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(map_err)?;
            for p in out.parts() {
                parts.push(StoredPart {
                    part_number: p.part_number().unwrap_or(0) as u32,
                    size: p.size().unwrap_or(0) as u64,
                    etag: p.e_tag().filter(|e| !e.is_empty()).map(str::to_owned),
                    checksum_crc32c: p
                        .checksum_crc32_c()
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned),
                });
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            marker = out.next_part_number_marker().map(str::to_owned);
            if marker.is_none() {
                break;
            }
        }
        parts.sort_by_key(|p| p.part_number);
        Ok(parts)
    }

    /// Completes a multipart upload from (part number, ETag, CRC32C) triples.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String, String)],
    ) -> Result<(), BlobError> {
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|(n, etag, crc)| {
                        CompletedPart::builder()
                            .part_number(*n as i32)
                            .e_tag(etag)
                            .checksum_crc32_c(crc)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Aborts a multipart upload; S3 frees its parts.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), BlobError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match map_err(e) {
                BlobError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }

    /// A presigned ranged GET of `len` bytes at `offset` (the Range header is signed).
    pub async fn presign_get_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Presigned, BlobError> {
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range(offset, len))
            .presigned(self.presigning()?)
            .await
            .map_err(map_err)?;
        Ok(self.presigned(req))
    }

    /// Reads `len` bytes at `offset`.
    pub async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, BlobError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(range(offset, len))
            .send()
            .await
            .map_err(map_err)?;
        // The body streams after the call returned: it has its own deadline.
        let body = tokio::time::timeout(self.attempt, out.body.collect())
            .await
            .map_err(|_| BlobError::Unavailable("the store stopped sending a range".into()))?
            .map_err(|e| BlobError::Unavailable(e.to_string()))?;
        Ok(body.into_bytes())
    }

    /// One page (up to 1000) of the objects under `prefix`, in key order,
    /// starting after the page `from` names.
    pub async fn list_page(
        &self,
        prefix: &str,
        from: Option<String>,
    ) -> Result<Page<ListedObject>, BlobError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_continuation_token(from)
            .send()
            .await
            .map_err(map_err)?;
        let items = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ListedObject {
                    key: o.key()?.to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified_ms: o.last_modified().map_or(0, |t| t.to_millis().unwrap_or(0)),
                })
            })
            .collect();
        let next = match out.is_truncated() {
            Some(true) => out.next_continuation_token().map(str::to_owned),
            _ => None,
        };
        Ok(Page { items, next })
    }

    /// One page of the multipart uploads in progress under `prefix`;
    /// `Ok(None)` if the store does not implement the listing.
    pub async fn list_uploads_page(
        &self,
        prefix: &str,
        from: Option<String>,
    ) -> Result<Option<Page<ListedUpload>>, BlobError> {
        let (key_marker, upload_marker) = from
            .as_deref()
            .and_then(|f| f.split_once('\n'))
            .map(|(k, u)| (k.to_owned(), u.to_owned()))
            .unzip();
        let out = match self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_key_marker(key_marker)
            .set_upload_id_marker(upload_marker)
            .send()
            .await
            .map_err(map_err)
        {
            Ok(out) => out,
            Err(BlobError::Refused { code, .. }) if code == "NotImplemented" => return Ok(None),
            Err(BlobError::Unavailable(m)) if m.contains("NotImplemented") => return Ok(None),
            Err(e) => return Err(e),
        };
        let items: Vec<ListedUpload> = out
            .uploads()
            .iter()
            .filter_map(|u| {
                Some(ListedUpload {
                    key: u.key()?.to_owned(),
                    upload_id: u.upload_id()?.to_owned(),
                    initiated_ms: u.initiated().map_or(0, |t| t.to_millis().unwrap_or(0)),
                })
            })
            .collect();
        let next = match (out.is_truncated(), items.last()) {
            (Some(true), Some(last)) => Some(format!(
                "{}\n{}",
                out.next_key_marker().unwrap_or(&last.key),
                out.next_upload_id_marker().unwrap_or(&last.upload_id)
            )),
            _ => None,
        };
        Ok(Some(Page { items, next }))
    }

    /// Writes a whole object (reconcile's pack rewrites, tests).
    pub async fn put(&self, key: &str, body: Bytes) -> Result<(), BlobError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// The object's size, or `None` if it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, BlobError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0) as u64)),
            Err(e) => match map_err(e) {
                BlobError::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Deletes an object (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }

    fn presigning(&self) -> Result<PresigningConfig, BlobError> {
        PresigningConfig::expires_in(self.presign_ttl)
            .map_err(|e| BlobError::Unavailable(format!("presigning config: {e}")))
    }

    fn presigned(&self, req: PresignedRequest) -> Presigned {
        let expires = SystemTime::now() + self.presign_ttl;
        Presigned {
            url: req.uri().to_owned(),
            method: req.method().to_owned(),
            headers: req
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            expires_at_ms: expires
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        }
    }
}

fn range(offset: u64, len: u64) -> String {
    format!("bytes={}-{}", offset, offset + len.max(1) - 1)
}

/// The S3 key of a pack.
pub fn pack_key(pack_id: &str) -> String {
    format!("packs/{pack_id}")
}
