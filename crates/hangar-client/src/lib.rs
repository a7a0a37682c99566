//! Typed HTTP and WebSocket client for the Hangar API.
//!
//! Owns: [`Client`] (REST calls over `hangar-protocol` types, errors decoded
//! from problem+json into [`ClientError::Api`]) and [`connect_websocket`] (an
//! authenticated WebSocket to any Hangar socket path). Used by the CLI, the
//! worker, the agent and the tests. Depends only on `hangar-protocol`.

pub mod sse;

pub use sse::{SseEvent, SseStream};

use hangar_protocol::share::{CreateShareRequest, ListSharesResponse, ShareItem};
use hangar_protocol::{
    ApiKeyItem, CreateApiKeyRequest, ListRunsResponse, Problem, RunAgentRequest, RunAgentResponse,
    RunItem, TranscriptResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use url::Url;

/// An authenticated WebSocket.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Errors from the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a problem.
    #[error("{0}")]
    Api(Box<Problem>),
    /// The server answered with an error status and no problem body.
    #[error("HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Body (truncated).
        body: String,
    },
    /// The server could not be reached.
    #[error("cannot reach {url}: {source}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// Any other transport error.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// WebSocket handshake or transport error.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server URL is not usable.
    #[error("invalid server URL `{url}`: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api(p) => Some(p.status),
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client for one server with one credential (API key or run token).
#[derive(Clone)]
pub struct Client {
    base: Url,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &"***")
            .finish()
    }
}

/// A reqwest client builder for requests to `url`. A plain-HTTP URL (a
/// server or gateway on the same host or network) loads no TLS roots:
/// reading the system's certificates is most of building a client, and the
/// agent builds its clients at every start. Without roots a redirect to
/// HTTPS could not be verified, so it fails with `advice` (what to configure
/// instead); other redirects are followed, up to 10.
pub fn http_builder(url: &str, advice: &'static str) -> reqwest::ClientBuilder {
    let plain = url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    let builder = reqwest::Client::builder().tls_built_in_root_certs(!plain);
    if !plain {
        return builder;
    }
    builder.redirect(reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.url().scheme() != "http" {
            let to = attempt.url().to_string();
            attempt.error(format!("redirected to {to}: {advice}"))
        } else if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    }))
}

/// Parses and normalises a server base URL (`http(s)://host:port[/prefix]`).
pub fn parse_server_url(raw: &str) -> Result<Url, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

impl Client {
    /// A client for `server_url` authenticating with `token`.
    pub fn new(server_url: &str, token: impl Into<String>) -> Result<Self, ClientError> {
        let base = parse_server_url(server_url)?;
        let http = http_builder(base.as_str(), "use its https:// URL as the server URL")
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?;
        Ok(Client {
            base,
            token: token.into(),
            http,
        })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The credential this client sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Absolute URL for an API path such as `api/v1/agent/runs`.
    pub fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| ClientError::BadUrl {
                url: format!("{}{}", self.base, path),
                reason: e.to_string(),
            })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        Ok(self.send_checked(req).await?.json::<T>().await?)
    }

    /// Sends `req`; a non-2xx answer becomes an error (decoded when it is a problem).
    async fn send_checked(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| {
            if e.is_connect() {
                ClientError::Connect {
                    url: self.base.to_string(),
                    source: e,
                }
            } else {
                ClientError::Http(e)
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<Problem>(&body) {
            Ok(p) => Err(ClientError::Api(Box::new(p))),
            Err(_) => Err(ClientError::Status {
                status: status.as_u16(),
                body: body.chars().take(2000).collect(),
            }),
        }
    }

    /// GET a JSON resource.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(self.url(path)?)).await
    }

    /// POST a JSON body.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.post(self.url(path)?).json(body)).await
    }

    /// DELETE a resource.
    pub async fn send_delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.delete(self.url(path)?)).await
    }

    /// PUT a JSON body.
    pub async fn put_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.http.put(self.url(path)?).json(body)).await
    }

    /// `POST /api/v1/agent/runs`.
    pub async fn create_run(&self, req: &RunAgentRequest) -> Result<RunAgentResponse, ClientError> {
        self.post_json("api/v1/agent/runs", req).await
    }

    /// `POST /api/v1/agent/runs` recording where the run came from (`CLI`, `WEB_APP`, …).
    pub async fn create_run_from(
        &self,
        req: &RunAgentRequest,
        source: &str,
    ) -> Result<RunAgentResponse, ClientError> {
        let builder = self
            .http
            .post(self.url("api/v1/agent/runs")?)
            .header("x-hangar-source", source)
            .json(req);
        self.send(builder).await
    }

    /// `GET /api/v1/agent/runs/{id}`.
    pub async fn get_run(&self, run_id: &str) -> Result<RunItem, ClientError> {
        self.get_json(&format!("api/v1/agent/runs/{}", encode(run_id)))
            .await
    }

    /// `GET /api/v1/agent/runs` with raw query pairs.
    pub async fn list_runs(
        &self,
        query: &[(&str, String)],
    ) -> Result<ListRunsResponse, ClientError> {
        let mut url = self.url("api/v1/agent/runs")?;
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        self.send(self.http.get(url)).await
    }

    /// `POST /api/v1/agent/runs/{id}/cancel`.
    pub async fn cancel_run(&self, run_id: &str) -> Result<String, ClientError> {
        self.post_json(
            &format!("api/v1/agent/runs/{}/cancel", encode(run_id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// `GET /api/v1/agent/runs/{id}/transcript`.
    pub async fn transcript(&self, run_id: &str) -> Result<TranscriptResponse, ClientError> {
        self.get_json(&format!("api/v1/agent/runs/{}/transcript", encode(run_id)))
            .await
    }

    /// `POST /api/v1/api-keys`.
    pub async fn create_api_key(
        &self,
        req: &CreateApiKeyRequest,
    ) -> Result<ApiKeyItem, ClientError> {
        self.post_json("api/v1/api-keys", req).await
    }

    /// **(extension)** `POST /api/v1/worker-tokens` (admins): the secret is in this answer only.
    pub async fn create_worker_token(
        &self,
        req: &hangar_protocol::CreateWorkerTokenRequest,
    ) -> Result<hangar_protocol::WorkerTokenItem, ClientError> {
        self.post_json("api/v1/worker-tokens", req).await
    }

    /// **(extension)** `GET /api/v1/worker-tokens` (admins).
    pub async fn list_worker_tokens(
        &self,
    ) -> Result<hangar_protocol::ListWorkerTokensResponse, ClientError> {
        self.get_json("api/v1/worker-tokens").await
    }

    /// **(extension)** `POST /api/v1/worker-tokens/{id}/expire` (admins).
    pub async fn expire_worker_token(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        self.post_json(
            &format!("api/v1/worker-tokens/{}/expire", encode(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// **(extension)** `POST /api/v1/agent/runs/{id}/shares`: grants access to
    /// a run's session (a public link's URL is only in this answer).
    pub async fn create_share(
        &self,
        run_id: &str,
        req: &CreateShareRequest,
    ) -> Result<ShareItem, ClientError> {
        self.post_json(&format!("api/v1/agent/runs/{}/shares", encode(run_id)), req)
            .await
    }

    /// **(extension)** `GET /api/v1/agent/runs/{id}/shares`.
    pub async fn list_shares(&self, run_id: &str) -> Result<ListSharesResponse, ClientError> {
        self.get_json(&format!("api/v1/agent/runs/{}/shares", encode(run_id)))
            .await
    }

    /// **(extension)** `DELETE /api/v1/agent/runs/{id}/shares/{share_id}` (204).
    pub async fn delete_share(&self, run_id: &str, share_id: &str) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "api/v1/agent/runs/{}/shares/{}",
            encode(run_id),
            encode(share_id)
        ))?;
        self.send_checked(self.http.delete(url)).await?;
        Ok(())
    }

    /// **(extension)** `GET /api/v1/teams`: the caller's team.
    pub async fn list_teams(
        &self,
    ) -> Result<hangar_protocol::account::ListTeamsResponse, ClientError> {
        self.get_json("api/v1/teams").await
    }

    /// **(extension)** `GET /api/v1/users`.
    pub async fn list_users(
        &self,
    ) -> Result<hangar_protocol::account::ListUsersResponse, ClientError> {
        self.get_json("api/v1/users").await
    }

    /// **(extension)** `POST /api/v1/users` (admins).
    pub async fn create_user(
        &self,
        req: &hangar_protocol::account::CreateUserRequest,
    ) -> Result<hangar_protocol::account::UserItem, ClientError> {
        self.post_json("api/v1/users", req).await
    }

    /// **(extension)** `PATCH /api/v1/users/{id}` (admins).
    pub async fn update_user(
        &self,
        user_id: &str,
        req: &hangar_protocol::account::UpdateUserRequest,
    ) -> Result<hangar_protocol::account::UserItem, ClientError> {
        let url = self.url(&format!("api/v1/users/{}", encode(user_id)))?;
        self.send(self.http.patch(url).json(req)).await
    }

    /// **(extension)** `DELETE /api/v1/users/{id}` (admins; 204).
    pub async fn delete_user(&self, user_id: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("api/v1/users/{}", encode(user_id)))?;
        self.send_checked(self.http.delete(url)).await?;
        Ok(())
    }

    /// Opens an authenticated WebSocket to `path` (e.g. `api/v1/agent/runs/ID/session`).
    pub async fn websocket(&self, path_and_query: &str) -> Result<WebSocket, ClientError> {
        let url = self.url(path_and_query)?;
        connect_websocket(&url, &self.token).await
    }
}

/// Percent-encodes one path segment.
pub fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Opens a WebSocket to an `http(s)` URL (rewritten to `ws(s)`), sending `token` as a bearer.
pub async fn connect_websocket(url: &Url, token: &str) -> Result<WebSocket, ClientError> {
    let mut ws_url = url.clone();
    let scheme = match url.scheme() {
        "https" | "wss" => "wss",
        _ => "ws",
    };
    ws_url
        .set_scheme(scheme)
        .map_err(|()| ClientError::BadUrl {
            url: url.to_string(),
            reason: "cannot use as a WebSocket URL".to_owned(),
        })?;
    let mut request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::WebSocket(Box::new(e)))?;
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| ClientError::BadUrl {
            url: url.to_string(),
            reason: "the token contains characters not allowed in a header".to_owned(),
        })?;
    request.headers_mut().insert("authorization", value);
    let (ws, _resp) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(|e| match e {
            // Refused at the handshake: keep the status (401 means the credential is dead).
            tokio_tungstenite::tungstenite::Error::Http(response) => ClientError::Status {
                status: response.status().as_u16(),
                body: response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).chars().take(2000).collect())
                    .unwrap_or_default(),
            },
            e => ClientError::WebSocket(Box::new(e)),
        })?;
    Ok(ws)
}

#[cfg(test)]
// A test owns the task it spawns.
#[allow(clippy::disallowed_methods, clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain-HTTP client loads no TLS roots, so a redirect to HTTPS (which
    /// it could not verify) fails with what to configure instead.
    #[tokio::test]
    async fn a_plain_http_server_redirecting_to_https_is_told_to_use_https() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await.unwrap();
            let head = "HTTP/1.1 301 Moved Permanently\r\nLocation: https://hangar.example/api/v1/whoami\r\nContent-Length: 0\r\n\r\n";
            socket.write_all(head.as_bytes()).await.unwrap();
        });
        let client = Client::new(&format!("http://127.0.0.1:{port}"), "hk_x").unwrap();
        let err = client
            .get_json::<serde_json::Value>("api/v1/whoami")
            .await
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("use its https:// URL as the server URL"),
            "{text}"
        );
    }
}
