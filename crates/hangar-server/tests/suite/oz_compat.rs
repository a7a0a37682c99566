//! Issue 17, compatibility with the stock `oz-agent-worker`: frames from a
//! newer or different worker never leave a run hanging, and what a worker
//! reported is visible on the run.
//!
//! The worker here is a raw socket sending the stock worker's JSON frames:
//! no `worker_hello`, no `execution_id` on its reports.

use crate::suite::common::TwoTeams;
use futures::{SinkExt, StreamExt};
use hangar_testkit::poll::{eventually_ok, within};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a run may take to reach the state a report puts it in.
const SETTLE: Duration = Duration::from_secs(15);

/// A stock-worker-like connection.
struct OzWorker {
    ws: Socket,
    id: String,
}

impl OzWorker {
    /// Connects as team B, with its team key.
    async fn connect(t: &TwoTeams, id: &str) -> OzWorker {
        Self::connect_with(t, id, &t.key_b).await
    }

    async fn connect_with(t: &TwoTeams, id: &str, credential: &str) -> OzWorker {
        let ws = hangar_client::connect_websocket(
            &t.ws_url(&format!("/selfhosted/worker/ws?worker_id={id}")),
            credential,
        )
        .await
        .unwrap();
        OzWorker {
            ws,
            id: id.to_owned(),
        }
    }

    async fn send(&mut self, kind: &str, data: Value) {
        let frame = json!({"type": kind, "data": data}).to_string();
        self.ws.send(Message::Text(frame.into())).await.unwrap();
    }

    /// Sends a frame exactly as written.
    async fn send_raw(&mut self, frame: &str) {
        self.ws
            .send(Message::Text(frame.to_owned().into()))
            .await
            .unwrap();
    }

    /// Waits for the next assignment and claims it as the stock worker does
    /// (no `execution_id`); answers its `task_id`.
    async fn claim_next(&mut self) -> String {
        self.claim_next_with_token().await.0
    }

    /// As [`claim_next`](Self::claim_next); also answers the run token the
    /// assignment hands the agent.
    async fn claim_next_with_token(&mut self) -> (String, String) {
        let data = self.next_assignment().await;
        let task_id = data["task_id"].as_str().unwrap().to_owned();
        let token = data["env_vars"][hangar_protocol::ENV_RUN_TOKEN]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.claim(&task_id).await;
        (task_id, token)
    }

    /// Sends `task_claimed` for `task_id`, as the stock worker does.
    async fn claim(&mut self, task_id: &str) {
        let worker_id = self.id.clone();
        self.send(
            "task_claimed",
            json!({"task_id": task_id, "worker_id": worker_id}),
        )
        .await;
    }

    /// The `data` of the next `task_assignment`, not claimed.
    async fn next_assignment(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("no task_assignment arrived")
                .expect("the server closed the worker socket")
                .unwrap();
            let Message::Text(text) = next else { continue };
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "task_assignment" {
                return frame["data"].clone();
            }
        }
    }

    /// Keeps reading (answering pings) in the background.
    fn keep_alive(self) -> tokio::task::JoinHandle<()> {
        let mut ws = self.ws;
        tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} })
    }
}

/// Creates a remote run of team B; answers its id.
async fn remote_run(t: &TwoTeams, prompt: &str) -> String {
    remote_run_with(t, prompt, &t.key_b).await
}

async fn remote_run_with(t: &TwoTeams, prompt: &str, key: &str) -> String {
    let body = json!({ "prompt": prompt }).to_string();
    let v = t.ok("POST", "/agent/runs", key, Some(&body)).await;
    v["run_id"].as_str().unwrap().to_owned()
}

/// Polls team B's run until it has left QUEUED/PENDING/CLAIMED/INPROGRESS,
/// or the deadline: answers the last view of it.
async fn settled(t: &TwoTeams, run_id: &str) -> Value {
    settled_with(t, run_id, &t.key_b).await
}

async fn settled_with(t: &TwoTeams, run_id: &str, key: &str) -> Value {
    // On timeout the last view is answered all the same: the caller's
    // assertions on it say what is wrong.
    let mut last = Value::Null;
    let what = format!("run {run_id} to settle");
    let settled = within(&what, SETTLE, Duration::from_millis(50), async || {
        let run = t
            .ok("GET", &format!("/agent/runs/{run_id}"), key, None)
            .await;
        let state = run["state"].as_str().unwrap_or_default().to_owned();
        if !["QUEUED", "PENDING", "CLAIMED", "INPROGRESS"].contains(&state.as_str()) {
            return Ok(run);
        }
        last = run;
        Err(state)
    })
    .await;
    settled.unwrap_or(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oz_unknown_failure_reason_ends_the_run_instead_of_hanging() {
    let t = TwoTeams::start().await;
    let mut worker = OzWorker::connect(&t, "oz-future").await;
    let run_id = remote_run(&t, "fail with a reason from the future").await;
    let task_id = worker.claim_next().await;
    assert_eq!(task_id, run_id);
    // Written out: what a newer stock worker sends, an unknown field too.
    worker
        .send_raw(&format!(
            r#"{{"type":"task_failed","data":{{"task_id":"{task_id}","message":"the sandbox gave up","failure_reason":"some_future_reason","exit_code":7,"failure_details":{{"node":"n1"}}}}}}"#
        ))
        .await;
    let _alive = worker.keep_alive();
    let run = settled(&t, &run_id).await;
    // `unknown` ends a run in ERROR; so does a label this version does not know.
    assert_eq!(run["state"], "ERROR", "{run}");
    assert_eq!(
        run["status_message"]["message"], "the sandbox gave up",
        "{run}"
    );
    // Kept as sent, not flattened to `unknown`.
    assert_eq!(run["failure_reason"], "some_future_reason", "{run}");
    assert_eq!(run["exit_code"], 7, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oz_undecodable_task_report_ends_the_run_with_a_clear_status() {
    let t = TwoTeams::start().await;
    let mut worker = OzWorker::connect(&t, "oz-garbled").await;
    // A `task_failed` whose exit code is not a number, then a `task_completed`
    // whose message is not a string: known types that do not decode.
    let reports = [
        (
            "task_failed",
            json!({"message": "boom", "failure_reason": "container_exit", "exit_code": "three"}),
        ),
        ("task_completed", json!({"message": {"text": "done"}})),
    ];
    for (kind, mut data) in reports {
        let run_id = remote_run(&t, &format!("report {kind} badly")).await;
        let task_id = worker.claim_next().await;
        assert_eq!(task_id, run_id);
        data["task_id"] = json!(task_id);
        worker.send(kind, data).await;
        let run = settled(&t, &run_id).await;
        assert_eq!(run["state"], "ERROR", "{kind}: {run}");
        let message = run["status_message"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.starts_with("the worker's report could not be read:") && message.contains(kind),
            "{kind}: {run}"
        );
    }
    // The connection stays usable: a good report afterwards still applies.
    let run_id = remote_run(&t, "then succeed").await;
    let task_id = worker.claim_next().await;
    worker
        .send(
            "task_completed",
            json!({"task_id": task_id, "message": "fine"}),
        )
        .await;
    let _alive = worker.keep_alive();
    let run = settled(&t, &run_id).await;
    assert_eq!(run["state"], "SUCCEEDED", "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oz_run_details_show_failure_reason_and_exit_code() {
    // Team A, so a signed-in member can see the dashboard's run facts too.
    let t = TwoTeams::start().await;
    let a = t.key_a.clone();
    let token = t.worker_token("oz-oom").await;
    let mut worker = OzWorker::connect_with(&t, "oz-oom", &token).await;
    let run_id = remote_run_with(&t, "use too much memory", &a).await;
    let task_id = worker.claim_next().await;
    worker
        .send(
            "task_failed",
            json!({"task_id": task_id, "message": "the container ran out of memory",
                   "failure_reason": "container_oom", "exit_code": 137}),
        )
        .await;
    // A run that succeeds shows neither.
    let ok_run = remote_run_with(&t, "succeed", &a).await;
    let ok_task = worker.claim_next().await;
    worker
        .send(
            "task_completed",
            json!({"task_id": ok_task, "message": "done"}),
        )
        .await;
    let _alive = worker.keep_alive();
    let run = settled_with(&t, &run_id, &a).await;
    assert_eq!(run["state"], "FAILED", "{run}");
    assert_eq!(run["failure_reason"], "container_oom", "{run}");
    assert_eq!(run["exit_code"], 137, "{run}");
    let ok = settled_with(&t, &ok_run, &a).await;
    assert_eq!(ok["state"], "SUCCEEDED", "{ok}");
    assert!(ok.get("failure_reason").is_none(), "{ok}");
    assert!(ok.get("exit_code").is_none(), "{ok}");
    // Lists show the same.
    let list = t.ok("GET", "/agent/runs", &a, None).await;
    let runs = list["runs"].as_array().unwrap();
    let listed = runs
        .iter()
        .find(|r| r["run_id"] == run_id.as_str())
        .unwrap();
    assert_eq!(listed["failure_reason"], "container_oom", "{listed}");
    assert_eq!(listed["exit_code"], 137, "{listed}");
    let listed_ok = runs
        .iter()
        .find(|r| r["run_id"] == ok_run.as_str())
        .unwrap();
    assert!(listed_ok.get("failure_reason").is_none(), "{listed_ok}");
    // And the dashboard's run facts, to a member the runs are shared with.
    let cookie = crate::suite::web::member_cookie(&t).await;
    for id in [&run_id, &ok_run] {
        t.ok(
            "POST",
            &format!("/agent/runs/{id}/shares"),
            &a,
            Some(r#"{"grantee":"team","role":"view"}"#),
        )
        .await;
    }
    let facts = |id: String| {
        let (http, url, cookie) = (t.http.clone(), t.url.clone(), cookie.clone());
        async move {
            let r = http
                .get(format!("{url}/_dash/runs/{id}/meta"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let html = facts(run_id.clone()).await;
    assert!(
        html.contains("Failure reason") && html.contains("container_oom"),
        "{html}"
    );
    assert!(html.contains("Exit code") && html.contains("137"), "{html}");
    let html = facts(ok_run.clone()).await;
    assert!(
        !html.contains("Failure reason") && !html.contains("Exit code"),
        "{html}"
    );
}

#[tokio::test]
async fn oz_a_refused_worker_id_gets_a_problem_body() {
    let t = TwoTeams::start().await;
    // A space, a slash, a control character, bytes that are not UTF-8, and
    // an id too long: each refused before any upgrade, with a problem that
    // says what an id may hold.
    let long = "w".repeat(129);
    for id in [
        "has%20space",
        "a%2Fb",
        "tab%09id",
        "%FF%FE",
        long.as_str(),
        "",
    ] {
        let r = t
            .call(
                "GET",
                &format!("/selfhosted/worker/ws?worker_id={id}"),
                Some(&t.key_b),
                None,
            )
            .await;
        r.assert_problem(400, &format!("worker id `{id}`"));
        let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
        assert!(
            detail.contains("worker_id") || detail.contains("worker id"),
            "{id}: {detail}"
        );
        if !id.is_empty() {
            assert!(
                detail.contains("allowed") && detail.contains("128") && !detail.contains("  "),
                "`{id}`: the problem should say which characters are allowed: {detail}"
            );
        }
    }
    // An ordinary id passes the check (a plain GET is then refused for not
    // being a WebSocket upgrade).
    let r = t
        .call(
            "GET",
            "/selfhosted/worker/ws?worker_id=oz-worker.1_a%3Ab",
            Some(&t.key_b),
            None,
        )
        .await;
    r.assert_problem(400, "a plain GET");
    assert!(r.text.contains("WebSocket"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oz_the_agents_check_in_starts_a_stock_workers_run() {
    let t = TwoTeams::start().await;
    let mut worker = OzWorker::connect(&t, "oz-checkin").await;
    let run_id = remote_run(&t, "start without task_started").await;
    let (task_id, token) = worker.claim_next_with_token().await;
    assert_eq!(task_id, run_id);
    assert!(token.starts_with(hangar_protocol::RUN_TOKEN_PREFIX));
    let _alive = worker.keep_alive();
    // The stock worker sends no `task_started`: claimed, not started.
    let run = run_in_state(&t, &run_id, "CLAIMED").await;
    assert!(run.get("started_at").is_none_or(Value::is_null), "{run}");
    // The agent checks in (its session stream): the run is in progress.
    let _agent = hangar_client::connect_websocket(
        &t.ws_url(&format!("/agent/runs/{run_id}/session")),
        &token,
    )
    .await
    .unwrap();
    // The check-in starts the run.
    let run = run_in_state(&t, &run_id, "INPROGRESS").await;
    assert!(run["started_at"].is_string(), "{run}");
}

/// Polls team B's run until it is in `want`; answers it.
async fn run_in_state(t: &TwoTeams, run_id: &str, want: &str) -> Value {
    let what = format!("run {run_id} to be {want}");
    eventually_ok(&what, SETTLE, async || {
        let run = t
            .ok("GET", &format!("/agent/runs/{run_id}"), &t.key_b, None)
            .await;
        if run["state"] == want {
            Ok(run)
        } else {
            Err(run)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oz_a_follow_up_reassignment_carries_the_follow_up_and_the_conversation() {
    let t = TwoTeams::start().await;
    let mut worker = OzWorker::connect(&t, "oz-follow").await;
    let run_id = remote_run(&t, "the first prompt").await;
    let first = worker.next_assignment().await;
    assert_eq!(
        first["task"]["task_definition"]["prompt"],
        "the first prompt"
    );
    assert!(first["task"]["agent_conversation_id"].is_null(), "{first}");
    worker.claim(&run_id).await;
    worker
        .send(
            "task_completed",
            json!({"task_id": run_id, "message": "done"}),
        )
        .await;
    run_in_state(&t, &run_id, "SUCCEEDED").await;
    let body = json!({"message": "now do the second thing"}).to_string();
    t.ok(
        "POST",
        &format!("/agent/runs/{run_id}/followups"),
        &t.key_b,
        Some(&body),
    )
    .await;
    let again = worker.next_assignment().await;
    assert_eq!(again["task_id"], run_id.as_str());
    assert_eq!(
        again["task"]["task_definition"]["prompt"], "now do the second thing",
        "{again}"
    );
    assert_eq!(
        again["task"]["agent_conversation_id"],
        run_id.as_str(),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oz_a_late_report_without_execution_id_never_ends_a_newer_execution() {
    let t = TwoTeams::start().await;
    let run_id = remote_run(&t, "first").await;
    // A reconnect within the lease: a report queued for the execution
    // assigned on the old connection still applies on the new one.
    let mut old = OzWorker::connect(&t, "oz-late").await;
    assert_eq!(old.claim_next().await, run_id);
    drop(old);
    let mut worker = OzWorker::connect(&t, "oz-late").await;
    worker
        .send(
            "task_completed",
            json!({"task_id": run_id, "message": "finished while away"}),
        )
        .await;
    let wait_state = |want: &'static str| run_in_state(&t, &run_id, want);
    wait_state("SUCCEEDED").await;
    // A follow-up assigns a newer execution on this connection. A duplicate
    // failure report for the old one, sent before the new one is claimed,
    // must not end it.
    let body = json!({"message": "again"}).to_string();
    t.ok(
        "POST",
        &format!("/agent/runs/{run_id}/followups"),
        &t.key_b,
        Some(&body),
    )
    .await;
    let again = worker.next_assignment().await;
    assert_eq!(again["task_id"], run_id.as_str());
    worker
        .send(
            "task_failed",
            json!({"task_id": run_id, "message": "late news of the first execution",
                   "failure_reason": "container_exit", "exit_code": 1}),
        )
        .await;
    worker.claim(&run_id).await;
    let run = wait_state("CLAIMED").await;
    assert!(
        !run.to_string().contains("late news"),
        "the stale report ended the newer execution: {run}"
    );
    // Once claimed here, this connection's reports apply to it.
    worker
        .send(
            "task_completed",
            json!({"task_id": run_id, "message": "second done"}),
        )
        .await;
    let run = wait_state("SUCCEEDED").await;
    assert_eq!(run["status_message"]["message"], "second done", "{run}");
}
