//! Outbox against stream: rows the relay never published (it is down, or
//! stuck), and journal ranges published but never seen by a durable
//! consumer (the stream lost them, or they were marked sent wrongly).
//!
//! Both are published again, in seq order per folder; consumers skip what
//! they already applied (by seq) and read a gap back from the outbox, so a
//! repeat is harmless. Without a stream this process can reach (the
//! embedded default's in-process bus lives in the server), an unseen range
//! is handed back to the relay by marking it unsent.

use driftless_protocol::{NamespaceId, Seq};
use driftless_store::Event;
use driftless_store::meta::journal::{self, OutboxRow};
use driftless_store::meta::{from_db, to_db};
use sqlx::Row;

use super::{Cx, ReconcileError};

/// Rows per query and per publish.
const PAGE: i64 = 1000;
/// The durable consumers every deployment runs (others are found by their marks).
const CONSUMERS: [&str; 1] = ["verifier"];

pub(super) async fn check(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    unpublished(cx).await?;
    unseen(cx).await
}

async fn unpublished(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    let cut = cx.before(cx.opts.stale);
    let mut after = (0i64, 0i64);
    loop {
        let rows = sqlx::query(
            "SELECT namespace_id, seq, payload FROM outbox WHERE sent_at_ms IS NULL \
             AND created_at_ms < $1 AND (namespace_id, seq) > ($2, $3) \
             ORDER BY namespace_id, seq LIMIT $4",
        )
        .bind(cut)
        .bind(after.0)
        .bind(after.1)
        .bind(PAGE)
        .fetch_all(cx.db.pool())
        .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = (last.try_get(0)?, last.try_get(1)?);
        let rows: Vec<OutboxRow> = rows
            .iter()
            .map(|r| {
                Ok(OutboxRow {
                    namespace: NamespaceId(from_db(r.try_get(0)?)),
                    seq: Seq(from_db(r.try_get(1)?)),
                    payload: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        let n = rows.len() as u64;
        cx.report.found("unpublished_outbox", n);
        let target = ranges(&rows);
        if cx.dry() {
            cx.report.would("unpublished_outbox", "publish", target);
        } else if publish(cx, &rows).await? {
            let keys: Vec<_> = rows.iter().map(|r| (r.namespace, r.seq)).collect();
            let mut conn = cx.db.pool().acquire().await?;
            journal::mark_sent(&mut conn, &keys).await?;
            cx.report
                .repaired("unpublished_outbox", n, "published", target);
        } else {
            cx.report.notes.push(format!(
                "{n} outbox rows are unpublished and this process has no event stream to send \
                 them on: the server's relay must (is it running?)"
            ));
        }
        if (n as i64) < PAGE {
            return Ok(());
        }
    }
}

/// Publishes on the stream; `false` if there is none to publish on.
async fn publish(cx: &mut Cx<'_>, rows: &[OutboxRow]) -> Result<bool, ReconcileError> {
    let Some(p) = cx.publisher.as_deref_mut() else {
        return Ok(false);
    };
    let events: Vec<Event> = rows
        .iter()
        .map(|r| Event {
            namespace: r.namespace,
            seq: r.seq,
            payload: r.payload.clone(),
        })
        .collect();
    p.publish(&events)
        .await
        .map_err(|e| ReconcileError::Stream(e.to_string()))?;
    Ok(true)
}

async fn unseen(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    let mut consumers: Vec<String> = CONSUMERS.iter().map(|c| (*c).to_owned()).collect();
    for r in sqlx::query("SELECT DISTINCT consumer FROM consumer_marks")
        .fetch_all(cx.db.pool())
        .await?
    {
        let c: String = r.try_get(0)?;
        if !consumers.contains(&c) {
            consumers.push(c);
        }
    }
    let cut = cx.before(cx.opts.stale);
    for consumer in consumers {
        // Folders whose journal is ahead of this consumer's mark.
        let behind = sqlx::query(
            "SELECT n.id, COALESCE(m.seq, 0) FROM namespaces n LEFT JOIN consumer_marks m \
             ON m.namespace_id = n.id AND m.consumer = $1 WHERE n.head_seq > COALESCE(m.seq, 0) \
             ORDER BY n.id",
        )
        .bind(&consumer)
        .fetch_all(cx.db.pool())
        .await?;
        for r in behind {
            let (ns, mark): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
            let ns = NamespaceId(from_db(ns));
            // Lost if the next entry went out long ago: the consumer should
            // have applied it by now (one still unsent is the relay's).
            let next = sqlx::query(
                "SELECT sent_at_ms FROM outbox WHERE namespace_id = $1 AND seq > $2 \
                 ORDER BY seq LIMIT 1",
            )
            .bind(to_db(ns.0))
            .bind(mark)
            .fetch_optional(cx.db.pool())
            .await?;
            let Some(sent) = next.map(|r| r.try_get::<Option<i64>, _>(0)).transpose()? else {
                continue;
            };
            if sent.is_none_or(|t| t >= cut) {
                continue;
            }
            replay(cx, &consumer, ns, Seq(from_db(mark))).await?;
        }
    }
    Ok(())
}

/// Publishes again what `consumer` has not seen of `ns` after `mark`.
async fn replay(
    cx: &mut Cx<'_>,
    consumer: &str,
    ns: NamespaceId,
    mark: Seq,
) -> Result<(), ReconcileError> {
    let mut after = mark;
    loop {
        // Only what went out: unsent rows are the relay's (or `unpublished`'s).
        let rows: Vec<OutboxRow> = journal::outbox_after(cx.db, ns, after, PAGE as usize)
            .await?
            .into_iter()
            .collect();
        let sent = sent_rows(cx, ns, &rows).await?;
        let rows: Vec<OutboxRow> = rows.into_iter().filter(|r| sent.contains(&r.seq)).collect();
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.seq;
        let n = rows.len() as u64;
        cx.report.found("unseen_journal", n);
        let target = format!("{consumer}: {}", ranges(&rows));
        if cx.dry() {
            cx.report.would("unseen_journal", "publish", target);
        } else if publish(cx, &rows).await? {
            cx.report
                .repaired("unseen_journal", n, "republished", target);
        } else {
            sqlx::query(
                "UPDATE outbox SET sent_at_ms = NULL WHERE namespace_id = $1 AND seq > $2 \
                 AND seq <= $3",
            )
            .bind(to_db(ns.0))
            .bind(to_db(mark.0))
            .bind(to_db(after.0))
            .execute(cx.db.pool())
            .await?;
            cx.report
                .repaired("unseen_journal", n, "handed_to_relay", target);
        }
        if (n as i64) < PAGE {
            return Ok(());
        }
    }
}

async fn sent_rows(
    cx: &Cx<'_>,
    ns: NamespaceId,
    rows: &[OutboxRow],
) -> Result<std::collections::HashSet<Seq>, sqlx::Error> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(Default::default());
    };
    sqlx::query(
        "SELECT seq FROM outbox WHERE namespace_id = $1 AND seq BETWEEN $2 AND $3 \
         AND sent_at_ms IS NOT NULL",
    )
    .bind(to_db(ns.0))
    .bind(to_db(first.seq.0))
    .bind(to_db(last.seq.0))
    .fetch_all(cx.db.pool())
    .await?
    .iter()
    .map(|r| Ok(Seq(from_db(r.try_get(0)?))))
    .collect()
}

/// `ns/first..last` per run of consecutive seqs.
fn ranges(rows: &[OutboxRow]) -> String {
    let mut out: Vec<(NamespaceId, u64, u64)> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some((n, _, last)) if *n == r.namespace && *last + 1 == r.seq.0 => *last = r.seq.0,
            _ => out.push((r.namespace, r.seq.0, r.seq.0)),
        }
    }
    out.iter()
        .map(|(n, a, b)| format!("{n}/{a}..{b}"))
        .collect::<Vec<_>>()
        .join(" ")
}
