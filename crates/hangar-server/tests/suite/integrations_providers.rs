//! Slack, Linear and GitHub events against a real server and the fake
//! provider APIs of `hangar_testkit::fake_providers`: each provider's
//! signature scheme (scenario C4: a tampered body, a stale time and a
//! replayed delivery are each refused or de-duplicated, and start no second
//! run), the reply in the right thread with the run's link, the how-to
//! reply to someone who is not a Hangar user, Slack's URL verification and
//! a GitHub App's installation token scoped to the repository.
//!
//! These runs stay queued (no worker): the end-to-end tests with a real
//! worker and agent are in `hangar-cli`'s `system::integrations_e2e`.

use crate::suite::common::{MODEL, TwoTeams};
use hangar_server::integrations::signature::{sign_hex, slack_signature};
use hangar_testkit::fake_providers::{FakeGithub, FakeLinear, FakeSlack, LinearIssue, Posted};
use hangar_testkit::poll::until_ok;
use serde_json::{Value, json};
use std::time::Duration;

const SIGNING: &str = "slack-signing-9c1e";
const BOT: &str = "xoxb-test-token";
const HOOK: &str = "whsec-provider-77";
const LINEAR_KEY: &str = "lin_api_test";
const PAT: &str = "ghp_testtoken";

fn now() -> i64 {
    hangar_protocol::Timestamp::now().unix_millis() / 1000
}

async fn secret(t: &TwoTeams, name: &str, value: &str) {
    let body = json!({"name": name, "value": value}).to_string();
    t.ok("POST", "/secrets", &t.key_a, Some(&body)).await;
}

/// Creates an integration of team A; returns `(id, webhook_url)`.
async fn integration(
    t: &TwoTeams,
    kind: &str,
    secret_value: &str,
    settings: Value,
) -> (String, String) {
    let mut settings = settings;
    settings["agent_config"] = json!({"model_id": MODEL});
    let body = json!({"kind": kind, "name": kind, "secret": secret_value, "settings": settings});
    let created = t
        .ok("POST", "/integrations", &t.key_a, Some(&body.to_string()))
        .await;
    let url = created["webhook_url"].as_str().unwrap().to_owned();
    (created["id"].as_str().unwrap().to_owned(), url)
}

async fn runs(t: &TwoTeams) -> Vec<Value> {
    let list = t.ok("GET", "/agent/runs?limit=100", &t.key_a, None).await;
    list["runs"].as_array().cloned().unwrap_or_default()
}

async fn post(t: &TwoTeams, url: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut req = t.http.post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.body(body.to_vec()).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until `posted()` holds a message of `thread` that contains `needle`.
async fn reply_in(posted: impl Fn() -> Vec<Posted>, thread: &str, needle: &str) -> Posted {
    until_ok(
        &format!("a reply containing `{needle}` in {thread}"),
        Duration::from_secs(10),
        || {
            let all = posted();
            all.iter()
                .find(|p| p.thread == thread && p.text.contains(needle))
                .cloned()
                .ok_or(all)
        },
    )
    .await
}

// ---------------------------------------------------------------- Slack

fn slack_mention(event_id: &str, user: &str, text: &str, thread_ts: Option<&str>) -> Vec<u8> {
    let mut event = json!({
        "type": "app_mention", "user": user, "text": text,
        "channel": "C0DEV", "ts": "1765130000.000200", "event_ts": "1765130000.000200"
    });
    if let Some(ts) = thread_ts {
        event["thread_ts"] = json!(ts);
    }
    json!({"type": "event_callback", "team_id": "T1", "api_app_id": "A1",
           "event_id": event_id, "event_time": now(), "event": event})
    .to_string()
    .into_bytes()
}

fn slack_headers(body: &[u8], ts: i64) -> Vec<(&'static str, String)> {
    vec![
        ("x-slack-request-timestamp", ts.to_string()),
        (
            "x-slack-signature",
            slack_signature(SIGNING.as_bytes(), ts, body),
        ),
    ]
}

async fn slack_setup(t: &TwoTeams) -> (FakeSlack, String) {
    let slack = FakeSlack::start(BOT).await;
    t.member("ann").await;
    slack.add_user("UANN", Some("ann@a.test"));
    slack.add_user("UBOB", Some("bob@elsewhere.test"));
    secret(t, "SLACK_BOT", BOT).await;
    let (_, url) = integration(
        t,
        "slack",
        SIGNING,
        json!({"bot_token_secret": "SLACK_BOT", "api_base_url": slack.api_base_url()}),
    )
    .await;
    (slack, url)
}

#[tokio::test]
async fn slack_url_verification_answers_the_challenge_once_signed() {
    let t = TwoTeams::start().await;
    let (_slack, url) = slack_setup(&t).await;
    let body = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, answer) = post(&t, &url, &slack_headers(body, now()), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    let (status, _) = post(&t, &url, &slack_headers(b"{}", now()), body).await;
    assert_eq!(
        status, 401,
        "a challenge signed over another body is refused"
    );
}

#[tokio::test]
async fn c4_slack_signed_mention_starts_one_run_and_replies_in_its_thread() {
    let t = TwoTeams::start().await;
    let (slack, url) = slack_setup(&t).await;
    slack.add_message(
        "C0DEV",
        "1765129000.000100",
        "UBOB",
        "prod is down since 10:02",
        "1765129000.000100",
    );
    let body = slack_mention(
        "Ev1",
        "UANN",
        "<@U0HANGAR> look at the logs",
        Some("1765129000.000100"),
    );
    let (status, answer) = post(&t, &url, &slack_headers(&body, now()), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "started", "{answer}");
    let run_id = answer["run_id"].as_str().unwrap();
    let runs = runs(&t).await;
    assert_eq!(runs.len(), 1);
    let run = t
        .ok("GET", &format!("/agent/runs/{run_id}"), &t.key_a, None)
        .await;
    assert_eq!(run["source"], "SLACK");
    let prompt = run["prompt"].as_str().unwrap_or_default();
    assert!(
        prompt.contains("prod is down since 10:02"),
        "thread context missing: {prompt}"
    );
    assert!(prompt.contains("look at the logs"), "{prompt}");
    // The status message is in the thread, with the run's link.
    let status_msg = reply_in(|| slack.posted(), "C0DEV:1765129000.000100", run_id).await;
    assert!(status_msg.text.contains("Queued"), "{status_msg:?}");
    assert!(slack.calls().contains(&"users.info".to_owned()));
}

#[tokio::test]
async fn c4_slack_tampered_body_is_refused_and_starts_no_run() {
    let t = TwoTeams::start().await;
    let (slack, url) = slack_setup(&t).await;
    let body = slack_mention("Ev2", "UANN", "<@U0HANGAR> deploy", None);
    let headers = slack_headers(&body, now());
    let tampered = String::from_utf8(body)
        .unwrap()
        .replace("deploy", "rm -rf")
        .into_bytes();
    let (status, answer) = post(&t, &url, &headers, &tampered).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("signature"),
        "{answer}"
    );
    assert!(runs(&t).await.is_empty());
    assert!(
        slack.calls().is_empty(),
        "nothing is read or posted for a refused request"
    );
}

#[tokio::test]
async fn c4_slack_stale_timestamp_is_refused_and_starts_no_run() {
    let t = TwoTeams::start().await;
    let (_slack, url) = slack_setup(&t).await;
    let body = slack_mention("Ev3", "UANN", "<@U0HANGAR> deploy", None);
    let old = now() - 301;
    let (status, answer) = post(&t, &url, &slack_headers(&body, old), &body).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("stale"),
        "{answer}"
    );
    assert!(runs(&t).await.is_empty());
}

#[tokio::test]
async fn c4_slack_replayed_or_retried_event_is_deduplicated() {
    let t = TwoTeams::start().await;
    let (_slack, url) = slack_setup(&t).await;
    let body = slack_mention("Ev4", "UANN", "<@U0HANGAR> deploy", None);
    let headers = slack_headers(&body, now());
    let (status, first) = post(&t, &url, &headers, &body).await;
    assert_eq!(
        (status, first["outcome"].as_str()),
        (200, Some("started")),
        "{first}"
    );
    // The same request again (a replay), and Slack's retry of the same
    // event (a new timestamp and signature, the same event_id).
    let (status, replay) = post(&t, &url, &headers, &body).await;
    assert_eq!(
        (status, replay["outcome"].as_str()),
        (200, Some("duplicate")),
        "{replay}"
    );
    let (status, retry) = post(&t, &url, &slack_headers(&body, now() + 1), &body).await;
    assert_eq!(
        (status, retry["outcome"].as_str()),
        (200, Some("duplicate")),
        "{retry}"
    );
    assert_eq!(runs(&t).await.len(), 1);
}

#[tokio::test]
async fn slack_unlinked_user_gets_the_howto_reply_and_no_run() {
    let t = TwoTeams::start().await;
    let (slack, url) = slack_setup(&t).await;
    let body = slack_mention("Ev5", "UBOB", "<@U0HANGAR> deploy", None);
    let (status, answer) = post(&t, &url, &slack_headers(&body, now()), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("unlinked")),
        "{answer}"
    );
    let reply = reply_in(
        || slack.posted(),
        "C0DEV:1765130000.000200",
        "hangar user create",
    )
    .await;
    assert!(reply.text.contains("bob@elsewhere.test"), "{reply:?}");
    assert!(runs(&t).await.is_empty());
}

#[tokio::test]
async fn slack_channels_outside_the_list_and_bot_messages_start_nothing() {
    let t = TwoTeams::start().await;
    let slack = FakeSlack::start(BOT).await;
    secret(&t, "SLACK_BOT", BOT).await;
    let (_, url) = integration(
        &t,
        "slack",
        SIGNING,
        json!({"bot_token_secret": "SLACK_BOT", "api_base_url": slack.api_base_url(), "channels": ["C0OPS"]}),
    )
    .await;
    let body = slack_mention("Ev6", "UANN", "<@U0HANGAR> deploy", None);
    let (status, answer) = post(&t, &url, &slack_headers(&body, now()), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("ignored")),
        "{answer}"
    );
    assert!(runs(&t).await.is_empty());
}

// ---------------------------------------------------------------- Linear

fn linear_assigned(issue: &str, actor: &str, ts_ms: i64) -> Vec<u8> {
    json!({
        "action": "update", "type": "Issue", "createdAt": "2026-12-07T18:00:00.000Z",
        "actor": {"id": actor, "name": "Ann", "type": "user"},
        "data": {"id": issue, "identifier": "ENG-7", "title": "Flaky login test", "assigneeId": "lin-agent", "teamId": "t1"},
        "updatedFrom": {"assigneeId": null},
        "url": "https://linear.app/acme/issue/ENG-7",
        "organizationId": "org1", "webhookTimestamp": ts_ms, "webhookId": "wh1"
    })
    .to_string()
    .into_bytes()
}

fn linear_headers(body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        ("linear-signature", sign_hex(HOOK.as_bytes(), &[body])),
        ("linear-delivery", delivery.to_owned()),
        ("linear-event", "Issue".to_owned()),
    ]
}

async fn linear_setup(t: &TwoTeams) -> (FakeLinear, String) {
    let linear = FakeLinear::start(LINEAR_KEY, "lin-agent", "hangar").await;
    t.member("ann").await;
    linear.add_user("lin-ann", "Ann", Some("ann@a.test"));
    linear.add_user("lin-bob", "Bob", Some("bob@elsewhere.test"));
    linear.add_issue(LinearIssue {
        id: "iss-7".into(),
        identifier: "ENG-7".into(),
        title: "Flaky login test".into(),
        description: "login_test fails one run in five".into(),
        team: "ENG".into(),
    });
    secret(t, "LINEAR_KEY", LINEAR_KEY).await;
    let (_, url) = integration(
        t,
        "linear",
        HOOK,
        json!({"api_key_secret": "LINEAR_KEY", "api_base_url": linear.api_base_url(), "linear_teams": ["ENG"]}),
    )
    .await;
    (linear, url)
}

#[tokio::test]
async fn c4_linear_assignment_starts_one_run_with_ticket_metadata_and_comments() {
    let t = TwoTeams::start().await;
    let (linear, url) = linear_setup(&t).await;
    let body = linear_assigned("iss-7", "lin-ann", now() * 1000);
    let (status, answer) = post(&t, &url, &linear_headers(&body, "d-1"), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("started")),
        "{answer}"
    );
    let run_id = answer["run_id"].as_str().unwrap();
    let run = t
        .ok("GET", &format!("/agent/runs/{run_id}"), &t.key_a, None)
        .await;
    assert_eq!(run["source"], "LINEAR");
    assert_eq!(run["metadata"]["ticket_id"], "ENG-7", "{run}");
    assert_eq!(run["metadata"]["ticket_source"], "linear", "{run}");
    assert!(
        run["prompt"]
            .as_str()
            .unwrap()
            .contains("login_test fails one run in five")
    );
    reply_in(|| linear.posted(), "iss-7", run_id).await;
}

#[tokio::test]
async fn c4_linear_tampered_body_is_refused_and_starts_no_run() {
    let t = TwoTeams::start().await;
    let (linear, url) = linear_setup(&t).await;
    let body = linear_assigned("iss-7", "lin-ann", now() * 1000);
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("Flaky", "Other")
        .into_bytes();
    let (status, answer) = post(&t, &url, &linear_headers(&body, "d-2"), &tampered).await;
    assert_eq!(status, 401, "{answer}");
    assert!(runs(&t).await.is_empty());
    assert!(linear.posted().is_empty());
}

#[tokio::test]
async fn c4_linear_stale_timestamp_is_refused_and_starts_no_run() {
    let t = TwoTeams::start().await;
    let (linear, url) = linear_setup(&t).await;
    // Signed correctly, but its webhookTimestamp is six minutes old.
    let stale = linear_assigned("iss-7", "lin-ann", (now() - 360) * 1000);
    let (status, answer) = post(&t, &url, &linear_headers(&stale, "d-3"), &stale).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("stale"),
        "{answer}"
    );
    assert!(runs(&t).await.is_empty());
    assert!(linear.posted().is_empty());
}

#[tokio::test]
async fn c4_linear_replayed_delivery_is_deduplicated() {
    let t = TwoTeams::start().await;
    let (_linear, url) = linear_setup(&t).await;
    let body = linear_assigned("iss-7", "lin-ann", now() * 1000);
    let headers = linear_headers(&body, "d-4");
    let (status, first) = post(&t, &url, &headers, &body).await;
    assert_eq!(
        (status, first["outcome"].as_str()),
        (200, Some("started")),
        "{first}"
    );
    let (status, replay) = post(&t, &url, &headers, &body).await;
    assert_eq!(
        (status, replay["outcome"].as_str()),
        (200, Some("duplicate")),
        "{replay}"
    );
    // The same delivery id signed over a changed body is a replay too.
    let again = linear_assigned("iss-7", "lin-ann", now() * 1000 + 1);
    let (status, replay) = post(&t, &url, &linear_headers(&again, "d-4"), &again).await;
    assert_eq!(
        (status, replay["outcome"].as_str()),
        (200, Some("duplicate")),
        "{replay}"
    );
    assert_eq!(runs(&t).await.len(), 1);
}

#[tokio::test]
async fn linear_unlinked_user_gets_the_howto_comment() {
    let t = TwoTeams::start().await;
    let (linear, url) = linear_setup(&t).await;
    let body = linear_assigned("iss-7", "lin-bob", now() * 1000);
    let (status, answer) = post(&t, &url, &linear_headers(&body, "d-6"), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("unlinked")),
        "{answer}"
    );
    let reply = reply_in(|| linear.posted(), "iss-7", "hangar user create").await;
    assert!(reply.text.contains("bob@elsewhere.test"), "{reply:?}");
    assert!(runs(&t).await.is_empty());
}

// ---------------------------------------------------------------- GitHub

fn github_comment(login: &str, text: &str, created_at: &str) -> Vec<u8> {
    json!({
        "action": "created",
        "repository": {"full_name": "acme/web"},
        "installation": {"id": 42},
        "issue": {"number": 12, "title": "Crash on save", "body": "Saving a draft crashes", "html_url": "https://github.com/acme/web/issues/12"},
        "comment": {"id": 1, "body": text, "user": {"login": login, "type": "User"},
                    "created_at": created_at, "html_url": "https://github.com/acme/web/issues/12#issuecomment-1"},
        "sender": {"login": login}
    })
    .to_string()
    .into_bytes()
}

fn github_headers(body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "x-hub-signature-256",
            format!("sha256={}", sign_hex(HOOK.as_bytes(), &[body])),
        ),
        ("x-github-delivery", delivery.to_owned()),
        ("x-github-event", "issue_comment".to_owned()),
    ]
}

fn rfc3339(secs_ago: i64) -> String {
    hangar_protocol::Timestamp::from_unix_millis((now() - secs_ago) * 1000).to_rfc3339()
}

async fn github_setup(t: &TwoTeams) -> (FakeGithub, String) {
    let github = FakeGithub::with_token(PAT).await;
    t.member("ann").await;
    github.add_user("ann", Some("ann@a.test"));
    github.add_user("bob", None);
    secret(t, "GH_TOKEN", PAT).await;
    let (_, url) = integration(
        t,
        "github",
        HOOK,
        json!({"token_secret": "GH_TOKEN", "api_base_url": github.api_base_url(), "repos": ["acme/web"]}),
    )
    .await;
    (github, url)
}

#[tokio::test]
async fn c4_github_mention_starts_one_run_and_comments_on_the_issue() {
    let t = TwoTeams::start().await;
    let (github, url) = github_setup(&t).await;
    let body = github_comment("ann", "@hangar please fix this", &rfc3339(0));
    let (status, answer) = post(&t, &url, &github_headers(&body, "g-1"), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("started")),
        "{answer}"
    );
    let run_id = answer["run_id"].as_str().unwrap();
    let run = t
        .ok("GET", &format!("/agent/runs/{run_id}"), &t.key_a, None)
        .await;
    assert_eq!(run["source"], "GITHUB_WEBHOOK");
    assert!(
        run["prompt"]
            .as_str()
            .unwrap()
            .contains("Saving a draft crashes")
    );
    reply_in(|| github.posted(), "acme/web#12", run_id).await;
}

#[tokio::test]
async fn c4_github_tampered_body_is_refused_and_starts_no_run() {
    let t = TwoTeams::start().await;
    let (github, url) = github_setup(&t).await;
    let body = github_comment("ann", "@hangar please fix this", &rfc3339(0));
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("fix this", "delete main")
        .into_bytes();
    let (status, answer) = post(&t, &url, &github_headers(&body, "g-2"), &tampered).await;
    assert_eq!(status, 401, "{answer}");
    assert!(runs(&t).await.is_empty());
    assert!(github.posted().is_empty());
}

#[tokio::test]
async fn c4_github_stale_comment_is_refused_and_starts_no_run() {
    let t = TwoTeams::start().await;
    let (github, url) = github_setup(&t).await;
    // Signed correctly, but about a comment made ten minutes ago.
    let stale = github_comment("ann", "@hangar please fix this", &rfc3339(600));
    let (status, answer) = post(&t, &url, &github_headers(&stale, "g-3"), &stale).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("stale"),
        "{answer}"
    );
    assert!(runs(&t).await.is_empty());
    assert!(github.posted().is_empty());
}

#[tokio::test]
async fn c4_github_replayed_delivery_is_deduplicated() {
    let t = TwoTeams::start().await;
    let (_github, url) = github_setup(&t).await;
    let body = github_comment("ann", "@hangar please fix this", &rfc3339(0));
    let headers = github_headers(&body, "g-4");
    let (status, first) = post(&t, &url, &headers, &body).await;
    assert_eq!(
        (status, first["outcome"].as_str()),
        (200, Some("started")),
        "{first}"
    );
    let (status, replay) = post(&t, &url, &headers, &body).await;
    assert_eq!(
        (status, replay["outcome"].as_str()),
        (200, Some("duplicate")),
        "{replay}"
    );
    assert_eq!(runs(&t).await.len(), 1);
}

#[tokio::test]
async fn github_unlinked_user_gets_the_howto_comment() {
    let t = TwoTeams::start().await;
    let (github, url) = github_setup(&t).await;
    let body = github_comment("bob", "@hangar please fix this", &rfc3339(0));
    let (status, answer) = post(&t, &url, &github_headers(&body, "g-6"), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("unlinked")),
        "{answer}"
    );
    let reply = reply_in(|| github.posted(), "acme/web#12", "hangar user create").await;
    assert!(
        reply.text.contains("did not tell me your e-mail"),
        "{reply:?}"
    );
    assert!(runs(&t).await.is_empty());
}

/// An RSA key pair made by `openssl`: `(PKCS#1 PEM, public key PKCS#1 DER)`.
fn rsa_key() -> (String, Vec<u8>) {
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .expect("openssl genrsa");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8(out.stdout).unwrap();
    let der = std::process::Command::new("openssl")
        .args(["rsa", "-RSAPublicKey_out", "-outform", "DER"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(pem.as_bytes())?;
            child.wait_with_output()
        })
        .expect("openssl rsa");
    assert!(
        der.status.success(),
        "{}",
        String::from_utf8_lossy(&der.stderr)
    );
    (pem, der.stdout)
}

#[tokio::test]
async fn github_app_mints_an_installation_token_scoped_to_the_repository() {
    let t = TwoTeams::start().await;
    let (pem, public) = rsa_key();
    let github = FakeGithub::with_app("1234", public).await;
    t.member("ann").await;
    github.add_user("ann", Some("ann@a.test"));
    secret(&t, "GH_APP_KEY", &pem).await;
    let (_, url) = integration(
        &t,
        "github",
        HOOK,
        json!({"app_id": "1234", "private_key_secret": "GH_APP_KEY", "api_base_url": github.api_base_url()}),
    )
    .await;
    let body = github_comment("ann", "@hangar please fix this", &rfc3339(0));
    let (status, answer) = post(&t, &url, &github_headers(&body, "g-5"), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("started")),
        "{answer}"
    );
    reply_in(
        || github.posted(),
        "acme/web#12",
        answer["run_id"].as_str().unwrap(),
    )
    .await;
    let minted = github.minted();
    assert!(!minted.is_empty());
    assert!(
        minted
            .iter()
            .all(|(installation, repos)| *installation == 42 && repos == &vec!["web".to_owned()]),
        "every installation token is scoped to the one repository: {minted:?}"
    );
}

// ---------------------------------------------------------------- Test button

#[tokio::test]
async fn integration_test_reports_whether_the_credentials_work() {
    let t = TwoTeams::start().await;
    let (_slack, _) = slack_setup(&t).await;
    let (pem, public) = rsa_key();
    let github = FakeGithub::with_app("99", public).await;
    secret(&t, "GH_APP_KEY", &pem).await;
    let body = json!({"kind": "github", "name": "gh-app", "secret": HOOK,
        "settings": {"app_id": "99", "private_key_secret": "GH_APP_KEY", "api_base_url": github.api_base_url()}});
    t.ok("POST", "/integrations", &t.key_a, Some(&body.to_string()))
        .await;
    secret(&t, "WRONG_KEY", "lin_api_wrong").await;
    let linear = FakeLinear::start(LINEAR_KEY, "lin-agent", "hangar").await;
    let body = json!({"kind": "linear", "name": "lin", "secret": HOOK,
        "settings": {"api_key_secret": "WRONG_KEY", "api_base_url": linear.api_base_url()}});
    t.ok("POST", "/integrations", &t.key_a, Some(&body.to_string()))
        .await;

    let slack = t
        .ok("POST", "/integrations/slack/test", &t.key_a, None)
        .await;
    assert_eq!(slack["ok"], true, "{slack}");
    assert!(
        slack["detail"]
            .as_str()
            .unwrap()
            .contains("@hangar in Acme"),
        "{slack}"
    );
    let app = t
        .ok("POST", "/integrations/gh-app/test", &t.key_a, None)
        .await;
    assert_eq!(app["ok"], true, "{app}");
    assert!(
        app["detail"].as_str().unwrap().contains("Hangar Agent"),
        "{app}"
    );
    let wrong = t.ok("POST", "/integrations/lin/test", &t.key_a, None).await;
    assert_eq!(wrong["ok"], false, "{wrong}");
    assert!(
        wrong["detail"]
            .as_str()
            .unwrap()
            .contains("Authentication required"),
        "{wrong}"
    );
    assert!(
        !wrong.to_string().contains("lin_api_wrong"),
        "the key is never echoed: {wrong}"
    );
    // Members may read integrations but not use their credentials.
    let (_, member) = t.member("mia").await;
    let reply = t
        .call("POST", "/integrations/slack/test", Some(&member), None)
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text);
}

#[tokio::test]
async fn a_run_that_cannot_start_is_explained_in_the_thread() {
    let t = TwoTeams::start().await;
    let slack = FakeSlack::start(BOT).await;
    t.member("ann").await;
    slack.add_user("UANN", Some("ann@a.test"));
    secret(&t, "SLACK_BOT", BOT).await;
    let env = t
        .ok("POST", "/environments", &t.key_a, Some(r#"{"name":"web"}"#))
        .await;
    let env_id = env["id"].as_str().unwrap();
    let body = json!({"kind": "slack", "name": "slack", "secret": SIGNING, "settings": {
        "bot_token_secret": "SLACK_BOT", "api_base_url": slack.api_base_url(),
        "agent_config": {"model_id": MODEL, "environment_id": env_id}}});
    let created = t
        .ok("POST", "/integrations", &t.key_a, Some(&body.to_string()))
        .await;
    let url = created["webhook_url"].as_str().unwrap();
    // The environment goes away after the integration was set up.
    t.ok("DELETE", &format!("/environments/{env_id}"), &t.key_a, None)
        .await;
    let body = slack_mention("Ev9", "UANN", "<@U0HANGAR> deploy", None);
    let (status, answer) = post(&t, url, &slack_headers(&body, now()), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("refused")),
        "{answer}"
    );
    let reply = reply_in(
        || slack.posted(),
        "C0DEV:1765130000.000200",
        "could not start",
    )
    .await;
    assert!(
        reply.text.contains(env_id),
        "the reason names the environment: {reply:?}"
    );
    assert!(runs(&t).await.is_empty());
}

#[tokio::test]
async fn a_mention_in_the_thread_of_an_ended_run_reopens_it_and_is_reported_at_once() {
    let t = TwoTeams::start().await;
    let (slack, url) = slack_setup(&t).await;
    let body = slack_mention("Ev10", "UANN", "<@U0HANGAR> deploy", None);
    let (_, answer) = post(&t, &url, &slack_headers(&body, now()), &body).await;
    let run_id = answer["run_id"].as_str().unwrap().to_owned();
    let thread = "C0DEV:1765130000.000200";
    t.ok(
        "POST",
        &format!("/agent/runs/{run_id}/cancel"),
        &t.key_a,
        None,
    )
    .await;
    reply_in(|| slack.posted(), thread, "The run was cancelled").await;
    let status = reply_in(|| slack.posted(), thread, "Cancelled").await;

    let again = json!({"type": "event_callback", "event_id": "Ev11", "event": {
        "type": "app_mention", "user": "UANN", "text": "<@U0HANGAR> try again",
        "channel": "C0DEV", "ts": "1765130000.000300", "thread_ts": "1765130000.000200"}})
    .to_string()
    .into_bytes();
    let (status_code, answer) = post(&t, &url, &slack_headers(&again, now()), &again).await;
    assert_eq!(
        (status_code, answer["outcome"].as_str()),
        (200, Some("followed_up")),
        "{answer}"
    );
    assert_eq!(answer["run_id"], run_id.as_str());
    // The same status message says it is queued again, well before the
    // loop's look at every thread (a minute).
    let requeued = until_ok(
        "the status message to say Queued again",
        Duration::from_secs(10),
        || {
            let now = slack
                .posted()
                .into_iter()
                .find(|p| p.id == status.id)
                .unwrap();
            if now.text.contains("Queued") {
                Ok(now)
            } else {
                Err(now)
            }
        },
    )
    .await;
    assert!(
        requeued.edits.iter().any(|e| e.contains("Cancelled")),
        "{requeued:?}"
    );
}

#[tokio::test]
async fn slack_direct_message_starts_a_run_answered_in_its_thread() {
    let t = TwoTeams::start().await;
    let (slack, url) = slack_setup(&t).await;
    let body = json!({"type": "event_callback", "event_id": "EvDM", "event": {
        "type": "message", "channel_type": "im", "user": "UANN", "text": "summarize yesterday's deploys",
        "channel": "D0ANN", "ts": "1765130100.000100"}})
    .to_string()
    .into_bytes();
    let (status, answer) = post(&t, &url, &slack_headers(&body, now()), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("started")),
        "{answer}"
    );
    let run_id = answer["run_id"].as_str().unwrap();
    reply_in(|| slack.posted(), "D0ANN:1765130100.000100", run_id).await;
}

#[tokio::test]
async fn linear_comment_mentioning_the_agent_starts_a_run_on_its_issue() {
    let t = TwoTeams::start().await;
    let (linear, url) = linear_setup(&t).await;
    let body = json!({
        "action": "create", "type": "Comment", "actor": {"id": "lin-ann", "name": "Ann"},
        "data": {"id": "c1", "body": "@hangar can you reproduce this?", "issueId": "iss-7", "userId": "lin-ann"},
        "webhookTimestamp": now() * 1000
    })
    .to_string()
    .into_bytes();
    let (status, answer) = post(&t, &url, &linear_headers(&body, "d-c1"), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("started")),
        "{answer}"
    );
    let run_id = answer["run_id"].as_str().unwrap();
    let run = t
        .ok("GET", &format!("/agent/runs/{run_id}"), &t.key_a, None)
        .await;
    assert!(
        run["prompt"]
            .as_str()
            .unwrap()
            .contains("can you reproduce this?"),
        "{run}"
    );
    reply_in(|| linear.posted(), "iss-7", run_id).await;
    // A comment by the agent's own user, or one without the mention, starts nothing.
    let own = json!({
        "action": "create", "type": "Comment", "actor": {"id": "lin-agent", "name": "hangar"},
        "data": {"id": "c2", "body": "@hangar on it", "issueId": "iss-7", "userId": "lin-agent"},
        "webhookTimestamp": now() * 1000
    })
    .to_string()
    .into_bytes();
    let (_, answer) = post(&t, &url, &linear_headers(&own, "d-c2"), &own).await;
    assert_eq!(answer["outcome"], "ignored", "{answer}");
}

#[tokio::test]
async fn github_label_added_to_an_issue_starts_a_run() {
    let t = TwoTeams::start().await;
    let github = FakeGithub::with_token(PAT).await;
    t.member("ann").await;
    github.add_user("ann", Some("ann@a.test"));
    secret(&t, "GH_TOKEN", PAT).await;
    let (_, url) = integration(
        &t,
        "github",
        HOOK,
        json!({"token_secret": "GH_TOKEN", "api_base_url": github.api_base_url(), "labels": ["agent"]}),
    )
    .await;
    let labeled = |label: &str| {
        json!({
            "action": "labeled", "label": {"name": label}, "sender": {"login": "ann"},
            "repository": {"full_name": "acme/web"},
            "issue": {"number": 21, "title": "Flaky CI", "body": "The e2e job fails", "updated_at": rfc3339(0)}
        })
        .to_string()
        .into_bytes()
    };
    let headers = |body: &[u8], id: &str| {
        let mut h = github_headers(body, id);
        h[2].1 = "issues".to_owned();
        h
    };
    let other = labeled("bug");
    let (_, answer) = post(&t, &url, &headers(&other, "g-l1"), &other).await;
    assert_eq!(answer["outcome"], "ignored", "{answer}");
    let body = labeled("agent");
    let (status, answer) = post(&t, &url, &headers(&body, "g-l2"), &body).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("started")),
        "{answer}"
    );
    reply_in(
        || github.posted(),
        "acme/web#21",
        answer["run_id"].as_str().unwrap(),
    )
    .await;
}
