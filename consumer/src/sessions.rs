//! Upload-session expiry: an open session past its lifetime has its S3
//! multipart upload aborted (S3 frees the parts) and is marked expired.
//!
//! A grace period past the expiry keeps the sweeper away from a commit that
//! started just before the deadline (a commit checks expiry when it starts).
//! The abort comes first and is idempotent, so a sweeper killed between the
//! two steps repeats the abort on its next pass.

use std::time::Duration;

use driftless_store::meta::uploads;
use driftless_store::{BlobError, BlobStore, Db, db::now_ms, pack_key};

use crate::worker::{Step, Worker};

/// Sessions handled per unit of work.
const PER_STEP: usize = 100;

/// Aborts expired upload sessions.
pub struct SessionSweeper {
    db: Db,
    blob: BlobStore,
    grace: Duration,
}

impl SessionSweeper {
    /// A sweeper that leaves sessions alone until `grace` past their expiry.
    pub fn new(db: Db, blob: BlobStore, grace: Duration) -> Self {
        Self { db, blob, grace }
    }

    /// Expires what is due; returns how many sessions it closed.
    pub async fn sweep(&self) -> Result<usize, String> {
        let cutoff = now_ms() - self.grace.as_millis() as i64;
        let due = uploads::expired_open(&self.db, cutoff, PER_STEP)
            .await
            .map_err(|e| e.to_string())?;
        let mut closed = 0;
        for s in due {
            if !s.s3_upload_id.is_empty() {
                match self
                    .blob
                    .abort_multipart(&pack_key(&s.pack_id), &s.s3_upload_id)
                    .await
                {
                    Ok(()) | Err(BlobError::NotFound) => {}
                    Err(e) => return Err(format!("aborting upload {}: {e}", s.id)),
                }
            }
            if uploads::expire_session(&self.db, s.namespace, &s.id)
                .await
                .map_err(|e| e.to_string())?
            {
                tracing::info!(namespace = %s.namespace, upload = %s.id, "expired upload session aborted");
                closed += 1;
            }
        }
        Ok(closed)
    }
}

impl Worker for SessionSweeper {
    fn name(&self) -> &'static str {
        "session-sweeper"
    }

    async fn work(&mut self) -> Result<Step, String> {
        Ok(match self.sweep().await? {
            PER_STEP.. => Step::Busy,
            _ => Step::Idle,
        })
    }
}
