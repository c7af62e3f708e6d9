//! "Runs in exactly one place at a time" across processes: a PostgreSQL
//! session-level advisory lock held on a connection of its own.
//!
//! The holder runs its queries on that very connection ([`Lease::acquire`]
//! hands it out), so as long as its queries succeed it still holds the lock:
//! if the session dies, the lock is released and the next query fails, and
//! the holder steps down before another process can have taken over. On
//! SQLite (the embedded default, one process) the lease is always granted
//! and the guard is an ordinary pooled connection.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Connection, Row};

use crate::db::{Db, Dialect};

/// A named lock shared by every process on one database.
pub struct Lease {
    db: Db,
    key: i64,
    /// The lease's own session (kept while standing by, so a standby does
    /// not open a connection per attempt).
    conn: Option<AnyConnection>,
    /// Whether that session holds the lock.
    held: bool,
}

/// A connection on which the lease is held, for one unit of work.
pub enum LeaseGuard<'a> {
    /// PostgreSQL: the lease's own session.
    Held(&'a mut AnyConnection),
    /// SQLite: a pooled connection (there is no other process to exclude).
    Pooled(PoolConnection<Any>),
}

impl Deref for LeaseGuard<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            Self::Held(c) => c,
            Self::Pooled(c) => c,
        }
    }
}

impl DerefMut for LeaseGuard<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Self::Held(c) => c,
            Self::Pooled(c) => c,
        }
    }
}

/// FNV-1a of the name: a stable 64-bit advisory lock key.
fn key_of(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

impl Lease {
    /// The lease called `name` (not yet acquired).
    pub fn new(db: Db, name: &str) -> Self {
        Self {
            db,
            key: key_of(name),
            conn: None,
            held: false,
        }
    }

    /// Whether this process holds the lease (as of its last use).
    pub fn is_held(&self) -> bool {
        self.held || self.db.dialect() == Dialect::Sqlite
    }

    /// The lease's connection, taking the lock if it is free; `None` while
    /// another process holds it.
    pub async fn acquire(&mut self) -> Result<Option<LeaseGuard<'_>>, sqlx::Error> {
        if self.db.dialect() == Dialect::Sqlite {
            return Ok(Some(LeaseGuard::Pooled(self.db.pool().acquire().await?)));
        }
        if self.conn.is_none() {
            // Detached: the session (and so the lock) outlives pool recycling
            // and does not count against the pool.
            self.conn = Some(self.db.pool().acquire().await?.detach());
        }
        if !self.held {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            let got = sqlx::query("SELECT pg_try_advisory_lock($1)")
                .bind(self.key)
                .fetch_one(&mut *conn)
                .await
                .and_then(|r| r.try_get::<bool, _>(0));
            match got {
                Ok(true) => {
                    tracing::info!(lease = self.key, "lease acquired");
                    self.held = true;
                }
                Ok(false) => return Ok(None),
                Err(e) => {
                    // The standby session is broken: a fresh one next time.
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        Ok(self.conn.as_mut().map(LeaseGuard::Held))
    }

    /// Gives the lease up after a failed query on its connection (the
    /// session may be gone, and with it the lock).
    pub async fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if self.held {
                tracing::info!(lease = self.key, "lease released");
                // Unlocked before the close returns: a backend ends its
                // session (and drops its locks) some time after the client
                // hangs up, so the next holder would otherwise wait on it.
                // If the session is already broken, its end frees the lock.
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(self.key)
                    .execute(&mut conn)
                    .await;
            }
            let _ = conn.close().await;
        }
        self.held = false;
    }
}
