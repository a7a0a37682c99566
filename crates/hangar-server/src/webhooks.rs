//! Outbound webhooks: a team's subscriptions to run lifecycle events (the
//! events of `/agent/events`), delivered signed, retried, and logged.
//!
//! The store is the outbox, so a restart loses nothing: [`run`] (one task
//! per replica) turns each subscription's new lifecycle events into stored
//! deliveries (the subscription's cursor moves in the same transaction,
//! fenced against other replicas), then sends the due ones, each taken by
//! one replica per attempt. A 2xx answer delivers it; anything else is
//! retried with exponential backoff (`retry_base` doubling up to
//! `retry_max`) until `retry_window` (24 h) after it was enqueued, then it
//! is `failed`. Every attempt is recorded (state, status, error, attempts)
//! and a delivery can be sent again from the API (`redeliver`). A test
//! delivery (`ping`, [`enqueue_ping`]) takes the same path.
//!
//! Each request is signed with the subscription's secret as the generic
//! inbound webhooks are ([`crate::integrations::signature`]): headers
//! `X-Hangar-Timestamp`, `X-Hangar-Signature: v1=<hex HMAC-SHA256 of
//! "<timestamp>.<body>">`, `X-Hangar-Delivery`, `X-Hangar-Event`.
//!
//! **SSRF guard.** A target may not be, or resolve to, a loopback,
//! link-local, private, unspecified, multicast or cloud metadata address
//! (`hangar_protocol::repository::classify_ip`), checked when the
//! subscription is created and again at every delivery, which then
//! connects to the address it checked (no second lookup) and follows no
//! redirect. `allow_internal_targets: true` lifts it (tests, air-gapped
//! installs whose receivers live on private networks).

use crate::AppState;
use crate::config::humantime_serde_compat;
use crate::integrations::signature::{
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, hangar_signature,
};
use hangar_protocol::Timestamp;
use hangar_protocol::repository::{classify_host, classify_ip};
use hangar_store::{NewWebhookDelivery, WebhookAttempt, WebhookDeliveryRecord, WebhookRecord};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Lifecycle events read per subscription per pass.
const FAN_OUT_BATCH: i64 = 200;
/// Deliveries sent per pass.
const DELIVERY_BATCH: i64 = 50;

/// `webhooks:` in the server config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Let subscriptions target loopback, link-local, private and metadata
    /// addresses (tests, air-gapped installs). Default false.
    pub allow_internal_targets: bool,
    /// How often new events and due deliveries are looked for.
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// The first retry's delay; each next one doubles.
    #[serde(with = "humantime_serde_compat")]
    pub retry_base: Duration,
    /// The longest delay between two attempts.
    #[serde(with = "humantime_serde_compat")]
    pub retry_max: Duration,
    /// How long a delivery is retried after it was enqueued (or redelivered).
    #[serde(with = "humantime_serde_compat")]
    pub retry_window: Duration,
    /// How long one attempt may take.
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_internal_targets: false,
            poll_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
            retry_window: Duration::from_secs(24 * 3600),
            request_timeout: Duration::from_secs(10),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The delay before attempt `attempts + 1`: `base · 2^(attempts-1)`, at most `max`.
pub fn backoff(config: &WebhookConfig, attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    config
        .retry_base
        .saturating_mul(2u32.saturating_pow(exp))
        .min(config.retry_max)
}

/// Why a target URL is refused, as a sentence for the user.
pub fn check_url(url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`url` `{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`url` `{url}` must be http or https"));
    }
    if parsed.host_str().is_none() {
        return Err(format!("`url` `{url}` has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "`url` `{url}` must not carry credentials; the signature authenticates Hangar"
        ));
    }
    Ok(parsed)
}

fn refused(host: &str, class: &str) -> String {
    format!(
        "webhook target `{host}` is a {class} address, which outbound webhooks may not reach \
         (SSRF guard); use a public address, or an operator sets \
         `webhooks: {{allow_internal_targets: true}}` for tests and air-gapped installs"
    )
}

/// The SSRF guard on the URL as written (an IP literal, `localhost`, a
/// metadata name), for a clear error when a subscription is created; names
/// are resolved and checked at every delivery ([`resolve_target`]), so an
/// install whose DNS is not reachable yet can still subscribe.
pub fn check_target_host(url: &url::Url, allow_internal: bool) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    match classify_host(host) {
        Some(class) if !allow_internal => Err(refused(host, class.as_str())),
        _ => Ok(()),
    }
}

/// The addresses a delivery to `url` may connect to: every address of its
/// host, each checked against the SSRF guard unless `allow_internal`.
pub async fn resolve_target(
    url: &url::Url,
    allow_internal: bool,
) -> Result<Vec<SocketAddr>, String> {
    check_target_host(url, allow_internal)?;
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("webhook target `{host}` does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("webhook target `{host}` has no address"));
    }
    if !allow_internal && let Some(class) = addrs.iter().find_map(|a| classify_ip(a.ip())) {
        return Err(refused(host, class.as_str()));
    }
    Ok(addrs)
}

/// The JSON body of a delivery.
fn payload(app: &AppState, delivery_id: &str, e: &hangar_store::LifecycleEventRecord) -> String {
    serde_json::json!({
        "id": delivery_id,
        "type": e.event_type,
        "created_at": Timestamp::now(),
        "data": {
            "event_type": e.event_type,
            "run_id": e.run_id,
            "execution_id": e.execution_id,
            "ref_id": e.ref_id,
            "sequence": e.sequence,
            "occurred_at": Timestamp::from_unix_millis(e.occurred_at),
            "run_url": format!("{}/runs/{}", app.public_url, e.run_id),
        }
    })
    .to_string()
}

/// The event type of a test delivery (`POST /webhooks/{id}/test`).
pub const PING_EVENT: &str = "ping";

/// Enqueues a signed `ping` to a team's subscription through the outbox, so
/// it is sent, retried and logged like every delivery; `NotFound` for
/// another team's subscription.
pub async fn enqueue_ping(
    app: &AppState,
    team_id: i64,
    webhook_id: &str,
) -> Result<WebhookDeliveryRecord, hangar_store::StoreError> {
    let id = hangar_protocol::RunId::generate().0;
    let now = Timestamp::now();
    let body = serde_json::json!({
        "id": id,
        "type": PING_EVENT,
        "created_at": now,
        "data": {
            "event_type": PING_EVENT,
            "webhook_id": webhook_id,
            "message": "A test delivery from Hangar: the subscription reaches this URL.",
        }
    });
    let at = now.unix_millis();
    let delivery = NewWebhookDelivery {
        payload: body.to_string(),
        id,
        event_type: PING_EVENT.to_owned(),
        sequence: 0,
        created_at: at,
        retry_until: at + millis(app.config.webhooks.retry_window),
    };
    app.store
        .enqueue_webhook_ping(team_id, webhook_id, &delivery)
        .await
}

/// Turns one subscription's new lifecycle events into deliveries.
async fn fan_out(app: &AppState, hook: &WebhookRecord) -> Result<(), hangar_store::StoreError> {
    let events = app
        .store
        .lifecycle_events(
            hook.team_id,
            &hangar_store::LifecycleQuery {
                run_ids: Vec::new(),
                since: hook.cursor,
                limit: FAN_OUT_BATCH,
            },
        )
        .await?;
    let Some(last) = events.last().map(|e| e.sequence) else {
        return Ok(());
    };
    let wanted: Vec<String> = serde_json::from_str(&hook.event_types).unwrap_or_default();
    let now = Timestamp::now().unix_millis();
    let deliveries: Vec<NewWebhookDelivery> = events
        .iter()
        .filter(|e| wanted.is_empty() || wanted.contains(&e.event_type))
        .map(|e| {
            let id = hangar_protocol::RunId::generate().0;
            NewWebhookDelivery {
                payload: payload(app, &id, e),
                id,
                event_type: e.event_type.clone(),
                sequence: e.sequence,
                created_at: now,
                retry_until: now + millis(app.config.webhooks.retry_window),
            }
        })
        .collect();
    app.store
        .enqueue_webhook_deliveries(&hook.id, hook.cursor, last, &deliveries)
        .await?;
    Ok(())
}

/// One attempt: `Ok(status)` for an answer, `Err(why)` for none.
async fn send(
    app: &AppState,
    hook: &WebhookRecord,
    d: &WebhookDeliveryRecord,
) -> Result<u16, String> {
    let config = &app.config.webhooks;
    let url = check_url(&hook.url)?;
    let addrs = resolve_target(&url, config.allow_internal_targets).await?;
    let secret = app
        .secrets
        .open(
            hook.team_id,
            &sealed_name(&hook.id),
            &hook.secret_nonce,
            &hook.secret_ciphertext,
        )
        .ok_or("the subscription's secret does not decrypt with this server's master key")?;
    let host = url.host_str().unwrap_or_default().to_owned();
    // Connect to the addresses just checked, never to a second lookup's.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.request_timeout)
        .resolve_to_addrs(&host, &addrs)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let ts = Timestamp::now().unix_millis().div_euclid(1000);
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("hangar-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(
            SIGNATURE_HEADER,
            hangar_signature(secret.as_bytes(), ts, d.payload.as_bytes()),
        )
        .header(DELIVERY_HEADER, &d.id)
        .header(EVENT_HEADER, &d.event_type)
        .body(d.payload.clone())
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    Ok(resp.status().as_u16())
}

/// Sends one due delivery if this replica takes it, and records the attempt.
async fn attempt(
    app: &AppState,
    d: &WebhookDeliveryRecord,
) -> Result<(), hangar_store::StoreError> {
    let config = &app.config.webhooks;
    let now = Timestamp::now().unix_millis();
    let lease = now + millis(config.request_timeout) + 60_000;
    if !app
        .store
        .take_webhook_delivery(&d.id, d.next_attempt_at, lease)
        .await?
    {
        return Ok(());
    }
    let hook = match app.store.webhook(d.team_id, &d.webhook_id).await {
        Ok(h) => h,
        Err(hangar_store::StoreError::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    let result = send(app, &hook, d).await;
    let at = Timestamp::now().unix_millis();
    let next = at + millis(backoff(config, d.attempts + 1));
    let (state, status, error) = match result {
        Ok(code) if (200..300).contains(&code) => ("delivered", Some(code), None),
        Ok(code) => ("pending", Some(code), Some(format!("HTTP {code}"))),
        Err(why) => ("pending", None, Some(why)),
    };
    let state = if state == "pending" && next > d.retry_until {
        "failed"
    } else {
        state
    };
    tracing::info!(
        webhook_id = %hook.id,
        delivery_id = %d.id,
        event_type = %d.event_type,
        state,
        status = status.map(i64::from).unwrap_or(0),
        attempt = d.attempts + 1,
        "webhook delivery attempt"
    );
    app.store
        .record_webhook_attempt(
            &d.id,
            &WebhookAttempt {
                state: state.to_owned(),
                status: status.map(i64::from),
                error,
                next_attempt_at: next,
                at,
            },
        )
        .await
}

/// One pass: fan out every subscription, then send what is due.
async fn pass(app: &AppState) -> Result<(), hangar_store::StoreError> {
    for hook in app.store.all_webhooks().await? {
        fan_out(app, &hook).await?;
    }
    let now = Timestamp::now().unix_millis();
    for d in app
        .store
        .due_webhook_deliveries(now, DELIVERY_BATCH)
        .await?
    {
        attempt(app, &d).await?;
    }
    Ok(())
}

/// How often the inbound de-duplication log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Inbound delivery keys older than this are forgotten: a replay that old
/// is refused as stale by its timestamp (`integrations::SIGNATURE_WINDOW`).
const KEEP_DELIVERY_KEYS: Duration = Duration::from_secs(3600);

/// The outbox loop of this replica, until `shutdown`; it also prunes the
/// inbound webhooks' de-duplication log.
pub async fn run(app: AppState, shutdown: CancellationToken) {
    let mut pruned_at = std::time::Instant::now();
    loop {
        if let Err(e) = pass(&app).await {
            tracing::warn!(error = %e, "webhook outbox pass failed; retrying");
        }
        if pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = std::time::Instant::now();
            let before = Timestamp::now().unix_millis() - millis(KEEP_DELIVERY_KEYS);
            if let Err(e) = app.store.prune_deliveries(before).await {
                tracing::warn!(error = %e, "pruning inbound webhook delivery keys failed");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(app.config.webhooks.poll_interval) => {}
        }
    }
}

/// The name a subscription's secret is sealed under.
pub fn sealed_name(id: &str) -> String {
    format!("webhook:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = WebhookConfig::default();
        assert_eq!(backoff(&c, 1), Duration::from_secs(10));
        assert_eq!(backoff(&c, 2), Duration::from_secs(20));
        assert_eq!(backoff(&c, 5), Duration::from_secs(160));
        assert_eq!(backoff(&c, 20), Duration::from_secs(3600));
        assert_eq!(backoff(&c, 1000), Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn ssrf_guard_refuses_internal_targets_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://169.254.169.254/latest",
            "http://10.1.2.3/x",
            "http://[::1]/x",
            "http://0.0.0.0/x",
        ] {
            let parsed = check_url(url).unwrap();
            let e = resolve_target(&parsed, false).await.unwrap_err();
            assert!(
                e.contains("SSRF guard") && e.contains("allow_internal_targets"),
                "{url}: {e}"
            );
        }
        let local = check_url("http://127.0.0.1:9/hook").unwrap();
        assert!(resolve_target(&local, true).await.is_ok());
        assert!(check_url("ftp://example.com").is_err());
        assert!(check_url("https://user:pw@example.com").is_err());
    }
}
