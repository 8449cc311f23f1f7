//! The events table refuses UPDATE and DELETE from any connection, as on PostgreSQL.

mod common;

use common::{noise, temporary};
use sqlx::Connection;

#[tokio::test]
async fn updates_and_deletes_of_events_are_refused_by_the_database() {
    let store = temporary().await;
    noise(&store).await;
    let url = format!("sqlite://{}", store.path().display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    for statement in ["UPDATE events SET payload = '{}'", "DELETE FROM events"] {
        let refused = sqlx::query(statement)
            .execute(&mut conn)
            .await
            .expect_err(statement);
        assert!(
            refused.to_string().contains("append-only"),
            "{statement}: {refused}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert!(count > 0, "nothing was deleted");
}
