//! Compaction: a complete pack with less than `compact_below_pct` of its
//! bytes live is rewritten. Its live chunks are read back, each decoded and
//! re-hashed (one that fails is marked corrupt and asked for again, never
//! copied), written as a new pack object, and moved to it in one
//! transaction; the old pack is retired, and its object deleted by a later
//! objects check once no presigned URL handed out before the move can name
//! it. A run killed before the move leaves only an unreferenced new object,
//! which the objects check deletes after the orphan grace.

use bytes::BytesMut;
use driftless_protocol::NamespaceId;
use driftless_store::db::now_ms;
use driftless_store::meta::chunks::{self, Bad};
use driftless_store::meta::{from_db, to_db};
use driftless_store::pack_key;
use rand::RngCore;
use sqlx::Row;

use super::{Cx, ReconcileError, mark_corrupt};
use crate::verify::{Verifier, VerifyError};

const PAGE: i64 = 200;

pub(super) async fn check(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    let mut verifier = Verifier::new(cx.db.clone(), cx.blob.clone());
    let mut after = (0i64, String::new());
    loop {
        let rows = sqlx::query(
            "SELECT namespace_id, id, live_bytes, total_bytes FROM packs WHERE state = 'complete' \
             AND live_bytes * 100 < total_bytes * $1 \
             AND (namespace_id, id) > ($2, $3) \
             ORDER BY namespace_id, id LIMIT $4",
        )
        .bind(to_db(cx.opts.compact_below_pct))
        .bind(after.0)
        .bind(&after.1)
        .bind(PAGE)
        .fetch_all(cx.db.pool())
        .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = (last.try_get(0)?, last.try_get(1)?);
        for r in &rows {
            let ns = NamespaceId(from_db(r.try_get(0)?));
            let id: String = r.try_get(1)?;
            let (live, total): (u64, u64) = (from_db(r.try_get(2)?), from_db(r.try_get(3)?));
            if live == 0 {
                continue; // nothing to keep: the liveness check retires it
            }
            if live > cx.opts.max_rewrite_bytes {
                cx.report.work("packs_too_large_to_compact", 1);
                continue;
            }
            let target = format!("{ns}/{id}: {live} of {total} bytes live");
            if cx.dry() {
                cx.report.would("packs_compacted", "rewrite", target);
                continue;
            }
            rewrite(cx, &mut verifier, ns, &id, total).await?;
        }
        if (rows.len() as i64) < PAGE {
            return Ok(());
        }
    }
}

async fn rewrite(
    cx: &mut Cx<'_>,
    verifier: &mut Verifier,
    ns: NamespaceId,
    old: &str,
    old_total: u64,
) -> Result<(), ReconcileError> {
    let these = {
        let mut conn = cx.db.pool().acquire().await?;
        chunks::in_pack(&mut conn, ns, old).await?
    };
    let check = verifier
        .check_chunks(ns, old, &these)
        .await
        .map_err(|e| match e {
            VerifyError::Db(e) => ReconcileError::Db(e),
            VerifyError::Blob(e) => ReconcileError::Blob(e),
            VerifyError::Decoder(e) => ReconcileError::Decoder(e),
        })?;
    if !check.bad.is_empty() {
        mark_corrupt(cx, "corrupt_chunk", ns, old, Bad::Hashes(&check.bad)).await?;
    }
    let good: std::collections::HashSet<_> = check.good.iter().copied().collect();
    let keep: Vec<_> = these.iter().filter(|c| good.contains(&c.hash)).collect();
    // The stored bytes, copied as they are (no re-encoding).
    let mut body = BytesMut::new();
    let mut moved = Vec::with_capacity(keep.len());
    let mut i = 0;
    while i < keep.len() {
        // One read per run of adjacent chunks.
        let start = keep[i].offset;
        let mut j = i + 1;
        while j < keep.len()
            && keep[j].offset == keep[j - 1].offset + u64::from(keep[j - 1].stored_len)
            && keep[j].offset - start < 64 << 20
        {
            j += 1;
        }
        let end = keep[j - 1].offset + u64::from(keep[j - 1].stored_len);
        let bytes = cx
            .blob
            .get_range(&pack_key(old), start, end - start)
            .await?;
        for c in &keep[i..j] {
            let at = (c.offset - start) as usize;
            let Some(stored) = bytes.get(at..at + c.stored_len as usize) else {
                return Err(ReconcileError::Blob(
                    driftless_store::BlobError::Unavailable(format!("pack {old}: short read")),
                ));
            };
            moved.push((c.hash, body.len() as u64));
            body.extend_from_slice(stored);
        }
        i = j;
    }
    let new = new_pack_id();
    let new_total = body.len() as u64;
    if new_total > 0 {
        cx.blob.put(&pack_key(&new), body.freeze()).await?;
    }
    let mut tx = cx.db.begin().await?;
    if new_total > 0 {
        sqlx::query(
            "INSERT INTO packs (namespace_id, id, upload_id, state, total_bytes, live_bytes, \
             created_at_ms) VALUES ($1, $2, 'compaction', 'complete', $3, 0, $4)",
        )
        .bind(to_db(ns.0))
        .bind(&new)
        .bind(to_db(new_total))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    }
    for (hash, offset) in &moved {
        // Only if the row is still where we read it (and still good).
        sqlx::query(
            "UPDATE chunks SET pack_id = $1, pack_offset = $2, state = 1 WHERE namespace_id = $3 \
             AND hash = $4 AND pack_id = $5 AND state <> 2",
        )
        .bind(&new)
        .bind(to_db(*offset))
        .bind(to_db(ns.0))
        .bind(hash.as_bytes().to_vec())
        .bind(old)
        .execute(&mut *tx)
        .await?;
    }
    for pack in [old, new.as_str()] {
        sqlx::query(
            "UPDATE packs SET live_bytes = (SELECT CAST(COALESCE(SUM(c.stored_len), 0) AS BIGINT) \
             FROM chunks c WHERE c.namespace_id = $1 AND c.pack_id = $2) \
             WHERE namespace_id = $1 AND id = $2",
        )
        .bind(to_db(ns.0))
        .bind(pack)
        .execute(&mut *tx)
        .await?;
    }
    // Nothing left in the old pack: retired (corrupt rows stay until their
    // re-upload moves them, keeping the pack).
    sqlx::query(
        "UPDATE packs SET state = 'deleted', deleted_at_ms = $1 WHERE namespace_id = $2 \
         AND id = $3 AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.namespace_id = $2 \
         AND c.pack_id = $3)",
    )
    .bind(now_ms())
    .bind(to_db(ns.0))
    .bind(old)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    cx.report.did(
        "packs_compacted",
        "rewritten",
        format!("{ns}/{old} -> {new}: {new_total} of {old_total} bytes kept"),
    );
    cx.report
        .work("bytes_reclaimed", old_total.saturating_sub(new_total));
    Ok(())
}

/// A random pack id, like the API's (22 characters of base64url).
fn new_pack_id() -> String {
    use base64::Engine;
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}
