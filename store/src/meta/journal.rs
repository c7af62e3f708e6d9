//! Reading the journal: the snapshot a new device bootstraps from, pages of
//! journal entries after a cursor, the outbox the relay drains, and the
//! cursors devices report.
//!
//! Journal visibility is gap-free in commit order: `seq` is assigned under
//! the namespace row lock, so seq n+1 cannot commit before seq n has. A
//! reader that sees an entry therefore sees every entry before it.

use driftless_protocol::{
    ChangeEntry, ChangeKind, ContentHash, DeviceId, NamespaceId, Rev, Seq, SyncPath,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use super::{from_db, to_db};
use crate::db::{Db, now_ms};

/// A namespace's journal bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Last seq committed.
    pub head: Seq,
    /// Entries at or below this are gone (compacted).
    pub compacted: Seq,
}

/// The journal bounds of `ns`, if it exists.
pub async fn bounds(db: &Db, ns: NamespaceId) -> Result<Option<Bounds>, sqlx::Error> {
    let row = sqlx::query("SELECT head_seq, compacted_seq FROM namespaces WHERE id = $1")
        .bind(to_db(ns.0))
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| {
        Ok(Bounds {
            head: Seq(from_db(r.try_get(0)?)),
            compacted: Seq(from_db(r.try_get(1)?)),
        })
    })
    .transpose()
}

/// SQL matching `col` under `prefix` (the path itself or below it), with
/// its two parameters starting at `$n`. `substr` counts characters on both
/// databases, so the length is in characters.
fn under(col: &str, n: usize) -> String {
    format!(
        "({col} = ${n} OR substr({col}, 1, CAST(${} AS INTEGER)) = ${})",
        n + 1,
        n + 2
    )
}

fn prefix_binds(prefix: &SyncPath) -> (String, i64, String) {
    let p = prefix.as_str().to_owned();
    let dir = format!("{p}/");
    (p, dir.chars().count() as i64, dir)
}

fn content_hash(r: &AnyRow, i: usize) -> Result<Option<ContentHash>, sqlx::Error> {
    Ok(r.try_get::<Option<Vec<u8>>, _>(i)?
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(ContentHash::from_bytes))
}

/// Up to `limit` live files after `after` (by path), as put entries without
/// a seq: the bootstrap of a new device.
pub async fn snapshot_page(
    db: &Db,
    ns: NamespaceId,
    prefix: Option<&SyncPath>,
    after: Option<&SyncPath>,
    limit: usize,
) -> Result<Vec<ChangeEntry>, sqlx::Error> {
    let mut sql = String::from(
        "SELECT f.path, f.rev, v.size, v.content_hash, v.mtime_ms, v.device_id, v.committed_at_ms \
         FROM files f JOIN versions v ON v.namespace_id = f.namespace_id AND v.path = f.path AND v.rev = f.rev \
         WHERE f.namespace_id = $1 AND f.deleted = 0 AND f.path > $2",
    );
    if prefix.is_some() {
        sql.push_str(&format!(" AND {}", under("f.path", 3)));
    }
    let limit_at = if prefix.is_some() { 6 } else { 3 };
    sql.push_str(&format!(" ORDER BY f.path LIMIT ${limit_at}"));
    let mut q = sqlx::query(&sql)
        .bind(to_db(ns.0))
        .bind(after.map_or("", |p| p.as_str()).to_owned());
    if let Some(p) = prefix {
        let (p, n, dir) = prefix_binds(p);
        q = q.bind(p).bind(n).bind(dir);
    }
    let rows = q.bind(limit as i64).fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| {
            Ok(ChangeEntry {
                seq: None,
                path: r.try_get(0)?,
                from: None,
                rev: Rev(from_db(r.try_get(1)?)),
                kind: ChangeKind::Put,
                size: from_db(r.try_get(2)?),
                content_hash: content_hash(r, 3)?,
                mtime_ms: r.try_get(4)?,
                device_id: r
                    .try_get::<Option<i64>, _>(5)?
                    .map(|d| DeviceId(from_db(d))),
                committed_at_ms: r.try_get(6)?,
            })
        })
        .collect()
}

/// The stamp of the journal entry at `seq` ([`driftless_protocol::entry_stamp`]),
/// or `None` if there is none (seq 0, compacted away, or never written).
pub async fn stamp(db: &Db, ns: NamespaceId, seq: Seq) -> Result<Option<u64>, sqlx::Error> {
    if seq.0 == 0 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT committed_at_ms, path, kind, device_id FROM journal WHERE namespace_id = $1 AND seq = $2",
    )
    .bind(to_db(ns.0))
    .bind(to_db(seq.0))
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| {
        Ok(driftless_protocol::entry_stamp(
            r.try_get("committed_at_ms")?,
            &r.try_get::<String, _>("path")?,
            r.try_get("kind")?,
            r.try_get::<Option<i64>, _>("device_id")?.map(from_db),
        ))
    })
    .transpose()
}

/// Up to `limit` journal entries with `seq > after`, in order; with a
/// prefix, only those touching it (a move counts for both of its paths).
pub async fn journal_page(
    db: &Db,
    ns: NamespaceId,
    prefix: Option<&SyncPath>,
    after: Seq,
    limit: usize,
) -> Result<Vec<ChangeEntry>, sqlx::Error> {
    let mut sql = String::from(
        "SELECT j.seq, j.path, j.moved_from, j.rev, j.kind, v.size, v.content_hash, v.mtime_ms, \
         j.device_id, j.committed_at_ms, v.deleted \
         FROM journal j LEFT JOIN versions v ON v.namespace_id = j.namespace_id AND v.path = j.path AND v.rev = j.rev \
         WHERE j.namespace_id = $1 AND j.seq > $2",
    );
    if prefix.is_some() {
        sql.push_str(&format!(
            " AND ({} OR (j.moved_from IS NOT NULL AND {}))",
            under("j.path", 3),
            under("j.moved_from", 3)
        ));
    }
    let limit_at = if prefix.is_some() { 6 } else { 3 };
    sql.push_str(&format!(" ORDER BY j.seq LIMIT ${limit_at}"));
    let mut q = sqlx::query(&sql).bind(to_db(ns.0)).bind(to_db(after.0));
    if let Some(p) = prefix {
        let (p, n, dir) = prefix_binds(p);
        q = q.bind(p).bind(n).bind(dir);
    }
    let rows = q.bind(limit as i64).fetch_all(db.pool()).await?;
    rows.iter()
        .map(|r| {
            let kind = match r.try_get::<i64, _>(4)? {
                1 => ChangeKind::Delete,
                2 => ChangeKind::Move,
                3 => ChangeKind::Repair,
                _ => ChangeKind::Put,
            };
            let deleted = r.try_get::<Option<i64>, _>(10)?.unwrap_or(1) == 1;
            Ok(ChangeEntry {
                seq: Some(Seq(from_db(r.try_get(0)?))),
                path: r.try_get(1)?,
                from: r.try_get(2)?,
                rev: Rev(from_db(r.try_get(3)?)),
                kind,
                size: if deleted {
                    0
                } else {
                    from_db(r.try_get::<Option<i64>, _>(5)?.unwrap_or(0))
                },
                content_hash: if deleted { None } else { content_hash(r, 6)? },
                mtime_ms: r.try_get::<Option<i64>, _>(7)?.unwrap_or(0),
                device_id: r
                    .try_get::<Option<i64>, _>(8)?
                    .map(|d| DeviceId(from_db(d))),
                committed_at_ms: r.try_get(9)?,
            })
        })
        .collect()
}

/// An outbox row: one journal entry as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Folder (the Kafka key).
    pub namespace: NamespaceId,
    /// Journal seq.
    pub seq: Seq,
    /// JSON `JournalEvent`.
    pub payload: String,
}

/// Up to `limit` rows not yet published, each namespace's in seq order.
pub async fn unsent(conn: &mut AnyConnection, limit: usize) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT namespace_id, seq, payload FROM outbox WHERE sent_at_ms IS NULL \
         ORDER BY namespace_id, seq LIMIT $1",
    )
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    // Ordered by the key, never by time: a clock step back must not put a
    // namespace's seq n+1 in an earlier batch than seq n.
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

/// Marks rows published (after their delivery reports), one statement per
/// run of consecutive seqs of a namespace.
pub async fn mark_sent(
    conn: &mut AnyConnection,
    rows: &[(NamespaceId, Seq)],
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = conn.begin().await?;
    for (ns, first, last) in runs(rows) {
        sqlx::query(
            "UPDATE outbox SET sent_at_ms = $1 WHERE namespace_id = $2 AND seq BETWEEN $3 AND $4 \
             AND sent_at_ms IS NULL",
        )
        .bind(now)
        .bind(to_db(ns.0))
        .bind(to_db(first.0))
        .bind(to_db(last.0))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Runs of consecutive seqs per namespace: `(ns, first, last)`.
fn runs(rows: &[(NamespaceId, Seq)]) -> Vec<(NamespaceId, Seq, Seq)> {
    let mut out: Vec<(NamespaceId, Seq, Seq)> = Vec::new();
    for &(ns, seq) in rows {
        match out.last_mut() {
            Some((n, _, last)) if *n == ns && last.0 + 1 == seq.0 => *last = seq,
            _ => out.push((ns, seq, seq)),
        }
    }
    out
}

/// Up to `limit` outbox rows of `ns` after `after`, in order, sent or not:
/// where a consumer that missed part of the stream reads it back.
pub async fn outbox_after(
    db: &Db,
    ns: NamespaceId,
    after: Seq,
    limit: usize,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, payload FROM outbox WHERE namespace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(to_db(ns.0))
    .bind(to_db(after.0))
    .bind(limit as i64)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OutboxRow {
                namespace: ns,
                seq: Seq(from_db(r.try_get(0)?)),
                payload: r.try_get(1)?,
            })
        })
        .collect()
}

/// Outbox rows not yet published.
pub async fn backlog(db: &Db) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL")
        .fetch_one(db.pool())
        .await?
        .try_get(0)?;
    Ok(from_db(n))
}

/// Records the seq a device has applied (never moves backwards).
pub async fn set_device_cursor(
    db: &Db,
    ns: NamespaceId,
    device: DeviceId,
    seq: Seq,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO device_cursors (namespace_id, device_id, seq, updated_at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (namespace_id, device_id) DO UPDATE SET seq = excluded.seq, updated_at_ms = excluded.updated_at_ms \
         WHERE device_cursors.seq < excluded.seq",
    )
    .bind(to_db(ns.0))
    .bind(to_db(device.0))
    .bind(to_db(seq.0))
    .bind(now_ms())
    .execute(db.pool())
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_seqs_of_a_namespace_make_one_run() {
        let (a, b) = (NamespaceId(1), NamespaceId(2));
        let rows = [
            (a, Seq(3)),
            (a, Seq(4)),
            (a, Seq(6)),
            (b, Seq(7)),
            (b, Seq(8)),
        ];
        assert_eq!(
            runs(&rows),
            [
                (a, Seq(3), Seq(4)),
                (a, Seq(6), Seq(6)),
                (b, Seq(7), Seq(8))
            ]
        );
        assert!(runs(&[]).is_empty());
    }
}
