//! Reference counting, from the manifests, one folder at a time.
//!
//! Commits do not keep chunk reference counts (that would cost every commit
//! a write per chunk); this check counts them: every version of every path
//! (history included, which `restore` may bring back) and every open upload
//! session's pending files hold their chunks. Then, over the folder's chunk
//! rows in pack order:
//! - a row no manifest names, older than the chunk grace, is dead and
//!   removed (its bytes become dead space in its pack);
//! - each pack's `live_bytes` must equal the stored size of the rows in it
//!   (commits and compaction keep it so): a mismatch is drift, corrected;
//! - a complete pack with no row left is retired (its object is deleted by
//!   the objects check once no presigned URL can name it).
//!
//! Rows are read in primary-key order, a page at a time.
//!
//! Removing rows races commits: under the folder's commit lock the removal
//! first takes back every chunk named by a version committed since the
//! count began, or by a session opened since. Memory is the folder's set of
//! referenced hashes (~80 bytes per distinct chunk), time linear in
//! manifest entries plus chunk rows.

use std::collections::{HashMap, HashSet};

use driftless_protocol::{ChunkHash, NamespaceId};
use driftless_store::db::now_ms;
use driftless_store::meta::manifest::Manifest;
use driftless_store::meta::{from_db, to_db};
use sqlx::{AnyConnection, Row};

use super::{Cx, ReconcileError};

const PAGE: i64 = 2000;
/// Hashes per `IN (…)`.
const BATCH: usize = 500;
/// Sessions whose row time is this close to the count's start are taken
/// as opened after it (the API's clock may differ from ours).
const CLOCK_SLACK_MS: i64 = 60_000;

pub(super) async fn check(cx: &mut Cx<'_>) -> Result<(), ReconcileError> {
    let mut after = 0i64;
    loop {
        let ids: Vec<i64> =
            sqlx::query("SELECT id FROM namespaces WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(PAGE)
                .fetch_all(cx.db.pool())
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
        let Some(&last) = ids.last() else {
            return Ok(());
        };
        after = last;
        for id in ids {
            folder(cx, NamespaceId(from_db(id))).await?;
        }
    }
}

/// A chunk row that no manifest names.
struct Dead {
    hash: ChunkHash,
    pack: String,
    len: u64,
}

async fn folder(cx: &mut Cx<'_>, ns: NamespaceId) -> Result<(), ReconcileError> {
    let started = now_ms();
    let head: i64 = sqlx::query("SELECT head_seq FROM namespaces WHERE id = $1")
        .bind(to_db(ns.0))
        .fetch_one(cx.db.pool())
        .await?
        .try_get(0)?;
    let held = references(cx, ns).await?;

    // The chunk rows, pack by pack.
    let young = cx.before(cx.opts.chunk_grace);
    let mut in_pack: HashMap<String, u64> = HashMap::new();
    let mut dead: Vec<Dead> = Vec::new();
    let mut rows_seen = 0u64;
    // In primary-key order (an index walk, page after page).
    let mut after = Vec::<u8>::new();
    loop {
        let rows = sqlx::query(
            "SELECT pack_id, hash, stored_len, created_at_ms FROM chunks WHERE namespace_id = $1 \
             AND hash > $2 ORDER BY hash LIMIT $3",
        )
        .bind(to_db(ns.0))
        .bind(&after)
        .bind(PAGE)
        .fetch_all(cx.db.pool())
        .await?;
        for r in &rows {
            let pack: String = r.try_get(0)?;
            let Ok(hash) = <[u8; 32]>::try_from(r.try_get::<Vec<u8>, _>(1)?) else {
                continue;
            };
            let hash = ChunkHash::from_bytes(hash);
            let len = from_db(r.try_get(2)?);
            let created: i64 = r.try_get(3)?;
            rows_seen += 1;
            *in_pack.entry(pack.clone()).or_default() += len;
            if !held.contains(&hash) && created < young {
                dead.push(Dead { hash, pack, len });
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == PAGE => after = last.try_get(1)?,
            _ => break,
        }
    }
    cx.report.work("chunk_rows_counted", rows_seen);
    liveness(cx, ns, &in_pack).await?;
    if !dead.is_empty() {
        remove_dead(cx, ns, head, started, dead).await?;
    }
    retire_empty(cx, ns).await
}

/// Every chunk a version (any, history included) or an open session names.
async fn references(cx: &mut Cx<'_>, ns: NamespaceId) -> Result<HashSet<ChunkHash>, sqlx::Error> {
    let mut held = HashSet::new();
    let mut refs = 0u64;
    let mut after = (String::new(), -1i64);
    loop {
        let rows = sqlx::query(
            "SELECT path, rev, manifest FROM versions WHERE namespace_id = $1 AND deleted = 0 \
             AND (path, rev) > ($2, $3) ORDER BY path, rev LIMIT $4",
        )
        .bind(to_db(ns.0))
        .bind(&after.0)
        .bind(after.1)
        .bind(PAGE)
        .fetch_all(cx.db.pool())
        .await?;
        for r in &rows {
            if let Some(m) = Manifest::from_bytes(r.try_get(2)?) {
                refs += m.len() as u64;
                held.extend(m.hashes());
            }
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == PAGE => {
                after = (last.try_get(0)?, last.try_get(1)?);
            }
            _ => break,
        }
    }
    let mut conn = cx.db.pool().acquire().await?;
    held.extend(session_chunks(&mut conn, ns, i64::MIN).await?);
    cx.report.work("chunk_references", refs);
    cx.report.work("chunks_referenced", held.len() as u64);
    Ok(held)
}

/// The chunks of the pending files of open sessions created at or after `since`.
async fn session_chunks(
    conn: &mut AnyConnection,
    ns: NamespaceId,
    since: i64,
) -> Result<Vec<ChunkHash>, sqlx::Error> {
    let mut out = Vec::new();
    for r in sqlx::query(
        "SELECT r.request FROM upload_sessions s JOIN upload_requests r \
         ON r.namespace_id = s.namespace_id AND r.upload_id = s.id \
         WHERE s.namespace_id = $1 AND s.state = 'open' AND s.created_at_ms >= $2",
    )
    .bind(to_db(ns.0))
    .bind(since)
    .fetch_all(&mut *conn)
    .await?
    {
        let request: String = r.try_get(0)?;
        let Ok(serde_json::Value::Array(pending)) = serde_json::from_str(&request) else {
            continue;
        };
        for p in &pending {
            let Some(chunks) = p["op"]["chunks"].as_array() else {
                continue;
            };
            out.extend(
                chunks
                    .iter()
                    .filter_map(|c| c["hash"].as_str()?.parse::<ChunkHash>().ok()),
            );
        }
    }
    Ok(out)
}

/// `live_bytes` of each complete pack against the rows located in it.
async fn liveness(
    cx: &mut Cx<'_>,
    ns: NamespaceId,
    in_pack: &HashMap<String, u64>,
) -> Result<(), ReconcileError> {
    let packs = sqlx::query(
        "SELECT id, live_bytes FROM packs WHERE namespace_id = $1 AND state = 'complete'",
    )
    .bind(to_db(ns.0))
    .fetch_all(cx.db.pool())
    .await?;
    for p in packs {
        let (id, live): (String, i64) = (p.try_get(0)?, p.try_get(1)?);
        let want = in_pack.get(&id).copied().unwrap_or(0);
        if from_db(live) == want && live >= 0 {
            continue;
        }
        cx.report.found("pack_liveness", 1);
        let target = format!("{ns}/{id}: {live} -> {want}");
        if cx.dry() {
            cx.report.would("pack_liveness", "recompute", target);
            continue;
        }
        sqlx::query("UPDATE packs SET live_bytes = $1 WHERE namespace_id = $2 AND id = $3")
            .bind(to_db(want))
            .bind(to_db(ns.0))
            .bind(&id)
            .execute(cx.db.pool())
            .await?;
        cx.report.repaired("pack_liveness", 1, "recomputed", target);
    }
    Ok(())
}

async fn remove_dead(
    cx: &mut Cx<'_>,
    ns: NamespaceId,
    head: i64,
    started: i64,
    mut dead: Vec<Dead>,
) -> Result<(), ReconcileError> {
    if cx.dry() {
        cx.report.found("dead_chunk", dead.len() as u64);
        cx.report.would(
            "dead_chunk",
            "delete_row",
            format!("{ns}: {} chunks", dead.len()),
        );
        return Ok(());
    }
    let mut tx = cx.db.begin().await?;
    // The folder's commit lock: no commit lands until this transaction ends.
    let now_head: i64 =
        sqlx::query("UPDATE namespaces SET head_seq = head_seq WHERE id = $1 RETURNING head_seq")
            .bind(to_db(ns.0))
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
    let mut taken: HashSet<ChunkHash> = HashSet::new();
    if now_head > head {
        for r in sqlx::query(
            "SELECT manifest FROM versions WHERE namespace_id = $1 AND rev > $2 AND deleted = 0",
        )
        .bind(to_db(ns.0))
        .bind(head)
        .fetch_all(&mut *tx)
        .await?
        {
            if let Some(m) = Manifest::from_bytes(r.try_get(0)?) {
                taken.extend(m.hashes());
            }
        }
    }
    taken.extend(session_chunks(&mut tx, ns, started - CLOCK_SLACK_MS).await?);
    dead.retain(|d| !taken.contains(&d.hash));
    let mut freed: HashMap<&str, u64> = HashMap::new();
    let mut removed = 0u64;
    for batch in dead.chunks(BATCH) {
        let placeholders: Vec<String> = (0..batch.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "DELETE FROM chunks WHERE namespace_id = $1 AND hash IN ({}) RETURNING hash, pack_id",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(to_db(ns.0));
        for d in batch {
            q = q.bind(d.hash.as_bytes().to_vec());
        }
        let gone: HashSet<(Vec<u8>, String)> = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        for d in batch {
            if gone.contains(&(d.hash.as_bytes().to_vec(), d.pack.clone())) {
                *freed.entry(&d.pack).or_default() += d.len;
                removed += 1;
            }
        }
    }
    for (pack, bytes) in &freed {
        sqlx::query(
            "UPDATE packs SET live_bytes = live_bytes - $1 WHERE namespace_id = $2 AND id = $3",
        )
        .bind(to_db(*bytes))
        .bind(to_db(ns.0))
        .bind(*pack)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    cx.report.found("dead_chunk", removed);
    if removed > 0 {
        cx.report.repaired(
            "dead_chunk",
            removed,
            "deleted_rows",
            format!("{ns}: {removed} chunks in {} packs", freed.len()),
        );
    }
    Ok(())
}

async fn retire_empty(cx: &mut Cx<'_>, ns: NamespaceId) -> Result<(), ReconcileError> {
    let empty = sqlx::query(
        "SELECT p.id FROM packs p WHERE p.namespace_id = $1 AND p.state = 'complete' \
         AND p.created_at_ms < $2 AND NOT EXISTS (SELECT 1 FROM chunks c \
         WHERE c.namespace_id = p.namespace_id AND c.pack_id = p.id)",
    )
    .bind(to_db(ns.0))
    .bind(cx.before(cx.opts.chunk_grace))
    .fetch_all(cx.db.pool())
    .await?;
    for r in empty {
        let id: String = r.try_get(0)?;
        let target = format!("{ns}/{id}");
        if cx.dry() {
            cx.report.would("packs_retired", "retire", target);
            continue;
        }
        sqlx::query(
            "UPDATE packs SET state = 'deleted', deleted_at_ms = $1 WHERE namespace_id = $2 \
             AND id = $3 AND state = 'complete'",
        )
        .bind(now_ms())
        .bind(to_db(ns.0))
        .bind(&id)
        .execute(cx.db.pool())
        .await?;
        cx.report.did("packs_retired", "retired", target);
    }
    Ok(())
}
