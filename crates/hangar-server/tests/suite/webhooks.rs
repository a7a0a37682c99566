//! Outbound webhooks end to end: a real server posts to a real local HTTP
//! receiver; every lifecycle event of a run arrives signed; deliveries
//! survive the receiver being down and the server restarting; the log and
//! redelivery work; the SSRF guard refuses internal targets by default.

use crate::suite::common::{MODEL, TwoTeams};
use axum::http::{HeaderMap, StatusCode};
use hangar_server::integrations::signature::verify_hex;
use hangar_server::{Server, ServerConfig};
use hangar_testkit::poll::{eventually, until};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Whether the signature is right for `secret`.
    fn signed_with(&self, secret: &str) -> bool {
        let ts = self.header("x-hangar-timestamp");
        let Some(hex) = self.header("x-hangar-signature").strip_prefix("v1=") else {
            return false;
        };
        verify_hex(secret.as_bytes(), &[ts.as_bytes(), b".", &self.body], hex)
    }
}

/// A local HTTP receiver that records every POST to `/hook`.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(addr: SocketAddr) -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(Received {
                        headers,
                        body: body.to_vec(),
                    });
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, got, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The event types received for `run_id`, in arrival order.
    fn types_for(&self, run_id: &str) -> Vec<String> {
        self.received()
            .iter()
            .map(Received::json)
            .filter(|b| b["data"]["run_id"] == run_id)
            .map(|b| b["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fast(c: &mut ServerConfig) {
    c.webhooks.allow_internal_targets = true;
    c.webhooks.poll_interval = Duration::from_millis(100);
    c.webhooks.retry_base = Duration::from_millis(200);
    c.webhooks.retry_max = Duration::from_millis(500);
}

/// A queued run of team A, then cancelled: `run_queued`, `run_cancelled`.
async fn run_and_cancel(t: &TwoTeams) -> String {
    let body = json!({"prompt": "hooked", "config": {"model_id": MODEL}}).to_string();
    let run = t.ok("POST", "/agent/runs", &t.key_a, Some(&body)).await;
    let id = run["run_id"].as_str().unwrap().to_owned();
    t.ok("POST", &format!("/agent/runs/{id}/cancel"), &t.key_a, None)
        .await;
    id
}

async fn subscribe(t: &TwoTeams, url: &str, types: &[&str]) -> (String, String) {
    let body = json!({"url": url, "event_types": types}).to_string();
    let created = t.ok("POST", "/webhooks", &t.key_a, Some(&body)).await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn outbound_webhook_delivers_every_lifecycle_event_signed_and_logged() {
    let t = TwoTeams::start_with(fast).await;
    let rx = Receiver::start("127.0.0.1:0".parse().unwrap()).await;
    let (hook, secret) = subscribe(&t, &rx.url(), &[]).await;
    assert!(secret.starts_with("whsec_"));
    let (only_cancel, other_secret) = subscribe(&t, &rx.url(), &["run_cancelled"]).await;
    let listed = t.ok("GET", "/webhooks", &t.key_a, None).await;
    assert!(!listed.to_string().contains(&secret), "{listed}");

    let run = run_and_cancel(&t).await;
    let want = ["run_queued", "run_cancelled", "run_cancelled"];
    until(
        "the receiver gets every event",
        Duration::from_secs(20),
        || rx.types_for(&run).len() >= want.len(),
    )
    .await;
    let mut types = rx.types_for(&run);
    types.sort();
    assert_eq!(types, ["run_cancelled", "run_cancelled", "run_queued"]);
    for r in rx.received() {
        assert!(
            r.signed_with(&secret) != r.signed_with(&other_secret),
            "each delivery is signed with its own subscription's secret"
        );
        assert!(!r.signed_with("whsec_wrong"));
        let body = r.json();
        assert_eq!(r.header("x-hangar-delivery"), body["id"]);
        assert_eq!(r.header("x-hangar-event"), body["type"]);
        assert!(body["data"]["sequence"].as_i64().unwrap() > 0);
    }
    let from_hook: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|r| r.signed_with(&secret))
        .collect();
    assert_eq!(
        from_hook.len(),
        2,
        "the unfiltered subscription's two events, signed with its secret"
    );

    // The log: delivered, with the receiver's status, one attempt each.
    let log = t
        .ok(
            "GET",
            &format!("/webhooks/{hook}/deliveries"),
            &t.key_a,
            None,
        )
        .await;
    let deliveries = log["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{log}");
    for d in deliveries {
        assert_eq!(d["state"], "delivered", "{d}");
        assert_eq!(d["response_code"], 204);
        assert_eq!(d["attempts"], 1);
    }
    let filtered = t
        .ok(
            "GET",
            &format!("/webhooks/{only_cancel}/deliveries"),
            &t.key_a,
            None,
        )
        .await;
    assert_eq!(filtered["deliveries"].as_array().unwrap().len(), 1);

    // Redelivery sends the same delivery again.
    let id = deliveries[0]["id"].as_str().unwrap();
    t.ok(
        "POST",
        &format!("/webhooks/{hook}/deliveries/{id}/redeliver"),
        &t.key_a,
        None,
    )
    .await;
    until("the redelivery arrives", Duration::from_secs(20), || {
        rx.received()
            .iter()
            .filter(|r| r.header("x-hangar-delivery") == id)
            .count()
            == 2
    })
    .await;
    // Another team sees none of it.
    t.call(
        "GET",
        &format!("/webhooks/{hook}/deliveries"),
        Some(&t.key_b),
        None,
    )
    .await
    .assert_problem(404, "team B reads A's delivery log");
    t.ok("DELETE", &format!("/webhooks/{hook}"), &t.key_a, None)
        .await;
}

#[tokio::test]
async fn outbound_webhook_deliveries_wait_for_a_receiver_that_is_down_and_survive_a_restart() {
    let mut t = TwoTeams::start_with(fast).await;
    // A port with nothing listening on it (yet).
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{addr}/hook");
    let (hook, secret) = subscribe(&t, &url, &[]).await;
    let run = run_and_cancel(&t).await;
    let log_path = format!("/webhooks/{hook}/deliveries");
    eventually(
        "attempts against the closed port",
        Duration::from_secs(20),
        || async {
            let log = t.ok("GET", &log_path, &t.key_a, None).await;
            let d = log["deliveries"].as_array().cloned().unwrap_or_default();
            (d.len() == 2
                && d.iter().all(|d| {
                    d["state"] == "pending"
                        && d["attempts"].as_i64() >= Some(1)
                        && d["error"].is_string()
                }))
            .then_some(())
        },
    )
    .await;

    // Restart the server on the same database; then the receiver comes up.
    let server = t.take_server();
    let mut config: ServerConfig = server.state().config.clone();
    server.shutdown().await;
    config.listen = "127.0.0.1:0".parse().unwrap();
    let restarted = Server::start(config).await.unwrap();
    let rx = Receiver::start(addr).await;
    until(
        "the deliveries arrive after the restart",
        Duration::from_secs(30),
        || rx.types_for(&run).len() >= 2,
    )
    .await;
    let mut types = rx.types_for(&run);
    types.sort();
    assert_eq!(
        types,
        ["run_cancelled", "run_queued"],
        "none lost, none twice"
    );
    assert!(rx.received().iter().all(|r| r.signed_with(&secret)));
    restarted.shutdown().await;
}

#[tokio::test]
async fn outbound_webhook_ssrf_guard_refuses_internal_targets_by_default() {
    let t = TwoTeams::start().await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/hook",
        "http://[::1]/hook",
    ] {
        let body = json!({"url": url}).to_string();
        let r = t
            .call("POST", "/webhooks", Some(&t.key_a), Some(&body))
            .await;
        r.assert_problem(400, url);
        assert!(
            r.text.contains("SSRF guard") && r.text.contains("allow_internal_targets"),
            "{url}: {}",
            r.text
        );
    }
    let body = json!({"url": "file:///etc/passwd"}).to_string();
    t.call("POST", "/webhooks", Some(&t.key_a), Some(&body))
        .await
        .assert_problem(400, "file URL");
    let (_, member) = t.member("mo").await;
    let body = json!({"url": "https://example.com/hook"}).to_string();
    t.call("POST", "/webhooks", Some(&member), Some(&body))
        .await
        .assert_problem(403, "a member creates a webhook");
}

#[tokio::test]
async fn outbound_webhook_test_sends_a_signed_ping_through_the_outbox() {
    let t = TwoTeams::start_with(fast).await;
    let rx = Receiver::start("127.0.0.1:0".parse().unwrap()).await;
    let (hook, secret) = subscribe(&t, &rx.url(), &["run_succeeded"]).await;
    let test_path = format!("/webhooks/{hook}/test");

    // Queued in the outbox: the answer is the delivery, not yet sent.
    let queued = t.ok("POST", &test_path, &t.key_a, None).await;
    assert_eq!(queued["event_type"], "ping", "{queued}");
    assert_eq!(queued["sequence"], -1, "below every lifecycle event");
    let id = queued["id"].as_str().unwrap().to_owned();
    until("the ping arrives", Duration::from_secs(20), || {
        rx.received()
            .iter()
            .any(|r| r.header("x-hangar-delivery") == id)
    })
    .await;
    let got = rx
        .received()
        .into_iter()
        .find(|r| r.header("x-hangar-delivery") == id)
        .unwrap();
    assert!(got.signed_with(&secret), "signed like every delivery");
    assert_eq!(got.header("x-hangar-event"), "ping");
    let body = got.json();
    assert_eq!(
        (body["id"].as_str(), body["type"].as_str()),
        (Some(id.as_str()), Some("ping"))
    );
    assert_eq!(body["data"]["webhook_id"], hook.as_str());

    // In the delivery log, delivered, newest first; a second ping counts down.
    let second = t.ok("POST", &test_path, &t.key_a, None).await;
    assert_eq!(second["sequence"], -2);
    let log_path = format!("/webhooks/{hook}/deliveries");
    eventually(
        "both pings are delivered",
        Duration::from_secs(20),
        || async {
            let log = t.ok("GET", &log_path, &t.key_a, None).await;
            let d = log["deliveries"].as_array().cloned().unwrap_or_default();
            (d.len() == 2
                && d.iter()
                    .all(|d| d["state"] == "delivered" && d["response_code"] == 204))
            .then_some(d)
        },
    )
    .await;
    let log = t.ok("GET", &log_path, &t.key_a, None).await;
    assert_eq!(log["deliveries"][0]["id"], second["id"], "{log}");

    // Admins only; another team's subscription does not exist for them.
    let (_, member) = t.member("watcher").await;
    t.call("POST", &test_path, Some(&member), None)
        .await
        .assert_problem(403, "a member sends a test");
    t.call("POST", &test_path, Some(&t.key_b), None)
        .await
        .assert_problem(404, "team B tests A's webhook");
    t.call("POST", "/webhooks/nope/test", Some(&t.key_a), None)
        .await
        .assert_problem(404, "an unknown webhook");
}
