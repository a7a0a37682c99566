//! C7: a value of the wrong type in any field is a 400 that names its path.

use super::*;

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
