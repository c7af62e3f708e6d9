//! Object storage, reached through presigned URLs: part PUTs, ranged GETs,
//! and what S3's refusals mean for a retry.

use bytes::Bytes;
use driftless_protocol::{FetchRange, PresignedPart};

use super::{ApiClient, ClientError, read_capped};

impl ApiClient {
    /// GETs a presigned range (sent with its signed headers, never logged).
    pub async fn fetch_range(&self, range: &FetchRange) -> Result<Bytes, ClientError> {
        let max = usize::try_from(range.length).unwrap_or(usize::MAX);
        read_capped(self.open_range(range).await?, max).await
    }

    /// Starts a presigned ranged GET; the body is read as it arrives.
    pub async fn open_range(&self, range: &FetchRange) -> Result<reqwest::Response, ClientError> {
        let mut req = self.storage.get(&range.url);
        for (k, v) in &range.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(storage_refusal(0, status, resp).await);
        }
        Ok(resp)
    }

    /// PUTs a part's bytes to its presigned URL; returns the ETag.
    pub async fn put_part(&self, url: &PresignedPart, body: Bytes) -> Result<String, ClientError> {
        let mut req = self.storage.put(&url.url);
        for (k, v) in &url.headers {
            req = req.header(k, v);
        }
        let resp = req
            .timeout(part_timeout(body.len()))
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(storage_refusal(url.part_number, status, resp).await);
        }
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Protocol("part PUT returned no ETag".into()))
    }
}

/// Time for one part's PUT: a minute, plus the part at 64 KiB/s.
fn part_timeout(bytes: usize) -> std::time::Duration {
    std::time::Duration::from_secs(60 + (bytes as u64 >> 16))
}

/// Whether object storage refused a part because the bytes it received do
/// not match the checksum signed into the URL: damaged on the way (a link,
/// a proxy, a NIC), so sending them again from what was read is the cure.
/// AWS says `BadDigest`, Garage `InvalidDigest`, some S3 stores
/// `XAmzContentChecksumMismatch`; `RequestTimeout` is S3's 400 for a body
/// that arrived too slowly.
pub(super) fn damaged_on_the_way(code: &str) -> bool {
    matches!(
        code,
        "BadDigest" | "InvalidDigest" | "XAmzContentChecksumMismatch" | "RequestTimeout"
    )
}

/// Object storage's refusal of a presigned request, with S3's error code.
async fn storage_refusal(part: u32, status: u16, resp: reqwest::Response) -> ClientError {
    let body = read_capped(resp, 64 << 10).await.unwrap_or_default();
    ClientError::Storage {
        part,
        status,
        code: s3_code(&body),
    }
}

/// The `<Code>` of an S3 error document (never the rest: it can echo the
/// request, and the request carried a signature).
fn s3_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| {
            code.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(64)
                .collect()
        })
        .unwrap_or_default()
}
