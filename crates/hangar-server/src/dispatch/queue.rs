//! The queue side of dispatch: placing a queued run on a worker with room
//! (reserve a slot, create the execution in the store, send the
//! assignment), and building the assignment with the run's environment.

use super::{DISPATCH_BATCH, Dispatcher, Reserved, Slot, WorkerKey};
use crate::auth::new_run_token;
use hangar_protocol::RunId;
use hangar_protocol::worker::{ServerToWorker, Task, TaskAssignment, TaskDefinition, TaskOwner};
use hangar_protocol::{
    ENV_EXECUTION_ID, ENV_RUN_CONTINUES, ENV_RUN_ID, ENV_RUN_TOKEN, ENV_SERVER_URL, ExecutionId,
    Timestamp, WorkerId,
};
use hangar_store::{NewExecution, NewRun, RunRecord, StoreResult, Transition};
use hangar_telemetry::trace::{TraceParent, at_millis as millis_to_system};
use opentelemetry::KeyValue;
use std::collections::BTreeMap;
use std::time::Duration;

/// A worker slot reserved, and the execution to hold it, for a run about to
/// be stored ([`Dispatcher::place_new`]).
#[derive(Debug)]
pub(crate) struct Placement {
    team_id: i64,
    reserved: Reserved,
    /// What to store with the run ([`hangar_store::RunStore::create_assigned_run`]).
    pub(crate) execution: NewExecution,
    token: String,
}

impl Dispatcher {
    fn any_room(&self) -> bool {
        self.registry().workers.values().any(Slot::has_room)
    }

    /// Picks a worker for run `run_id` of team `team_id` (on `host` when the
    /// run names one) and reserves a slot on it.
    fn reserve(
        &self,
        team_id: i64,
        run_id: &RunId,
        host: Option<&str>,
        exec: &ExecutionId,
    ) -> Option<Reserved> {
        let mut reg = self.registry();
        let key = match host {
            Some(host) => {
                let key = (team_id, WorkerId::from(host));
                reg.workers.get(&key).filter(|s| s.has_room())?;
                key
            }
            None => {
                let preferred = reg
                    .affinity
                    .get(run_id)
                    .map(|w| (team_id, w.clone()))
                    .filter(|k| reg.workers.get(k).is_some_and(Slot::has_room));
                match preferred {
                    Some(key) => key,
                    None => reg
                        .workers
                        .iter()
                        .filter(|((team, _), s)| *team == team_id && s.has_room())
                        .min_by_key(|(_, s)| s.active.len())
                        .map(|(k, _)| k.clone())?,
                }
            }
        };
        reg.affinity.remove(run_id);
        let slot = reg.workers.get_mut(&key)?;
        slot.active.insert(exec.clone(), run_id.clone());
        Some(Reserved {
            worker_id: key.1,
            conn_id: slot.conn_id,
            tx: slot.tx.clone(),
            stock: slot.stock,
        })
    }

    pub(super) async fn dispatch_pending(&self) -> StoreResult<()> {
        loop {
            if !self.any_room() {
                return Ok(());
            }
            let queued = self.store.queued_runs(DISPATCH_BATCH).await?;
            let full_batch = queued.len() as i64 == DISPATCH_BATCH;
            let mut assigned = 0usize;
            for run in queued {
                if self.place(&run).await? {
                    assigned += 1;
                }
            }
            if assigned == 0 || !full_batch {
                return Ok(());
            }
        }
    }

    /// Assigns one queued run to a worker with room, if any. Returns whether it was assigned.
    pub(super) async fn place(&self, run: &RunRecord) -> StoreResult<bool> {
        let environment = match &run.config.environment_id {
            Some(_) => match self.store.run_environment(&run.id).await? {
                Some(spec) => Some(spec),
                // Its snapshot is being written; the next pass picks it up.
                None => return Ok(false),
            },
            None => None,
        };
        let exec_id = ExecutionId::generate();
        let Some(Reserved {
            worker_id,
            conn_id,
            tx,
            stock,
        }) = self.reserve(run.team_id, &run.id, run.worker_host(), &exec_id)
        else {
            return Ok(false);
        };
        let key = (run.team_id, worker_id.clone());
        let (token, token_hash) = new_run_token();
        let now = Timestamp::now().unix_millis();
        let placed = self
            .store
            .assign(NewExecution {
                id: exec_id.clone(),
                run_id: run.id.clone(),
                worker_id: worker_id.clone(),
                token_hash,
                created_at: now,
                lease_holder: Some(self.holder(conn_id)),
                lease_expires_at: Some(now + self.lost_timeout.as_millis() as i64),
                issuer_key_id: None,
            })
            .await;
        match placed {
            Ok(Transition::Applied) => {
                let mut assignment = self.assignment(run, &exec_id, token);
                // Reopened by a follow-up: on the Oz wire the task's prompt is
                // the follow-up and the conversation is the run's, so any
                // Oz-compatible agent continues (Hangar's agent reads both
                // from the run itself).
                if let Some(followup) = self.store.latest_followup(&run.id).await? {
                    assignment.task.task_definition.prompt = followup.message;
                    assignment.task.agent_conversation_id = Some(run.id.0.clone());
                    assignment
                        .env_vars
                        .insert(ENV_RUN_CONTINUES.to_owned(), "1".to_owned());
                }
                if let Some(spec) = environment {
                    self.attach_environment(run, &spec, &mut assignment).await?;
                }
                self.deliver(run, assignment, &worker_id, stock, &tx, now);
                Ok(true)
            }
            Ok(_) => {
                self.unreserve(&key, &exec_id);
                Ok(false)
            }
            Err(e) => {
                self.unreserve(&key, &exec_id);
                Err(e)
            }
        }
    }

    /// Sends a stored assignment to the worker whose slot it reserved.
    fn deliver(
        &self,
        run: &RunRecord,
        mut assignment: TaskAssignment,
        worker_id: &WorkerId,
        stock: bool,
        tx: &tokio::sync::mpsc::Sender<ServerToWorker>,
        now: i64,
    ) {
        let exec_id = assignment.execution_id.clone();
        if stock {
            // Its Docker and Kubernetes backends mount this at /agent
            // and run /agent/entrypoint.sh; a Hangar worker brings
            // its own agent.
            assignment.sidecar_image = self.sidecar_image.clone();
        }
        if tx
            .try_send(ServerToWorker::TaskAssignment(Box::new(assignment)))
            .is_err()
        {
            // The connection went away between reserve and send; the
            // run is queued again when the execution's lease expires.
            tracing::warn!(run_id = %run.id, worker_id = worker_id.as_str(), "assignment not delivered");
        } else {
            // Ready since its last change: creation, or a requeue.
            let ready = run.updated_at.min(now);
            crate::metrics::get().dispatched(Duration::from_millis((now - ready).max(0) as u64));
            hangar_telemetry::trace::record(
                "run.dispatch",
                &TraceParent::for_run(&run.id.0),
                millis_to_system(ready),
                std::time::SystemTime::now(),
                vec![
                    KeyValue::new("hangar.worker.id", worker_id.to_string()),
                    KeyValue::new("hangar.execution.id", exec_id.clone()),
                ],
            );
        }
        tracing::debug!(run_id = %run.id, execution_id = %exec_id, worker_id = worker_id.as_str(), "assigned");
    }

    /// The fast path of a run being created: when a worker has room, a
    /// slot is reserved and the execution made now, so that the run is
    /// stored already assigned (one write, [`hangar_store::RunStore::create_assigned_run`])
    /// and sent by the task that created it ([`Dispatcher::placed`]), with
    /// no queue scan and no hand-over to the dispatch loop. `None` when no
    /// worker has room, or the run needs its environment (which is stored
    /// after it): it then waits in the queue as usual.
    pub(crate) fn place_new(&self, run: &NewRun, has_environment: bool) -> Option<Placement> {
        if has_environment {
            return None;
        }
        let exec_id = ExecutionId::generate();
        let reserved = self.reserve(
            run.team_id,
            &run.id,
            run.config.worker_host.as_deref(),
            &exec_id,
        )?;
        let (token, token_hash) = new_run_token();
        let now = Timestamp::now().unix_millis();
        let execution = NewExecution {
            id: exec_id,
            run_id: run.id.clone(),
            worker_id: reserved.worker_id.clone(),
            token_hash,
            created_at: now,
            lease_holder: Some(self.holder(reserved.conn_id)),
            lease_expires_at: Some(now + self.lost_timeout.as_millis() as i64),
            issuer_key_id: None,
        };
        Some(Placement {
            team_id: run.team_id,
            reserved,
            execution,
            token,
        })
    }

    /// Sends the assignment of a run stored with its [`Placement`].
    pub(crate) fn placed(&self, run: &RunRecord, placement: Placement) {
        let Placement {
            reserved,
            execution,
            token,
            ..
        } = placement;
        let assignment = self.assignment(run, &execution.id, token);
        self.deliver(
            run,
            assignment,
            &reserved.worker_id,
            reserved.stock,
            &reserved.tx,
            Timestamp::now().unix_millis(),
        );
    }

    /// Frees the slot of a [`Placement`] whose run was not stored.
    pub(crate) fn unplace(&self, placement: Placement) {
        let key = (placement.team_id, placement.reserved.worker_id);
        self.unreserve(&key, &placement.execution.id);
    }

    fn unreserve(&self, key: &WorkerKey, exec: &ExecutionId) {
        if let Some(slot) = self.registry().workers.get_mut(key) {
            slot.active.remove(exec);
        }
    }

    fn assignment(&self, run: &RunRecord, exec: &ExecutionId, token: String) -> TaskAssignment {
        let created = Timestamp::from_unix_millis(run.created_at);
        let mut env = BTreeMap::new();
        env.insert(ENV_RUN_TOKEN.to_owned(), token);
        env.insert(ENV_RUN_ID.to_owned(), run.id.0.clone());
        env.insert(ENV_EXECUTION_ID.to_owned(), exec.0.clone());
        env.insert(ENV_SERVER_URL.to_owned(), self.public_url.clone());
        // A fresh run: the agent has no transcript to fetch (a follow-up sets 1).
        env.insert(ENV_RUN_CONTINUES.to_owned(), "0".to_owned());
        // The run's trace: the worker's and the agent's spans nest under it.
        env.insert(
            hangar_telemetry::trace::ENV.to_owned(),
            TraceParent::for_run(&run.id.0).header(),
        );
        env.insert("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned());
        env.insert("GH_PROMPT_DISABLED".to_owned(), "1".to_owned());
        TaskAssignment {
            task_id: run.id.0.clone(),
            execution_id: exec.0.clone(),
            task: Task {
                id: run.id.0.clone(),
                title: run.title.clone(),
                task_definition: TaskDefinition {
                    prompt: run.prompt.clone(),
                },
                created_at: created,
                updated_at: Timestamp::from_unix_millis(run.updated_at),
                owner: TaskOwner {
                    kind: "TEAM".to_owned(),
                    id: run.team_id,
                },
                agent_config_snapshot: Some(run.config.clone()),
                agent_conversation_id: None,
            },
            docker_image: None,
            sidecar_image: None,
            env_vars: env,
            additional_sidecars: Vec::new(),
            additional_oz_args: Vec::new(),
            instance_shape: None,
            environment: None,
        }
    }

    /// Adds a run's environment to its assignment: image, repositories, setup
    /// commands, network policy, variables and decrypted secrets.
    async fn attach_environment(
        &self,
        run: &RunRecord,
        snapshot: &str,
        assignment: &mut TaskAssignment,
    ) -> StoreResult<()> {
        let env = parse_environment_snapshot(snapshot)?;
        let mut secret_names: Vec<String> = env.secrets.clone();
        secret_names.extend(env.repos.iter().filter_map(|r| r.token_secret.clone()));
        secret_names.sort();
        secret_names.dedup();
        for (k, v) in &env.env {
            assignment.env_vars.insert(k.clone(), v.clone());
        }
        let mut injected = Vec::new();
        for name in &secret_names {
            match self.store.secret(run.team_id, name).await? {
                Some(s) => match self
                    .secrets
                    .open(run.team_id, name, &s.nonce, &s.ciphertext)
                {
                    Some(value) => {
                        assignment.env_vars.insert(name.clone(), value);
                        injected.push(name.clone());
                    }
                    None => {
                        tracing::error!(run_id = %run.id, secret = %name, "secret does not decrypt with this master key; not injected")
                    }
                },
                None => {
                    tracing::warn!(run_id = %run.id, secret = %name, "secret was deleted after the run was created; not injected")
                }
            }
        }
        if !injected.is_empty() {
            assignment.env_vars.insert(
                hangar_protocol::ENV_SECRET_NAMES.to_owned(),
                injected.join(","),
            );
        }
        assignment.docker_image = env.docker_image.clone();
        assignment.environment = Some(environment_spec(
            run.config.environment_id.clone().unwrap_or_default(),
            &env,
            injected,
        ));
        Ok(())
    }
}

/// Reads a run's environment snapshot (stored at creation).
pub(crate) fn parse_environment_snapshot(
    snapshot: &str,
) -> StoreResult<hangar_protocol::environment::EnvironmentRequest> {
    serde_json::from_str(snapshot)
        .map_err(|e| hangar_store::StoreError::Corrupt(format!("environment snapshot: {e}")))
}

/// What a sandbox is prepared from: the environment `id`'s snapshot `env`,
/// with `secret_names` naming the variables that carry its secrets. The
/// worker gets it in the assignment; an agent started by a stock worker
/// fetches it (`GET /agent/runs/{id}/environment`).
pub(crate) fn environment_spec(
    id: String,
    env: &hangar_protocol::environment::EnvironmentRequest,
    secret_names: Vec<String>,
) -> hangar_protocol::worker::EnvironmentSpec {
    hangar_protocol::worker::EnvironmentSpec {
        id,
        name: env.name.clone(),
        docker_image: env.docker_image.clone(),
        repos: env
            .repos
            .iter()
            .map(|r| hangar_protocol::worker::RepoSpec {
                url: r.url.clone(),
                git_ref: r.git_ref.clone(),
                token_env: r.token_secret.clone(),
                path: r.path.clone(),
            })
            .collect(),
        setup_commands: env.setup_commands.clone(),
        network_policy: env.network_policy.clone(),
        secret_names,
    }
}
