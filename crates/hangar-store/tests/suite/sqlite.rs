//! The conformance suite on SQLite (in memory and on disk).

use crate::suite::conformance;
use hangar_store::SqliteStore;

#[tokio::test]
async fn conformance_in_memory() {
    let store = SqliteStore::in_memory().await.unwrap();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn conformance_on_disk_and_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hangar.db");
    let store = SqliteStore::open(&path).await.unwrap();
    conformance::run_all(&store).await;
    let before = hangar_store::TeamStore::team_count(&store).await.unwrap();
    hangar_store::Store::close(&store).await;
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        hangar_store::TeamStore::team_count(&reopened)
            .await
            .unwrap(),
        before
    );
}

#[tokio::test]
async fn s8_worker_tokens_are_created_found_and_expired_on_sqlite() {
    let store = SqliteStore::in_memory().await.unwrap();
    crate::suite::worker_tokens::run_all(&store).await;
}
