//! The bucket against the pack rows, in one pass: both are read in byte
//! order of the pack id (S3 lists keys that way; PostgreSQL is asked to
//! sort with the "C" collation) and merged, so memory stays one page of
//! each however large the deployment.
//!
//! - An object with no pack row is deleted once older than the orphan
//!   grace, unless chunk rows name it: then its row was lost, and is
//!   restored (an object still referenced is never deleted).
//! - A retired pack's object is deleted once no presigned URL can name it.
//! - A complete pack whose object is missing or shorter than recorded: the
//!   chunks whose bytes are not there are marked corrupt and asked for again.

use std::collections::VecDeque;

use driftless_protocol::NamespaceId;
use driftless_store::meta::chunks::Bad;
use driftless_store::meta::{from_db, to_db};
use driftless_store::{ListedObject, pack_key};
use sqlx::Row;

use super::{Cx, ReconcileError, mark_corrupt};

const PAGE: i64 = 1000;

/// A pack row as the merge sees it.
struct PackRow {
    id: String,
    ns: NamespaceId,
    state: String,
    total: u64,
    deleted_at_ms: Option<i64>,
}

struct Rows {
    after: String,
    buf: VecDeque<PackRow>,
    done: bool,
}

impl Rows {
    async fn peek(&mut self, cx: &Cx<'_>) -> Result<Option<&PackRow>, sqlx::Error> {
        if self.buf.is_empty() && !self.done {
            let c = cx.bytewise();
            let sql = format!(
                "SELECT id, namespace_id, state, total_bytes, deleted_at_ms FROM packs \
                 WHERE id{c} > $1 ORDER BY id{c} LIMIT $2"
            );
            let rows = sqlx::query(&sql)
                .bind(&self.after)
                .bind(PAGE)
                .fetch_all(cx.db.pool())
                .await?;
            self.done = (rows.len() as i64) < PAGE;
            for r in rows {
                self.buf.push_back(PackRow {
                    id: r.try_get(0)?,
                    ns: NamespaceId(from_db(r.try_get(1)?)),
                    state: r.try_get(2)?,
                    total: from_db(r.try_get(3)?),
                    deleted_at_ms: r.try_get(4)?,
                });
            }
            if let Some(last) = self.buf.back() {
                self.after = last.id.clone();
            }
        }
        Ok(self.buf.front())
    }
}

struct Objects {
    next: Option<String>,
    buf: VecDeque<ListedObject>,
    done: bool,
}

impl Objects {
    async fn peek(&mut self, cx: &Cx<'_>) -> Result<Option<&ListedObject>, ReconcileError> {
        if self.buf.is_empty() && !self.done {
            let page = cx.blob.list_page("packs/", self.next.take()).await?;
            self.done = page.next.is_none();
            self.next = page.next;
            self.buf.extend(page.items);
        }
        Ok(self.buf.front())
    }
}

pub(super) async fn check(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    let mut rows = Rows {
        after: String::new(),
        buf: VecDeque::new(),
        done: false,
    };
    let mut objects = Objects {
        next: None,
        buf: VecDeque::new(),
        done: false,
    };
    loop {
        let o_id = objects
            .peek(cx)
            .await?
            .map(|o| o.key.strip_prefix("packs/").unwrap_or(&o.key).to_owned());
        let r_id = rows.peek(cx).await?.map(|r| r.id.clone());
        match (o_id, r_id) {
            (None, None) => return Ok(()),
            (Some(o), r) if r.as_ref().is_none_or(|r| o.as_bytes() < r.as_bytes()) => {
                let obj = objects.buf.pop_front().expect("peeked");
                no_row(cx, &o, &obj).await?;
            }
            (o, Some(r)) if o.as_ref().is_none_or(|o| r.as_bytes() < o.as_bytes()) => {
                let row = rows.buf.pop_front().expect("peeked");
                no_object(cx, &row).await?;
            }
            _ => {
                let obj = objects.buf.pop_front().expect("peeked");
                let row = rows.buf.pop_front().expect("peeked");
                both(cx, &obj, &row).await?;
                // More rows with this id (another folder) are compared too.
                while rows.peek(cx).await?.is_some_and(|r| r.id == row.id) {
                    let more = rows.buf.pop_front().expect("peeked");
                    both(cx, &obj, &more).await?;
                }
            }
        }
    }
}

/// Folders whose chunk rows name `pack`, with the rows' total stored size.
async fn referenced(cx: &Cx<'_>, pack: &str) -> Result<Vec<(NamespaceId, u64)>, sqlx::Error> {
    sqlx::query(
        "SELECT namespace_id, CAST(SUM(stored_len) AS BIGINT) FROM chunks WHERE pack_id = $1 \
         GROUP BY namespace_id",
    )
    .bind(pack)
    .fetch_all(cx.db.pool())
    .await?
    .iter()
    .map(|r| {
        Ok((
            NamespaceId(from_db(r.try_get(0)?)),
            from_db(r.try_get::<Option<i64>, _>(1)?.unwrap_or(0)),
        ))
    })
    .collect()
}

async fn no_row(cx: &mut Cx<'_>, pack: &str, obj: &ListedObject) -> Result<(), ReconcileError> {
    let users = referenced(cx, pack).await?;
    if !users.is_empty() {
        for (ns, live) in users {
            restore_row(cx, ns, pack, obj.size, live, false).await?;
        }
        return Ok(());
    }
    if obj.modified_ms >= cx.before(cx.opts.orphan_grace) {
        cx.report.work("orphan_objects_in_grace", 1);
        return Ok(());
    }
    cx.report.found("orphan_object", 1);
    if cx.dry() {
        cx.report.would("orphan_object", "delete", obj.key.clone());
    } else {
        cx.blob.delete(&obj.key).await?;
        cx.report
            .repaired("orphan_object", 1, "deleted", obj.key.clone());
    }
    Ok(())
}

/// Chunk rows name a pack whose row is gone or retired: the row comes back.
async fn restore_row(
    cx: &mut Cx<'_>,
    ns: NamespaceId,
    pack: &str,
    size: u64,
    live: u64,
    exists: bool,
) -> Result<(), ReconcileError> {
    cx.report.found("missing_pack_row", 1);
    let target = format!("{ns}/{pack}");
    if cx.dry() {
        cx.report.would("missing_pack_row", "restore", target);
        return Ok(());
    }
    let q = if exists {
        "UPDATE packs SET state = 'complete', deleted_at_ms = NULL, total_bytes = $3, \
         live_bytes = $4 WHERE namespace_id = $1 AND id = $2"
    } else {
        "INSERT INTO packs (namespace_id, id, upload_id, state, total_bytes, live_bytes, \
         created_at_ms) VALUES ($1, $2, 'reconcile', 'complete', $3, $4, $5) \
         ON CONFLICT (namespace_id, id) DO NOTHING"
    };
    sqlx::query(q)
        .bind(to_db(ns.0))
        .bind(pack)
        .bind(to_db(size))
        .bind(to_db(live))
        .bind(cx.now)
        .execute(cx.db.pool())
        .await?;
    cx.report
        .repaired("missing_pack_row", 1, "restored", target);
    Ok(())
}

async fn both(cx: &mut Cx<'_>, obj: &ListedObject, row: &PackRow) -> Result<(), ReconcileError> {
    match row.state.as_str() {
        "deleted" => {
            if let Some(&(_, live)) = referenced(cx, &row.id)
                .await?
                .iter()
                .find(|(ns, _)| *ns == row.ns)
            {
                return restore_row(cx, row.ns, &row.id, obj.size, live, true).await;
            }
            let retired_long_ago = row
                .deleted_at_ms
                .is_none_or(|t| t < cx.before(cx.opts.presign_ttl));
            if !retired_long_ago {
                return Ok(());
            }
            if cx.dry() {
                cx.report
                    .would("retired_objects_deleted", "delete", obj.key.clone());
            } else {
                cx.blob.delete(&obj.key).await?;
                cx.report
                    .did("retired_objects_deleted", "deleted", obj.key.clone());
            }
        }
        "complete" if obj.size < row.total => {
            // Listed short a moment before a write finished? Ask again.
            let size = cx.blob.size(&obj.key).await?.unwrap_or(0);
            if size < row.total {
                mark_corrupt(cx, "missing_chunk", row.ns, &row.id, Bad::Beyond(size)).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

async fn no_object(cx: &mut Cx<'_>, row: &PackRow) -> Result<(), ReconcileError> {
    if row.state != "complete" {
        return Ok(());
    }
    // The listing passed this key before a commit assembled it? Ask again.
    let size = cx.blob.size(&pack_key(&row.id)).await?;
    if size.is_some_and(|s| s >= row.total) {
        return Ok(());
    }
    mark_corrupt(
        cx,
        "missing_chunk",
        row.ns,
        &row.id,
        Bad::Beyond(size.unwrap_or(0)),
    )
    .await?;
    Ok(())
}
