//! The agent's session stream (PROTOCOL.md §4): `GET /api/v1/agent/runs/{id}/session`.
//!
//! The agent sends `event` frames with strictly increasing `seq` per execution;
//! the server answers `ack {seq}` once the event is committed (and, right after
//! connecting, with the highest committed seq so the agent resends the rest).

use crate::{Envelope, EnvelopeError, Timestamp};
use serde::{Deserialize, Serialize};

/// What happened, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// A message from a person (the prompt or a follow-up).
    UserMessage {
        /// Text.
        text: String,
    },
    /// Text from the model.
    AssistantMessage {
        /// Text.
        text: String,
    },
    /// Model reasoning.
    Reasoning {
        /// Text.
        text: String,
    },
    /// The model called a tool.
    ToolCall {
        /// Call id.
        call_id: String,
        /// Tool name.
        name: String,
        /// Arguments (JSON).
        arguments: serde_json::Value,
    },
    /// A tool's result.
    ToolResult {
        /// Call id.
        call_id: String,
        /// Tool name.
        name: String,
        /// Output as given to the model.
        output: String,
        /// Whether the tool failed.
        #[serde(default)]
        is_error: bool,
    },
    /// Lifecycle status; a terminal `state` is the agent's outcome report.
    Status {
        /// Run state the agent reports (`SUCCEEDED`, `FAILED`, …), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<crate::RunState>,
        /// Message.
        message: String,
        /// **(extension)** With a terminal `state`: the `failure_reason` of
        /// PROTOCOL.md §2 when the agent itself failed preparing the run
        /// (`workspace_setup`, `setup_command`: it prepared the environment
        /// because a stock `oz-agent-worker` did not).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure_reason: Option<String>,
    },
    /// An output the run produced.
    Artifact {
        /// `pull_request`, `file` or `plan`.
        artifact_type: String,
        /// URL.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// Path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// Title.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
    /// Token usage of one model call.
    Usage {
        /// Model id.
        model: String,
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Completion tokens.
        completion_tokens: u64,
    },
    /// A non-tool error.
    Error {
        /// Message.
        message: String,
    },
}

/// One event of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    /// Sequence number, from 1, strictly increasing per execution.
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

/// `ack {seq}`: every event up to `seq` is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Highest committed sequence number (0 = none).
    pub seq: u64,
}

/// `followup {message, from, id?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Followup {
    /// Text.
    pub message: String,
    /// Who sent it.
    #[serde(default)]
    pub from: String,
    /// The stored follow-up's id: the agent answers `followup_ack {id}` and
    /// ignores an id it has seen (the server resends unacknowledged ones
    /// after a reconnect). Absent from servers that do not store them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
}

/// `followup_ack {id}`: the agent has follow-up `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowupAck {
    /// The follow-up's id.
    pub id: i64,
}

/// Agent → server frames.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentToServer {
    /// An event.
    Event(SessionEvent),
    /// A follow-up arrived.
    FollowupAck(FollowupAck),
}

/// Server → agent frames.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerToAgent {
    /// Committed up to here.
    Ack(Ack),
    /// Steering message.
    Followup(Followup),
    /// Stop now.
    Cancel,
}

impl AgentToServer {
    /// Encodes into a frame.
    pub fn to_envelope(&self) -> Envelope {
        match self {
            AgentToServer::Event(e) => Envelope::new("event", e),
            AgentToServer::FollowupAck(a) => Envelope::new("followup_ack", a),
        }
    }

    /// Decodes a frame; `Ok(None)` for unknown types.
    pub fn from_envelope(env: Envelope) -> Result<Option<Self>, EnvelopeError> {
        Ok(Some(match env.kind.as_str() {
            "event" => AgentToServer::Event(env.decode()?),
            "followup_ack" => AgentToServer::FollowupAck(env.decode()?),
            _ => return Ok(None),
        }))
    }
}

impl ServerToAgent {
    /// Encodes into a frame.
    pub fn to_envelope(&self) -> Envelope {
        match self {
            ServerToAgent::Ack(a) => Envelope::new("ack", a),
            ServerToAgent::Followup(f) => Envelope::new("followup", f),
            ServerToAgent::Cancel => Envelope {
                kind: "cancel".to_owned(),
                data: serde_json::json!({}),
            },
        }
    }

    /// Decodes a frame; `Ok(None)` for unknown types.
    pub fn from_envelope(env: Envelope) -> Result<Option<Self>, EnvelopeError> {
        Ok(Some(match env.kind.as_str() {
            "ack" => ServerToAgent::Ack(env.decode()?),
            "followup" => ServerToAgent::Followup(env.decode()?),
            "cancel" => ServerToAgent::Cancel,
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_is_flat_with_kind() {
        let e = SessionEvent {
            seq: 3,
            at: Timestamp::from_unix_millis(0),
            body: EventBody::AssistantMessage { text: "hi".into() },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "assistant_message");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["at"], "1970-01-01T00:00:00Z");
        let back: SessionEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
