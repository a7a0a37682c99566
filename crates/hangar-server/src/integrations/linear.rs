//! Linear (webhooks): an issue assigned to the agent's Linear user, or a
//! comment that mentions it, starts a run with the issue as context; later
//! comments that mention it steer that run.
//!
//! A request is verified before its body is believed: `Linear-Signature`
//! (hex HMAC-SHA256 of the raw body with the webhook's signing secret),
//! then the body's `webhookTimestamp` within five minutes. Each delivery is
//! claimed once (`Linear-Delivery` and the signature). The agent's Linear
//! user is the API key's (`viewer`); the asker is linked to a Hangar user by
//! the e-mail of their Linear account. Runs carry the metadata
//! `ticket_id` (`ENG-123`) and `ticket_source: linear`, as in the Oz API.
//! Replies are comments on the issue (GraphQL `commentCreate`, and
//! `commentUpdate` for the status comment).

use super::open_secret;
use super::provider::{self, Ask, Outcome, ReplyTo, clip, team_secret};
use super::signature::{self, LINEAR_DELIVERY_HEADER, LINEAR_SIGNATURE_HEADER};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use hangar_protocol::integration::IntegrationSettings;
use hangar_protocol::{Metadata, SecretString};
use hangar_store::IntegrationRecord;
use serde_json::{Value, json};

/// Linear's API.
pub const DEFAULT_API: &str = "https://api.linear.app";

/// `POST /integrations/linear/{id}/events`.
pub async fn events(
    app: &AppState,
    record: &IntegrationRecord,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let secret = open_secret(app, record)?;
    let sig = signature::verify_body(
        secret.expose().as_bytes(),
        headers,
        LINEAR_SIGNATURE_HEADER,
        "",
        body,
    )
    .map_err(|e| ApiError::Unauthenticated(format!("Linear webhook refused: {e}")))?;
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("not a Linear webhook payload: {e}")))?;
    let ts = payload["webhookTimestamp"].as_i64().ok_or_else(|| {
        ApiError::Unauthenticated(
            "Linear webhook refused: no `webhookTimestamp` in the body".into(),
        )
    })?;
    provider::check_body_timestamp(ts, true)?;
    let settings = provider::settings_of(record)?;
    let delivery = headers
        .get(LINEAR_DELIVERY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|d| clip(d.trim(), 200))
        .filter(|d| !d.is_empty());
    let mut keys = vec![format!("sig:{sig}")];
    keys.extend(delivery.iter().map(|d| format!("id:{d}")));
    // Only issues and comments may be requests; anything else is answered
    // before it is claimed or any API is called.
    let kind = payload["type"].as_str().unwrap_or_default();
    let action = payload["action"].as_str().unwrap_or_default();
    if !matches!(
        (kind, action),
        ("Issue", "create" | "update") | ("Comment", "create")
    ) {
        return Ok(Outcome::Ignored {
            reason: format!("Linear `{kind}` `{action}` is not a request"),
        }
        .into_response());
    }
    provider::once(app, record, &keys, async {
        match ask(app, record, &settings, &payload, delivery).await? {
            Ok(ask) => provider::handle(app, record, &settings, ask).await,
            Err(reason) => Ok(Outcome::Ignored { reason }),
        }
    })
    .await
    .map(IntoResponse::into_response)
}

/// Whether `body` mentions `@handle` (case-insensitively, as a whole word).
pub fn mentions(body: &str, handle: &str) -> bool {
    let needle = format!("@{}", handle.to_lowercase());
    let lower = body.to_lowercase();
    lower.match_indices(&needle).any(|(i, _)| {
        lower[i + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_')))
    })
}

/// The request in a payload: `(issue id, asker's id, text)`, or why it is
/// none. An issue newly assigned to the agent (`viewer_id`), or a comment
/// by someone else that mentions `@handle`.
fn request(
    payload: &Value,
    viewer_id: &str,
    handle: &str,
) -> Result<(String, String, String), String> {
    let data = &payload["data"];
    if payload["type"] == "Issue" {
        let assigned = data["assigneeId"].as_str() == Some(viewer_id);
        let newly =
            payload["action"] == "create" || payload["updatedFrom"].get("assigneeId").is_some();
        if !(assigned && newly) {
            return Err("the issue was not just assigned to the agent".into());
        }
        return Ok((
            data["id"].as_str().unwrap_or_default().to_owned(),
            payload["actor"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            "Work on this issue: it was assigned to you.".to_owned(),
        ));
    }
    let body = data["body"].as_str().unwrap_or_default();
    let author = data["userId"].as_str().unwrap_or_default();
    if author == viewer_id || !mentions(body, handle) {
        return Err(format!("the comment does not mention @{handle}"));
    }
    let issue = data["issueId"]
        .as_str()
        .or(data["issue"]["id"].as_str())
        .unwrap_or_default();
    Ok((issue.to_owned(), author.to_owned(), body.to_owned()))
}

/// Reads a request out of a verified payload; `Ok(Err(reason))` when it is
/// not one.
async fn ask(
    app: &AppState,
    record: &IntegrationRecord,
    settings: &IntegrationSettings,
    payload: &Value,
    delivery: Option<String>,
) -> ApiResult<Result<Ask, String>> {
    let api = Api::new(app, record, settings)
        .await
        .map_err(ApiError::BadGateway)?;
    let viewer = api
        .graphql("query { viewer { id name displayName } }", json!({}))
        .await
        .map_err(ApiError::BadGateway)?;
    let viewer = &viewer["viewer"];
    let viewer_id = viewer["id"].as_str().unwrap_or_default();
    let handle = settings
        .mention
        .as_deref()
        .or(viewer["displayName"].as_str())
        .unwrap_or("hangar")
        .to_owned();
    let (issue_id, asker, text) = match request(payload, viewer_id, &handle) {
        Ok(found) => found,
        Err(reason) => return Ok(Err(reason)),
    };
    if issue_id.is_empty() || asker.is_empty() {
        return Ok(Err("the payload names no issue or no user".into()));
    }
    let issue = api
        .graphql(
            "query($id: String!) { issue(id: $id) { id identifier title description url \
             team { key } comments(first: 50) { nodes { body user { name } } } } }",
            json!({"id": issue_id}),
        )
        .await
        .map_err(ApiError::BadGateway)?;
    let issue = &issue["issue"];
    let team = issue["team"]["key"].as_str().unwrap_or_default();
    if !settings.linear_teams.is_empty() && !settings.linear_teams.iter().any(|t| t == team) {
        return Ok(Err(format!("Linear team {team} may not trigger runs")));
    }
    let email = match payload["actor"]["email"]
        .as_str()
        .filter(|_| payload["actor"]["id"].as_str() == Some(asker.as_str()))
    {
        Some(e) => Some(e.to_owned()),
        None => api
            .graphql(
                "query($id: String!) { user(id: $id) { email } }",
                json!({"id": asker}),
            )
            .await
            .map_err(ApiError::BadGateway)?["user"]["email"]
            .as_str()
            .map(str::to_owned),
    };
    let identifier = issue["identifier"].as_str().unwrap_or_default();
    let title = issue["title"].as_str().unwrap_or_default();
    let mut context = format!(
        "Linear issue {identifier}: {title}\n\n{}",
        issue["description"].as_str().unwrap_or_default()
    );
    let comments = issue["comments"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !comments.is_empty() {
        context.push_str("\n\nComments:");
        for c in &comments {
            context.push_str(&format!(
                "\n{}: {}",
                c["user"]["name"].as_str().unwrap_or("someone"),
                c["body"].as_str().unwrap_or_default()
            ));
        }
    }
    let mut metadata = Metadata::new();
    metadata.insert("ticket_id".into(), clip(identifier, 256));
    metadata.insert("ticket_source".into(), "linear".into());
    Ok(Ok(Ask {
        reply_to: ReplyTo::Linear {
            issue_id: issue_id.clone(),
        },
        thread_key: issue_id,
        actor: asker,
        email,
        text,
        context: Some(context),
        title: format!("{identifier}: {title}"),
        url: issue["url"].as_str().map(str::to_owned),
        delivery_id: delivery,
        metadata: Some(metadata),
    }))
}

/// Linear's GraphQL API with an integration's API key.
pub struct Api {
    base: String,
    key: SecretString,
}

impl Api {
    /// The API of `record`: its base URL and the API key its settings name.
    pub async fn new(
        app: &AppState,
        record: &IntegrationRecord,
        settings: &IntegrationSettings,
    ) -> Result<Api, String> {
        let name = settings.api_key_secret.as_deref().ok_or(
            "the Linear integration has no API key: set `--api-key-secret NAME` (a team secret holding the key)",
        )?;
        Ok(Api {
            base: provider::api_base(settings, DEFAULT_API),
            key: team_secret(app, record.team_id, name).await?,
        })
    }

    /// Who the API key is (`viewer`).
    pub async fn whoami(&self) -> Result<String, String> {
        let v = self
            .graphql("query { viewer { id name displayName } }", json!({}))
            .await?;
        Ok(format!(
            "Linear: connected as {} (the agent's user: assign issues to it, or mention @{})",
            v["viewer"]["name"].as_str().unwrap_or("?"),
            v["viewer"]["displayName"].as_str().unwrap_or("?")
        ))
    }

    /// Runs a query or mutation; GraphQL errors are errors.
    async fn graphql(&self, query: &str, variables: Value) -> Result<Value, String> {
        let key = self.key.expose();
        // Personal API keys are sent as they are, OAuth tokens as bearer tokens.
        let auth = if key.starts_with("lin_oauth") {
            format!("Bearer {key}")
        } else {
            key.to_owned()
        };
        let resp = provider::http()
            .post(format!("{}/graphql", self.base))
            .header("authorization", auth)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .map_err(|e| format!("Linear API: {e}"))?;
        let status = resp.status();
        let value: Value = resp
            .json()
            .await
            .map_err(|e| format!("Linear API: HTTP {status}, not JSON: {e}"))?;
        if let Some(errors) = value["errors"].as_array().filter(|e| !e.is_empty()) {
            return Err(format!(
                "Linear API: {}",
                errors[0]["message"].as_str().unwrap_or("error")
            ));
        }
        if !status.is_success() {
            return Err(format!("Linear API: HTTP {status}"));
        }
        Ok(value["data"].clone())
    }
}

#[async_trait::async_trait]
impl provider::ProviderApi for Api {
    async fn post(&self, to: &ReplyTo, text: &str) -> Result<String, String> {
        let ReplyTo::Linear { issue_id } = to else {
            return Err("not a Linear issue".into());
        };
        let v = self
            .graphql(
                "mutation($input: CommentCreateInput!) { commentCreate(input: $input) { success comment { id } } }",
                json!({"input": {"issueId": issue_id, "body": text}}),
            )
            .await?;
        v["commentCreate"]["comment"]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "Linear commentCreate: no comment id in the answer".into())
    }

    async fn update(&self, _to: &ReplyTo, id: &str, text: &str) -> Result<(), String> {
        self.graphql(
            "mutation($id: String!, $input: CommentUpdateInput!) { commentUpdate(id: $id, input: $input) { success } }",
            json!({"id": id, "input": {"body": text}}),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mention_is_a_whole_handle() {
        assert!(mentions("hey @Hangar can you fix this", "hangar"));
        assert!(mentions("@hangar.", "hangar"));
        assert!(!mentions("@hangarbot fix", "hangar"));
        assert!(!mentions("email me at x@hangar-ops.dev", "hangar"));
        assert!(!mentions("no mention", "hangar"));
    }
}
