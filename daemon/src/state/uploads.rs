//! Upload sessions written down before their first part is sent, so a
//! daemon killed mid-upload resumes the session and sends only what S3
//! lacks.

use super::*;

/// A part of an upload session as it was cut: chunks `start..end` of the
/// batch's needed chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedPart {
    /// Part number.
    pub part_number: u32,
    /// First chunk index.
    pub start: u64,
    /// One past the last chunk index.
    pub end: u64,
    /// The ETag S3 answered, once the part is stored.
    pub etag: Option<String>,
}

/// An upload session written down before its first part was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedUpload {
    /// The session.
    pub upload_id: driftless_protocol::UploadId,
    /// The chunks the server asked for.
    pub needed: Vec<ChunkHash>,
    /// The part size in use.
    pub part_size: u64,
    /// The parts cut so far.
    pub parts: Vec<SavedPart>,
}

impl State {
    /// The upload session saved for the batch `key`.
    pub fn saved_upload(&self, key: &[u8; 32]) -> Result<Option<SavedUpload>, StateError> {
        self.with(|c| {
            let row: Option<(String, Vec<u8>, i64)> = c
                .query_row(
                    "SELECT upload_id, needed, part_size FROM uploads WHERE key = ?1",
                    [key.as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((id, needed, part_size)) = row else {
                return Ok(None);
            };
            let Ok(upload_id) = driftless_protocol::UploadId::try_from(id.clone()) else {
                return Ok(None);
            };
            let needed = needed
                .chunks_exact(32)
                .filter_map(|b| <[u8; 32]>::try_from(b).ok())
                .map(ChunkHash::from_bytes)
                .collect();
            let mut q = c.prepare(
                "SELECT part_number, start, end, etag FROM upload_parts WHERE upload_id = ?1 ORDER BY part_number",
            )?;
            let parts = q
                .query_map([&id], |r| {
                    Ok(SavedPart {
                        part_number: r.get(0)?,
                        start: r.get::<_, i64>(1)? as u64,
                        end: r.get::<_, i64>(2)? as u64,
                        etag: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(Some(SavedUpload {
                upload_id,
                needed,
                part_size: part_size as u64,
                parts,
            }))
        })
    }

    /// Writes down a new upload session for the batch `key`.
    pub fn save_upload(
        &self,
        key: &[u8; 32],
        id: &driftless_protocol::UploadId,
        needed: &[ChunkHash],
        part_size: u64,
    ) -> Result<(), StateError> {
        let blob: Vec<u8> = needed.iter().flat_map(|h| *h.as_bytes()).collect();
        self.with(|c| {
            c.execute(
                "INSERT INTO uploads (key, upload_id, needed, part_size, used_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (key) DO UPDATE SET upload_id = excluded.upload_id, \
                 needed = excluded.needed, part_size = excluded.part_size, used_ms = excluded.used_ms",
                params![key.as_slice(), id.as_str(), blob, part_size as i64, crate::now_ms()],
            )
            .map(|_| ())
        })
    }

    /// Writes down a part before it is registered.
    pub fn save_upload_part(
        &self,
        id: &driftless_protocol::UploadId,
        part_number: u32,
        start: u64,
        end: u64,
    ) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO upload_parts (upload_id, part_number, start, end) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (upload_id, part_number) DO UPDATE SET start = excluded.start, \
                 end = excluded.end, etag = NULL",
                params![id.as_str(), part_number, start as i64, end as i64],
            )
            .map(|_| ())
        })
    }

    /// Notes the ETag S3 gave a stored part (sent again at commit).
    pub fn save_upload_etag(
        &self,
        id: &driftless_protocol::UploadId,
        part_number: u32,
        etag: &str,
    ) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE upload_parts SET etag = ?3 WHERE upload_id = ?1 AND part_number = ?2",
                params![id.as_str(), part_number, etag],
            )
            .map(|_| ())
        })
    }

    /// Drops the saved session of batch `key` (committed or unusable).
    pub fn forget_upload(&self, key: &[u8; 32]) -> Result<(), StateError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM upload_parts WHERE upload_id IN (SELECT upload_id FROM uploads WHERE key = ?1)",
                [key.as_slice()],
            )?;
            tx.execute("DELETE FROM uploads WHERE key = ?1", [key.as_slice()])?;
            tx.commit()
        })
    }

    /// Notes that the session of batch `key` is in use (resumed).
    pub fn touch_upload(&self, key: &[u8; 32]) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE uploads SET used_ms = ?2 WHERE key = ?1",
                params![key.as_slice(), crate::now_ms()],
            )
            .map(|_| ())
        })
    }

    /// Saved sessions not used since `before_ms`: left by a run whose
    /// batch changed before it could resume them.
    pub fn stale_uploads(
        &self,
        before_ms: i64,
    ) -> Result<Vec<([u8; 32], driftless_protocol::UploadId)>, StateError> {
        self.with(|c| {
            let mut q = c.prepare("SELECT key, upload_id FROM uploads WHERE used_ms < ?1")?;
            let rows = q
                .query_map([before_ms], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(k, id)| {
                    Some((
                        <[u8; 32]>::try_from(k.as_slice()).ok()?,
                        driftless_protocol::UploadId::try_from(id).ok()?,
                    ))
                })
                .collect())
        })
    }

    /// Upload sessions saved and not yet committed or dropped.
    pub fn saved_upload_count(&self) -> Result<u64, StateError> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM uploads", [], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
    }
}
