//! Fake Slack, Linear and GitHub APIs for the integrations' tests: each
//! speaks its provider's real wire format (Slack's Web API with JSON or
//! form bodies and `ok: false` errors, Linear's GraphQL endpoint, GitHub's
//! REST API and App installation tokens), checks the credentials it is
//! given, and records what was posted and edited so a test can read the
//! thread, issue or pull request as a person would see it.
//!
//! Each is a server on `127.0.0.1:0` that stops when dropped; its
//! `api_base_url()` is what an integration's `api_base_url` setting takes.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::task::JoinHandle;

/// A message or comment the integration posted, as it reads now.
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    /// The provider's id for it (Slack `ts`, a comment id).
    pub id: String,
    /// Where: `C1:1700000000.000100` (channel and thread), a Linear issue
    /// id, `owner/name#12`.
    pub thread: String,
    /// Its text now.
    pub text: String,
    /// Its earlier texts, oldest first (each edit moves one here).
    pub edits: Vec<String>,
}

struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(name: &str, app: Router) -> Server {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("fake {name}: cannot bind 127.0.0.1:0: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("fake {name}: no local address: {e}"),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { addr, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn edit(posted: &mut [Posted], id: &str, text: &str) -> bool {
    match posted.iter_mut().find(|p| p.id == id) {
        Some(p) => {
            let old = std::mem::replace(&mut p.text, text.to_owned());
            p.edits.push(old);
            true
        }
        None => false,
    }
}

// ---------------------------------------------------------------- Slack

#[derive(Default)]
struct SlackState {
    token: String,
    emails: HashMap<String, Option<String>>,
    /// Messages of people, by thread (`channel:thread_ts`): `(user, text, ts)`.
    history: BTreeMap<String, Vec<(String, String, String)>>,
    posted: Vec<Posted>,
    calls: Vec<String>,
    next_ts: u64,
}

/// A fake Slack Web API.
pub struct FakeSlack {
    server: Server,
    state: Arc<Mutex<SlackState>>,
}

impl FakeSlack {
    /// Starts it; it accepts `bot_token` only.
    pub async fn start(bot_token: &str) -> FakeSlack {
        let state = Arc::new(Mutex::new(SlackState {
            token: bot_token.to_owned(),
            next_ts: 1_700_000_000_000_100,
            ..SlackState::default()
        }));
        let app = Router::new()
            .route("/api/{method}", post(slack_method).get(slack_method))
            .with_state(state.clone());
        FakeSlack {
            server: Server::start("Slack", app).await,
            state,
        }
    }

    /// `http://127.0.0.1:PORT/api`.
    pub fn api_base_url(&self) -> String {
        format!("http://{}/api", self.server.addr)
    }

    /// A workspace member, with the e-mail of their profile (`None`: hidden).
    pub fn add_user(&self, id: &str, email: Option<&str>) {
        lock(&self.state)
            .emails
            .insert(id.to_owned(), email.map(str::to_owned));
    }

    /// A message a person wrote in a thread (before the app was mentioned).
    pub fn add_message(&self, channel: &str, thread_ts: &str, user: &str, text: &str, ts: &str) {
        lock(&self.state)
            .history
            .entry(format!("{channel}:{thread_ts}"))
            .or_default()
            .push((user.to_owned(), text.to_owned(), ts.to_owned()));
    }

    /// What the app posted, as it reads now.
    pub fn posted(&self) -> Vec<Posted> {
        lock(&self.state).posted.clone()
    }

    /// The Web API methods called, in order.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }
}

fn slack_ok(mut v: Value) -> Response {
    v["ok"] = json!(true);
    axum::Json(v).into_response()
}

fn slack_error(error: &str) -> Response {
    axum::Json(json!({"ok": false, "error": error})).into_response()
}

/// Reads the arguments of a Web API call: the query string, then a JSON or
/// form body.
fn slack_args(
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> HashMap<String, String> {
    let mut args = query.clone();
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if json {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            for (k, v) in map {
                let v = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                args.insert(k, v);
            }
        }
    } else {
        args.extend(url_pairs(body));
    }
    args
}

/// The pairs of a form body (`application/x-www-form-urlencoded`).
fn url_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn slack_method(
    State(state): State<Arc<Mutex<SlackState>>>,
    Path(method): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    s.calls.push(method.clone());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(s.token.as_str()) {
        return slack_error("invalid_auth");
    }
    let args = slack_args(&query, &headers, &body);
    let arg = |k: &str| args.get(k).cloned().unwrap_or_default();
    match method.as_str() {
        "auth.test" => slack_ok(json!({"user": "hangar", "team": "Acme", "user_id": "U0HANGAR"})),
        "users.info" => match s.emails.get(&arg("user")) {
            Some(email) => {
                slack_ok(json!({"user": {"id": arg("user"), "profile": {"email": email}}}))
            }
            None => slack_error("user_not_found"),
        },
        "conversations.replies" => {
            let key = format!("{}:{}", arg("channel"), arg("ts"));
            let mut messages: Vec<Value> = s
                .history
                .get(&key)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|(user, text, ts)| json!({"user": user, "text": text, "ts": ts}))
                .collect();
            messages.extend(
                s.posted
                    .iter()
                    .filter(|p| p.thread == key)
                    .map(|p| json!({"bot_id": "B0HANGAR", "text": p.text, "ts": p.id})),
            );
            slack_ok(json!({"messages": messages}))
        }
        "chat.postMessage" => {
            let (channel, text) = (arg("channel"), arg("text"));
            if channel.is_empty() || text.is_empty() {
                return slack_error("no_text");
            }
            s.next_ts += 1;
            let ts = format!("{}.{:06}", s.next_ts / 1_000_000, s.next_ts % 1_000_000);
            let thread_ts = args.get("thread_ts").cloned().unwrap_or_else(|| ts.clone());
            s.posted.push(Posted {
                id: ts.clone(),
                thread: format!("{channel}:{thread_ts}"),
                text,
                edits: Vec::new(),
            });
            slack_ok(json!({"channel": channel, "ts": ts}))
        }
        "chat.update" => {
            let (ts, text) = (arg("ts"), arg("text"));
            if edit(&mut s.posted, &ts, &text) {
                slack_ok(json!({"channel": arg("channel"), "ts": ts}))
            } else {
                slack_error("message_not_found")
            }
        }
        _ => slack_error("unknown_method"),
    }
}

// ---------------------------------------------------------------- Linear

/// An issue of the fake Linear.
#[derive(Debug, Clone)]
pub struct LinearIssue {
    /// Id (a UUID in Linear).
    pub id: String,
    /// `ENG-12`.
    pub identifier: String,
    /// Title.
    pub title: String,
    /// Description (markdown).
    pub description: String,
    /// Team key.
    pub team: String,
}

#[derive(Default)]
struct LinearState {
    key: String,
    viewer: (String, String),
    users: HashMap<String, (String, Option<String>)>,
    issues: HashMap<String, LinearIssue>,
    posted: Vec<Posted>,
    next_id: u64,
}

/// A fake Linear GraphQL API.
pub struct FakeLinear {
    server: Server,
    state: Arc<Mutex<LinearState>>,
}

impl FakeLinear {
    /// Starts it; it accepts `api_key` only, whose user (`viewer`) is the
    /// agent: `(id, display name)`.
    pub async fn start(api_key: &str, viewer_id: &str, viewer_name: &str) -> FakeLinear {
        let state = Arc::new(Mutex::new(LinearState {
            key: api_key.to_owned(),
            viewer: (viewer_id.to_owned(), viewer_name.to_owned()),
            ..LinearState::default()
        }));
        let app = Router::new()
            .route("/graphql", post(linear_graphql))
            .with_state(state.clone());
        FakeLinear {
            server: Server::start("Linear", app).await,
            state,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn api_base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// A workspace member.
    pub fn add_user(&self, id: &str, name: &str, email: Option<&str>) {
        lock(&self.state)
            .users
            .insert(id.to_owned(), (name.to_owned(), email.map(str::to_owned)));
    }

    /// An issue.
    pub fn add_issue(&self, issue: LinearIssue) {
        lock(&self.state).issues.insert(issue.id.clone(), issue);
    }

    /// Comments the agent posted, as they read now.
    pub fn posted(&self) -> Vec<Posted> {
        lock(&self.state).posted.clone()
    }
}

async fn linear_graphql(
    State(state): State<Arc<Mutex<LinearState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(s.key.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"errors": [{"message": "Authentication required, not authenticated",
                "extensions": {"code": "AUTHENTICATION_ERROR"}}]}),
            ),
        )
            .into_response();
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"errors": [{"message": "body is not JSON"}]})),
        )
            .into_response();
    };
    let query = req["query"].as_str().unwrap_or_default();
    let vars = &req["variables"];
    let data = if query.contains("commentCreate") {
        let input = &vars["input"];
        let issue = input["issueId"].as_str().unwrap_or_default().to_owned();
        if !s.issues.contains_key(&issue) {
            return axum::Json(json!({"errors": [{"message": "Entity not found: Issue"}]}))
                .into_response();
        }
        s.next_id += 1;
        let id = format!("comment-{}", s.next_id);
        s.posted.push(Posted {
            id: id.clone(),
            thread: issue,
            text: input["body"].as_str().unwrap_or_default().to_owned(),
            edits: Vec::new(),
        });
        json!({"commentCreate": {"success": true, "comment": {"id": id}}})
    } else if query.contains("commentUpdate") {
        let id = vars["id"].as_str().unwrap_or_default().to_owned();
        let text = vars["input"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !edit(&mut s.posted, &id, &text) {
            return axum::Json(json!({"errors": [{"message": "Entity not found: Comment"}]}))
                .into_response();
        }
        json!({"commentUpdate": {"success": true}})
    } else if query.contains("viewer") {
        json!({"viewer": {"id": s.viewer.0, "name": s.viewer.1, "displayName": s.viewer.1}})
    } else if query.contains("issue(") {
        let id = vars["id"].as_str().unwrap_or_default();
        let Some(issue) = s.issues.get(id) else {
            return axum::Json(json!({"errors": [{"message": "Entity not found: Issue"}]}))
                .into_response();
        };
        let comments: Vec<Value> = s
            .posted
            .iter()
            .filter(|p| p.thread == issue.id)
            .map(|p| json!({"body": p.text, "user": {"name": s.viewer.1}}))
            .collect();
        json!({"issue": {
            "id": issue.id, "identifier": issue.identifier, "title": issue.title,
            "description": issue.description,
            "url": format!("https://linear.app/acme/issue/{}", issue.identifier),
            "team": {"key": issue.team}, "comments": {"nodes": comments}
        }})
    } else if query.contains("user(") {
        let id = vars["id"].as_str().unwrap_or_default();
        match s.users.get(id) {
            Some((name, email)) => json!({"user": {"id": id, "name": name, "email": email}}),
            None => {
                return axum::Json(json!({"errors": [{"message": "Entity not found: User"}]}))
                    .into_response();
            }
        }
    } else {
        return axum::Json(json!({"errors": [{"message": "this fake does not know that query"}]}))
            .into_response();
    };
    axum::Json(json!({"data": data})).into_response()
}

// ---------------------------------------------------------------- GitHub

#[derive(Default)]
struct GithubState {
    /// A personal access token, if the test uses one.
    pat: Option<String>,
    /// The App: its id and its public key (PKCS#1 DER), if the test uses one.
    app: Option<(String, Vec<u8>)>,
    /// Minted installation tokens and the repositories each may touch.
    tokens: HashMap<String, Vec<String>>,
    emails: HashMap<String, Option<String>>,
    /// Comments by people, by `owner/name#n`: `(login, body)`.
    history: BTreeMap<String, Vec<(String, String)>>,
    posted: Vec<Posted>,
    next_id: u64,
    /// Installation token requests: `(installation id, repositories asked)`.
    minted: Vec<(u64, Vec<String>)>,
}

/// A fake GitHub REST API.
pub struct FakeGithub {
    server: Server,
    state: Arc<Mutex<GithubState>>,
}

impl FakeGithub {
    /// Starts it accepting the personal access token `pat`.
    pub async fn with_token(pat: &str) -> FakeGithub {
        Self::start(GithubState {
            pat: Some(pat.to_owned()),
            ..GithubState::default()
        })
        .await
    }

    /// Starts it as the GitHub of the App `app_id`, whose JWTs it checks
    /// with `public_key_der` (the RSA public key, PKCS#1 DER).
    pub async fn with_app(app_id: &str, public_key_der: Vec<u8>) -> FakeGithub {
        Self::start(GithubState {
            app: Some((app_id.to_owned(), public_key_der)),
            ..GithubState::default()
        })
        .await
    }

    async fn start(state: GithubState) -> FakeGithub {
        let state = Arc::new(Mutex::new(state));
        let app = Router::new()
            .route("/users/{login}", get(gh_user))
            .route("/user", get(gh_me))
            .route("/app", get(gh_app))
            .route(
                "/repos/{owner}/{name}/issues/{number}/comments",
                get(gh_comments).post(gh_comment_create),
            )
            .route(
                "/repos/{owner}/{name}/issues/comments/{id}",
                patch(gh_comment_update),
            )
            .route(
                "/app/installations/{installation}/access_tokens",
                post(gh_access_token),
            )
            .with_state(state.clone());
        FakeGithub {
            server: Server::start("GitHub", app).await,
            state,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn api_base_url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// A user and the public e-mail of their profile (`None`: private).
    pub fn add_user(&self, login: &str, email: Option<&str>) {
        lock(&self.state)
            .emails
            .insert(login.to_owned(), email.map(str::to_owned));
    }

    /// A comment a person wrote on `owner/name#n`.
    pub fn add_comment(&self, thread: &str, login: &str, body: &str) {
        lock(&self.state)
            .history
            .entry(thread.to_owned())
            .or_default()
            .push((login.to_owned(), body.to_owned()));
    }

    /// Comments the integration posted, as they read now.
    pub fn posted(&self) -> Vec<Posted> {
        lock(&self.state).posted.clone()
    }

    /// Installation tokens minted: `(installation id, repositories)`.
    pub fn minted(&self) -> Vec<(u64, Vec<String>)> {
        lock(&self.state).minted.clone()
    }
}

type GhState = State<Arc<Mutex<GithubState>>>;

fn gh_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"message": message, "documentation_url": "https://docs.github.com/rest"}),
        ),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .map(str::to_owned)
}

/// Whether the request's token may act on `repo` (`None`: any API call
/// that names no repository).
fn gh_authorized(s: &GithubState, headers: &HeaderMap, repo: Option<&str>) -> bool {
    let Some(token) = bearer(headers) else {
        return false;
    };
    if s.pat.as_deref() == Some(token.as_str()) {
        return true;
    }
    match (s.tokens.get(&token), repo) {
        (Some(_), None) => true,
        (Some(repos), Some(repo)) => {
            let name = repo.split('/').nth(1).unwrap_or_default();
            repos.is_empty() || repos.iter().any(|r| r == name)
        }
        (None, _) => false,
    }
}

async fn gh_user(State(state): GhState, Path(login): Path<String>, headers: HeaderMap) -> Response {
    let s = lock(&state);
    if !gh_authorized(&s, &headers, None) {
        return gh_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    match s.emails.get(&login) {
        Some(email) => {
            axum::Json(json!({"login": login, "type": "User", "email": email})).into_response()
        }
        None => gh_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn gh_me(State(state): GhState, headers: HeaderMap) -> Response {
    let s = lock(&state);
    match (&s.pat, bearer(&headers)) {
        (Some(pat), Some(token)) if *pat == token => {
            axum::Json(json!({"login": "hangar-bot", "type": "User"})).into_response()
        }
        _ => gh_error(StatusCode::UNAUTHORIZED, "Bad credentials"),
    }
}

async fn gh_app(State(state): GhState, headers: HeaderMap) -> Response {
    let s = lock(&state);
    let (Some((app_id, key)), Some(jwt)) = (s.app.clone(), bearer(&headers)) else {
        return gh_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    };
    match check_jwt(&jwt, &app_id, &key) {
        Ok(()) => axum::Json(json!({"id": app_id, "slug": "hangar-agent", "name": "Hangar Agent"}))
            .into_response(),
        Err(e) => gh_error(StatusCode::UNAUTHORIZED, &e),
    }
}

async fn gh_comments(
    State(state): GhState,
    Path((owner, name, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let s = lock(&state);
    let repo = format!("{owner}/{name}");
    if !gh_authorized(&s, &headers, Some(&repo)) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let thread = format!("{repo}#{number}");
    let mut comments: Vec<Value> = s
        .history
        .get(&thread)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|(login, body)| json!({"user": {"login": login}, "body": body}))
        .collect();
    comments.extend(
        s.posted
            .iter()
            .filter(|p| p.thread == thread)
            .map(|p| json!({"id": p.id.parse::<u64>().unwrap_or(0), "user": {"login": "hangar[bot]"}, "body": p.text})),
    );
    axum::Json(Value::Array(comments)).into_response()
}

async fn gh_comment_create(
    State(state): GhState,
    Path((owner, name, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    let repo = format!("{owner}/{name}");
    if !gh_authorized(&s, &headers, Some(&repo)) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let Some(text) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["body"].as_str().map(str::to_owned))
    else {
        return gh_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request: body is required",
        );
    };
    s.next_id += 1;
    let id = 9_000 + s.next_id;
    s.posted.push(Posted {
        id: id.to_string(),
        thread: format!("{repo}#{number}"),
        text: text.clone(),
        edits: Vec::new(),
    });
    (
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "body": text})),
    )
        .into_response()
}

async fn gh_comment_update(
    State(state): GhState,
    Path((owner, name, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    let repo = format!("{owner}/{name}");
    if !gh_authorized(&s, &headers, Some(&repo)) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let text = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["body"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if !s
        .posted
        .iter()
        .any(|p| p.id == id && p.thread.starts_with(&format!("{repo}#")))
    {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    }
    edit(&mut s.posted, &id, &text);
    axum::Json(json!({"id": id, "body": text})).into_response()
}

/// Checks an App JWT: RS256 with the App's key, issued for the App, not expired.
fn check_jwt(jwt: &str, app_id: &str, public_key_der: &[u8]) -> Result<(), String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = jwt.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("A JSON web token could not be decoded".into());
    };
    let header: Value = serde_json::from_slice(&b64.decode(h).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err("'alg' must be RS256".into());
    }
    let sig = b64.decode(sig).map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key_der,
    )
    .verify(format!("{h}.{c}").as_bytes(), &sig)
    .map_err(|_| "A JSON web token could not be decoded".to_owned())?;
    let claims: Value = serde_json::from_slice(&b64.decode(c).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    if claims["iss"].as_str() != Some(app_id)
        && claims["iss"].as_i64().map(|i| i.to_string()).as_deref() != Some(app_id)
    {
        return Err("'Issuer' claim ('iss') must be the App id".into());
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if exp <= now || iat > now + 60 || exp - iat > 600 {
        return Err(
            "'Expiration time' claim ('exp') is too far in the future or in the past".into(),
        );
    }
    Ok(())
}

async fn gh_access_token(
    State(state): GhState,
    Path(installation): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    let Some((app_id, key)) = s.app.clone() else {
        return gh_error(StatusCode::UNAUTHORIZED, "this fake GitHub has no App");
    };
    let Some(jwt) = bearer(&headers) else {
        return gh_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    };
    if let Err(e) = check_jwt(&jwt, &app_id, &key) {
        return gh_error(StatusCode::UNAUTHORIZED, &e);
    }
    let repos: Vec<String> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["repositories"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    s.next_id += 1;
    let token = format!("ghs_fake{installation}x{}", s.next_id);
    s.tokens.insert(token.clone(), repos.clone());
    s.minted.push((installation, repos));
    (
        StatusCode::CREATED,
        axum::Json(json!({"token": token, "expires_at": "2099-01-01T00:00:00Z"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_like_slack_sends_them() {
        let pairs = url_pairs(b"channel=C1&text=hello+world%21&thread_ts=1.2");
        assert_eq!(
            pairs,
            vec![
                ("channel".into(), "C1".into()),
                ("text".into(), "hello world!".into()),
                ("thread_ts".into(), "1.2".into())
            ]
        );
    }
}
