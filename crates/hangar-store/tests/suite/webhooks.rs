//! [`WebhookStore`] conformance (a behaviour of [`crate::suite::behaviours`]):
//! subscriptions start at the team's latest lifecycle event, the cursor
//! moves once (fenced for several replicas), a delivery is taken by one
//! caller per attempt, the log records attempts and redeliveries, and a
//! ping goes through the same outbox.

use hangar_protocol::{AgentConfig, RunExecutionLocation, RunId, RunSourceType, Timestamp};
use hangar_store::*;

fn hook(team_id: i64) -> WebhookRecord {
    WebhookRecord {
        id: RunId::generate().0,
        team_id,
        url: "https://example.com/hook".into(),
        event_types: "[]".into(),
        secret_nonce: vec![1; 12],
        secret_ciphertext: vec![2; 40],
        cursor: 999,
        created_by: None,
        created_at: Timestamp::now().unix_millis(),
    }
}

fn delivery(seq: i64, at: i64) -> NewWebhookDelivery {
    NewWebhookDelivery {
        id: RunId::generate().0,
        event_type: "run_queued".into(),
        sequence: seq,
        payload: format!(r#"{{"sequence":{seq}}}"#),
        created_at: at,
        retry_until: at + 86_400_000,
    }
}

pub(crate) async fn webhook_outbox_is_fenced_and_logged(store: &dyn Store) {
    let t = store
        .create_team(&RunId::generate().0, "hooks")
        .await
        .unwrap();
    let other = store
        .create_team(&RunId::generate().0, "hooks-other")
        .await
        .unwrap();
    // One lifecycle event before the subscription: it is not sent.
    store
        .create_run(NewRun {
            id: RunId::generate(),
            team_id: t.id,
            creator_user_id: None,
            title: "t".into(),
            prompt: "p".into(),
            source: RunSourceType::Api,
            execution_location: RunExecutionLocation::Remote,
            config: AgentConfig::default(),
            created_at: Timestamp::now().unix_millis(),
        })
        .await
        .unwrap();
    let latest = store
        .lifecycle_events(
            t.id,
            &LifecycleQuery {
                run_ids: vec![],
                since: 0,
                limit: 100,
            },
        )
        .await
        .unwrap()
        .last()
        .unwrap()
        .sequence;
    let w = store.create_webhook(hook(t.id)).await.unwrap();
    assert_eq!(w.cursor, latest, "starts at the team's latest event");
    assert_eq!(store.list_webhooks(t.id).await.unwrap(), vec![w.clone()]);
    assert!(store.list_webhooks(other.id).await.unwrap().is_empty());
    assert!(matches!(
        store.webhook(other.id, &w.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .all_webhooks()
            .await
            .unwrap()
            .iter()
            .any(|x| x.id == w.id)
    );

    let (a, b) = (delivery(latest + 1, 1_000), delivery(latest + 2, 1_000));
    assert!(
        store
            .enqueue_webhook_deliveries(&w.id, latest, latest + 2, &[a.clone(), b.clone()])
            .await
            .unwrap()
    );
    // A second replica with the old cursor stores nothing.
    assert!(
        !store
            .enqueue_webhook_deliveries(&w.id, latest, latest + 2, &[delivery(latest + 1, 1_000)])
            .await
            .unwrap()
    );
    assert_eq!(store.webhook(t.id, &w.id).await.unwrap().cursor, latest + 2);

    let due = store.due_webhook_deliveries(1_000, 10).await.unwrap();
    let mine: Vec<_> = due.iter().filter(|d| d.webhook_id == w.id).collect();
    assert_eq!(mine.len(), 2);
    assert!(
        store
            .due_webhook_deliveries(999, 10)
            .await
            .unwrap()
            .iter()
            .all(|d| d.webhook_id != w.id)
    );
    // One taker per attempt.
    assert!(
        store
            .take_webhook_delivery(&a.id, 1_000, 61_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_webhook_delivery(&a.id, 1_000, 61_000)
            .await
            .unwrap()
    );
    store
        .record_webhook_attempt(
            &a.id,
            &WebhookAttempt {
                state: "pending".into(),
                status: Some(503),
                error: Some("HTTP 503".into()),
                next_attempt_at: 2_000,
                at: 1_001,
            },
        )
        .await
        .unwrap();
    store
        .record_webhook_attempt(
            &a.id,
            &WebhookAttempt {
                state: "delivered".into(),
                status: Some(200),
                error: None,
                next_attempt_at: 2_000,
                at: 2_001,
            },
        )
        .await
        .unwrap();
    let log = store
        .list_webhook_deliveries(t.id, &w.id, 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 2);
    let first = log.iter().find(|d| d.id == a.id).unwrap();
    assert_eq!(
        (first.state.as_str(), first.attempts, first.last_status),
        ("delivered", 2, Some(200))
    );
    assert!(matches!(
        store.list_webhook_deliveries(other.id, &w.id, 10).await,
        Err(StoreError::NotFound)
    ));
    // Redelivery makes it due again.
    let again = store
        .redeliver_webhook_delivery(t.id, &w.id, &a.id, 5_000, 90_000)
        .await
        .unwrap();
    assert_eq!(
        (again.state.as_str(), again.next_attempt_at),
        ("pending", 5_000)
    );
    assert!(matches!(
        store
            .redeliver_webhook_delivery(other.id, &w.id, &a.id, 5_000, 90_000)
            .await,
        Err(StoreError::NotFound)
    ));
    // A ping goes through the same outbox and log, below every lifecycle
    // event's sequence; another team's subscription is not found.
    let ping = |at: i64| NewWebhookDelivery {
        event_type: "ping".into(),
        ..delivery(0, at)
    };
    let p1 = store
        .enqueue_webhook_ping(t.id, &w.id, &ping(3_000))
        .await
        .unwrap();
    let p2 = store
        .enqueue_webhook_ping(t.id, &w.id, &ping(4_000))
        .await
        .unwrap();
    assert_eq!(
        (
            p1.event_type.as_str(),
            p1.sequence,
            p1.state.as_str(),
            p1.attempts
        ),
        ("ping", -1, "pending", 0)
    );
    assert_eq!((p2.sequence, p2.next_attempt_at), (-2, 4_000));
    assert!(matches!(
        store
            .enqueue_webhook_ping(other.id, &w.id, &ping(3_000))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .due_webhook_deliveries(4_000, 100)
            .await
            .unwrap()
            .iter()
            .any(|d| d.id == p2.id)
    );
    // The log is newest first: the pings were enqueued last.
    let log = store
        .list_webhook_deliveries(t.id, &w.id, 10)
        .await
        .unwrap();
    let order: Vec<&str> = log.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(&order[..2], &[p2.id.as_str(), p1.id.as_str()]);
    assert_eq!(log.len(), 4);
    store.delete_webhook(t.id, &w.id).await.unwrap();
    assert!(
        store
            .due_webhook_deliveries(i64::MAX, 100)
            .await
            .unwrap()
            .iter()
            .all(|d| d.webhook_id != w.id)
    );
    assert!(matches!(
        store.delete_webhook(t.id, &w.id).await,
        Err(StoreError::NotFound)
    ));
}
