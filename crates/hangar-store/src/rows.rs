//! Row decoding shared by the SQLite and PostgreSQL stores. The two schemas
//! have the same columns; only the row type and the storage of booleans
//! differ, so each store instantiates the same decoders with [`row_decoders`].

/// Defines `flag`, `parse_state`, `run_from_row`, `execution_from_row`,
/// `api_key_from_row`, `env_from_row`, `secret_from_row`, `user_from_row`,
/// `session_from_row`, `event_from_row` and `worker_from_row` for one row
/// type. `$flag` decodes a boolean column by name (an INTEGER on SQLite, a
/// BOOLEAN on PostgreSQL). Paths resolve where the macro is invoked, which
/// must have `crate::*`, `sqlx::Row`, the protocol enums and a `schedules`
/// module in scope.
macro_rules! row_decoders {
    ($row:ty, $flag:expr) => {
        /// Decodes the boolean column `column`.
        fn flag(row: &$row, column: &str) -> StoreResult<bool> {
            ($flag)(row, column)
        }

        fn parse_state(s: &str) -> StoreResult<RunState> {
            RunState::parse(s)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown run state `{s}`")))
        }

        /// The schedule a run row came from (the `schedule_*` columns of `runs`).
        fn run_schedule(row: &$row) -> StoreResult<Option<hangar_protocol::ScheduleInfo>> {
            let id: Option<String> = row.try_get("schedule_id")?;
            Ok(match id {
                Some(schedule_id) => Some(hangar_protocol::ScheduleInfo {
                    schedule_id,
                    schedule_name: row
                        .try_get::<Option<String>, _>("schedule_name")?
                        .unwrap_or_default(),
                    cron_schedule: row
                        .try_get::<Option<String>, _>("schedule_cron")?
                        .unwrap_or_default(),
                }),
                None => None,
            })
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
                sandbox_running: flag(row, "sandbox_running")?,
                prompt_tokens: row.try_get("prompt_tokens")?,
                completion_tokens: row.try_get("completion_tokens")?,
                inference_cost: row.try_get("inference_cost")?,
                schedule: run_schedule(row)?,
            })
        }

        fn execution_from_row(row: &$row) -> StoreResult<ExecutionRecord> {
            let state: String = row.try_get("state")?;
            Ok(ExecutionRecord {
                id: ExecutionId(row.try_get("id")?),
                run_id: RunId(row.try_get("run_id")?),
                worker_id: WorkerId(row.try_get("worker_id")?),
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

        pub(crate) fn integration_from_row(row: &$row) -> StoreResult<IntegrationRecord> {
            Ok(IntegrationRecord {
                id: row.try_get("id")?,
                team_id: row.try_get("team_id")?,
                kind: row.try_get("kind")?,
                name: row.try_get("name")?,
                settings: row.try_get("settings")?,
                secret_nonce: row.try_get("secret_nonce")?,
                secret_ciphertext: row.try_get("secret_ciphertext")?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        pub(crate) fn thread_from_row(row: &$row) -> StoreResult<IntegrationThread> {
            Ok(IntegrationThread {
                run_id: row.try_get("run_id")?,
                integration_id: row.try_get("integration_id")?,
                team_id: row.try_get("team_id")?,
                thread_key: row.try_get("thread_key")?,
                reply_to: row.try_get("reply_to")?,
                status_ref: row.try_get("status_ref")?,
                reported: row.try_get("reported")?,
                lease_until: row.try_get("lease_until")?,
                created_at: row.try_get("created_at")?,
            })
        }

        pub(crate) fn webhook_from_row(row: &$row) -> StoreResult<WebhookRecord> {
            Ok(WebhookRecord {
                id: row.try_get("id")?,
                team_id: row.try_get("team_id")?,
                url: row.try_get("url")?,
                event_types: row.try_get("event_types")?,
                secret_nonce: row.try_get("secret_nonce")?,
                secret_ciphertext: row.try_get("secret_ciphertext")?,
                cursor: row.try_get("event_cursor")?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
            })
        }

        pub(crate) fn delivery_from_row(row: &$row) -> StoreResult<WebhookDeliveryRecord> {
            Ok(WebhookDeliveryRecord {
                id: row.try_get("id")?,
                webhook_id: row.try_get("webhook_id")?,
                team_id: row.try_get("team_id")?,
                event_type: row.try_get("event_type")?,
                sequence: row.try_get("sequence")?,
                payload: row.try_get("payload")?,
                state: row.try_get("state")?,
                attempts: row.try_get("attempts")?,
                last_status: row.try_get("last_status")?,
                last_error: row.try_get("last_error")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
                retry_until: row.try_get("retry_until")?,
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

        /// A user; a deleted user reads as disabled.
        fn user_from_row(row: &$row) -> StoreResult<UserRecord> {
            let deleted: Option<i64> = row.try_get("deleted_at")?;
            Ok(UserRecord {
                id: row.try_get("id")?,
                uid: row.try_get("uid")?,
                team_id: row.try_get("team_id")?,
                email: row.try_get("email")?,
                display_name: row.try_get("display_name")?,
                role: row.try_get("role")?,
                disabled: flag(row, "disabled")? || deleted.is_some(),
            })
        }

        fn session_from_row(row: &$row) -> StoreResult<WebSessionRecord> {
            Ok(WebSessionRecord {
                token_hash: row.try_get("token_hash")?,
                team_id: row.try_get("team_id")?,
                user_id: row.try_get("user_id")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
            })
        }

        fn event_from_row(row: &$row) -> StoreResult<LifecycleEventRecord> {
            Ok(LifecycleEventRecord {
                team_id: row.try_get("team_id")?,
                sequence: row.try_get("sequence")?,
                run_id: row.try_get("run_id")?,
                event_type: row.try_get("event_type")?,
                execution_id: row.try_get("execution_id")?,
                ref_id: row.try_get("ref_id")?,
                occurred_at: row.try_get("occurred_at")?,
            })
        }

        fn worker_from_row(row: &$row) -> StoreResult<WorkerPresence> {
            let labels: String = row.try_get("labels")?;
            Ok(WorkerPresence {
                team_id: row.try_get("team_id")?,
                worker_id: WorkerId(row.try_get("worker_id")?),
                replica_id: row.try_get("replica_id")?,
                connection_id: row.try_get("connection_id")?,
                backend: row.try_get("backend")?,
                version: row.try_get("version")?,
                capacity: row.try_get("capacity")?,
                running_tasks: row.try_get("running_tasks")?,
                draining: flag(row, "draining")?,
                labels: crate::cluster::decode_labels(&labels)?,
                connected: flag(row, "connected")?,
                connected_at: row.try_get("connected_at")?,
                last_seen: row.try_get("last_seen")?,
                credential_id: row.try_get("credential_id")?,
                heard_at: row.try_get("heard_at")?,
            })
        }
    };
}

pub(crate) use row_decoders;
