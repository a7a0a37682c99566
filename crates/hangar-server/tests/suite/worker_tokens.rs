//! S8, worker credentials: a worker token connects only as the worker id or
//! under the pool it is bound to and is refused by every other route; a
//! personal key (even an admin's) never connects as a worker; a second
//! connection for a connected worker id is refused unless it brings the same
//! credential and the old connection is dead.

use crate::suite::common::TwoTeams;
use futures::{SinkExt, StreamExt};
use hangar_testkit::poll::eventually;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the worker socket as `worker_id` with `credential`: the socket, or
/// the HTTP status and body of the refusal.
async fn open_worker(
    t: &TwoTeams,
    worker_id: &str,
    credential: &str,
) -> Result<Socket, (u16, String)> {
    let mut url = t.ws_url(&format!("/selfhosted/worker/ws?worker_id={worker_id}"));
    url.set_scheme("ws").unwrap();
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {credential}")).unwrap(),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, _)) => {
            // As a Hangar worker does, so it registers at once.
            let hello = serde_json::json!({"type": "worker_hello", "data": {
                "version": "test", "backend": "test", "max_concurrent_tasks": 1}});
            ws.send(tokio_tungstenite::tungstenite::Message::Text(
                hello.to_string().into(),
            ))
            .await
            .unwrap();
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => Err((0, e.to_string())),
    }
}

/// Keeps reading a socket (so it answers the server's pings) until it ends.
fn keep_alive(mut ws: Socket) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} })
}

/// Creates a worker token of team A; answers `(id, secret)`.
async fn token(t: &TwoTeams, body: serde_json::Value) -> (String, String) {
    let created = t
        .ok("POST", "/worker-tokens", &t.key_a, Some(&body.to_string()))
        .await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    )
}

async fn listed(t: &TwoTeams, worker_id: &str) -> bool {
    let w = t.ok("GET", "/workers", &t.key_a, None).await;
    w["workers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["worker_id"] == worker_id)
}

async fn wait_listed(t: &TwoTeams, worker_id: &str) {
    let what = format!("worker `{worker_id}` to register");
    eventually(&what, Duration::from_secs(10), || async {
        listed(t, worker_id).await.then_some(())
    })
    .await;
}

async fn wait_unlisted(t: &TwoTeams, worker_id: &str) {
    let what = format!("worker `{worker_id}` to disconnect");
    eventually(&what, Duration::from_secs(10), || async {
        (!listed(t, worker_id).await).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_worker_token_connects_only_under_its_binding() {
    // A short lost timeout: the registry refreshes (and checks credentials) every 0.5 s.
    let t = TwoTeams::start_with(|c| c.worker_lost_timeout = Duration::from_secs(2)).await;
    let (exact_id, exact) = token(&t, serde_json::json!({"worker_id": "gpu-box-1"})).await;
    let (_, pool) = token(&t, serde_json::json!({"pool": "ci-", "name": "CI pool"})).await;
    assert!(exact.starts_with("hw_"), "{exact}");

    // Its own id (exact) or any id under its prefix (pool) connects.
    let ws = open_worker(&t, "gpu-box-1", &exact).await.unwrap();
    let _alive = keep_alive(ws);
    wait_listed(&t, "gpu-box-1").await;
    let ws = open_worker(&t, "ci-7", &pool).await.unwrap();
    let _alive_too = keep_alive(ws);
    wait_listed(&t, "ci-7").await;

    // Anything else is a 403 that names the binding.
    for (id, credential, binding) in [
        ("gpu-box-10", &exact, "gpu-box-1"),
        ("gpu-box-2", &exact, "gpu-box-1"),
        ("gpu-box-1", &pool, "ci-"),
        ("cix", &pool, "ci-"),
    ] {
        let (status, body) = open_worker(&t, id, credential).await.err().unwrap();
        assert_eq!(status, 403, "{id}: {body}");
        assert!(body.contains(binding), "{id}: {body}");
        assert!(body.contains("hangar worker token create"), "{body}");
    }
    // Reserved ids stay reserved, even under a matching pool.
    let (_, local) = token(&t, serde_json::json!({"pool": "lo"})).await;
    let (status, body) = open_worker(&t, "local:unmanaged", &local)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("reserved"), "{body}");

    // Listing shows the binding and the last use, never a secret.
    let list = t.ok("GET", "/worker-tokens", &t.key_a, None).await;
    let tokens = list["worker_tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3, "{list}");
    assert!(
        !list.to_string().contains(&exact),
        "a secret is listed: {list}"
    );
    assert!(tokens.iter().all(|t| t.get("token").is_none()), "{list}");
    let first = &tokens[0];
    assert_eq!(first["worker_id"], "gpu-box-1", "{list}");
    assert_eq!(first["name"], "worker gpu-box-1", "{list}");
    assert!(first["last_used_at"].is_string(), "{list}");
    assert_eq!(tokens[1]["pool"], "ci-", "{list}");
    assert_eq!(tokens[1]["name"], "CI pool", "{list}");

    // Expired: its connected worker is cut off, and it is refused from then
    // on with a 401 that says so; the pool's worker stays.
    t.ok(
        "POST",
        &format!("/worker-tokens/{exact_id}/expire"),
        &t.key_a,
        None,
    )
    .await;
    wait_unlisted(&t, "gpu-box-1").await;
    assert!(
        listed(&t, "ci-7").await,
        "another token's worker was cut off"
    );
    let (status, body) = open_worker(&t, "gpu-box-1", &exact).await.err().unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");

    // Creating one takes exactly one valid binding, and an admin.
    for (body, want) in [
        (serde_json::json!({}), "give `worker_id` or `pool`"),
        (
            serde_json::json!({"worker_id": "a", "pool": "b"}),
            "not both",
        ),
        (serde_json::json!({"worker_id": "local:x"}), "reserved"),
        (serde_json::json!({"pool": "local:"}), "reserved"),
        (serde_json::json!({"worker_id": "has space"}), "invalid"),
        (serde_json::json!({"pool": ""}), "invalid"),
    ] {
        let r = t
            .call(
                "POST",
                "/worker-tokens",
                Some(&t.key_a),
                Some(&body.to_string()),
            )
            .await;
        r.assert_problem(400, &format!("creating {body}"));
        assert!(r.text.contains(want), "{body}: {}", r.text);
    }
    let member = t.member("member").await.1;
    for (method, path, body) in [
        ("POST", "/worker-tokens", Some(r#"{"worker_id":"mine"}"#)),
        ("GET", "/worker-tokens", None),
        ("POST", &*format!("/worker-tokens/{exact_id}/expire"), None),
    ] {
        t.call(method, path, Some(&member), body)
            .await
            .assert_problem(403, &format!("a member: {method} {path}"));
    }
    // Another team's token is a 404 to team B.
    t.call(
        "POST",
        &format!("/worker-tokens/{exact_id}/expire"),
        Some(&t.key_b),
        None,
    )
    .await
    .assert_problem(404, "team B expiring team A's token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_a_worker_token_cannot_call_the_rest_api() {
    let t = TwoTeams::start().await;
    let credential = t.worker_token("rest-caller").await;
    let mut checked = 0;
    for (method, path, who) in crate::suite::roles::roles_table() {
        if who.starts_with("anyone") || path == "/selfhosted/worker/ws" {
            continue;
        }
        let url = path
            .replace("{runId}", "01JNOTAREALRUN0000000000")
            .replace(['{', '}'], "");
        let body = matches!(method.as_str(), "POST" | "PUT" | "PATCH").then_some("{}");
        let r = t.call(&method, &url, Some(&credential), body).await;
        r.assert_problem(403, &format!("a worker token on {method} {path}"));
        assert!(
            r.text.contains("worker token") && r.text.contains("selfhosted/worker/ws"),
            "{method} {path}: {}",
            r.text
        );
        checked += 1;
    }
    assert!(checked > 40, "only {checked} routes checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_an_admin_personal_key_cannot_connect_as_a_worker() {
    let t = TwoTeams::start().await;
    // The bootstrap key is the admin's personal key.
    let (status, body) = open_worker(&t, "build-box", &t.key_a).await.err().unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("personal API key"), "{body}");
    assert!(body.contains("hangar worker token create"), "{body}");
    // An admin's team key (no user) connects as any id: the documented
    // oz-agent-worker compatibility; a member cannot create one.
    let team_key = t
        .ok(
            "POST",
            "/api-keys",
            &t.key_a,
            Some(r#"{"name":"oz-agent-worker","team":true}"#),
        )
        .await;
    let team_key = team_key["key"].as_str().unwrap().to_owned();
    let ws = open_worker(&t, "oz-box", &team_key).await.unwrap();
    let _alive = keep_alive(ws);
    wait_listed(&t, "oz-box").await;
    let member = t.member("member").await.1;
    let r = t
        .call(
            "POST",
            "/api-keys",
            Some(&member),
            Some(r#"{"name":"sneaky","team":true}"#),
        )
        .await;
    r.assert_problem(403, "a member creating a team key");
    // The member's own key is personal: refused as well.
    let (status, body) = open_worker(&t, "build-box", &member).await.err().unwrap();
    assert_eq!(status, 403, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_a_second_connection_for_a_connected_worker_is_refused() {
    let t = TwoTeams::start_with(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.read_timeout = Duration::from_secs(30);
    })
    .await;
    let (_, first) = token(&t, serde_json::json!({"worker_id": "build-box"})).await;
    let (_, other) = token(&t, serde_json::json!({"worker_id": "build-box"})).await;
    let (_, pool) = token(&t, serde_json::json!({"pool": "build-"})).await;

    let ws = open_worker(&t, "build-box", &first).await.unwrap();
    let alive = keep_alive(ws);
    wait_listed(&t, "build-box").await;

    // Another credential, even one bound to this very id: 409.
    for credential in [&other, &pool] {
        let (status, body) = open_worker(&t, "build-box", credential)
            .await
            .err()
            .unwrap();
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("another credential"), "{body}");
    }
    // The same credential while the old connection answers its pings: 409 too.
    let (status, body) = open_worker(&t, "build-box", &first).await.err().unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("alive"), "{body}");

    // The old socket closes: the id is free again.
    alive.abort();
    let _ = alive.await;
    wait_unlisted(&t, "build-box").await;

    // A connection that goes silent (a network cut: its socket stays open,
    // nothing answers the pings)...
    let mut silent = open_worker(&t, "build-box", &first).await.unwrap();
    wait_listed(&t, "build-box").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // ...is still no opening for another credential,
    let (status, body) = open_worker(&t, "build-box", &other).await.err().unwrap();
    assert_eq!(status, 409, "{body}");
    // but its own worker, reconnecting with the same credential, gets back in
    // promptly, and the dead connection is closed.
    let started = Instant::now();
    let back = open_worker(&t, "build-box", &first).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the reconnection took {:?}",
        started.elapsed()
    );
    let back = keep_alive(back);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the dead connection was left open");
    // The reconnected worker holds the id now.
    wait_listed(&t, "build-box").await;
    let (status, body) = open_worker(&t, "build-box", &first).await.err().unwrap();
    assert_eq!(status, 409, "{body}");
    back.abort();
}

/// What another replica would have written for a worker it holds.
fn held_elsewhere(credential_id: &str, heard_ago_ms: i64) -> hangar_store::WorkerPresence {
    let now = hangar_protocol::Timestamp::now().unix_millis();
    hangar_store::WorkerPresence {
        team_id: 1,
        worker_id: "roamer".into(),
        replica_id: "replica-elsewhere".into(),
        connection_id: "replica-elsewhere:1".into(),
        backend: "direct".into(),
        version: "test".into(),
        capacity: 1,
        running_tasks: 0,
        draining: false,
        labels: Default::default(),
        connected: true,
        connected_at: now - 60_000,
        last_seen: now,
        credential_id: Some(credential_id.into()),
        heard_at: Some(now - heard_ago_ms),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_a_worker_connected_through_another_replica_is_not_taken_over() {
    let t = TwoTeams::start_with(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.worker_lost_timeout = Duration::from_secs(2);
    })
    .await;
    let (id, mine) = token(&t, serde_json::json!({"worker_id": "roamer"})).await;
    let (_, other) = token(&t, serde_json::json!({"worker_id": "roamer"})).await;
    let store = t.store();

    // Held by a live replica, heard from just now: no credential gets in,
    // not even the same one.
    store.upsert_worker(&held_elsewhere(&id, 0)).await.unwrap();
    let (status, body) = open_worker(&t, "roamer", &other).await.err().unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("another credential"), "{body}");
    let (status, body) = open_worker(&t, "roamer", &mine).await.err().unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("another server replica"), "{body}");

    // The worker went silent there (a network cut): its own credential gets
    // back in through this replica; another credential still does not.
    store
        .upsert_worker(&held_elsewhere(&id, 5_000))
        .await
        .unwrap();
    let (status, _) = open_worker(&t, "roamer", &other).await.err().unwrap();
    assert_eq!(status, 409);
    let ws = open_worker(&t, "roamer", &mine).await.unwrap();
    let _alive = keep_alive(ws);
    eventually(
        "the worker registered on this replica",
        Duration::from_secs(10),
        || async {
            let w = t.ok("GET", "/workers", &t.key_a, None).await;
            w["workers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["worker_id"] == "roamer")
                .filter(|r| r["replica_id"] != "replica-elsewhere")
                .map(|_| ())
        },
    )
    .await;
}
