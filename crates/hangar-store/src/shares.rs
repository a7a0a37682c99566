//! Grants on a run's session: to the run's team, to one user, or a public
//! link. Public links are stored by the SHA-256 of their token only.
//!
//! A run has at most one team grant and one grant per user (creating another
//! replaces the role); it may have any number of public links. On PostgreSQL
//! every change signals [`crate::SHARES_CHANNEL`], so the streams a revocation
//! ends close on every replica.

use crate::StoreResult;
use async_trait::async_trait;
use hangar_protocol::RunId;
use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    /// Every member of the run's team.
    Team,
    /// One user of the team.
    User {
        /// User id.
        user_id: i64,
        /// The user's email (filled in on read).
        email: Option<String>,
    },
    /// Anyone holding the link's token.
    Public {
        /// SHA-256 of the token.
        token_hash: Vec<u8>,
    },
}

impl Grantee {
    /// `team`, `user` or `public` (the stored kind).
    pub fn kind(&self) -> &'static str {
        match self {
            Grantee::Team => "team",
            Grantee::User { .. } => "user",
            Grantee::Public { .. } => "public",
        }
    }
}

/// A grant to store: the fields of the stored grant it becomes (the email
/// of a `Grantee::User` is ignored; reads fill it in).
pub type NewShare = ShareRecord;

/// A stored grant.
#[derive(Clone, PartialEq, Eq)]
pub struct ShareRecord {
    /// Grant id.
    pub id: String,
    /// The run's team.
    pub team_id: i64,
    /// The run.
    pub run_id: RunId,
    /// Who it is for.
    pub grantee: Grantee,
    /// `view` or `edit`.
    pub role: String,
    /// The user who created it, if any.
    pub created_by: Option<i64>,
    /// Creation (ms).
    pub created_at: i64,
}

impl std::fmt::Debug for ShareRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token hash is not a secret, but it has no business in logs either.
        f.debug_struct("ShareRecord")
            .field("id", &self.id)
            .field("team_id", &self.team_id)
            .field("run_id", &self.run_id)
            .field("grantee", &self.grantee.kind())
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Session grants.
#[async_trait]
pub trait ShareStore: Send + Sync {
    /// Stores a grant. A team or user grant that already exists for the run
    /// keeps its id and takes the new role; the stored grant is returned.
    /// `NotFound` when the run is not the team's.
    async fn create_share(&self, share: NewShare) -> StoreResult<ShareRecord>;
    /// The grants of a team's run, oldest first.
    async fn list_shares(&self, team_id: i64, run: &RunId) -> StoreResult<Vec<ShareRecord>>;
    /// Deletes a grant of a team's run; `NotFound` when there is none.
    async fn delete_share(&self, team_id: i64, run: &RunId, id: &str) -> StoreResult<()>;
    /// The public link with this token hash, if it exists.
    async fn share_by_token_hash(&self, hash: &[u8]) -> StoreResult<Option<ShareRecord>>;
}

/// The unique key of a grant within its run: one team grant, one per user,
/// any number of public links.
pub(crate) fn grantee_key(id: &str, grantee: &Grantee) -> String {
    match grantee {
        Grantee::Team => "team".to_owned(),
        Grantee::User { user_id, .. } => format!("user:{user_id}"),
        Grantee::Public { .. } => format!("public:{id}"),
    }
}

/// The `run_shares` columns [`bind_share`] binds, in its order.
pub(crate) const SHARE_INSERT_COLUMNS: &str = "id, team_id, run_id, grantee, user_id, \
    grantee_key, role, token_hash, created_by, created_at";

/// Binds every column of a new grant whose unique key is `key`, in
/// [`SHARE_INSERT_COLUMNS`] order.
pub(crate) fn bind_share<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    share: &NewShare,
    key: &str,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<Vec<u8>>: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
{
    let (user_id, token_hash) = match &share.grantee {
        Grantee::Team => (None, None),
        Grantee::User { user_id, .. } => (Some(*user_id), None),
        Grantee::Public { token_hash } => (None, Some(token_hash.clone())),
    };
    query
        .bind(share.id.as_str())
        .bind(share.team_id)
        .bind(share.run_id.as_str())
        .bind(share.grantee.kind())
        .bind(user_id)
        .bind(key)
        .bind(share.role.as_str())
        .bind(token_hash)
        .bind(share.created_by)
        .bind(share.created_at)
}

/// Columns every share query selects (`s` is `run_shares`, `u` the grantee user).
pub(crate) const SHARE_COLUMNS: &str = "s.id, s.team_id, s.run_id, s.grantee, s.user_id, \
    u.email AS user_email, s.role, s.token_hash, s.created_by, s.created_at";

/// Decodes a share row of either database.
macro_rules! share_from_row {
    ($row:ty) => {
        pub(crate) fn share_from_row(row: &$row) -> StoreResult<ShareRecord> {
            use sqlx::Row;
            let kind: String = row.try_get("grantee")?;
            let grantee = match kind.as_str() {
                "team" => Grantee::Team,
                "user" => Grantee::User {
                    user_id: row
                        .try_get::<Option<i64>, _>("user_id")?
                        .ok_or_else(|| StoreError::Corrupt("user share without user".into()))?,
                    email: row.try_get("user_email")?,
                },
                "public" => Grantee::Public {
                    token_hash: row
                        .try_get::<Option<Vec<u8>>, _>("token_hash")?
                        .ok_or_else(|| StoreError::Corrupt("public share without token".into()))?,
                },
                other => return Err(StoreError::Corrupt(format!("unknown grantee `{other}`"))),
            };
            Ok(ShareRecord {
                id: row.try_get("id")?,
                team_id: row.try_get("team_id")?,
                run_id: RunId(row.try_get("run_id")?),
                grantee,
                role: row.try_get("role")?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
            })
        }
    };
}

pub(crate) use share_from_row;
