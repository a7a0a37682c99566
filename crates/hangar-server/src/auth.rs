//! Credentials: API keys (`hk_…`, team-scoped, hashed at rest), run tokens
//! (`hr_…`, scoped to one execution of one run, dead once it ends), worker
//! tokens (`hw_…`, hashed at rest, bound to a worker id or a pool) and the
//! dashboard's session cookie (see [`crate::web::auth`]), accepted only when a
//! request carries no `Authorization` header.
//!
//! A worker token is never a [`Principal`]: [`authenticate`] refuses it
//! (403), so no REST route can accept one by mistake. Only the worker socket
//! resolves it, through [`authenticate_worker`], into a [`WorkerCredential`].

pub mod roles;

use crate::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use hangar_protocol::{
    API_KEY_PREFIX, ExecutionId, RUN_TOKEN_PREFIX, RunId, Timestamp, WORKER_TOKEN_PREFIX,
};
use hangar_store::{NewApiKey, NewWorkerToken, Store, WorkerBinding, WorkerTokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// A team API key.
    ApiKey {
        /// Team.
        team_id: i64,
        /// User the key belongs to, if personal or created by a user.
        user_id: Option<i64>,
        /// Key id.
        key_id: String,
    },
    /// An agent holding a run token.
    RunToken {
        /// Team of the run.
        team_id: i64,
        /// The run.
        run_id: RunId,
        /// The execution the token was issued for.
        execution_id: ExecutionId,
    },
    /// A user signed in to the dashboard (the `hangar_session` cookie). It
    /// acts like that user's personal API key.
    WebSession {
        /// Team of the user.
        team_id: i64,
        /// The signed-in user.
        user_id: i64,
    },
}

impl Principal {
    /// The caller's team.
    pub fn team_id(&self) -> i64 {
        match self {
            Principal::ApiKey { team_id, .. }
            | Principal::RunToken { team_id, .. }
            | Principal::WebSession { team_id, .. } => *team_id,
        }
    }

    /// Requires an API key (run tokens may only touch their own run).
    pub fn require_api_key(&self) -> ApiResult<(i64, Option<i64>)> {
        match self {
            Principal::ApiKey {
                team_id, user_id, ..
            } => Ok((*team_id, *user_id)),
            Principal::WebSession { team_id, user_id } => Ok((*team_id, Some(*user_id))),
            Principal::RunToken { .. } => Err(ApiError::Forbidden(
                "a run token can only read its own run and use its session and the LLM gateway"
                    .to_owned(),
            )),
        }
    }

    /// Whether this principal may read `run` of `team`.
    pub fn can_read_run(&self, team: i64, run: &RunId) -> bool {
        match self {
            Principal::ApiKey { team_id, .. } | Principal::WebSession { team_id, .. } => {
                *team_id == team
            }
            Principal::RunToken {
                team_id, run_id, ..
            } => *team_id == team && run_id == run,
        }
    }
}

/// What may connect to the worker socket (scenario S8). A worker receives
/// other users' tasks with their secrets and run tokens, so personal keys
/// (even an admin's), dashboard sessions and run tokens may not.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerCredential {
    /// A worker token: only as the worker id, or under the pool, it is bound to.
    WorkerToken {
        /// Team.
        team_id: i64,
        /// Token id.
        token_id: String,
        /// What it may connect as.
        binding: WorkerBinding,
    },
    /// A team API key that belongs to no user, as any worker id: what
    /// `oz-agent-worker` (which knows no worker tokens) and `hangar up`'s
    /// local worker connect with. Only an admin can create one.
    TeamKey {
        /// Team.
        team_id: i64,
        /// Key id.
        key_id: String,
    },
}

impl WorkerCredential {
    /// The credential's team.
    pub fn team_id(&self) -> i64 {
        match self {
            WorkerCredential::WorkerToken { team_id, .. }
            | WorkerCredential::TeamKey { team_id, .. } => *team_id,
        }
    }

    /// The credential's id (a token's or a key's): a connection may replace
    /// a dead one of the same worker only with the same credential.
    pub fn id(&self) -> &str {
        match self {
            WorkerCredential::WorkerToken { token_id, .. } => token_id,
            WorkerCredential::TeamKey { key_id, .. } => key_id,
        }
    }
}

/// How to get a credential that may connect a worker.
const WORKER_CREDENTIAL_HINT: &str = "create a worker token with `hangar worker token create \
    --worker-id ID` (or `--pool PREFIX`) and start the worker with `HANGAR_API_KEY=hw_…`";

/// Resolves the credential of a worker connection.
pub async fn authenticate_worker(
    store: &dyn Store,
    headers: &HeaderMap,
) -> ApiResult<WorkerCredential> {
    if !headers.contains_key(axum::http::header::AUTHORIZATION)
        && crate::web::auth::session_cookie(headers).is_some()
    {
        return Err(ApiError::Forbidden(format!(
            "a dashboard session cannot connect as a worker; {WORKER_CREDENTIAL_HINT}"
        )));
    }
    let token = bearer(headers)?;
    if token.starts_with(WORKER_TOKEN_PREFIX) {
        let record = worker_token(store, token).await?;
        return Ok(WorkerCredential::WorkerToken {
            team_id: record.team_id,
            token_id: record.id,
            binding: record.binding,
        });
    }
    match authenticate_token(store, token).await? {
        Principal::ApiKey {
            team_id,
            user_id: None,
            key_id,
        } => Ok(WorkerCredential::TeamKey { team_id, key_id }),
        Principal::ApiKey {
            user_id: Some(_), ..
        } => Err(ApiError::Forbidden(format!(
            "a personal API key (even an admin's) cannot connect as a worker: a worker \
             receives every user's tasks with their secrets; {WORKER_CREDENTIAL_HINT}"
        ))),
        Principal::RunToken { .. } | Principal::WebSession { .. } => Err(ApiError::Forbidden(
            format!("a run token cannot connect as a worker; {WORKER_CREDENTIAL_HINT}"),
        )),
    }
}

/// The active worker token whose secret is `token`.
async fn worker_token(store: &dyn Store, token: &str) -> ApiResult<WorkerTokenRecord> {
    let now = Timestamp::now().unix_millis();
    match store.worker_token_by_hash(&hash_secret(token)).await? {
        Some(t) if t.is_active(now) => Ok(t),
        Some(t) if t.revoked_at.is_some() => Err(ApiError::Unauthenticated(format!(
            "the worker token `{}…` was revoked",
            t.prefix
        ))),
        Some(t) => Err(ApiError::Unauthenticated(format!(
            "the worker token `{}…` has expired",
            t.prefix
        ))),
        None => Err(ApiError::Unauthenticated(
            "the worker token is not valid".to_owned(),
        )),
    }
}

/// Creates and stores a worker token; returns the record and the secret (shown once).
pub async fn issue_worker_token(
    store: &dyn Store,
    team_id: i64,
    created_by: Option<i64>,
    name: &str,
    binding: WorkerBinding,
    expires_at: Option<i64>,
) -> ApiResult<(WorkerTokenRecord, String)> {
    let secret = format!("{WORKER_TOKEN_PREFIX}{}", random_hex(32));
    let record = store
        .create_worker_token(NewWorkerToken {
            id: uuid_like(),
            team_id,
            name: name.to_owned(),
            prefix: secret.chars().take(WORKER_TOKEN_PREFIX.len() + 8).collect(),
            hash: hash_secret(&secret),
            binding,
            created_by,
            created_at: Timestamp::now().unix_millis(),
            expires_at,
        })
        .await?;
    Ok((record, secret))
}

/// SHA-256 of a secret. Keys and tokens carry 256 bits of randomness, so a
/// fast hash is enough (no password stretching needed).
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A fresh run token and its hash.
pub fn new_run_token() -> (String, Vec<u8>) {
    let token = format!("{RUN_TOKEN_PREFIX}{}", random_hex(32));
    let hash = hash_secret(&token);
    (token, hash)
}

/// Creates and stores an API key; returns the record and the secret (shown once).
pub async fn issue_api_key(
    store: &dyn Store,
    team_id: i64,
    user_id: Option<i64>,
    name: &str,
    expires_at: Option<i64>,
) -> ApiResult<(hangar_store::ApiKeyRecord, String)> {
    let secret = format!("{API_KEY_PREFIX}{}", random_hex(32));
    let record = store
        .create_api_key(NewApiKey {
            id: uuid_like(),
            team_id,
            user_id,
            name: name.to_owned(),
            prefix: secret.chars().take(API_KEY_PREFIX.len() + 8).collect(),
            hash: hash_secret(&secret),
            created_at: Timestamp::now().unix_millis(),
            expires_at,
        })
        .await?;
    Ok((record, secret))
}

fn uuid_like() -> String {
    // Time-ordered ids look like run ids.
    hangar_protocol::RunId::generate().0
}

/// Extracts the bearer credential.
pub fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthenticated(
            "missing `Authorization: Bearer <key>` header; create a key with `hangar api-key create`"
                .to_owned(),
        )
    })?;
    let text = value.to_str().map_err(|_| {
        ApiError::Unauthenticated("the Authorization header is not valid text".to_owned())
    })?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::Unauthenticated("the Authorization header must be `Bearer <key>`".to_owned())
        })?
        .trim();
    if token.is_empty() {
        return Err(ApiError::Unauthenticated(
            "the bearer token is empty".to_owned(),
        ));
    }
    Ok(token)
}

/// Resolves the caller: the bearer credential, or, when the request has no
/// `Authorization` header, the dashboard's session cookie.
pub async fn authenticate(store: &dyn Store, headers: &HeaderMap) -> ApiResult<Principal> {
    if !headers.contains_key(axum::http::header::AUTHORIZATION)
        && let Some(token) = crate::web::auth::session_cookie(headers)
    {
        return crate::web::auth::authenticate_session(store, token).await;
    }
    let token = bearer(headers)?;
    authenticate_token(store, token).await
}

/// Resolves a credential string.
pub async fn authenticate_token(store: &dyn Store, token: &str) -> ApiResult<Principal> {
    let now = Timestamp::now().unix_millis();
    if token.starts_with(RUN_TOKEN_PREFIX) {
        let exec = store.execution_by_token(&hash_secret(token)).await?;
        let Some(exec) = exec.filter(|e| e.ended_at.is_none()) else {
            return Err(ApiError::Unauthenticated(
                "the run token is invalid or its execution has ended".to_owned(),
            ));
        };
        // An unmanaged run's token dies with the key that registered it.
        if exec.worker_id.as_str() == hangar_store::LOCAL_WORKER_ID
            && !store.issuer_active(&exec.id, now).await?
        {
            return Err(ApiError::Unauthenticated(
                "the run token's API key was revoked or expired; register the run again with a valid key"
                    .to_owned(),
            ));
        }
        let run = store.run_any_team(&exec.run_id).await?;
        return Ok(Principal::RunToken {
            team_id: run.team_id,
            run_id: exec.run_id,
            execution_id: exec.id,
        });
    }
    if token.starts_with(WORKER_TOKEN_PREFIX) {
        // Valid or not, a worker token is no credential here: say what it is for.
        return Err(ApiError::Forbidden(
            "a worker token (`hw_…`) can only connect a worker to \
             `/api/v1/selfhosted/worker/ws`; call the API with an API key \
             (`hangar api-key create`)"
                .to_owned(),
        ));
    }
    if !token.starts_with(API_KEY_PREFIX) {
        return Err(ApiError::Unauthenticated(format!(
            "the API key is malformed: keys start with `{API_KEY_PREFIX}`"
        )));
    }
    let key = store.api_key_by_hash(&hash_secret(token)).await?;
    match key {
        Some(k) if k.is_active(now) => Ok(Principal::ApiKey {
            team_id: k.team_id,
            user_id: k.user_id,
            key_id: k.id,
        }),
        Some(k) if k.revoked_at.is_some() => Err(ApiError::Unauthenticated(format!(
            "the API key `{}…` was revoked",
            k.prefix
        ))),
        Some(k) => Err(ApiError::Unauthenticated(format!(
            "the API key `{}…` has expired",
            k.prefix
        ))),
        None => Err(ApiError::Unauthenticated(
            "the API key is not valid".to_owned(),
        )),
    }
}
