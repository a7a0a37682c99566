//! Rate limits of the REST API: a token bucket per credential (API key or
//! dashboard session) and one per team, so one team's flood answers 429 to
//! that team only.
//!
//! Limited: every `/api/v1` route called with an API key or a dashboard
//! session. Not limited: run tokens (agents), the worker and session
//! WebSockets, the LLM gateway (`/llm/…`, with its own `llm_gateway` budgets), the
//! OpenAPI document, health checks, and requests without credentials (they
//! are refused anyway). A refused request gets `429 application/problem+json`
//! with `Retry-After` (whole seconds).

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use hangar_protocol::API_KEY_PREFIX;
use hangar_store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `rate_limit:` in the server configuration. A rate of 0 disables that bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second per API key (or dashboard session).
    pub requests_per_second: u32,
    /// Requests a key may send at once before the sustained rate applies.
    pub burst: u32,
    /// Sustained requests per second per team, all its keys together.
    pub team_requests_per_second: u32,
    /// Burst per team.
    pub team_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_second: 1000,
            burst: 2000,
            team_requests_per_second: 2000,
            team_burst: 5000,
        }
    }
}

/// How long a credential's team is remembered (a key's team never changes).
const TEAM_CACHE_TTL: Duration = Duration::from_secs(300);
/// Entries in the credential → team cache before it is cleared.
const TEAM_CACHE_MAX: usize = 10_000;
/// Checks between sweeps of idle buckets.
const SWEEP_EVERY: u64 = 10_000;

/// The buckets, shared by every request.
pub struct RateLimiter {
    keys: Option<DefaultKeyedRateLimiter<[u8; 32]>>,
    teams: Option<DefaultKeyedRateLimiter<i64>>,
    team_of: Mutex<HashMap<[u8; 32], (i64, Instant)>>,
    checks: AtomicU64,
    store: Arc<dyn Store>,
}

fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl RateLimiter {
    /// Buckets for `config`.
    pub fn new(config: &RateLimitConfig, store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(RateLimiter {
            keys: quota(config.requests_per_second, config.burst)
                .map(DefaultKeyedRateLimiter::keyed),
            teams: quota(config.team_requests_per_second, config.team_burst)
                .map(DefaultKeyedRateLimiter::keyed),
            team_of: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
            store,
        })
    }

    /// Whether any bucket is on.
    pub fn enabled(&self) -> bool {
        self.keys.is_some() || self.teams.is_some()
    }

    async fn team_for(&self, credential: &[u8; 32], headers: &HeaderMap) -> Option<i64> {
        {
            let cache = self.team_of.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((team, at)) = cache.get(credential)
                && at.elapsed() < TEAM_CACHE_TTL
            {
                return Some(*team);
            }
        }
        // An invalid credential has no team; the handler answers 401.
        let principal = crate::auth::authenticate(self.store.as_ref(), headers)
            .await
            .ok()?;
        let team = principal.team_id();
        let mut cache = self.team_of.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= TEAM_CACHE_MAX {
            cache.clear();
        }
        cache.insert(*credential, (team, Instant::now()));
        Some(team)
    }

    fn sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            if let Some(k) = &self.keys {
                k.retain_recent();
                k.shrink_to_fit();
            }
            if let Some(t) = &self.teams {
                t.retain_recent();
                t.shrink_to_fit();
            }
        }
    }

    /// `Err(wait)` when the request must be refused.
    async fn check(&self, path: &str, headers: &HeaderMap) -> Result<(), Duration> {
        let Some(credential) = limited_credential(path, headers) else {
            return Ok(());
        };
        self.sweep();
        if let Some(keys) = &self.keys
            && let Err(not_until) = keys.check_key(&credential)
        {
            return Err(not_until.wait_time_from(keys.clock().now()));
        }
        if let Some(teams) = &self.teams
            && let Some(team) = self.team_for(&credential, headers).await
            && let Err(not_until) = teams.check_key(&team)
        {
            return Err(not_until.wait_time_from(teams.clock().now()));
        }
        Ok(())
    }
}

/// Paths under `/api/v1` that no bucket applies to.
fn exempt(path: &str) -> bool {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    path.starts_with("/llm/")
        || path == "/openapi.json"
        || path == "/selfhosted/worker/ws"
        || (path.starts_with("/agent/runs/") && path.ends_with("/session"))
}

/// The SHA-256 of the credential a limited request carries: an API key or a
/// dashboard session cookie. `None` for run tokens, exempt paths and
/// anonymous requests.
fn limited_credential(path: &str, headers: &HeaderMap) -> Option<[u8; 32]> {
    if exempt(path) {
        return None;
    }
    let secret = match headers.get(header::AUTHORIZATION) {
        Some(v) => {
            let v = v.to_str().ok()?;
            let key = v.strip_prefix("Bearer ").unwrap_or(v).trim();
            if !key.starts_with(API_KEY_PREFIX) {
                return None;
            }
            key.as_bytes().to_vec()
        }
        None => headers.get(header::COOKIE)?.as_bytes().to_vec(),
    };
    Some(Sha256::digest(&secret).into())
}

/// Middleware over the `/api/v1` routes.
pub async fn layer(State(limiter): State<Arc<RateLimiter>>, req: Request, next: Next) -> Response {
    if !limiter.enabled() {
        return next.run(req).await;
    }
    let checked = limiter.check(req.uri().path(), req.headers()).await;
    match checked {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            crate::metrics::get().rate_limited("api");
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let secs = secs.max(1);
            let mut resp = ApiError::TooManyRequests(format!(
                "rate limit exceeded for this API key or its team; retry in {secs}s \
                 (the server's `rate_limit` setting allows a sustained rate with a burst)"
            ))
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

/// Concurrent public-link streams allowed per link.
pub const PUBLIC_STREAMS_PER_LINK: usize = 20;
/// Concurrent public-link streams allowed per client address.
pub const PUBLIC_STREAMS_PER_ADDRESS: usize = 5;

/// Counts open public-link streams per link and per client address.
#[derive(Default)]
pub struct StreamSlots {
    open: Mutex<HashMap<String, usize>>,
}

/// One open stream; its slots are released when it is dropped.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    keys: Vec<String>,
}

impl StreamSlots {
    /// Takes a slot for each `(key, limit)`, or none when any is full.
    pub fn acquire(self: &Arc<Self>, keys: &[(String, usize)]) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if keys
            .iter()
            .any(|(k, limit)| open.get(k).copied().unwrap_or(0) >= *limit)
        {
            return None;
        }
        for (k, _) in keys {
            *open.entry(k.clone()).or_insert(0) += 1;
        }
        Some(StreamSlot {
            slots: self.clone(),
            keys: keys.iter().map(|(k, _)| k.clone()).collect(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some(n) = open.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_disables_a_bucket() {
        assert!(quota(0, 10).is_none());
        assert!(quota(5, 0).is_some());
    }

    #[test]
    fn sockets_and_the_gateway_are_exempt() {
        assert!(exempt("/llm/chat/completions"));
        assert!(exempt("/agent/runs/abc/session"));
        assert!(exempt("/selfhosted/worker/ws"));
        assert!(!exempt("/agent/runs"));
        assert!(!exempt("/agent/runs/abc"));
    }
}
