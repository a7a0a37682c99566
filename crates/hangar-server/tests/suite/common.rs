//! An in-process server with two teams, and helpers to call it and check problems.

use hangar_server::{Server, ServerConfig, auth};
use hangar_testkit::fake_llm::FakeLlm;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tempfile::TempDir;

/// The model every run of these tests names.
pub const MODEL: &str = "fake/test-model";

/// A server with team A (the bootstrap team) and team B (created directly in the store).
pub struct TwoTeams {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Team A's admin key.
    pub key_a: String,
    /// Team B's key.
    pub key_b: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The fake model provider.
    pub llm: FakeLlm,
    server: Option<Server>,
    _dir: TempDir,
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `content-type`, empty when absent.
    pub content_type: String,
    /// Body text.
    pub text: String,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// Why this is not a well-formed problem with status `want` (any 4xx/5xx when `None`).
    pub fn problem_error(&self, want: Option<u16>) -> Option<String> {
        if let Some(w) = want
            && self.status != w
        {
            return Some(format!("status {} (want {w}): {}", self.status, self.text));
        }
        if self.status < 400 {
            return Some(format!(
                "status {} is not an error: {}",
                self.status, self.text
            ));
        }
        if !self.content_type.starts_with("application/problem+json") {
            return Some(format!(
                "status {} with content-type `{}` instead of application/problem+json: {}",
                self.status, self.content_type, self.text
            ));
        }
        let body = self.json();
        for field in ["type", "title", "status", "error", "detail"] {
            if body[field].is_null() {
                return Some(format!("problem lacks `{field}`: {}", self.text));
            }
        }
        if body["status"] != self.status {
            return Some(format!(
                "problem `status` differs from HTTP {}: {}",
                self.status, self.text
            ));
        }
        if body["detail"].as_str().is_none_or(|d| d.trim().is_empty()) {
            return Some(format!("problem has an empty `detail`: {}", self.text));
        }
        None
    }

    /// Asserts a well-formed problem with status `want`.
    #[track_caller]
    pub fn assert_problem(&self, want: u16, context: &str) {
        if let Some(e) = self.problem_error(Some(want)) {
            panic!("{context}: {e}");
        }
    }
}

impl TwoTeams {
    /// Starts a server with a fake model provider and a second team.
    pub async fn start() -> TwoTeams {
        Self::start_with(|_| {}).await
    }

    /// Like [`TwoTeams::start`], adjusting the configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> TwoTeams {
        let llm = FakeLlm::start(vec![]).await;
        let dir = tempfile::tempdir().unwrap();
        let providers = serde_json::from_value(serde_json::json!({
            "fake": {
                "kind": "openai",
                "base_url": llm.base_url(),
                "api_key": "test-key",
                "default_model": "test-model",
            }
        }))
        .unwrap();
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            providers,
            cli_config_path: Some(std::path::PathBuf::new()),
            master_key_file: Some(dir.path().join("master.key")),
            providers_from_env: false,
            // Fuzzing and the matrix send thousands of requests a second;
            // tests of the limit turn it on.
            rate_limit: hangar_server::rate_limit::RateLimitConfig {
                requests_per_second: 0,
                team_requests_per_second: 0,
                ..Default::default()
            },
            ..ServerConfig::default()
        };
        adjust(&mut config);
        let server = Server::start(config).await.unwrap();
        let key_a = server.bootstrap().unwrap().api_key.clone();
        let store = server.state().store.as_ref();
        let team_b = store.create_team("team-b-uid", "team-b").await.unwrap();
        let (_, key_b) = auth::issue_api_key(store, team_b.id, None, "team b key", None)
            .await
            .unwrap();
        TwoTeams {
            url: format!("http://{}", server.local_addr()),
            key_a,
            key_b,
            http: reqwest::Client::new(),
            llm,
            server: Some(server),
            _dir: dir,
        }
    }

    /// The server's store (to plant what no route creates, e.g. agent events).
    pub fn store(&self) -> std::sync::Arc<dyn hangar_store::Store> {
        self.server.as_ref().unwrap().state().store.clone()
    }

    /// `/api/v1` + `path`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    /// A new member (role `member`) of team A named `name`, with a personal API key.
    pub async fn member(&self, name: &str) -> (hangar_store::UserRecord, String) {
        let store = self.store();
        let user = store
            .create_user(hangar_store::NewUser {
                uid: hangar_protocol::RunId::generate().0,
                team_id: 1,
                email: Some(format!("{name}@a.test")),
                display_name: name.into(),
                role: "member".into(),
            })
            .await
            .unwrap();
        let (_, key) = auth::issue_api_key(store.as_ref(), 1, Some(user.id), name, None)
            .await
            .unwrap();
        (user, key)
    }

    /// A worker token of team A bound to worker id `worker_id`, created by
    /// team A's admin through the API.
    pub async fn worker_token(&self, worker_id: &str) -> String {
        let body = serde_json::json!({ "worker_id": worker_id }).to_string();
        let created = self
            .ok("POST", "/worker-tokens", &self.key_a, Some(&body))
            .await;
        created["token"].as_str().unwrap().to_owned()
    }

    /// Sends a request to `/api/v1{path}`; `auth` is the whole Authorization header value.
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, self.api(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp.text().await?;
        Ok(Reply {
            status,
            content_type,
            text,
        })
    }

    /// Sends a request with a bearer key (or none).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        self.call_raw(
            method,
            path,
            auth.as_deref(),
            body.map(|b| b.as_bytes().to_vec()),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
    }

    /// A 2xx JSON answer.
    pub async fn ok(&self, method: &str, path: &str, key: &str, body: Option<&str>) -> Value {
        let r = self.call(method, path, Some(key), body).await;
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.text
        );
        r.json()
    }

    /// Whether the server still answers `/healthz`.
    pub async fn healthy(&self) -> bool {
        match self.http.get(format!("{}/healthz", self.url)).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Registers an unmanaged run of team A: `(run_id, run_token)`.
    pub async fn local_run(&self, prompt: &str) -> (String, String) {
        let body = serde_json::json!({ "prompt": prompt }).to_string();
        let v = self
            .ok("POST", "/agent/runs/local", &self.key_a, Some(&body))
            .await;
        (
            v["run_id"].as_str().unwrap().to_owned(),
            v["run_token"].as_str().unwrap().to_owned(),
        )
    }

    /// The running server, taken out (to shut it down in a test).
    pub fn take_server(&mut self) -> Server {
        self.server.take().unwrap()
    }

    /// The running server (its store, for fixtures the API cannot create).
    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// A WebSocket URL under `/api/v1`.
    pub fn ws_url(&self, path: &str) -> url::Url {
        url::Url::parse(&self.api(path)).unwrap()
    }
}

impl Drop for TwoTeams {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown_token().cancel();
        }
    }
}

/// Counts panics on any thread (server tasks included) from now on.
pub fn count_panics() -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    count
}

/// An HTTP client that does not follow redirects (sign-in answers are 303s).
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
