//! Integrations end to end against a real server: the `/integrations` API
//! (team scoping, roles, the secret never returned) and the generic signed
//! webhook (scenario C4: a tampered body, a wrong secret, a stale timestamp
//! and a replayed delivery are each refused with a 4xx and start no run; a
//! replay stays refused after a restart).

use crate::suite::common::{MODEL, Reply, TwoTeams};
use hangar_server::integrations::signature::hangar_signature;
use hangar_server::{Server, ServerConfig};
use serde_json::{Value, json};

const SECRET: &str = "whsec-test-1f3a9c";

fn now_secs() -> i64 {
    hangar_protocol::Timestamp::now().unix_millis() / 1000
}

/// Creates a generic webhook integration of team A; returns the answer.
async fn create_webhook(t: &TwoTeams, name: &str) -> Value {
    let body = json!({
        "kind": "webhook",
        "name": name,
        "secret": SECRET,
        "settings": {
            "agent_config": {"model_id": MODEL},
            "prompt_prefix": "From the alerting system:",
            "prompt_template": "Investigate {{alert.title}} on {{alert.service}}",
            "title_template": "Alert {{alert.id}}",
            "actor_field": "alert.owner",
            "link_field": "alert.url"
        }
    });
    t.ok("POST", "/integrations", &t.key_a, Some(&body.to_string()))
        .await
}

fn payload(id: u32) -> Vec<u8> {
    json!({"alert": {
        "id": id,
        "title": "disk full",
        "service": "db-1",
        "owner": "ops@example.com",
        "url": format!("https://alerts.example.com/a/{id}")
    }})
    .to_string()
    .into_bytes()
}

/// A delivery as the sender makes it.
struct Delivery {
    body: Vec<u8>,
    timestamp: i64,
    signature: String,
    id: Option<String>,
}

impl Delivery {
    fn signed(secret: &str, body: Vec<u8>, timestamp: i64, id: Option<&str>) -> Delivery {
        Delivery {
            signature: hangar_signature(secret.as_bytes(), timestamp, &body),
            body,
            timestamp,
            id: id.map(str::to_owned),
        }
    }
}

async fn deliver(http: &reqwest::Client, url: &str, d: &Delivery) -> Reply {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-hangar-timestamp", d.timestamp.to_string())
        .header("x-hangar-signature", &d.signature)
        .body(d.body.clone());
    if let Some(id) = &d.id {
        req = req.header("x-hangar-delivery", id);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Reply {
        status,
        content_type,
        text: resp.text().await.unwrap(),
    }
}

async fn run_count(t: &TwoTeams) -> usize {
    let runs = t.ok("GET", "/agent/runs?limit=100", &t.key_a, None).await;
    runs["runs"].as_array().unwrap().len()
}

#[tokio::test]
async fn integrations_are_team_scoped_admin_managed_and_never_show_the_secret() {
    let t = TwoTeams::start().await;
    let created = create_webhook(&t, "alerts").await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["kind"], "webhook");
    assert_eq!(
        created["webhook_url"],
        format!("{}/integrations/webhook/{id}/events", t.url)
    );
    assert!(!created.to_string().contains(SECRET), "{created}");
    let listed = t.ok("GET", "/integrations", &t.key_a, None).await;
    assert_eq!(listed["integrations"][0]["id"], id.as_str());
    assert!(!listed.to_string().contains(SECRET));
    let by_name = t.ok("GET", "/integrations/alerts", &t.key_a, None).await;
    assert_eq!(by_name["id"], id.as_str());

    // Another team sees nothing; a member reads but cannot change.
    t.call("GET", &format!("/integrations/{id}"), Some(&t.key_b), None)
        .await
        .assert_problem(404, "team B reads A's integration");
    t.call(
        "DELETE",
        &format!("/integrations/{id}"),
        Some(&t.key_b),
        None,
    )
    .await
    .assert_problem(404, "team B deletes A's integration");
    let (_, member) = t.member("mia").await;
    t.ok("GET", &format!("/integrations/{id}"), &member, None)
        .await;
    let body = json!({"kind": "webhook", "name": "m", "secret": "s"}).to_string();
    t.call("POST", "/integrations", Some(&member), Some(&body))
        .await
        .assert_problem(403, "a member creates an integration");

    // Settings of another kind, unknown secrets and bad templates are 400s.
    for (settings, why) in [
        (json!({"channels": ["C1"]}), "does not apply"),
        (json!({"prompt_template": "{{ oops"}), "not a template"),
    ] {
        let body = json!({"kind": "webhook", "name": "x", "secret": "s", "settings": settings});
        let r = t
            .call(
                "POST",
                "/integrations",
                Some(&t.key_a),
                Some(&body.to_string()),
            )
            .await;
        r.assert_problem(400, why);
        assert!(r.text.contains(why), "{}", r.text);
    }
    let body = json!({"kind": "slack", "name": "s", "secret": "s",
        "settings": {"bot_token_secret": "NO_SUCH"}});
    let r = t
        .call(
            "POST",
            "/integrations",
            Some(&t.key_a),
            Some(&body.to_string()),
        )
        .await;
    r.assert_problem(400, "unknown bot token secret");
    assert!(
        r.text.contains("hangar secret create NO_SUCH"),
        "{}",
        r.text
    );

    // Update keeps the secret unless a new one is given; the name moves.
    let body = json!({"name": "pages", "settings": {"prompt_template": "{{.}}"}});
    let updated = t
        .ok(
            "PUT",
            &format!("/integrations/{id}"),
            &t.key_a,
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(updated["name"], "pages");
    assert_eq!(updated["settings"]["prompt_template"], "{{.}}");
    let url = updated["webhook_url"].as_str().unwrap().to_owned();
    let d = Delivery::signed(SECRET, payload(1), now_secs(), None);
    assert_eq!(deliver(&t.http, &url, &d).await.status, 202);

    t.ok("DELETE", &format!("/integrations/{id}"), &t.key_a, None)
        .await;
    let d = Delivery::signed(SECRET, payload(2), now_secs(), None);
    deliver(&t.http, &url, &d)
        .await
        .assert_problem(404, "a deleted integration's webhook");
}

#[tokio::test]
async fn c4_webhook_signed_delivery_starts_one_run_with_its_source_trigger_and_link() {
    let t = TwoTeams::start().await;
    let created = create_webhook(&t, "alerts").await;
    let url = created["webhook_url"].as_str().unwrap();
    let d = Delivery::signed(SECRET, payload(7), now_secs(), Some("dlv-7"));
    let r = deliver(&t.http, url, &d).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let run_id = r.json()["run_id"].as_str().unwrap().to_owned();
    let run = t
        .ok("GET", &format!("/agent/runs/{run_id}"), &t.key_a, None)
        .await;
    assert_eq!(run["source"], "WEBHOOK");
    assert_eq!(run["title"], "Alert 7");
    assert_eq!(
        run["prompt"],
        "From the alerting system:\n\nInvestigate disk full on db-1"
    );
    assert_eq!(run["trigger_url"], "https://alerts.example.com/a/7");
    assert_eq!(run["trigger"]["kind"], "webhook");
    assert_eq!(run["trigger"]["integration_id"], created["id"]);
    assert_eq!(run["trigger"]["actor"], "ops@example.com");
    assert_eq!(run["trigger"]["delivery_id"], "dlv-7");
    assert_eq!(run["agent_config"]["model_id"], MODEL);
    assert!(run["agent_config"].get("_hangar").is_none(), "{run}");
    // Runs list by their source.
    let listed = t
        .ok("GET", "/agent/runs?source=WEBHOOK", &t.key_a, None)
        .await;
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn c4_webhook_tampered_body_is_refused_and_starts_no_run() {
    let t = TwoTeams::start().await;
    let url = create_webhook(&t, "alerts").await["webhook_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut d = Delivery::signed(SECRET, payload(1), now_secs(), None);
    d.body = payload(2);
    let r = deliver(&t.http, &url, &d).await;
    r.assert_problem(401, "tampered body");
    assert!(r.text.contains("signature does not match"), "{}", r.text);
    // Not even a body that is no JSON at all gets past the signature.
    d.body = b"not json".to_vec();
    deliver(&t.http, &url, &d)
        .await
        .assert_problem(401, "tampered, unparsable body");
    assert_eq!(run_count(&t).await, 0);
}

#[tokio::test]
async fn c4_webhook_wrong_secret_or_missing_signature_is_refused() {
    let t = TwoTeams::start().await;
    let url = create_webhook(&t, "alerts").await["webhook_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = Delivery::signed("not-the-secret", payload(1), now_secs(), None);
    deliver(&t.http, &url, &d)
        .await
        .assert_problem(401, "wrong secret");
    let r = t.http.post(&url).body(payload(1)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("x-hangar-timestamp"));
    // Another integration's id or kind in the URL is a 404.
    let other = url.replace("/webhook/", "/github/");
    let d = Delivery::signed(SECRET, payload(1), now_secs(), None);
    deliver(&t.http, &other, &d)
        .await
        .assert_problem(404, "wrong kind");
    assert_eq!(run_count(&t).await, 0);
}

#[tokio::test]
async fn c4_webhook_stale_or_future_timestamp_is_refused() {
    let t = TwoTeams::start().await;
    let url = create_webhook(&t, "alerts").await["webhook_url"]
        .as_str()
        .unwrap()
        .to_owned();
    for (ts, why) in [
        (now_secs() - 6 * 60, "six minutes old"),
        (now_secs() + 6 * 60, "six minutes ahead"),
    ] {
        let d = Delivery::signed(SECRET, payload(1), ts, None);
        let r = deliver(&t.http, &url, &d).await;
        r.assert_problem(401, why);
        assert!(r.text.contains("stale or replayed"), "{}", r.text);
    }
    let d = Delivery {
        timestamp: 0,
        signature: "v1=zz".into(),
        body: payload(1),
        id: None,
    };
    deliver(&t.http, &url, &d)
        .await
        .assert_problem(401, "garbage signature");
    assert_eq!(run_count(&t).await, 0);
}

#[tokio::test]
async fn c4_webhook_replay_is_deduplicated_even_after_a_restart() {
    let mut t = TwoTeams::start().await;
    let url = create_webhook(&t, "alerts").await["webhook_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = Delivery::signed(SECRET, payload(1), now_secs(), Some("dlv-1"));
    assert_eq!(deliver(&t.http, &url, &d).await.status, 202);
    let r = deliver(&t.http, &url, &d).await;
    r.assert_problem(409, "the same delivery again");
    assert!(r.text.contains("already received"), "{}", r.text);
    // The sender's retry: same delivery id, fresh timestamp and signature.
    let retry = Delivery::signed(SECRET, payload(1), now_secs() + 1, Some("dlv-1"));
    deliver(&t.http, &url, &retry)
        .await
        .assert_problem(409, "a retry of the same delivery id");
    assert_eq!(run_count(&t).await, 1);

    // Restart on the same data: the replay is still refused.
    let server = t.take_server();
    let mut config: ServerConfig = server.state().config.clone();
    server.shutdown().await;
    config.listen = "127.0.0.1:0".parse().unwrap();
    let restarted = Server::start(config).await.unwrap();
    let base = format!("http://{}", restarted.local_addr());
    let url = url.replace(&t.url, &base);
    deliver(&t.http, &url, &d)
        .await
        .assert_problem(409, "the replay after a restart");
    // A new delivery still works.
    let fresh = Delivery::signed(SECRET, payload(2), now_secs(), Some("dlv-2"));
    assert_eq!(deliver(&t.http, &url, &fresh).await.status, 202);
    restarted.shutdown().await;
}

#[tokio::test]
async fn c4_webhook_payload_the_template_cannot_read_is_a_400_and_may_be_sent_again() {
    let t = TwoTeams::start().await;
    let url = create_webhook(&t, "alerts").await["webhook_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"alert": {"id": 1}}).to_string().into_bytes();
    let d = Delivery::signed(SECRET, body, now_secs(), Some("dlv-x"));
    let r = deliver(&t.http, &url, &d).await;
    r.assert_problem(400, "template field missing");
    assert!(r.text.contains("no field `alert.title`"), "{}", r.text);
    // Nothing was kept of it: the same delivery is judged again (not a replay).
    deliver(&t.http, &url, &d)
        .await
        .assert_problem(400, "the same bad delivery again");
    assert_eq!(run_count(&t).await, 0);
}
