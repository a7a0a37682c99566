//! What the Slack, Linear and GitHub integrations share once a request is
//! verified: who asked (a provider user linked to a Hangar user by e-mail),
//! the thread they asked in, and what that becomes: a new run recorded with
//! its thread, or a follow-up to the run already started there.
//!
//! Each provider's module reads its events into an [`Ask`] and speaks its
//! own API through a [`ProviderApi`]; [`super::replies`] reports the run's
//! progress and result back into the thread.

use super::{SIGNATURE_WINDOW, kind_of};
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::runs::create::Requester;
use axum::Json;
use axum::response::{IntoResponse, Response};
use hangar_protocol::integration::{IntegrationKind, IntegrationSettings, RunTrigger};
use hangar_protocol::{Metadata, RunAgentRequest, RunId, SecretString, Timestamp};
use hangar_store::{IntegrationRecord, IntegrationThread, StoreError, UserRecord};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long one call to a provider's API may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest text taken from a thread as context, in bytes.
const MAX_CONTEXT_BYTES: usize = 16 * 1024;

/// Where a run's replies go: the provider's address of the thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ReplyTo {
    /// A Slack thread.
    Slack {
        /// Channel id.
        channel: String,
        /// The thread's first message (`ts`).
        thread_ts: String,
    },
    /// A Linear issue.
    Linear {
        /// The issue's id (a UUID).
        issue_id: String,
    },
    /// A GitHub issue or pull request.
    Github {
        /// `owner/name`.
        repo: String,
        /// Issue or pull request number.
        number: u64,
        /// The GitHub App installation that received the event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        installation_id: Option<u64>,
    },
}

/// A request for the agent, read from a verified event.
#[derive(Debug)]
pub struct Ask {
    /// The thread (`ReplyTo`) and its key among the integration's threads.
    pub reply_to: ReplyTo,
    /// See [`IntegrationThread::thread_key`].
    pub thread_key: String,
    /// Who asked: the provider's id for them (for logs and the trigger).
    pub actor: String,
    /// Their e-mail, as the provider tells it (links them to a Hangar user).
    pub email: Option<String>,
    /// What they asked.
    pub text: String,
    /// The thread's earlier messages, the issue's description: context
    /// put before the request.
    pub context: Option<String>,
    /// The run's title.
    pub title: String,
    /// A link back to the message, issue or comment.
    pub url: Option<String>,
    /// The provider's delivery id.
    pub delivery_id: Option<String>,
    /// Run metadata (Linear: `ticket_id`, `ticket_source`).
    pub metadata: Option<Metadata>,
}

/// What became of an [`Ask`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// A new run.
    Started {
        /// The run.
        run_id: String,
        /// Where to watch it.
        run_url: String,
    },
    /// A follow-up to the thread's run.
    FollowedUp {
        /// The run.
        run_id: String,
    },
    /// The asker is not a Hangar user: the how-to reply was posted.
    Unlinked,
    /// Nothing to do (not a mention, a bot's own message, a filtered channel).
    Ignored {
        /// Why.
        reason: String,
    },
    /// A delivery already received (the provider retried it).
    Duplicate,
    /// The run could not be started for a reason a retry would not change
    /// (an unknown environment, a budget spent): the reason was replied.
    Refused {
        /// Why, as replied in the thread.
        reason: String,
    },
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// The settings of a stored integration.
pub fn settings_of(record: &IntegrationRecord) -> ApiResult<IntegrationSettings> {
    serde_json::from_str(&record.settings).map_err(|e| {
        ApiError::Internal(format!(
            "integration {} settings do not decode: {e}",
            record.id
        ))
    })
}

/// The value of the team secret `name` (an API token an integration names).
pub async fn team_secret(app: &AppState, team_id: i64, name: &str) -> Result<SecretString, String> {
    let record = app
        .store
        .secret(team_id, name)
        .await
        .map_err(|e| format!("reading team secret `{name}`: {e}"))?
        .ok_or_else(|| {
            format!(
                "team secret `{name}` does not exist; create it with `hangar secret create {name}`"
            )
        })?;
    app.secrets
        .open(team_id, name, &record.nonce, &record.ciphertext)
        .map(SecretString::from)
        .ok_or_else(|| {
            format!("team secret `{name}` does not decrypt with this server's master key")
        })
}

/// The provider's API base URL: the integration's `api_base_url`, or the
/// provider's public API, without a trailing `/`.
pub fn api_base(settings: &IntegrationSettings, default: &str) -> String {
    settings
        .api_base_url
        .as_deref()
        .unwrap_or(default)
        .trim_end_matches('/')
        .to_owned()
}

/// The HTTP client every provider API call uses (rustls, a timeout, no
/// redirects: a token is never sent on to another host).
pub fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(API_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hangar/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    })
}

/// A provider's API as the replies need it: post a message in the thread,
/// edit one posted before.
#[async_trait::async_trait]
pub trait ProviderApi: Send + Sync {
    /// Posts `text` in the thread; returns the message's id.
    async fn post(&self, to: &ReplyTo, text: &str) -> Result<String, String>;
    /// Replaces the text of the message `id` posted in the thread.
    async fn update(&self, to: &ReplyTo, id: &str, text: &str) -> Result<(), String>;
    /// How a link is written in this provider's messages.
    fn link(&self, url: &str, text: &str) -> String {
        format!("[{text}]({url})")
    }
}

/// The API client of a stored integration, for replies to `to`.
pub async fn api_for(
    app: &AppState,
    record: &IntegrationRecord,
    to: &ReplyTo,
) -> Result<Box<dyn ProviderApi>, String> {
    let settings = settings_of(record).map_err(|e| e.to_string())?;
    Ok(match kind_of(record).map_err(|e| e.to_string())? {
        IntegrationKind::Slack => Box::new(super::slack::Api::new(app, record, &settings).await?),
        IntegrationKind::Linear => Box::new(super::linear::Api::new(app, record, &settings).await?),
        IntegrationKind::Github => {
            let installation = match to {
                ReplyTo::Github {
                    installation_id, ..
                } => *installation_id,
                _ => None,
            };
            let repo = match to {
                ReplyTo::Github { repo, .. } => Some(repo.as_str()),
                _ => None,
            };
            Box::new(super::github::Api::new(app, record, &settings, repo, installation).await?)
        }
        IntegrationKind::Webhook => {
            return Err("generic webhooks have no thread to reply in".into());
        }
    })
}

/// Checks that an integration's secret opens and its credentials work
/// against its provider: what it is connected as, or what is wrong.
pub async fn check(app: &AppState, record: &IntegrationRecord) -> Result<String, String> {
    super::open_secret(app, record).map_err(|e| e.to_string())?;
    let settings = settings_of(record).map_err(|e| e.to_string())?;
    match kind_of(record).map_err(|e| e.to_string())? {
        IntegrationKind::Slack => super::slack::Api::new(app, record, &settings)
            .await?
            .whoami()
            .await,
        IntegrationKind::Linear => super::linear::Api::new(app, record, &settings)
            .await?
            .whoami()
            .await,
        IntegrationKind::Github => super::github::whoami(app, record, &settings).await,
        IntegrationKind::Webhook => Ok(
            "the webhook secret is readable; send a signed request to the webhook URL to start a run"
                .into(),
        ),
    }
}

/// The Hangar user of the team with this e-mail, if any.
pub async fn linked_user(
    app: &AppState,
    team_id: i64,
    email: Option<&str>,
) -> ApiResult<Option<UserRecord>> {
    let Some(email) = email.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    Ok(app
        .store
        .user_by_email(team_id, email)
        .await?
        .filter(|u| !u.disabled))
}

/// The reply to someone who is not a Hangar user, saying how to become one.
pub fn howto_text(provider: &str, email: Option<&str>) -> String {
    let which = match email {
        Some(e) => format!("your {provider} e-mail, {e}, is not"),
        None => format!("{provider} did not tell me your e-mail, so it is not"),
    };
    format!(
        "I can only take requests from members of this Hangar team, and {which} a Hangar user's. \
         Ask a Hangar admin to add you with that e-mail (`hangar user create --email you@example.com`), \
         or set the e-mail of your {provider} profile to the one you use in Hangar; then ask again."
    )
}

/// Whether a delivery is new; records its keys. `false`: a retry or replay.
async fn claim(app: &AppState, record: &IntegrationRecord, keys: &[String]) -> ApiResult<bool> {
    let now = Timestamp::now().unix_millis();
    let fresh = app.store.claim_delivery(&record.id, keys, now).await?;
    if !fresh {
        tracing::info!(integration_id = %record.id, "integration delivery already received; ignored");
    }
    Ok(fresh)
}

/// Handles a delivery once: claims its `keys` (a retry or replay is a
/// [`Outcome::Duplicate`]), then acts; when acting fails, the claim is
/// released so the provider's retry is not refused as a replay.
pub async fn once(
    app: &AppState,
    record: &IntegrationRecord,
    keys: &[String],
    act: impl std::future::Future<Output = ApiResult<Outcome>>,
) -> ApiResult<Outcome> {
    if !claim(app, record, keys).await? {
        return Ok(Outcome::Duplicate);
    }
    let outcome = act.await;
    if outcome.is_err()
        && let Err(e) = app.store.release_delivery(&record.id, keys).await
    {
        tracing::warn!(integration_id = %record.id, error = %e, "could not release a failed delivery");
    }
    outcome
}

/// Checks a timestamp the provider put in the body (Unix milliseconds or
/// seconds, `unit_ms`), once the body is verified.
pub fn check_body_timestamp(ts: i64, unit_ms: bool) -> ApiResult<()> {
    let secs = if unit_ms { ts.div_euclid(1000) } else { ts };
    let now = Timestamp::now().unix_millis().div_euclid(1000);
    super::signature::check_fresh(secs, now, SIGNATURE_WINDOW)
        .map_err(|e| ApiError::Unauthenticated(format!("webhook refused: {e}")))
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Acts on an ask: a follow-up to the thread's run when it has one, a new
/// run otherwise. Posts the how-to reply when the asker is not linked.
pub async fn handle(
    app: &AppState,
    record: &IntegrationRecord,
    settings: &IntegrationSettings,
    ask: Ask,
) -> ApiResult<Outcome> {
    let kind = kind_of(record)?;
    let Some(user) = linked_user(app, record.team_id, ask.email.as_deref()).await? else {
        tracing::info!(integration_id = %record.id, actor = %ask.actor, "request from a user who is not linked; replying how to link");
        let howto = howto_text(provider_name(kind), ask.email.as_deref());
        reply(app, record, &ask.reply_to, &howto).await?;
        return Ok(Outcome::Unlinked);
    };
    if let Some(thread) = app.store.thread_run(&record.id, &ask.thread_key).await? {
        match app
            .store
            .run(record.team_id, &RunId(thread.run_id.clone()))
            .await
        {
            Ok(run) => return follow_up(app, record, &user, &run, &ask).await,
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let reply_to = ask.reply_to.clone();
    match start(app, record, settings, &user, ask).await {
        Err(e) if lasting(&e) => {
            let reason = e.to_string();
            tracing::info!(integration_id = %record.id, error = %reason, "integration request refused; replying why");
            reply(
                app,
                record,
                &reply_to,
                &format!("I could not start a run: {reason}"),
            )
            .await?;
            Ok(Outcome::Refused { reason })
        }
        other => other,
    }
}

/// Posts `text` in the thread `to` at once (a 502 when the provider fails).
async fn reply(
    app: &AppState,
    record: &IntegrationRecord,
    to: &ReplyTo,
    text: &str,
) -> ApiResult<()> {
    let bad_gateway = |e: String| ApiError::BadGateway(format!("{} API: {e}", record.kind));
    let api = api_for(app, record, to).await.map_err(bad_gateway)?;
    api.post(to, text).await.map_err(bad_gateway)?;
    Ok(())
}

/// Whether a run refused with `e` would be refused again if the provider
/// retried (a 4xx other than a conflict or a rate limit).
fn lasting(e: &ApiError) -> bool {
    let status = e.problem().status;
    (400..500).contains(&status) && status != 409 && status != 429
}

fn provider_name(kind: IntegrationKind) -> &'static str {
    match kind {
        IntegrationKind::Slack => "Slack",
        IntegrationKind::Linear => "Linear",
        IntegrationKind::Github => "GitHub",
        IntegrationKind::Webhook => "webhook",
    }
}

async fn follow_up(
    app: &AppState,
    record: &IntegrationRecord,
    user: &UserRecord,
    run: &hangar_store::RunRecord,
    ask: &Ask,
) -> ApiResult<Outcome> {
    let principal = Principal::ApiKey {
        team_id: record.team_id,
        user_id: Some(user.id),
        key_id: format!("integration:{}", record.id),
    };
    app.runs().followup(&principal, run, &ask.text).await?;
    if run.state.is_terminal() {
        // The run was reopened: report it in the thread again.
        app.store.reopen_integration_thread(&run.id.0).await?;
    }
    tracing::info!(integration_id = %record.id, run_id = %run.id, "thread message sent to its run as a follow-up");
    super::replies::nudge();
    Ok(Outcome::FollowedUp {
        run_id: run.id.0.clone(),
    })
}

async fn start(
    app: &AppState,
    record: &IntegrationRecord,
    settings: &IntegrationSettings,
    user: &UserRecord,
    ask: Ask,
) -> ApiResult<Outcome> {
    let kind = kind_of(record)?;
    let mut prompt = String::new();
    if let Some(prefix) = settings.prompt_prefix.as_deref().filter(|p| !p.is_empty()) {
        prompt.push_str(prefix);
        prompt.push_str("\n\n");
    }
    if let Some(context) = ask.context.as_deref().filter(|c| !c.trim().is_empty()) {
        prompt.push_str(&clip(context, MAX_CONTEXT_BYTES));
        prompt.push_str("\n\n");
    }
    prompt.push_str(&format!(
        "Request from {} in {}:\n{}",
        user.display_name,
        provider_name(kind),
        ask.text
    ));
    let req = RunAgentRequest {
        prompt: Some(prompt),
        title: Some(clip(&ask.title, 200)),
        config: settings.agent_config.clone(),
        metadata: ask.metadata.clone(),
        ..RunAgentRequest::default()
    };
    let trigger = RunTrigger {
        kind,
        integration_id: record.id.clone(),
        delivery_id: ask.delivery_id.clone(),
        actor: Some(clip(user.email.as_deref().unwrap_or(&ask.actor), 512)),
        url: ask.url.clone(),
    };
    let created = app
        .runs()
        .create(
            Requester {
                team_id: record.team_id,
                user_id: Some(user.id),
                source: None,
                trigger: Some(&trigger),
            },
            &req,
        )
        .await?;
    let thread = IntegrationThread {
        run_id: created.run.id.0.clone(),
        integration_id: record.id.clone(),
        team_id: record.team_id,
        thread_key: ask.thread_key.clone(),
        reply_to: serde_json::to_string(&ask.reply_to)
            .map_err(|e| ApiError::Internal(format!("encoding a thread: {e}")))?,
        status_ref: None,
        reported: None,
        lease_until: 0,
        created_at: Timestamp::now().unix_millis(),
    };
    app.store.add_integration_thread(&thread).await?;
    super::replies::nudge();
    tracing::info!(integration_id = %record.id, run_id = %created.run.id, thread = %ask.thread_key, "integration started a run");
    Ok(Outcome::Started {
        run_url: format!("{}/runs/{}", app.public_url, created.run.id),
        run_id: created.run.id.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééééé", 7), "éé...");
        assert!(clip(&"x".repeat(100), 10).len() <= 10);
    }

    #[test]
    fn reply_to_round_trips_as_tagged_json() {
        let to = ReplyTo::Github {
            repo: "acme/web".into(),
            number: 12,
            installation_id: Some(7),
        };
        let json = serde_json::to_string(&to).unwrap();
        assert!(json.contains(r#""kind":"github""#), "{json}");
        assert_eq!(serde_json::from_str::<ReplyTo>(&json).unwrap(), to);
    }
}
