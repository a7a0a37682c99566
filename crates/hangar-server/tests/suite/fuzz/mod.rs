//! C7: fuzzed bodies, query strings, path segments and WebSocket frames. The
//! server never answers 5xx for bad input, never panics, keeps serving, and
//! every 4xx is a problem+json whose `detail` says what is wrong.

mod bodies;
mod queries;
mod sockets;
mod types;

pub(super) use crate::suite::common::{TwoTeams, count_panics};
pub(super) use futures::{SinkExt, StreamExt};
pub(super) use proptest::prelude::*;
pub(super) use proptest::test_runner::{Config, TestCaseError, TestRunner};
pub(super) use serde_json::{Value, json};
pub(super) use std::sync::Arc;
pub(super) use std::sync::atomic::Ordering;
pub(super) use tokio::runtime::Handle;

/// Cases per route (override with `HANGAR_FUZZ_CASES`).
pub(super) fn cases() -> u32 {
    std::env::var("HANGAR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

pub(super) fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// Strings that break naive parsers.
pub(super) fn nasty_string() -> BoxedStrategy<String> {
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
pub(super) fn short_nasty_string() -> BoxedStrategy<String> {
    nasty_string()
        .prop_map(|s| s.chars().take(2048).collect())
        .boxed()
}

pub(super) fn number() -> BoxedStrategy<Value> {
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
pub(super) fn json_value(keys: Vec<&'static str>) -> BoxedStrategy<Value> {
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
pub(super) fn set(doc: &mut Value, pointer: &str, value: Option<Value>) {
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
pub(super) struct BodyRoute {
    method: &'static str,
    path: String,
    seed: Value,
    fields: Vec<&'static str>,
    /// The LLM gateway forwards valid requests to the (fake) provider, whose
    /// own failure is a 502; that is the upstream's answer, not bad input.
    upstream: bool,
}

/// Bodies: a valid seed with mutated fields, any JSON, raw bytes, a truncated seed.
pub(super) fn body_strategy(route: &BodyRoute) -> BoxedStrategy<Vec<u8>> {
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
pub(super) fn judge(
    status: u16,
    content_type: &str,
    text: &str,
    upstream: bool,
) -> Result<(), String> {
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
pub(super) async fn fuzz<M, S, F>(label: String, make: M, send: F) -> Option<String>
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
pub(super) fn probe(
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

pub(super) async fn fixture_ids(t: &TwoTeams) -> (String, String, String) {
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
