//! The PostgreSQL and SQLite migrations describe the same tables and columns.

use std::collections::BTreeSet;

use sqlx::Row;

use driftless_tests::TestDb;

#[tokio::test]
async fn postgres_and_sqlite_schemas_match() {
    let [pg, lite] = TestDb::both().await;
    let pg_cols: BTreeSet<(String, String)> = sqlx::query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pg.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
    .collect();
    let lite_cols: BTreeSet<(String, String)> = sqlx::query(
        "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'",
    )
    .fetch_all(lite.db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
    .collect();
    assert!(
        pg_cols.len() > 60,
        "expected the full schema, got {} columns",
        pg_cols.len()
    );
    assert_eq!(pg_cols, lite_cols);
}
