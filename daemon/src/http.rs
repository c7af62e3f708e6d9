//! The API over HTTP: typed requests, problem+json errors, and the PUT of a
//! part to its presigned URL. Presigned URLs are bearer credentials for their
//! lifetime: they are never logged.

use bytes::Bytes;
use driftless_protocol::{
    CommitRequest, CommitResponse, CreateUpload, CreatedUpload, NamespaceId, PartRequest,
    PresignedPart, Problem, UploadId, UploadStatus,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with a problem document.
    #[error("{status}: {}{}", problem.code, problem.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// The problem as sent.
        problem: Box<Problem>,
    },
    /// Object storage refused a presigned request.
    #[error("object storage refused part {part}: HTTP {status}")]
    Storage {
        /// Part number.
        part: u32,
        /// HTTP status.
        status: u16,
    },
    /// The connection failed or timed out.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The answer was not what the protocol says.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether retrying the same request can succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Api { problem, .. } => problem.code.retryable(),
            ClientError::Storage { status, .. } => *status >= 500,
            ClientError::Transport(_) => true,
            ClientError::Protocol(_) => false,
        }
    }
}

/// A device's connection to one server.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for the server at `base` (no trailing slash) with a device token.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(32)
                .build()
                .unwrap_or_default(),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = req.bearer_auth(&self.token).send().await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()));
        }
        Err(refusal(status, &body))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `POST /v1/namespaces/{ns}/uploads`.
    pub async fn create_upload(
        &self,
        ns: NamespaceId,
        req: &CreateUpload,
    ) -> Result<CreatedUpload, ClientError> {
        self.post(&format!("/v1/namespaces/{ns}/uploads"), req)
            .await
    }

    /// `POST /v1/uploads/{id}/parts`: registers a part, returns its URL.
    pub async fn register_part(
        &self,
        id: &UploadId,
        part: &PartRequest,
    ) -> Result<PresignedPart, ClientError> {
        self.post(&format!("/v1/uploads/{id}/parts"), part).await
    }

    /// `GET /v1/uploads/{id}`.
    pub async fn upload_status(&self, id: &UploadId) -> Result<UploadStatus, ClientError> {
        self.call(self.http.get(format!("{}/v1/uploads/{id}", self.base)))
            .await
    }

    /// `POST /v1/uploads/{id}/commit`.
    pub async fn commit(
        &self,
        id: &UploadId,
        req: &CommitRequest,
    ) -> Result<CommitResponse, ClientError> {
        self.post(&format!("/v1/uploads/{id}/commit"), req).await
    }

    /// `DELETE /v1/uploads/{id}`: aborts the session (S3 frees its parts).
    pub async fn abort_upload(&self, id: &UploadId) -> Result<(), ClientError> {
        let resp = self
            .http
            .delete(format!("{}/v1/uploads/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(refusal(status, &resp.bytes().await?))
    }

    /// PUTs a part's bytes to its presigned URL; returns the ETag.
    pub async fn put_part(&self, url: &PresignedPart, body: Bytes) -> Result<String, ClientError> {
        let mut req = self.http.put(&url.url);
        for (k, v) in &url.headers {
            req = req.header(k, v);
        }
        let resp = req.body(body).send().await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ClientError::Storage {
                part: url.part_number,
                status,
            });
        }
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Protocol("part PUT returned no ETag".into()))
    }
}

/// The error for a non-2xx answer: its problem document, if it has one.
fn refusal(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<Problem>(body) {
        Ok(problem) => ClientError::Api {
            status,
            problem: Box::new(problem),
        },
        Err(_) => ClientError::Protocol(format!("HTTP {status} without a problem document")),
    }
}
