//! The API's contract beyond isolation: the generated OpenAPI document
//! (snapshot and route coverage), field-naming body errors, lifecycle events,
//! rate limits (C8 floods) and the first-start bootstrap race of replicas.

use crate::suite::common::{MODEL, TwoTeams};
use hangar_server::{Server, ServerConfig};

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/openapi.json");

async fn served_document(t: &TwoTeams) -> serde_json::Value {
    let reply = t.call("GET", "/openapi.json", None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

#[tokio::test]
async fn the_openapi_document_matches_the_snapshot() {
    let t = TwoTeams::start().await;
    let doc = served_document(&t).await;
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == text,
        "the served OpenAPI document differs from {SNAPSHOT}; if the API change is intended, \
         regenerate it with `UPDATE_SNAPSHOTS=1 cargo nextest run -p hangar-server -E \
         'test(/openapi/)'` and commit the file"
    );
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    // Oz paths keep the Oz schema names.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "RunItem",
        "RunAgentRequest",
        "AmbientAgentConfig",
        "ListRunsResponse",
        "ScheduledAgentItem",
        "ConversationResponse",
        "ArtifactResponse",
        "Error",
    ] {
        assert!(schemas.contains_key(name), "schema `{name}` missing");
    }
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let t = TwoTeams::start().await;
    let a = t.key_a.as_str();
    let cases = [
        (
            "/agent/runs",
            r#"{"prompt":"x","config":{"model_id":5}}"#,
            r#"body field "config.model_id": invalid type: integer `5`, expected a string"#,
        ),
        (
            "/agent/runs",
            r#"{"prompt":"x","config":{"mcp_servers":{"gh":{"args":"no"}}}}"#,
            r#"body field "config.mcp_servers.gh.args""#,
        ),
        (
            "/agent/schedules",
            r#"{"name":"n","cron_schedule":"0 * * * *","prompt":"p","enabled":"yes"}"#,
            r#"body field "enabled""#,
        ),
        (
            "/agent/runs",
            r#"{"prompt":"x"} trailing"#,
            "not valid JSON",
        ),
    ];
    for (path, body, want) in cases {
        let reply = t.call("POST", path, Some(a), Some(body)).await;
        reply.assert_problem(400, path);
        let detail = reply.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(want), "{body}: `{detail}` lacks `{want}`");
    }
}

#[tokio::test]
async fn lifecycle_events_poll_with_a_cursor_per_team() {
    let t = TwoTeams::start().await;
    let (a, b) = (t.key_a.as_str(), t.key_b.as_str());
    let body = format!(r#"{{"prompt":"events","config":{{"model_id":"{MODEL}"}}}}"#);
    let run = t.ok("POST", "/agent/runs", a, Some(&body)).await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    t.ok("POST", &format!("/agent/runs/{run_id}/cancel"), a, None)
        .await;
    let events = t.ok("GET", "/agent/events", a, None).await;
    let types: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["run_queued", "run_cancelled"], "{events}");
    assert_eq!(events[0]["run_id"], run_id.as_str());
    let first = events[0]["sequence"].as_i64().unwrap();
    let second = events[1]["sequence"].as_i64().unwrap();
    assert!(second > first);

    // A client-reported event continues the sequence.
    let reported = t
        .ok(
            "POST",
            &format!("/agent/events/{run_id}"),
            a,
            Some(r#"{"event_type":"run_blocked","execution_id":"x1","ref_id":"m1"}"#),
        )
        .await;
    assert_eq!(reported["sequence"].as_i64(), Some(second + 1));
    let after = t
        .ok("GET", &format!("/agent/events?since={second}"), a, None)
        .await;
    assert_eq!(after.as_array().unwrap().len(), 1, "{after}");
    assert_eq!(after[0]["ref_id"], "m1");
    let one = t
        .ok(
            "GET",
            &format!("/agent/events/{run_id}?after={first}&limit=1"),
            a,
            None,
        )
        .await;
    assert_eq!(one[0]["event_type"], "run_cancelled", "{one}");

    // Bad values say what is wrong; team B sees nothing of A's.
    let bad = t
        .call(
            "POST",
            &format!("/agent/events/{run_id}"),
            Some(a),
            Some(r#"{"event_type":"run_exploded"}"#),
        )
        .await;
    bad.assert_problem(400, "unknown event type");
    assert!(bad.text.contains("run_exploded"), "{}", bad.text);
    t.call("GET", "/agent/events?limit=501", Some(a), None)
        .await
        .assert_problem(400, "limit");
    let theirs = t.ok("GET", "/agent/events", b, None).await;
    assert_eq!(theirs.as_array().unwrap().len(), 0, "{theirs}");
    t.call("GET", &format!("/agent/events/{run_id}"), Some(b), None)
        .await
        .assert_problem(404, "foreign run");
}

/// C8 flood: team A's key far over its limit gets 429 problems with
/// `Retry-After`; team B's requests during the flood all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_team_is_limited_and_others_are_not() {
    let t = TwoTeams::start_with(|c| {
        c.rate_limit = hangar_server::rate_limit::RateLimitConfig {
            requests_per_second: 5,
            burst: 10,
            team_requests_per_second: 10,
            team_burst: 20,
        };
    })
    .await;
    let flood = async {
        let mut sent = Vec::new();
        for _ in 0..4 {
            let batch = (0..40).map(|_| t.call("GET", "/agent/runs", Some(&t.key_a), None));
            sent.extend(futures::future::join_all(batch).await);
        }
        sent
    };
    let steady = async {
        let mut replies = Vec::new();
        for _ in 0..8 {
            replies.push(t.call("GET", "/agent/runs", Some(&t.key_b), None).await);
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
        replies
    };
    let (flooded, others) = tokio::join!(flood, steady);
    let limited: Vec<_> = flooded.iter().filter(|r| r.status == 429).collect();
    assert!(
        limited.len() >= 100,
        "only {} of {} flood requests were limited",
        limited.len(),
        flooded.len()
    );
    assert!(flooded.iter().all(|r| r.status == 200 || r.status == 429));
    let first = limited[0];
    first.assert_problem(429, "flood");
    assert!(first.text.contains("retry in"), "{}", first.text);
    for r in &others {
        assert_eq!(r.status, 200, "team B was limited: {}", r.text);
    }
    // Retry-After is whole seconds.
    let resp = t
        .http
        .get(t.api("/agent/runs"))
        .bearer_auth(&t.key_a)
        .send()
        .await
        .unwrap();
    if resp.status() == 429 {
        let secs: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(secs >= 1);
    }
    // The API description and the LLM gateway are not limited.
    assert_eq!(t.call("GET", "/openapi.json", None, None).await.status, 200);
    assert_ne!(
        t.call("GET", "/llm/models", Some(&t.key_a), None)
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn retry_after_is_sent_with_every_429() {
    let t = TwoTeams::start_with(|c| {
        c.rate_limit = hangar_server::rate_limit::RateLimitConfig {
            requests_per_second: 1,
            burst: 1,
            team_requests_per_second: 0,
            team_burst: 0,
        };
    })
    .await;
    let mut saw = 0;
    for _ in 0..5 {
        let resp = t
            .http
            .get(t.api("/whoami"))
            .bearer_auth(&t.key_a)
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            saw += 1;
            let secs: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&secs), "Retry-After {secs}");
        }
    }
    assert!(saw >= 3, "only {saw} of 5 requests were limited");
}

/// Two replicas starting at the same moment on a fresh PostgreSQL schema:
/// exactly one bootstraps (one team, one admin key), the other finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_together_bootstrap_once() {
    let url = std::env::var("HANGAR_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("HANGAR_TEST_DATABASE_URL is not set: run `eval \"$(scripts/pg-test-env)\"` first")
    });
    let schema = format!(
        "hangar_test_boot_{}",
        hangar_protocol::RunId::generate().0.replace('-', "_")
    );
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let config = |dir: &tempfile::TempDir| ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        database_url: Some(url.clone()),
        database_schema: Some(schema.clone()),
        cli_config_path: Some(std::path::PathBuf::new()),
        master_key_file: Some(dirs[0].path().join("master.key")),
        providers_from_env: false,
        ..ServerConfig::default()
    };
    let (a, b) = tokio::join!(
        Server::start(config(&dirs[0])),
        Server::start(config(&dirs[1]))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let booted = [a.bootstrap().is_some(), b.bootstrap().is_some()];
    assert_eq!(
        booted.iter().filter(|x| **x).count(),
        1,
        "bootstrapped: {booted:?}"
    );
    let store = a.state().store.clone();
    assert_eq!(store.team_count().await.unwrap(), 1);
    let key = a.bootstrap().or(b.bootstrap()).unwrap().api_key.clone();
    // The key works on both replicas.
    let http = reqwest::Client::new();
    for s in [&a, &b] {
        let resp = http
            .get(format!("{}/api/v1/whoami", s.url()))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    b.shutdown().await;
    a.shutdown().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&pool)
        .await
        .unwrap();
}

/// Issue 16 (schemathesis): a JSON array is never read as an object
/// (serde would fill a struct from it positionally).
#[tokio::test]
async fn a_json_array_where_an_object_is_expected_is_refused() {
    let t = TwoTeams::start().await;
    let a = t.key_a.as_str();
    let users = t.call("GET", "/users", Some(a), None).await;
    let uid = users.json()["users"][0]["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        ("PATCH", format!("/users/{uid}"), "[null, null]"),
        ("POST", "/agent/runs".to_owned(), r#"["do something"]"#),
        ("POST", "/environments".to_owned(), "  []"),
    ] {
        let r = t.call(method, &path, Some(a), Some(body)).await;
        r.assert_problem(400, &format!("{method} {path} {body}"));
        assert!(r.text.contains("JSON array"), "{}", r.text);
    }
    // The user is unchanged.
    let after = t.call("GET", &format!("/users/{uid}"), Some(a), None).await;
    assert_eq!(
        after.json()["display_name"],
        users.json()["users"][0]["display_name"]
    );
}

/// The event types the document allows are exactly the reportable ones.
#[test]
fn the_documented_event_types_are_the_reportable_ones() {
    let doc: serde_json::Value =
        serde_json::from_str(hangar_server::api::openapi::document()).unwrap();
    let pattern = doc["components"]["schemas"]["ReportAgentEventRequest"]["properties"]
        ["event_type"]["pattern"]
        .as_str()
        .unwrap();
    let inner = pattern
        .strip_prefix("^run_(")
        .and_then(|p| p.strip_suffix(")$"))
        .unwrap_or_else(|| panic!("unexpected pattern {pattern}"));
    let mut documented: Vec<String> = inner.split('|').map(|s| format!("run_{s}")).collect();
    documented.sort();
    let mut reportable: Vec<String> = hangar_protocol::agent::REPORTABLE_EVENT_TYPES
        .iter()
        .map(|s| s.to_string())
        .collect();
    reportable.sort();
    assert_eq!(documented, reportable);
}
