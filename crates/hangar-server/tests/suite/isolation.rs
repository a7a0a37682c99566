//! C1: every route × another team's key, a run token, and no or a bad key.
//!
//! The route table below is checked against the router's own OpenAPI document, so a new route
//! cannot be added without deciding how it is isolated.

use crate::suite::common::{MODEL, Reply, TwoTeams};
use futures::{SinkExt, StreamExt};
use hangar_testkit::poll::eventually_ok;
use std::collections::BTreeSet;

/// What a run token may do on a route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TokenRule {
    /// Never: 403.
    Forbidden,
    /// Only on its own run (`{run_id}`): other runs are 404.
    OwnRun,
    /// Always (no object in the path).
    Allowed,
    /// A public share route: no credential needed, the `{token}` in the path
    /// is one; unknown tokens are 404 whoever asks (checked on their own).
    Public,
    /// The API's own description (`/openapi.json`): 200 to anyone, no team data.
    Open,
    /// Server-wide configuration (the named MCP servers): no team data, so
    /// any valid API key or run token of any team reads it; no or a bad
    /// credential is 401.
    ServerWide,
}

/// One route of the API. Path placeholders: `{run_id}`, `{schedule_id}`,
/// `{key_id}`, `{token_id}` (a worker token), `{env_id}`, `{name}`, `{share_id}`, `{token}` (a public link), `{user_id}`, `{integration_id}`, `{webhook_id}`, `{delivery_id}`; `{n}` in a body is a fresh number.
#[derive(Debug, Clone, Copy)]
struct Route {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    token: TokenRule,
}

const fn route(
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    token: TokenRule,
) -> Route {
    Route {
        method,
        path,
        body,
        token,
    }
}

const RUN_BODY: &str = r#"{"prompt":"team b run {n}"}"#;
const SCHEDULE_BODY: &str =
    r#"{"name":"sched-{n}","cron_schedule":"0 3 * * *","prompt":"nightly {n}","enabled":true}"#;
const CHAT_BODY: &str =
    r#"{"model":"fake/test-model","messages":[{"role":"user","content":"hello"}]}"#;

use TokenRule::{Allowed, Forbidden, Open, OwnRun, Public, ServerWide};

/// The MCP server configured for the C1 run (`{server}` in paths).
const MCP_SERVER: &str = "shared-tools";

/// Every route of the API, with a valid body where it takes one.
const ROUTES: &[Route] = &[
    route("POST", "/agent/runs", Some(RUN_BODY), Forbidden),
    route("GET", "/agent/runs", None, Forbidden),
    route("POST", "/agent/run", Some(RUN_BODY), Forbidden),
    route("POST", "/agent/runs/local", Some(RUN_BODY), Forbidden),
    route("GET", "/agent/runs/{run_id}", None, OwnRun),
    route("POST", "/agent/runs/{run_id}/cancel", None, Forbidden),
    route(
        "POST",
        "/agent/runs/{run_id}/followups",
        Some(r#"{"message":"steer {n}"}"#),
        Forbidden,
    ),
    route("GET", "/agent/runs/{run_id}/transcript", None, OwnRun),
    route("GET", "/agent/runs/{run_id}/environment", None, OwnRun),
    // Streams: called with `?follow=false` (see `fill`) so they end after the replay.
    route("GET", "/agent/runs/{run_id}/events", None, OwnRun),
    route("GET", "/agent/runs/{run_id}/events/ws", None, OwnRun),
    route("GET", "/agent/runs/{run_id}/session", None, OwnRun),
    route(
        "POST",
        "/agent/runs/{run_id}/shares",
        Some(r#"{"grantee":"team","role":"view"}"#),
        Forbidden,
    ),
    route("GET", "/agent/runs/{run_id}/shares", None, Forbidden),
    route(
        "DELETE",
        "/agent/runs/{run_id}/shares/{share_id}",
        None,
        Forbidden,
    ),
    route("GET", "/public/sessions/{token}", None, Public),
    route("GET", "/public/sessions/{token}/events", None, Public),
    route("GET", "/agent/runs/{run_id}/conversation", None, OwnRun),
    route("GET", "/agent/artifacts/{artifact_uid}", None, Forbidden),
    route("GET", "/agent/identities", None, Forbidden),
    route("GET", "/agent", None, Forbidden),
    route("GET", "/agent/events", None, Forbidden),
    route("GET", "/agent/events/{run_id}", None, OwnRun),
    route(
        "POST",
        "/agent/events/{run_id}",
        Some(r#"{"event_type":"run_blocked","ref_id":"r{n}"}"#),
        Forbidden,
    ),
    route("GET", "/openapi.json", None, Open),
    route("GET", "/agent/models", None, Forbidden),
    route("GET", "/mcp-servers", None, ServerWide),
    route("GET", "/mcp-servers/{server}", None, ServerWide),
    route("POST", "/agent/schedules", Some(SCHEDULE_BODY), Forbidden),
    route("GET", "/agent/schedules", None, Forbidden),
    route("GET", "/agent/schedules/{schedule_id}", None, Forbidden),
    route(
        "PUT",
        "/agent/schedules/{schedule_id}",
        Some(SCHEDULE_BODY),
        Forbidden,
    ),
    route("DELETE", "/agent/schedules/{schedule_id}", None, Forbidden),
    route(
        "POST",
        "/agent/schedules/{schedule_id}/pause",
        None,
        Forbidden,
    ),
    route(
        "POST",
        "/agent/schedules/{schedule_id}/resume",
        None,
        Forbidden,
    ),
    route(
        "POST",
        "/api-keys",
        Some(r#"{"name":"key {n}"}"#),
        Forbidden,
    ),
    route("GET", "/api-keys", None, Forbidden),
    route("POST", "/api-keys/{key_id}/expire", None, Forbidden),
    route("GET", "/workers", None, Forbidden),
    route("GET", "/teams", None, Forbidden),
    route(
        "POST",
        "/users",
        Some(r#"{"email":"user{n}@team-b.example","password":"password-{n}-long"}"#),
        Forbidden,
    ),
    route("GET", "/users", None, Forbidden),
    route("GET", "/users/{user_id}", None, Forbidden),
    route(
        "PATCH",
        "/users/{user_id}",
        Some(r#"{"display_name":"renamed {n}"}"#),
        Forbidden,
    ),
    route("DELETE", "/users/{user_id}", None, Forbidden),
    route("GET", "/whoami", None, Allowed),
    route("GET", "/agent/environments", None, Forbidden),
    route(
        "POST",
        "/environments",
        Some(r#"{"name":"env-{n}"}"#),
        Forbidden,
    ),
    route("GET", "/environments", None, Forbidden),
    route("GET", "/environments/{env_id}", None, Forbidden),
    route(
        "PUT",
        "/environments/{env_id}",
        Some(r#"{"name":"env-{n}"}"#),
        Forbidden,
    ),
    route("DELETE", "/environments/{env_id}", None, Forbidden),
    route(
        "POST",
        "/secrets",
        Some(r#"{"name":"S_{n}","value":"v{n}"}"#),
        Forbidden,
    ),
    route("GET", "/secrets", None, Forbidden),
    route(
        "PUT",
        "/secrets/{name}",
        Some(r#"{"value":"v{n}"}"#),
        Forbidden,
    ),
    route("DELETE", "/secrets/{name}", None, Forbidden),
    route(
        "POST",
        "/integrations",
        Some(r#"{"kind":"webhook","name":"hook-{n}","secret":"s{n}"}"#),
        Forbidden,
    ),
    route("GET", "/integrations", None, Forbidden),
    route("GET", "/integrations/{integration_id}", None, Forbidden),
    route(
        "PUT",
        "/integrations/{integration_id}",
        Some(r#"{"name":"hook-{n}"}"#),
        Forbidden,
    ),
    route(
        "POST",
        "/integrations/{integration_id}/test",
        None,
        Forbidden,
    ),
    route("DELETE", "/integrations/{integration_id}", None, Forbidden),
    route(
        "POST",
        "/webhooks",
        Some(r#"{"url":"https://example.com/hook-{n}"}"#),
        Forbidden,
    ),
    route("GET", "/webhooks", None, Forbidden),
    route("GET", "/webhooks/{webhook_id}", None, Forbidden),
    route("DELETE", "/webhooks/{webhook_id}", None, Forbidden),
    route("GET", "/webhooks/{webhook_id}/deliveries", None, Forbidden),
    route(
        "POST",
        "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        None,
        Forbidden,
    ),
    route("POST", "/webhooks/{webhook_id}/test", None, Forbidden),
    route("POST", "/llm/chat/completions", Some(CHAT_BODY), Allowed),
    route("GET", "/llm/models", None, Allowed),
    route("GET", "/llm/usage", None, Forbidden),
    route("GET", "/selfhosted/worker/ws", None, Forbidden),
    route(
        "POST",
        "/worker-tokens",
        Some(r#"{"worker_id":"b-worker-{n}"}"#),
        Forbidden,
    ),
    route("GET", "/worker-tokens", None, Forbidden),
    route("POST", "/worker-tokens/{token_id}/expire", None, Forbidden),
];

/// A path with its placeholders' names dropped (`/runs/{}`), so the table's
/// names and the document's may differ.
pub(crate) fn normalise(path: &str) -> String {
    let mut out = String::new();
    let mut in_brace = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_brace = true;
                out.push_str("{}");
            }
            '}' => in_brace = false,
            _ if in_brace => {}
            _ => out.push(c),
        }
    }
    out
}

/// `(METHOD, path)` of every route, from the OpenAPI document the router
/// itself generates (`api::openapi_router`): the routes that exist.
pub(crate) fn routes_in_document() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(hangar_server::api::openapi::document()).unwrap();
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.insert((method.to_uppercase(), normalise(path)));
        }
    }
    found
}

#[test]
fn c1_route_table_covers_every_route_of_the_router() {
    let in_source = routes_in_document();
    assert!(in_source.len() > 20, "too few routes: {in_source:?}");
    let in_table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), normalise(r.path)))
        .collect();
    assert_eq!(
        in_table.len(),
        ROUTES.len(),
        "the table lists a route twice"
    );
    let missing: Vec<_> = in_source.difference(&in_table).collect();
    let stale: Vec<_> = in_table.difference(&in_source).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "add these routes of the router to ROUTES in tests/suite/isolation.rs: {missing:?}; \
         remove these, which the router no longer has: {stale:?}"
    );
}

/// Team A's objects, and strings that must never reach team B.
struct Fixture {
    run_id: String,
    /// A plan artifact of the local run.
    artifact_uid: String,
    local_run_id: String,
    run_token: String,
    schedule_id: String,
    key_id: String,
    victim_key: String,
    revoked_key: String,
    env_id: String,
    env_name: String,
    secret: String,
    worker_id: String,
    /// The worker token `worker_id` connected with.
    worker_token_id: String,
    /// A team grant on `run_id`.
    share_id: String,
    /// A public link token of `run_id`.
    public_token: String,
    /// A user of team A.
    user_id: String,
    /// A webhook integration of team A.
    integration_id: String,
    /// An outbound webhook of team A.
    webhook_id: String,
    /// A delivery of `webhook_id` (planted in the store).
    delivery_id: String,
    /// Never in a reply to team B.
    markers: Vec<String>,
    /// Keeps team A's worker connected.
    _worker: hangar_client::WebSocket,
}

const MARKER: &str = "alpha-confidential-marker";

async fn team_a_objects(t: &TwoTeams) -> Fixture {
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
fn finite(path: String) -> String {
    if path.ends_with("/events") {
        path + "?follow=false"
    } else {
        path
    }
}

fn fill(path: &str, run: &str, f: &Fixture, env: &str) -> String {
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

fn nonexistent(path: &str) -> String {
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

fn has_object(path: &str) -> bool {
    path.contains('{')
}

struct Caller<'a> {
    t: &'a TwoTeams,
    n: std::cell::Cell<u64>,
}

impl Caller<'_> {
    async fn send(&self, route: &Route, path: &str, key: Option<&str>) -> Reply {
        let n = self.n.get() + 1;
        self.n.set(n);
        let body = route.body.map(|b| b.replace("{n}", &n.to_string()));
        self.t.call(route.method, path, key, body.as_deref()).await
    }
}

fn leaks(reply: &Reply, markers: &[String]) -> Option<String> {
    markers
        .iter()
        .find(|m| reply.text.contains(m.as_str()))
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_every_route_isolates_teams_run_tokens_and_bad_keys() {
    let t = TwoTeams::start_with(|c| {
        c.mcp_servers.insert(
            MCP_SERVER.to_owned(),
            serde_json::from_str(r#"{"command":"tools-server","env":{"TOKEN":"${TOOLS_TOKEN}"}}"#)
                .unwrap(),
        );
    })
    .await;
    t.llm
        .push((0..4).map(|_| hangar_testkit::fake_llm::Turn::text("hi")));
    let f = team_a_objects(&t).await;
    let caller = Caller {
        t: &t,
        n: std::cell::Cell::new(0),
    };
    let b = t.key_b.as_str();
    let mut failures: Vec<String> = Vec::new();

    // Team B: a foreign object is indistinguishable from a missing one, lists
    // and everything else never show team A's objects.
    for r in ROUTES
        .iter()
        .filter(|r| !matches!(r.token, Public | Open | ServerWide))
    {
        let label = format!("team B: {} {}", r.method, r.path);
        if has_object(r.path) {
            let mut paths = vec![fill(r.path, &f.run_id, &f, &f.env_id)];
            if r.path.contains("{run_id}") {
                paths.push(fill(r.path, &f.local_run_id, &f, &f.env_id));
            }
            if r.path.contains("{env_id}") {
                paths.push(fill(r.path, &f.run_id, &f, &f.env_name));
            }
            let missing = caller.send(r, &nonexistent(r.path), Some(b)).await;
            // The session stream is written with a run token only: an API key is refused before any lookup.
            let want = if r.path.ends_with("/session") {
                403
            } else {
                404
            };
            for path in paths {
                let reply = caller.send(r, &path, Some(b)).await;
                if let Some(e) = reply.problem_error(Some(want)) {
                    failures.push(format!("{label} on A's object `{path}`: {e}"));
                }
                if reply.status != missing.status {
                    failures.push(format!(
                        "{label}: A's object answers {} but a missing one {}: existence leaks",
                        reply.status, missing.status
                    ));
                }
                if reply.text.contains(MARKER) {
                    failures.push(format!("{label}: reply shows A's content: {}", reply.text));
                }
            }
        } else {
            let reply = caller.send(r, r.path, Some(b)).await;
            if reply.status >= 500 {
                failures.push(format!("{label}: {} {}", reply.status, reply.text));
            }
            if reply.status >= 400
                && let Some(e) = reply.problem_error(None)
            {
                failures.push(format!("{label}: {e}"));
            }
            if let Some(m) = leaks(&reply, &f.markers) {
                failures.push(format!(
                    "{label}: reply contains team A's `{m}`: {}",
                    reply.text
                ));
            }
        }
    }

    // A run token of A's local run: its own run only, nothing team-wide.
    let other_runs = [f.run_id.clone(), "01NOSUCHRUN".to_owned()];
    for r in ROUTES.iter().filter(|r| !matches!(r.token, Public | Open)) {
        let label = format!("run token: {} {}", r.method, r.path);
        let own = fill(r.path, &f.local_run_id, &f, &f.env_id);
        let reply = caller.send(r, &own, Some(&f.run_token)).await;
        match r.token {
            Forbidden => {
                if let Some(e) = reply.problem_error(Some(403)) {
                    failures.push(format!("{label}: {e}"));
                }
            }
            OwnRun | Allowed | Public | Open | ServerWide => {
                if matches!(reply.status, 401 | 403 | 404) || reply.status >= 500 {
                    failures.push(format!(
                        "{label} (own run): refused: {} {}",
                        reply.status, reply.text
                    ));
                }
            }
        }
        if r.token == OwnRun {
            for other in &other_runs {
                let path = fill(r.path, other, &f, &f.env_id);
                let reply = caller.send(r, &path, Some(&f.run_token)).await;
                if let Some(e) = reply.problem_error(Some(404)) {
                    failures.push(format!("{label} on another run `{other}`: {e}"));
                }
            }
        }
    }

    // No credential, or a bad one: 401 on every route, before anything else.
    let bad: [(&str, Option<String>); 7] = [
        ("no Authorization header", None),
        ("unknown key", Some(format!("Bearer hk_{}", "0".repeat(64)))),
        ("malformed key", Some("Bearer not-a-key".to_owned())),
        ("revoked key", Some(format!("Bearer {}", f.revoked_key))),
        (
            "unknown run token",
            Some(format!("Bearer hr_{}", "0".repeat(64))),
        ),
        ("empty bearer", Some("Bearer ".to_owned())),
        ("basic scheme", Some("Basic dXNlcjpwYXNz".to_owned())),
    ];
    for r in ROUTES.iter().filter(|r| !matches!(r.token, Public | Open)) {
        let path = fill(r.path, &f.run_id, &f, &f.env_id);
        for (what, auth) in &bad {
            let body = r.body.map(|b| b.replace("{n}", "0").into_bytes());
            let reply = t
                .call_raw(r.method, &path, auth.as_deref(), body)
                .await
                .unwrap();
            if let Some(e) = reply.problem_error(Some(401)) {
                failures.push(format!("{what}: {} {}: {e}", r.method, r.path));
            }
            if reply.text.contains(MARKER) {
                failures.push(format!("{what}: {} {} shows A's content", r.method, r.path));
            }
        }
    }

    // Public share routes: the token in the path is the credential. An
    // unknown, malformed or foreign-looking one (a run id) is 404 whoever
    // asks, with any credential or none, and shows nothing of A's.
    for r in ROUTES.iter().filter(|r| r.token == Public) {
        let wrong = [
            nonexistent(r.path),
            r.path.replace("{token}", &f.run_id),
            r.path.replace("{token}", "not-a-token"),
            r.path.replace("{token}", &f.run_token),
        ];
        let creds = [
            None,
            Some(b.to_owned()),
            Some(f.run_token.clone()),
            Some("hk_bogus".to_owned()),
        ];
        for path in &wrong {
            for key in &creds {
                let reply = caller.send(r, path, key.as_deref()).await;
                if let Some(e) = reply.problem_error(Some(404)) {
                    failures.push(format!("public: {} {path}: {e}", r.method));
                }
                // (`instance` echoes the path, so only A's content is checked.)
                if reply.text.contains(MARKER) || reply.text.contains(&f.public_token) {
                    failures.push(format!("public: {} {path} shows A's content", r.method));
                }
            }
        }
    }

    // Server-wide configuration: 200 to any team's key and to run tokens,
    // a problem 404 for an unknown name, and nothing of any team's.
    for r in ROUTES.iter().filter(|r| r.token == ServerWide) {
        for key in [b, f.run_token.as_str(), t.key_a.as_str()] {
            let reply = caller
                .send(r, &fill(r.path, &f.run_id, &f, &f.env_id), Some(key))
                .await;
            if reply.status != 200 || !reply.text.contains(MCP_SERVER) {
                failures.push(format!(
                    "server-wide: {} {}: {} {}",
                    r.method, r.path, reply.status, reply.text
                ));
            }
            if let Some(m) = leaks(&reply, &f.markers) {
                failures.push(format!("server-wide: {} {} shows `{m}`", r.method, r.path));
            }
            if has_object(r.path) {
                let missing = caller.send(r, &nonexistent(r.path), Some(key)).await;
                if let Some(e) = missing.problem_error(Some(404)) {
                    failures.push(format!(
                        "server-wide: {} {} unknown name: {e}",
                        r.method, r.path
                    ));
                }
            }
        }
    }

    // The API description: 200 to anyone, and nothing of any team's.
    for r in ROUTES.iter().filter(|r| r.token == Open) {
        let creds = [None, Some(b.to_owned()), Some(f.run_token.clone())];
        for key in &creds {
            let reply = caller.send(r, r.path, key.as_deref()).await;
            if reply.status != 200 {
                failures.push(format!("open: {} {}: {}", r.method, r.path, reply.status));
            }
            if let Some(m) = leaks(&reply, &f.markers) {
                failures.push(format!("open: {} {} shows `{m}`", r.method, r.path));
            }
        }
    }

    // Team A's objects are untouched by everything above.
    let a = t.key_a.as_str();
    let run = t
        .ok("GET", &format!("/agent/runs/{}", f.run_id), a, None)
        .await;
    assert_ne!(run["state"], "CANCELLED", "team B cancelled A's run");
    let local = t
        .ok("GET", &format!("/agent/runs/{}", f.local_run_id), a, None)
        .await;
    assert_eq!(local["state"], "INPROGRESS", "{local}");
    let sched = t
        .ok(
            "GET",
            &format!("/agent/schedules/{}", f.schedule_id),
            a,
            None,
        )
        .await;
    assert_eq!(sched["name"], "alpha-sched", "team B changed A's schedule");
    assert_eq!(sched["enabled"], true, "team B paused A's schedule");
    let env = t
        .ok("GET", &format!("/environments/{}", f.env_id), a, None)
        .await;
    assert_eq!(
        env["name"],
        f.env_name.as_str(),
        "team B changed A's environment"
    );
    let secrets = t.ok("GET", "/secrets", a, None).await;
    assert!(
        secrets.to_string().contains(&f.secret),
        "team B deleted A's secret"
    );
    let whoami = t.ok("GET", "/whoami", &f.victim_key, None).await;
    assert_eq!(
        whoami["key_id"],
        f.key_id.as_str(),
        "team B revoked A's key"
    );
    let workers = t.ok("GET", "/workers", a, None).await;
    assert!(workers.to_string().contains(&f.worker_id), "{workers}");

    // Control: the same paths with team A's key find the objects, so the 404s
    // above are isolation, not typos. Destructive routes last.
    let mut order: Vec<&Route> = ROUTES.iter().filter(|r| has_object(r.path)).collect();
    order.sort_by_key(|r| {
        r.method == "DELETE" || r.path.ends_with("/expire") || r.path.ends_with("/cancel")
    });
    for r in order {
        let path = fill(r.path, &f.run_id, &f, &f.env_id);
        let reply = caller.send(r, &path, Some(a)).await;
        let refused = if r.path.ends_with("/session") {
            reply.status != 403
        } else if r.path.ends_with("/followups") {
            // Queued run, no agent connected yet: a conflict, not a 404.
            reply.status != 409
        } else if r.path.ends_with("/events/ws") {
            // Found and allowed; a plain GET is not a WebSocket upgrade.
            reply.status != 400
        } else {
            !(200..300).contains(&reply.status)
        };
        if refused {
            failures.push(format!(
                "control: team A {} {}: {} {}",
                r.method, path, reply.status, reply.text
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} isolation failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_a_worker_of_another_team_cannot_report_on_its_runs() {
    use tokio_tungstenite::tungstenite::Message;
    const IMPOSTOR: &str = "build-box";
    let t = TwoTeams::start().await;
    let f = team_a_objects(&t).await;
    let a = t.key_a.as_str();
    let before = t
        .ok("GET", &format!("/agent/runs/{}", f.run_id), a, None)
        .await;
    // `local:` ids are reserved for the server (see the S8 test), so team B's
    // worker takes an ordinary id: only the team check stands in the way.
    let mut ws = hangar_client::connect_websocket(
        &t.ws_url(&format!("/selfhosted/worker/ws?worker_id={IMPOSTOR}")),
        &t.key_b,
    )
    .await
    .unwrap();
    for run in [&f.run_id, &f.local_run_id] {
        for (kind, data) in [
            (
                "task_claimed",
                serde_json::json!({"task_id": run, "worker_id": IMPOSTOR}),
            ),
            (
                "task_completed",
                serde_json::json!({"task_id": run, "message": "pwned"}),
            ),
            (
                "task_failed",
                serde_json::json!({"task_id": run, "message": "pwned"}),
            ),
            (
                "task_rejected",
                serde_json::json!({"task_id": run, "reason": "pwned"}),
            ),
        ] {
            let frame = serde_json::json!({"type": kind, "data": data}).to_string();
            ws.send(Message::Text(frame.into())).await.unwrap();
        }
    }
    // Frames are applied in order before the server reads the close: once the
    // worker is gone from team B's list, every frame above was handled.
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    eventually_ok(
        "team B's worker to disconnect",
        std::time::Duration::from_secs(5),
        async || {
            let w = t.ok("GET", "/workers", &t.key_b, None).await;
            if w.to_string().contains(IMPOSTOR) {
                Err(w)
            } else {
                Ok(())
            }
        },
    )
    .await;
    let local = t
        .ok("GET", &format!("/agent/runs/{}", f.local_run_id), a, None)
        .await;
    assert_eq!(
        local["state"], "INPROGRESS",
        "team B's worker ended A's run: {local}"
    );
    let after = t
        .ok("GET", &format!("/agent/runs/{}", f.run_id), a, None)
        .await;
    assert_eq!(
        before["state"], after["state"],
        "team B's worker moved A's run"
    );
    assert!(!after.to_string().contains("pwned"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_references_to_another_teams_objects_are_refused() {
    let t = TwoTeams::start().await;
    let f = team_a_objects(&t).await;
    let b = t.key_b.as_str();
    let own = t
        .ok(
            "POST",
            "/agent/schedules",
            b,
            Some(r#"{"name":"b","cron_schedule":"0 * * * *","prompt":"p"}"#),
        )
        .await;
    let own = own["id"].as_str().unwrap().to_owned();
    for env in [&f.env_id, &f.env_name] {
        let cases = [
            (
                "POST",
                "/agent/runs".to_owned(),
                format!(r#"{{"prompt":"p","config":{{"environment_id":"{env}"}}}}"#),
            ),
            (
                "POST",
                "/agent/runs/local".to_owned(),
                format!(r#"{{"prompt":"p","config":{{"environment_id":"{env}"}}}}"#),
            ),
            (
                "POST",
                "/agent/schedules".to_owned(),
                format!(
                    r#"{{"name":"x","cron_schedule":"0 * * * *","prompt":"p","agent_config":{{"environment_id":"{env}"}}}}"#
                ),
            ),
            (
                "PUT",
                format!("/agent/schedules/{own}"),
                format!(
                    r#"{{"name":"x","cron_schedule":"0 * * * *","enabled":true,"prompt":"p","agent_config":{{"environment_id":"{env}"}}}}"#
                ),
            ),
        ];
        for (method, path, body) in cases {
            let reply = t.call(method, &path, Some(b), Some(&body)).await;
            reply.assert_problem(
                400,
                &format!("team B {method} {path} naming A's environment `{env}`"),
            );
            assert!(!reply.text.contains(MARKER), "{}", reply.text);
        }
    }
    for body in [
        format!(r#"{{"name":"b-env","secrets":["{}"]}}"#, f.secret),
        format!(
            r#"{{"name":"b-env","repos":[{{"url":"https://example.com/r.git","token_secret":"{}"}}]}}"#,
            f.secret
        ),
    ] {
        let reply = t.call("POST", "/environments", Some(b), Some(&body)).await;
        reply.assert_problem(400, "team B's environment naming A's secret");
    }
    // Filters and cursors naming A's objects find nothing of A's.
    let a_cursor =
        t.ok("GET", "/agent/runs?limit=1", &t.key_a, None).await["page_info"]["next_cursor"]
            .as_str()
            .unwrap()
            .to_owned();
    for query in [
        format!("schedule_id={}", f.schedule_id),
        format!("cursor={a_cursor}"),
        "state=INPROGRESS".to_owned(),
    ] {
        let reply = t
            .call("GET", &format!("/agent/runs?{query}"), Some(b), None)
            .await;
        assert!(reply.status < 500, "{}", reply.text);
        assert!(
            !reply.text.contains(&f.run_id) && !reply.text.contains(&f.local_run_id),
            "team B's run list with `{query}` shows A's runs: {}",
            reply.text
        );
    }
}
