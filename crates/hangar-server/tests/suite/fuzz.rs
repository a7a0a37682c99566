//! C7: fuzzed bodies, query strings, path segments and WebSocket frames. The
//! server never answers 5xx for bad input, never panics, keeps serving, and
//! every 4xx is a problem+json whose `detail` says what is wrong.

use crate::suite::common::{TwoTeams, count_panics};
use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::runtime::Handle;

/// Cases per route (override with `HANGAR_FUZZ_CASES`).
fn cases() -> u32 {
    std::env::var("HANGAR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// Strings that break naive parsers.
fn nasty_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[a-zA-Z0-9_./:* -]{0,24}",
        1 => Just(String::new()),
        1 => Just(" ".repeat(3)),
        1 => Just("../../etc/passwd".to_owned()),
        1 => Just("\u{0}\u{1}\u{7f}".to_owned()),
        1 => Just("x".repeat(70_000)),
        1 => Just("0 * * * *".to_owned()),
        1 => Just("61 25 32 13 8".to_owned()),
        1 => Just("fake/test-model".to_owned()),
        1 => Just("fake/".to_owned()),
        1 => Just("/".to_owned()),
        1 => Just("QUEUED".to_owned()),
        1 => Just("HANGAR_TOKEN".to_owned()),
        1 => Just("1970-01-01T00:00:00Z".to_owned()),
        1 => Just("9999-12-31T23:59:59Z".to_owned()),
        1 => Just("Mars/Olympus_Mons".to_owned()),
        1 => Just("allowlist".to_owned()),
        1 => Just("\u{202e}\u{fffd}😀".to_owned()),
    ]
    .boxed()
}

/// [`nasty_string`] cut to what fits in a URL (clients refuse URLs past 64 KiB).
fn short_nasty_string() -> BoxedStrategy<String> {
    nasty_string()
        .prop_map(|s| s.chars().take(2048).collect())
        .boxed()
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop::sample::select(vec![0i64, -1, 1, 60, 61, i32::MAX as i64 + 1, i64::MIN])
            .prop_map(Value::from),
    ]
    .boxed()
}

/// Any JSON value, with the keys of the route's fields among the random ones.
fn json_value(keys: Vec<&'static str>) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        nasty_string().prop_map(Value::String),
    ];
    let key = prop_oneof![
        prop::sample::select(keys).prop_map(str::to_owned),
        "[a-z_]{1,10}",
    ];
    leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Sets `pointer` (e.g. `/config/model_id`) in `doc`, creating objects on the way.
fn set(doc: &mut Value, pointer: &str, value: Option<Value>) {
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    let mut at = doc;
    for part in &parts[..parts.len() - 1] {
        if let Value::Array(items) = at {
            let Ok(i) = part.parse::<usize>() else { return };
            let Some(next) = items.get_mut(i) else { return };
            at = next;
            continue;
        }
        if !at.is_object() {
            *at = json!({});
        }
        at = at
            .as_object_mut()
            .unwrap()
            .entry(part.to_string())
            .or_insert_with(|| json!({}));
    }
    let last = parts[parts.len() - 1];
    match at {
        Value::Object(map) => match value {
            Some(v) => {
                map.insert(last.to_owned(), v);
            }
            None => {
                map.remove(last);
            }
        },
        Value::Array(items) => {
            if let (Ok(i), Some(v)) = (last.parse::<usize>(), value)
                && let Some(slot) = items.get_mut(i)
            {
                *slot = v;
            }
        }
        other => {
            if let Some(v) = value {
                *other = v;
            }
        }
    }
}

/// A route that takes a JSON body: a valid seed and the fields to mutate.
#[derive(Clone)]
struct BodyRoute {
    method: &'static str,
    path: String,
    seed: Value,
    fields: Vec<&'static str>,
    /// The LLM gateway forwards valid requests to the (fake) provider, whose
    /// own failure is a 502; that is the upstream's answer, not bad input.
    upstream: bool,
}

/// Bodies: a valid seed with mutated fields, any JSON, raw bytes, a truncated seed.
fn body_strategy(route: &BodyRoute) -> BoxedStrategy<Vec<u8>> {
    let seed = route.seed.clone();
    let fields = route.fields.clone();
    let keys: Vec<&'static str> = fields
        .iter()
        .map(|f| f.rsplit('/').next().unwrap_or(f))
        .collect();
    let mutation = (
        prop::sample::select(fields.clone()),
        prop::option::weighted(0.85, json_value(keys.clone())),
    );
    let seed_text = seed.to_string();
    let seed_len = seed_text.len();
    prop_oneof![
        6 => prop::collection::vec(mutation, 1..4).prop_map(move |muts| {
            let mut doc = seed.clone();
            for (field, value) in muts {
                set(&mut doc, field, value);
            }
            doc.to_string().into_bytes()
        }),
        2 => json_value(keys).prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (0..seed_len).prop_map(move |n| seed_text.as_bytes()[..n].to_vec()),
    ]
    .boxed()
}

/// Checks one answer to fuzzed input.
fn judge(status: u16, content_type: &str, text: &str, upstream: bool) -> Result<(), String> {
    let reply = crate::suite::common::Reply {
        status,
        content_type: content_type.to_owned(),
        text: text.to_owned(),
    };
    if status >= 500 && !(upstream && status == 502) {
        return Err(format!("server error {status}: {text}"));
    }
    if status >= 400 {
        return reply.problem_error(None).map_or(Ok(()), Err);
    }
    Ok(())
}

/// Runs `strategy` against one request shape on a blocking thread, each case
/// sent through the server; returns the minimal failure, if any.
async fn fuzz<M, S, F>(label: String, make: M, send: F) -> Option<String>
where
    M: FnOnce() -> S + Send + 'static,
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), String> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        // Built here: proptest's boxed strategies are not `Send`.
        let strategy = make();
        let mut runner = runner();
        match runner.run(&strategy, |input| send(input).map_err(TestCaseError::fail)) {
            Ok(()) => None,
            Err(e) => Some(format!("{label}: {e}")),
        }
    })
    .await
    .unwrap()
}

/// Sends one request and judges the answer (blocking, from a fuzz thread).
fn probe(
    t: &Arc<TwoTeams>,
    handle: &Handle,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Vec<u8>>,
    upstream: bool,
) -> Result<(), String> {
    let auth = format!("Bearer {key}");
    let reply = handle
        .block_on(t.call_raw(method, path, Some(&auth), body))
        .map_err(|e| format!("no answer (did the handler panic?): {e}"))?;
    judge(reply.status, &reply.content_type, &reply.text, upstream)
}

async fn fixture_ids(t: &TwoTeams) -> (String, String, String) {
    let a = t.key_a.as_str();
    let run = t
        .ok(
            "POST",
            "/agent/runs",
            a,
            Some(r#"{"prompt":"fuzz target"}"#),
        )
        .await;
    let sched = t
        .ok(
            "POST",
            "/agent/schedules",
            a,
            Some(r#"{"name":"fuzz","cron_schedule":"0 * * * *","prompt":"p"}"#),
        )
        .await;
    t.ok(
        "POST",
        "/secrets",
        a,
        Some(r#"{"name":"FUZZ_SECRET","value":"v"}"#),
    )
    .await;
    let env = t
        .ok("POST", "/environments", a, Some(r#"{"name":"fuzz-env"}"#))
        .await;
    (
        run["run_id"].as_str().unwrap().to_owned(),
        sched["id"].as_str().unwrap().to_owned(),
        env["id"].as_str().unwrap().to_owned(),
    )
}

fn body_routes(run: &str, schedule: &str, env: &str) -> Vec<BodyRoute> {
    let run_fields = vec![
        "/prompt",
        "/skill",
        "/title",
        "/team",
        "/attachments",
        "/conversation_id",
        "/agent_identity_uid",
        "/config",
        "/config/model_id",
        "/config/environment_id",
        "/config/worker_host",
        "/config/idle_timeout_minutes",
        "/config/skill_spec",
        "/config/mcp_servers",
        "/config/harness",
        "/config/name",
        "/metadata",
        "/mode",
        "/parent_run_id",
        "/on_behalf_of",
        "/interactive",
        "/config/skills",
        "/config/memory_stores",
        "/config/session_sharing",
        "/config/credential_strategy",
        "/config/_hangar",
    ];
    let run_seed = json!({"prompt": "fuzz", "config": {"model_id": "fake/test-model"}});
    let schedule_fields = vec![
        "/name",
        "/cron_schedule",
        "/prompt",
        "/enabled",
        "/timezone",
        "/team",
        "/agent_config",
        "/agent_config/model_id",
        "/agent_config/worker_host",
        "/agent_config/idle_timeout_minutes",
        "/agent_config/environment_id",
        "/metadata",
        "/mode",
        "/agent_uid",
    ];
    let schedule_seed = json!({"name": "s", "cron_schedule": "*/5 * * * *", "prompt": "p",
        "enabled": true, "timezone": "Europe/Paris", "agent_config": {"model_id": "fake/test-model"}});
    let env_fields = vec![
        "/name",
        "/description",
        "/docker_image",
        "/repos",
        "/repos/0/url",
        "/repos/0/path",
        "/repos/0/token_secret",
        "/setup_commands",
        "/env",
        "/env/A",
        "/secrets",
        "/network_policy",
        "/network_policy/mode",
        "/network_policy/hosts",
    ];
    let env_seed = json!({"name": "e", "description": "d", "docker_image": "img:1",
        "repos": [{"url": "https://github.com/a/b", "path": "b"}], "setup_commands": ["true"],
        "env": {"A": "1"}, "secrets": ["FUZZ_SECRET"],
        "network_policy": {"mode": "allowlist", "hosts": ["example.com"]}});
    let r = |method, path: String, seed: &Value, fields: &Vec<&'static str>| BodyRoute {
        method,
        path,
        seed: seed.clone(),
        fields: fields.clone(),
        upstream: false,
    };
    let mut routes = vec![
        r("POST", "/agent/runs".into(), &run_seed, &run_fields),
        r("POST", "/agent/run".into(), &run_seed, &run_fields),
        r("POST", "/agent/runs/local".into(), &run_seed, &run_fields),
        r(
            "POST",
            format!("/agent/runs/{run}/followups"),
            &json!({"message": "m"}),
            &vec!["/message", "/from"],
        ),
        r(
            "POST",
            "/agent/schedules".into(),
            &schedule_seed,
            &schedule_fields,
        ),
        r(
            "PUT",
            format!("/agent/schedules/{schedule}"),
            &schedule_seed,
            &schedule_fields,
        ),
        r(
            "POST",
            "/api-keys".into(),
            &json!({"name": "k", "expires_at": "2099-01-01T00:00:00Z"}),
            &vec!["/name", "/expires_at"],
        ),
        r("POST", "/environments".into(), &env_seed, &env_fields),
        r(
            "PUT",
            format!("/environments/{env}"),
            &env_seed,
            &env_fields,
        ),
        r(
            "POST",
            "/secrets".into(),
            &json!({"name": "S", "value": "v"}),
            &vec!["/name", "/value"],
        ),
        r(
            "PUT",
            "/secrets/FUZZ_SECRET".into(),
            &json!({"value": "v"}),
            &vec!["/value", "/name"],
        ),
        r(
            "POST",
            "/integrations".into(),
            &json!({"kind": "webhook", "name": "w", "secret": "s",
                "settings": {"prompt_template": "{{a}}", "prompt_prefix": "p",
                    "agent_config": {"model_id": "fake/test-model"}}}),
            &vec![
                "/kind",
                "/name",
                "/secret",
                "/settings",
                "/settings/prompt_template",
                "/settings/prompt_prefix",
                "/settings/repos",
                "/settings/agent_config",
                "/settings/agent_config/model_id",
            ],
        ),
        r(
            "POST",
            "/webhooks".into(),
            &json!({"url": "https://example.com/hook", "event_types": ["run_succeeded"]}),
            &vec!["/url", "/event_types", "/event_types/0"],
        ),
    ];
    routes.push(BodyRoute {
        upstream: true,
        ..r(
            "POST",
            "/llm/chat/completions".into(),
            &json!({"model": "fake/test-model", "messages": [{"role": "user", "content": "hi"}],
                "stream": false, "max_tokens": 5}),
            &vec![
                "/model",
                "/messages",
                "/messages/0",
                "/messages/0/role",
                "/messages/0/content",
                "/messages/0/tool_calls",
                "/tools",
                "/tool_choice",
                "/stream",
                "/stream_options",
                "/temperature",
                "/max_tokens",
            ],
        )
    });
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_fuzzed_bodies_never_get_5xx_or_panic() {
    let panics = count_panics();
    let t = Arc::new(TwoTeams::start().await);
    let (run, schedule, env) = fixture_ids(&t).await;
    // Enough answers for every fuzzed request the gateway finds valid: a
    // provider that fails is retried with backoff, which only slows the test.
    let turns = cases() as usize * 4;
    t.llm
        .push((0..turns).map(|_| hangar_testkit::fake_llm::Turn::text("ok")));
    let mut failures = Vec::new();
    for route in body_routes(&run, &schedule, &env) {
        let label = format!("{} {}", route.method, route.path);
        let (t2, handle, shape) = (t.clone(), Handle::current(), route.clone());
        let failure = fuzz(
            label.clone(),
            move || body_strategy(&shape),
            move |body| {
                probe(
                    &t2,
                    &handle,
                    route.method,
                    &route.path,
                    &t2.key_a,
                    Some(body),
                    route.upstream,
                )
            },
        )
        .await;
        failures.extend(failure);
        assert!(
            t.healthy().await,
            "the server stopped answering after {label}"
        );
    }
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the server panicked");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// JSON type a body field expects.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Str,
    Bool,
    Int,
    /// A map (`metadata`, `env`, `mcp_servers`).
    Obj,
    /// A struct: serde also accepts its fields as a positional array, so
    /// arrays are not wrong values for it.
    Struct,
    Arr,
}

/// Values of every JSON type but `kind` (and `null`, which optional fields take).
fn wrong_values(kind: Kind) -> Vec<Value> {
    let all = [
        (Kind::Str, json!("text")),
        (Kind::Bool, json!(true)),
        (Kind::Int, json!(7)),
        (Kind::Obj, json!({"k": "v"})),
        (Kind::Arr, json!(["x"])),
    ];
    let same = |k: &Kind| match kind {
        Kind::Struct => matches!(k, Kind::Obj | Kind::Arr),
        _ => std::mem::discriminant(k) == std::mem::discriminant(&kind),
    };
    let mut out: Vec<Value> = all
        .into_iter()
        .filter(|(k, _)| !same(k))
        .map(|(_, v)| v)
        .collect();
    if matches!(kind, Kind::Int) {
        out.push(json!(1.5));
    }
    out
}

/// The path `serde_path_to_error` prints for a JSON pointer: `/repos/0/url` → `repos[0].url`.
fn field_path(pointer: &str) -> String {
    let mut path = String::new();
    for part in pointer.trim_start_matches('/').split('/') {
        if part.parse::<usize>().is_ok() {
            path.push_str(&format!("[{part}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
        }
    }
    path
}

/// A body route with the JSON type of its fields: `(method, path, seed, [(pointer, kind)])`.
type TypedRoute = (&'static str, String, Value, Vec<(&'static str, Kind)>);

/// Typed fields of the body routes.
fn typed_fields(run: &str, schedule: &str, env: &str) -> Vec<TypedRoute> {
    use Kind::*;
    let run_seed = json!({"prompt": "fuzz", "config": {"model_id": "fake/test-model",
        "mcp_servers": {"m": {"command": "x"}}, "harness": {"type": "oz"},
        "skills": ["a/b:c"]},
        "attachments": [{"file_name": "a.png", "mime_type": "image/png", "data": "aGk="}]});
    let run_fields = vec![
        ("/prompt", Str),
        ("/skill", Str),
        ("/title", Str),
        ("/team", Bool),
        ("/interactive", Bool),
        ("/conversation_id", Str),
        ("/parent_run_id", Str),
        ("/agent_identity_uid", Str),
        ("/on_behalf_of", Str),
        ("/metadata", Obj),
        ("/metadata/ticket_id", Str),
        ("/mode", Str),
        ("/attachments", Arr),
        ("/attachments/0", Struct),
        ("/attachments/0/file_name", Str),
        ("/attachments/0/data", Str),
        ("/config", Struct),
        ("/config/model_id", Str),
        ("/config/name", Str),
        ("/config/worker_host", Str),
        ("/config/idle_timeout_minutes", Int),
        ("/config/computer_use_enabled", Bool),
        ("/config/skills", Arr),
        ("/config/skills/0", Str),
        ("/config/runner_id", Str),
        ("/config/session_sharing", Struct),
        ("/config/inference_providers", Struct),
        ("/config/inference_providers/aws", Struct),
        ("/config/inference_providers/aws/disabled", Bool),
        ("/config/memory_stores", Arr),
        ("/config/mcp_servers", Obj),
        ("/config/mcp_servers/m", Struct),
        ("/config/mcp_servers/m/command", Str),
        ("/config/mcp_servers/m/args", Arr),
        ("/config/harness", Struct),
        ("/config/harness/reasoning_level", Str),
        ("/config/harness_auth_secrets", Struct),
    ];
    let schedule_seed = json!({"name": "s", "cron_schedule": "*/5 * * * *", "prompt": "p",
        "enabled": true, "agent_config": {"model_id": "fake/test-model", "skills": ["a/b:c"]}});
    let schedule_fields = vec![
        ("/name", Str),
        ("/cron_schedule", Str),
        ("/prompt", Str),
        ("/enabled", Bool),
        ("/timezone", Str),
        ("/metadata", Obj),
        ("/metadata/k", Str),
        ("/mode", Str),
        ("/agent_uid", Str),
        ("/agent_config", Struct),
        ("/agent_config/model_id", Str),
        ("/agent_config/idle_timeout_minutes", Int),
        ("/agent_config/skills", Arr),
    ];
    let env_seed = json!({"name": "e", "repos": [{"url": "https://github.com/a/b", "path": "b"}],
        "setup_commands": ["true"], "env": {"A": "1"}, "secrets": ["FUZZ_SECRET"],
        "network_policy": {"mode": "allowlist", "hosts": ["example.com"]}});
    let env_fields = vec![
        ("/name", Str),
        ("/description", Str),
        ("/docker_image", Str),
        ("/repos", Arr),
        ("/repos/0", Struct),
        ("/repos/0/url", Str),
        ("/setup_commands", Arr),
        ("/setup_commands/0", Str),
        ("/env", Obj),
        ("/env/A", Str),
        ("/secrets/0", Str),
        ("/network_policy", Struct),
        ("/network_policy/hosts", Arr),
    ];
    vec![
        (
            "POST",
            "/agent/runs".into(),
            run_seed.clone(),
            run_fields.clone(),
        ),
        ("POST", "/agent/runs/local".into(), run_seed, run_fields),
        (
            "POST",
            format!("/agent/runs/{run}/followups"),
            json!({"message": "m"}),
            vec![("/message", Str)],
        ),
        (
            "POST",
            "/agent/schedules".into(),
            schedule_seed.clone(),
            schedule_fields.clone(),
        ),
        (
            "PUT",
            format!("/agent/schedules/{schedule}"),
            schedule_seed,
            schedule_fields,
        ),
        ("PUT", format!("/environments/{env}"), env_seed, env_fields),
        (
            "POST",
            "/api-keys".into(),
            json!({"name": "k"}),
            vec![("/name", Str), ("/expires_at", Str)],
        ),
        (
            "POST",
            "/secrets".into(),
            json!({"name": "S", "value": "v"}),
            vec![("/name", Str), ("/value", Str)],
        ),
        (
            "POST",
            "/integrations".into(),
            json!({"kind": "webhook", "name": "w", "secret": "s",
                "settings": {"prompt_template": "{{a}}", "channels": []}}),
            vec![
                ("/kind", Str),
                ("/name", Str),
                ("/secret", Str),
                ("/settings", Struct),
                ("/settings/prompt_template", Str),
                ("/settings/channels", Arr),
            ],
        ),
    ]
}

/// C7: a value of the wrong JSON type in any field, at any depth, is a 400
/// whose detail names the field's path (`body field "config.harness.type": …`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_wrong_types_are_400s_naming_the_field_path() {
    let panics = count_panics();
    let t = TwoTeams::start().await;
    let (run, schedule, env) = fixture_ids(&t).await;
    let auth = format!("Bearer {}", t.key_a);
    let mut failures = Vec::new();
    let mut checked = 0;
    for (method, path, seed, fields) in typed_fields(&run, &schedule, &env) {
        for (pointer, kind) in fields {
            for wrong in wrong_values(kind) {
                let mut doc = seed.clone();
                set(&mut doc, pointer, Some(wrong.clone()));
                let reply = t
                    .call_raw(
                        method,
                        &path,
                        Some(&auth),
                        Some(doc.to_string().into_bytes()),
                    )
                    .await
                    .unwrap();
                checked += 1;
                // `network_policy` is an internally tagged enum: serde
                // buffers it, so errors inside it name the policy.
                let reported = if pointer.starts_with("/network_policy/") {
                    "/network_policy"
                } else {
                    pointer
                };
                let expected = format!("body field \"{}\"", field_path(reported));
                let detail = serde_json::from_str::<Value>(&reply.text)
                    .ok()
                    .and_then(|p| p["detail"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                if reply.status != 400 || !detail.contains(&expected) {
                    failures.push(format!(
                        "{method} {path} {pointer} = {wrong}: {} `{}` (wanted 400 naming {expected})",
                        reply.status, reply.text
                    ));
                }
            }
        }
    }
    assert!(checked > 300, "only {checked} cases");
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the server panicked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Query values: random text (encoded), raw broken encodings, and values each
/// parameter is known to choke on.
fn query_strategy(keys: Vec<&'static str>, cursor: String) -> BoxedStrategy<String> {
    let key = prop_oneof![
        4 => prop::sample::select(keys).prop_map(str::to_owned),
        1 => "[a-z_%]{0,8}",
    ];
    let value = prop_oneof![
        2 => short_nasty_string().prop_map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()),
        1 => "[%a-fA-F0-9=;+,]{0,12}",
        1 => prop::sample::select(vec![
            "-1", "0", "501", "500", "1", "9223372036854775808", "1e3", "",
            "QUEUED,", ",,", "queued", "asc", "DESC", "updated_at", "name",
            "%ff%fe", "%", "3132333a616263", "LOCAL", "REMOTE", "2025-01-01T00:00:00Z",
            "2025-13-45T99:99:99Z", "-9223372036854775808", "7a7a", "393939393939393939393939393939393939393a78",
        ])
        .prop_map(str::to_owned),
        1 => Just(cursor),
    ];
    prop::collection::vec((key, value), 0..5)
        .prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        })
        .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_fuzzed_query_strings_and_path_ids_never_get_5xx() {
    let panics = count_panics();
    let t = Arc::new(TwoTeams::start().await);
    let (run, schedule, env) = fixture_ids(&t).await;
    let a = t.key_a.clone();
    for i in 0..3 {
        t.ok(
            "POST",
            "/agent/runs",
            &a,
            Some(&format!(r#"{{"prompt":"page {i}"}}"#)),
        )
        .await;
    }
    // A real cursor of team A, and one of team B (foreign).
    let page = t.ok("GET", "/agent/runs?limit=1", &a, None).await;
    let cursor = page["page_info"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let run_keys = vec![
        "limit",
        "cursor",
        "state",
        "source",
        "sort_by",
        "sort_order",
        "schedule_id",
        "model_id",
        "creator",
        "execution_location",
        "created_after",
        "created_before",
        "updated_after",
        "environment_id",
        "name",
        "skill",
        "q",
        "executor",
        "ancestor_run_id",
        "automation_id",
        "factory_uid",
        "metadata[ticket_id]",
        "metadata[]",
        "skill_spec",
    ];
    let lists: Vec<(String, Vec<&'static str>)> = vec![
        ("/agent/runs".into(), run_keys),
        ("/agent/environments".into(), vec!["sort_by"]),
        ("/agent/schedules".into(), vec!["limit", "cursor"]),
        ("/agent/models".into(), vec!["limit"]),
        ("/environments".into(), vec!["limit"]),
        ("/secrets".into(), vec!["limit"]),
        ("/integrations".into(), vec!["limit"]),
        ("/api-keys".into(), vec!["limit"]),
        ("/workers".into(), vec!["limit"]),
        ("/whoami".into(), vec!["x"]),
        ("/llm/models".into(), vec!["x"]),
        ("/selfhosted/worker/ws".into(), vec!["worker_id"]),
        (format!("/agent/runs/{run}/transcript"), vec!["after"]),
    ];
    let mut failures = Vec::new();
    for (path, keys) in lists {
        let label = format!("GET {path}?…");
        let (t2, handle, key) = (t.clone(), Handle::current(), a.clone());
        let cursor = cursor.clone();
        let failure = fuzz(
            label,
            move || query_strategy(keys, cursor),
            move |q| {
                probe(
                    &t2,
                    &handle,
                    "GET",
                    &format!("{path}?{q}"),
                    &key,
                    None,
                    false,
                )
            },
        )
        .await;
        failures.extend(failure);
    }
    // The session socket with a run token and fuzzed `execution_id`.
    let (local, token) = t.local_run("fuzz session").await;
    let (t2, handle) = (t.clone(), Handle::current());
    let session = format!("/agent/runs/{local}/session");
    failures.extend(
        fuzz(
            format!("GET {session}?…"),
            || query_strategy(vec!["execution_id"], String::new()),
            move |q| {
                probe(
                    &t2,
                    &handle,
                    "GET",
                    &format!("{session}?{q}"),
                    &token,
                    None,
                    false,
                )
            },
        )
        .await,
    );
    // Random ids in every object path (percent-encoded arbitrary text).
    let templates = [
        ("GET", "/agent/runs/{}"),
        ("POST", "/agent/runs/{}/cancel"),
        ("GET", "/agent/runs/{}/transcript"),
        ("GET", "/agent/runs/{}/environment"),
        ("GET", "/agent/runs/{}/session"),
        ("GET", "/agent/schedules/{}"),
        ("DELETE", "/agent/schedules/{}"),
        ("POST", "/agent/schedules/{}/pause"),
        ("POST", "/agent/schedules/{}/resume"),
        ("POST", "/api-keys/{}/expire"),
        ("GET", "/environments/{}"),
        ("DELETE", "/environments/{}"),
        ("DELETE", "/secrets/{}"),
        ("GET", "/integrations/{}"),
        ("DELETE", "/integrations/{}"),
        ("POST", "/integrations/{}/test"),
        ("GET", "/webhooks/{}"),
        ("DELETE", "/webhooks/{}"),
        ("GET", "/webhooks/{}/deliveries"),
        ("POST", "/webhooks/{}/test"),
    ];
    for (method, template) in templates {
        let (t2, handle, key) = (t.clone(), Handle::current(), a.clone());
        let id = || {
            prop_oneof![
                short_nasty_string()
                    .prop_filter("non-empty", |s| !s.is_empty())
                    .prop_map(
                        |s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                    ),
                "[%a-fA-F0-9.]{1,12}",
            ]
        };
        failures.extend(
            fuzz(format!("{method} {template}"), id, move |id: String| {
                probe(
                    &t2,
                    &handle,
                    method,
                    &template.replace("{}", &id),
                    &key,
                    None,
                    false,
                )
            })
            .await,
        );
    }
    let _ = (schedule, env);
    assert!(t.healthy().await, "the server stopped answering");
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the server panicked");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// One WebSocket frame: random text, JSON, an envelope of a known type with a
/// random or mutated payload, random bytes.
fn frame_strategy(
    kinds: Vec<&'static str>,
    payload: Value,
    fields: Vec<&'static str>,
) -> BoxedStrategy<Frame> {
    let keys: Vec<&'static str> = fields.clone();
    let mutated = prop::collection::vec(
        (
            prop::sample::select(fields),
            prop::option::weighted(0.85, json_value(keys.clone())),
        ),
        0..3,
    )
    .prop_map(move |muts| {
        let mut doc = payload.clone();
        for (f, v) in muts {
            set(&mut doc, &format!("/{f}"), v);
        }
        doc
    });
    prop_oneof![
        3 => (prop::sample::select(kinds.clone()), mutated)
            .prop_map(|(k, d)| Frame::Text(json!({"type": k, "data": d}).to_string())),
        2 => (prop::sample::select(kinds), json_value(keys.clone()))
            .prop_map(|(k, d)| Frame::Text(json!({"type": k, "data": d}).to_string())),
        1 => json_value(keys).prop_map(|v| Frame::Text(v.to_string())),
        1 => nasty_string().prop_map(Frame::Text),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Frame::Binary),
        1 => prop::collection::vec(any::<u8>(), 0..125).prop_map(Frame::Ping),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
}

impl Frame {
    fn message(self) -> tokio_tungstenite::tungstenite::Message {
        use tokio_tungstenite::tungstenite::Message;
        match self {
            Frame::Text(t) => Message::Text(t.into()),
            Frame::Binary(b) => Message::Binary(b.into()),
            Frame::Ping(b) => Message::Ping(b.into()),
        }
    }
}

/// Sends fuzzed frames over a socket that is reopened whenever the server
/// closes it; checks after each batch that the server still serves.
async fn fuzz_socket<C, Fut>(
    t: &Arc<TwoTeams>,
    label: &str,
    strategy: BoxedStrategy<Frame>,
    connect: C,
) -> Vec<String>
where
    C: Fn() -> Fut,
    Fut: std::future::Future<Output = hangar_client::WebSocket>,
{
    let mut failures = Vec::new();
    let mut runner = runner();
    let mut ws = connect().await;
    let mut reconnects = 0;
    for i in 0..cases() {
        let frame = strategy.new_tree(&mut runner).unwrap().current();
        if ws.send(frame.clone().message()).await.is_err() {
            reconnects += 1;
            ws = connect().await;
            let _ = ws.send(frame.message()).await;
        }
        // Drain what the server sent (acks, pongs, a close) without blocking.
        while let Ok(Some(msg)) =
            tokio::time::timeout(std::time::Duration::from_millis(1), ws.next()).await
        {
            if msg.is_err() {
                break;
            }
        }
        if i % 32 == 31 && !t.healthy().await {
            failures.push(format!("{label}: server stopped answering after frame {i}"));
            break;
        }
    }
    tracing::info!(reconnects, "{label}: done");
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_fuzzed_websocket_frames_never_crash_the_server() {
    let panics = count_panics();
    let t = Arc::new(TwoTeams::start().await);
    let (run, _, _) = fixture_ids(&t).await;
    let worker_payload = json!({"task_id": run, "worker_id": "fuzz-worker", "execution_id": "x",
        "message": "m", "task_state": "SUCCEEDED", "reason": "r", "failure_reason": "task_timeout",
        "exit_code": 1, "version": "1", "backend": "direct", "max_concurrent_tasks": 1,
        "labels": {}, "running": []});
    let worker_fields = vec![
        "task_id",
        "worker_id",
        "execution_id",
        "message",
        "task_state",
        "reason",
        "failure_reason",
        "exit_code",
        "version",
        "backend",
        "max_concurrent_tasks",
        "labels",
        "running",
    ];
    let worker_kinds = vec![
        "worker_hello",
        "task_claimed",
        "task_rejected",
        "task_started",
        "task_completed",
        "task_failed",
        "worker_draining",
        "unknown_kind",
    ];
    let t2 = t.clone();
    let worker_token = t.worker_token("fuzz-worker").await;
    let mut failures = fuzz_socket(
        &t,
        "worker socket",
        frame_strategy(worker_kinds, worker_payload, worker_fields),
        || {
            let (t, token) = (t2.clone(), worker_token.clone());
            async move {
                hangar_client::connect_websocket(
                    &t.ws_url("/selfhosted/worker/ws?worker_id=fuzz-worker"),
                    &token,
                )
                .await
                .unwrap()
            }
        },
    )
    .await;

    let event = json!({"seq": 1, "at": "2025-01-01T00:00:00Z", "kind": "assistant_message",
        "text": "hi", "state": "INPROGRESS", "message": "m"});
    let event_fields = vec![
        "seq",
        "at",
        "kind",
        "text",
        "state",
        "message",
        "name",
        "arguments",
    ];
    let t3 = t.clone();
    failures.extend(
        fuzz_socket(
            &t,
            "session socket",
            frame_strategy(vec!["event", "ack", "unknown_kind"], event, event_fields),
            || {
                let t = t3.clone();
                async move {
                    // A fresh run each time: a fuzzed terminal `status` event ends the last one.
                    let (run, token) = t.local_run("fuzz session").await;
                    hangar_client::connect_websocket(
                        &t.ws_url(&format!("/agent/runs/{run}/session")),
                        &token,
                    )
                    .await
                    .unwrap()
                }
            },
        )
        .await,
    );
    assert!(t.healthy().await, "the server stopped answering");
    // The API still works for everyone.
    t.ok("GET", "/agent/runs", &t.key_a, None).await;
    t.ok("GET", "/workers", &t.key_b, None).await;
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the server panicked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
