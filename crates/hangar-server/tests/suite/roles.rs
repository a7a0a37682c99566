//! Roles on every route (issue 11, item 3; scenario C9): the README's "Who
//! may do what" table is the source of truth, and this test checks every route
//! the server publishes against it.

use crate::suite::common::TwoTeams;
use std::collections::BTreeSet;

/// `(method, path, who)` rows of the README's roles table.
pub(crate) fn roles_table() -> Vec<(String, String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let section = readme
        .split("### Who may do what")
        .nth(1)
        .expect("README has a \"Who may do what\" section");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| Method"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 3, "a roles row has three cells: {l}");
            (
                cells[0].to_owned(),
                cells[1].trim_matches('`').to_owned(),
                cells[2].to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn c9_every_route_follows_the_roles_table() {
    let t = TwoTeams::start().await;
    let admin = t.key_a.clone();
    let member = t.member("member").await.1;

    // Every published route has exactly one row, and every row a route.
    let table = roles_table();
    let spec = t.ok("GET", "/openapi.json", &admin, None).await;
    let published: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let listed: BTreeSet<(String, String)> = table
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    assert_eq!(listed.len(), table.len(), "a route is listed twice");
    let missing: Vec<_> = published.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&published).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in README's roles table: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "rows for routes that do not exist: {stale:?}"
    );

    // Objects of the admin's, for the member to try.
    t.ok(
        "POST",
        "/secrets",
        &admin,
        Some(r#"{"name":"ADMIN_SECRET","value":"v4lue"}"#),
    )
    .await;
    let env = t
        .ok(
            "POST",
            "/environments",
            &admin,
            Some(r#"{"name":"admin-env"}"#),
        )
        .await;
    let schedule = t
        .ok(
            "POST",
            "/agent/schedules",
            &admin,
            Some(r#"{"name":"nightly","cron_schedule":"0 3 * * *","prompt":"p"}"#),
        )
        .await;
    let key = t
        .ok(
            "POST",
            "/api-keys",
            &admin,
            Some(r#"{"name":"admin's CI key"}"#),
        )
        .await;
    let whoami = t.ok("GET", "/whoami", &admin, None).await;
    let admin_uid = whoami["user"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("whoami names the user: {whoami}"))
        .to_owned();
    let fill = |path: &str| {
        path.replace("{runId}", "01JNOTAREALRUN0000000000")
            .replace("{artifactUid}", "no-such-artifact")
            .replace("{key_id}", key["id"].as_str().unwrap())
            .replace("{token_id}", "no-such-worker-token")
            .replace("{scheduleId}", schedule["id"].as_str().unwrap())
            .replace("{env_id}", env["id"].as_str().unwrap())
            .replace("{name}", "ADMIN_SECRET")
            .replace("{user_id}", &admin_uid)
            .replace("{share_id}", "no-such-share")
            .replace("{server}", "no-such-server")
            .replace("{token}", "hs_notavalidlink")
            .replace("{integration_id}", "no-such-integration")
            .replace("{webhook_id}", "no-such-webhook")
            .replace("{delivery_id}", "no-such-delivery")
    };

    // Deletions last: the admin's own calls below really delete.
    let mut rows = table.clone();
    rows.sort_by_key(|(method, _, _)| method == "DELETE");
    let mut wrong = Vec::new();
    for (method, path, who) in &rows {
        let url = fill(path);
        let body = matches!(method.as_str(), "POST" | "PUT" | "PATCH").then_some("{}");
        let as_member = t.call(method, &url, Some(&member), body).await;
        let admin_only = who.starts_with("admin") || who == "creator or admin";
        // The worker socket takes worker credentials only: it refuses every
        // user's key (s8_an_admin_personal_key_cannot_connect_as_a_worker).
        let ok = if admin_only || who.starts_with("run token") || who.starts_with("worker") {
            as_member.status == 403
        } else if who.starts_with("anyone") {
            let anonymous = t.call(method, &url, None, body).await;
            anonymous.status != 401 && anonymous.status != 403
        } else {
            // member, session: the member's own rights reach the route (a
            // missing object is a 404, a bad body a 400), never a 401 or 403.
            as_member.status != 401 && as_member.status != 403
        };
        if !ok {
            wrong.push(format!(
                "{method} {path} ({who}): member got {} {}",
                as_member.status, as_member.text
            ));
        }
        if admin_only {
            let as_admin = t.call(method, &url, Some(&admin), body).await;
            if as_admin.status == 401 || as_admin.status == 403 {
                wrong.push(format!(
                    "{method} {path} ({who}): admin got {} {}",
                    as_admin.status, as_admin.text
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "routes that do not follow the roles table:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn c9_a_member_cannot_expire_an_admin_key_or_change_team_secrets() {
    let t = TwoTeams::start().await;
    let admin = t.key_a.clone();
    let member = t.member("member").await.1;
    let keys = t.ok("GET", "/api-keys", &admin, None).await;
    let admin_key = keys["api_keys"][0]["id"].as_str().unwrap().to_owned();

    let r = t
        .call(
            "POST",
            &format!("/api-keys/{admin_key}/expire"),
            Some(&member),
            None,
        )
        .await;
    r.assert_problem(403, "a member expiring the admin's key");
    assert!(
        r.text.contains("admin"),
        "the refusal says who may: {}",
        r.text
    );
    // The admin's key still works, and the member sees only their own keys.
    t.ok("GET", "/whoami", &admin, None).await;
    let mine = t.ok("GET", "/api-keys", &member, None).await;
    let names: Vec<&str> = mine["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["member"], "a member lists only their own keys");

    t.ok(
        "POST",
        "/secrets",
        &admin,
        Some(r#"{"name":"DEPLOY","value":"s3cret"}"#),
    )
    .await;
    t.call(
        "PUT",
        "/secrets/DEPLOY",
        Some(&member),
        Some(r#"{"value":"mine"}"#),
    )
    .await
    .assert_problem(403, "a member rewriting a team secret");
    t.call(
        "POST",
        "/environments",
        Some(&member),
        Some(r#"{"name":"evil"}"#),
    )
    .await
    .assert_problem(403, "a member creating an environment");

    // A member still manages what is theirs: a schedule, and their own key.
    let schedule = t
        .ok(
            "POST",
            "/agent/schedules",
            &member,
            Some(r#"{"name":"mine","cron_schedule":"0 3 * * *","prompt":"p"}"#),
        )
        .await;
    let id = schedule["id"].as_str().unwrap();
    t.ok(
        "POST",
        &format!("/agent/schedules/{id}/pause"),
        &member,
        None,
    )
    .await;
    let own = mine["api_keys"][0]["id"].as_str().unwrap();
    t.ok("POST", &format!("/api-keys/{own}/expire"), &member, None)
        .await;
}

#[tokio::test]
async fn s8_a_member_key_cannot_connect_as_a_worker_nor_anyone_as_local() {
    let t = TwoTeams::start().await;
    let member = t.member("member").await.1;
    let r = t
        .call(
            "GET",
            "/selfhosted/worker/ws?worker_id=build-box",
            Some(&member),
            None,
        )
        .await;
    r.assert_problem(403, "a member connecting as a worker");
    // Nor does the admin's personal key: a worker credential is needed.
    let r = t
        .call(
            "GET",
            "/selfhosted/worker/ws?worker_id=build-box",
            Some(&t.key_a),
            None,
        )
        .await;
    r.assert_problem(403, "an admin's personal key connecting as a worker");
    assert!(r.text.contains("hangar worker token create"), "{}", r.text);
    // Team B's team key and a worker token pass the credential check (a plain
    // GET is then a 400: not a WebSocket upgrade), but no one claims `local:`.
    let pool = t
        .ok("POST", "/worker-tokens", &t.key_a, Some(r#"{"pool":"l"}"#))
        .await;
    let pool = pool["token"].as_str().unwrap().to_owned();
    for credential in [&t.key_b, &pool] {
        let r = t
            .call(
                "GET",
                "/selfhosted/worker/ws?worker_id=local:unmanaged",
                Some(credential),
                None,
            )
            .await;
        r.assert_problem(403, "claiming the reserved local: worker id");
        assert!(r.text.contains("reserved"), "{}", r.text);
    }
    let r = t
        .call(
            "GET",
            "/selfhosted/worker/ws?worker_id=build-box",
            Some(&t.key_b),
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = t
        .call(
            "GET",
            "/selfhosted/worker/ws?worker_id=lab-1",
            Some(&pool),
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}
