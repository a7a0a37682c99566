//! Unit tests of the fake LLM server.

use super::anthropic::check_anthropic;
use super::openai::check_openai;
use super::*;

#[test]
fn openai_check_finds_unanswered_and_orphan_results() {
    let ok = json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "a"}, {"id": "b"}]},
        {"role": "tool", "tool_call_id": "b", "content": "x"},
        {"role": "tool", "tool_call_id": "a", "content": "y"},
        {"role": "assistant", "content": "done"}
    ]});
    assert!(check_openai(&ok).is_empty());
    let missing = json!({"messages": [
        {"role": "assistant", "tool_calls": [{"id": "a"}, {"id": "b"}]},
        {"role": "tool", "tool_call_id": "a", "content": "y"},
        {"role": "user", "content": "next"}
    ]});
    assert_eq!(check_openai(&missing), ["tool call b has no result"]);
    let trailing = json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "z"}]}]});
    assert_eq!(check_openai(&trailing), ["tool call z has no result"]);
    let orphan = json!({"messages": [{"role": "user"}, {"role": "tool", "tool_call_id": "q"}]});
    assert_eq!(
        check_openai(&orphan),
        ["tool result q answers no tool call"]
    );
}

#[test]
fn anthropic_check_wants_results_in_the_next_user_message() {
    let ok = json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}
    ]});
    assert!(check_anthropic(&ok).is_empty());
    let late = json!({"messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1"}]},
        {"role": "user", "content": "what?"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}
    ]});
    assert_eq!(
        check_anthropic(&late),
        [
            "tool call t1 has no result",
            "tool result t1 answers no tool call"
        ]
    );
}

#[test]
fn split_keeps_every_char() {
    assert_eq!(split("héllo wörld", 3).concat(), "héllo wörld");
    assert_eq!(split("héllo wörld", 3).len(), 3);
    assert!(split("", 3).is_empty());
    assert_eq!(split("ab", 3), ["a", "b"]);
}

async fn post(url: String, body: Value) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn answers_plain_json_records_requests_and_reports_exhaustion() {
    let llm = FakeLlm::start(vec![Turn::tool_calls([
        ("shell", json!({"command": "ls"})),
        ("grep", json!({"pattern": "x"})),
    ])])
    .await;
    let url = format!("{}/chat/completions", llm.base_url());
    let request = json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = post(url.clone(), request.clone()).await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "m1");
    let calls = body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(calls[0]["id"], "call_1");
    assert_eq!(calls[1]["id"], "call_2");
    assert_eq!(calls[1]["function"]["arguments"], r#"{"pattern":"x"}"#);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(llm.remaining(), 0);

    let (status, body) = post(url, request.clone()).await;
    assert_eq!(status, 500);
    assert!(body.contains("script exhausted"), "{body}");
    assert_eq!(llm.requests(), vec![request.clone(), request]);
}

#[tokio::test]
async fn rejects_unanswered_tool_calls_without_using_a_turn() {
    let llm = FakeLlm::start(vec![Turn::text("hi")]).await;
    let request = json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "call_9", "type": "function",
            "function": {"name": "shell", "arguments": "{}"}}]},
        {"role": "user", "content": "well?"}
    ]});
    let (status, body) = post(format!("{}/chat/completions", llm.base_url()), request).await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["message"], "tool call call_9 has no result");
    assert_eq!(llm.violations(), ["tool call call_9 has no result"]);
    assert_eq!(llm.remaining(), 1);
}

#[tokio::test]
async fn streams_openai_and_anthropic_sse() {
    let llm = FakeLlm::start(vec![Turn::text("Hello there"), Turn::text("Hi again")]).await;
    let (status, body) = post(
        format!("{}/chat/completions", llm.base_url()),
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Hello there");
    assert!(data.iter().any(|d| d.contains("\"usage\"")));

    let (status, body) = post(
        format!("{}/v1/messages", llm.anthropic_base_url()),
        json!({"model": "claude", "stream": true, "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    assert!(body.contains("\"text_delta\""));
}

#[tokio::test]
async fn lists_a_model() {
    let llm = FakeLlm::start(Vec::new()).await;
    let body: Value = reqwest::get(format!("{}/models", llm.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"][0]["id"], FAKE_MODEL);
}
