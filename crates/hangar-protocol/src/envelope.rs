//! The `{"type": T, "data": {…}}` frame shared by the worker and session sockets.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One text frame: a message type and its payload. Decoding is two-step so a
/// peer can ignore message types it does not know instead of failing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Message type, e.g. `task_assignment`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Payload; absent for messages without fields.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

/// Why a frame could not be decoded.
#[derive(Debug)]
pub enum EnvelopeError {
    /// The frame is not a JSON object with a string `type`.
    Malformed(serde_json::Error),
    /// The type is known but `data` does not match its shape.
    BadPayload {
        /// The message type whose payload failed.
        kind: String,
        /// What serde said about it.
        source: serde_json::Error,
    },
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvelopeError::Malformed(e) => write!(f, "malformed frame: {e}"),
            EnvelopeError::BadPayload { kind, source } => {
                write!(f, "invalid `{kind}` payload: {source}")
            }
        }
    }
}

impl std::error::Error for EnvelopeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnvelopeError::Malformed(e) => Some(e),
            EnvelopeError::BadPayload { source, .. } => Some(source),
        }
    }
}

impl Envelope {
    /// Builds a frame from a payload.
    pub fn new<T: Serialize>(kind: &str, data: &T) -> Self {
        Envelope {
            kind: kind.to_owned(),
            // Serializing our own plain structs cannot fail; fall back to null.
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        }
    }

    /// Parses the outer frame.
    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        serde_json::from_str(text).map_err(EnvelopeError::Malformed)
    }

    /// Decodes the payload into `T`.
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, EnvelopeError> {
        let data = if self.data.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            self.data
        };
        serde_json::from_value(data).map_err(|source| EnvelopeError::BadPayload {
            kind: self.kind,
            source,
        })
    }

    /// Serializes the frame to text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
