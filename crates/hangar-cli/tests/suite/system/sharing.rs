//! Session sharing with real processes (C2): a viewer streams a running run
//! over SSE, cannot steer it, and loses the stream within 2 s of the grant's
//! revocation; `--share` on `run-cloud`; public links; and, on PostgreSQL, a
//! revocation through one replica closing a stream served by another.

use crate::suite::common::{cluster_with, hangar_as, hangar_bin};
use futures::StreamExt;
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;
use std::time::{Duration, Instant};

/// The stream must close within C2's 2 s; this bound only keeps a broken
/// build from hanging the suite (the measured time is printed).
const CLOSE_BOUND: Duration = Duration::from_secs(20);

/// A model whose first turn runs for minutes, so the run stays in progress.
fn long_running_llm_turns() -> Vec<Turn> {
    vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo working; sleep 300", "timeout_ms": 600000}),
        ),
        Turn::text("done"),
    ]
}

/// `hangar …` as the admin, with `--output-format json`; returns the JSON.
async fn hangar_json(cluster: &TestCluster, args: &[&str]) -> serde_json::Value {
    let out = hangar(cluster, &[args, &["--output-format", "json"]].concat()).await;
    assert!(
        out.status.success(),
        "hangar {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "hangar {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn hangar(cluster: &TestCluster, args: &[&str]) -> std::process::Output {
    hangar_as(cluster, &cluster.api_key, args).await
}

/// A member of the team with a personal API key, made the way a person
/// would: an admin creates the account, the member signs in to the
/// dashboard and creates a key there.
async fn member_key(cluster: &TestCluster, email: &str) -> String {
    let admin = cluster.client();
    let password = "correct horse battery staple";
    let _: serde_json::Value = admin
        .post_json(
            "api/v1/users",
            &json!({"email": email, "password": password, "role": "member"}),
        )
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .post(format!("{}/login", cluster.url))
        .form(&[("email", email), ("password", password)])
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("hangar_session="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie from /login: {}", login.status()))
        .to_owned();
    let page = http
        .get(format!("{}/", cluster.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split(r#"name="csrf-token" content=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token on the dashboard page"))
        .to_owned();
    let key: serde_json::Value = http
        .post(format!("{}/api/v1/api-keys", cluster.url))
        .header("cookie", &cookie)
        .header("x-hangar-csrf", csrf)
        .json(&json!({"name": format!("{email} key")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    key["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {key}"))
        .to_owned()
}

/// An open SSE stream, read in the background.
struct Viewer {
    /// Everything received so far.
    body: std::sync::Arc<std::sync::Mutex<String>>,
    /// Finishes when the server closes the stream.
    done: tokio::task::JoinHandle<()>,
}

impl Viewer {
    async fn open(req: reqwest::RequestBuilder) -> Viewer {
        let resp = req
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "the stream was refused");
        let body = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = body.clone();
        let done = tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            while let Some(Ok(chunk)) = stream.next().await {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk));
            }
        });
        Viewer { body, done }
    }

    fn text(&self) -> String {
        self.body.lock().unwrap().clone()
    }

    /// Waits until the stream shows `needle` (it is live and delivering).
    async fn wait_for(&self, needle: &str) {
        let what = format!("`{needle}` on the stream");
        hangar_testkit::poll::until_ok(&what, Duration::from_secs(60), || {
            let text = self.text();
            if text.contains(needle) {
                return Ok(());
            }
            assert!(!self.done.is_finished(), "the stream closed early: {text}");
            Err(text)
        })
        .await;
    }

    /// Waits for the server to close the stream; returns how long it took.
    async fn closed_after(self, since: Instant) -> (Duration, String) {
        tokio::time::timeout(CLOSE_BOUND, self.done)
            .await
            .unwrap_or_else(|_| {
                panic!("the stream was still open {CLOSE_BOUND:?} after the revocation")
            })
            .unwrap();
        let text = self.body.lock().unwrap().clone();
        (since.elapsed(), text)
    }
}

async fn start_long_run(cluster: &TestCluster, host: &str) -> String {
    let run = cluster
        .client()
        .create_run(&RunAgentRequest {
            prompt: Some("work for a long time".into()),
            config: Some(AgentConfig {
                worker_host: Some(host.into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    cluster
        .wait_run(&run.run_id, Duration::from_secs(60), |r| {
            r.state == RunState::InProgress
        })
        .await
        .unwrap();
    run.run_id
}

#[tokio::test(flavor = "multi_thread")]
async fn c2_revoking_a_share_closes_the_viewers_stream_and_viewers_cannot_steer() {
    let llm = FakeLlm::start(long_running_llm_turns()).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("share-w", &[]).await.unwrap();
    let bob = member_key(&cluster, "bob@example.com").await;
    let run = start_long_run(&cluster, "share-w").await;
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}/api/v1/agent/runs/{run}{path}", cluster.url);

    // Not shared yet: bob sees the run exists, not its session.
    let r = http.get(api("")).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(api("/events"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());

    // The admin shares it with bob, view only, from the CLI.
    let granted = hangar_json(
        &cluster,
        &["run", "share", &run, "--with", "bob@example.com:view"],
    )
    .await;
    let share_id = granted[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(granted[0]["grantee"], "user:bob@example.com");
    let listed = hangar_json(&cluster, &["run", "shares", &run]).await;
    assert_eq!(listed["shares"][0]["id"], share_id.as_str());

    // Bob watches live: the tool call of the running agent arrives.
    let viewer = Viewer::open(http.get(api("/events")).bearer_auth(&bob)).await;
    viewer.wait_for("event: session").await;
    viewer.wait_for("tool_call").await;

    // A viewer cannot steer or cancel.
    let r = http
        .post(api("/followups"))
        .bearer_auth(&bob)
        .json(&json!({"message": "do something else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let problem: serde_json::Value = r.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("edit access"),
        "{problem}"
    );
    let r = http
        .post(api("/cancel"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Revoked from the CLI: the open stream closes (C2: within 2 s).
    let revoked_at = Instant::now();
    let out = hangar(&cluster, &["run", "unshare", &run, &share_id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (took, text) = viewer.closed_after(revoked_at).await;
    println!(
        "C2: the viewer's stream closed {} ms after `hangar run unshare` started",
        took.as_millis()
    );
    assert!(text.contains("event: revoked"), "{text}");
    let r = http
        .get(api("/events?follow=false"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "bob streams again after the revocation");
    let listed = hangar_json(&cluster, &["run", "shares", &run]).await;
    assert_eq!(listed["shares"], json!([]));

    // The run itself was never disturbed.
    let state = cluster.client().get_run(&run).await.unwrap().state;
    assert_eq!(state, RunState::InProgress);
    cluster.client().cancel_run(&run).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn run_cloud_share_flag_creates_grants_and_public_links() {
    let llm = FakeLlm::start(long_running_llm_turns()).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("share-w2", &[]).await.unwrap();

    // A malformed --share is refused before any run is created.
    let out = hangar(
        &cluster,
        &["agent", "run-cloud", "-p", "x", "--share", "public:edit"],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--share `public:edit`") && err.contains("view-only"),
        "{err}"
    );
    let runs = cluster.client().list_runs(&[]).await.unwrap();
    assert!(
        runs.runs.is_empty(),
        "a run was created despite the bad --share"
    );

    let created = hangar_json(
        &cluster,
        &[
            "agent",
            "run-cloud",
            "-p",
            "shared work",
            "--host",
            "share-w2",
            "--share",
            "team",
            "--share",
            "public:view",
        ],
    )
    .await;
    let run = created["run_id"].as_str().unwrap().to_owned();
    let shares = created["shares"].as_array().unwrap();
    assert_eq!(shares.len(), 2, "{created}");
    assert_eq!(shares[0]["grantee"], "team");
    assert_eq!(shares[0]["role"], "view");
    let url = shares[1]["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/s/hs_", cluster.url)), "{url}");
    let token = url.rsplit('/').next().unwrap().to_owned();
    cluster
        .wait_run(&run, Duration::from_secs(60), |r| {
            r.state == RunState::InProgress
        })
        .await
        .unwrap();

    // Anyone with the link watches, without credentials; the link is never
    // listed again.
    let http = reqwest::Client::new();
    let public = format!("{}/api/v1/public/sessions/{token}", cluster.url);
    let meta: serde_json::Value = http
        .get(&public)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["run_id"], run.as_str());
    assert_eq!(meta["title"], "shared work");
    let viewer = Viewer::open(http.get(format!("{public}/events"))).await;
    viewer.wait_for("tool_call").await;
    let listed = hangar_json(&cluster, &["run", "shares", &run]).await;
    assert!(!listed.to_string().contains(&token), "{listed}");
    // `run share` refuses what it cannot grant, naming the value.
    for (with, says) in [
        ("public:edit", "view-only"),
        ("bob", "neither"),
        (
            "nobody@example.com",
            "no user with email `nobody@example.com`",
        ),
    ] {
        let out = hangar(&cluster, &["run", "share", &run, "--with", with]).await;
        assert!(!out.status.success(), "--with {with} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "--with {with}: {err}");
    }
    let link_id = listed["shares"][1]["id"].as_str().unwrap().to_owned();

    let revoked_at = Instant::now();
    cluster.client().delete_share(&run, &link_id).await.unwrap();
    let (took, text) = viewer.closed_after(revoked_at).await;
    println!(
        "C2: the public link's stream closed {} ms after the revocation",
        took.as_millis()
    );
    assert!(text.contains("event: revoked"), "{text}");
    assert_eq!(http.get(&public).send().await.unwrap().status(), 404);
    cluster.client().cancel_run(&run).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn c2_revocation_through_one_replica_closes_streams_on_another() {
    let url = std::env::var("HANGAR_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("HANGAR_TEST_DATABASE_URL is not set: run `eval \"$(scripts/pg-test-env)\"` or scripts/test")
    });
    let schema = format!("hangar_share_{}", uuid::Uuid::new_v4().simple());
    let llm = FakeLlm::start(long_running_llm_turns()).await;
    let options = ClusterOptions {
        postgres: Some((url.clone(), schema.clone())),
        ..ClusterOptions::default()
    }
    .with_fake_llm(&llm.base_url());
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    let replica = cluster.start_replica("b").await.unwrap();
    cluster.start_worker("rep-w", &[]).await.unwrap();
    let run = start_long_run(&cluster, "rep-w").await;
    let link = cluster
        .client()
        .create_share(
            &run,
            &hangar_protocol::share::parse_share_spec("public:view").unwrap(),
        )
        .await
        .unwrap();
    let token = link.url.unwrap().rsplit('/').next().unwrap().to_owned();

    // Watched through replica B, revoked through replica A.
    let http = reqwest::Client::new();
    let viewer =
        Viewer::open(http.get(format!("{replica}/api/v1/public/sessions/{token}/events"))).await;
    viewer.wait_for("tool_call").await;
    let revoked_at = Instant::now();
    cluster.client().delete_share(&run, &link.id).await.unwrap();
    let (took, text) = viewer.closed_after(revoked_at).await;
    println!(
        "C2 across replicas: the stream on replica B closed {} ms after the revocation on A",
        took.as_millis()
    );
    assert!(text.contains("event: revoked"), "{text}");
    cluster.client().cancel_run(&run).await.unwrap();
    drop(cluster);

    let store = hangar_store::PostgresStore::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(store.pool())
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn tracked_local_run_applies_share_flags() {
    let llm = FakeLlm::start(vec![Turn::text("all done locally")]).await;
    let cluster = cluster_with(&llm).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();

    // A malformed value fails before anything is registered.
    let out = hangar(
        &cluster,
        &[
            "agent",
            "run",
            "-p",
            "x",
            "-C",
            dir,
            "--share",
            "team:admin",
        ],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown role `admin`"), "{err}");
    assert!(
        cluster
            .client()
            .list_runs(&[])
            .await
            .unwrap()
            .runs
            .is_empty()
    );

    let out = hangar(
        &cluster,
        &[
            "agent",
            "run",
            "-p",
            "tidy up",
            "-C",
            dir,
            "--model",
            "fake/test-model",
            "--share",
            "team:edit",
            "--share",
            "public:view",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Shared with team (edit)."), "{stdout}");
    let url = stdout
        .lines()
        .find_map(|l| l.split_once("Public link (view, anyone with it can watch): "))
        .map(|(_, url)| url.trim().to_owned())
        .unwrap_or_else(|| panic!("no public link printed: {stdout}"));
    assert!(url.starts_with(&format!("{}/s/hs_", cluster.url)), "{url}");
    // The link is printed before the transcript.
    assert!(
        stdout.find("Public link").unwrap() < stdout.find("all done locally").unwrap(),
        "{stdout}"
    );

    let runs = cluster.client().list_runs(&[]).await.unwrap().runs;
    assert_eq!(runs.len(), 1);
    let run = &runs[0].run_id;
    let listed = hangar_json(&cluster, &["run", "shares", run]).await;
    let grants: Vec<(String, String)> = listed["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["grantee"].as_str().unwrap().to_owned(),
                s["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        grants,
        vec![
            ("team".to_owned(), "edit".to_owned()),
            ("public".to_owned(), "view".to_owned())
        ]
    );
    // The public link replays the finished run.
    let token = url.rsplit('/').next().unwrap();
    let replay = reqwest::get(format!(
        "{}/api/v1/public/sessions/{token}/events?follow=false",
        cluster.url
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(replay.contains("all done locally"), "{replay}");
}
