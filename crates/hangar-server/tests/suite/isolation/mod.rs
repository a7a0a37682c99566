//! C1: every route × another team's key, a run token, and no or a bad key.
//!
//! The route table (`ROUTES`, below) is checked against the router's own OpenAPI document, so a new route
//! cannot be added without deciding how it is isolated.

mod fixture;
mod teams;

pub(super) use crate::suite::common::{MODEL, Reply, TwoTeams};
pub(super) use futures::{SinkExt, StreamExt};
pub(super) use hangar_testkit::poll::eventually_ok;
pub(super) use std::collections::BTreeSet;

/// What a run token may do on a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum TokenRule {
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
pub(super) struct Route {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    token: TokenRule,
}

pub(super) const fn route(
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

pub(super) const RUN_BODY: &str = r#"{"prompt":"team b run {n}"}"#;
pub(super) const SCHEDULE_BODY: &str =
    r#"{"name":"sched-{n}","cron_schedule":"0 3 * * *","prompt":"nightly {n}","enabled":true}"#;
pub(super) const CHAT_BODY: &str =
    r#"{"model":"fake/test-model","messages":[{"role":"user","content":"hello"}]}"#;

use TokenRule::{Allowed, Forbidden, Open, OwnRun, Public, ServerWide};

/// The MCP server configured for the C1 run (`{server}` in paths).
pub(super) const MCP_SERVER: &str = "shared-tools";

/// Every route of the API, with a valid body where it takes one.
pub(super) const ROUTES: &[Route] = &[
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
pub(super) fn c1_route_table_covers_every_route_of_the_router() {
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
