//! Records stored and returned by the store traits.

use hangar_protocol::{
    AgentConfig, ExecutionId, RunExecutionLocation, RunId, RunSourceType, RunState, WorkerId,
};

/// A team.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamRecord {
    /// Numeric id.
    pub id: i64,
    /// Public id.
    pub uid: String,
    /// Name.
    pub name: String,
}

/// A new user.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Public id.
    pub uid: String,
    /// Team.
    pub team_id: i64,
    /// Email.
    pub email: Option<String>,
    /// Display name.
    pub display_name: String,
    /// `admin` or `member`.
    pub role: String,
}

/// A user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    /// Numeric id.
    pub id: i64,
    /// Public id.
    pub uid: String,
    /// Team.
    pub team_id: i64,
    /// Email.
    pub email: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: String,
    /// The account cannot sign in (disabled or deleted).
    pub disabled: bool,
}

/// A new API key (only its hash is stored).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Key id.
    pub id: String,
    /// Team.
    pub team_id: i64,
    /// Owning user, for personal keys.
    pub user_id: Option<i64>,
    /// Name.
    pub name: String,
    /// Visible prefix.
    pub prefix: String,
    /// SHA-256 of the secret.
    pub hash: Vec<u8>,
    /// Creation (ms).
    pub created_at: i64,
    /// Expiry (ms).
    pub expires_at: Option<i64>,
}

/// A stored API key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    /// Key id.
    pub id: String,
    /// Team.
    pub team_id: i64,
    /// Owning user.
    pub user_id: Option<i64>,
    /// Name.
    pub name: String,
    /// Visible prefix.
    pub prefix: String,
    /// Creation (ms).
    pub created_at: i64,
    /// Expiry (ms).
    pub expires_at: Option<i64>,
    /// Revocation (ms).
    pub revoked_at: Option<i64>,
}

impl ApiKeyRecord {
    /// Whether the key may be used at `now` (ms).
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Id.
    pub id: RunId,
    /// Team.
    pub team_id: i64,
    /// Creator.
    pub creator_user_id: Option<i64>,
    /// Title.
    pub title: String,
    /// Prompt.
    pub prompt: String,
    /// Source.
    pub source: RunSourceType,
    /// Location.
    pub execution_location: RunExecutionLocation,
    /// Resolved configuration (model filled in).
    pub config: AgentConfig,
    /// Creation (ms).
    pub created_at: i64,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Id.
    pub id: RunId,
    /// Team.
    pub team_id: i64,
    /// Creator.
    pub creator_user_id: Option<i64>,
    /// Title.
    pub title: String,
    /// Prompt.
    pub prompt: String,
    /// State.
    pub state: RunState,
    /// Source.
    pub source: RunSourceType,
    /// Location.
    pub execution_location: RunExecutionLocation,
    /// Configuration.
    pub config: AgentConfig,
    /// Creation (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// Start of work (ms).
    pub started_at: Option<i64>,
    /// Status message.
    pub status_message: Option<String>,
    /// Error code for error states.
    pub error_code: Option<String>,
    /// Current (latest) execution.
    pub current_execution_id: Option<ExecutionId>,
    /// Whether the current execution's sandbox is live.
    pub sandbox_running: bool,
    /// Prompt tokens used.
    pub prompt_tokens: i64,
    /// Completion tokens used.
    pub completion_tokens: i64,
    /// Inference cost.
    pub inference_cost: f64,
    /// The schedule that created the run, for `SCHEDULED_AGENT` runs.
    pub schedule: Option<hangar_protocol::ScheduleInfo>,
}

impl RunRecord {
    /// The worker a run must go to, if any.
    pub fn worker_host(&self) -> Option<&str> {
        self.config.worker_host.as_deref()
    }
}

/// Sort field of a run listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunSort {
    /// Last update (default).
    #[default]
    UpdatedAt,
    /// Creation.
    CreatedAt,
}

/// Filters and paging of a run listing.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Match any of these states (empty = all).
    pub states: Vec<RunState>,
    /// Source.
    pub source: Option<RunSourceType>,
    /// Only runs created by this schedule.
    pub schedule_id: Option<String>,
    /// Config name (`agent_config.name`).
    pub name: Option<String>,
    /// Model id (`agent_config.model_id`).
    pub model_id: Option<String>,
    /// Environment id (`agent_config.environment_id`).
    pub environment_id: Option<String>,
    /// Skill spec (`agent_config.skill_spec`).
    pub skill_spec: Option<String>,
    /// Creator user id.
    pub creator_user_id: Option<i64>,
    /// Where it executes.
    pub execution_location: Option<hangar_protocol::RunExecutionLocation>,
    /// Created strictly after (ms).
    pub created_after: Option<i64>,
    /// Created strictly before (ms).
    pub created_before: Option<i64>,
    /// Updated strictly after (ms).
    pub updated_after: Option<i64>,
    /// Case-insensitive text in the title, prompt or skill spec.
    pub text: Option<String>,
    /// Exact metadata pairs (`config._hangar.metadata`), all of which must match.
    pub metadata: Vec<(String, String)>,
    /// Only runs descending from this run (`config._hangar.ancestors`).
    pub ancestor_run_id: Option<String>,
    /// Only runs an integration started (`config._hangar.trigger.integration_id`).
    pub trigger_integration_id: Option<String>,
    /// Sort field.
    pub sort: RunSort,
    /// Ascending instead of descending.
    pub ascending: bool,
    /// Page size.
    pub limit: i64,
    /// Continue after this (sort key, id).
    pub after: Option<(i64, String)>,
}

/// One page of runs.
#[derive(Debug, Clone)]
pub struct RunPage {
    /// The runs.
    pub runs: Vec<RunRecord>,
    /// Key of the last run when more exist.
    pub next: Option<(i64, String)>,
}

/// A follow-up that reopens an ended run ([`crate::RunStore::reopen_run`]).
#[derive(Debug, Clone)]
pub struct NewFollowup {
    /// The message the next execution continues the conversation with.
    pub message: String,
    /// Who sent it (`user:ID` or `team:ID`).
    pub sender: String,
    /// When (ms).
    pub at: i64,
}

/// A recorded follow-up: of an ended run (it reopened it), or to a live
/// execution's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowupRecord {
    /// Its id (increasing in the order follow-ups were stored).
    pub id: i64,
    /// The message.
    pub message: String,
    /// Who sent it.
    pub sender: String,
    /// When (ms).
    pub created_at: i64,
}

/// An assignment to record.
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Execution id.
    pub id: ExecutionId,
    /// Run.
    pub run_id: RunId,
    /// Worker.
    pub worker_id: WorkerId,
    /// SHA-256 of the run token.
    pub token_hash: Vec<u8>,
    /// Time (ms).
    pub created_at: i64,
    /// The connection holding the execution's lease (`None`: no lease, as
    /// for unmanaged runs, which are never swept).
    pub lease_holder: Option<String>,
    /// When the lease expires unless renewed (ms).
    pub lease_expires_at: Option<i64>,
    /// The API key that registered an unmanaged (local) run: its run token
    /// dies with that key.
    pub issuer_key_id: Option<String>,
}

/// The lease of one live execution (`GET /workers`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRecord {
    /// Worker running the execution.
    pub worker_id: WorkerId,
    /// Run.
    pub run_id: RunId,
    /// Execution.
    pub execution_id: ExecutionId,
    /// The execution's ordinal within its run (1 for the first): the fencing
    /// epoch a report must match.
    pub epoch: i64,
    /// Connection holding the lease (`replica:connection`).
    pub holder: Option<String>,
    /// Expiry (ms).
    pub expires_at: i64,
}

/// Lifecycle of one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionState {
    /// Sent to a worker.
    Assigned,
    /// Worker accepted.
    Claimed,
    /// Agent running.
    Started,
    /// Over.
    Ended,
}

impl ExecutionState {
    /// Storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Assigned => "assigned",
            ExecutionState::Claimed => "claimed",
            ExecutionState::Started => "started",
            ExecutionState::Ended => "ended",
        }
    }

    /// Parses a storage name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "assigned" => ExecutionState::Assigned,
            "claimed" => ExecutionState::Claimed,
            "started" => ExecutionState::Started,
            "ended" => ExecutionState::Ended,
            _ => return None,
        })
    }
}

/// A stored execution.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    /// Id.
    pub id: ExecutionId,
    /// Run.
    pub run_id: RunId,
    /// Worker.
    pub worker_id: WorkerId,
    /// State.
    pub state: ExecutionState,
    /// Creation (ms).
    pub created_at: i64,
    /// End (ms).
    pub ended_at: Option<i64>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Failure label.
    pub failure_reason: Option<String>,
    /// Message.
    pub message: Option<String>,
}

/// A terminal outcome for a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Terminal state.
    pub state: RunState,
    /// Status message.
    pub message: String,
    /// Error code (`PlatformErrorCode` name) for failures.
    pub error_code: Option<String>,
}

/// How an execution ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionEnd {
    /// Outcome for the run, if it is not terminal yet.
    pub outcome: Outcome,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Failure label.
    pub failure_reason: Option<String>,
    /// Time (ms).
    pub at: i64,
}

/// What a conditional state change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The change happened.
    Applied,
    /// The execution is not the run's current one; nothing changed.
    Stale,
    /// The run is already in a terminal state; nothing changed.
    AlreadyTerminal,
    /// Nothing to do (already in that state, duplicate report).
    Unchanged,
}

/// SQL dialect of a store, for the few clauses that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite (`json_each`).
    Sqlite,
    /// PostgreSQL (`jsonb` operators).
    Postgres,
}

impl Dialect {
    /// The text of the top-level field `field` of the run's `config` JSON.
    pub(crate) fn text(self, field: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract(config, '$.{field}')"),
            Dialect::Postgres => format!("(config::jsonb ->> '{field}')"),
        }
    }
}

/// The statement listing a team's runs as `q` asks, and the values to bind
/// to its `$1`, `$2`, … in order. It asks for one run more than the page
/// holds, to know whether a next page exists ([`run_page`]).
pub(crate) fn list_runs_query(
    team_id: i64,
    q: &RunQuery,
    dialect: Dialect,
) -> (String, Vec<FilterValue>) {
    let key = match q.sort {
        RunSort::UpdatedAt => "updated_at",
        RunSort::CreatedAt => "created_at",
    };
    let (dir, cmp) = if q.ascending {
        ("ASC", ">")
    } else {
        ("DESC", "<")
    };
    let mut sql = format!(
        "SELECT {} FROM runs WHERE team_id = $1",
        crate::sql::RUN_COLUMNS
    );
    let mut values = vec![FilterValue::Int(team_id)];
    let mut n = 1;
    let mut mark = || {
        n += 1;
        format!("${n}")
    };
    if !q.states.is_empty() {
        let marks: Vec<String> = q.states.iter().map(|_| mark()).collect();
        sql.push_str(&format!(" AND state IN ({})", marks.join(", ")));
        values.extend(
            q.states
                .iter()
                .map(|s| FilterValue::Text(s.as_str().to_owned())),
        );
    }
    if let Some(source) = q.source {
        sql.push_str(&format!(" AND source = {}", mark()));
        values.push(FilterValue::Text(source.as_str().to_owned()));
    }
    if let Some(schedule) = &q.schedule_id {
        sql.push_str(&format!(" AND schedule_id = {}", mark()));
        values.push(FilterValue::Text(schedule.clone()));
    }
    let (extra, filters) = filter_clauses(q, dialect, &mut mark);
    sql.push_str(&extra);
    values.extend(filters);
    if let Some((k, id)) = &q.after {
        let (k_mark, id_mark) = (mark(), mark());
        sql.push_str(&format!(" AND ({key}, id) {cmp} ({k_mark}, {id_mark})"));
        values.push(FilterValue::Int(*k));
        values.push(FilterValue::Text(id.clone()));
    }
    sql.push_str(&format!(" ORDER BY {key} {dir}, id {dir} LIMIT {}", mark()));
    values.push(FilterValue::Int(q.limit.max(1) + 1));
    (sql, values)
}

/// The page of `runs` (as [`list_runs_query`] read them, one too many when
/// there is a next page) and the cursor of the next page.
pub(crate) fn run_page(q: &RunQuery, mut runs: Vec<RunRecord>) -> RunPage {
    let limit = q.limit.max(1);
    let next = if runs.len() as i64 > limit {
        runs.truncate(limit as usize);
        runs.last().map(|r| {
            let k = match q.sort {
                RunSort::UpdatedAt => r.updated_at,
                RunSort::CreatedAt => r.created_at,
            };
            (k, r.id.0.clone())
        })
    } else {
        None
    };
    RunPage { runs, next }
}

/// A value bound to a run-listing filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FilterValue {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
}

/// SQL conditions (each starting with ` AND`) and their values for the
/// filters of `q` other than states, source, schedule and paging, in one
/// dialect (`Dialect::text` reads a field of the JSON `config` column);
/// `mark()` yields the next parameter placeholder.
pub(crate) fn filter_clauses(
    q: &RunQuery,
    dialect: Dialect,
    mark: &mut dyn FnMut() -> String,
) -> (String, Vec<FilterValue>) {
    let mut sql = String::new();
    let mut values = Vec::new();
    for (field, value) in [
        ("name", &q.name),
        ("model_id", &q.model_id),
        ("environment_id", &q.environment_id),
        ("skill_spec", &q.skill_spec),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {} = {}", dialect.text(field), mark()));
            values.push(FilterValue::Text(v.clone()));
        }
    }
    if let Some(c) = q.creator_user_id {
        sql.push_str(&format!(" AND creator_user_id = {}", mark()));
        values.push(FilterValue::Int(c));
    }
    if let Some(l) = q.execution_location {
        sql.push_str(&format!(" AND execution_location = {}", mark()));
        values.push(FilterValue::Text(l.as_str().to_owned()));
    }
    for (column, op, value) in [
        ("created_at", ">", q.created_after),
        ("created_at", "<", q.created_before),
        ("updated_at", ">", q.updated_after),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} {op} {}", mark()));
            values.push(FilterValue::Int(v));
        }
    }
    for (key, value) in &q.metadata {
        let (k, v) = (mark(), mark());
        sql.push_str(&match dialect {
            Dialect::Sqlite => format!(
                " AND EXISTS (SELECT 1 FROM json_each(config, '$._hangar.metadata') \
                 WHERE key = {k} AND value = {v})"
            ),
            Dialect::Postgres => {
                format!(" AND (config::jsonb -> '_hangar' -> 'metadata' ->> {k}::text) = {v}")
            }
        });
        values.push(FilterValue::Text(key.clone()));
        values.push(FilterValue::Text(value.clone()));
    }
    if let Some(ancestor) = &q.ancestor_run_id {
        let a = mark();
        sql.push_str(&match dialect {
            Dialect::Sqlite => format!(
                " AND EXISTS (SELECT 1 FROM json_each(config, '$._hangar.ancestors') WHERE value = {a})"
            ),
            Dialect::Postgres => format!(
                " AND jsonb_exists(config::jsonb -> '_hangar' -> 'ancestors', {a}::text)"
            ),
        });
        values.push(FilterValue::Text(ancestor.clone()));
    }
    if let Some(integration) = &q.trigger_integration_id {
        let i = mark();
        sql.push_str(&match dialect {
            Dialect::Sqlite => {
                format!(" AND json_extract(config, '$._hangar.trigger.integration_id') = {i}")
            }
            Dialect::Postgres => {
                format!(" AND (config::jsonb -> '_hangar' -> 'trigger' ->> 'integration_id') = {i}")
            }
        });
        values.push(FilterValue::Text(integration.clone()));
    }
    if let Some(text) = &q.text {
        let escaped = text
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        let (a, b, c) = (mark(), mark(), mark());
        sql.push_str(&format!(
            " AND (LOWER(title) LIKE {a} ESCAPE '\\' OR LOWER(prompt) LIKE {b} ESCAPE '\\' \
             OR LOWER(COALESCE({}, '')) LIKE {c} ESCAPE '\\')",
            dialect.text("skill_spec")
        ));
        values.extend([
            FilterValue::Text(pattern.clone()),
            FilterValue::Text(pattern.clone()),
            FilterValue::Text(pattern),
        ]);
    }
    (sql, values)
}
