//! The Anthropic Messages side of the fake: answers, SSE events and the
//! protocol checks of a request.

use super::*;

pub(super) async fn anthropic_messages(
    State(shared): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, next) = next_turn(
        &shared,
        "/v1/messages",
        &headers,
        &body,
        check_anthropic,
        anthropic_error,
    );
    let (turn, response_id) = match next {
        Next::Answer { turn, response_id } => (turn, response_id),
        Next::Reject(response) => return response,
    };
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(FAKE_MODEL)
        .to_owned();
    let id = format!("msg_fake_{response_id}");
    let input_tokens = token_estimate(body.len());
    let (resolved, stream) = resolve(turn, stream).await;
    match resolved {
        Resolved::Error {
            status,
            body,
            retry_after,
        } => error_response(status, body, retry_after),
        Resolved::Cut(pause) => {
            let frames = vec![
                sse_event("message_start", &message_start(&id, &model, input_tokens)),
                sse_event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ),
                sse_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "Partial ans"}}),
                ),
            ];
            sse_response(frames, Some(pause))
        }
        Resolved::Reply(reply) => {
            let output_tokens = token_estimate(
                reply.text.len()
                    + reply
                        .calls
                        .iter()
                        .map(|c| c.arguments.to_string().len())
                        .sum::<usize>(),
            );
            let stop = if reply.calls.is_empty() {
                "end_turn"
            } else {
                "tool_use"
            };
            if stream {
                sse_response(
                    anthropic_frames(&id, &model, &reply, stop, input_tokens, output_tokens),
                    None,
                )
            } else {
                let mut content = Vec::new();
                if let Some(thinking) = &reply.reasoning {
                    content.push(
                        json!({"type": "thinking", "thinking": thinking, "signature": "fake"}),
                    );
                }
                if !reply.text.is_empty() {
                    content.push(json!({"type": "text", "text": reply.text}));
                }
                for call in &reply.calls {
                    content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}));
                }
                axum::Json(
                    json!({"id": id, "type": "message", "role": "assistant", "model": model,
                    "content": content, "stop_reason": stop, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}),
                )
                .into_response()
            }
        }
    }
}

pub(super) fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

pub(super) fn message_start(id: &str, model: &str, input_tokens: u64) -> Value {
    json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})
}

pub(super) fn anthropic_frames(
    id: &str,
    model: &str,
    reply: &Reply,
    stop: &str,
    input_tokens: u64,
    output_tokens: u64,
) -> Vec<String> {
    let mut frames = vec![
        sse_event("message_start", &message_start(id, model, input_tokens)),
        sse_event("ping", &json!({"type": "ping"})),
    ];
    let mut index = 0;
    let mut block = |frames: &mut Vec<String>, start: Value, deltas: Vec<Value>| {
        frames.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            frames.push(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        frames.push(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    };
    if let Some(thinking) = &reply.reasoning {
        let mut deltas: Vec<Value> = split(thinking, 2)
            .into_iter()
            .map(|t| json!({"type": "thinking_delta", "thinking": t}))
            .collect();
        deltas.push(json!({"type": "signature_delta", "signature": "fake-signature"}));
        block(
            &mut frames,
            json!({"type": "thinking", "thinking": ""}),
            deltas,
        );
    }
    if !reply.text.is_empty() {
        let deltas = split(&reply.text, 3)
            .into_iter()
            .map(|t| json!({"type": "text_delta", "text": t}))
            .collect();
        block(&mut frames, json!({"type": "text", "text": ""}), deltas);
    }
    for call in &reply.calls {
        // Like the real API: an empty first fragment, then the JSON in pieces.
        let mut deltas = vec![json!({"type": "input_json_delta", "partial_json": ""})];
        deltas.extend(
            split(&call.arguments.to_string(), 3)
                .into_iter()
                .map(|p| json!({"type": "input_json_delta", "partial_json": p})),
        );
        block(
            &mut frames,
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}),
            deltas,
        );
    }
    frames.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}}),
    ));
    frames.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    frames
}

pub(super) fn anthropic_error(status: StatusCode, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "api_error"
    } else {
        "invalid_request_error"
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, axum::Json(body)).into_response()
}

pub(super) fn blocks(message: &Value) -> Vec<Value> {
    message
        .get("content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Like Anthropic: every `tool_use` block must be answered by a
/// `tool_result` in the user message right after it, and every
/// `tool_result` must answer a `tool_use` of the message before it.
pub(super) fn check_anthropic(request: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut previous_calls: Vec<String> = Vec::new();
    for message in &messages {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let content = blocks(message);
        let of_type = |kind: &str, key: &str| -> Vec<String> {
            content
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some(kind))
                .filter_map(|b| b.get(key).and_then(Value::as_str).map(str::to_owned))
                .collect()
        };
        let results = if role == "user" {
            of_type("tool_result", "tool_use_id")
        } else {
            Vec::new()
        };
        for id in &previous_calls {
            if !results.contains(id) {
                problems.push(format!("tool call {id} has no result"));
            }
        }
        for id in &results {
            if !previous_calls.contains(id) {
                problems.push(format!("tool result {id} answers no tool call"));
            }
        }
        previous_calls = if role == "assistant" {
            of_type("tool_use", "id")
        } else {
            Vec::new()
        };
    }
    problems.extend(
        previous_calls
            .iter()
            .map(|id| format!("tool call {id} has no result")),
    );
    problems
}

// ---------------------------------------------------------------- models
