//! C1: every route with another team's key, a run token, no key and a bad
//! key; workers and references across teams.

use super::fixture::*;
use super::*;

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
