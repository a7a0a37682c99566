//! The store conformance suite: every behaviour a [`Store`] must have, each
//! its own test on each store, `<store>::<behaviour>`, so the first failure
//! hides nothing (as restate's loglet tests do). The stores: SQLite in
//! memory, SQLite in a file, and PostgreSQL (its own schema per test, which
//! needs `HANGAR_TEST_DATABASE_URL`). The behaviours live in the modules named
//! below; add one there and list it here.

/// Generates one module per store with a test per `module: [behaviour, …]`.
macro_rules! on_every_store {
    ($($module:ident: [$($behaviour:ident),* $(,)?]),* $(,)?) => {
        mod sqlite_memory {
            $($(
                #[tokio::test]
                async fn $behaviour() {
                    let store = hangar_store::SqliteStore::in_memory().await.unwrap();
                    crate::suite::$module::$behaviour(&store).await;
                }
            )*)*
        }

        mod sqlite_file {
            $($(
                #[tokio::test]
                async fn $behaviour() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = hangar_store::SqliteStore::open(&dir.path().join("hangar.db"))
                        .await
                        .unwrap();
                    crate::suite::$module::$behaviour(&store).await;
                    hangar_store::Store::close(&store).await;
                }
            )*)*
        }

        mod postgres {
            $($(
                #[tokio::test]
                async fn $behaviour() {
                    let db = crate::suite::postgres::TestSchema::new();
                    let store = db.store().await;
                    crate::suite::$module::$behaviour(&store).await;
                    db.cleanup(&store).await;
                }
            )*)*
        }
    };
}

on_every_store! {
    conformance: [lifecycle_and_fencing, rejected_runs_return_to_the_queue, cancel_rules, events_are_stored_once_in_order, runs_are_team_scoped_and_paged, api_keys, run_filters, metadata_and_ancestry_filters, usage_adds_up_per_run_and_per_caller, stats_count_runs_the_queue_and_a_teams_failures],
    executions: [a_run_created_assigned_is_as_if_assigned_after_creation, followups_reopen_only_ended_runs, leases_renew_expire_and_are_taken_once, live_followups_are_stored_pending_until_acked, a_lost_started_run_can_be_queued_again, last_executions_show_how_each_run_last_ended],
    accounts: [emails_are_unique_and_case_insensitive, passwords_and_sessions, last_admin_is_kept, deletion_is_soft_and_complete],
    shares: [grants_are_team_scoped_and_links_found_by_hash],
    integrations: [integrations_are_team_scoped_and_named_once, c4_deliveries_are_claimed_once, integration_threads_report_each_state_once],
    webhooks: [webhook_outbox_is_fenced_and_logged],
    worker_tokens: [s8_worker_tokens_are_created_found_and_expired],
    lifecycle: [state_changes_are_numbered_per_team, client_events_and_filters, worker_registry_is_team_scoped_and_fenced, worker_registry_refreshes_in_batches],
    schedules: [crud_is_team_scoped, the_slot_floor_moves_on_resume_and_on_a_new_cron, a_slot_is_claimed_once_with_its_run],
}
