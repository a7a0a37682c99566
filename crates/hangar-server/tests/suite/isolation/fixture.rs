//! Team A's objects for the isolation tests, and how a route's path is
//! filled with them.

use super::*;

/// Team A's objects, and strings that must never reach team B.
pub(super) struct Fixture {
    pub(super) run_id: String,
    /// A plan artifact of the local run.
    pub(super) artifact_uid: String,
    pub(super) local_run_id: String,
    pub(super) run_token: String,
    pub(super) schedule_id: String,
    pub(super) key_id: String,
    pub(super) victim_key: String,
    pub(super) revoked_key: String,
    pub(super) env_id: String,
    pub(super) env_name: String,
    pub(super) secret: String,
    pub(super) worker_id: String,
    /// The worker token `worker_id` connected with.
    pub(super) worker_token_id: String,
    /// A team grant on `run_id`.
    pub(super) share_id: String,
    /// A public link token of `run_id`.
    pub(super) public_token: String,
    /// A user of team A.
    pub(super) user_id: String,
    /// A webhook integration of team A.
    pub(super) integration_id: String,
    /// An outbound webhook of team A.
    pub(super) webhook_id: String,
    /// A delivery of `webhook_id` (planted in the store).
    pub(super) delivery_id: String,
    /// Never in a reply to team B.
    pub(super) markers: Vec<String>,
    /// Keeps team A's worker connected.
    pub(super) _worker: hangar_client::WebSocket,
}

pub(super) const MARKER: &str = "alpha-confidential-marker";

pub(super) async fn team_a_objects(t: &TwoTeams) -> Fixture {
    let a = t.key_a.as_str();
    let run = t
        .ok(
            "POST",
            "/agent/runs",
            a,
            Some(&format!(
                r#"{{"prompt":"{MARKER} run","config":{{"model_id":"{MODEL}"}}}}"#
            )),
        )
        .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let (local_run_id, run_token) = t.local_run(&format!("{MARKER} local")).await;
    // An artifact of the local run, as its agent would report it.
    let artifact_uid = {
        let store = t.store();
        let run = store
            .run_any_team(&hangar_protocol::RunId(local_run_id.clone()))
            .await
            .unwrap();
        let exec = run.current_execution_id.unwrap();
        let event = hangar_protocol::session::SessionEvent {
            seq: 1,
            at: hangar_protocol::Timestamp::now(),
            body: hangar_protocol::session::EventBody::Artifact {
                artifact_type: "plan".into(),
                url: None,
                path: None,
                title: Some(format!("{MARKER} plan")),
            },
        };
        store.append_events(&run.id, &exec, &[event]).await.unwrap();
        format!("{}.1", exec.as_str())
    };
    let sched = t
        .ok(
            "POST",
            "/agent/schedules",
            a,
            Some(&format!(
                r#"{{"name":"alpha-sched","cron_schedule":"0 * * * *","prompt":"{MARKER} sched"}}"#
            )),
        )
        .await;
    let schedule_id = sched["id"].as_str().unwrap().to_owned();
    let secret = "ALPHA_SECRET".to_owned();
    t.ok(
        "POST",
        "/secrets",
        a,
        Some(&format!(
            r#"{{"name":"{secret}","value":"{MARKER}-value"}}"#
        )),
    )
    .await;
    let env_name = "alpha-env".to_owned();
    let env = t
        .ok(
            "POST",
            "/environments",
            a,
            Some(&format!(
                r#"{{"name":"{env_name}","description":"{MARKER} env","secrets":["{secret}"],"env":{{"ALPHA":"{MARKER}"}}}}"#
            )),
        )
        .await;
    let env_id = env["id"].as_str().unwrap().to_owned();
    let key = t
        .ok(
            "POST",
            "/api-keys",
            a,
            Some(r#"{"name":"alpha victim key"}"#),
        )
        .await;
    let key_id = key["id"].as_str().unwrap().to_owned();
    let victim_key = key["key"].as_str().unwrap().to_owned();
    let revoked = t
        .ok(
            "POST",
            "/api-keys",
            a,
            Some(r#"{"name":"alpha revoked key"}"#),
        )
        .await;
    t.ok(
        "POST",
        &format!("/api-keys/{}/expire", revoked["id"].as_str().unwrap()),
        a,
        None,
    )
    .await;
    let worker_id = "alpha-worker-7f3a".to_owned();
    let worker_token = t.worker_token(&worker_id).await;
    let token_list = t.ok("GET", "/worker-tokens", a, None).await;
    let worker_token_id = token_list["worker_tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let worker = hangar_client::connect_websocket(
        &t.ws_url(&format!("/selfhosted/worker/ws?worker_id={worker_id}")),
        &worker_token,
    )
    .await
    .unwrap();
    // Wait until the worker is registered.
    eventually_ok(
        "team A's worker to show up",
        std::time::Duration::from_secs(5),
        async || {
            let w = t.ok("GET", "/workers", a, None).await;
            if w.to_string().contains(&worker_id) {
                Ok(())
            } else {
                Err(w)
            }
        },
    )
    .await;
    let share = t
        .ok(
            "POST",
            &format!("/agent/runs/{run_id}/shares"),
            a,
            Some(r#"{"grantee":"team","role":"view"}"#),
        )
        .await;
    let share_id = share["id"].as_str().unwrap().to_owned();
    let link = t
        .ok(
            "POST",
            &format!("/agent/runs/{run_id}/shares"),
            a,
            Some(r#"{"grantee":"public","role":"view"}"#),
        )
        .await;
    let public_token = link["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let user = t
        .ok(
            "POST",
            "/users",
            a,
            Some(r#"{"email":"alpha-user@example.com","display_name":"alpha person","password":"alpha-password-1"}"#),
        )
        .await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    let integration = t
        .ok(
            "POST",
            "/integrations",
            a,
            Some(&format!(
                r#"{{"kind":"webhook","name":"alpha-hook","secret":"{MARKER}-hook-secret","settings":{{"prompt_prefix":"{MARKER} hook"}}}}"#
            )),
        )
        .await;
    let integration_id = integration["id"].as_str().unwrap().to_owned();
    let webhook = t
        .ok(
            "POST",
            "/webhooks",
            a,
            Some(r#"{"url":"https://example.com/alpha-hook"}"#),
        )
        .await;
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();
    let delivery_id = {
        let store = t.store();
        let hook = store.webhook(1, &webhook_id).await.unwrap();
        let d = hangar_store::NewWebhookDelivery {
            id: hangar_protocol::RunId::generate().0,
            event_type: "run_queued".into(),
            sequence: hook.cursor,
            payload: format!(r#"{{"marker":"{MARKER}"}}"#),
            created_at: hangar_protocol::Timestamp::now().unix_millis(),
            retry_until: hangar_protocol::Timestamp::now().unix_millis() + 60_000,
        };
        let planted = store
            .enqueue_webhook_deliveries(
                &webhook_id,
                hook.cursor,
                hook.cursor,
                std::slice::from_ref(&d),
            )
            .await
            .unwrap();
        assert!(planted);
        d.id
    };
    let whoami_a = t.ok("GET", "/whoami", a, None).await;
    let bootstrap_key_id = whoami_a["key_id"].as_str().unwrap().to_owned();
    let team_a_uid = whoami_a["team"]["id"].as_str().unwrap().to_owned();
    let markers = vec![
        MARKER.to_owned(),
        run_id.clone(),
        local_run_id.clone(),
        schedule_id.clone(),
        "alpha-sched".to_owned(),
        key_id.clone(),
        bootstrap_key_id,
        revoked["id"].as_str().unwrap().to_owned(),
        env_id.clone(),
        env_name.clone(),
        secret.clone(),
        worker_id.clone(),
        worker_token_id.clone(),
        share_id.clone(),
        public_token.clone(),
        user_id.clone(),
        integration_id.clone(),
        "alpha-hook".to_owned(),
        webhook_id.clone(),
        delivery_id.clone(),
        "alpha-user@example.com".to_owned(),
        "alpha person".to_owned(),
        team_a_uid,
    ];
    Fixture {
        artifact_uid,
        run_id,
        local_run_id,
        run_token,
        schedule_id,
        key_id,
        victim_key,
        revoked_key: revoked["key"].as_str().unwrap().to_owned(),
        env_id,
        env_name,
        secret,
        worker_id,
        worker_token_id,
        share_id,
        public_token,
        user_id,
        integration_id,
        webhook_id,
        delivery_id,
        markers,
        _worker: worker,
    }
}

/// The session stream ends after its replay instead of following the run.
pub(super) fn finite(path: String) -> String {
    if path.ends_with("/events") {
        path + "?follow=false"
    } else {
        path
    }
}

pub(super) fn fill(path: &str, run: &str, f: &Fixture, env: &str) -> String {
    finite(path.to_owned())
        .replace("{run_id}", run)
        .replace("{schedule_id}", &f.schedule_id)
        .replace("{key_id}", &f.key_id)
        .replace("{token_id}", &f.worker_token_id)
        .replace("{env_id}", env)
        .replace("{name}", &f.secret)
        .replace("{share_id}", &f.share_id)
        .replace("{token}", &f.public_token)
        .replace("{user_id}", &f.user_id)
        .replace("{integration_id}", &f.integration_id)
        .replace("{webhook_id}", &f.webhook_id)
        .replace("{delivery_id}", &f.delivery_id)
        .replace("{artifact_uid}", &f.artifact_uid)
        .replace("{server}", MCP_SERVER)
}

pub(super) fn nonexistent(path: &str) -> String {
    finite(path.to_owned())
        .replace("{run_id}", "01NOSUCHRUN")
        .replace("{schedule_id}", "01NOSUCHSCHEDULE")
        .replace("{key_id}", "01NOSUCHKEY")
        .replace("{token_id}", "01NOSUCHWORKERTOKEN")
        .replace("{env_id}", "no-such-env")
        .replace("{name}", "NO_SUCH_SECRET")
        .replace("{share_id}", "01NOSUCHSHARE")
        .replace("{user_id}", "01NOSUCHUSER")
        .replace("{integration_id}", "01NOSUCHINTEGRATION")
        .replace("{webhook_id}", "01NOSUCHWEBHOOK")
        .replace("{delivery_id}", "01NOSUCHDELIVERY")
        .replace("{token}", &format!("hs_{}", "0".repeat(64)))
        .replace("{artifact_uid}", "01NOSUCHEXECUTION.1")
        .replace("{server}", "no-such-mcp-server")
}

pub(super) fn has_object(path: &str) -> bool {
    path.contains('{')
}

pub(super) struct Caller<'a> {
    pub(super) t: &'a TwoTeams,
    pub(super) n: std::cell::Cell<u64>,
}

impl Caller<'_> {
    pub(super) async fn send(&self, route: &Route, path: &str, key: Option<&str>) -> Reply {
        let n = self.n.get() + 1;
        self.n.set(n);
        let body = route.body.map(|b| b.replace("{n}", &n.to_string()));
        self.t.call(route.method, path, key, body.as_deref()).await
    }
}

pub(super) fn leaks(reply: &Reply, markers: &[String]) -> Option<String> {
    markers
        .iter()
        .find(|m| reply.text.contains(m.as_str()))
        .cloned()
}
