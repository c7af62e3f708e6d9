//! What each durable consumer has applied, per folder (`consumer_marks`),
//! and the lag figures built from it and from the devices' cursors.
//!
//! A consumer writes its effect and advances its mark in one transaction
//! and commits its stream offset afterwards, so an event delivered again
//! is recognised by `seq <= mark` and never applied twice.

use std::collections::HashMap;

use driftless_protocol::{NamespaceId, Seq};
use sqlx::{Any, Row, Transaction};

use super::journal::OutboxRow;
use super::{from_db, to_db};
use crate::db::{Db, now_ms};

/// The marks of `consumer` for `namespaces`, locked until `tx` ends (rows
/// are created at 0 when missing). Another member of the same group that
/// raced us on these namespaces waits here, then sees our marks.
pub async fn lock(
    tx: &mut Transaction<'static, Any>,
    consumer: &str,
    namespaces: &[NamespaceId],
) -> Result<HashMap<NamespaceId, Seq>, sqlx::Error> {
    let mut out = HashMap::with_capacity(namespaces.len());
    for &ns in namespaces {
        if out.contains_key(&ns) {
            continue;
        }
        sqlx::query(
            "INSERT INTO consumer_marks (namespace_id, consumer, seq, applied, updated_at_ms) \
             VALUES ($1, $2, 0, 0, $3) ON CONFLICT (namespace_id, consumer) DO NOTHING",
        )
        .bind(to_db(ns.0))
        .bind(consumer)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        // A no-op UPDATE takes the row lock on PostgreSQL (SQLite has one
        // writer already) and reads the mark under it.
        let seq: i64 = sqlx::query(
            "UPDATE consumer_marks SET seq = seq WHERE namespace_id = $1 AND consumer = $2 \
             RETURNING seq",
        )
        .bind(to_db(ns.0))
        .bind(consumer)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
        out.insert(ns, Seq(from_db(seq)));
    }
    Ok(out)
}

/// The marks of `consumer` for `namespaces`, without locking (0 if none).
pub async fn read(
    db: &Db,
    consumer: &str,
    namespaces: &[NamespaceId],
) -> Result<HashMap<NamespaceId, Seq>, sqlx::Error> {
    let mut out = HashMap::with_capacity(namespaces.len());
    for &ns in namespaces {
        if out.contains_key(&ns) {
            continue;
        }
        let seq =
            sqlx::query("SELECT seq FROM consumer_marks WHERE namespace_id = $1 AND consumer = $2")
                .bind(to_db(ns.0))
                .bind(consumer)
                .fetch_optional(db.pool())
                .await?
                .map(|r| r.try_get::<i64, _>(0))
                .transpose()?
                .unwrap_or(0);
        out.insert(ns, Seq(from_db(seq)));
    }
    Ok(out)
}

/// Advances the mark of `consumer` on `ns` to `seq`, counting `applied`
/// more events (inside the transaction that wrote their effect).
pub async fn advance(
    tx: &mut Transaction<'static, Any>,
    consumer: &str,
    ns: NamespaceId,
    seq: Seq,
    applied: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE consumer_marks SET seq = $1, applied = applied + $2, updated_at_ms = $3 \
         WHERE namespace_id = $4 AND consumer = $5 AND seq < $1",
    )
    .bind(to_db(seq.0))
    .bind(to_db(applied))
    .bind(now_ms())
    .bind(to_db(ns.0))
    .bind(consumer)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One consumer's position on one folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The folder.
    pub namespace: NamespaceId,
    /// Highest seq applied.
    pub seq: Seq,
    /// Events applied in all.
    pub applied: u64,
}

/// Every mark of `consumer`.
pub async fn all(db: &Db, consumer: &str) -> Result<Vec<Mark>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT namespace_id, seq, applied FROM consumer_marks WHERE consumer = $1 \
         ORDER BY namespace_id",
    )
    .bind(consumer)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Mark {
                namespace: NamespaceId(from_db(r.try_get(0)?)),
                seq: Seq(from_db(r.try_get(1)?)),
                applied: from_db(r.try_get(2)?),
            })
        })
        .collect()
}

/// Outbox rows `consumer` has not applied yet, each namespace's in order:
/// how a consumer on the in-process bus (which keeps nothing) catches up
/// after a start or a gap.
pub async fn unapplied(
    db: &Db,
    consumer: &str,
    limit: usize,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT o.namespace_id, o.seq, o.payload FROM outbox o \
         LEFT JOIN consumer_marks m ON m.namespace_id = o.namespace_id AND m.consumer = $1 \
         WHERE o.seq > COALESCE(m.seq, 0) ORDER BY o.namespace_id, o.seq LIMIT $2",
    )
    .bind(consumer)
    .bind(limit as i64)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OutboxRow {
                namespace: NamespaceId(from_db(r.try_get(0)?)),
                seq: Seq(from_db(r.try_get(1)?)),
                payload: r.try_get(2)?,
            })
        })
        .collect()
}

/// How far behind the journal a consumer or the devices are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Lag {
    /// Folders (for a consumer) or device cursors (for devices) behind.
    pub behind: u64,
    /// Entries not yet applied, summed over folders.
    pub entries_behind: u64,
    /// The largest backlog of one folder.
    pub max_behind: u64,
}

/// Lag of `consumer`: journal heads against its marks.
pub async fn consumer_lag(db: &Db, consumer: &str) -> Result<Lag, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*), CAST(COALESCE(SUM(n.head_seq - COALESCE(m.seq, 0)), 0) AS BIGINT), \
         COALESCE(MAX(n.head_seq - COALESCE(m.seq, 0)), 0) FROM namespaces n \
         LEFT JOIN consumer_marks m ON m.namespace_id = n.id AND m.consumer = $1 \
         WHERE n.head_seq > COALESCE(m.seq, 0)",
    )
    .bind(consumer)
    .fetch_one(db.pool())
    .await?;
    Ok(Lag {
        behind: from_db(row.try_get(0)?),
        entries_behind: from_db(row.try_get(1)?),
        max_behind: from_db(row.try_get(2)?),
    })
}

/// Lag of the devices: journal heads against the cursors they reported
/// (a device that never reported is not counted).
pub async fn device_lag(db: &Db) -> Result<Lag, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*), CAST(COALESCE(SUM(n.head_seq - d.seq), 0) AS BIGINT), COALESCE(MAX(n.head_seq - d.seq), 0) \
         FROM device_cursors d JOIN namespaces n ON n.id = d.namespace_id WHERE n.head_seq > d.seq",
    )
    .fetch_one(db.pool())
    .await?;
    Ok(Lag {
        behind: from_db(row.try_get(0)?),
        entries_behind: from_db(row.try_get(1)?),
        max_behind: from_db(row.try_get(2)?),
    })
}
