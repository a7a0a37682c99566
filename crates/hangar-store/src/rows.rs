//! Row decoding shared by the SQLite and PostgreSQL stores. The two schemas
//! have the same columns; only the row type and the storage of booleans
//! differ, so each store instantiates the same decoders with [`row_decoders`].

/// Defines `parse_state`, `run_from_row`, `execution_from_row`,
/// `api_key_from_row`, `env_from_row` and `secret_from_row` for one row type.
/// `$sandbox` decodes the `sandbox_running` flag (an INTEGER on SQLite, a
/// BOOLEAN on PostgreSQL). Paths resolve where the macro is invoked, which
/// must have `crate::*`, `sqlx::Row`, the protocol enums and a `schedules`
/// module in scope.
macro_rules! row_decoders {
    ($row:ty, $sandbox:expr) => {
        fn parse_state(s: &str) -> StoreResult<RunState> {
            RunState::parse(s)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown run state `{s}`")))
        }

        fn run_from_row(row: &$row) -> StoreResult<RunRecord> {
            let state: String = row.try_get("state")?;
            let source: String = row.try_get("source")?;
            let location: String = row.try_get("execution_location")?;
            let config: String = row.try_get("config")?;
            let current: Option<String> = row.try_get("current_execution_id")?;
            Ok(RunRecord {
                id: RunId(row.try_get("id")?),
                team_id: row.try_get("team_id")?,
                creator_user_id: row.try_get("creator_user_id")?,
                title: row.try_get("title")?,
                prompt: row.try_get("prompt")?,
                state: parse_state(&state)?,
                source: RunSourceType::parse(&source)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown source `{source}`")))?,
                execution_location: if location == "LOCAL" {
                    RunExecutionLocation::Local
                } else {
                    RunExecutionLocation::Remote
                },
                config: serde_json::from_str(&config)
                    .map_err(|e| StoreError::Corrupt(format!("run config: {e}")))?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                started_at: row.try_get("started_at")?,
                status_message: row.try_get("status_message")?,
                error_code: row.try_get("error_code")?,
                current_execution_id: current.map(ExecutionId),
                sandbox_running: ($sandbox)(row)?,
                prompt_tokens: row.try_get("prompt_tokens")?,
                completion_tokens: row.try_get("completion_tokens")?,
                inference_cost: row.try_get("inference_cost")?,
                schedule: schedules::run_schedule(row)?,
            })
        }

        fn execution_from_row(row: &$row) -> StoreResult<ExecutionRecord> {
            let state: String = row.try_get("state")?;
            Ok(ExecutionRecord {
                id: ExecutionId(row.try_get("id")?),
                run_id: RunId(row.try_get("run_id")?),
                worker_id: row.try_get("worker_id")?,
                state: ExecutionState::parse(&state).ok_or_else(|| {
                    StoreError::Corrupt(format!("unknown execution state `{state}`"))
                })?,
                created_at: row.try_get("created_at")?,
                ended_at: row.try_get("ended_at")?,
                exit_code: row.try_get("exit_code")?,
                failure_reason: row.try_get("failure_reason")?,
                message: row.try_get("message")?,
            })
        }

        fn api_key_from_row(row: &$row) -> StoreResult<ApiKeyRecord> {
            Ok(ApiKeyRecord {
                id: row.try_get("id")?,
                team_id: row.try_get("team_id")?,
                user_id: row.try_get("user_id")?,
                name: row.try_get("name")?,
                prefix: row.try_get("prefix")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
                revoked_at: row.try_get("revoked_at")?,
            })
        }

        pub(crate) fn env_from_row(row: &$row) -> StoreResult<EnvironmentRecord> {
            Ok(EnvironmentRecord {
                id: row.try_get("id")?,
                team_id: row.try_get("team_id")?,
                name: row.try_get("name")?,
                spec: row.try_get("spec")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        pub(crate) fn secret_from_row(row: &$row) -> StoreResult<SecretRecord> {
            Ok(SecretRecord {
                team_id: row.try_get("team_id")?,
                name: row.try_get("name")?,
                nonce: row.try_get("nonce")?,
                ciphertext: row.try_get("ciphertext")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }
    };
}

pub(crate) use row_decoders;
