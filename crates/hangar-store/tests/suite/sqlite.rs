//! What only SQLite can show: data on disk survives reopening the file.

use hangar_store::{SqliteStore, Store, TeamStore};

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hangar.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.create_team("t-1", "one").await.unwrap();
    store.create_team("t-2", "two").await.unwrap();
    Store::close(&store).await;
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.team_count().await.unwrap(), 2);
}
