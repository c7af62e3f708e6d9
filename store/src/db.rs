//! The metadata database: a connection pool on PostgreSQL (production) or
//! SQLite (embedded default), migrated at start-up.
//!
//! Both run the same queries through sqlx's Any driver: `$N` placeholders,
//! BIGINT integers, 0/1 flags, BYTEA/BLOB bytes. Only the migrations differ
//! (`migrations/postgres`, `migrations/sqlite`).

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};

static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: many connections, row locks.
    Postgres,
    /// SQLite: one connection, so transactions are serialized in process.
    Sqlite,
}

/// The metadata database.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
    /// Kept for LISTEN connections; holds a password, never logged.
    url: std::sync::Arc<str>,
}

impl Db {
    /// Connects to `url` (`postgres://…` or `sqlite://PATH`, created if
    /// missing) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        install_default_drivers();
        let dialect = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(sqlx::Error::Configuration(
                "database URL must start with postgres:// or sqlite://".into(),
            ));
        };
        let pool = match dialect {
            Dialect::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?
            }
            Dialect::Sqlite => {
                let url = if url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                };
                AnyPoolOptions::new()
                    // One writer at a time is SQLite's model; one connection makes
                    // every transaction serial and never SQLITE_BUSY.
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL + FULL: a committed transaction survives kill -9
                            // and power loss.
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
        };
        let db = Self {
            pool,
            dialect,
            url: url.into(),
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        let migrator = match self.dialect {
            Dialect::Postgres => &POSTGRES,
            Dialect::Sqlite => &SQLITE,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// The pool, for single statements.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a transaction; safe to cancel at any point.
    ///
    /// sqlx 0.8's `begin()` is not: cancelled while its BEGIN is in flight
    /// (a client hanging up cancels its request's handler wherever it
    /// waits), it returns the PostgreSQL connection to the pool inside a
    /// transaction nothing will end (sqlx issues 4385/4393). The next
    /// borrower's plain statements then run in it, uncommitted and
    /// invisible to every other connection — a device created that way
    /// answered `401 unknown token` — and its row locks stay held. So the
    /// BEGIN runs as a task of its own that a cancelled caller cannot cut
    /// short; a transaction nobody waits for any more is dropped there,
    /// which rolls it back before the connection is pooled again.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let pool = self.pool.clone();
        tokio::spawn(async move { pool.begin().await })
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("starting a transaction failed: {e}")))?
    }

    /// A PostgreSQL LISTEN connection on `channel`; `None` on SQLite (one
    /// process: in-process signals suffice).
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<Option<sqlx::postgres::PgListener>, sqlx::Error> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        let mut l = sqlx::postgres::PgListener::connect(&self.url).await?;
        l.listen(channel).await?;
        Ok(Some(l))
    }

    /// Sends a NOTIFY on `channel` (PostgreSQL; nothing on SQLite).
    pub async fn notify(&self, channel: &str) -> Result<(), sqlx::Error> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(channel)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
