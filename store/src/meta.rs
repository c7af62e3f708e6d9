//! Metadata queries, one small function per intent. Functions that must be
//! atomic with others take a transaction; the rest take the pool.

pub mod accounts;
pub mod chunks;
pub mod commit;
pub mod journal;
pub mod manifest;
pub mod marks;
pub mod repair;
pub mod uploads;
pub mod versions;

/// Converts an unsigned protocol number to the BIGINT the schema stores.
pub fn to_db(v: u64) -> i64 {
    // Ids and sequence numbers come from BIGINT columns; they fit.
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Converts a BIGINT from the schema back to an unsigned protocol number.
pub fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
