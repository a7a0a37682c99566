//! Issue 17, compatibility with the stock `oz-agent-worker`: frames from a
//! newer or different worker never leave a run hanging, and what a worker
//! reported is visible on the run.
//!
//! The worker here is a raw socket sending the stock worker's JSON frames:
//! no `worker_hello`, no `execution_id` on its reports.

use crate::suite::common::TwoTeams;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a run may take to reach the state a report puts it in.
const SETTLE: Duration = Duration::from_secs(15);

/// A stock-worker-like connection of team B.
struct OzWorker {
    ws: Socket,
    id: String,
}

impl OzWorker {
    async fn connect(t: &TwoTeams, id: &str) -> OzWorker {
        let ws = hangar_client::connect_websocket(
            &t.ws_url(&format!("/selfhosted/worker/ws?worker_id={id}")),
            &t.key_b,
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
                let task_id = frame["data"]["task_id"].as_str().unwrap().to_owned();
                let worker_id = self.id.clone();
                self.send(
                    "task_claimed",
                    json!({"task_id": task_id, "worker_id": worker_id}),
                )
                .await;
                return task_id;
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
    let body = json!({ "prompt": prompt }).to_string();
    let v = t.ok("POST", "/agent/runs", &t.key_b, Some(&body)).await;
    v["run_id"].as_str().unwrap().to_owned()
}

/// Polls the run until it has left QUEUED/PENDING/CLAIMED/INPROGRESS, or
/// the deadline: answers the last view of it.
async fn settled(t: &TwoTeams, run_id: &str) -> Value {
    let start = Instant::now();
    loop {
        let run = t
            .ok("GET", &format!("/agent/runs/{run_id}"), &t.key_b, None)
            .await;
        let state = run["state"].as_str().unwrap_or_default();
        let live = ["QUEUED", "PENDING", "CLAIMED", "INPROGRESS"].contains(&state);
        if !live || start.elapsed() > SETTLE {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
