//! Linear: the signature and webhookTimestamp, assignments and mentions,
//! ticket metadata, the how-to comment.

use super::*;

pub(super) fn linear_assigned(issue: &str, actor: &str, ts_ms: i64) -> Vec<u8> {
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

pub(super) fn linear_headers(body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        ("linear-signature", sign_hex(HOOK.as_bytes(), &[body])),
        ("linear-delivery", delivery.to_owned()),
        ("linear-event", "Issue".to_owned()),
    ]
}

pub(super) async fn linear_setup(t: &TwoTeams) -> (FakeLinear, String) {
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
    assert_outcome(status, &answer, "started");
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
    assert_refused_as_stale(status, &answer);
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
    assert_outcome(status, &first, "started");
    let (status, replay) = post(&t, &url, &headers, &body).await;
    assert_outcome(status, &replay, "duplicate");
    // The same delivery id signed over a changed body is a replay too.
    let again = linear_assigned("iss-7", "lin-ann", now() * 1000 + 1);
    let (status, replay) = post(&t, &url, &linear_headers(&again, "d-4"), &again).await;
    assert_outcome(status, &replay, "duplicate");
    assert_eq!(runs(&t).await.len(), 1);
}

#[tokio::test]
async fn linear_unlinked_user_gets_the_howto_comment() {
    let t = TwoTeams::start().await;
    let (linear, url) = linear_setup(&t).await;
    let body = linear_assigned("iss-7", "lin-bob", now() * 1000);
    let (status, answer) = post(&t, &url, &linear_headers(&body, "d-6"), &body).await;
    assert_outcome(status, &answer, "unlinked");
    let reply = reply_in(|| linear.posted(), "iss-7", "hangar user create").await;
    assert!(reply.text.contains("bob@elsewhere.test"), "{reply:?}");
    assert!(runs(&t).await.is_empty());
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
    assert_outcome(status, &answer, "started");
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
