//! HMAC-SHA256 signatures of webhooks, made and checked the same way in
//! both directions.
//!
//! Hangar's own scheme (generic inbound webhooks, outbound webhooks):
//!
//! - `X-Hangar-Timestamp`: the sending time, in Unix seconds;
//! - `X-Hangar-Signature`: `v1=` and the hex HMAC-SHA256, keyed with the
//!   shared secret, of the timestamp, a `.`, and the raw body bytes;
//! - `X-Hangar-Delivery`: an id for the delivery (a retry keeps it).
//!
//! The timestamp is signed with the body so that an old, captured request
//! cannot be made fresh; the receiver refuses one older than its window and
//! any delivery id (and signature) it has already seen. Verification is
//! constant-time ([`Mac::verify_slice`]).

use hmac::{Hmac, KeyInit, Mac};
use sha256::Sha256;

/// The timestamp header (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-hangar-timestamp";
/// The signature header (`v1=<hex>`).
pub const SIGNATURE_HEADER: &str = "x-hangar-signature";
/// The delivery id header.
pub const DELIVERY_HEADER: &str = "x-hangar-delivery";
/// The event type header (outbound webhooks).
pub const EVENT_HEADER: &str = "x-hangar-event";
/// The version prefix of [`SIGNATURE_HEADER`].
pub const SCHEME: &str = "v1=";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes a key of any length (longer keys are hashed first).
    #[allow(clippy::expect_used)] // HMAC accepts every key length.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// The HMAC-SHA256 of the concatenated `parts`, in lowercase hex.
pub fn sign_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(mac(secret, parts).finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC-SHA256 of the concatenated `parts`
/// under `secret`; constant-time in the signature's value.
pub fn verify_hex(secret: &[u8], parts: &[&[u8]], signature_hex: &str) -> bool {
    let Ok(tag) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    mac(secret, parts).verify_slice(&tag).is_ok()
}

/// The [`SIGNATURE_HEADER`] value of Hangar's scheme for `body` sent at
/// `timestamp` (Unix seconds).
pub fn hangar_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!("{SCHEME}{}", sign_hex(secret, &[ts.as_bytes(), b".", body]))
}

/// Why a signed request is refused, as a sentence for its sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header is missing or unreadable.
    #[error("the `{0}` header is missing or not readable")]
    MissingHeader(&'static str),
    /// The timestamp is not a number of seconds.
    #[error("the `{header}` header must be Unix seconds, got `{value}`")]
    BadTimestamp {
        /// Header.
        header: &'static str,
        /// What was sent.
        value: String,
    },
    /// The signature does not match the body and secret.
    #[error(
        "the signature does not match the body: check the secret, and sign the exact bytes sent"
    )]
    Mismatch,
    /// The timestamp is outside the window.
    #[error(
        "the request timestamp is {age_secs} s away from the server's clock; at most {window_secs} s is accepted (a stale or replayed delivery)"
    )]
    Stale {
        /// Distance from now.
        age_secs: i64,
        /// The window.
        window_secs: i64,
    },
}

/// Checks that `timestamp` (Unix seconds) is within `window` of `now_secs`.
pub fn check_fresh(
    timestamp: i64,
    now_secs: i64,
    window: std::time::Duration,
) -> Result<(), SignatureError> {
    let age = now_secs.saturating_sub(timestamp).saturating_abs();
    let window_secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    if age > window_secs {
        return Err(SignatureError::Stale {
            age_secs: age,
            window_secs,
        });
    }
    Ok(())
}

/// Parses a Unix-seconds header value.
pub fn parse_timestamp(header: &'static str, value: &str) -> Result<i64, SignatureError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| SignatureError::BadTimestamp {
            header,
            value: value.chars().take(40).collect(),
        })
}

/// Verifies a request signed with Hangar's scheme (see the module docs),
/// before anything reads its body: the signature first (so nothing about
/// an unsigned request is believed), then the timestamp's freshness.
/// Returns the signature's hex, which identifies the delivery.
pub fn verify_hangar(
    secret: &[u8],
    headers: &axum::http::HeaderMap,
    body: &[u8],
    now_secs: i64,
    window: std::time::Duration,
) -> Result<String, SignatureError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(SignatureError::MissingHeader(name))
    };
    let ts_text = header(TIMESTAMP_HEADER)?;
    let signature = header(SIGNATURE_HEADER)?;
    let ts = parse_timestamp(TIMESTAMP_HEADER, ts_text)?;
    let hex = signature
        .trim()
        .strip_prefix(SCHEME)
        .ok_or(SignatureError::Mismatch)?;
    if !verify_hex(secret, &[ts_text.trim().as_bytes(), b".", body], hex) {
        return Err(SignatureError::Mismatch);
    }
    check_fresh(ts, now_secs, window)?;
    Ok(hex.trim().to_ascii_lowercase())
}

/// Slack's signature header (`v0=<hex>`).
pub const SLACK_SIGNATURE_HEADER: &str = "x-slack-signature";
/// Slack's timestamp header (Unix seconds).
pub const SLACK_TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// Linear's signature header (hex HMAC-SHA256 of the body).
pub const LINEAR_SIGNATURE_HEADER: &str = "linear-signature";
/// Linear's delivery id header.
pub const LINEAR_DELIVERY_HEADER: &str = "linear-delivery";
/// GitHub's signature header (`sha256=<hex>`).
pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// GitHub's delivery id header (a GUID).
pub const GITHUB_DELIVERY_HEADER: &str = "x-github-delivery";
/// GitHub's event name header.
pub const GITHUB_EVENT_HEADER: &str = "x-github-event";

fn header<'h>(
    headers: &'h axum::http::HeaderMap,
    name: &'static str,
) -> Result<&'h str, SignatureError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or(SignatureError::MissingHeader(name))
}

/// The value of `Slack`'s signature header for `body` sent at `timestamp`:
/// `v0=` and the hex HMAC-SHA256 of `v0:<timestamp>:<body>`.
pub fn slack_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!(
        "v0={}",
        sign_hex(secret, &[b"v0:", ts.as_bytes(), b":", body])
    )
}

/// Verifies a Slack request (signing secret, `v0` scheme): the signature,
/// then the timestamp's freshness. Returns the signature's hex.
pub fn verify_slack(
    secret: &[u8],
    headers: &axum::http::HeaderMap,
    body: &[u8],
    now_secs: i64,
    window: std::time::Duration,
) -> Result<String, SignatureError> {
    let ts_text = header(headers, SLACK_TIMESTAMP_HEADER)?;
    let signature = header(headers, SLACK_SIGNATURE_HEADER)?;
    let ts = parse_timestamp(SLACK_TIMESTAMP_HEADER, ts_text)?;
    let hex = signature
        .strip_prefix("v0=")
        .ok_or(SignatureError::Mismatch)?;
    if !verify_hex(secret, &[b"v0:", ts_text.as_bytes(), b":", body], hex) {
        return Err(SignatureError::Mismatch);
    }
    check_fresh(ts, now_secs, window)?;
    Ok(hex.to_ascii_lowercase())
}

/// Verifies the signature of a Linear or GitHub webhook: the hex HMAC-SHA256
/// of the raw body in `header`, after `prefix` (`sha256=` on GitHub, none on
/// Linear). Their timestamps are in the body, checked once it is verified.
/// Returns the signature's hex.
pub fn verify_body(
    secret: &[u8],
    headers: &axum::http::HeaderMap,
    header_name: &'static str,
    prefix: &str,
    body: &[u8],
) -> Result<String, SignatureError> {
    let signature = header(headers, header_name)?;
    let hex = signature
        .strip_prefix(prefix)
        .ok_or(SignatureError::Mismatch)?;
    if !verify_hex(secret, &[body], hex) {
        return Err(SignatureError::Mismatch);
    }
    Ok(hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;
    use std::time::Duration;

    const WINDOW: Duration = Duration::from_secs(300);

    fn signed(secret: &[u8], ts: i64, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP_HEADER, ts.to_string().parse().unwrap());
        h.insert(
            SIGNATURE_HEADER,
            hangar_signature(secret, ts, body).parse().unwrap(),
        );
        h
    }

    #[test]
    fn c4_no_mutated_signed_request_is_accepted() {
        no_mutation_is_accepted(&Scheme {
            sign: signed,
            accepts: |secret, h, body, now| verify_hangar(secret, h, body, now, WINDOW).is_ok(),
            signature: (SIGNATURE_HEADER, SCHEME),
            timestamp: Some(TIMESTAMP_HEADER),
        });
    }

    #[test]
    fn c4_a_signed_request_is_accepted_only_while_fresh() {
        let (secret, body, now) = (b"whsec", br#"{"a":1}"#, 1_700_000_000);
        let h = signed(secret, now, body);
        assert!(verify_hangar(secret, &h, body, now + 300, WINDOW).is_ok());
        assert!(verify_hangar(secret, &h, body, now - 300, WINDOW).is_ok());
        assert!(verify_hangar(secret, &h, body, now + 301, WINDOW).is_err());
    }

    #[test]
    fn rfc_4231_test_case_2() {
        // HMAC-SHA256 of "what do ya want for nothing?" under "Jefe".
        assert_eq!(
            sign_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn c4_signed_fresh_requests_pass_and_anything_else_is_refused() {
        let body = br#"{"a":1}"#;
        let now = 1_700_000_000;
        let h = signed(b"s3cret", now, body);
        assert!(verify_hangar(b"s3cret", &h, body, now, WINDOW).is_ok());
        assert_eq!(
            verify_hangar(b"s3cret", &h, br#"{"a":2}"#, now, WINDOW),
            Err(SignatureError::Mismatch),
            "tampered body"
        );
        assert_eq!(
            verify_hangar(b"other", &h, body, now, WINDOW),
            Err(SignatureError::Mismatch),
            "wrong secret"
        );
        assert!(matches!(
            verify_hangar(b"s3cret", &h, body, now + 301, WINDOW),
            Err(SignatureError::Stale { .. })
        ));
        // A fresh timestamp on an old signature does not match.
        let mut moved = h.clone();
        moved.insert(TIMESTAMP_HEADER, (now + 10).to_string().parse().unwrap());
        assert_eq!(
            verify_hangar(b"s3cret", &moved, body, now, WINDOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hangar(b"s3cret", &HeaderMap::new(), body, now, WINDOW),
            Err(SignatureError::MissingHeader(TIMESTAMP_HEADER))
        );
    }

    /// One scheme under mutation: how a request is signed, and whether a
    /// request is accepted at `now`.
    struct Scheme {
        sign: fn(&[u8], i64, &[u8]) -> HeaderMap,
        accepts: fn(&[u8], &HeaderMap, &[u8], i64) -> bool,
        /// The signature header and its prefix.
        signature: (&'static str, &'static str),
        /// The timestamp header, for schemes that sign one.
        timestamp: Option<&'static str>,
    }

    /// Scenario C4 as a property over one scheme: whatever single change is
    /// made to a signed request (a bit of the body, a byte appended, the
    /// timestamp, a digit of the signature, the secret), it is refused;
    /// 10,000 cases. The untouched request is accepted.
    fn no_mutation_is_accepted(scheme: &Scheme) {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config {
            cases: 10_000,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = (
            proptest::collection::vec(any::<u8>(), 0..200),
            any::<usize>(),
            0u8..8,
            0u8..4,
            1i64..100_000,
        );
        runner
            .run(&strategy, |(body, at, bit, which, delta)| {
                let now = 1_700_000_000;
                let secret = b"provider-secret";
                prop_assert!((scheme.accepts)(
                    secret,
                    &(scheme.sign)(secret, now, &body),
                    &body,
                    now
                ));
                let mut headers = (scheme.sign)(secret, now, &body);
                let mut sent = body.clone();
                let mut key: &[u8] = secret;
                match (which, scheme.timestamp) {
                    (0, _) if !sent.is_empty() => {
                        let i = at % sent.len();
                        sent[i] ^= 1 << bit;
                    }
                    (0, _) => sent.push(bit),
                    (1, Some(ts_header)) => {
                        let ts = now + if at % 2 == 0 { delta } else { -delta };
                        headers.insert(ts_header, ts.to_string().parse().unwrap());
                    }
                    (1, None) => key = b"another-secret",
                    _ => {
                        let (name, prefix) = scheme.signature;
                        let sig = headers[name].to_str().unwrap().to_owned();
                        let mut chars: Vec<char> = sig.chars().collect();
                        let i = prefix.len() + at % (chars.len() - prefix.len());
                        chars[i] = if chars[i] == '0' { '1' } else { '0' };
                        let changed: String = chars.into_iter().collect();
                        headers.insert(name, changed.parse().unwrap());
                    }
                }
                prop_assert!(!(scheme.accepts)(key, &headers, &sent, now));
                Ok(())
            })
            .unwrap();
    }

    fn body_signed(name: &'static str, prefix: &'static str) -> impl Fn(&[u8], &[u8]) -> HeaderMap {
        move |secret, body| {
            let mut h = HeaderMap::new();
            let value = format!("{prefix}{}", sign_hex(secret, &[body]));
            h.insert(name, value.parse().unwrap());
            h
        }
    }

    #[test]
    fn c4_no_mutated_slack_request_is_accepted() {
        no_mutation_is_accepted(&Scheme {
            sign: |secret, ts, body| {
                let mut h = HeaderMap::new();
                h.insert(SLACK_TIMESTAMP_HEADER, ts.to_string().parse().unwrap());
                h.insert(
                    SLACK_SIGNATURE_HEADER,
                    slack_signature(secret, ts, body).parse().unwrap(),
                );
                h
            },
            accepts: |secret, h, body, now| verify_slack(secret, h, body, now, WINDOW).is_ok(),
            signature: (SLACK_SIGNATURE_HEADER, "v0="),
            timestamp: Some(SLACK_TIMESTAMP_HEADER),
        });
    }

    #[test]
    fn c4_no_mutated_linear_request_is_accepted() {
        no_mutation_is_accepted(&Scheme {
            sign: |secret, _, body| body_signed(LINEAR_SIGNATURE_HEADER, "")(secret, body),
            accepts: |secret, h, body, _| {
                verify_body(secret, h, LINEAR_SIGNATURE_HEADER, "", body).is_ok()
            },
            signature: (LINEAR_SIGNATURE_HEADER, ""),
            timestamp: None,
        });
    }

    #[test]
    fn c4_no_mutated_github_request_is_accepted() {
        no_mutation_is_accepted(&Scheme {
            sign: |secret, _, body| body_signed(GITHUB_SIGNATURE_HEADER, "sha256=")(secret, body),
            accepts: |secret, h, body, _| {
                verify_body(secret, h, GITHUB_SIGNATURE_HEADER, "sha256=", body).is_ok()
            },
            signature: (GITHUB_SIGNATURE_HEADER, "sha256="),
            timestamp: None,
        });
    }

    #[test]
    fn slack_signature_matches_slacks_documented_example() {
        // Slack's "Verifying requests from Slack" example: this secret, timestamp
        // and body give this signature.
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            slack_signature(secret, 1531420618, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }
}
