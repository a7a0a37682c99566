//! [`IntegrationStore`] conformance (a behaviour of [`crate::suite::behaviours`]):
//! team scoping, unique names, the sealed secret kept as given, and webhook
//! deliveries claimed once (scenario C4: a replay is refused however many
//! keys it shares with the first delivery, and a released one may come again).

use hangar_protocol::{RunId, Timestamp};
use hangar_store::*;

fn record(team_id: i64, name: &str) -> IntegrationRecord {
    let now = Timestamp::now().unix_millis();
    IntegrationRecord {
        id: RunId::generate().0,
        team_id,
        kind: "webhook".into(),
        name: name.into(),
        settings: r#"{"prompt_template":"{{title}}"}"#.into(),
        secret_nonce: vec![1; 12],
        secret_ciphertext: vec![2; 40],
        created_by: None,
        created_at: now,
        updated_at: now,
    }
}

pub(crate) async fn integrations_are_team_scoped_and_named_once(store: &dyn Store) {
    let t = store
        .create_team(&RunId::generate().0, "int")
        .await
        .unwrap();
    let other = store
        .create_team(&RunId::generate().0, "int-other")
        .await
        .unwrap();
    let a = record(t.id, "alerts");
    store.create_integration(a.clone()).await.unwrap();
    assert!(matches!(
        store.create_integration(record(t.id, "alerts")).await,
        Err(StoreError::Conflict(_))
    ));
    // Another team may use the same name, and sees nothing of the first.
    store
        .create_integration(record(other.id, "alerts"))
        .await
        .unwrap();
    assert_eq!(store.integration(t.id, &a.id).await.unwrap(), a);
    assert_eq!(store.integration(t.id, "alerts").await.unwrap(), a);
    assert_eq!(store.integration_by_id(&a.id).await.unwrap(), a);
    assert!(matches!(
        store.integration(other.id, &a.id).await,
        Err(StoreError::NotFound)
    ));
    let mine = store.list_integrations(t.id).await.unwrap();
    assert_eq!(mine, vec![a.clone()]);

    let mut changed = a.clone();
    changed.name = "pages".into();
    changed.settings = "{}".into();
    changed.secret_ciphertext = vec![3; 40];
    changed.updated_at += 1;
    store.update_integration(changed.clone()).await.unwrap();
    assert_eq!(store.integration(t.id, &a.id).await.unwrap(), changed);
    let mut foreign = changed.clone();
    foreign.team_id = other.id;
    assert!(matches!(
        store.update_integration(foreign).await,
        Err(StoreError::NotFound)
    ));
    let b = record(t.id, "second");
    store.create_integration(b.clone()).await.unwrap();
    let mut clash = b.clone();
    clash.name = "pages".into();
    assert!(matches!(
        store.update_integration(clash).await,
        Err(StoreError::Conflict(_))
    ));

    assert!(matches!(
        store.delete_integration(other.id, &a.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_integration(t.id, &a.id).await.unwrap();
    assert!(matches!(
        store.integration_by_id(&a.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_integration(t.id, &a.id).await,
        Err(StoreError::NotFound)
    ));
}

pub(crate) async fn c4_deliveries_are_claimed_once(store: &dyn Store) {
    let t = store
        .create_team(&RunId::generate().0, "dlv")
        .await
        .unwrap();
    let i = record(t.id, "hook");
    store.create_integration(i.clone()).await.unwrap();
    let keys = |a: &str, b: &str| vec![a.to_owned(), b.to_owned()];
    assert!(
        store
            .claim_delivery(&i.id, &keys("id:1", "sig:a"), 1_000)
            .await
            .unwrap()
    );
    // The same delivery, and one sharing either key, is a replay; the
    // refused claim records nothing.
    assert!(
        !store
            .claim_delivery(&i.id, &keys("id:1", "sig:a"), 1_001)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_delivery(&i.id, &keys("id:2", "sig:a"), 1_001)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_delivery(&i.id, &keys("id:1", "sig:b"), 1_001)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_delivery(&i.id, &keys("id:2", "sig:b"), 1_002)
            .await
            .unwrap()
    );
    // A released delivery may come again.
    store
        .release_delivery(&i.id, &keys("id:2", "sig:b"))
        .await
        .unwrap();
    assert!(
        store
            .claim_delivery(&i.id, &keys("id:2", "sig:b"), 1_003)
            .await
            .unwrap()
    );
    // Pruning forgets only deliveries older than the cut.
    assert_eq!(store.prune_deliveries(1_001).await.unwrap(), 2);
    assert!(
        !store
            .claim_delivery(&i.id, &keys("id:2", "x"), 1_004)
            .await
            .unwrap()
    );
    // Deleting the integration deletes its log.
    store.delete_integration(t.id, &i.id).await.unwrap();
    store.create_integration(i.clone()).await.unwrap();
    assert!(
        store
            .claim_delivery(&i.id, &keys("id:2", "sig:b"), 1_005)
            .await
            .unwrap()
    );
}
