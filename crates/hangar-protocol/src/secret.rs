//! The one redacting secret type: a string that never prints itself.
//!
//! Every secret Hangar holds in a value (an LLM provider's API key, a
//! secret's value or a password in a request, a token in a config file) is a
//! [`SecretString`], so neither a log line, a `Debug` dump nor a printed
//! configuration can show it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A secret (an API key, a token) whose `Debug` and `Display` print `***`.
///
/// It deserializes from a plain string and serializes as `"***"`, so an
/// effective-config dump (`--print-config`) never shows the value. Read the
/// value with [`SecretString::expose`], only where it is sent.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret value. Call it only where the value leaves the process
    /// (an HTTP header), never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        SecretString(value.to_owned())
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString)
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// Serializes the secret's value: for a request field that must carry it
/// over the wire (`#[serde(serialize_with = "expose")]`). Everything else
/// serializes as `***`.
pub fn expose<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

/// [`expose`] for an optional secret.
pub fn expose_option<S: Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => serializer.serialize_some(secret.expose()),
        None => serializer.serialize_none(),
    }
}

/// In the OpenAPI document: a string the client writes and never reads back.
#[cfg(feature = "utoipa")]
impl utoipa::PartialSchema for SecretString {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Password,
            )))
            .write_only(true)
            .into()
    }
}

#[cfg(feature = "utoipa")]
impl utoipa::ToSchema for SecretString {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let secret = SecretString::new("sk-very-secret");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(***)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
        assert_eq!(secret.expose(), "sk-very-secret");
    }

    #[test]
    fn exposes_only_where_asked() {
        #[derive(Serialize)]
        struct Request {
            #[serde(serialize_with = "expose")]
            value: SecretString,
            #[serde(serialize_with = "expose_option")]
            password: Option<SecretString>,
            kept: SecretString,
        }
        let request = Request {
            value: "v".into(),
            password: Some("p".into()),
            kept: "k".into(),
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"value":"v","password":"p","kept":"***"}"#
        );
    }

    #[test]
    fn deserializes_from_a_plain_string() {
        let secret: SecretString = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(secret.expose(), "abc");
        assert!(!secret.is_empty());
    }
}
