//! Retries, Retry-After and timeouts, over real HTTP.

use super::common::{fast_retry, request, user};
use hangar_llm::llm::MessageContent;
use hangar_llm::{LlmError, ModelProvider, OpenAiConfig, OpenAiProvider, RetryPolicy, collect};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
    let llm = FakeLlm::start(vec![Turn::rate_limited(1), Turn::text("finally")]).await;
    let provider =
        OpenAiProvider::new(OpenAiConfig::new(llm.base_url()).with_retry(fast_retry())).unwrap();
    let started = Instant::now();
    let response = collect(
        provider
            .chat_stream(request("m", vec![user("hi")]))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    // The backoff alone would be ≤ 20 ms; only honouring Retry-After: 1
    // explains a wait of about a second.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        response.choices[0].message.content,
        Some(MessageContent::Text("finally".into()))
    );
    assert_eq!(llm.requests().len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_up_to_the_limit() {
    let llm = FakeLlm::start(vec![
        Turn::error(502, "bad gateway"),
        Turn::error(500, "boom"),
        Turn::error(503, "still down"),
        Turn::text("too late"),
    ])
    .await;
    let provider =
        OpenAiProvider::new(OpenAiConfig::new(llm.base_url()).with_retry(fast_retry())).unwrap();
    let err = provider
        .chat_stream(request("m", vec![user("hi")]))
        .await
        .err()
        .unwrap();
    match err {
        LlmError::Status {
            status,
            body,
            retryable,
        } => {
            assert_eq!(status, 503);
            assert!(retryable);
            assert!(body.contains("still down"), "{body}");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert_eq!(llm.requests().len(), 3);
    assert_eq!(llm.remaining(), 1);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let llm = FakeLlm::start(vec![Turn::error(401, "bad key"), Turn::text("unused")]).await;
    let provider =
        OpenAiProvider::new(OpenAiConfig::new(llm.base_url()).with_retry(fast_retry())).unwrap();
    let err = provider
        .chat_stream(request("m", vec![user("hi")]))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, LlmError::Status { status: 401, retryable: false, body } if body.contains("bad key")),
        "unexpected error: {err}"
    );
    assert_eq!(llm.requests().len(), 1);
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let llm = FakeLlm::start(vec![Turn::delayed(
        Duration::from_secs(30),
        Turn::text("late"),
    )])
    .await;
    let mut config = OpenAiConfig::new(llm.base_url()).with_retry(RetryPolicy::none());
    config.request_timeout = Duration::from_millis(200);
    let provider = OpenAiProvider::new(config).unwrap();
    let err = provider
        .chat_stream(request("m", vec![user("hi")]))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, LlmError::Timeout(d) if d == Duration::from_millis(200)),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let llm = FakeLlm::start(Vec::new()).await;
    let url = llm.base_url();
    drop(llm);
    // Give the aborted server task a moment to release the port.
    tokio::task::yield_now().await;
    let provider =
        OpenAiProvider::new(OpenAiConfig::new(url).with_retry(RetryPolicy::none())).unwrap();
    let err = provider
        .chat_stream(request("m", vec![user("hi")]))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, LlmError::Transport(_)), "{err}");
}
