//! A request whose client hangs up is cancelled wherever its handler is
//! waiting, and the database work it started must not leak into anyone
//! else's. sqlx 0.8 returns a PostgreSQL connection to the pool inside an
//! open transaction when `begin()` is cancelled while its BEGIN is in
//! flight (sqlx issues 4385/4393); the next borrower's plain statements
//! then run inside it, uncommitted, invisible to every other connection —
//! a device created that way got `401 unknown token` on its first request.

use std::time::Duration;

use driftless_tests::TestDb;
use sqlx::Connection;

/// Cancels `db.begin()` after `yields` turns of the scheduler.
/// Whether it was cancelled.
async fn cancelled_begin(db: &driftless_store::Db, yields: u32) -> bool {
    let begin = db.begin();
    let give_up = async {
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
    };
    tokio::select! {
        biased;
        tx = begin => {
            drop(tx.unwrap());
            false
        }
        () = give_up => true,
    }
}

/// How many scheduler turns a begin takes here, to cancel it at each.
async fn turns_to_begin(db: &driftless_store::Db) -> u32 {
    let mut turns = 0;
    let begin = db.begin();
    tokio::pin!(begin);
    loop {
        tokio::select! {
            biased;
            tx = &mut begin => {
                drop(tx.unwrap());
                return turns;
            }
            () = tokio::task::yield_now() => turns += 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_begin_leaves_no_transaction_open_for_the_next_borrower() {
    let t = TestDb::postgres().await;
    let db = &t.db;
    sqlx::query("CREATE TABLE cancel_probe (n BIGINT NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut other = sqlx::PgConnection::connect(&t.url).await.unwrap();
    let mut written = 0i64;
    let mut turns = 0;
    for _ in 0..20 {
        turns = turns.max(turns_to_begin(db).await);
    }
    let mut cancelled = 0;
    for round in 0..400u32 {
        // Cut short at every point from before the connection is taken to
        // after the BEGIN came back.
        cancelled += u32::from(cancelled_begin(db, round * (turns + 2) / 400).await);
        if round % 20 == 19 {
            // Plain statements, as a handler that needs no transaction
            // makes them: each is committed once it returns.
            for _ in 0..16 {
                written += 1;
                sqlx::query("INSERT INTO cancel_probe (n) VALUES ($1)")
                    .bind(written)
                    .execute(db.pool())
                    .await
                    .unwrap();
            }
            let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM cancel_probe")
                .fetch_one(&mut other)
                .await
                .unwrap();
            assert_eq!(
                seen, written,
                "round {round}: {written} rows were written through the pool, another \
                 connection sees {seen}: a pooled connection is inside a transaction \
                 nobody will end"
            );
        }
    }
    eprintln!("a begin takes up to {turns} turns; {cancelled} of 400 were cancelled");
    // Nothing is left idle inside a transaction once the pool settles.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stuck: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&mut other)
    .await
    .unwrap();
    assert_eq!(stuck, 0, "sessions left idle in a transaction");
}
