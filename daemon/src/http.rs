//! The API over HTTP: typed requests, problem+json errors, and the PUT of a
//! part to its presigned URL. Presigned URLs are bearer credentials for their
//! lifetime: they are never logged.

use bytes::Bytes;
use driftless_protocol::{
    ChangesPage, CommitRequest, CommitResponse, CreateNamespace, CreateUpload, CreatedUpload,
    DeviceId, DeviceView, DownloadManifest, InvitationView, LoginRequest, LoginResponse,
    NamespaceId, NamespaceView, Outcome, PartRequest, PresignedPart, Problem, RestoreRequest, Rev,
    UploadId, UploadStatus, VersionView, WaitResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod storage;
use storage::damaged_on_the_way;

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
    #[error("object storage refused part {part}: HTTP {status} {code}")]
    Storage {
        /// Part number.
        part: u32,
        /// HTTP status.
        status: u16,
        /// S3's error code (e.g. `SignatureDoesNotMatch`), if it gave one.
        code: String,
    },
    /// The connection failed or timed out.
    #[error("transport: {0}")]
    Transport(reqwest::Error),
    /// An HTTP error without a problem document: a proxy's or load
    /// balancer's page, say (5xx and 408/429 are worth retrying).
    #[error("HTTP {status} without a problem document")]
    Http {
        /// HTTP status.
        status: u16,
    },
    /// The answer was not what the protocol says.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether retrying the same request can succeed.
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Api { problem, .. } => problem.code.retryable(),
            ClientError::Storage { status, code, .. } => {
                *status >= 500 || matches!(status, 408 | 429) || damaged_on_the_way(code)
            }
            ClientError::Transport(_) => true,
            ClientError::Http { status } => *status >= 500 || matches!(status, 408 | 429),
            ClientError::Protocol(_) => false,
        }
    }

    /// Whether the server no longer accepts this device's token (revoked,
    /// expired, or unknown to it): only signing in again helps.
    pub fn signed_out(&self) -> bool {
        matches!(self, ClientError::Api { problem, .. } if problem.code == driftless_protocol::ErrorCode::Unauthorized)
    }
}

/// Longest a JSON answer of the API may be (a 50 GB file's manifest is a
/// few MB): a server or a man in the middle cannot make the daemon grow
/// without bound.
pub const MAX_RESPONSE: usize = 64 << 20;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long an API call may take in all, by default (long-polls: their own
/// time); `DRIFTLESS_HTTP_TIMEOUT_SECS` sets it for slow links.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long object storage may go silent in the middle of an answer, at most.
const STORAGE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The call deadline in force (see [`CALL_TIMEOUT`]).
fn call_timeout() -> std::time::Duration {
    std::env::var("DRIFTLESS_HTTP_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(CALL_TIMEOUT, std::time::Duration::from_secs)
}

/// Reads a body of at most `max` bytes.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Bytes, ClientError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(ClientError::Protocol(format!(
            "an answer of {} bytes (at most {max} are read)",
            resp.content_length().unwrap_or(0)
        )));
    }
    let mut out = bytes::BytesMut::new();
    while let Some(piece) = resp.chunk().await? {
        if out.len() + piece.len() > max {
            return Err(ClientError::Protocol(format!(
                "an answer longer than {max} bytes"
            )));
        }
        out.extend_from_slice(&piece);
    }
    Ok(out.freeze())
}

impl From<reqwest::Error> for ClientError {
    /// Without its URL: a presigned URL is a credential and must never
    /// reach a log.
    fn from(e: reqwest::Error) -> Self {
        Self::Transport(e.without_url())
    }
}

/// A device's connection to one server, and to the object storage its
/// presigned URLs name. Every call has a deadline and every answer a size
/// bound: a server that accepts and never answers, a frozen connection, or
/// an endless answer cost a timeout, never a hang or the memory.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
    storage: reqwest::Client,
    timeout: std::time::Duration,
}

impl ApiClient {
    /// A client for the server at `base` (no trailing slash) with a device token.
    pub fn new(base: &str, token: &str) -> Self {
        let timeout = call_timeout();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(32)
                .connect_timeout(CONNECT_TIMEOUT.min(timeout))
                .build()
                .unwrap_or_default(),
            // Downloads and part uploads: a connection silent for half a
            // minute is dead (S3 may have recovered; a new one will do).
            storage: reqwest::Client::builder()
                .pool_max_idle_per_host(32)
                .connect_timeout(CONNECT_TIMEOUT.min(timeout))
                .read_timeout(STORAGE_IDLE.min(timeout))
                .build()
                .unwrap_or_default(),
            timeout,
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let (status, body) = self.send(req).await?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()));
        }
        Err(refusal(status, &body))
    }

    /// A call whose success has no body worth reading.
    async fn call_empty(&self, req: reqwest::RequestBuilder) -> Result<(), ClientError> {
        let (status, body) = self.send(req).await?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(refusal(status, &body))
    }

    /// Sends `req` with the device token, waiting out load shedding: a
    /// server answering 429 says when to come back (`Retry-After`), and up
    /// to [`SHED_RETRIES`] such answers are waited out (each wait capped at
    /// a minute, plus up to a second of jitter so that devices turned away
    /// together do not return together) before the refusal is returned.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Bytes), ClientError> {
        self.send_within(req, self.timeout).await
    }

    /// [`ApiClient::send`] with its own deadline per attempt.
    async fn send_within(
        &self,
        req: reqwest::RequestBuilder,
        deadline: std::time::Duration,
    ) -> Result<(u16, Bytes), ClientError> {
        let mut shed = 0;
        loop {
            let attempt = req.try_clone().ok_or_else(|| {
                ClientError::Protocol("a request body that cannot be resent".into())
            })?;
            let resp = attempt
                .bearer_auth(&self.token)
                .timeout(deadline)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let wait = retry_after(status, resp.headers());
            let body = read_capped(resp, MAX_RESPONSE).await?;
            match wait {
                Some(wait) if shed < SHED_RETRIES => {
                    shed += 1;
                    tracing::debug!(
                        wait_ms = wait.as_millis() as u64,
                        "server busy; waiting as it asked"
                    );
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok((status, body)),
            }
        }
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST /v1/login`: a new device token for a user (no token needed).
    pub async fn login(base: &str, req: &LoginRequest) -> Result<LoginResponse, ClientError> {
        let timeout = call_timeout();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .build()
            .unwrap_or_default();
        let resp = http
            .post(format!("{}/v1/login", base.trim_end_matches('/')))
            .json(req)
            .timeout(timeout)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, 1 << 20).await?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()));
        }
        Err(refusal(status, &body))
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /v1/namespaces`.
    pub async fn namespaces(&self) -> Result<Vec<NamespaceView>, ClientError> {
        self.get("/v1/namespaces").await
    }

    /// `POST /v1/namespaces`: a new folder the caller owns.
    pub async fn create_namespace(&self, name: &str) -> Result<NamespaceView, ClientError> {
        self.post("/v1/namespaces", &CreateNamespace { name: name.into() })
            .await
    }

    /// `PUT /v1/namespaces/{ns}/members/{user}`: invites `user` (or changes
    /// a member's role).
    pub async fn share(&self, ns: NamespaceId, user: &str, role: &str) -> Result<(), ClientError> {
        self.call_empty(
            self.http
                .put(format!(
                    "{}/v1/namespaces/{ns}/members/{}",
                    self.base,
                    segment(user)
                ))
                .json(&serde_json::json!({ "role": role })),
        )
        .await
    }

    /// `DELETE /v1/namespaces/{ns}/members/{user}`.
    pub async fn unshare(&self, ns: NamespaceId, user: &str) -> Result<(), ClientError> {
        self.call_empty(self.http.delete(format!(
            "{}/v1/namespaces/{ns}/members/{}",
            self.base,
            segment(user)
        )))
        .await
    }

    /// `GET /v1/invitations`.
    pub async fn invitations(&self) -> Result<Vec<InvitationView>, ClientError> {
        self.get("/v1/invitations").await
    }

    /// `POST /v1/invitations/{ns}`: accepts an invitation.
    pub async fn accept(&self, ns: NamespaceId) -> Result<NamespaceView, ClientError> {
        self.post(&format!("/v1/invitations/{ns}"), &serde_json::json!({}))
            .await
    }

    /// `DELETE /v1/invitations/{ns}`: declines an invitation.
    pub async fn decline(&self, ns: NamespaceId) -> Result<(), ClientError> {
        self.call_empty(
            self.http
                .delete(format!("{}/v1/invitations/{ns}", self.base)),
        )
        .await
    }

    /// `GET /v1/devices`.
    pub async fn devices(&self) -> Result<Vec<DeviceView>, ClientError> {
        self.get("/v1/devices").await
    }

    /// `DELETE /v1/devices/{id}`: signs a device out on the server.
    pub async fn revoke_device(&self, id: DeviceId) -> Result<(), ClientError> {
        self.call_empty(self.http.delete(format!("{}/v1/devices/{id}", self.base)))
            .await
    }

    /// `POST /v1/logout`: signs this device out on the server.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call_empty(self.http.post(format!("{}/v1/logout", self.base)))
            .await
    }

    /// `GET /v1/namespaces/{ns}/changes`: from `cursor`, or a bootstrap.
    pub async fn changes(
        &self,
        ns: NamespaceId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ChangesPage, ClientError> {
        let mut q = format!("/v1/namespaces/{ns}/changes?limit={limit}");
        if let Some(c) = cursor {
            q.push_str("&cursor=");
            q.push_str(c);
        }
        self.get(&q).await
    }

    /// The live files of the folder under `prefix` (the snapshot pages of a
    /// bootstrap), in path order.
    pub async fn list(
        &self,
        ns: NamespaceId,
        prefix: Option<&str>,
    ) -> Result<Vec<driftless_protocol::ChangeEntry>, ClientError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = reqwest::Url::parse(&format!("{}/v1/namespaces/{ns}/changes", self.base))
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            url.query_pairs_mut().append_pair("limit", "1000");
            if let Some(p) = prefix
                .map(|p| p.trim_matches('/'))
                .filter(|p| !p.is_empty())
            {
                url.query_pairs_mut().append_pair("prefix", p);
            }
            if let Some(c) = &cursor {
                url.query_pairs_mut().append_pair("cursor", c);
            }
            let page: ChangesPage = self.call(self.http.get(url)).await?;
            if !page.snapshot {
                break;
            }
            out.extend(page.entries);
            if !page.has_more {
                break;
            }
            cursor = Some(page.cursor);
        }
        Ok(out)
    }

    /// `GET /v1/namespaces/{ns}/changes/wait`: returns when the folder
    /// moves past `cursor`, or after about `timeout_s`.
    pub async fn wait(
        &self,
        ns: NamespaceId,
        cursor: &str,
        timeout_s: u64,
    ) -> Result<WaitResponse, ClientError> {
        // The server holds it up to the timeout plus 10% jitter.
        let deadline = std::time::Duration::from_secs(timeout_s + timeout_s / 5 + 15);
        let req = self.http.get(format!(
            "{}/v1/namespaces/{ns}/changes/wait?cursor={cursor}&timeout={timeout_s}",
            self.base
        ));
        let (status, body) = self.send_within(req, deadline).await?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()));
        }
        Err(refusal(status, &body))
    }

    /// `POST /v1/namespaces/{ns}/cursor`: what this device has applied.
    pub async fn report_cursor(&self, ns: NamespaceId, cursor: &str) -> Result<(), ClientError> {
        self.call_empty(
            self.http
                .post(format!("{}/v1/namespaces/{ns}/cursor", self.base))
                .json(&serde_json::json!({ "cursor": cursor })),
        )
        .await
    }

    /// `GET /v1/namespaces/{ns}/manifest`: a version's chunks with presigned
    /// ranged GETs (the live version when `rev` is `None`).
    pub async fn manifest(
        &self,
        ns: NamespaceId,
        path: &str,
        rev: Option<Rev>,
    ) -> Result<DownloadManifest, ClientError> {
        let mut url = reqwest::Url::parse(&format!("{}/v1/namespaces/{ns}/manifest", self.base))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        url.query_pairs_mut().append_pair("path", path);
        if let Some(r) = rev {
            url.query_pairs_mut().append_pair("rev", &r.0.to_string());
        }
        self.call(self.http.get(url)).await
    }

    /// `GET /v1/namespaces/{ns}/versions`: a file's history, newest first.
    pub async fn versions(
        &self,
        ns: NamespaceId,
        path: &str,
    ) -> Result<Vec<VersionView>, ClientError> {
        let mut url = reqwest::Url::parse(&format!("{}/v1/namespaces/{ns}/versions", self.base))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        url.query_pairs_mut().append_pair("path", path);
        self.call(self.http.get(url)).await
    }

    /// `POST /v1/namespaces/{ns}/restore`.
    pub async fn restore(
        &self,
        ns: NamespaceId,
        req: &RestoreRequest,
    ) -> Result<Outcome, ClientError> {
        self.post(&format!("/v1/namespaces/{ns}/restore"), req)
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
        self.call_empty(self.http.delete(format!("{}/v1/uploads/{id}", self.base)))
            .await
    }
}

/// A path segment, percent-encoded (a user name may hold any character).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error for a non-2xx answer: its problem document, if it has one.
/// How many 429s in a row one call waits out.
pub const SHED_RETRIES: u32 = 5;

/// The wait a 429 asks for (`Retry-After` in seconds, at most a minute,
/// plus jitter); `None` for any other answer.
fn retry_after(status: u16, headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    use rand::Rng;
    if status != 429 {
        return None;
    }
    let secs = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .min(60);
    Some(
        std::time::Duration::from_secs(secs)
            + std::time::Duration::from_millis(rand::rng().random_range(0..1000)),
    )
}

fn refusal(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<Problem>(body) {
        Ok(problem) => ClientError::Api {
            status,
            problem: Box::new(problem),
        },
        Err(_) => ClientError::Http { status },
    }
}
