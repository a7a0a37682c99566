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

/// The replies of an integration's thread: a thread is due while its run's
/// state is not the one last reported; one replica takes it (compare and
/// set on the lease); recording the reply frees it and keeps the status
/// message's id; a later state makes it due again.
pub(crate) async fn integration_threads_report_each_state_once(store: &dyn Store) {
    let t = store
        .create_team(&RunId::generate().0, "threads")
        .await
        .unwrap();
    let integration = record(t.id, "slack");
    store.create_integration(integration.clone()).await.unwrap();
    let run = crate::suite::conformance::new_run(store, t.id, None).await;
    let thread = IntegrationThread {
        run_id: run.id.0.clone(),
        integration_id: integration.id.clone(),
        team_id: t.id,
        thread_key: "C1:1.0".into(),
        reply_to: r#"{"kind":"slack","channel":"C1","thread_ts":"1.0"}"#.into(),
        status_ref: None,
        reported: None,
        lease_until: 0,
        created_at: Timestamp::now().unix_millis(),
    };
    store.add_integration_thread(&thread).await.unwrap();
    assert_eq!(
        store.thread_run(&integration.id, "C1:1.0").await.unwrap(),
        Some(thread.clone())
    );
    assert_eq!(
        store.thread_run(&integration.id, "C1:2.0").await.unwrap(),
        None
    );

    let now = Timestamp::now().unix_millis();
    let mine = |due: Vec<(IntegrationThread, String)>| {
        due.into_iter()
            .filter(|(t, _)| t.run_id == run.id.0)
            .collect::<Vec<_>>()
    };
    let due = mine(
        store
            .due_integration_threads(now, false, 100)
            .await
            .unwrap(),
    );
    assert_eq!(due, vec![(thread.clone(), "QUEUED".to_owned())]);
    // One replica takes it; a second, with the same view, does not.
    assert!(
        store
            .take_integration_thread(&run.id.0, 0, now + 30_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_integration_thread(&run.id.0, 0, now + 30_000)
            .await
            .unwrap()
    );
    assert!(
        mine(
            store
                .due_integration_threads(now, false, 100)
                .await
                .unwrap()
        )
        .is_empty(),
        "held"
    );
    store
        .record_integration_reply(&run.id.0, "QUEUED", Some("1.5"))
        .await
        .unwrap();
    assert!(
        mine(
            store
                .due_integration_threads(now, false, 100)
                .await
                .unwrap()
        )
        .is_empty(),
        "reported"
    );
    // The run moves on: due again, with the status message's id kept.
    store
        .cancel_run(t.id, &run.id, "stop", Timestamp::now().unix_millis())
        .await
        .unwrap();
    let due = mine(
        store
            .due_integration_threads(now, false, 100)
            .await
            .unwrap(),
    );
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].0.status_ref.as_deref(), Some("1.5"));
    assert_eq!(due[0].0.reported.as_deref(), Some("QUEUED"));
    assert_eq!(due[0].1, "CANCELLED");
    store
        .record_integration_reply(&run.id.0, &due[0].1, None)
        .await
        .unwrap();
    let kept = store
        .thread_run(&integration.id, "C1:1.0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.status_ref.as_deref(), Some("1.5"), "None keeps the id");
    // Deleting the integration deletes its threads.
    store
        .delete_integration(t.id, &integration.id)
        .await
        .unwrap();
    assert_eq!(
        store.thread_run(&integration.id, "C1:1.0").await.unwrap(),
        None
    );
}
