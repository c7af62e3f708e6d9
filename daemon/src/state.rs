//! The daemon's local state, in SQLite under `ROOT/.driftless/state.db`:
//! what each synced file was when it last matched the server (the base of
//! every three-way decision), where each of its chunks sits (so downloads
//! reuse local bytes), the cursor, and the operation id of each pending
//! upload (so a retry after a crash is recognised by the server).
//!
//! WAL with `synchronous = NORMAL`: a recorded state survives kill -9 (the
//! WAL is written before each commit returns); a power cut may lose the
//! last records, which costs a re-hash, never a file: a file whose record
//! is missing or stale is compared with the server again, three-way.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use driftless_protocol::{ChunkHash, ContentHash, Rev, SyncPath};
use rusqlite::{Connection, OptionalExtension, params};

use crate::local::LocalStat;

mod uploads;
pub use uploads::{SavedPart, SavedUpload};

/// One chunk of a synced file as the state keeps it: hash, offset, length.
pub type ChunkRecord = (ChunkHash, u64, u32);

/// What a synced file was when it last matched the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    /// The file.
    pub path: SyncPath,
    /// The server revision it is.
    pub rev: Rev,
    /// Its content hash.
    pub content_hash: ContentHash,
    /// Its size, mtime and inode as last seen.
    pub stat: LocalStat,
}

/// Where a chunk's bytes are in a local file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalChunk {
    /// The file.
    pub path: SyncPath,
    /// Byte offset.
    pub offset: u64,
    /// Length.
    pub len: u32,
}

/// The state database.
pub struct State {
    conn: Mutex<Connection>,
}

/// A state database error.
pub type StateError = rusqlite::Error;

/// Set on every connection.
const PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;";

/// The schema, one step per version (`PRAGMA user_version` counts the
/// steps applied). A step is never edited once released: a new one is
/// appended. The first step is written with `IF NOT EXISTS` because
/// databases made before versioning began hold its tables already.
const MIGRATIONS: &[&str] = &[
    SCHEMA_V1,
    // v2: the file system of each synced file (a missing file counts as
    // deleted only if its folder is still on that file system), and what
    // failed in the last pass, for `status`.
    "ALTER TABLE files ADD COLUMN dev INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE problems (
         path     TEXT PRIMARY KEY,
         reason   TEXT NOT NULL,
         since_ms INTEGER NOT NULL
     );",
    // v3: the versions each path agreed on before its current one, so a
    // server that went back in time (restored) is recognised as holding an
    // ancestor of this device's version, not a rival.
    "CREATE TABLE ancestors (
         path         TEXT NOT NULL,
         rev          INTEGER NOT NULL,
         content_hash BLOB NOT NULL,
         PRIMARY KEY (path, rev, content_hash)
     );",
];

/// Ancestor versions kept per path.
const ANCESTORS: i64 = 16;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path         TEXT PRIMARY KEY,
    rev          INTEGER NOT NULL,
    content_hash BLOB NOT NULL,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    inode        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    path   TEXT NOT NULL,
    offset INTEGER NOT NULL,
    hash   BLOB NOT NULL,
    len    INTEGER NOT NULL,
    PRIMARY KEY (path, offset)
);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks (hash);
CREATE TABLE IF NOT EXISTS pending (
    path         TEXT PRIMARY KEY,
    op_id        TEXT NOT NULL,
    digest       BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sent (
    path         TEXT NOT NULL,
    content_hash BLOB NOT NULL,
    PRIMARY KEY (path, content_hash)
);
CREATE TABLE IF NOT EXISTS uploads (
    key       BLOB PRIMARY KEY,
    upload_id TEXT NOT NULL,
    needed    BLOB NOT NULL,
    part_size INTEGER NOT NULL,
    used_ms   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS upload_parts (
    upload_id   TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    start       INTEGER NOT NULL,
    end         INTEGER NOT NULL,
    etag        TEXT,
    PRIMARY KEY (upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS conflicts (
    path     TEXT PRIMARY KEY,
    original TEXT NOT NULL,
    at_ms    INTEGER NOT NULL
);
";

fn path_of(s: String) -> rusqlite::Result<SyncPath> {
    SyncPath::parse(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn hash32(b: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    <[u8; 32]>::try_from(b).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "hash of the wrong length".into(),
        )
    })
}

impl State {
    /// Opens (creating, or bringing to the current schema) the state
    /// database at `file`. A database from a newer version is refused
    /// rather than misread.
    pub fn open(file: &Path) -> Result<Self, StateError> {
        let mut conn = Connection::open(file)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(PRAGMAS)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let at: usize = tx.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
        if at > MIGRATIONS.len() {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
                Some(format!(
                    "the state database has schema version {at}; this driftless knows {} (a newer driftless wrote it)",
                    MIGRATIONS.len()
                )),
            ));
        }
        for step in &MIGRATIONS[at..] {
            tx.execute_batch(step)?;
        }
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
        tx.commit()?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Replaces the list of paths that failed in the last pass (a path
    /// failing since earlier keeps its first time).
    pub fn set_problems(
        &self,
        problems: &[(String, String)],
        now_ms: i64,
    ) -> Result<(), StateError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "CREATE TEMP TABLE IF NOT EXISTS seen (path TEXT PRIMARY KEY)",
                [],
            )?;
            tx.execute("DELETE FROM temp.seen", [])?;
            {
                let mut up = tx.prepare(
                    "INSERT INTO problems (path, reason, since_ms) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (path) DO UPDATE SET reason = excluded.reason",
                )?;
                let mut seen = tx.prepare("INSERT OR IGNORE INTO temp.seen (path) VALUES (?1)")?;
                for (path, reason) in problems {
                    up.execute(params![path, reason, now_ms])?;
                    seen.execute([path])?;
                }
            }
            tx.execute(
                "DELETE FROM problems WHERE path NOT IN (SELECT path FROM temp.seen)",
                [],
            )?;
            tx.commit()
        })
    }

    /// Paths that failed in the last pass: (path, reason, failing since).
    pub fn problems(&self) -> Result<Vec<(String, String, i64)>, StateError> {
        self.with(|c| {
            let mut q = c.prepare("SELECT path, reason, since_ms FROM problems ORDER BY path")?;
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut c = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut c)
    }

    /// A value of the `meta` table.
    pub fn get(&self, key: &str) -> Result<Option<String>, StateError> {
        self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    /// Sets a value of the `meta` table.
    pub fn set(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
        })
    }

    /// The synced state of `p`.
    pub fn synced(&self, p: &SyncPath) -> Result<Option<Synced>, StateError> {
        self.with(|c| {
            c.query_row(
                "SELECT path, rev, content_hash, size, mtime_ns, inode, dev FROM files WHERE path = ?1",
                [p.as_str()],
                row_synced,
            )
            .optional()
        })
    }

    /// Whether `rev` with `content` is a version `p` agreed on before its
    /// current one.
    pub fn is_ancestor(
        &self,
        p: &SyncPath,
        rev: Rev,
        content: &ContentHash,
    ) -> Result<bool, StateError> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM ancestors WHERE path = ?1 AND rev = ?2 AND content_hash = ?3",
                params![p.as_str(), rev.0 as i64, content.as_bytes().as_slice()],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
        })
    }

    /// Whether any file is synced.
    pub fn has_synced(&self) -> Result<bool, StateError> {
        self.with(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM files)", [], |r| r.get(0)))
    }

    /// Every synced file, by path.
    pub fn all_synced(&self) -> Result<Vec<Synced>, StateError> {
        self.with(|c| {
            let mut q = c.prepare(
                "SELECT path, rev, content_hash, size, mtime_ns, inode, dev FROM files ORDER BY path",
            )?;
            q.query_map([], row_synced)?.collect()
        })
    }

    /// Records that `s.path` now matches the server at `s.rev`, with its
    /// chunks (offsets and lengths, in file order), and clears its pending op.
    pub fn record(&self, s: &Synced, chunks: &[(ChunkHash, u64, u32)]) -> Result<(), StateError> {
        self.record_many(&[(s.clone(), chunks.to_vec())])
    }

    /// [`record`](Self::record) for many files, in one transaction.
    pub fn record_many(&self, files: &[(Synced, Vec<ChunkRecord>)]) -> Result<(), StateError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for (s, chunks) in files {
                keep_as_ancestor(&tx, &s.path)?;
                tx.prepare_cached(
                    "INSERT INTO files (path, rev, content_hash, size, mtime_ns, inode, dev) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (path) DO UPDATE SET \
                     rev = excluded.rev, content_hash = excluded.content_hash, size = excluded.size, \
                     mtime_ns = excluded.mtime_ns, inode = excluded.inode, dev = excluded.dev",
                )?
                .execute(params![
                    s.path.as_str(),
                    s.rev.0 as i64,
                    s.content_hash.as_bytes().as_slice(),
                    s.stat.size as i64,
                    s.stat.mtime_ns,
                    s.stat.inode as i64,
                    s.stat.dev as i64
                ])?;
                tx.prepare_cached("DELETE FROM chunks WHERE path = ?1")?
                    .execute([s.path.as_str()])?;
                let mut ins = tx.prepare_cached(
                    "INSERT OR REPLACE INTO chunks (path, offset, hash, len) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (hash, offset, len) in chunks {
                    ins.execute(params![
                        s.path.as_str(),
                        *offset as i64,
                        hash.as_bytes().as_slice(),
                        *len
                    ])?;
                }
                tx.prepare_cached("DELETE FROM pending WHERE path = ?1")?
                    .execute([s.path.as_str()])?;
                tx.prepare_cached("DELETE FROM sent WHERE path = ?1")?
                    .execute([s.path.as_str()])?;
            }
            tx.commit()
        })
    }

    /// Updates only the stat of a synced file (touched, same content).
    pub fn restat(&self, p: &SyncPath, stat: LocalStat) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "UPDATE files SET size = ?2, mtime_ns = ?3, inode = ?4, dev = ?5 WHERE path = ?1",
                params![
                    p.as_str(),
                    stat.size as i64,
                    stat.mtime_ns,
                    stat.inode as i64,
                    stat.dev as i64
                ],
            )
            .map(|_| ())
        })
    }

    /// Forgets `p` (deleted on both sides).
    pub fn forget(&self, p: &SyncPath) -> Result<(), StateError> {
        self.with(|c| {
            let tx = c.transaction()?;
            keep_as_ancestor(&tx, p)?;
            tx.execute("DELETE FROM files WHERE path = ?1", [p.as_str()])?;
            tx.execute("DELETE FROM chunks WHERE path = ?1", [p.as_str()])?;
            tx.execute("DELETE FROM pending WHERE path = ?1", [p.as_str()])?;
            tx.execute("DELETE FROM sent WHERE path = ?1", [p.as_str()])?;
            tx.commit()
        })
    }

    /// Notes that this device is about to commit `content` at `p`: if the
    /// commit lands but the process dies before recording it, the next
    /// pass recognises the server's version as its own, not a conflict.
    pub fn note_sent(&self, p: &SyncPath, content: &ContentHash) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO sent (path, content_hash) VALUES (?1, ?2)",
                params![p.as_str(), content.as_bytes().as_slice()],
            )
            .map(|_| ())
        })
    }

    /// Whether this device sent `content` for `p` since it last recorded `p`.
    pub fn was_sent(&self, p: &SyncPath, content: &ContentHash) -> Result<bool, StateError> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM sent WHERE path = ?1 AND content_hash = ?2",
                params![p.as_str(), content.as_bytes().as_slice()],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
        })
    }

    /// Local copies of `hash` (in synced files; verify before use).
    pub fn chunk_sources(&self, hash: &ChunkHash) -> Result<Vec<LocalChunk>, StateError> {
        self.with(|c| {
            let mut q =
                c.prepare("SELECT path, offset, len FROM chunks WHERE hash = ?1 LIMIT 4")?;
            q.query_map([hash.as_bytes().as_slice()], |r| {
                Ok(LocalChunk {
                    path: path_of(r.get(0)?)?,
                    offset: r.get::<_, i64>(1)? as u64,
                    len: r.get(2)?,
                })
            })?
            .collect()
        })
    }

    /// The chunks of a synced file: hash, offset, length.
    pub fn chunk_sources_of(&self, p: &SyncPath) -> Result<Vec<(ChunkHash, u64, u32)>, StateError> {
        self.with(|c| {
            let mut q =
                c.prepare("SELECT hash, offset, len FROM chunks WHERE path = ?1 ORDER BY offset")?;
            q.query_map([p.as_str()], |r| {
                Ok((
                    ChunkHash::from_bytes(hash32(r.get(0)?)?),
                    r.get::<_, i64>(1)? as u64,
                    r.get(2)?,
                ))
            })?
            .collect()
        })
    }

    /// The operation id for uploading `p` as `digest` (what, from which
    /// base): the same one again after a crash, a new one if it changed.
    pub fn op_for(&self, p: &SyncPath, digest: &[u8; 32]) -> Result<String, StateError> {
        let mut ops = self.ops_for(&[(p, digest, None)])?;
        Ok(ops.pop().unwrap_or_default())
    }

    /// [`op_for`](Self::op_for) for many paths in one transaction; with a
    /// content hash, also [`note_sent`](Self::note_sent) for it.
    pub fn ops_for(
        &self,
        files: &[(&SyncPath, &[u8; 32], Option<&ContentHash>)],
    ) -> Result<Vec<String>, StateError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(files.len());
            for (p, digest, sent) in files {
                let existing: Option<(String, Vec<u8>)> = tx
                    .prepare_cached("SELECT op_id, digest FROM pending WHERE path = ?1")?
                    .query_row([p.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let op = match existing {
                    Some((op, d)) if d == digest[..] => op,
                    _ => {
                        let op = format!("d{:032x}", rand::random::<u128>());
                        tx.prepare_cached(
                            "INSERT INTO pending (path, op_id, digest) VALUES (?1, ?2, ?3) \
                             ON CONFLICT (path) DO UPDATE SET op_id = excluded.op_id, digest = excluded.digest",
                        )?
                        .execute(params![p.as_str(), op, digest.as_slice()])?;
                        op
                    }
                };
                if let Some(content) = sent {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO sent (path, content_hash) VALUES (?1, ?2)",
                    )?
                    .execute(params![p.as_str(), content.as_bytes().as_slice()])?;
                }
                out.push(op);
            }
            tx.commit()?;
            Ok(out)
        })
    }

    /// Paths with an operation not yet confirmed by the server.
    pub fn pending(&self) -> Result<Vec<String>, StateError> {
        self.with(|c| {
            let mut q = c.prepare("SELECT path FROM pending ORDER BY path")?;
            q.query_map([], |r| r.get(0))?.collect()
        })
    }

    /// Notes a conflicted copy made of `original`.
    pub fn note_conflict(
        &self,
        copy: &SyncPath,
        original: &SyncPath,
        at_ms: i64,
    ) -> Result<(), StateError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO conflicts (path, original, at_ms) VALUES (?1, ?2, ?3)",
                params![copy.as_str(), original.as_str(), at_ms],
            )
            .map(|_| ())
        })
    }

    /// Conflicted copies made, newest first: (copy, original, when).
    pub fn conflicts(&self) -> Result<Vec<(String, String, i64)>, StateError> {
        self.with(|c| {
            let mut q =
                c.prepare("SELECT path, original, at_ms FROM conflicts ORDER BY at_ms DESC")?;
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
    }
}

/// Notes `p`'s current agreed version among its ancestors (the newest
/// [`ANCESTORS`] are kept).
fn keep_as_ancestor(tx: &rusqlite::Transaction<'_>, p: &SyncPath) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO ancestors (path, rev, content_hash) \
         SELECT path, rev, content_hash FROM files WHERE path = ?1",
    )?
    .execute([p.as_str()])?;
    tx.prepare_cached(
        "DELETE FROM ancestors WHERE path = ?1 AND rev NOT IN \
         (SELECT rev FROM ancestors WHERE path = ?1 ORDER BY rev DESC LIMIT ?2)",
    )?
    .execute(params![p.as_str(), ANCESTORS])?;
    Ok(())
}

fn row_synced(r: &rusqlite::Row<'_>) -> rusqlite::Result<Synced> {
    Ok(Synced {
        path: path_of(r.get(0)?)?,
        rev: Rev(r.get::<_, i64>(1)? as u64),
        content_hash: ContentHash::from_bytes(hash32(r.get(2)?)?),
        stat: LocalStat {
            size: r.get::<_, i64>(3)? as u64,
            mtime_ns: r.get(4)?,
            inode: r.get::<_, i64>(5)? as u64,
            dev: r.get::<_, i64>(6)? as u64,
        },
    })
}
