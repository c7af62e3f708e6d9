//! Uploads that will never finish: open sessions past their expiry (their
//! multipart upload aborted, the session expired), pack rows still
//! `uploading` for a session that is closed, and multipart uploads in the
//! bucket that no open session owns (a server that died between starting
//! one and recording it) — aborted, so S3 frees their parts.

use driftless_protocol::NamespaceId;
use driftless_store::meta::from_db;
use driftless_store::meta::uploads;
use driftless_store::{BlobError, pack_key};
use sqlx::Row;

use super::{Cx, ReconcileError};

const PAGE: usize = 500;

pub(super) async fn check(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    expired(cx).await?;
    stale_packs(cx).await?;
    strays(cx).await
}

async fn expired(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    let cutoff = cx.before(cx.opts.session_grace);
    if cx.dry() {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM upload_sessions WHERE state = 'open' AND expires_at_ms < $1",
        )
        .bind(cutoff)
        .fetch_one(cx.db.pool())
        .await?
        .try_get(0)?;
        cx.report.found("expired_session", from_db(n));
        if n > 0 {
            cx.report
                .would("expired_session", "abort", format!("{n} sessions"));
        }
        return Ok(());
    }
    loop {
        let due = uploads::expired_open(cx.db, cutoff, PAGE).await?;
        for s in &due {
            cx.report.found("expired_session", 1);
            if !s.s3_upload_id.is_empty() {
                match cx
                    .blob
                    .abort_multipart(&pack_key(&s.pack_id), &s.s3_upload_id)
                    .await
                {
                    Ok(()) | Err(BlobError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // False if it closed meanwhile (a late commit won): fine too.
            uploads::expire_session(cx.db, s.namespace, &s.id).await?;
            cx.report.repaired(
                "expired_session",
                1,
                "aborted",
                format!("{}/{}", s.namespace, s.id),
            );
        }
        if due.len() < PAGE {
            return Ok(());
        }
    }
}

async fn stale_packs(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    let rows = sqlx::query(
        "SELECT p.namespace_id, p.upload_id, p.id FROM packs p LEFT JOIN upload_sessions s \
         ON s.namespace_id = p.namespace_id AND s.id = p.upload_id \
         WHERE p.state = 'uploading' AND (s.id IS NULL OR s.state <> 'open') \
         AND p.created_at_ms < $1",
    )
    // A row inserted with its session a moment ago is not stale.
    .bind(cx.before(cx.opts.stale))
    .fetch_all(cx.db.pool())
    .await?;
    for r in rows {
        let ns = NamespaceId(from_db(r.try_get(0)?));
        let (session, pack): (String, String) = (r.try_get(1)?, r.try_get(2)?);
        cx.report.found("stale_pack_row", 1);
        let target = format!("{ns}/{pack}");
        if cx.dry() {
            cx.report.would("stale_pack_row", "retire", target);
            continue;
        }
        let mut conn = cx.db.pool().acquire().await?;
        if uploads::retire_unfinished_pack(&mut conn, ns, &session).await? > 0 {
            cx.report.repaired("stale_pack_row", 1, "retired", target);
        }
    }
    Ok(())
}

async fn strays(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    // An upload is started a moment before its session row is written.
    let cut = cx.before(cx.opts.stale);
    let mut from = None;
    loop {
        let Some(page) = cx.blob.list_uploads_page("packs/", from.take()).await? else {
            cx.report.notes.push(
                "the object store does not list multipart uploads: uploads no session \
                 recorded are left to the bucket's lifecycle rule (AbortIncompleteMultipartUpload)"
                    .into(),
            );
            return Ok(());
        };
        for u in &page.items {
            if u.initiated_ms >= cut {
                continue;
            }
            let Some(pack) = u.key.strip_prefix("packs/") else {
                continue;
            };
            let owner = sqlx::query(
                "SELECT 1 FROM packs p JOIN upload_sessions s ON s.namespace_id = p.namespace_id \
                 AND s.id = p.upload_id WHERE p.id = $1 AND s.state = 'open' AND s.s3_upload_id = $2",
            )
            .bind(pack)
            .bind(&u.upload_id)
            .fetch_optional(cx.db.pool())
            .await?;
            if owner.is_some() {
                continue;
            }
            cx.report.found("stray_multipart", 1);
            if cx.dry() {
                cx.report.would("stray_multipart", "abort", u.key.clone());
                continue;
            }
            match cx.blob.abort_multipart(&u.key, &u.upload_id).await {
                Ok(()) | Err(BlobError::NotFound) => {
                    cx.report
                        .repaired("stray_multipart", 1, "aborted", u.key.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        match page.next {
            Some(n) => from = Some(n),
            None => return Ok(()),
        }
    }
}
