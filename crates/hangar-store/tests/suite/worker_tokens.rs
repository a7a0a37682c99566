//! [`WorkerTokenStore`] conformance (scenario S8, a behaviour of
//! [`crate::suite::behaviours`]):
//! a token is found by the hash of its secret only, keeps its binding,
//! records its last use, is listed per team, and its revocation is
//! immediate, idempotent and team-scoped.

use hangar_protocol::{RunId, Timestamp};
use hangar_store::*;

fn token(team_id: i64, binding: WorkerBinding, hash: Vec<u8>, at: i64) -> NewWorkerToken {
    NewWorkerToken {
        id: RunId::generate().0,
        team_id,
        name: "build boxes".into(),
        prefix: "hw_abcd1234".into(),
        hash,
        binding,
        created_by: None,
        created_at: at,
        expires_at: None,
    }
}

fn fresh_hash() -> Vec<u8> {
    // Distinct per call, so the suite can run twice on one database.
    let id = RunId::generate().0;
    let mut hash = id.into_bytes();
    hash.resize(32, 0);
    hash
}

pub(crate) async fn s8_worker_tokens_are_created_found_and_expired(store: &dyn Store) {
    let t = store
        .create_team(&RunId::generate().0, "worker-tokens")
        .await
        .unwrap();
    let other = store
        .create_team(&RunId::generate().0, "worker-tokens-other")
        .await
        .unwrap();
    let now = Timestamp::now().unix_millis();

    // Bound to one worker id.
    let exact_hash = fresh_hash();
    let exact = store
        .create_worker_token(token(
            t.id,
            WorkerBinding::Worker("gpu-box-1".into()),
            exact_hash.clone(),
            now,
        ))
        .await
        .unwrap();
    assert_eq!(exact.binding, WorkerBinding::Worker("gpu-box-1".into()));
    assert!(exact.is_active(now));
    assert_eq!(exact.last_used_at, None);
    assert!(exact.binding.allows(&"gpu-box-1".into()));
    assert!(!exact.binding.allows(&"gpu-box-10".into()));

    // Bound to a pool, expiring.
    let pool_hash = fresh_hash();
    let mut new_pool = token(
        t.id,
        WorkerBinding::Pool("ci-".into()),
        pool_hash.clone(),
        now + 1,
    );
    new_pool.expires_at = Some(now + 60_000);
    let pool = store.create_worker_token(new_pool).await.unwrap();
    assert!(pool.binding.allows(&"ci-7".into()));
    assert!(!pool.binding.allows(&"gpu-box-1".into()));
    assert!(pool.is_active(now));
    assert!(!pool.is_active(now + 60_000), "expired at its expiry");

    // Lookup by hash only; an unknown hash is none.
    let found = store
        .worker_token_by_hash(&exact_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, exact);
    assert!(
        store
            .worker_token_by_hash(&fresh_hash())
            .await
            .unwrap()
            .is_none()
    );

    // Listing: the team's tokens, oldest first; none of them in the other team.
    let listed = store.list_worker_tokens(t.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec![exact.id.as_str(), pool.id.as_str()]
    );
    assert!(store.list_worker_tokens(other.id).await.unwrap().is_empty());

    // A use is recorded.
    store.worker_token_used(&exact.id, now + 5).await.unwrap();
    let used = store
        .worker_token_by_hash(&exact_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.last_used_at, Some(now + 5));

    // Revocation: another team's is NotFound and changes nothing; the
    // team's own is immediate and idempotent (the first time is kept).
    assert!(matches!(
        store.revoke_worker_token(other.id, &exact.id, now).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.revoke_worker_token(t.id, "no-such-token", now).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .worker_token_by_hash(&exact_hash)
            .await
            .unwrap()
            .unwrap()
            .is_active(now)
    );
    store
        .revoke_worker_token(t.id, &exact.id, now + 10)
        .await
        .unwrap();
    store
        .revoke_worker_token(t.id, &exact.id, now + 20)
        .await
        .unwrap();
    let revoked = store
        .worker_token_by_hash(&exact_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(now + 10));
    assert!(!revoked.is_active(now + 11));
    // The pool token is untouched.
    assert!(
        store
            .worker_token_by_hash(&pool_hash)
            .await
            .unwrap()
            .unwrap()
            .is_active(now)
    );
}
