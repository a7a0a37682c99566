//! C7: fuzzed JSON bodies on every route that takes one.

use super::*;

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
