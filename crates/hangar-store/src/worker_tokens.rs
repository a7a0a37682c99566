//! Worker tokens (`hw_…`): credentials that can only connect a worker, bound
//! to one worker id or to a pool (every id starting with a prefix). Like API
//! keys they are stored by the SHA-256 of their secret only, and revocation
//! is immediate.
//!
//! The SQL is written once for both databases (`$N` placeholders work in
//! SQLite too); each store runs it on its own pool.

use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use hangar_protocol::WorkerId;
use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

/// What a worker token may connect as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerBinding {
    /// Exactly this worker id.
    Worker(WorkerId),
    /// Any worker id starting with this prefix.
    Pool(String),
}

impl WorkerBinding {
    /// Whether a worker of id `worker_id` may connect with this binding.
    pub fn allows(&self, worker_id: &WorkerId) -> bool {
        match self {
            WorkerBinding::Worker(id) => id == worker_id,
            WorkerBinding::Pool(prefix) => worker_id.as_str().starts_with(prefix.as_str()),
        }
    }
}

impl std::fmt::Display for WorkerBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerBinding::Worker(id) => write!(f, "worker id `{id}`"),
            WorkerBinding::Pool(prefix) => write!(f, "pool `{prefix}` (ids starting with it)"),
        }
    }
}

/// A worker token to store.
#[derive(Clone, PartialEq)]
pub struct NewWorkerToken {
    /// Token id.
    pub id: String,
    /// Team.
    pub team_id: i64,
    /// Name to recognise it by.
    pub name: String,
    /// Visible prefix of the secret (`hw_` and a few characters).
    pub prefix: String,
    /// SHA-256 of the secret.
    pub hash: Vec<u8>,
    /// What it may connect as.
    pub binding: WorkerBinding,
    /// The user who created it (`None` for a team key).
    pub created_by: Option<i64>,
    /// Creation (ms).
    pub created_at: i64,
    /// Expiry (ms).
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for NewWorkerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewWorkerToken")
            .field("id", &self.id)
            .field("team_id", &self.team_id)
            .field("name", &self.name)
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

/// A stored worker token (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerTokenRecord {
    /// Token id.
    pub id: String,
    /// Team.
    pub team_id: i64,
    /// Name.
    pub name: String,
    /// Visible prefix.
    pub prefix: String,
    /// What it may connect as.
    pub binding: WorkerBinding,
    /// The user who created it.
    pub created_by: Option<i64>,
    /// Creation (ms).
    pub created_at: i64,
    /// Expiry (ms).
    pub expires_at: Option<i64>,
    /// Revocation (ms).
    pub revoked_at: Option<i64>,
    /// Last time a worker connected with it (ms).
    pub last_used_at: Option<i64>,
}

impl WorkerTokenRecord {
    /// Whether the token may be used at `now` (ms).
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// Worker tokens (hashed at rest).
#[async_trait]
pub trait WorkerTokenStore: Send + Sync {
    /// Stores a new token.
    async fn create_worker_token(&self, token: NewWorkerToken) -> StoreResult<WorkerTokenRecord>;
    /// Finds a token by the hash of its secret.
    async fn worker_token_by_hash(&self, hash: &[u8]) -> StoreResult<Option<WorkerTokenRecord>>;
    /// Tokens of a team, oldest first.
    async fn list_worker_tokens(&self, team_id: i64) -> StoreResult<Vec<WorkerTokenRecord>>;
    /// Revokes a token of a team (idempotent); `NotFound` for another team's.
    async fn revoke_worker_token(&self, team_id: i64, id: &str, at: i64) -> StoreResult<()>;
    /// Records that a worker connected with the token at `at`.
    async fn worker_token_used(&self, id: &str, at: i64) -> StoreResult<()>;
}

/// The columns [`bind_worker_token`] binds, in its order.
pub(crate) const WORKER_TOKEN_INSERT: &str = "INSERT INTO worker_tokens \
    (id, team_id, name, prefix, hash, worker_id, pool, created_by, created_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// `SELECT` of every column a [`WorkerTokenRecord`] is decoded from.
macro_rules! select_worker_tokens {
    () => {
        "SELECT id, team_id, name, prefix, worker_id, pool, created_by, created_at, \
         expires_at, revoked_at, last_used_at FROM worker_tokens "
    };
}

/// A token by id (`$1`).
pub(crate) const WORKER_TOKEN_BY_ID: &str = concat!(select_worker_tokens!(), "WHERE id = $1");

/// A token by the hash of its secret (`$1`).
pub(crate) const WORKER_TOKEN_BY_HASH: &str = concat!(select_worker_tokens!(), "WHERE hash = $1");

/// A team's tokens (`$1`), oldest first.
pub(crate) const WORKER_TOKENS_OF_TEAM: &str = concat!(
    select_worker_tokens!(),
    "WHERE team_id = $1 ORDER BY created_at, id"
);

/// Revokes (`$1` time, `$2` id, `$3` team), keeping the first revocation time.
pub(crate) const WORKER_TOKEN_REVOKE: &str = "UPDATE worker_tokens \
    SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND team_id = $3";

/// Records a use (`$1` time, `$2` id).
pub(crate) const WORKER_TOKEN_USED: &str =
    "UPDATE worker_tokens SET last_used_at = $1 WHERE id = $2";

/// Binds a new token, in [`WORKER_TOKEN_INSERT`] order.
pub(crate) fn bind_worker_token<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    t: &NewWorkerToken,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Vec<u8>: Encode<'t, DB> + Type<DB>,
{
    let (worker_id, pool) = match &t.binding {
        WorkerBinding::Worker(id) => (Some(id.to_string()), None),
        WorkerBinding::Pool(prefix) => (None, Some(prefix.clone())),
    };
    query
        .bind(t.id.clone())
        .bind(t.team_id)
        .bind(t.name.clone())
        .bind(t.prefix.clone())
        .bind(t.hash.clone())
        .bind(worker_id)
        .bind(pool)
        .bind(t.created_by)
        .bind(t.created_at)
        .bind(t.expires_at)
}

/// The binding stored in a row's `worker_id` and `pool` columns.
pub(crate) fn binding_of(
    worker_id: Option<String>,
    pool: Option<String>,
) -> StoreResult<WorkerBinding> {
    match (worker_id, pool) {
        (Some(id), None) => Ok(WorkerBinding::Worker(WorkerId(id))),
        (None, Some(prefix)) => Ok(WorkerBinding::Pool(prefix)),
        _ => Err(StoreError::Corrupt(
            "worker token bound to both or neither of a worker id and a pool".into(),
        )),
    }
}

/// Decodes a worker token row of either database.
macro_rules! worker_token_from_row {
    ($row:ty) => {
        pub(crate) fn worker_token_from_row(
            row: &$row,
        ) -> $crate::StoreResult<$crate::WorkerTokenRecord> {
            use sqlx::Row;
            Ok($crate::WorkerTokenRecord {
                id: row.try_get("id")?,
                team_id: row.try_get("team_id")?,
                name: row.try_get("name")?,
                prefix: row.try_get("prefix")?,
                binding: $crate::worker_tokens::binding_of(
                    row.try_get("worker_id")?,
                    row.try_get("pool")?,
                )?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
                revoked_at: row.try_get("revoked_at")?,
                last_used_at: row.try_get("last_used_at")?,
            })
        }
    };
}

pub(crate) use worker_token_from_row;

/// Implements [`WorkerTokenStore`] for `$store`: the same statements on both
/// databases (see [`crate::sql`]).
macro_rules! impl_worker_token_store {
    ($store:ty) => {
        $crate::worker_tokens::worker_token_from_row!(
            <<$store as $crate::sql::Dialect>::Db as sqlx::Database>::Row
        );

        #[async_trait::async_trait]
        impl $crate::WorkerTokenStore for $store {
            async fn create_worker_token(
                &self,
                token: $crate::NewWorkerToken,
            ) -> $crate::StoreResult<$crate::WorkerTokenRecord> {
                let query = sqlx::query($crate::worker_tokens::WORKER_TOKEN_INSERT);
                let mut db = self.write().await?;
                $crate::worker_tokens::bind_worker_token(query, &token)
                    .execute(&mut *db)
                    .await?;
                db.commit().await?;
                let row = sqlx::query($crate::worker_tokens::WORKER_TOKEN_BY_ID)
                    .bind(token.id.as_str())
                    .fetch_one($crate::sql::Dialect::read(self))
                    .await?;
                worker_token_from_row(&row)
            }

            async fn worker_token_by_hash(
                &self,
                hash: &[u8],
            ) -> $crate::StoreResult<Option<$crate::WorkerTokenRecord>> {
                let row = sqlx::query($crate::worker_tokens::WORKER_TOKEN_BY_HASH)
                    .bind(hash)
                    .fetch_optional($crate::sql::Dialect::read(self))
                    .await?;
                row.as_ref().map(worker_token_from_row).transpose()
            }

            async fn list_worker_tokens(
                &self,
                team_id: i64,
            ) -> $crate::StoreResult<Vec<$crate::WorkerTokenRecord>> {
                let rows = sqlx::query($crate::worker_tokens::WORKER_TOKENS_OF_TEAM)
                    .bind(team_id)
                    .fetch_all($crate::sql::Dialect::read(self))
                    .await?;
                rows.iter().map(worker_token_from_row).collect()
            }

            async fn revoke_worker_token(
                &self,
                team_id: i64,
                id: &str,
                at: i64,
            ) -> $crate::StoreResult<()> {
                let mut db = self.write().await?;
                let done = sqlx::query($crate::worker_tokens::WORKER_TOKEN_REVOKE)
                    .bind(at)
                    .bind(id)
                    .bind(team_id)
                    .execute(&mut *db)
                    .await?;
                db.commit().await?;
                if done.rows_affected() == 0 {
                    return Err($crate::StoreError::NotFound);
                }
                Ok(())
            }

            async fn worker_token_used(&self, id: &str, at: i64) -> $crate::StoreResult<()> {
                let mut db = self.write().await?;
                sqlx::query($crate::worker_tokens::WORKER_TOKEN_USED)
                    .bind(at)
                    .bind(id)
                    .execute(&mut *db)
                    .await?;
                db.commit().await?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_worker_token_store;
