//! The lease runs work in one place at a time across processes (here: two
//! pools on one PostgreSQL database, as two processes would have).

use driftless_store::{Db, Lease};
use driftless_tests::TestDb;

#[tokio::test]
async fn one_holder_at_a_time_and_the_next_takes_over_when_it_goes() {
    let t = TestDb::postgres().await;
    let other = Db::connect(&t.url).await.unwrap();
    let mut a = Lease::new(t.db.clone(), "test-lease");
    let mut b = Lease::new(other.clone(), "test-lease");
    let mut unrelated = Lease::new(other.clone(), "another-lease");

    assert!(a.acquire().await.unwrap().is_some(), "free: a takes it");
    assert!(a.is_held());
    assert!(b.acquire().await.unwrap().is_none(), "held by a");
    assert!(!b.is_held());
    assert!(a.acquire().await.unwrap().is_some(), "a keeps it");
    assert!(
        unrelated.acquire().await.unwrap().is_some(),
        "names are separate"
    );

    // The holder's session is where it runs its queries.
    {
        let mut conn = a.acquire().await.unwrap().unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
    }
    a.release().await;
    assert!(
        b.acquire().await.unwrap().is_some(),
        "released: b takes over"
    );
    assert!(a.acquire().await.unwrap().is_none(), "and a stands by");
    // A holder whose session dies loses the lock with it.
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.acquire().await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "b's session ended, yet a cannot take the lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn on_sqlite_the_one_process_always_holds_it() {
    let t = TestDb::sqlite().await;
    let mut a = Lease::new(t.db.clone(), "test-lease");
    assert!(a.acquire().await.unwrap().is_some());
    assert!(a.is_held());
}
