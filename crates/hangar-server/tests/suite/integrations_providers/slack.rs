//! Slack: the v0 signature, URL verification, mentions and direct messages,
//! the how-to reply, channel filters.

use super::*;

pub(super) fn slack_mention(
    event_id: &str,
    user: &str,
    text: &str,
    thread_ts: Option<&str>,
) -> Vec<u8> {
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

pub(super) fn slack_headers(body: &[u8], ts: i64) -> Vec<(&'static str, String)> {
    vec![
        ("x-slack-request-timestamp", ts.to_string()),
        (
            "x-slack-signature",
            slack_signature(SIGNING.as_bytes(), ts, body),
        ),
    ]
}

pub(super) async fn slack_setup(t: &TwoTeams) -> (FakeSlack, String) {
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
    assert_refused_as_stale(status, &answer);
    assert!(runs(&t).await.is_empty());
}

#[tokio::test]
async fn c4_slack_replayed_or_retried_event_is_deduplicated() {
    let t = TwoTeams::start().await;
    let (_slack, url) = slack_setup(&t).await;
    let body = slack_mention("Ev4", "UANN", "<@U0HANGAR> deploy", None);
    let headers = slack_headers(&body, now());
    let (status, first) = post(&t, &url, &headers, &body).await;
    assert_outcome(status, &first, "started");
    // The same request again (a replay), and Slack's retry of the same
    // event (a new timestamp and signature, the same event_id).
    let (status, replay) = post(&t, &url, &headers, &body).await;
    assert_outcome(status, &replay, "duplicate");
    let (status, retry) = post(&t, &url, &slack_headers(&body, now() + 1), &body).await;
    assert_outcome(status, &retry, "duplicate");
    assert_eq!(runs(&t).await.len(), 1);
}

#[tokio::test]
async fn slack_unlinked_user_gets_the_howto_reply_and_no_run() {
    let t = TwoTeams::start().await;
    let (slack, url) = slack_setup(&t).await;
    let body = slack_mention("Ev5", "UBOB", "<@U0HANGAR> deploy", None);
    let (status, answer) = post(&t, &url, &slack_headers(&body, now()), &body).await;
    assert_outcome(status, &answer, "unlinked");
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
    assert_outcome(status, &answer, "ignored");
    assert!(runs(&t).await.is_empty());
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
    assert_outcome(status, &answer, "started");
    let run_id = answer["run_id"].as_str().unwrap();
    reply_in(|| slack.posted(), "D0ANN:1765130100.000100", run_id).await;
}
