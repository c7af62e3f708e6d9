//! Journal compaction. Each folder's journal (and its outbox, which holds
//! the same entries as published) keeps every entry that someone may still
//! need: newer than the retention window, above the cursor of any active
//! device (one that reported a cursor within the window; revoked devices
//! do not count), above every durable consumer's mark, and from the first
//! unpublished row on. Below that floor, entries are deleted and
//! `compacted_seq` moves up, in one transaction per step; a device whose
//! cursor is older then gets 410 `cursor_reset` and starts again from a
//! snapshot.

use driftless_protocol::NamespaceId;
use driftless_store::meta::from_db;
use sqlx::Row;

use super::{Cx, ReconcileError};

/// Entries deleted per transaction.
const STEP: i64 = 10_000;
const CONSUMERS: [&str; 1] = ["verifier"];

pub(super) async fn check(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    let window = cx.before(cx.opts.retention);
    let rows = sqlx::query(
        "SELECT id, compacted_seq FROM namespaces WHERE head_seq > compacted_seq ORDER BY id",
    )
    .fetch_all(cx.db.pool())
    .await?;
    for r in rows {
        let (id, compacted): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
        let floor = floor(cx, id, window).await?;
        if floor <= compacted {
            continue;
        }
        let ns = NamespaceId(from_db(id));
        let target = format!("{ns}/{}..{floor}", compacted + 1);
        if cx.dry() {
            cx.report.would("journal_compacted", "delete", target);
            continue;
        }
        let mut done = compacted;
        while done < floor {
            let upto = floor.min(done + STEP);
            let mut tx = cx.db.begin().await?;
            let n = sqlx::query("DELETE FROM journal WHERE namespace_id = $1 AND seq <= $2")
                .bind(id)
                .bind(upto)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM outbox WHERE namespace_id = $1 AND seq <= $2")
                .bind(id)
                .bind(upto)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE namespaces SET compacted_seq = $1 WHERE id = $2 AND compacted_seq < $1",
            )
            .bind(upto)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            cx.report.work("journal_entries_compacted", n);
            done = upto;
        }
        cx.report.did("journal_compactions", "compacted", target);
    }
    Ok(())
}

/// The highest seq of folder `id` nobody needs any more.
async fn floor(cx: &Cx<'_>, id: i64, window: i64) -> Result<i64, sqlx::Error> {
    let one = |sql: &'static str| {
        let db = cx.db.clone();
        async move {
            sqlx::query(sql)
                .bind(id)
                .bind(window)
                .fetch_one(db.pool())
                .await?
                .try_get::<Option<i64>, _>(0)
        }
    };
    // Older than the window (seqs grow with time within a folder).
    let mut floor =
        one("SELECT MAX(seq) FROM journal WHERE namespace_id = $1 AND committed_at_ms < $2")
            .await?
            .unwrap_or(0);
    if let Some(c) = one(
        "SELECT MIN(d.seq) FROM device_cursors d JOIN devices v ON v.id = d.device_id \
         WHERE d.namespace_id = $1 AND v.revoked_at_ms IS NULL AND d.updated_at_ms >= $2",
    )
    .await?
    {
        floor = floor.min(c);
    }
    if let Some(u) = sqlx::query(
        "SELECT MIN(seq) - 1 FROM outbox WHERE namespace_id = $1 AND sent_at_ms IS NULL",
    )
    .bind(id)
    .fetch_one(cx.db.pool())
    .await?
    .try_get::<Option<i64>, _>(0)?
    {
        floor = floor.min(u);
    }
    let mut consumers: Vec<String> = CONSUMERS.iter().map(|c| (*c).to_owned()).collect();
    for r in sqlx::query("SELECT DISTINCT consumer FROM consumer_marks WHERE namespace_id = $1")
        .bind(id)
        .fetch_all(cx.db.pool())
        .await?
    {
        let c: String = r.try_get(0)?;
        if !consumers.contains(&c) {
            consumers.push(c);
        }
    }
    for c in consumers {
        let mark: i64 = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) FROM consumer_marks WHERE namespace_id = $1 AND consumer = $2",
        )
        .bind(id)
        .bind(&c)
        .fetch_one(cx.db.pool())
        .await?
        .try_get(0)?;
        floor = floor.min(mark);
    }
    Ok(floor)
}
