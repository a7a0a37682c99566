//! The OpenAI Chat Completions side of the fake: answers, SSE frames and
//! the protocol checks of a request.

use super::*;

pub(super) async fn openai_chat(
    State(shared): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, next) = next_turn(
        &shared,
        "/v1/chat/completions",
        &headers,
        &body,
        check_openai,
        openai_error,
    );
    let (turn, response_id) = match next {
        Next::Answer { turn, response_id } => (turn, response_id),
        Next::Reject(response) => return response,
    };
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(FAKE_MODEL)
        .to_owned();
    let id = format!("chatcmpl-fake-{response_id}");
    let prompt_tokens = token_estimate(body.len());
    let (resolved, stream) = resolve(turn, stream).await;
    match resolved {
        Resolved::Error {
            status,
            body,
            retry_after,
        } => error_response(status, body, retry_after),
        Resolved::Cut(pause) => {
            let chunk = |delta: Value| {
                sse_data(
                    &json!({"id": id, "object": "chat.completion.chunk", "created": 0,
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": null}]}),
                )
            };
            let frames = vec![
                chunk(json!({"role": "assistant", "content": ""})),
                chunk(json!({"content": "Partial ans"})),
            ];
            sse_response(frames, Some(pause))
        }
        Resolved::Reply(reply) => {
            let completion_tokens = token_estimate(
                reply.text.len()
                    + reply
                        .calls
                        .iter()
                        .map(|c| c.arguments.to_string().len())
                        .sum::<usize>(),
            );
            let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens});
            let finish = if reply.calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            };
            if stream {
                sse_response(
                    openai_frames(&id, &model, &reply, finish, include_usage.then_some(usage)),
                    None,
                )
            } else {
                axum::Json(openai_whole(&id, &model, &reply, finish, usage)).into_response()
            }
        }
    }
}

pub(super) fn sse_data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

pub(super) fn openai_frames(
    id: &str,
    model: &str,
    reply: &Reply,
    finish: &str,
    usage: Option<Value>,
) -> Vec<String> {
    let chunk = |delta: Value, finish: Option<&str>| {
        sse_data(
            &json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut frames = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for piece in split(reply.reasoning.as_deref().unwrap_or_default(), 2) {
        frames.push(chunk(json!({"reasoning_content": piece}), None));
    }
    for piece in split(&reply.text, 3) {
        frames.push(chunk(json!({"content": piece}), None));
    }
    for (index, call) in reply.calls.iter().enumerate() {
        frames.push(chunk(
            json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": ""}}]}),
            None,
        ));
        for piece in split(&call.arguments.to_string(), 3) {
            frames.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    frames.push(chunk(json!({}), Some(finish)));
    if let Some(usage) = usage {
        frames.push(sse_data(
            &json!({"id": id, "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [], "usage": usage}),
        ));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    frames
}

pub(super) fn openai_whole(
    id: &str,
    model: &str,
    reply: &Reply,
    finish: &str,
    usage: Value,
) -> Value {
    let mut message = json!({"role": "assistant",
        "content": if reply.text.is_empty() && !reply.calls.is_empty() { Value::Null } else { json!(reply.text) }});
    if let Some(reasoning) = &reply.reasoning {
        message["reasoning_content"] = json!(reasoning);
    }
    if !reply.calls.is_empty() {
        message["tool_calls"] = reply
            .calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": c.arguments.to_string()}})
            })
            .collect();
    }
    json!({"id": id, "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
}

pub(super) fn openai_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
    (status, axum::Json(body)).into_response()
}

/// Like OpenAI: an assistant message with `tool_calls` must be followed by
/// tool messages answering each id, and a tool message must answer a call
/// of the assistant message before it.
pub(super) fn check_openai(request: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut open: HashSet<String> = HashSet::new();
    let mut calls_of_turn: HashSet<String> = HashSet::new();
    for message in &messages {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if role == "tool" {
            let id = message
                .get("tool_call_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !open.remove(id) && !calls_of_turn.contains(id) {
                problems.push(format!("tool result {id} answers no tool call"));
            }
            continue;
        }
        let mut unanswered: Vec<&String> = open.iter().collect();
        unanswered.sort();
        problems.extend(
            unanswered
                .iter()
                .map(|id| format!("tool call {id} has no result")),
        );
        open.clear();
        calls_of_turn.clear();
        if role == "assistant" {
            for call in message
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    open.insert(id.to_owned());
                    calls_of_turn.insert(id.to_owned());
                }
            }
        }
    }
    let mut unanswered: Vec<&String> = open.iter().collect();
    unanswered.sort();
    problems.extend(
        unanswered
            .iter()
            .map(|id| format!("tool call {id} has no result")),
    );
    problems
}

// ------------------------------------------------------------- Anthropic
