//! Creating a run: the rules every trigger shares.
//!
//! [`Runs::create`] validates a [`RunAgentRequest`] into a run
//! ([`Runs::validate`]), resolves its links and environment, stores it and
//! hands it to the dispatcher; [`Runs::create_local`] registers a run that an
//! unmanaged `hangar agent run` executes itself. The scheduler builds its
//! runs from a stored schedule and resolves their model with
//! [`resolve_model`].

use super::{MAX_ATTACHMENTS, MAX_PROMPT_BYTES, Runs, SOURCE_HEADER, options};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use hangar_llm::ProviderRegistry;
use hangar_protocol::environment::EnvironmentRequest;
use hangar_protocol::integration::{IntegrationKind, RunTrigger};
use hangar_protocol::{
    AgentConfig, ExecutionId, RunAgentRequest, RunExecutionLocation, RunId, RunSourceType,
    Timestamp,
};
use hangar_store::{NewExecution, NewRun, RunRecord, StoreError};

/// Who asks for a run: the caller's team and user, and the source a
/// first-party client names (the [`SOURCE_HEADER`] header).
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The caller's team.
    pub team_id: i64,
    /// The caller's user (`None` for a team key).
    pub user_id: Option<i64>,
    /// The [`SOURCE_HEADER`] value, if any.
    pub source: Option<&'a str>,
    /// The integration that asks, recorded on the run (its source is the
    /// integration's: `source` is ignored).
    pub trigger: Option<&'a RunTrigger>,
}

/// A created cloud run.
#[derive(Debug)]
pub struct Created {
    /// The stored run (`QUEUED`).
    pub run: RunRecord,
    /// Whether every worker that could take it was busy when it was created.
    pub at_capacity: bool,
}

/// A registered unmanaged run and the credentials of its only execution.
#[derive(Debug)]
pub struct CreatedLocal {
    /// The stored run (`INPROGRESS`).
    pub run: RunRecord,
    /// Its only execution.
    pub execution_id: ExecutionId,
    /// The execution's run token (shown once).
    pub run_token: String,
}

impl Runs<'_> {
    /// Creates a cloud run (`execution_location: REMOTE`) and hands it to
    /// the dispatcher.
    pub async fn create(&self, who: Requester<'_>, req: &RunAgentRequest) -> ApiResult<Created> {
        let app = self.app;
        let mut new = self.validate(who, req, RunExecutionLocation::Remote)?;
        options::resolve_links(app, who.team_id, &mut new.config).await?;
        let snapshot = self.resolve_environment(who.team_id, &mut new).await?;
        let host = new.config.worker_host.clone();
        // The fast path: a worker has room, so the run is stored already
        // assigned (one write) and sent from here; otherwise it queues.
        let placement = app.dispatcher.place_new(&new, snapshot.is_some());
        let stored = match &placement {
            Some(p) => {
                app.store
                    .create_assigned_run(new, p.execution.clone())
                    .await
            }
            None => app.store.create_run(new).await,
        };
        let run = match stored {
            Ok(run) => run,
            Err(e) => {
                if let Some(p) = placement {
                    app.dispatcher.unplace(p);
                }
                return Err(e.into());
            }
        };
        crate::metrics::get().run_created(run.source.as_str());
        hangar_telemetry::trace::record(
            "run.create",
            &hangar_telemetry::trace::TraceParent::for_run(&run.id.0),
            hangar_telemetry::trace::at_millis(run.created_at),
            std::time::SystemTime::now(),
            Vec::new(),
        );
        if let Some(spec) = snapshot {
            app.store.save_run_environment(&run.id, &spec).await?;
        }
        let at_capacity = match placement {
            Some(p) => {
                app.dispatcher.placed(&run, p);
                false
            }
            None => {
                let at_capacity = app.dispatcher.at_capacity(who.team_id, host.as_deref());
                app.dispatcher.submit(run.clone());
                at_capacity
            }
        };
        tracing::info!(
            run_id = %run.id,
            team_id = who.team_id,
            worker_host = host.as_deref().unwrap_or("-"),
            trace_id = %hangar_telemetry::trace::TraceParent::for_run(&run.id.0).trace_id_hex(),
            "run created"
        );
        Ok(Created { run, at_capacity })
    }

    /// Registers a run that an unmanaged `hangar agent run` executes itself
    /// (`execution_location: LOCAL`), with its only execution and run token.
    /// The run token dies with the API key that registered the run.
    pub async fn create_local(
        &self,
        principal: &Principal,
        who: Requester<'_>,
        req: &RunAgentRequest,
    ) -> ApiResult<CreatedLocal> {
        let app = self.app;
        let issuer_key_id = match principal {
            Principal::ApiKey { key_id, .. } => Some(key_id.clone()),
            _ => None,
        };
        let mut new = self.validate(who, req, RunExecutionLocation::Local)?;
        options::resolve_links(app, who.team_id, &mut new.config).await?;
        let snapshot = self.resolve_environment(who.team_id, &mut new).await?;
        let (token, token_hash) = crate::auth::new_run_token();
        let exec = NewExecution {
            id: ExecutionId::generate(),
            run_id: new.id.clone(),
            worker_id: hangar_store::LOCAL_WORKER_ID.into(),
            token_hash,
            created_at: new.created_at,
            lease_holder: None,
            lease_expires_at: None,
            issuer_key_id,
        };
        let execution_id = exec.id.clone();
        let run = app.store.create_local_run(new, exec).await?;
        crate::metrics::get().run_created(run.source.as_str());
        if let Some(spec) = snapshot {
            app.store.save_run_environment(&run.id, &spec).await?;
        }
        tracing::info!(run_id = %run.id, team_id = who.team_id, "local run registered");
        Ok(CreatedLocal {
            run,
            execution_id,
            run_token: token,
        })
    }

    /// Validates a create request into a run to store (model resolved,
    /// title derived, source recorded).
    pub fn validate(
        &self,
        who: Requester<'_>,
        req: &RunAgentRequest,
        location: RunExecutionLocation,
    ) -> ApiResult<NewRun> {
        let mut config = req.config.clone().unwrap_or_default();
        options::from_request(req, &mut config)?;
        if let Some(skill) = &req.skill {
            config.skill_spec = Some(skill.clone());
        }
        let prompt = req.prompt.as_deref().map(str::trim).unwrap_or("");
        check_limits(req, prompt, &config)?;
        self.model_for(&mut config, location)?;
        let source = match who.trigger {
            Some(trigger) => {
                config.hangar.get_or_insert_default().trigger = Some(trigger.clone());
                source_of_integration(trigger.kind)
            }
            None => source_of(who.source, location)?,
        };
        let title = req
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| derive_title(prompt));
        Ok(NewRun {
            id: RunId::generate(),
            team_id: who.team_id,
            creator_user_id: who.user_id,
            title,
            prompt: prompt.to_owned(),
            source,
            execution_location: location,
            config,
            created_at: Timestamp::now().unix_millis(),
        })
    }

    /// Resolves the model now so a typo fails here, not minutes later in a
    /// sandbox; a run that names none gets the default model (a cloud run
    /// needs one).
    fn model_for(&self, config: &mut AgentConfig, location: RunExecutionLocation) -> ApiResult<()> {
        let app = self.app;
        match &config.model_id {
            Some(model) => {
                app.llm
                    .providers
                    .resolve(model)
                    .map_err(|e| ApiError::BadRequest(format!("`config.model_id`: {e}")))?;
            }
            None => {
                if let Some(default) = app.llm.default_model.clone() {
                    config.model_id = Some(default);
                } else if location == RunExecutionLocation::Remote {
                    return Err(ApiError::BadRequest(
                        "no model given and no default model is configured: set `config.model_id` \
                         (e.g. `openai/gpt-5`), or configure a provider on the server \
                         (OPENAI_API_KEY, ANTHROPIC_API_KEY, or `providers:` in the config file)"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks the run's environment exists in the team, normalises a name to
    /// its id, and returns the configuration snapshot to store with the run.
    async fn resolve_environment(
        &self,
        team_id: i64,
        run: &mut NewRun,
    ) -> ApiResult<Option<String>> {
        let Some(id) = run.config.environment_id.clone() else {
            return Ok(None);
        };
        let env = match self.app.store.environment(team_id, &id).await {
            Ok(env) => env,
            Err(StoreError::NotFound) => {
                return Err(ApiError::BadRequest(format!(
                    "`config.environment_id`: environment `{id}` does not exist; list them with `hangar environment list`"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        // Decoded and encoded again: the snapshot is the environment as the
        // API would show it now, whatever the stored text looks like.
        let spec: EnvironmentRequest = serde_json::from_str(&env.spec)
            .map_err(|e| ApiError::Internal(format!("stored environment does not decode: {e}")))?;
        run.config.environment_id = Some(env.id.clone());
        let spec = serde_json::to_string(&spec).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Some(spec))
    }
}

/// The request's own limits: a prompt or a skill, prompt size, attachments,
/// idle timeout, worker host and title.
fn check_limits(req: &RunAgentRequest, prompt: &str, config: &AgentConfig) -> ApiResult<()> {
    let no_skill = config
        .skill_spec
        .as_deref()
        .is_none_or(|s| s.trim().is_empty());
    if prompt.is_empty() && no_skill {
        return Err(ApiError::BadRequest(
            "`prompt` is required (or name a skill with `skill` or `config.skill_spec`)".into(),
        ));
    }
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(ApiError::BadRequest(format!(
            "`prompt` is {} bytes; the limit is {MAX_PROMPT_BYTES}",
            prompt.len()
        )));
    }
    if req
        .attachments
        .as_ref()
        .is_some_and(|a| a.len() > MAX_ATTACHMENTS)
    {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_ATTACHMENTS} attachments are allowed"
        )));
    }
    if let Some(m) = config.idle_timeout_minutes
        && !(1..=60).contains(&m)
    {
        return Err(ApiError::BadRequest(format!(
            "`config.idle_timeout_minutes` is {m}; it must be between 1 and 60"
        )));
    }
    if let Some(host) = &config.worker_host {
        validate_host(host)?;
    }
    if let Some(title) = &req.title
        && title.chars().count() > 200
    {
        return Err(ApiError::BadRequest(
            "`title` must be at most 200 characters".into(),
        ));
    }
    Ok(())
}

/// Where a run came from: the client's [`SOURCE_HEADER`], else `LOCAL` for
/// unmanaged runs and `API` for the others.
fn source_of(header: Option<&str>, location: RunExecutionLocation) -> ApiResult<RunSourceType> {
    match header {
        Some(s) => RunSourceType::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "header `{SOURCE_HEADER}: {s}` is not a run source type"
            ))
        }),
        None if location == RunExecutionLocation::Local => Ok(RunSourceType::Local),
        None => Ok(RunSourceType::Api),
    }
}

/// The run source of an integration's runs (`GITHUB_WEBHOOK` is the newer
/// Oz value for runs started from GitHub comments and labels).
fn source_of_integration(kind: IntegrationKind) -> RunSourceType {
    match kind {
        IntegrationKind::Slack => RunSourceType::Slack,
        IntegrationKind::Linear => RunSourceType::Linear,
        IntegrationKind::Github => RunSourceType::GithubWebhook,
        IntegrationKind::Webhook => RunSourceType::Webhook,
    }
}

fn derive_title(prompt: &str) -> String {
    let line = prompt
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("Agent run");
    let mut title: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
        title.push('…');
    }
    title
}

fn validate_host(host: &str) -> ApiResult<()> {
    if host.is_empty() || host.len() > 128 || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ApiError::BadRequest(format!(
            "`config.worker_host` `{host}` is invalid: it must equal a worker's `--worker-id` (no spaces or `/`)"
        )));
    }
    Ok(())
}

/// The scheduler's model rule (schedules and their runs): checks the
/// configured model, or fills in the default one.
pub fn resolve_model(
    llm: &ProviderRegistry,
    default_model: Option<&str>,
    config: &mut AgentConfig,
) -> Result<(), String> {
    match &config.model_id {
        Some(model) => llm
            .resolve(model)
            .map(|_| ())
            .map_err(|e| format!("`agent_config.model_id`: {e}")),
        None => match default_model {
            Some(default) => {
                config.model_id = Some(default.to_owned());
                Ok(())
            }
            None => Err("no model given and no default model is configured: set \
                 `agent_config.model_id` (e.g. `openai/gpt-5`), or configure a provider on the server"
                .to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_the_first_line() {
        assert_eq!(derive_title("\n  Fix the bug\nmore"), "Fix the bug");
        assert_eq!(derive_title(&"x".repeat(100)).chars().count(), 81);
    }
}
