//! GitHub (webhooks): a comment on an issue or pull request that mentions
//! the integration's handle (`@hangar`), or a configured label added to
//! one, starts a run in an environment for that repository; later comments
//! that mention the handle steer it. The result is a comment, with the
//! pull request the agent opened.
//!
//! A request is verified before its body is believed: `X-Hub-Signature-256`
//! (`sha256=` and the hex HMAC-SHA256 of the raw body with the webhook
//! secret). GitHub's deliveries carry no signed timestamp, so the comment's
//! (or the issue's) time must be within five minutes; each delivery is
//! claimed once (`X-GitHub-Delivery` and the signature). The commenter is
//! linked to a Hangar user by the public e-mail of their GitHub profile.
//!
//! Authentication is a personal access token (a team secret) or a GitHub
//! App: a JWT (RS256, signed with the App's private key, valid ten minutes)
//! buys an installation token scoped to the one repository, minted for each
//! run's replies and never stored.

use super::open_secret;
use super::provider::{self, Ask, Outcome, ReplyTo, clip, team_secret};
use super::signature::{
    self, GITHUB_DELIVERY_HEADER, GITHUB_EVENT_HEADER, GITHUB_SIGNATURE_HEADER,
};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hangar_protocol::integration::IntegrationSettings;
use hangar_protocol::{SecretString, Timestamp};
use hangar_store::IntegrationRecord;
use serde_json::{Value, json};

/// GitHub's REST API.
pub const DEFAULT_API: &str = "https://api.github.com";
/// The handle mentioned when the integration names none.
pub const DEFAULT_MENTION: &str = "hangar";

/// `POST /integrations/github/{id}/events`.
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
        GITHUB_SIGNATURE_HEADER,
        "sha256=",
        body,
    )
    .map_err(|e| ApiError::Unauthenticated(format!("GitHub webhook refused: {e}")))?;
    let event = headers
        .get(GITHUB_EVENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("not a GitHub webhook payload: {e}")))?;
    let settings = provider::settings_of(record)?;
    let found = match request(&event, &payload, &settings) {
        Ok(found) => found,
        Err(reason) => return Ok(Outcome::Ignored { reason }.into_response()),
    };
    let at = Timestamp::parse(found.at).map_err(|_| {
        ApiError::Unauthenticated(format!(
            "GitHub webhook refused: `{}` is not a time",
            clip(found.at, 40)
        ))
    })?;
    provider::check_body_timestamp(at.unix_millis(), true)?;
    let delivery = headers
        .get(GITHUB_DELIVERY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|d| clip(d.trim(), 200))
        .filter(|d| !d.is_empty());
    let mut keys = vec![format!("sig:{sig}")];
    keys.extend(delivery.iter().map(|d| format!("id:{d}")));
    provider::once(
        app,
        record,
        &keys,
        ask(app, record, &settings, &payload, found, delivery.clone()),
    )
    .await
    .map(IntoResponse::into_response)
}

/// A request found in an event, before any API is called.
#[derive(Debug)]
struct Found<'p> {
    repo: &'p str,
    /// The issue or pull request.
    item: &'p Value,
    /// Who asked (login).
    login: &'p str,
    /// What they asked.
    text: String,
    /// When (RFC 3339): the freshness check.
    at: &'p str,
    /// A link to the comment or item.
    url: Option<&'p str>,
}

/// Whether `body` mentions `@handle` as a whole handle.
fn mentions(body: &str, handle: &str) -> bool {
    super::linear::mentions(body, handle)
}

/// The request an event makes, or why it makes none.
fn request<'p>(
    event: &str,
    payload: &'p Value,
    settings: &IntegrationSettings,
) -> Result<Found<'p>, String> {
    let action = payload["action"].as_str().unwrap_or_default();
    let repo = payload["repository"]["full_name"]
        .as_str()
        .unwrap_or_default();
    let valid = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !repo
        .split_once('/')
        .is_some_and(|(o, n)| valid(o) && valid(n))
    {
        return Err(format!(
            "GitHub event `{event}` names no repository `owner/name` (got `{}`)",
            clip(repo, 100)
        ));
    }
    if !settings.repos.is_empty() && !settings.repos.iter().any(|r| r.eq_ignore_ascii_case(repo)) {
        return Err(format!("repository {repo} may not trigger runs"));
    }
    let handle = settings.mention.as_deref().unwrap_or(DEFAULT_MENTION);
    match (event, action) {
        ("issue_comment" | "pull_request_review_comment", "created") => {
            let comment = &payload["comment"];
            let body = comment["body"].as_str().unwrap_or_default();
            if comment["user"]["type"] == "Bot" {
                return Err("comments from bots are not requests".into());
            }
            if !mentions(body, handle) {
                return Err(format!("the comment does not mention @{handle}"));
            }
            let item = if event == "issue_comment" {
                &payload["issue"]
            } else {
                &payload["pull_request"]
            };
            Ok(Found {
                repo,
                item,
                login: comment["user"]["login"].as_str().unwrap_or_default(),
                text: body.replace(&format!("@{handle}"), "").trim().to_owned(),
                at: comment["created_at"].as_str().unwrap_or_default(),
                url: comment["html_url"].as_str(),
            })
        }
        ("issues" | "pull_request", "labeled") => {
            let label = payload["label"]["name"].as_str().unwrap_or_default();
            if !settings.labels.iter().any(|l| l == label) {
                return Err(format!("label `{label}` does not start runs"));
            }
            let item = if event == "issues" {
                &payload["issue"]
            } else {
                &payload["pull_request"]
            };
            Ok(Found {
                repo,
                item,
                login: payload["sender"]["login"].as_str().unwrap_or_default(),
                text: format!("Work on this: it was labeled `{label}`."),
                at: item["updated_at"].as_str().unwrap_or_default(),
                url: item["html_url"].as_str(),
            })
        }
        _ => Err(format!("GitHub `{event}` `{action}` is not a request")),
    }
}

/// The team environment that clones `repo`, when the integration names none.
async fn environment_for(app: &AppState, team_id: i64, repo: &str) -> ApiResult<Option<String>> {
    let wanted = repo.to_ascii_lowercase();
    for env in app.store.list_environments(team_id).await? {
        let Ok(spec) = serde_json::from_str::<Value>(&env.spec) else {
            continue;
        };
        let clones = spec["repos"].as_array().cloned().unwrap_or_default();
        if clones.iter().any(|r| {
            r["url"].as_str().is_some_and(|u| {
                let u = u.to_ascii_lowercase();
                let u = u.trim_end_matches('/').trim_end_matches(".git");
                u.ends_with(&format!("/{wanted}")) || u.ends_with(&format!(":{wanted}"))
            })
        }) {
            return Ok(Some(env.id));
        }
    }
    Ok(None)
}

async fn ask(
    app: &AppState,
    record: &IntegrationRecord,
    settings: &IntegrationSettings,
    payload: &Value,
    found: Found<'_>,
    delivery: Option<String>,
) -> ApiResult<Outcome> {
    let number = found.item["number"].as_u64().ok_or_else(|| {
        ApiError::BadRequest("the GitHub payload has no issue or pull request number".into())
    })?;
    let installation_id = payload["installation"]["id"].as_u64();
    let api = Api::new(app, record, settings, Some(found.repo), installation_id)
        .await
        .map_err(ApiError::BadGateway)?;
    let email = api
        .email_of(found.login)
        .await
        .map_err(ApiError::BadGateway)?;
    let title = found.item["title"].as_str().unwrap_or_default();
    let mut context = format!(
        "GitHub {} {}#{number}: {title}\n\n{}",
        if found.item.get("pull_request").is_some() || found.item.get("head").is_some() {
            "pull request"
        } else {
            "issue"
        },
        found.repo,
        found.item["body"].as_str().unwrap_or_default()
    );
    let comments = api
        .comments(found.repo, number)
        .await
        .map_err(ApiError::BadGateway)?;
    if !comments.is_empty() {
        context.push_str("\n\nComments:\n");
        context.push_str(&comments.join("\n"));
    }
    let mut settings = settings.clone();
    let config = settings.agent_config.get_or_insert_default();
    if config.environment_id.is_none() {
        config.environment_id = environment_for(app, record.team_id, found.repo).await?;
    }
    let ask = Ask {
        reply_to: ReplyTo::Github {
            repo: found.repo.to_owned(),
            number,
            installation_id,
        },
        thread_key: format!("{}#{number}", found.repo.to_ascii_lowercase()),
        actor: found.login.to_owned(),
        email,
        text: if found.text.is_empty() {
            "(no text: see the issue)".into()
        } else {
            found.text
        },
        context: Some(context),
        title: format!("{}#{number}: {title}", found.repo),
        url: found.url.map(str::to_owned),
        delivery_id: delivery,
        metadata: None,
    };
    provider::handle(app, record, &settings, ask).await
}

/// GitHub's REST API with an integration's token (or an installation
/// token minted for one repository).
pub struct Api {
    base: String,
    token: SecretString,
}

impl Api {
    /// The API of `record` for `repo`: a personal token, or an installation
    /// token of its GitHub App scoped to `repo`.
    pub async fn new(
        app: &AppState,
        record: &IntegrationRecord,
        settings: &IntegrationSettings,
        repo: Option<&str>,
        installation_id: Option<u64>,
    ) -> Result<Api, String> {
        let base = provider::api_base(settings, DEFAULT_API);
        let token = match credentials(app, record, settings).await? {
            Credentials::Token(token) => token,
            Credentials::App(jwt) => {
                let installation = installation_id.ok_or(
                    "the event came from no GitHub App installation; install the App on the repository",
                )?;
                installation_token(&base, jwt.expose(), installation, repo).await?
            }
        };
        Ok(Api { base, token })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        provider::http()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
    }

    async fn send(req: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
        let resp = req
            .send()
            .await
            .map_err(|e| format!("GitHub {what}: {e}"))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!(
                "GitHub {what}: HTTP {status}: {}",
                value["message"].as_str().unwrap_or("no message")
            ));
        }
        Ok(value)
    }

    /// The public e-mail of a GitHub user.
    async fn email_of(&self, login: &str) -> Result<Option<String>, String> {
        if login.is_empty()
            || !login
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '[' | ']'))
        {
            return Ok(None);
        }
        let v = Self::send(
            self.request(reqwest::Method::GET, &format!("/users/{login}")),
            "users",
        )
        .await?;
        Ok(v["email"].as_str().map(str::to_owned))
    }

    /// The last comments of an issue or pull request, as context lines.
    async fn comments(&self, repo: &str, number: u64) -> Result<Vec<String>, String> {
        let v = Self::send(
            self.request(
                reqwest::Method::GET,
                &format!("/repos/{repo}/issues/{number}/comments?per_page=50"),
            ),
            "issue comments",
        )
        .await?;
        Ok(v.as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["user"]["login"].as_str().unwrap_or("someone"),
                    c["body"].as_str().unwrap_or_default()
                )
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl provider::ProviderApi for Api {
    async fn post(&self, to: &ReplyTo, text: &str) -> Result<String, String> {
        let ReplyTo::Github { repo, number, .. } = to else {
            return Err("not a GitHub issue".into());
        };
        let v = Self::send(
            self.request(
                reqwest::Method::POST,
                &format!("/repos/{repo}/issues/{number}/comments"),
            )
            .json(&json!({"body": text})),
            "create comment",
        )
        .await?;
        v["id"]
            .as_u64()
            .map(|id| id.to_string())
            .ok_or_else(|| "GitHub create comment: no id in the answer".into())
    }

    async fn update(&self, to: &ReplyTo, id: &str, text: &str) -> Result<(), String> {
        let ReplyTo::Github { repo, .. } = to else {
            return Err("not a GitHub issue".into());
        };
        Self::send(
            self.request(
                reqwest::Method::PATCH,
                &format!("/repos/{repo}/issues/comments/{id}"),
            )
            .json(&json!({"body": text})),
            "update comment",
        )
        .await
        .map(|_| ())
    }
}

/// What a GitHub integration authenticates with.
enum Credentials {
    /// A personal access token.
    Token(SecretString),
    /// A GitHub App's JWT (buys installation tokens, reads `/app`).
    App(SecretString),
}

/// The integration's credentials: its token secret, or a fresh JWT of its App.
async fn credentials(
    app: &AppState,
    record: &IntegrationRecord,
    settings: &IntegrationSettings,
) -> Result<Credentials, String> {
    match (
        &settings.token_secret,
        &settings.app_id,
        &settings.private_key_secret,
    ) {
        (Some(name), _, _) => Ok(Credentials::Token(
            team_secret(app, record.team_id, name).await?,
        )),
        (None, Some(app_id), Some(key_name)) => {
            let key = team_secret(app, record.team_id, key_name).await?;
            let jwt = app_jwt(app_id, key.expose(), Timestamp::now().unix_millis() / 1000)?;
            Ok(Credentials::App(SecretString::from(jwt)))
        }
        _ => Err("the GitHub integration has no credentials: set `--token-secret NAME` or `--app-id ID --private-key-secret NAME`".into()),
    }
}

/// Who the integration's credentials are: the token's user (`GET /user`),
/// or the App (`GET /app`, with its JWT).
pub async fn whoami(
    app: &AppState,
    record: &IntegrationRecord,
    settings: &IntegrationSettings,
) -> Result<String, String> {
    let base = provider::api_base(settings, DEFAULT_API);
    let (path, token) = match credentials(app, record, settings).await? {
        Credentials::Token(token) => ("/user", token),
        Credentials::App(jwt) => ("/app", jwt),
    };
    let api = Api { base, token };
    let v = Api::send(api.request(reqwest::Method::GET, path), path).await?;
    Ok(match path {
        "/user" => format!(
            "GitHub: connected as @{}",
            v["login"].as_str().unwrap_or("?")
        ),
        _ => format!(
            "GitHub: connected as the App {}",
            v["name"].as_str().or(v["slug"].as_str()).unwrap_or("?")
        ),
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A GitHub App's JWT: RS256 over `{iat, exp, iss}`, issued a minute in the
/// past (clock drift) and valid for ten minutes, signed with the App's
/// private key (PEM, PKCS#1 as GitHub issues it, or PKCS#8).
pub fn app_jwt(app_id: &str, private_key_pem: &str, now_secs: i64) -> Result<String, String> {
    use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject as _;
    let der = PrivateKeyDer::from_pem_slice(private_key_pem.as_bytes())
        .map_err(|e| format!("the GitHub App private key is not a PEM private key: {e}"))?;
    let pair = match &der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => return Err("the GitHub App private key must be an RSA key".into()),
    }
    .map_err(|e| format!("the GitHub App private key is not a usable RSA key: {e}"))?;
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64(
        json!({"iat": now_secs - 60, "exp": now_secs + 540, "iss": app_id})
            .to_string()
            .as_bytes(),
    );
    let message = format!("{header}.{claims}");
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        message.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "signing the GitHub App JWT failed".to_owned())?;
    Ok(format!("{message}.{}", b64(&sig)))
}

/// Mints an installation token, scoped to `repo` when given.
async fn installation_token(
    base: &str,
    jwt: &str,
    installation: u64,
    repo: Option<&str>,
) -> Result<SecretString, String> {
    let mut body = json!({});
    if let Some(name) = repo.and_then(|r| r.split_once('/')).map(|(_, n)| n) {
        body["repositories"] = json!([name]);
    }
    let resp = provider::http()
        .post(format!(
            "{base}/app/installations/{installation}/access_tokens"
        ))
        .bearer_auth(jwt)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("GitHub installation token: {e}"))?;
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    match value["token"].as_str() {
        Some(token) if status.is_success() => Ok(SecretString::from(token.to_owned())),
        _ => Err(format!(
            "GitHub installation token: HTTP {status}: {}",
            value["message"]
                .as_str()
                .unwrap_or("no token in the answer")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment_event(body: &str, user_type: &str) -> Value {
        json!({
            "action": "created",
            "repository": {"full_name": "acme/web"},
            "issue": {"number": 3, "title": "Crash", "body": "it crashes"},
            "comment": {"body": body, "user": {"login": "ann", "type": user_type},
                        "created_at": "2026-12-07T18:00:00Z", "html_url": "https://github.com/acme/web/issues/3#c1"}
        })
    }

    #[test]
    fn a_comment_is_a_request_when_it_mentions_the_handle() {
        let s = IntegrationSettings::default();
        let event = comment_event("@hangar fix it", "User");
        let found = request("issue_comment", &event, &s).unwrap();
        assert_eq!(found.repo, "acme/web");
        assert_eq!(found.text, "fix it");
        assert!(request("issue_comment", &comment_event("fix it", "User"), &s).is_err());
        assert!(request("issue_comment", &comment_event("@hangar fix", "Bot"), &s).is_err());
        let mut odd = comment_event("@hangar fix", "User");
        odd["repository"]["full_name"] = json!("acme/../../user");
        assert!(
            request("issue_comment", &odd, &s).is_err(),
            "a repository is `owner/name`"
        );
        let other = IntegrationSettings {
            repos: vec!["acme/api".into()],
            ..IntegrationSettings::default()
        };
        assert!(
            request(
                "issue_comment",
                &comment_event("@hangar fix", "User"),
                &other
            )
            .is_err()
        );
    }

    #[test]
    fn a_configured_label_is_a_request() {
        let s = IntegrationSettings {
            labels: vec!["agent".into()],
            ..IntegrationSettings::default()
        };
        let event = json!({
            "action": "labeled", "label": {"name": "agent"}, "sender": {"login": "ann"},
            "repository": {"full_name": "acme/web"},
            "issue": {"number": 4, "title": "t", "updated_at": "2026-12-07T18:00:00Z"}
        });
        assert_eq!(request("issues", &event, &s).unwrap().login, "ann");
        let mut other = event.clone();
        other["label"]["name"] = json!("bug");
        assert!(request("issues", &other, &s).is_err());
    }
}
