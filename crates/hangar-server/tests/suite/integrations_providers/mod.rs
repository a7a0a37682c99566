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

mod github;
mod linear;
mod slack;

use crate::suite::common::{MODEL, TwoTeams};
use github::rsa_key;
use hangar_server::integrations::signature::{sign_hex, slack_signature};
use hangar_testkit::fake_providers::{FakeGithub, FakeLinear, FakeSlack, LinearIssue, Posted};
use hangar_testkit::poll::until_ok;
use serde_json::{Value, json};
use slack::{slack_headers, slack_mention, slack_setup};
use std::time::Duration;

pub(super) const SIGNING: &str = "slack-signing-9c1e";
pub(super) const BOT: &str = "xoxb-test-token";
pub(super) const HOOK: &str = "whsec-provider-77";
pub(super) const LINEAR_KEY: &str = "lin_api_test";
pub(super) const PAT: &str = "ghp_testtoken";

pub(super) fn now() -> i64 {
    hangar_protocol::Timestamp::now().unix_millis() / 1000
}

pub(super) async fn secret(t: &TwoTeams, name: &str, value: &str) {
    let body = json!({"name": name, "value": value}).to_string();
    t.ok("POST", "/secrets", &t.key_a, Some(&body)).await;
}

/// Creates an integration of team A; returns `(id, webhook_url)`.
pub(super) async fn integration(
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

pub(super) async fn runs(t: &TwoTeams) -> Vec<Value> {
    let list = t.ok("GET", "/agent/runs?limit=100", &t.key_a, None).await;
    list["runs"].as_array().cloned().unwrap_or_default()
}

pub(super) async fn post(
    t: &TwoTeams,
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut req = t.http.post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.body(body.to_vec()).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The event was answered 200 with `outcome`.
#[track_caller]
pub(super) fn assert_outcome(status: u16, answer: &Value, outcome: &str) {
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some(outcome)),
        "{answer}"
    );
}

/// The event was refused 401 for being stale.
#[track_caller]
pub(super) fn assert_refused_as_stale(status: u16, answer: &Value) {
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("stale"),
        "{answer}"
    );
}

/// Waits until `posted()` holds a message of `thread` that contains `needle`.
pub(super) async fn reply_in(
    posted: impl Fn() -> Vec<Posted>,
    thread: &str,
    needle: &str,
) -> Posted {
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
    assert_outcome(status, &answer, "refused");
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
