//! Cutting and sending parts: the needed chunks of a batch in a fixed
//! order, packed on a reader thread into parts (each written down in the
//! journal before it is registered), PUT several at once through presigned
//! URLs with retries.

use super::*;

/// One sealed part on its way to S3.
struct Part {
    request: PartRequest,
    bytes: Bytes,
    raw_len: u64,
}

/// A chunk to send: which item, where in it, and its hash.
#[derive(Clone, Copy)]
pub(super) struct Wanted {
    pub(super) item: usize,
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) hash: ChunkHash,
}

/// The needed chunks in batch order, each once (a deterministic list: a
/// resumed run finds the same chunk at the same index).
pub(super) fn wanted_chunks(items: &[UploadItem], needed: &HashSet<ChunkHash>) -> Vec<Wanted> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (n, i) in items.iter().enumerate() {
        for (c, off) in i.hashed.chunks.iter().zip(&i.hashed.offsets) {
            if needed.contains(&c.hash) && seen.insert(c.hash) {
                out.push(Wanted {
                    item: n,
                    offset: *off,
                    len: c.len,
                    hash: c.hash,
                });
            }
        }
    }
    out
}

/// How the parts are cut: the parts an earlier run wrote down (kept as
/// they were, skipped if S3 holds them), then new ones.
pub(super) struct Plan {
    pub(super) part_size: u64,
    pub(super) saved: Vec<SavedPart>,
    pub(super) stored: HashSet<u32>,
}

/// Streams the needed chunks into parts and PUTs them; returns the ETags.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_parts(
    api: &ApiClient,
    upload_id: &UploadId,
    items: &[UploadItem],
    wanted: Vec<Wanted>,
    plan: Plan,
    opts: UploadOptions,
    journal: Option<Arc<State>>,
    progress: &Progress,
    report: &mut BatchReport,
) -> Result<Vec<CompletedPart>, UploadError> {
    let resumed_etags: Vec<CompletedPart> = plan
        .saved
        .iter()
        .filter(|p| plan.stored.contains(&p.part_number))
        .filter_map(|p| {
            p.etag.clone().map(|etag| CompletedPart {
                part_number: p.part_number,
                etag,
            })
        })
        .collect();
    report.parts_resumed = plan
        .saved
        .iter()
        .filter(|p| plan.stored.contains(&p.part_number))
        .count() as u32;
    let journal_etags = journal.clone();
    let (tx, mut rx) = mpsc::channel::<Result<Part, UploadError>>(opts.concurrency.max(1));
    let files: Vec<(PathBuf, String, (u64, u64))> = items
        .iter()
        .map(|i| {
            let name = i.remote.rsplit('/').next().unwrap_or(&i.remote).to_owned();
            (i.local.clone(), name, i.hashed.id)
        })
        .collect();
    let policy = opts.policy;
    let id = upload_id.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut packer = Packer::new(files, policy, plan.part_size, tx.clone());
        if let Err(e) = packer.run(&wanted, &plan, journal.as_deref(), &id) {
            let _ = tx.blocking_send(Err(e));
        }
    });

    let mut inflight = JoinSet::new();
    // Parts stored by an earlier run: their ETags as that run noted them
    // (the server falls back to asking S3 for any it lacks).
    let mut done: Vec<CompletedPart> = resumed_etags;
    loop {
        // Refill up to the concurrency limit, then wait for one to finish.
        while inflight.len() < opts.concurrency.max(1) {
            match rx.recv().await {
                Some(Ok(part)) => {
                    report.bytes_sent += part.bytes.len() as u64;
                    report.raw_bytes_sent += part.raw_len;
                    report.parts += 1;
                    let api = api.clone();
                    let id = upload_id.clone();
                    let progress = progress.clone();
                    inflight.spawn(async move {
                        let raw = part.raw_len;
                        let done = send_one(&api, &id, part, opts.attempts).await;
                        progress.inc(raw);
                        done
                    });
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        match inflight.join_next().await {
            Some(r) => {
                let part = r.map_err(|e| UploadError::Protocol(e.to_string()))??;
                if let Some(j) = &journal_etags {
                    j.save_upload_etag(upload_id, part.part_number, &part.etag)?;
                }
                done.push(part);
            }
            None => break,
        }
    }
    reader
        .await
        .map_err(|e| UploadError::Protocol(e.to_string()))?;
    done.sort_by_key(|p: &CompletedPart| p.part_number);
    Ok(done)
}

/// Registers and PUTs one part, retrying what can be retried (a fresh URL
/// each time, so an expired one is no obstacle).
async fn send_one(
    api: &ApiClient,
    id: &UploadId,
    part: Part,
    attempts: u32,
) -> Result<CompletedPart, ClientError> {
    let mut wait = std::time::Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        let result = async {
            let url = api.register_part(id, &part.request).await?;
            api.put_part(&url, part.bytes.clone()).await
        }
        .await;
        match result {
            Ok(etag) => {
                return Ok(CompletedPart {
                    part_number: part.request.part_number,
                    etag,
                });
            }
            Err(e) if attempt < attempts && e.retryable() => {
                tracing::warn!(part = part.request.part_number, attempt, error = %e, "part failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads the wanted chunks in batch order, encodes them and seals parts.
struct Packer {
    files: Vec<(PathBuf, String, (u64, u64))>,
    open: Option<(usize, File, FormatHint)>,
    encoder: Option<Encoder>,
    policy: Policy,
    part_size: u64,
    tx: mpsc::Sender<Result<Part, UploadError>>,
    raw: Vec<u8>,
}

impl Packer {
    fn new(
        files: Vec<(PathBuf, String, (u64, u64))>,
        policy: Policy,
        part_size: u64,
        tx: mpsc::Sender<Result<Part, UploadError>>,
    ) -> Self {
        Self {
            files,
            open: None,
            encoder: None,
            policy,
            part_size,
            tx,
            raw: Vec::new(),
        }
    }

    /// Saved parts not in storage are cut again exactly as before (same
    /// chunks, same number); the chunks after them go into new parts, each
    /// written down in the journal before it is registered.
    fn run(
        &mut self,
        wanted: &[Wanted],
        plan: &Plan,
        journal: Option<&State>,
        upload: &UploadId,
    ) -> Result<(), UploadError> {
        let mut saved = plan.saved.clone();
        saved.sort_by_key(|p| p.start);
        let mut next_start = 0usize;
        let mut next_number = 1u32;
        for p in &saved {
            next_start = next_start.max(p.end as usize);
            next_number = next_number.max(p.part_number + 1);
            if plan.stored.contains(&p.part_number) {
                continue;
            }
            let range = wanted
                .get(p.start as usize..p.end as usize)
                .ok_or_else(|| UploadError::Protocol("a saved part is outside the batch".into()))?;
            let mut part = Part::numbered(p.part_number);
            let mut buf = Vec::new();
            for w in range {
                self.add(w, &mut part, &mut buf)?;
            }
            if !self.send(seal(part, buf)) {
                return Ok(());
            }
        }
        let mut part = Part::numbered(next_number);
        let mut start = next_start;
        let mut buf = Vec::with_capacity(self.part_size as usize + (16 << 20));
        let rest = wanted.get(next_start..).unwrap_or_default();
        for (i, w) in rest.iter().enumerate() {
            self.add(w, &mut part, &mut buf)?;
            let end = next_start + i + 1;
            let last = end == wanted.len();
            if buf.len() as u64 >= self.part_size || (last && !buf.is_empty()) {
                let n = part.request.part_number;
                if let Some(j) = journal {
                    j.save_upload_part(upload, n, start as u64, end as u64)?;
                }
                let sealed = seal(
                    std::mem::replace(&mut part, Part::numbered(n + 1)),
                    std::mem::replace(
                        &mut buf,
                        Vec::with_capacity(self.part_size as usize + (16 << 20)),
                    ),
                );
                if !self.send(sealed) {
                    return Ok(());
                }
                start = end;
            }
        }
        Ok(())
    }

    /// `false` when the sender gave up.
    fn send(&self, part: Part) -> bool {
        self.tx.blocking_send(Ok(part)).is_ok()
    }

    fn add(&mut self, w: &Wanted, part: &mut Part, buf: &mut Vec<u8>) -> Result<(), UploadError> {
        let (path, name, id) = &self.files[w.item];
        let io_err = |source| UploadError::Io {
            path: path.display().to_string(),
            source,
        };
        if self.open.as_ref().is_none_or(|(n, _, _)| *n != w.item) {
            // The file that was hashed, never a symlink or FIFO swapped in.
            let mut file = crate::local::open_regular(path, Some(*id)).map_err(io_err)?;
            let mut head = [0u8; 512];
            let n = file.read(&mut head).map_err(io_err)?;
            let hint = FormatHint::detect(name, &head[..n]);
            self.open = Some((w.item, file, hint));
        }
        let Some((_, file, hint)) = self.open.as_mut() else {
            return Err(UploadError::Protocol("no open file".into()));
        };
        file.seek(SeekFrom::Start(w.offset)).map_err(io_err)?;
        self.raw.resize(w.len as usize, 0);
        file.read_exact(&mut self.raw).map_err(io_err)?;
        // The file changed since it was hashed: stop rather than send bytes
        // that do not match what the server was told.
        if blake3::hash(&self.raw).as_bytes() != w.hash.as_bytes() {
            return Err(io_err(io::Error::other(
                "the file changed while it was being uploaded",
            )));
        }
        let encoder = match &mut self.encoder {
            Some(e) => e,
            None => self
                .encoder
                .insert(Encoder::new(self.policy).map_err(io_err)?),
        };
        let e = encoder.encode(&self.raw, *hint);
        part.request.chunks.push(PartChunk {
            hash: w.hash,
            raw_len: w.len,
            stored_len: e.bytes.len() as u32,
            codec: match e.codec {
                Codec::Zstd => StoredCodec::Zstd,
                Codec::None => StoredCodec::None,
            },
        });
        buf.extend_from_slice(e.bytes);
        part.raw_len += u64::from(w.len);
        Ok(())
    }
}

impl Part {
    fn numbered(n: u32) -> Self {
        Part {
            request: PartRequest {
                part_number: n,
                size: 0,
                checksum_crc32c: String::new(),
                chunks: Vec::new(),
            },
            bytes: Bytes::new(),
            raw_len: 0,
        }
    }
}

fn seal(mut part: Part, bytes: Vec<u8>) -> Part {
    part.request.size = bytes.len() as u64;
    part.request.checksum_crc32c =
        base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(&bytes).to_be_bytes());
    part.bytes = Bytes::from(bytes);
    part
}
