//! Bad input gets a 4xx problem+json that says what is wrong.

use crate::suite::common::cluster_with;
use hangar_testkit::fake_llm::FakeLlm;
use serde_json::Value;

async fn call(
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, String, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, ctype, body)
}

fn assert_problem(status: u16, ctype: &str, body: &Value, want: u16, needle: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(ctype, "application/problem+json", "{body}");
    for field in ["type", "title", "status", "error", "detail"] {
        assert!(!body[field].is_null(), "problem lacks `{field}`: {body}");
    }
    assert_eq!(body["status"], want);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(needle),
        "detail {detail:?} should mention {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_problems_never_500() {
    use reqwest::Method;
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let key = cluster.api_key.clone();
    let runs = format!("{}/api/v1/agent/runs", cluster.url);

    type Case<'a> = (
        Method,
        String,
        Option<&'a str>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            runs.clone(),
            Some(&key),
            Some("{not json"),
            400,
            "not valid JSON",
        ),
        (
            Method::POST,
            runs.clone(),
            Some(&key),
            Some(""),
            400,
            "empty",
        ),
        (
            Method::POST,
            runs.clone(),
            Some(&key),
            Some("{}"),
            400,
            "`prompt` is required",
        ),
        (
            Method::POST,
            runs.clone(),
            Some(&key),
            Some(r#"{"prompt":"  "}"#),
            400,
            "`prompt` is required",
        ),
        (
            Method::POST,
            runs.clone(),
            Some(&key),
            Some(r#"{"prompt":5}"#),
            400,
            "invalid type",
        ),
        (
            Method::POST,
            runs.clone(),
            Some(&key),
            Some(r#"{"prompt":"x","colour":"red"}"#),
            400,
            "colour",
        ),
        (
            Method::POST,
            runs.clone(),
            Some(&key),
            Some(r#"{"prompt":"x","config":{"model_id":"nope"}}"#),
            400,
            "provider/model",
        ),
        (
            Method::POST,
            runs.clone(),
            Some(&key),
            Some(r#"{"prompt":"x","config":{"model_id":"other/m"}}"#),
            400,
            "no provider named `other`",
        ),
        (
            Method::POST,
            runs.clone(),
            Some(&key),
            Some(r#"{"prompt":"x","config":{"worker_host":"a b"}}"#),
            400,
            "worker_host",
        ),
        (
            Method::POST,
            runs.clone(),
            Some(&key),
            Some(r#"{"prompt":"x","config":{"idle_timeout_minutes":0}}"#),
            400,
            "idle_timeout_minutes",
        ),
        (
            Method::GET,
            format!("{runs}?state=DONE"),
            Some(&key),
            None,
            400,
            "DONE",
        ),
        (
            Method::GET,
            format!("{runs}?limit=501"),
            Some(&key),
            None,
            400,
            "limit",
        ),
        (
            Method::GET,
            format!("{runs}?cursor=xyz"),
            Some(&key),
            None,
            400,
            "cursor",
        ),
        (
            Method::GET,
            format!("{runs}/0000-unknown"),
            Some(&key),
            None,
            404,
            "0000-unknown",
        ),
        (
            Method::POST,
            format!("{runs}/0000-unknown/cancel"),
            Some(&key),
            None,
            404,
            "0000-unknown",
        ),
        (Method::GET, runs.clone(), None, None, 401, "Authorization"),
        (
            Method::GET,
            runs.clone(),
            Some("hk_0000"),
            None,
            401,
            "not valid",
        ),
        (Method::GET, runs.clone(), Some("garbage"), None, 401, "hk_"),
        (
            Method::DELETE,
            runs.clone(),
            Some(&key),
            None,
            405,
            "method",
        ),
        (
            Method::GET,
            format!("{}/api/v1/nothing-here", cluster.url),
            Some(&key),
            None,
            404,
            "no route",
        ),
    ];
    for (method, url, k, body, want, needle) in cases {
        let (status, ctype, problem) = call(method.clone(), &url, k, body).await;
        println!("{method} {url} {body:?} -> {status} {problem}");
        assert_problem(status, &ctype, &problem, want, needle);
    }

    // Oversized bodies: 413.
    let huge = format!(r#"{{"prompt":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, ctype, problem) = call(Method::POST, &runs, Some(&key), Some(&huge)).await;
    assert_problem(status, &ctype, &problem, 413, "limit");

    // A revoked key stops working at once.
    let client = cluster.client();
    let created = client
        .create_api_key(&hangar_protocol::CreateApiKeyRequest {
            name: "ci".into(),
            expires_at: None,
            team: false,
        })
        .await
        .unwrap();
    let secret = created.key.clone().unwrap();
    assert!(secret.starts_with("hk_"));
    let (status, _, _) = call(Method::GET, &runs, Some(&secret), None).await;
    assert_eq!(status, 200);
    let (status, _, _) = call(
        Method::POST,
        &format!("{}/api/v1/api-keys/{}/expire", cluster.url, created.id),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, ctype, problem) = call(Method::GET, &runs, Some(&secret), None).await;
    assert_problem(status, &ctype, &problem, 401, "revoked");

    // The server is still healthy.
    let (status, _, _) = call(Method::GET, &format!("{}/readyz", cluster.url), None, None).await;
    assert_eq!(status, 200);
}
