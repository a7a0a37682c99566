//! Run tokens end with what issued them (issue 10, item 3).

use super::common::*;

/// An unmanaged run's token works while the key that registered it is
/// active, and is refused (401) from the moment that key is expired: the
/// agent of a revoked key cannot keep writing to its run.
#[tokio::test]
async fn a_local_runs_token_ends_with_the_key_that_registered_it() {
    let t = TwoTeams::start().await;
    let key = t
        .ok("POST", "/api-keys", &t.key_a, Some(r#"{"name":"laptop"}"#))
        .await;
    let (secret, key_id) = (
        key["key"].as_str().expect("key secret").to_owned(),
        key["id"].as_str().expect("key id").to_owned(),
    );
    let body = serde_json::json!({ "prompt": "local work" }).to_string();
    let run = t
        .ok("POST", "/agent/runs/local", &secret, Some(&body))
        .await;
    let run_id = run["run_id"].as_str().unwrap();
    let token = run["run_token"].as_str().unwrap();
    let path = format!("/agent/runs/{run_id}");
    assert_eq!(t.call("GET", &path, Some(token), None).await.status, 200);

    t.ok(
        "POST",
        &format!("/api-keys/{key_id}/expire"),
        &t.key_a,
        None,
    )
    .await;
    let refused = t.call("GET", &path, Some(token), None).await;
    refused.assert_problem(401, "the token of a run whose key was expired");
    assert!(
        refused.text.contains("revoked or expired"),
        "{}",
        refused.text
    );
    // Runs registered by other keys are untouched.
    let (other, other_token) = t.local_run("still mine").await;
    assert_eq!(
        t.call(
            "GET",
            &format!("/agent/runs/{other}"),
            Some(&other_token),
            None
        )
        .await
        .status,
        200
    );
}
