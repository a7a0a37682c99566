//! Session sharing (issue 6, item 3): who may watch and steer a run, grants,
//! public links, and revocation closing open streams (C2).

use crate::suite::common::{Reply, TwoTeams};
use futures::StreamExt;
use hangar_server::auth;
use hangar_store::NewUser;
use std::time::{Duration, Instant};

/// Team A's members, each with a personal API key.
struct Members {
    alice: String,
    bob: String,
    /// A team key that belongs to no user (automation).
    robot: String,
}

async fn members(t: &TwoTeams) -> Members {
    let (_, alice) = t.member("alice").await;
    let (_, bob) = t.member("bob").await;
    let (_, robot) = auth::issue_api_key(t.store().as_ref(), 1, None, "robot", None)
        .await
        .unwrap();
    Members { alice, bob, robot }
}

/// An unmanaged run created by `key`: `(run_id, run_token)`; it stays
/// `INPROGRESS` with no agent connected.
async fn local_run(t: &TwoTeams, key: &str, prompt: &str) -> (String, String) {
    let body = serde_json::json!({ "prompt": prompt }).to_string();
    let v = t.ok("POST", "/agent/runs/local", key, Some(&body)).await;
    (
        v["run_id"].as_str().unwrap().to_owned(),
        v["run_token"].as_str().unwrap().to_owned(),
    )
}

async fn share(t: &TwoTeams, key: &str, run: &str, grantee: &str, role: &str) -> Reply {
    let body = serde_json::json!({ "grantee": grantee, "role": role }).to_string();
    t.call(
        "POST",
        &format!("/agent/runs/{run}/shares"),
        Some(key),
        Some(&body),
    )
    .await
}

async fn transcript(t: &TwoTeams, key: &str, run: &str) -> Reply {
    t.call(
        "GET",
        &format!("/agent/runs/{run}/transcript"),
        Some(key),
        None,
    )
    .await
}

async fn followup(t: &TwoTeams, key: &str, run: &str) -> Reply {
    t.call(
        "POST",
        &format!("/agent/runs/{run}/followups"),
        Some(key),
        Some(r#"{"message":"please also update the docs"}"#),
    )
    .await
}

/// A follow-up the access rules let through: refused only because no agent
/// is connected (or accepted), never 403/404.
#[track_caller]
fn steering_allowed(reply: &Reply, who: &str) {
    assert!(
        !matches!(reply.status, 401 | 403 | 404) && reply.status < 500,
        "{who} should be allowed to steer: {} {}",
        reply.status,
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_routes_follow_the_sharing_rules() {
    let t = TwoTeams::start().await;
    let m = members(&t).await;
    let (run, run_token) = local_run(&t, &m.alice, "alice's task").await;

    // Metadata stays team-visible (Oz compatibility); the session does not.
    t.ok("GET", &format!("/agent/runs/{run}"), &m.bob, None)
        .await;
    let listed = t.ok("GET", "/agent/runs", &m.bob, None).await;
    assert!(listed.to_string().contains(&run));
    let denied = transcript(&t, &m.bob, &run).await;
    denied.assert_problem(403, "bob reads alice's unshared transcript");
    assert!(denied.json()["detail"].as_str().unwrap().contains("share"));
    for path in ["conversation", "events/ws"] {
        t.call(
            "GET",
            &format!("/agent/runs/{run}/{path}"),
            Some(&m.bob),
            None,
        )
        .await
        .assert_problem(403, &format!("bob reads alice's unshared {path}"));
    }
    followup(&t, &m.bob, &run)
        .await
        .assert_problem(403, "bob steers alice's unshared run");
    t.call(
        "POST",
        &format!("/agent/runs/{run}/cancel"),
        Some(&m.bob),
        None,
    )
    .await
    .assert_problem(403, "bob cancels alice's unshared run");
    t.call(
        "GET",
        &format!("/agent/runs/{run}/events?follow=false"),
        Some(&m.bob),
        None,
    )
    .await
    .assert_problem(403, "bob streams alice's unshared run");
    share(&t, &m.bob, &run, "team", "edit")
        .await
        .assert_problem(403, "bob shares alice's run with himself");
    t.call(
        "GET",
        &format!("/agent/runs/{run}/shares"),
        Some(&m.bob),
        None,
    )
    .await
    .assert_problem(403, "bob lists the shares of a run he cannot view");

    // The creator, an admin and automation: edit. The run's own token reads
    // its session (it writes it over the session socket, not the REST routes).
    for (who, key) in [
        ("alice (creator)", &m.alice),
        ("admin", &t.key_a),
        ("team key", &m.robot),
    ] {
        assert_eq!(transcript(&t, key, &run).await.status, 200, "{who}");
        steering_allowed(&followup(&t, key, &run).await, who);
    }
    assert_eq!(transcript(&t, &run_token, &run).await.status, 200);
    // Another team: the run does not exist.
    transcript(&t, &t.key_b, &run)
        .await
        .assert_problem(404, "team B reads A's transcript");
    t.call(
        "GET",
        &format!("/agent/runs/{run}/shares"),
        Some(&t.key_b),
        None,
    )
    .await
    .assert_problem(404, "team B lists A's shares");
    share(&t, &t.key_b, &run, "team", "view")
        .await
        .assert_problem(404, "team B shares A's run");
    // A run token manages no grants, not even its own run's.
    share(&t, &run_token, &run, "public", "view")
        .await
        .assert_problem(403, "the run token publishes its own session");

    // A team grant (view): bob watches but cannot steer, cancel or share.
    let team = share(&t, &m.alice, &run, "team", "view").await;
    assert_eq!(team.status, 201, "{}", team.text);
    let team = team.json();
    assert_eq!(team["grantee"], "team");
    assert_eq!(team["role"], "view");
    assert!(team.get("url").is_none(), "{team}");
    assert_eq!(transcript(&t, &m.bob, &run).await.status, 200);
    t.ok(
        "GET",
        &format!("/agent/runs/{run}/conversation"),
        &m.bob,
        None,
    )
    .await;
    let refused = followup(&t, &m.bob, &run).await;
    refused.assert_problem(403, "a viewer steers");
    assert!(refused.json()["detail"].as_str().unwrap().contains("edit"));
    t.call(
        "POST",
        &format!("/agent/runs/{run}/cancel"),
        Some(&m.bob),
        None,
    )
    .await
    .assert_problem(403, "a viewer cancels");
    share(&t, &m.bob, &run, "public", "view")
        .await
        .assert_problem(403, "a viewer shares");
    let listed = t
        .ok("GET", &format!("/agent/runs/{run}/shares"), &m.bob, None)
        .await;
    assert_eq!(listed["shares"].as_array().unwrap().len(), 1, "{listed}");

    // A user grant (edit) lifts bob to editor; the best grant wins.
    let bob_edit = share(&t, &m.alice, &run, "user:bob@a.test", "edit").await;
    assert_eq!(bob_edit.status, 201, "{}", bob_edit.text);
    let bob_edit = bob_edit.json();
    assert_eq!(bob_edit["grantee"], "user:bob@a.test");
    steering_allowed(
        &followup(&t, &m.bob, &run).await,
        "bob with a user edit grant",
    );
    // Re-granting the same user replaces the role (same grant).
    let again = share(&t, &m.alice, &run, "user:bob@a.test", "view")
        .await
        .json();
    assert_eq!(again["id"], bob_edit["id"]);
    assert_eq!(again["role"], "view");
    followup(&t, &m.bob, &run)
        .await
        .assert_problem(403, "bob after his grant became view");
    let again = share(&t, &m.alice, &run, "user:bob@a.test", "edit")
        .await
        .json();
    assert_eq!(again["role"], "edit");

    // Revoking: the user grant, then the team grant.
    let id = bob_edit["id"].as_str().unwrap();
    let gone = t
        .call(
            "DELETE",
            &format!("/agent/runs/{run}/shares/{id}"),
            Some(&m.alice),
            None,
        )
        .await;
    assert_eq!(gone.status, 204, "{}", gone.text);
    assert!(gone.text.is_empty());
    t.call(
        "DELETE",
        &format!("/agent/runs/{run}/shares/{id}"),
        Some(&m.alice),
        None,
    )
    .await
    .assert_problem(404, "revoking twice");
    followup(&t, &m.bob, &run)
        .await
        .assert_problem(403, "bob after his edit grant was revoked");
    assert_eq!(
        transcript(&t, &m.bob, &run).await.status,
        200,
        "team view stays"
    );
    let team_id = team["id"].as_str().unwrap();
    assert_eq!(
        t.call(
            "DELETE",
            &format!("/agent/runs/{run}/shares/{team_id}"),
            Some(&m.alice),
            None
        )
        .await
        .status,
        204
    );
    transcript(&t, &m.bob, &run)
        .await
        .assert_problem(403, "bob after the team grant was revoked");

    // Runs without a creator user (team keys, schedules) are the team's: view.
    let (team_run, _) = local_run(&t, &m.robot, "automation task").await;
    assert_eq!(transcript(&t, &m.bob, &team_run).await.status, 200);
    followup(&t, &m.bob, &team_run)
        .await
        .assert_problem(403, "a member steers a team run without an edit grant");
    assert_eq!(
        share(&t, &m.robot, &team_run, "user:bob@a.test", "edit")
            .await
            .status,
        201
    );
    steering_allowed(
        &followup(&t, &m.bob, &team_run).await,
        "bob on the team run",
    );

    // Cancelling needs edit, and works for the creator.
    let cancelled = t
        .call(
            "POST",
            &format!("/agent/runs/{run}/cancel"),
            Some(&m.alice),
            None,
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_share_requests_say_what_is_wrong() {
    let t = TwoTeams::start().await;
    let m = members(&t).await;
    let (run, _) = local_run(&t, &m.alice, "task").await;
    let cases: [(&str, &str); 7] = [
        (r#"{"grantee":"team","role":"owner"}"#, "`owner`"),
        (r#"{"grantee":"public","role":"edit"}"#, "view-only"),
        (
            r#"{"grantee":"user:nobody@a.test","role":"view"}"#,
            "nobody@a.test",
        ),
        // Users of another team are unknown here.
        (
            r#"{"grantee":"user:carol@b.test","role":"view"}"#,
            "carol@b.test",
        ),
        (r#"{"grantee":"everyone","role":"view"}"#, "`everyone`"),
        (
            r#"{"grantee":"user:not-an-email","role":"view"}"#,
            "not-an-email",
        ),
        (r#"{"grantee":"team","role":"view","expires":1}"#, "expires"),
    ];
    let store = t.server().state().store.clone();
    store
        .create_user(NewUser {
            uid: hangar_protocol::RunId::generate().0,
            team_id: store.team_count().await.unwrap(),
            email: Some("carol@b.test".into()),
            display_name: "carol".into(),
            role: "member".into(),
        })
        .await
        .unwrap();
    for (body, needle) in cases {
        let reply = t
            .call(
                "POST",
                &format!("/agent/runs/{run}/shares"),
                Some(&m.alice),
                Some(body),
            )
            .await;
        reply.assert_problem(400, body);
        let detail = reply.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(needle), "{body}: {detail}");
    }
    t.call(
        "POST",
        &format!("/agent/runs/{run}/shares"),
        Some(&m.alice),
        Some("not json"),
    )
    .await
    .assert_problem(400, "not json");
    t.call(
        "DELETE",
        &format!("/agent/runs/{run}/shares/01NOSUCHSHARE"),
        Some(&m.alice),
        None,
    )
    .await
    .assert_problem(404, "unknown share");
    // Role defaults to view.
    let v = t
        .ok(
            "POST",
            &format!("/agent/runs/{run}/shares"),
            &m.alice,
            Some(r#"{"grantee":"user:bob@a.test"}"#),
        )
        .await;
    assert_eq!(v["role"], "view");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_links_work_on_public_routes_only() {
    let t = TwoTeams::start().await;
    let m = members(&t).await;
    let (run, _) = local_run(&t, &m.alice, "Fix the flaky test\nPROMPT-SECRET-4711").await;
    let link = share(&t, &m.alice, &run, "public", "view").await;
    assert_eq!(link.status, 201, "{}", link.text);
    let link = link.json();
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/s/hs_", t.url)), "{url}");
    let token = url.rsplit('/').next().unwrap().to_owned();
    assert_eq!(token.len(), 3 + 64);

    // No credential needed; only what is safe for the public.
    let public = t
        .call("GET", &format!("/public/sessions/{token}"), None, None)
        .await;
    assert_eq!(public.status, 200, "{}", public.text);
    let v = public.json();
    assert_eq!(v["run_id"], run.as_str());
    assert_eq!(v["title"], "Fix the flaky test");
    assert_eq!(v["state"], "INPROGRESS");
    assert_eq!(v["role"], "view");
    assert!(
        !public.text.contains("PROMPT-SECRET-4711"),
        "{}",
        public.text
    );
    assert!(v.get("prompt").is_none() && v.get("agent_config").is_none());
    let events = t
        .call(
            "GET",
            &format!("/public/sessions/{token}/events?follow=false"),
            None,
            None,
        )
        .await;
    assert_eq!(events.status, 200, "{}", events.text);
    assert!(events.content_type.starts_with("text/event-stream"));
    assert!(events.text.contains("event: end"), "{}", events.text);

    // The listing shows the link but never its token or URL.
    let listed = t
        .ok("GET", &format!("/agent/runs/{run}/shares"), &m.alice, None)
        .await;
    assert_eq!(listed["shares"][0]["grantee"], "public");
    assert!(listed["shares"][0].get("url").is_none());
    assert!(!listed.to_string().contains(&token));

    // The token is no credential anywhere else.
    for path in [
        format!("/agent/runs/{run}"),
        format!("/agent/runs/{run}/transcript"),
        format!("/agent/runs/{run}/events?follow=false"),
        format!("/agent/runs/{run}/shares"),
        "/agent/runs".to_owned(),
    ] {
        t.call("GET", &path, Some(&token), None)
            .await
            .assert_problem(401, &format!("public token on {path}"));
    }
    followup(&t, &token, &run)
        .await
        .assert_problem(401, "public token steering");

    // Revoked: both public routes are 404, like an unknown token.
    let id = link["id"].as_str().unwrap();
    assert_eq!(
        t.call(
            "DELETE",
            &format!("/agent/runs/{run}/shares/{id}"),
            Some(&m.alice),
            None
        )
        .await
        .status,
        204
    );
    for path in [
        format!("/public/sessions/{token}"),
        format!("/public/sessions/{token}/events?follow=false"),
    ] {
        t.call("GET", &path, None, None)
            .await
            .assert_problem(404, &format!("revoked link {path}"));
    }
}

/// Reads an SSE response until the server closes it; returns the body.
async fn read_until_closed(resp: reqwest::Response) -> String {
    let mut body = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => body.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => break,
        }
    }
    body
}

/// C2 in-process: revoking the grant (or the public link) a viewer streams
/// with closes the stream with a `revoked` frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_closes_open_streams() {
    let t = TwoTeams::start().await;
    let m = members(&t).await;
    let (run, _) = local_run(&t, &m.alice, "long task").await;
    let team = share(&t, &m.alice, &run, "team", "view").await.json();
    let link = share(&t, &m.alice, &run, "public", "view").await.json();
    let token = link["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();

    let member_stream = t
        .http
        .get(t.api(&format!("/agent/runs/{run}/events")))
        .bearer_auth(&m.bob)
        .send()
        .await
        .unwrap();
    assert_eq!(member_stream.status(), 200);
    let public_stream = t
        .http
        .get(t.api(&format!("/public/sessions/{token}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(public_stream.status(), 200);
    let member = tokio::spawn(read_until_closed(member_stream));
    let public = tokio::spawn(read_until_closed(public_stream));
    // Both streams are open (the run is in progress and they follow).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!member.is_finished() && !public.is_finished());

    for (what, id, task) in [
        ("team grant", team["id"].as_str().unwrap(), member),
        ("public link", link["id"].as_str().unwrap(), public),
    ] {
        let revoked_at = Instant::now();
        let r = t
            .call(
                "DELETE",
                &format!("/agent/runs/{run}/shares/{id}"),
                Some(&m.alice),
                None,
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        let body = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap_or_else(|_| panic!("the {what} stream stayed open after revocation"))
            .unwrap();
        println!(
            "C2 in-process: {what} stream closed {} ms after the revocation",
            revoked_at.elapsed().as_millis()
        );
        assert!(body.contains("event: revoked"), "{what}: {body}");
    }
}

/// A viewer whose own API key is revoked loses the open stream too (the
/// stream authenticates its viewer again every couple of seconds), and so
/// does one whose account is disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_viewers_key_closes_the_stream() {
    let t = TwoTeams::start().await;
    let m = members(&t).await;
    let (run, _) = local_run(&t, &m.alice, "long task").await;
    share(&t, &m.alice, &run, "team", "view").await;
    let open = || {
        t.http
            .get(t.api(&format!("/agent/runs/{run}/events")))
            .bearer_auth(&m.bob)
            .send()
    };
    let stream = open().await.unwrap();
    assert_eq!(stream.status(), 200);
    let task = tokio::spawn(read_until_closed(stream));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished());

    let keys = t.ok("GET", "/api-keys", &t.key_a, None).await;
    let bob_key = keys["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "bob")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = t
        .call(
            "POST",
            &format!("/api-keys/{bob_key}/expire"),
            Some(&t.key_a),
            None,
        )
        .await;
    assert!(r.status < 300, "{}", r.text);
    let revoked_at = Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the stream stayed open after its key was revoked")
        .unwrap();
    println!(
        "stream closed {} ms after its key was revoked",
        revoked_at.elapsed().as_millis()
    );
    assert!(body.contains("event: revoked"), "{body}");
    assert_eq!(open().await.unwrap().status(), 401);
}

/// The dashboard's cookie sessions follow the same rules as personal keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sessions_follow_the_same_rules() {
    use hangar_server::web::auth as web_auth;
    let t = TwoTeams::start().await;
    let m = members(&t).await;
    let (run, _) = local_run(&t, &m.alice, "alice's task").await;
    let store = t.server().state().store.clone();
    let carol = store
        .create_user(NewUser {
            uid: hangar_protocol::RunId::generate().0,
            team_id: 1,
            email: Some("carol@a.test".into()),
            display_name: "carol".into(),
            role: "member".into(),
        })
        .await
        .unwrap();
    let session = web_auth::open_session(store.as_ref(), &carol)
        .await
        .unwrap();
    let cookie = format!("{}={session}", web_auth::SESSION_COOKIE);
    let csrf = web_auth::csrf_token(&session);
    let get = |path: String| t.http.get(t.api(&path)).header("cookie", &cookie).send();
    let post = |path: String, body: serde_json::Value| {
        t.http
            .post(t.api(&path))
            .header("cookie", &cookie)
            .header(web_auth::CSRF_HEADER, &csrf)
            .json(&body)
            .send()
    };

    let r = get(format!("/agent/runs/{run}/transcript")).await.unwrap();
    assert_eq!(r.status(), 403, "carol reads an unshared session");
    share(&t, &m.alice, &run, "user:carol@a.test", "view").await;
    let r = get(format!("/agent/runs/{run}/transcript")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = post(
        format!("/agent/runs/{run}/followups"),
        serde_json::json!({"message": "steer"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "a viewer steers from the dashboard");
    let r = post(
        format!("/agent/runs/{run}/shares"),
        serde_json::json!({"grantee": "public"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "a viewer shares from the dashboard");

    share(&t, &m.alice, &run, "user:carol@a.test", "edit").await;
    let r = post(
        format!("/agent/runs/{run}/shares"),
        serde_json::json!({"grantee": "public"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "an editor shares from the dashboard");
    let r = post(
        format!("/agent/runs/{run}/followups"),
        serde_json::json!({"message": "steer"}),
    )
    .await
    .unwrap();
    assert!(
        ![401, 403, 404].contains(&r.status().as_u16()),
        "an editor steers from the dashboard: {}",
        r.status()
    );
}
