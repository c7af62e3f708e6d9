//! Moves and deletes: metadata-only operations, sent many to a request.

use driftless_protocol::{CreateUpload, ErrorCode, FileOp, Outcome};

use super::super::{PassReport, SyncError, Syncer, chunk_list};
use super::Changed;
use crate::http::ClientError;
use crate::state::Synced;

impl Syncer {
    /// Sends moves in one request; for each, `false` if the server refused
    /// it (then it is sent as a delete and a new file).
    pub(super) async fn send_moves(
        &self,
        pairs: &[(Synced, usize)],
        changed: &[Changed],
        report: &mut PassReport,
    ) -> Result<Vec<bool>, SyncError> {
        let mut ops = Vec::with_capacity(pairs.len());
        for (from, i) in pairs {
            let to = &changed[*i];
            let mut digest = blake3::Hasher::new();
            digest.update(b"move");
            digest.update(from.path.as_str().as_bytes());
            digest.update(&from.rev.0.to_le_bytes());
            let op = self.state.op_for(&to.path, digest.finalize().as_bytes())?;
            self.state.note_sent(&to.path, &to.hashed.content_hash)?;
            ops.push(FileOp::Move {
                op_id: op
                    .parse()
                    .map_err(|e| ClientError::Protocol(format!("{e:?}")))?,
                from: from.path.as_str().to_owned(),
                from_rev: from.rev,
                to: to.path.as_str().to_owned(),
                base_rev: None,
            });
        }
        let r = self
            .api
            .create_upload(self.ns, &CreateUpload { files: ops })
            .await?;
        let mut out = Vec::with_capacity(pairs.len());
        for ((from, i), result) in pairs.iter().zip(r.results) {
            let to = &changed[*i];
            match result.outcome {
                Outcome::Committed { rev, .. } => {
                    self.state.forget(&from.path)?;
                    self.state.record(
                        &Synced {
                            path: to.path.clone(),
                            rev,
                            content_hash: to.hashed.content_hash,
                            stat: to.stat,
                        },
                        &chunk_list(&to.hashed),
                    )?;
                    report.moved += 1;
                    out.push(true);
                }
                other => {
                    tracing::info!(from = %from.path, to = %to.path, outcome = ?other, "move refused; sending it as a delete and a new file");
                    out.push(false);
                }
            }
        }
        out.resize(pairs.len(), false);
        Ok(out)
    }

    /// Deletes on the server files deleted here, in one request. A file
    /// edited there meanwhile wins: it comes back here.
    pub(super) async fn send_deletes(
        &self,
        gone: &[Synced],
        report: &mut PassReport,
    ) -> Result<(), SyncError> {
        let mut ops = Vec::with_capacity(gone.len());
        for s in gone {
            let mut digest = blake3::Hasher::new();
            digest.update(b"delete");
            digest.update(&s.rev.0.to_le_bytes());
            let op = self.state.op_for(&s.path, digest.finalize().as_bytes())?;
            ops.push(FileOp::Delete {
                op_id: op
                    .parse()
                    .map_err(|e| ClientError::Protocol(format!("{e:?}")))?,
                path: s.path.as_str().to_owned(),
                base_rev: s.rev,
            });
        }
        let r = self
            .api
            .create_upload(self.ns, &CreateUpload { files: ops })
            .await?;
        for (s, result) in gone.iter().zip(r.results) {
            match result.outcome {
                Outcome::Committed { .. } => {
                    self.state.forget(&s.path)?;
                    report.deleted_there += 1;
                }
                Outcome::Conflict { current_rev } => {
                    self.state.forget(&s.path)?;
                    if current_rev.is_some()
                        && let Err(e) = self.download(&s.path, None, None, report).await
                    {
                        report.problem(s.path.as_str(), e);
                    }
                }
                Outcome::Error {
                    code: ErrorCode::NotFound,
                    ..
                } => {
                    self.state.forget(&s.path)?;
                }
                other => report.problem(s.path.as_str(), format!("delete not applied: {other:?}")),
            }
        }
        Ok(())
    }
}
