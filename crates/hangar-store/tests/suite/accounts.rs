//! Accounts and web sessions, part of the conformance suite: unique
//! case-insensitive emails, the last-admin rule, soft deletion, and sessions
//! that end when a user is disabled, deleted or changes password.

use hangar_protocol::{RunId, Timestamp};
use hangar_store::*;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", RunId::generate().0)
}

async fn user(store: &dyn Store, team_id: i64, email: &str, role: &str) -> UserRecord {
    store
        .create_user(NewUser {
            uid: RunId::generate().0,
            team_id,
            email: Some(email.to_owned()),
            display_name: email.split('@').next().unwrap().to_owned(),
            role: role.to_owned(),
        })
        .await
        .unwrap()
}

fn session(user: &UserRecord, token: u8, expires_at: i64) -> WebSessionRecord {
    WebSessionRecord {
        token_hash: vec![token; 32],
        team_id: user.team_id,
        user_id: user.id,
        created_at: Timestamp::now().unix_millis(),
        expires_at,
    }
}

pub(crate) async fn emails_are_unique_and_case_insensitive(store: &dyn Store) {
    let a = store.create_team(&unique("t"), "acc-a").await.unwrap();
    let b = store.create_team(&unique("t"), "acc-b").await.unwrap();
    let local = unique("ada");
    let ada = user(store, a.id, &format!("{local}@Example.com"), "admin").await;
    assert!(!ada.disabled);

    // Same address, other case, other team: still taken (a login names no team).
    let dup = store
        .create_user(NewUser {
            uid: RunId::generate().0,
            team_id: b.id,
            email: Some(format!("{}@example.COM", local.to_uppercase())),
            display_name: "x".into(),
            role: "member".into(),
        })
        .await;
    assert!(
        matches!(dup, Err(StoreError::Conflict(ref m)) if m.contains("already used")),
        "{dup:?}"
    );

    let found = store
        .user_by_email(a.id, &format!("{}@EXAMPLE.com", local.to_uppercase()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, ada.id);
    // Scoped to the team.
    assert!(
        store
            .user_by_email(b.id, &format!("{local}@example.com"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.user_by_uid(a.id, &ada.uid).await.unwrap(), ada);
    assert!(matches!(
        store.user_by_uid(b.id, &ada.uid).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .update_user(b.id, &ada.uid, UserUpdate::default())
            .await,
        Err(StoreError::NotFound)
    ));

    let bob = user(store, a.id, &unique("bob").add_domain(), "member").await;
    let listed = store.list_users(a.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![ada.id, bob.id]
    );
    assert!(store.list_users(b.id).await.unwrap().is_empty());

    // Changing an email to a taken one is a conflict; to a free one works.
    let clash = store
        .update_user(
            a.id,
            &bob.uid,
            UserUpdate {
                email: Some(format!("{local}@example.com")),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    let renamed = store
        .update_user(
            a.id,
            &bob.uid,
            UserUpdate {
                display_name: Some("Bob B.".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.display_name, "Bob B.");
    assert_eq!(renamed.email, bob.email);
    assert_eq!(store.user(bob.id).await.unwrap(), renamed);
}

trait AddDomain {
    fn add_domain(self) -> String;
}

impl AddDomain for String {
    fn add_domain(self) -> String {
        format!("{self}@example.com")
    }
}

pub(crate) async fn passwords_and_sessions(store: &dyn Store) {
    let t = store
        .create_team(&unique("t"), "acc-sessions")
        .await
        .unwrap();
    let email = unique("carol").add_domain();
    let carol = user(store, t.id, &email, "admin").await;
    let other_admin = user(store, t.id, &unique("dan").add_domain(), "admin").await;
    let creds = store.credentials_by_email(&email).await.unwrap().unwrap();
    assert_eq!(creds.user, carol);
    assert_eq!(creds.password_hash, None);
    assert!(
        store
            .credentials_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );

    store
        .set_password_hash(t.id, &carol.uid, Some("$argon2id$v=19$fake"))
        .await
        .unwrap();
    let creds = store
        .credentials_by_email(&email.to_uppercase())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.password_hash.as_deref(), Some("$argon2id$v=19$fake"));
    // Debug output never shows the hash.
    assert!(!format!("{creds:?}").contains("argon2id"));

    let now = Timestamp::now().unix_millis();
    let tag = (now % 200) as u8 + 20;
    store
        .create_web_session(session(&carol, tag, now + 60_000))
        .await
        .unwrap();
    store
        .create_web_session(session(&carol, tag + 1, now - 1))
        .await
        .unwrap();
    let live = store.web_session(&[tag; 32], now).await.unwrap().unwrap();
    assert_eq!((live.user_id, live.team_id), (carol.id, t.id));
    // Expired sessions are dead, and purged.
    assert!(
        store
            .web_session(&[tag + 1; 32], now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.purge_expired_web_sessions(now).await.unwrap() >= 1);
    assert!(
        store
            .web_session(&[tag; 32], now + 60_000)
            .await
            .unwrap()
            .is_none()
    );

    // Logout ends one session.
    store.delete_web_session(&[tag; 32]).await.unwrap();
    assert!(store.web_session(&[tag; 32], now).await.unwrap().is_none());
    store.delete_web_session(&[tag; 32]).await.unwrap();

    // A password change ends every session of the user.
    store
        .create_web_session(session(&carol, tag, now + 60_000))
        .await
        .unwrap();
    store
        .create_web_session(session(&other_admin, tag + 2, now + 60_000))
        .await
        .unwrap();
    store
        .set_password_hash(t.id, &carol.uid, Some("$argon2id$v=19$other"))
        .await
        .unwrap();
    assert!(store.web_session(&[tag; 32], now).await.unwrap().is_none());
    assert!(
        store
            .web_session(&[tag + 2; 32], now)
            .await
            .unwrap()
            .is_some()
    );

    // Disabling ends sessions and keeps new ones dead until re-enabled.
    store
        .create_web_session(session(&carol, tag, now + 60_000))
        .await
        .unwrap();
    let disabled = store
        .update_user(
            t.id,
            &carol.uid,
            UserUpdate {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(disabled.disabled);
    assert!(store.web_session(&[tag; 32], now).await.unwrap().is_none());
    store
        .create_web_session(session(&carol, tag, now + 60_000))
        .await
        .unwrap();
    assert!(store.web_session(&[tag; 32], now).await.unwrap().is_none());
    store
        .update_user(
            t.id,
            &carol.uid,
            UserUpdate {
                disabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(store.web_session(&[tag; 32], now).await.unwrap().is_some());
    assert_eq!(store.delete_user_web_sessions(carol.id).await.unwrap(), 1);
    assert_eq!(
        store
            .delete_user_web_sessions(other_admin.id)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        store.set_password_hash(t.id, "no-such-user", None).await,
        Err(StoreError::NotFound)
    ));
}

pub(crate) async fn last_admin_is_kept(store: &dyn Store) {
    let t = store.create_team(&unique("t"), "acc-admins").await.unwrap();
    let admin = user(store, t.id, &unique("eve").add_domain(), "admin").await;
    let member = user(store, t.id, &unique("fay").add_domain(), "member").await;
    for update in [
        UserUpdate {
            role: Some("member".into()),
            ..Default::default()
        },
        UserUpdate {
            disabled: Some(true),
            ..Default::default()
        },
    ] {
        let refused = store.update_user(t.id, &admin.uid, update).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(ref m)) if m.contains("last active admin")),
            "{refused:?}"
        );
    }
    let refused = store.delete_user(t.id, &admin.uid, 1).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(store.user(admin.id).await.unwrap(), admin);

    // With a second admin, the first may step down.
    store
        .update_user(
            t.id,
            &member.uid,
            UserUpdate {
                role: Some("admin".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let stepped = store
        .update_user(
            t.id,
            &admin.uid,
            UserUpdate {
                role: Some("member".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(stepped.role, "member");
    // Members may be disabled freely.
    store
        .update_user(
            t.id,
            &stepped.uid,
            UserUpdate {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

pub(crate) async fn deletion_is_soft_and_complete(store: &dyn Store) {
    let t = store.create_team(&unique("t"), "acc-delete").await.unwrap();
    let _admin = user(store, t.id, &unique("gus").add_domain(), "admin").await;
    let email = unique("hal").add_domain();
    let hal = user(store, t.id, &email, "admin").await;
    store
        .set_password_hash(t.id, &hal.uid, Some("$argon2id$v=19$hal"))
        .await
        .unwrap();
    let now = Timestamp::now().unix_millis();
    let key = store
        .create_api_key(NewApiKey {
            id: RunId::generate().0,
            team_id: t.id,
            user_id: Some(hal.id),
            name: "hal's".into(),
            prefix: "hk_hal".into(),
            hash: RunId::generate().0.into_bytes(),
            created_at: now,
            expires_at: None,
        })
        .await
        .unwrap();
    store
        .create_web_session(session(&hal, 250, now + 60_000))
        .await
        .unwrap();

    let other = store
        .create_team(&unique("t"), "acc-delete-b")
        .await
        .unwrap();
    assert!(matches!(
        store.delete_user(other.id, &hal.uid, now).await,
        Err(StoreError::NotFound)
    ));
    store.delete_user(t.id, &hal.uid, now).await.unwrap();

    assert!(matches!(
        store.user_by_uid(t.id, &hal.uid).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .list_users(t.id)
            .await
            .unwrap()
            .iter()
            .all(|u| u.id != hal.id)
    );
    assert!(store.credentials_by_email(&email).await.unwrap().is_none());
    assert!(store.web_session(&[250; 32], now).await.unwrap().is_none());
    let keys = store.list_api_keys(t.id).await.unwrap();
    let key = keys.iter().find(|k| k.id == key.id).unwrap();
    assert!(!key.is_active(now + 1));
    // Runs still name the user, who can no longer sign in.
    let gone = store.user(hal.id).await.unwrap();
    assert!(gone.disabled);
    assert_eq!(gone.email, None);
    // The address is free again.
    user(store, t.id, &email, "member").await;
    assert!(matches!(
        store.delete_user(t.id, &hal.uid, now).await,
        Err(StoreError::NotFound)
    ));
}
