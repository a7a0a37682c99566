//! A fake Hangar server: `GET /api/v1/agent/runs/{id}`, the session WebSocket
//! (stores events once per seq, acks, can drop a connection mid-stream, can
//! push frames to the agent) and an LLM gateway at
//! `POST /api/v1/llm/chat/completions` that checks the run token and proxies
//! to a scripted [`FakeLlm`] (which checks every tool call is answered).

#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hangar_agent::{CancellationToken, ManagedRun, RunOutcome, SessionEvent};
use hangar_protocol::session::{Ack, EventBody, ServerToAgent};
use hangar_protocol::{Envelope, RunState};
use hangar_testkit::fake_llm::FakeLlm;
pub use hangar_testkit::fake_llm::Turn;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

pub const RUN_ID: &str = "run-1";
pub const EXECUTION_ID: &str = "exec-1";
pub const TOKEN: &str = "hr_test_token";
pub const MODEL: &str = "openai/gpt-test";
/// Upper bound for any wait in these tests; reaching it is a failure.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// How the first session connection misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct DropPlan {
    /// Events committed (and acked) normally on the first connection.
    pub commit: usize,
    /// Events then received but neither committed nor acked before the drop.
    pub lose: usize,
}

#[derive(Debug, Default)]
struct Session {
    committed: BTreeMap<u64, SessionEvent>,
    /// Every event frame received: (connection number from 1, seq).
    received: Vec<(usize, u64)>,
    /// Frames whose seq was already acked or sent on the same connection.
    duplicates: Vec<u64>,
    /// Frames that skipped a seq on their connection.
    gaps: Vec<u64>,
    connections: usize,
}

struct Shared {
    session: Mutex<Session>,
    changed: watch::Sender<u64>,
    outbound: broadcast::Sender<String>,
    llm_url: String,
    http: reqwest::Client,
    drop_plan: Option<DropPlan>,
    prompt: String,
}

impl Shared {
    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// The running fake; stops when dropped.
pub struct FakeHangar {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    llm: FakeLlm,
}

impl Drop for FakeHangar {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeHangar {
    pub async fn start(prompt: &str, script: Vec<Turn>) -> Self {
        Self::start_with(prompt, script, None).await
    }

    pub async fn start_with(prompt: &str, script: Vec<Turn>, drop_plan: Option<DropPlan>) -> Self {
        let llm = FakeLlm::start(script).await;
        let shared = Arc::new(Shared {
            session: Mutex::default(),
            changed: watch::channel(0).0,
            outbound: broadcast::channel(16).0,
            llm_url: llm.base_url(),
            http: reqwest::Client::new(),
            drop_plan,
            prompt: prompt.to_owned(),
        });
        let app = Router::new()
            .route("/api/v1/agent/runs/local", post(register_local))
            .route("/api/v1/agent/runs/{id}", get(get_run))
            .route("/api/v1/agent/runs/{id}/transcript", get(transcript))
            .route("/api/v1/agent/runs/{id}/session", get(session))
            .route("/api/v1/llm/chat/completions", post(chat))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeHangar {
            addr,
            shared,
            server,
            llm,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn managed_run(&self, workdir: &std::path::Path) -> ManagedRun {
        ManagedRun {
            server_url: self.url(),
            run_id: RUN_ID.to_owned(),
            execution_id: EXECUTION_ID.to_owned(),
            run_token: TOKEN.to_owned(),
            workdir: workdir.to_path_buf(),
            model_override: None,
            spool_dir: None,
            skill_override: None,
            mcp_overrides: Default::default(),
            prepare: None,
            notes: Vec::new(),
            continues: true,
        }
    }

    /// Runs the managed agent against this server.
    pub async fn run_agent(
        &self,
        workdir: &std::path::Path,
        cancel: CancellationToken,
    ) -> RunOutcome {
        tokio::time::timeout(
            WAIT_LIMIT,
            hangar_agent::run_managed(self.managed_run(workdir), cancel),
        )
        .await
        .expect("run did not finish")
        .expect("agent error")
    }

    /// Committed events, in seq order.
    pub fn events(&self) -> Vec<SessionEvent> {
        self.shared
            .session
            .lock()
            .unwrap()
            .committed
            .values()
            .cloned()
            .collect()
    }

    /// (connection, seq) of every event frame received.
    pub fn received(&self) -> Vec<(usize, u64)> {
        self.shared.session.lock().unwrap().received.clone()
    }

    pub fn duplicates(&self) -> Vec<u64> {
        self.shared.session.lock().unwrap().duplicates.clone()
    }

    pub fn gaps(&self) -> Vec<u64> {
        self.shared.session.lock().unwrap().gaps.clone()
    }

    pub fn connections(&self) -> usize {
        self.shared.session.lock().unwrap().connections
    }

    /// Request bodies the gateway received.
    pub fn llm_requests(&self) -> Vec<Value> {
        self.llm.requests()
    }

    /// The model server behind the gateway.
    pub fn llm(&self) -> &FakeLlm {
        &self.llm
    }

    /// Pushes a frame to the connected agent.
    pub fn send(&self, frame: ServerToAgent) {
        self.shared
            .outbound
            .send(frame.to_envelope().to_text())
            .expect("no agent connected");
    }

    /// Waits until the committed events satisfy `pred`.
    pub async fn wait_events(
        &self,
        what: &str,
        pred: impl Fn(&[SessionEvent]) -> bool,
    ) -> Vec<SessionEvent> {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!(
                    "timed out waiting for {what}; events: {:#?}",
                    kinds(&events)
                );
            }
        }
    }
}

/// The `kind` of each event.
pub fn kinds(events: &[SessionEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            serde_json::to_value(&e.body).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The terminal status of a finished run's events.
pub fn final_state(events: &[SessionEvent]) -> Option<RunState> {
    match events.last().map(|e| &e.body) {
        Some(EventBody::Status { state, .. }) => *state,
        _ => None,
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"))
}

async fn get_run(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if id != RUN_ID {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(json!({
        "run_id": RUN_ID,
        "task_id": RUN_ID,
        "title": "test run",
        "state": "INPROGRESS",
        "prompt": shared.prompt,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "agent_config": {"model_id": MODEL, "base_prompt": "Answer in English."}
    }))
    .into_response()
}

/// `GET /api/v1/agent/runs/{id}/transcript`: a first execution, so nothing
/// earlier to continue.
async fn transcript(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if id != RUN_ID {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(json!({"run_id": RUN_ID, "events": []})).into_response()
}

async fn session(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if id != RUN_ID || query.get("execution_id").map(String::as_str) != Some(EXECUTION_ID) {
        return StatusCode::NOT_FOUND.into_response();
    }
    ws.on_upgrade(move |socket| serve_session(shared, socket))
}

fn highest_contiguous(committed: &BTreeMap<u64, SessionEvent>) -> u64 {
    let mut seq = 0;
    while committed.contains_key(&(seq + 1)) {
        seq += 1;
    }
    seq
}

async fn serve_session(shared: Arc<Shared>, mut socket: WebSocket) {
    let mut outbound = shared.outbound.subscribe();
    let (conn, initial) = {
        let mut s = shared.session.lock().unwrap();
        s.connections += 1;
        (s.connections, highest_contiguous(&s.committed))
    };
    shared.bump();
    let plan = shared.drop_plan.filter(|_| conn == 1);
    let ack = |seq| {
        Message::Text(
            ServerToAgent::Ack(Ack { seq })
                .to_envelope()
                .to_text()
                .into(),
        )
    };
    if socket.send(ack(initial)).await.is_err() {
        return;
    }
    let mut received_here = 0usize;
    let mut expected = initial + 1;
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(Ok(Message::Text(text))) = frame else {
                    match frame {
                        Some(Ok(_)) => continue,
                        _ => return,
                    }
                };
                let envelope = Envelope::parse(text.as_str()).unwrap();
                assert_eq!(envelope.kind, "event");
                let event: SessionEvent = envelope.decode().unwrap();
                received_here += 1;
                let seq = event.seq;
                let commit = plan.is_none_or(|p| received_here <= p.commit);
                let acked = {
                    let mut s = shared.session.lock().unwrap();
                    s.received.push((conn, seq));
                    // On one connection the agent must send initial+1, +2, … exactly.
                    if seq < expected {
                        s.duplicates.push(seq);
                    } else if seq > expected {
                        s.gaps.push(seq);
                    }
                    expected = seq + 1;
                    let top = highest_contiguous(&s.committed);
                    if commit && seq == top + 1 {
                        s.committed.insert(seq, event);
                    }
                    highest_contiguous(&s.committed)
                };
                shared.bump();
                if plan.is_some_and(|p| received_here >= p.commit + p.lose) {
                    // Drop the connection without a close frame.
                    return;
                }
                if commit && socket.send(ack(acked)).await.is_err() {
                    return;
                }
            }
            out = outbound.recv() => {
                let Ok(text) = out else { continue };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let model = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["model"].as_str().map(str::to_owned));
    if model.as_deref() != Some(MODEL) {
        return (StatusCode::BAD_REQUEST, format!("unknown model {model:?}")).into_response();
    }
    let upstream = shared
        .http
        .post(format!("{}/chat/completions", shared.llm_url))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let mut response = Response::builder().status(upstream.status().as_u16());
    if let Some(content_type) = upstream.headers().get(header::CONTENT_TYPE) {
        response = response.header(header::CONTENT_TYPE, content_type.as_bytes());
    }
    response
        .body(Body::from_stream(upstream.bytes_stream()))
        .unwrap()
}

/// `POST /api/v1/agent/runs/local` (API key `hk_test`): registers a tracked
/// unmanaged run; the body must be a `RunAgentRequest` with the prompt.
async fn register_local(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<hangar_protocol::RunAgentRequest>,
) -> Response {
    let key_ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {API_KEY}"));
    if !key_ok || body.prompt.as_deref() != Some(shared.prompt.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(serde_json::json!({
        "run_id": RUN_ID, "execution_id": EXECUTION_ID, "run_token": TOKEN, "state": "INPROGRESS"
    }))
    .into_response()
}

/// The API key `register_local` accepts.
pub const API_KEY: &str = "hk_test";
