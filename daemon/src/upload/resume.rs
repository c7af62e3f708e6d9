//! Resuming a batch after a crash: the session the journal holds for the
//! same batch, if the server can still take it, and commits that wait out
//! another commit of the same session.

use super::*;

/// What an interrupted run left.
pub(super) enum Resumed {
    Committed(UploadId),
    Open {
        id: UploadId,
        needed: Vec<ChunkHash>,
        part_size: u64,
        saved: Vec<SavedPart>,
        stored: HashSet<u32>,
    },
}

/// Finds the session an earlier run of the same batch left, if it can
/// still be used.
pub(super) async fn saved_session(
    api: &ApiClient,
    j: &State,
    key: &[u8; 32],
) -> Result<Option<Resumed>, UploadError> {
    let Some(saved) = j.saved_upload(key)? else {
        return Ok(None);
    };
    j.touch_upload(key)?;
    // A commit of it may still be running (the killed run's, finishing on
    // the server): wait for its end rather than act on a half-assembled
    // upload.
    let waited = std::time::Instant::now();
    let status = loop {
        match api.upload_status(&saved.upload_id).await {
            Ok(s) if s.state == UploadState::Committing && waited.elapsed() < BUSY_WAIT => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Ok(s) => break s,
            Err(ClientError::Api { problem, .. }) if problem.code == ErrorCode::NotFound => {
                j.forget_upload(key)?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    };
    // A margin so that the session does not expire halfway through.
    let margin = 5 * 60 * 1000;
    match status.state {
        UploadState::Committed => Ok(Some(Resumed::Committed(saved.upload_id))),
        UploadState::Open if status.expires_at_ms > crate::now_ms() + margin => {
            // A part counts as done only if S3 holds it and its ETag was
            // noted; one killed between its PUT and the note is sent again
            // (same number, same bytes), which gives its ETag anew.
            let noted: HashSet<u32> = saved
                .parts
                .iter()
                .filter(|p| p.etag.is_some())
                .map(|p| p.part_number)
                .collect();
            let stored: HashSet<u32> = status
                .parts
                .iter()
                .filter(|p| p.stored && noted.contains(&p.part_number))
                .map(|p| p.part_number)
                .collect();
            tracing::info!(upload = %saved.upload_id, stored = stored.len(), "resuming an interrupted upload");
            Ok(Some(Resumed::Open {
                id: saved.upload_id,
                needed: saved.needed,
                part_size: saved.part_size,
                saved: saved.parts,
                stored,
            }))
        }
        _ => {
            if status.state == UploadState::Open
                && let Err(e) = api.abort_upload(&saved.upload_id).await
            {
                tracing::debug!(error = %e, "could not abort a nearly expired session");
            }
            j.forget_upload(key)?;
            Ok(None)
        }
    }
}

/// How long to wait for a running commit of the same session.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Commits, waiting while another commit of the session runs.
pub(super) async fn commit(
    api: &ApiClient,
    id: &UploadId,
    req: &CommitRequest,
) -> Result<driftless_protocol::CommitResponse, ClientError> {
    let waited = std::time::Instant::now();
    loop {
        match api.commit(id, req).await {
            Err(ClientError::Api { problem, .. })
                if problem.code == ErrorCode::UploadBusy && waited.elapsed() < BUSY_WAIT =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}
