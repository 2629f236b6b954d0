//! The private cluster used when nothing answers at the configured URL.

use orchestrator::db::embedded::EmbeddedPostgres;
use sqlx::Connection;

use crate::helpers::prerequisite;

#[tokio::test]
async fn a_private_cluster_starts_serves_and_stops() {
    if !prerequisite(
        EmbeddedPostgres::find_binaries().is_some(),
        "PostgreSQL's server binaries (initdb, pg_ctl)",
    ) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("orch-embedded-")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("pgdata");
    let data2 = data.clone();
    let mut pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&data2, true))
        .await
        .unwrap()
        .expect("starts");
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    conn.close().await.unwrap();
    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap();
    assert!(!data.join("postmaster.pid").exists(), "stopped cleanly");
}
