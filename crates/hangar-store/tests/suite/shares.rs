//! [`ShareStore`] conformance (a behaviour of [`crate::suite::behaviours`]): team scoping, one grant per team/user with the role replaced,
//! public links found by token hash only, deletion; plus, on PostgreSQL, the
//! signal that tells other replicas a run's grants changed.

use crate::suite::postgres::TestSchema;
use hangar_protocol::{AgentConfig, RunExecutionLocation, RunId, RunSourceType, Timestamp};
use hangar_store::*;
use std::time::Duration;

async fn team(store: &dyn Store, name: &str) -> TeamRecord {
    store.create_team(&RunId::generate().0, name).await.unwrap()
}

async fn user(store: &dyn Store, team_id: i64, email: &str) -> UserRecord {
    store
        .create_user(NewUser {
            uid: RunId::generate().0,
            team_id,
            email: Some(email.into()),
            display_name: email.into(),
            role: "member".into(),
        })
        .await
        .unwrap()
}

fn new_run(team_id: i64) -> NewRun {
    NewRun {
        id: RunId::generate(),
        team_id,
        creator_user_id: None,
        title: "shared".into(),
        prompt: "p".into(),
        source: RunSourceType::Api,
        execution_location: RunExecutionLocation::Remote,
        config: AgentConfig::default(),
        created_at: Timestamp::now().unix_millis(),
    }
}

fn share(team_id: i64, run: &RunId, grantee: Grantee, role: &str, at: i64) -> NewShare {
    NewShare {
        id: RunId::generate().0,
        team_id,
        run_id: run.clone(),
        grantee,
        role: role.into(),
        created_by: None,
        created_at: at,
    }
}

pub(crate) async fn grants_are_team_scoped_and_links_found_by_hash(store: &dyn Store) {
    let t = team(store, "shares").await;
    let other = team(store, "shares-other").await;
    let ana = user(store, t.id, &format!("ana-{}@example.com", t.id)).await;
    let outsider = user(store, other.id, &format!("out-{}@example.com", other.id)).await;
    let run = store.create_run(new_run(t.id)).await.unwrap();
    let second = store.create_run(new_run(t.id)).await.unwrap();

    // A team grant; granting the team again replaces the role, same id.
    let team_view = store
        .create_share(share(t.id, &run.id, Grantee::Team, "view", 1))
        .await
        .unwrap();
    assert_eq!(team_view.grantee, Grantee::Team);
    assert_eq!(team_view.role, "view");
    let team_edit = store
        .create_share(share(t.id, &run.id, Grantee::Team, "edit", 2))
        .await
        .unwrap();
    assert_eq!(team_edit.id, team_view.id, "one team grant per run");
    assert_eq!(team_edit.role, "edit");

    // A user grant carries the user's email on read.
    let user_grant = store
        .create_share(share(
            t.id,
            &run.id,
            Grantee::User {
                user_id: ana.id,
                email: None,
            },
            "view",
            3,
        ))
        .await
        .unwrap();
    assert_eq!(
        user_grant.grantee,
        Grantee::User {
            user_id: ana.id,
            email: ana.email.clone()
        }
    );

    // Two public links are two grants, found by their token hash.
    let hash_1 = vec![1u8; 32];
    let hash_2 = vec![2u8; 32];
    let link_1 = store
        .create_share(share(
            t.id,
            &run.id,
            Grantee::Public {
                token_hash: hash_1.clone(),
            },
            "view",
            4,
        ))
        .await
        .unwrap();
    let link_2 = store
        .create_share(share(
            t.id,
            &run.id,
            Grantee::Public {
                token_hash: hash_2.clone(),
            },
            "view",
            5,
        ))
        .await
        .unwrap();
    assert_ne!(link_1.id, link_2.id);
    let found = store.share_by_token_hash(&hash_1).await.unwrap().unwrap();
    assert_eq!(found.id, link_1.id);
    assert_eq!(found.run_id, run.id);
    assert_eq!(found.team_id, t.id);
    assert!(
        store
            .share_by_token_hash(&[9u8; 32])
            .await
            .unwrap()
            .is_none()
    );

    // Listing: oldest first, per run, per team.
    let ids: Vec<String> = store
        .list_shares(t.id, &run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        ids,
        vec![
            team_view.id.clone(),
            user_grant.id.clone(),
            link_1.id.clone(),
            link_2.id.clone()
        ]
    );
    assert!(
        store
            .list_shares(t.id, &second.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_shares(other.id, &run.id)
            .await
            .unwrap()
            .is_empty(),
        "another team sees no grants of the run"
    );

    // Another team cannot grant on the run, nor grant to a user of another team.
    assert!(matches!(
        store
            .create_share(share(other.id, &run.id, Grantee::Team, "view", 6))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .create_share(share(
                t.id,
                &run.id,
                Grantee::User {
                    user_id: outsider.id,
                    email: None
                },
                "view",
                6
            ))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .create_share(share(t.id, &RunId::generate(), Grantee::Team, "view", 6))
            .await,
        Err(StoreError::NotFound)
    ));

    // Deleting: only the team's grant of that run, once.
    assert!(matches!(
        store.delete_share(other.id, &run.id, &link_1.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_share(t.id, &second.id, &link_1.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_share(t.id, &run.id, &link_1.id).await.unwrap();
    assert!(matches!(
        store.delete_share(t.id, &run.id, &link_1.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store.share_by_token_hash(&hash_1).await.unwrap().is_none(),
        "a revoked link no longer resolves"
    );
    assert!(store.share_by_token_hash(&hash_2).await.unwrap().is_some());
    store
        .delete_share(t.id, &run.id, &team_view.id)
        .await
        .unwrap();
    let left: Vec<String> = store
        .list_shares(t.id, &run.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, vec![user_grant.id, link_2.id]);
}

/// A grant revoked through replica B reaches replica A as a signal naming the run.
#[tokio::test]
async fn share_changes_signal_other_replicas() {
    let db = TestSchema::new();
    let a = db.store().await;
    let b = db.store().await;
    let t = b.create_team(&RunId::generate().0, "sig").await.unwrap();
    let run = b.create_run(new_run(t.id)).await.unwrap();
    let mut on_a = Notifier::listen(&a).await.unwrap();
    let grant = b
        .create_share(share(t.id, &run.id, Grantee::Team, "view", 1))
        .await
        .unwrap();
    b.delete_share(t.id, &run.id, &grant.id).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let signal = tokio::time::timeout(Duration::from_secs(10), on_a.recv())
            .await
            .expect("a signal within 10 s")
            .unwrap();
        // The run's creation also signals dispatch; only grant signals count here.
        if matches!(signal, Signal::SharesChanged { .. }) {
            seen.push(signal);
        }
    }
    for signal in seen {
        assert_eq!(
            signal,
            Signal::SharesChanged {
                run_id: run.id.clone(),
                local: false
            }
        );
    }
    drop(on_a);
    Store::close(&b).await;
    db.cleanup(&a).await;
}
