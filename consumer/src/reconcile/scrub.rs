//! The deep scrub: a random sample of packs (`scrub_fraction` of them per
//! run, so every pack is read every 1/fraction runs on average) read back,
//! every chunk decoded with the bounded decoder and re-hashed. A chunk that
//! fails is marked corrupt and asked for again, like the verifier does for
//! new ones; the verifier trusts nothing new, the scrub nothing old.

use driftless_protocol::NamespaceId;
use driftless_store::meta::chunks::{self, Bad};
use driftless_store::meta::from_db;
use rand::Rng;
use sqlx::Row;

use super::{Cx, ReconcileError, mark_corrupt};
use crate::verify::{Verifier, VerifyError};

const PAGE: i64 = 1000;

pub(super) async fn check(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    let fraction = cx.opts.scrub_fraction.clamp(0.0, 1.0);
    if fraction == 0.0 {
        return Ok(());
    }
    let mut verifier = Verifier::new(cx.db.clone(), cx.blob.clone());
    let mut after = (0i64, String::new());
    loop {
        let rows = sqlx::query(
            "SELECT namespace_id, id FROM packs WHERE state = 'complete' \
             AND (namespace_id, id) > ($1, $2) \
             ORDER BY namespace_id, id LIMIT $3",
        )
        .bind(after.0)
        .bind(&after.1)
        .bind(PAGE)
        .fetch_all(cx.db.pool())
        .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = (last.try_get(0)?, last.try_get(1)?);
        let picked: Vec<(NamespaceId, String)> = rows
            .iter()
            .filter(|_| rand::rng().random_bool(fraction))
            .map(|r| Ok((NamespaceId(from_db(r.try_get(0)?)), r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        for (ns, pack) in picked {
            let these = {
                let mut conn = cx.db.pool().acquire().await?;
                chunks::in_pack(&mut conn, ns, &pack).await?
            };
            if these.is_empty() {
                continue;
            }
            let check = verifier
                .check_chunks(ns, &pack, &these)
                .await
                .map_err(|e| match e {
                    VerifyError::Db(e) => ReconcileError::Db(e),
                    VerifyError::Blob(e) => ReconcileError::Blob(e),
                    VerifyError::Decoder(e) => ReconcileError::Decoder(e),
                })?;
            cx.report.work("packs_scrubbed", 1);
            cx.report.work("chunks_scrubbed", these.len() as u64);
            if !check.bad.is_empty() {
                mark_corrupt(cx, "corrupt_chunk", ns, &pack, Bad::Hashes(&check.bad)).await?;
            }
        }
        if (rows.len() as i64) < PAGE {
            return Ok(());
        }
    }
}
