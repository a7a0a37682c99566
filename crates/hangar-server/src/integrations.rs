//! Integrations: the objects that let another system start runs, and the
//! webhook routes those systems call.
//!
//! An integration (`/api/v1/integrations`, [`crate::api::integrations`])
//! belongs to a team and says what its runs do (their configuration, a
//! prompt prefix, a template) and who may trigger them. Its provider calls
//! `POST /integrations/<kind>/<id>/events` ([`webhook_url`]) without any
//! Hangar credential: the request proves itself with an HMAC-SHA256
//! signature over the raw body made with the integration's secret
//! ([`signature`]), checked before a byte of the body is parsed; its
//! timestamp must be within [`SIGNATURE_WINDOW`]; its delivery is recorded
//! in the store ([`hangar_store::IntegrationStore::claim_delivery`]) so a
//! replay, even after a restart or on another replica, is refused. Only then
//! does the kind's handler read it and create a run through the run
//! service, as the API does, with the source and
//! [`RunTrigger`](hangar_protocol::integration::RunTrigger) recorded:
//! [`webhook`] for `kind = webhook` (a template makes the prompt), and
//! [`slack`], [`linear`] and [`github`], each with its provider's signature
//! scheme, whose requests come from a thread ([`provider`]: the asker is
//! linked to a Hangar user by e-mail, a later mention in the thread is a
//! follow-up) and whose replies go back there ([`replies`]).
//!
//! The webhook secret is sealed like a team secret ([`crate::secrets`]),
//! bound to the integration's id; it is never returned, logged or echoed.

pub mod github;
pub mod linear;
pub mod provider;
pub mod replies;
pub mod signature;
pub mod slack;
pub mod template;
pub mod webhook;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use hangar_protocol::SecretString;
use hangar_protocol::integration::IntegrationKind;
use hangar_store::IntegrationRecord;
use std::time::Duration;

/// How far a delivery's timestamp may be from the server's clock, either
/// way (Slack's rule, applied to every signed webhook).
pub const SIGNATURE_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Largest webhook secret, in bytes.
pub const MAX_SECRET_BYTES: usize = 4096;

/// The URL a provider posts an integration's events to.
pub fn webhook_url(public_url: &str, kind: IntegrationKind, id: &str) -> String {
    format!(
        "{}/integrations/{}/{id}/events",
        public_url.trim_end_matches('/'),
        kind.as_str()
    )
}

/// The name an integration's secret is sealed under: binds the ciphertext
/// to the integration, so it decrypts nowhere else.
fn sealed_name(id: &str) -> String {
    format!("integration:{id}")
}

/// Seals a webhook secret for the integration `id` of `team`: `(nonce, ciphertext)`.
pub fn seal_secret(
    app: &AppState,
    team: i64,
    id: &str,
    secret: &SecretString,
) -> ApiResult<(Vec<u8>, Vec<u8>)> {
    let value = secret.expose();
    if value.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "`secret` must not be empty: it is the secret the provider signs its webhooks with"
                .into(),
        ));
    }
    if value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::BadRequest(format!(
            "`secret` is larger than {MAX_SECRET_BYTES} bytes"
        )));
    }
    app.secrets
        .seal(team, &sealed_name(id), value)
        .ok_or_else(|| ApiError::Internal("could not encrypt the integration secret".into()))
}

/// The webhook secret of a stored integration.
pub fn open_secret(app: &AppState, record: &IntegrationRecord) -> ApiResult<SecretString> {
    app.secrets
        .open(
            record.team_id,
            &sealed_name(&record.id),
            &record.secret_nonce,
            &record.secret_ciphertext,
        )
        .map(SecretString::from)
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "the secret of integration {} does not decrypt with this server's master key",
                record.id
            ))
        })
}

/// The kind of a stored integration.
pub fn kind_of(record: &IntegrationRecord) -> ApiResult<IntegrationKind> {
    IntegrationKind::parse(&record.kind).ok_or_else(|| {
        ApiError::Internal(format!(
            "integration {} has an unknown kind `{}`",
            record.id, record.kind
        ))
    })
}
