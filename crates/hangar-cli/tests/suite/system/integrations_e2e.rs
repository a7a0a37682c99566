//! Slack, Linear and GitHub end to end, set up with the CLI as a team would
//! (`hangar user create`, `hangar secret create`, `hangar integration create
//! … --output-format json`), with a real server, worker and agent, a fake
//! model and the fake provider APIs of `hangar_testkit::fake_providers`:
//!
//! - a signed event starts a run, whose status message in the same thread,
//!   issue or pull request is posted with the run's link and edited as the
//!   run moves on, and whose result (the agent's answer, the link) is
//!   posted when it ends;
//! - a second mention in the same thread while the run works reaches the
//!   running agent as a follow-up (the model's next call has it).
//!
//! Refused, stale and replayed deliveries and the how-to reply to unlinked
//! users are in `hangar-server`'s `integrations_providers`.

use crate::suite::common::{cluster_with, hangar_as, hangar_bin};
use hangar_protocol::RunState;
use hangar_server::integrations::signature::{sign_hex, slack_signature};
use hangar_testkit::cluster::TestCluster;
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use hangar_testkit::fake_providers::{FakeGithub, FakeLinear, FakeSlack, LinearIssue, Posted};
use hangar_testkit::poll::{until_ok, within};
use serde_json::{Value, json};
use std::time::Duration;

const ANSWER: &str = "Fixed: parse() now checks for an empty header.";
const FOLLOW_UP: &str = "also add a regression test";
const HOOK_SECRET: &str = "provider-hook-secret-31";

fn now() -> i64 {
    hangar_protocol::Timestamp::now().unix_millis() / 1000
}

/// A model that works for a few seconds (a shell command), then answers.
async fn slow_llm() -> FakeLlm {
    FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": "sleep 4; echo checked"})),
        Turn::text(ANSWER),
    ])
    .await
}

/// `hangar ARGS` with `stdin`, as the cluster's admin; panics on failure.
async fn hangar_in(cluster: &TestCluster, args: &[&str], stdin: &str) -> String {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(hangar_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cluster.dir())
        .env("XDG_CONFIG_HOME", cluster.dir().join("cli-config"))
        .env("HANGAR_SERVER_URL", &cluster.url)
        .env("HANGAR_API_KEY", &cluster.api_key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hangar");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hangar {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Sets up the team as a new user would: Ann is a Hangar user, the API
/// token is a team secret, the integration routes its runs to worker `w1`.
/// Returns the integration's webhook URL.
async fn set_up(
    cluster: &TestCluster,
    secret: (&str, &str),
    create: &[&str],
    signing: &str,
) -> String {
    let out = hangar_as(
        cluster,
        &cluster.api_key,
        &["user", "create", "--email", "ann@acme.test"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hangar_in(cluster, &["secret", "create", secret.0], secret.1).await;
    let mut args = vec!["integration", "create"];
    args.extend_from_slice(create);
    args.extend_from_slice(&["--host", "w1", "--output-format", "json"]);
    let created: Value = serde_json::from_str(&hangar_in(cluster, &args, signing).await).unwrap();
    let url = created["webhook_url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}/integrations/", cluster.url)),
        "{url}"
    );
    url
}

async fn send(url: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.body(body.to_vec()).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Sends a signed event that must start a run; returns the run's id.
async fn started(url: &str, headers: &[(&str, String)], body: &[u8]) -> String {
    let (status, answer) = send(url, headers, body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("started")),
        "{answer}"
    );
    answer["run_id"].as_str().unwrap().to_owned()
}

/// Sends what `event(n)` makes (signed by `sign`) until the thread's run
/// takes it as a follow-up: a 409 means its agent has not started yet.
async fn follow_up(
    url: &str,
    sign: impl Fn(&[u8]) -> Vec<(&'static str, String)>,
    event: impl Fn(u32) -> Vec<u8>,
) {
    let mut n = 100;
    within(
        "the thread's run to take the follow-up",
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            n += 1;
            let body = event(n);
            let (status, answer) = send(url, &sign(&body), &body).await;
            match (status, answer["outcome"].as_str()) {
                (200, Some("followed_up")) => Ok(()),
                (409, _) => Err(answer),
                _ => panic!("follow-up answered {status}: {answer}"),
            }
        },
    )
    .await
    .unwrap();
}

/// Checks the thread after the run ended: one status message, edited from
/// its first state to done, and the result with the answer and the link.
async fn check_thread(posted: impl Fn() -> Vec<Posted>, thread: &str, run_id: &str) {
    let replies = until_ok("the result in the thread", Duration::from_secs(20), || {
        let all: Vec<Posted> = posted()
            .into_iter()
            .filter(|p| p.thread == thread)
            .collect();
        if all.iter().any(|p| p.text.contains(ANSWER)) {
            Ok(all)
        } else {
            Err(all)
        }
    })
    .await;
    let status = replies
        .iter()
        .find(|p| p.text.contains("Done"))
        .unwrap_or_else(|| panic!("no status message says Done: {replies:#?}"));
    assert!(
        status.text.contains(run_id),
        "the status links the run: {status:?}"
    );
    assert!(
        !status.edits.is_empty()
            && status
                .edits
                .iter()
                .any(|e| e.contains("Working on it") || e.contains("Queued")),
        "the status message was edited as the run moved on: {status:?}"
    );
    let result = replies.iter().find(|p| p.text.contains(ANSWER)).unwrap();
    assert!(
        result.text.contains(run_id),
        "the result links the run: {result:?}"
    );
    assert_eq!(
        replies.iter().filter(|p| p.text.contains(ANSWER)).count(),
        1,
        "the result is posted once: {replies:#?}"
    );
}

async fn finished(cluster: &TestCluster, llm: &FakeLlm, run_id: &str) {
    let done = cluster
        .wait_finished(run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    let requests = llm.requests();
    assert!(
        requests
            .iter()
            .skip(1)
            .any(|r| r.to_string().contains(FOLLOW_UP)),
        "the follow-up from the thread reached the agent's next model call"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_mention_runs_replies_in_the_thread_and_takes_a_follow_up() {
    let llm = slow_llm().await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("w1", &[]).await.unwrap();
    let slack = FakeSlack::start("xoxb-e2e").await;
    slack.add_user("UANN", Some("ann@acme.test"));
    let base = slack.api_base_url();
    let url = set_up(
        &cluster,
        ("SLACK_BOT", "xoxb-e2e"),
        &[
            "slack",
            "--signing-secret-stdin",
            "--bot-token-secret",
            "SLACK_BOT",
            "--api-base-url",
            &base,
        ],
        "slack-signing-e2e",
    )
    .await;
    let sign = |body: &[u8]| {
        let ts = now();
        vec![
            ("x-slack-request-timestamp", ts.to_string()),
            (
                "x-slack-signature",
                slack_signature(b"slack-signing-e2e", ts, body),
            ),
        ]
    };
    let mention = |n: u32, text: &str| {
        json!({"type": "event_callback", "event_id": format!("Ev{n}"), "event": {
            "type": "app_mention", "user": "UANN", "text": format!("<@U0HANGAR> {text}"),
            "channel": "C0DEV", "ts": format!("1765130000.{n:06}"), "thread_ts": "1765130000.000001"}})
        .to_string()
        .into_bytes()
    };
    let body = mention(1, "the parser crashes on empty headers");
    let run_id = started(&url, &sign(&body), &body).await;
    follow_up(&url, sign, |n| mention(n, FOLLOW_UP)).await;
    finished(&cluster, &llm, &run_id).await;
    check_thread(|| slack.posted(), "C0DEV:1765130000.000001", &run_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn linear_assignment_runs_comments_on_the_issue_and_takes_a_follow_up() {
    let llm = slow_llm().await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("w1", &[]).await.unwrap();
    let linear = FakeLinear::start("lin_api_e2e", "lin-agent", "hangar").await;
    linear.add_user("lin-ann", "Ann", Some("ann@acme.test"));
    linear.add_issue(LinearIssue {
        id: "iss-1".into(),
        identifier: "ENG-1".into(),
        title: "Parser crashes on empty headers".into(),
        description: "Stack trace attached.".into(),
        team: "ENG".into(),
    });
    let base = linear.api_base_url();
    let url = set_up(
        &cluster,
        ("LINEAR_KEY", "lin_api_e2e"),
        &[
            "linear",
            "--webhook-secret-stdin",
            "--api-key-secret",
            "LINEAR_KEY",
            "--linear-team",
            "ENG",
            "--api-base-url",
            &base,
        ],
        HOOK_SECRET,
    )
    .await;
    let sign = |body: &[u8]| {
        vec![
            (
                "linear-signature",
                sign_hex(HOOK_SECRET.as_bytes(), &[body]),
            ),
            ("linear-delivery", uuid::Uuid::new_v4().to_string()),
        ]
    };
    let assigned = json!({
        "action": "update", "type": "Issue", "actor": {"id": "lin-ann", "name": "Ann"},
        "data": {"id": "iss-1", "identifier": "ENG-1", "assigneeId": "lin-agent"},
        "updatedFrom": {"assigneeId": null}, "webhookTimestamp": now() * 1000
    })
    .to_string()
    .into_bytes();
    let run_id = started(&url, &sign(&assigned), &assigned).await;
    let run: Value = cluster
        .client()
        .get_json(&format!("api/v1/agent/runs/{run_id}"))
        .await
        .unwrap();
    assert_eq!(run["metadata"]["ticket_id"], "ENG-1", "{run}");
    let comment = |n: u32| {
        json!({
            "action": "create", "type": "Comment", "actor": {"id": "lin-ann", "name": "Ann"},
            "data": {"id": format!("c{n}"), "body": format!("@hangar {FOLLOW_UP}"), "issueId": "iss-1", "userId": "lin-ann"},
            "webhookTimestamp": now() * 1000
        })
        .to_string()
        .into_bytes()
    };
    follow_up(&url, sign, comment).await;
    finished(&cluster, &llm, &run_id).await;
    check_thread(|| linear.posted(), "iss-1", &run_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_mention_runs_comments_on_the_issue_and_takes_a_follow_up() {
    let llm = slow_llm().await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("w1", &[]).await.unwrap();
    let github = FakeGithub::with_token("ghp_e2e").await;
    github.add_user("ann", Some("ann@acme.test"));
    github.add_comment("acme/web#7", "bob", "I see it on every empty header too");
    let base = github.api_base_url();
    let url = set_up(
        &cluster,
        ("GH_TOKEN", "ghp_e2e"),
        &[
            "github",
            "--webhook-secret-stdin",
            "--token-secret",
            "GH_TOKEN",
            "--repo",
            "acme/web",
            "--api-base-url",
            &base,
        ],
        HOOK_SECRET,
    )
    .await;
    let sign = |body: &[u8]| {
        vec![
            (
                "x-hub-signature-256",
                format!("sha256={}", sign_hex(HOOK_SECRET.as_bytes(), &[body])),
            ),
            ("x-github-delivery", uuid::Uuid::new_v4().to_string()),
            ("x-github-event", "issue_comment".to_owned()),
        ]
    };
    let comment = |n: u32, text: &str| {
        json!({
            "action": "created", "repository": {"full_name": "acme/web"},
            "issue": {"number": 7, "title": "Parser crash", "body": "Crashes on empty headers."},
            "comment": {"id": n, "body": format!("@hangar {text}"), "user": {"login": "ann", "type": "User"},
                        "created_at": hangar_protocol::Timestamp::now().to_rfc3339()}
        })
        .to_string()
        .into_bytes()
    };
    let body = comment(1, "please fix this");
    let run_id = started(&url, &sign(&body), &body).await;
    follow_up(&url, sign, |n| comment(n, FOLLOW_UP)).await;
    finished(&cluster, &llm, &run_id).await;
    let prompt = llm.requests()[0].to_string();
    assert!(
        prompt.contains("I see it on every empty header too"),
        "the issue's comments are context: {prompt}"
    );
    check_thread(|| github.posted(), "acme/web#7", &run_id).await;
}
