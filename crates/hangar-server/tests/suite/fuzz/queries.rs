//! C7: fuzzed query strings and path ids.

use super::*;

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
