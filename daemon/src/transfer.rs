//! The one-off commands of the `driftless` binary: `upload`, `download`
//! and `ls`. Transfers resume: `upload` writes its session and every part
//! down in `$DRIFTLESS_CONFIG_DIR/transfers.db` before sending, and
//! `download` keeps a partial file named after the version next to the
//! target; running the same command again after a kill continues.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use driftless_daemon::download::download_to;
use driftless_daemon::hash::hash_file;
use driftless_daemon::http::{ApiClient, ClientError};
use driftless_daemon::progress::bytes_bar;
use driftless_daemon::state::State;
use driftless_daemon::upload::{UploadItem, UploadOptions, upload_batch};
use driftless_protocol::{ChangeKind, ErrorCode, NamespaceId, Outcome, Rev, SyncPath};

/// `driftless upload FILE REMOTE`: replaces (or creates) REMOTE with FILE.
pub(crate) async fn upload(
    api: &ApiClient,
    ns: NamespaceId,
    file: &Path,
    remote: &str,
    journal: Arc<State>,
    opts: UploadOptions,
    json: bool,
) -> anyhow::Result<()> {
    let target = SyncPath::parse(remote).map_err(|e| anyhow::anyhow!("{remote}: {e}"))?;
    // The file the user named, through any symlink they gave; a FIFO or
    // device is refused rather than read forever.
    let canonical =
        std::fs::canonicalize(file).with_context(|| format!("reading {}", file.display()))?;
    let local = canonical.clone();
    let hashed = tokio::task::spawn_blocking(move || hash_file(&local, None))
        .await?
        .with_context(|| format!("reading {}", file.display()))?;
    let base = match api.manifest(ns, target.as_str(), None).await {
        Ok(m) => Some(m.rev),
        Err(ClientError::Api { problem, .. }) if problem.code == ErrorCode::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let mut digest = blake3::Hasher::new();
    digest.update(&ns.0.to_le_bytes());
    digest.update(hashed.content_hash.as_bytes());
    digest.update(&base.map_or(0, |r| r.0).to_le_bytes());
    let op = journal.op_for(&target, digest.finalize().as_bytes())?;
    let size = hashed.size;
    let item = UploadItem {
        local: canonical,
        hashed,
        remote: target.as_str().to_owned(),
        base_rev: base,
        op_id: op.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?,
    };
    let bar = bytes_bar(size, target.file_name(), !json);
    let started = std::time::Instant::now();
    let r = upload_batch(
        api,
        ns,
        std::slice::from_ref(&item),
        opts,
        Some(journal),
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    let outcome = r
        .results
        .into_iter()
        .next()
        .map(|r| r.outcome)
        .context("the server gave no result")?;
    match outcome {
        Outcome::Committed { rev, .. } => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "path": target.as_str(), "rev": rev, "size": size,
                        "bytes_sent": r.bytes_sent, "parts": r.parts,
                        "parts_resumed": r.parts_resumed,
                        "seconds": started.elapsed().as_secs_f64(),
                    })
                );
            } else {
                println!(
                    "{}: revision {} ({} bytes, {} sent{})",
                    target,
                    rev.0,
                    size,
                    r.bytes_sent,
                    if r.parts_resumed > 0 {
                        format!(", {} parts resumed", r.parts_resumed)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(())
        }
        Outcome::Conflict { current_rev } => bail!(
            "{target} changed on the server meanwhile (now revision {}); run the command again to replace it",
            current_rev.map_or(0, |r| r.0)
        ),
        Outcome::Error { code, detail } => bail!("{target}: {code}: {detail}"),
        Outcome::Pending => bail!("{target}: the server left the upload pending"),
    }
}

/// `driftless download REMOTE FILE`.
pub(crate) async fn download(
    api: &ApiClient,
    ns: NamespaceId,
    remote: &str,
    rev: Option<u64>,
    file: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let bar = bytes_bar(0, remote.rsplit('/').next().unwrap_or(remote), !json);
    let started = std::time::Instant::now();
    // A connection that died (a frozen route to storage, a server that
    // restarted) costs a retry, which resumes from what was written.
    let mut attempt = 0u32;
    let d = loop {
        match download_to(api, ns, remote, rev.map(Rev), file, &bar).await {
            Ok(d) => break d,
            Err(e) if e.retryable() && attempt < DOWNLOAD_RETRIES => {
                attempt += 1;
                let wait = std::time::Duration::from_secs(1 << attempt.min(5));
                tracing::warn!(error = %e, attempt, "download interrupted; resuming");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    if json {
        let mut v = serde_json::to_value(&d)?;
        v["path"] = remote.into();
        v["file"] = file.display().to_string().into();
        v["seconds"] = started.elapsed().as_secs_f64().into();
        println!("{v}");
    } else {
        println!(
            "{} revision {} -> {} ({} bytes, {} fetched{})",
            remote,
            d.rev.0,
            file.display(),
            d.size,
            d.fetched,
            if d.resumed > 0 {
                format!(", {} already here from an interrupted run", d.resumed)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Times a download is resumed after a retryable failure.
const DOWNLOAD_RETRIES: u32 = 5;

/// `driftless ls [PREFIX]`.
pub(crate) async fn ls(
    api: &ApiClient,
    ns: NamespaceId,
    prefix: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let entries = api.list(ns, prefix).await?;
    for e in entries.iter().filter(|e| e.kind != ChangeKind::Delete) {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "path": e.path, "rev": e.rev, "size": e.size,
                    "mtime_ms": e.mtime_ms, "content_hash": e.content_hash,
                })
            );
        } else {
            println!("{:>14}  rev {:>8}  {}", e.size, e.rev.0, e.path);
        }
    }
    Ok(())
}
