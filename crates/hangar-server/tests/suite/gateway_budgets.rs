//! Gateway budgets (issue 11, item 7). The finding: the LLM gateway was not
//! metered or rate-limited for API-key callers, and a task could skip
//! metering by closing the stream early.

use super::common::*;
use futures::StreamExt;
use hangar_testkit::fake_llm::Turn;
use hangar_testkit::poll::{until_ok, within};
use serde_json::{Value, json};
use std::time::Duration;

/// A chat request body for `model`.
fn chat(model: &str, stream: bool, text: &str) -> String {
    json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
}

/// `POST /llm/chat/completions` with `key`; the raw response.
async fn post_chat(t: &TwoTeams, key: &str, body: &str) -> reqwest::Response {
    t.http
        .post(t.api("/llm/chat/completions"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// A run of team A as the store has it, waiting (at most 10 s) until `done` holds.
async fn run_until(
    t: &TwoTeams,
    run_id: &str,
    done: impl Fn(&hangar_store::RunRecord) -> bool,
) -> hangar_store::RunRecord {
    let id = hangar_protocol::RunId(run_id.to_owned());
    // On timeout the last view is answered all the same: the caller's
    // assertions on it say what is wrong.
    let mut last = None;
    let what = format!("run {run_id}");
    let every = Duration::from_millis(20);
    let done = within(&what, Duration::from_secs(10), every, async || {
        let run = t.store().run(1, &id).await.unwrap();
        if done(&run) {
            return Ok(run);
        }
        let state = run.state;
        last = Some(run);
        Err(state)
    })
    .await;
    done.unwrap_or_else(|_| last.expect("polled at least once"))
}

/// The `usage` of the SSE `data:` frames of a streamed answer.
fn streamed_usage(sse: &str) -> Value {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| !v["usage"].is_null())
        .map(|v| v["usage"].clone())
        .unwrap_or(Value::Null)
}

/// A client that reads the first streamed text and hangs up is metered all
/// the same: the provider never sent its usage chunk, so the run is charged
/// the documented estimate (⌈request bytes / 4⌉ prompt tokens, ⌈streamed
/// chars / 4⌉ completion tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_stream_closed_early_is_still_metered() {
    let t = TwoTeams::start().await;
    // The model sends "Partial ans", then nothing for a minute.
    t.llm.push([Turn::Stall(Duration::from_secs(60))]);
    let (run_id, token) = t.local_run("meter me").await;
    let body = chat(MODEL, true, "tell me everything");
    let resp = post_chat(&t, &token, &body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("Partial ans") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the first text arrives")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Hang up mid-stream, long before the model would finish.
    drop(stream);

    let run = run_until(&t, &run_id, |r| r.prompt_tokens > 0).await;
    let prompt_estimate = i64::try_from(body.len().div_ceil(4)).unwrap();
    let completion_estimate = i64::try_from("Partial ans".len().div_ceil(4)).unwrap();
    assert_eq!(
        (run.prompt_tokens, run.completion_tokens),
        (prompt_estimate, completion_estimate),
        "the dropped stream is metered with the estimate"
    );
    assert!(t.healthy().await);
}

/// A provider stream that breaks before its usage chunk is metered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_stream_cut_by_the_provider_is_metered_from_the_estimate() {
    let t = TwoTeams::start().await;
    t.llm.push([Turn::CutStream]);
    let (run_id, token) = t.local_run("cut").await;
    let body = chat(MODEL, true, "go");
    let text = post_chat(&t, &token, &body).await.text().await.unwrap();
    assert!(text.contains("provider_error"), "{text}");
    let run = run_until(&t, &run_id, |r| r.prompt_tokens > 0).await;
    assert_eq!(
        (run.prompt_tokens, run.completion_tokens),
        (
            i64::try_from(body.len().div_ceil(4)).unwrap(),
            i64::try_from("Partial ans".len().div_ceil(4)).unwrap()
        )
    );
}

/// Calls with an API key (no run) are metered to that key, streamed or not,
/// priced from the built-in list prices; `GET /llm/usage` shows each caller
/// its own usage and admins the team's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_key_calls_are_metered_to_the_key() {
    let t = TwoTeams::start().await;
    let (_, member) = t.member("ana").await;
    let (_, other) = t.member("bob").await;
    t.llm
        .push([Turn::text("hello there"), Turn::text("and again, streamed")]);
    // `gpt-4o-mini` on any provider is priced from the default table.
    let model = "fake/gpt-4o-mini-2024-07-18";
    let whole: Value = post_chat(&t, &member, &chat(model, false, "hi"))
        .await
        .json()
        .await
        .unwrap();
    let streamed = post_chat(&t, &member, &chat(model, true, "more"))
        .await
        .text()
        .await
        .unwrap();
    let streamed = streamed_usage(&streamed);
    let tokens = |field: &str| {
        whole["usage"][field].as_i64().expect("usage in the answer")
            + streamed[field].as_i64().expect("usage in the stream")
    };
    let (prompt, completion) = (tokens("prompt_tokens"), tokens("completion_tokens"));
    assert!(prompt > 0 && completion > 0);

    let usage = t.ok("GET", "/llm/usage", &member, None).await;
    let rows = usage["usage"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{usage}");
    let row = &rows[0];
    assert_eq!(row["caller"], "api_key");
    assert_eq!(row["name"], "ana");
    assert_eq!(row["requests"], 2);
    assert_eq!(row["prompt_tokens"], prompt);
    assert_eq!(row["completion_tokens"], completion);
    let want_cost = (prompt as f64 * 0.15 + completion as f64 * 0.60) / 1e6;
    let cost = row["cost_usd"].as_f64().unwrap();
    assert!(
        cost > 0.0 && (cost - want_cost).abs() < 1e-12,
        "{cost} vs {want_cost}"
    );

    // Another member sees nothing of it; the admin sees it; team B neither.
    let theirs = t.ok("GET", "/llm/usage", &other, None).await;
    assert_eq!(theirs["usage"], json!([]));
    let admin = t.ok("GET", "/llm/usage", &t.key_a, None).await;
    assert_eq!(admin["usage"][0]["api_key_id"], row["api_key_id"]);
    let team_b = t.ok("GET", "/llm/usage", &t.key_b, None).await;
    assert_eq!(team_b["usage"], json!([]));
    // A run token has no caller usage to read.
    let (_, token) = t.local_run("no").await;
    t.call("GET", "/llm/usage", Some(&token), None)
        .await
        .assert_problem(403, "run token reading caller usage");
}

/// A run that goes over `max_tokens_per_run` is ended by the server,
/// `FAILED` with `budget_exceeded` and a status message that says what it
/// used and which limit; its agent is told to stop, and its next model
/// call is refused before it reaches the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_run_over_max_tokens_is_stopped_with_a_clear_status() {
    let t = TwoTeams::start_with(|c| c.llm_gateway.max_tokens_per_run = 50).await;
    let (run_id, token) = t.local_run("spend").await;
    let mut session = hangar_client::connect_websocket(
        &t.ws_url(&format!("/agent/runs/{run_id}/session")),
        &token,
    )
    .await
    .unwrap();
    // About 100 completion tokens: over the limit in one call.
    t.llm.push([Turn::text("x".repeat(400))]);
    let first = post_chat(&t, &token, &chat(MODEL, false, "write a lot")).await;
    assert_eq!(
        first.status(),
        200,
        "the call that crossed the limit is answered"
    );

    let run = run_until(&t, &run_id, |r| r.state.is_terminal()).await;
    let used = run.prompt_tokens + run.completion_tokens;
    assert!(used > 50, "{used}");
    assert_eq!(run.state, hangar_protocol::RunState::Failed);
    assert_eq!(run.error_code.as_deref(), Some("budget_exceeded"));
    let want =
        format!("stopped: the run used {used} tokens, over the limit max_tokens_per_run = 50");
    assert_eq!(run.status_message.as_deref(), Some(want.as_str()));
    let item = t
        .ok("GET", &format!("/agent/runs/{run_id}"), &t.key_a, None)
        .await;
    assert_eq!(item["state"], "FAILED");
    assert_eq!(item["status_message"]["message"], want.as_str());
    assert_eq!(item["status_message"]["error_code"], "budget_exceeded");

    // The agent's session gets `cancel`.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let frame = tokio::time::timeout_at(deadline, session.next())
            .await
            .expect("a cancel frame reaches the agent")
            .expect("the session stays open until then")
            .unwrap();
        if frame.to_text().is_ok_and(|f| f.contains("\"cancel\"")) {
            break;
        }
    }

    // The next call is refused with 402 and never reaches the provider.
    let before = t.llm.requests().len();
    let refused = t
        .call(
            "POST",
            "/llm/chat/completions",
            Some(&token),
            Some(&chat(MODEL, true, "more")),
        )
        .await;
    refused.assert_problem(402, "a call of an over-budget run");
    assert_eq!(refused.json()["error"], "budget_exceeded");
    assert!(
        refused.text.contains("max_tokens_per_run = 50"),
        "{}",
        refused.text
    );
    assert_eq!(t.llm.requests().len(), before);
    // Usage stays what was metered: the refusal costs nothing.
    let after = run_until(&t, &run_id, |_| true).await;
    assert_eq!(after.prompt_tokens + after.completion_tokens, used);
}

/// `max_cost_usd_per_run` ends a run the same way, priced from the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_run_over_max_cost_is_stopped() {
    let t = TwoTeams::start_with(|c| c.llm_gateway.max_cost_usd_per_run = 0.000_01).await;
    let (run_id, token) = t.local_run("spend dollars").await;
    // gpt-5: $10 per million output tokens; ~100 tokens = $0.001.
    t.llm.push([Turn::text("y".repeat(400))]);
    let first = post_chat(&t, &token, &chat("fake/gpt-5", false, "go")).await;
    assert_eq!(first.status(), 200);
    let run = run_until(&t, &run_id, |r| r.state.is_terminal()).await;
    assert_eq!(run.state, hangar_protocol::RunState::Failed);
    assert!(run.inference_cost > 0.000_01, "{}", run.inference_cost);
    let message = run.status_message.unwrap_or_default();
    assert!(
        message.starts_with("stopped: the run cost $")
            && message.ends_with("over the limit max_cost_usd_per_run = $0.00001"),
        "{message}"
    );
}

/// `requests_per_second` is a token bucket per API key and per run: over
/// it the gateway answers 429 with `Retry-After` without calling the
/// provider; other callers keep their own buckets, and a team override
/// lifts the limit for that team.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_requests_per_second_limit_answers_429() {
    let t = TwoTeams::start_with(|c| {
        c.llm_gateway.requests_per_second = 1;
        c.llm_gateway.burst = 2;
        c.llm_gateway.teams.insert(
            "team-b".into(),
            hangar_server::llm::TeamLimits {
                requests_per_second: Some(0),
                ..Default::default()
            },
        );
    })
    .await;
    t.llm
        .push((0..7).map(|i| Turn::text(format!("answer {i}"))));
    let body = chat(MODEL, false, "hi");
    for _ in 0..2 {
        assert_eq!(post_chat(&t, &t.key_a, &body).await.status(), 200);
    }
    let before = t.llm.requests().len();
    let resp = post_chat(&t, &t.key_a, &body).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("llm_gateway.requests_per_second = 1"),
        "{text}"
    );
    assert_eq!(
        t.llm.requests().len(),
        before,
        "refused before the provider"
    );

    // A run has its own bucket.
    let (_, token) = t.local_run("own bucket").await;
    assert_eq!(post_chat(&t, &token, &body).await.status(), 200);
    // Team B is not limited.
    for _ in 0..3 {
        assert_eq!(post_chat(&t, &t.key_b, &body).await.status(), 200);
    }
    // Only the refused call went unmetered: two for the key.
    let usage = t.ok("GET", "/llm/usage", &t.key_a, None).await;
    assert_eq!(usage["usage"][0]["requests"], 2, "{usage}");
}

/// With two replicas on one PostgreSQL database, a run metered over its
/// budget through replica A is stopped where its agent is connected:
/// replica B tells it to cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_over_budget_run_is_stopped_through_every_replica() {
    let url = std::env::var("HANGAR_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("HANGAR_TEST_DATABASE_URL is not set: run `eval \"$(scripts/pg-test-env)\"` first")
    });
    let schema = format!(
        "hangar_test_budget_{}",
        hangar_protocol::RunId::generate().0.replace('-', "_")
    );
    let llm = hangar_testkit::fake_llm::FakeLlm::start(vec![Turn::text("z".repeat(400))]).await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let config = |dir: &tempfile::TempDir| {
        let mut c = hangar_server::ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            database_url: Some(url.clone()),
            database_schema: Some(schema.clone()),
            cli_config_path: Some(std::path::PathBuf::new()),
            master_key_file: Some(dirs[0].path().join("master.key")),
            providers_from_env: false,
            providers: serde_json::from_value(json!({"fake": {
                "kind": "openai", "base_url": llm.base_url(), "api_key": "k"}}))
            .unwrap(),
            ..hangar_server::ServerConfig::default()
        };
        c.llm_gateway.max_tokens_per_run = 50;
        c
    };
    let a = hangar_server::Server::start(config(&dirs[0]))
        .await
        .unwrap();
    let b = hangar_server::Server::start(config(&dirs[1]))
        .await
        .unwrap();
    let key = a.bootstrap().unwrap().api_key.clone();
    let http = reqwest::Client::new();
    let run: Value = http
        .post(format!("{}/api/v1/agent/runs/local", a.url()))
        .bearer_auth(&key)
        .json(&json!({"prompt": "spend on A"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (run_id, token) = (
        run["run_id"].as_str().unwrap(),
        run["run_token"].as_str().unwrap(),
    );
    // The agent is connected to replica B.
    let session_url =
        url::Url::parse(&format!("{}/api/v1/agent/runs/{run_id}/session", b.url())).unwrap();
    let mut session = hangar_client::connect_websocket(&session_url, token)
        .await
        .unwrap();
    // Wait until B holds the agent's session (the upgrade finishes after
    // the handshake answer).
    until_ok("the agent to attach to B", Duration::from_secs(10), || {
        let connected = b.state().sessions.hub.connected_runs();
        if connected.iter().any(|r| r.as_str() == run_id) {
            Ok(())
        } else {
            Err(connected)
        }
    })
    .await;
    // Its model call goes through replica A and crosses the limit.
    let answer = http
        .post(format!("{}/api/v1/llm/chat/completions", a.url()))
        .bearer_auth(token)
        .body(chat("fake/m", false, "write"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let frame = tokio::time::timeout_at(deadline, session.next())
            .await
            .expect("replica B tells the agent to cancel")
            .expect("the session stays open until then")
            .unwrap();
        if frame.to_text().is_ok_and(|f| f.contains("\"cancel\"")) {
            break;
        }
    }
    let stored = b
        .state()
        .store
        .run_any_team(&hangar_protocol::RunId(run_id.to_owned()))
        .await
        .unwrap();
    assert_eq!(stored.state, hangar_protocol::RunState::Failed);
    assert_eq!(stored.error_code.as_deref(), Some("budget_exceeded"));
    drop(session);
    b.shutdown().await;
    a.shutdown().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&pool)
        .await
        .unwrap();
}

/// A dashboard user calling the gateway with their session cookie is
/// metered to themselves (`caller: dashboard_session`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_dashboard_session_calls_are_metered_to_the_user() {
    let t = TwoTeams::start().await;
    let pw = "session-password-1";
    let user = t
        .ok(
            "POST",
            "/users",
            &t.key_a,
            Some(&json!({"email": "meter@example.com", "password": pw}).to_string()),
        )
        .await;
    let login = no_redirects()
        .post(format!("{}/login", t.url))
        .form(&[("email", "meter@example.com"), ("password", pw)])
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = no_redirects()
        .get(format!("{}/", t.url))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf-token\" content=\"";
    let at = page.find(marker).expect("csrf meta tag") + marker.len();
    let csrf = &page[at..at + 64];

    t.llm.push([Turn::text("from the dashboard")]);
    let answer: Value = no_redirects()
        .post(t.api("/llm/chat/completions"))
        .header(reqwest::header::COOKIE, &cookie)
        .header("x-hangar-csrf", csrf)
        .header("content-type", "application/json")
        .body(chat(MODEL, false, "hi"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let usage = t.ok("GET", "/llm/usage", &t.key_a, None).await;
    let rows = usage["usage"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{usage}");
    assert_eq!(rows[0]["caller"], "dashboard_session");
    assert_eq!(rows[0]["user_id"], user["id"]);
    assert_eq!(rows[0]["name"], "meter@example.com");
    assert_eq!(rows[0]["requests"], 1);
    assert_eq!(rows[0]["prompt_tokens"], answer["usage"]["prompt_tokens"]);
    assert_eq!(
        rows[0]["completion_tokens"],
        answer["usage"]["completion_tokens"]
    );
}

/// A call the provider refuses before answering uses no tokens, so it is
/// not billed; the next, answered call is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_provider_errors_are_not_billed() {
    let t = TwoTeams::start().await;
    t.llm
        .push([Turn::error(400, "context too long"), Turn::text("fine")]);
    let refused = post_chat(&t, &t.key_a, &chat(MODEL, false, "a")).await;
    assert_eq!(refused.status(), 400);
    let answer: Value = post_chat(&t, &t.key_a, &chat(MODEL, true, "b"))
        .await
        .text()
        .await
        .map(|sse| streamed_usage(&sse))
        .unwrap();
    let usage = t.ok("GET", "/llm/usage", &t.key_a, None).await;
    let row = &usage["usage"][0];
    assert_eq!(row["requests"], 1, "{usage}");
    assert_eq!(row["prompt_tokens"], answer["prompt_tokens"]);
    assert_eq!(row["completion_tokens"], answer["completion_tokens"]);
}
