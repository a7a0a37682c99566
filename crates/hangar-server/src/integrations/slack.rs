//! Slack (Events API): a mention of the app in a channel or thread, or a
//! direct message to it, starts a run, or steers the run already started
//! in that thread.
//!
//! A request is verified before its body is read: Slack's `v0` signature
//! (HMAC-SHA256 of `v0:<timestamp>:<raw body>` with the app's signing
//! secret) and a timestamp within five minutes. `url_verification` is
//! answered with its challenge. Each event is claimed once by its
//! `event_id`, so Slack's retries start nothing twice. The asker is linked
//! to a Hangar user by the e-mail of their Slack profile (`users.info`);
//! the thread's earlier messages (`conversations.replies`) become the run's
//! context. Replies go through the Web API with the bot token
//! (`chat.postMessage` in the thread, `chat.update` for the status message).

use super::provider::{self, Ask, Outcome, ReplyTo, clip, team_secret};
use super::signature::{self, SignatureError};
use super::{SIGNATURE_WINDOW, open_secret};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use hangar_protocol::Timestamp;
use hangar_protocol::integration::IntegrationSettings;
use hangar_store::IntegrationRecord;
use serde::Deserialize;
use serde_json::{Value, json};

/// Slack's Web API.
pub const DEFAULT_API: &str = "https://slack.com/api";

/// Earlier messages of a thread taken as context.
const CONTEXT_MESSAGES: usize = 50;

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    event: Option<Event>,
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subtype: Option<String>,
    #[serde(default)]
    bot_id: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    channel_type: Option<String>,
    #[serde(default)]
    ts: String,
    #[serde(default)]
    thread_ts: Option<String>,
}

/// `POST /integrations/slack/{id}/events`.
pub async fn events(
    app: &AppState,
    record: &IntegrationRecord,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let secret = open_secret(app, record)?;
    let now = Timestamp::now().unix_millis().div_euclid(1000);
    let sig = signature::verify_slack(
        secret.expose().as_bytes(),
        headers,
        body,
        now,
        SIGNATURE_WINDOW,
    )
    .map_err(refused)?;
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("not a Slack Events API payload: {e}")))?;
    match envelope.kind.as_str() {
        "url_verification" => {
            return Ok(
                Json(json!({"challenge": envelope.challenge.unwrap_or_default()})).into_response(),
            );
        }
        "event_callback" => {}
        other => {
            return Ok(Outcome::Ignored {
                reason: format!("Slack payload type `{other}` is not handled"),
            }
            .into_response());
        }
    }
    let (Some(event_id), Some(event)) = (envelope.event_id, envelope.event) else {
        return Err(ApiError::BadRequest(
            "an `event_callback` needs `event_id` and `event`".into(),
        ));
    };
    let settings = provider::settings_of(record)?;
    if let Some(reason) = ignored(&event, &settings) {
        return Ok(Outcome::Ignored { reason }.into_response());
    }
    let keys = vec![format!("id:{event_id}"), format!("sig:{sig}")];
    provider::once(app, record, &keys, async {
        let ask = ask(app, record, &settings, event, &event_id).await?;
        provider::handle(app, record, &settings, ask).await
    })
    .await
    .map(IntoResponse::into_response)
}

fn refused(e: SignatureError) -> ApiError {
    ApiError::Unauthenticated(format!("Slack request refused: {e}"))
}

/// Why an event starts nothing, if it does not.
fn ignored(event: &Event, settings: &IntegrationSettings) -> Option<String> {
    let direct = event.kind == "message" && event.channel_type.as_deref() == Some("im");
    if event.kind != "app_mention" && !direct {
        return Some(format!(
            "Slack event `{}` is not a mention or a direct message",
            event.kind
        ));
    }
    if event.bot_id.is_some() || event.subtype.is_some() {
        return Some("messages from bots and message edits are not requests".into());
    }
    if event.user.is_none() || event.channel.is_empty() || event.ts.is_empty() {
        return Some("the event has no user, channel or ts".into());
    }
    if !direct && !settings.channels.is_empty() && !settings.channels.contains(&event.channel) {
        return Some(format!("channel {} may not trigger runs", event.channel));
    }
    None
}

/// Removes the app's mention (`<@U123>`) from a message.
fn without_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        out.push_str(&rest[..start]);
        match rest[start..].find('>') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn ask(
    app: &AppState,
    record: &IntegrationRecord,
    settings: &IntegrationSettings,
    event: Event,
    event_id: &str,
) -> ApiResult<Ask> {
    let api = Api::new(app, record, settings)
        .await
        .map_err(ApiError::BadGateway)?;
    let user = event.user.clone().unwrap_or_default();
    let email = api.email_of(&user).await.map_err(ApiError::BadGateway)?;
    let thread_ts = event.thread_ts.clone().unwrap_or_else(|| event.ts.clone());
    let context = match &event.thread_ts {
        Some(ts) => api
            .thread_before(&event.channel, ts, &event.ts)
            .await
            .map_err(ApiError::BadGateway)?,
        None => None,
    };
    let text = without_mentions(&event.text);
    let text = if text.is_empty() {
        "(no text: see the thread)".to_owned()
    } else {
        text
    };
    Ok(Ask {
        thread_key: format!("{}:{thread_ts}", event.channel),
        url: Some(format!(
            "https://slack.com/archives/{}/p{}",
            event.channel,
            event.ts.replace('.', "")
        )),
        reply_to: ReplyTo::Slack {
            channel: event.channel,
            thread_ts,
        },
        actor: user,
        email,
        title: clip(&text, 80),
        text,
        context,
        delivery_id: Some(event_id.to_owned()),
        metadata: None,
    })
}

/// Slack's Web API with an integration's bot token.
pub struct Api {
    base: String,
    token: hangar_protocol::SecretString,
}

impl Api {
    /// The API of `record`: its base URL and the bot token its settings name.
    pub async fn new(
        app: &AppState,
        record: &IntegrationRecord,
        settings: &IntegrationSettings,
    ) -> Result<Api, String> {
        let name = settings.bot_token_secret.as_deref().ok_or(
            "the Slack integration has no bot token: set `--bot-token-secret NAME` (a team secret holding the xoxb- token)",
        )?;
        Ok(Api {
            base: provider::api_base(settings, DEFAULT_API),
            token: team_secret(app, record.team_id, name).await?,
        })
    }

    /// Calls a Web API method; Slack answers 200 with `ok: false` on errors.
    async fn call(
        &self,
        method: &str,
        form: Option<&Value>,
        query: &[(&str, &str)],
    ) -> Result<Value, String> {
        let url = format!("{}/{method}", self.base);
        let req = match form {
            Some(body) => provider::http().post(&url).json(body),
            None => provider::http().get(&url).query(query),
        };
        let resp = req
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| format!("Slack {method}: {e}"))?;
        let status = resp.status();
        let value: Value = resp
            .json()
            .await
            .map_err(|e| format!("Slack {method}: HTTP {status}, not JSON: {e}"))?;
        if value["ok"] != true {
            return Err(format!(
                "Slack {method}: {}",
                value["error"].as_str().unwrap_or("not ok")
            ));
        }
        Ok(value)
    }

    /// Who the bot token is (`auth.test`).
    pub async fn whoami(&self) -> Result<String, String> {
        let v = self.call("auth.test", Some(&json!({})), &[]).await?;
        Ok(format!(
            "Slack: connected as @{} in {}",
            v["user"].as_str().unwrap_or("?"),
            v["team"].as_str().unwrap_or("?")
        ))
    }

    /// The e-mail of a Slack user's profile (`users:read.email` scope).
    async fn email_of(&self, user: &str) -> Result<Option<String>, String> {
        let v = self.call("users.info", None, &[("user", user)]).await?;
        Ok(v["user"]["profile"]["email"].as_str().map(str::to_owned))
    }

    /// A thread's messages before `before`, as context.
    async fn thread_before(
        &self,
        channel: &str,
        thread_ts: &str,
        before: &str,
    ) -> Result<Option<String>, String> {
        let limit = CONTEXT_MESSAGES.to_string();
        let v = self
            .call(
                "conversations.replies",
                None,
                &[("channel", channel), ("ts", thread_ts), ("limit", &limit)],
            )
            .await?;
        let lines: Vec<String> = v["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|m| m["ts"].as_str().is_some_and(|ts| ts != before))
            .map(|m| {
                format!(
                    "{}: {}",
                    m["user"]
                        .as_str()
                        .or(m["bot_id"].as_str())
                        .unwrap_or("someone"),
                    m["text"].as_str().unwrap_or_default()
                )
            })
            .collect();
        Ok((!lines.is_empty()).then(|| {
            format!(
                "Earlier messages in the Slack thread:\n{}",
                lines.join("\n")
            )
        }))
    }
}

#[async_trait::async_trait]
impl provider::ProviderApi for Api {
    async fn post(&self, to: &ReplyTo, text: &str) -> Result<String, String> {
        let ReplyTo::Slack { channel, thread_ts } = to else {
            return Err("not a Slack thread".into());
        };
        let v = self
            .call(
                "chat.postMessage",
                Some(&json!({"channel": channel, "thread_ts": thread_ts, "text": text})),
                &[],
            )
            .await?;
        v["ts"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "Slack chat.postMessage: no `ts` in the answer".into())
    }

    async fn update(&self, to: &ReplyTo, id: &str, text: &str) -> Result<(), String> {
        let ReplyTo::Slack { channel, .. } = to else {
            return Err("not a Slack thread".into());
        };
        self.call(
            "chat.update",
            Some(&json!({"channel": channel, "ts": id, "text": text})),
            &[],
        )
        .await
        .map(|_| ())
    }

    fn link(&self, url: &str, text: &str) -> String {
        let text: String = text
            .chars()
            .map(|c| if matches!(c, '<' | '>' | '|') { ' ' } else { c })
            .collect();
        format!("<{url}|{text}>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_removed_from_the_request() {
        assert_eq!(without_mentions("<@U0BOT> fix the build"), "fix the build");
        assert_eq!(
            without_mentions("hey <@U0BOT>  please <@U2> look"),
            "hey please look"
        );
        assert_eq!(without_mentions("<@broken"), "<@broken");
    }

    #[test]
    fn only_mentions_and_direct_messages_from_people_are_requests() {
        let event = |kind: &str, channel_type: Option<&str>| Event {
            kind: kind.into(),
            subtype: None,
            bot_id: None,
            user: Some("U1".into()),
            text: "hi".into(),
            channel: "C1".into(),
            channel_type: channel_type.map(str::to_owned),
            ts: "1.0".into(),
            thread_ts: None,
        };
        let all = IntegrationSettings::default();
        assert_eq!(ignored(&event("app_mention", None), &all), None);
        assert_eq!(ignored(&event("message", Some("im")), &all), None);
        assert!(ignored(&event("message", Some("channel")), &all).is_some());
        let mut bot = event("app_mention", None);
        bot.bot_id = Some("B1".into());
        assert!(ignored(&bot, &all).is_some());
        let only_c2 = IntegrationSettings {
            channels: vec!["C2".into()],
            ..IntegrationSettings::default()
        };
        assert!(ignored(&event("app_mention", None), &only_c2).is_some());
        // A direct message is not in a channel of the list, and is allowed.
        assert_eq!(ignored(&event("message", Some("im")), &only_c2), None);
    }
}
