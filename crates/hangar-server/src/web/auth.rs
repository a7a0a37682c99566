//! The dashboard's sign-in: local accounts with argon2id passwords, web
//! sessions carried by the `hangar_session` cookie, CSRF protection, and a
//! small backoff against password guessing.
//!
//! Owns: password hashing and checking ([`hash_password`], [`check_password`]
//! with a constant-time failure path), the session cookie ([`open_session`],
//! [`session_cookie`], [`authenticate_session`]), the CSRF rule
//! ([`csrf_layer`]: a mutating request authenticated by the cookie must carry
//! `X-Hangar-CSRF` equal to [`csrf_token`]) and [`LoginThrottle`].
//!
//! The store only ever sees the SHA-256 of a session token. The CSRF token is
//! derived from the session token (a keyed hash), so it needs no storage and a
//! database dump reveals neither.

use crate::auth::{Principal, hash_secret};
use crate::error::{ApiError, ApiResult};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hangar_protocol::Timestamp;
use hangar_store::{Store, UserRecord, WebSessionRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "hangar_session";
/// Header a cookie-authenticated mutating request must carry.
pub const CSRF_HEADER: &str = "x-hangar-csrf";
/// How long a web session lives.
pub const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (hashing cost grows with length).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Prefix of session tokens (never shown to users; helps spot leaks in logs).
const SESSION_PREFIX: &str = "hw_";

/// Checks a new password's length; the error says what is accepted.
pub fn validate_password(password: &str) -> ApiResult<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(ApiError::BadRequest(format!(
            "the password is too short: use at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(ApiError::BadRequest(format!(
            "the password is too long: use at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

fn hash_blocking(password: &str) -> ApiResult<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| ApiError::Internal(format!("password salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))
}

/// Hashes a password with argon2id (default parameters: 19 MiB, 2 passes)
/// off the async threads; returns the PHC string to store.
pub async fn hash_password(password: &str) -> ApiResult<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing task: {e}")))?
}

/// A hash of a random password, checked when there is no real hash so that a
/// missing account costs as much time as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut pw = [0u8; 24];
        rand::rng().fill_bytes(&mut pw);
        hash_blocking(&hex::encode(pw)).unwrap_or_default()
    })
}

fn verify_blocking(hash: Option<&str>, password: &str) -> bool {
    let real = hash.and_then(|h| PasswordHash::new(h).ok());
    let (parsed, genuine) = match real {
        Some(p) => (Some(p), true),
        None => (PasswordHash::new(dummy_hash()).ok(), false),
    };
    let matched = parsed.is_some_and(|p| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &p)
            .is_ok()
    });
    matched && genuine
}

/// Whether `password` matches `hash`. Always runs one argon2 verification,
/// also when `hash` is `None` (no such user, no password set), so failures
/// take the same time whatever their cause.
pub async fn check_password(hash: Option<String>, password: &str) -> bool {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || verify_blocking(hash.as_deref(), &password))
        .await
        .unwrap_or(false)
}

/// Argon2 verifications allowed at once (each takes ~19 MiB and a core).
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 3;
/// How long a sign-in waits for a verification slot before it is refused.
pub const VERIFICATION_WAIT: Duration = Duration::from_secs(2);

/// Bounds concurrent password verifications, so a sign-in flood cannot take
/// every core and all memory: a caller waits at most [`VERIFICATION_WAIT`]
/// for a slot, then gets `None` (answer 503 with `Retry-After`).
pub async fn check_password_bounded(hash: Option<String>, password: &str) -> Option<bool> {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFICATIONS));
    let permit = tokio::time::timeout(VERIFICATION_WAIT, slots.acquire())
        .await
        .ok()?
        .ok()?;
    let ok = check_password(hash, password).await;
    drop(permit);
    Some(ok)
}

/// Refuses a WebSocket upgrade authenticated by the dashboard cookie (no
/// `Authorization` header) whose `Origin` is not this server's own origin:
/// the `Host` the request was sent to, or the configured public URL. A page
/// on another site cannot open a socket that rides on the user's session.
/// Bearer-authenticated upgrades (CLI, workers, agents) are unaffected, and so
/// are requests without `Origin` (browsers always send one on WebSockets).
pub fn check_websocket_origin(headers: &HeaderMap, public_url: &str) -> ApiResult<()> {
    if headers.contains_key(header::AUTHORIZATION) || session_cookie(headers).is_none() {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin_text = origin.to_str().unwrap_or_default();
    let refused = || {
        ApiError::Forbidden(format!(
            "cross-origin WebSocket refused: the request carries the dashboard cookie but its \
             Origin `{origin_text}` is not this server ({public_url}); open the socket from the \
             dashboard itself, or authenticate with `Authorization: Bearer <key>`"
        ))
    };
    let Ok(parsed) = url::Url::parse(origin_text) else {
        return Err(refused());
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(refused());
    }
    let own = url::Url::parse(public_url)
        .ok()
        .map(|u| u.origin().ascii_serialization());
    if own.as_deref() == Some(parsed.origin().ascii_serialization().as_str()) {
        return Ok(());
    }
    let authority = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => return Err(refused()),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !host.is_empty() && host.eq_ignore_ascii_case(&authority) {
        return Ok(());
    }
    Err(refused())
}

/// The CSRF token of a session: a keyed hash of its token, rendered into
/// pages and echoed in `X-Hangar-CSRF`.
pub fn csrf_token(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"hangar-csrf\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// The session token from the request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Resolves a session cookie to the signed-in user.
pub async fn authenticate_session(store: &dyn Store, token: &str) -> ApiResult<Principal> {
    let expired = || {
        ApiError::Unauthenticated(
            "your dashboard session has expired or was ended; sign in again at /login".to_owned(),
        )
    };
    if !token.starts_with(SESSION_PREFIX) {
        return Err(expired());
    }
    let now = Timestamp::now().unix_millis();
    let session = store
        .web_session(&hash_secret(token), now)
        .await?
        .ok_or_else(expired)?;
    Ok(Principal::WebSession {
        team_id: session.team_id,
        user_id: session.user_id,
    })
}

/// Starts a session for `user`; returns the cookie token (never stored).
pub async fn open_session(store: &dyn Store, user: &UserRecord) -> ApiResult<String> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("{SESSION_PREFIX}{}", hex::encode(raw));
    let now = Timestamp::now().unix_millis();
    // Expired sessions are swept when new ones start.
    if let Err(e) = store.purge_expired_web_sessions(now).await {
        tracing::warn!(error = %e, "could not purge expired web sessions");
    }
    store
        .create_web_session(WebSessionRecord {
            token_hash: hash_secret(&token),
            team_id: user.team_id,
            user_id: user.id,
            created_at: now,
            expires_at: now + SESSION_TTL.as_millis() as i64,
        })
        .await?;
    Ok(token)
}

/// Ends the session the request carries (logout).
pub async fn close_session(store: &dyn Store, token: &str) -> ApiResult<()> {
    store.delete_web_session(&hash_secret(token)).await?;
    Ok(())
}

/// `Set-Cookie` for a new session: HttpOnly, SameSite=Strict, Path=/, and
/// Secure when the server is reached over https.
pub fn set_cookie(token: &str, secure: bool) -> HeaderValue {
    cookie_value(token, SESSION_TTL.as_secs(), secure)
}

/// `Set-Cookie` that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    cookie_value("", 0, secure)
}

fn cookie_value(token: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Paths that check their own CSRF field (HTML forms, not `fetch`).
const FORM_PATHS: &[&str] = &["/login", "/logout", "/account/password"];

/// Refuses a mutating request (POST, PUT, PATCH, DELETE) that is
/// authenticated by the session cookie (no `Authorization` header) unless it
/// carries `X-Hangar-CSRF` matching the session: 403.
pub async fn csrf_layer(req: Request, next: Next) -> Response {
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if mutating
        && !req.headers().contains_key(header::AUTHORIZATION)
        && !FORM_PATHS.contains(&req.uri().path())
        && let Some(token) = session_cookie(req.headers())
    {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !constant_time_eq(sent.as_bytes(), csrf_token(token).as_bytes()) {
            return ApiError::Forbidden(
                "missing or wrong `X-Hangar-CSRF` header: a request authenticated by the \
                 dashboard cookie must echo the page's CSRF token (or use an API key)"
                    .to_owned(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Failed sign-ins per client address and per email: after
/// [`LoginThrottle::FREE_FAILURES`] failures, each new attempt must wait an
/// exponentially growing delay (capped), reset by a successful sign-in.
#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl LoginThrottle {
    /// Failures allowed before any delay.
    pub const FREE_FAILURES: u32 = 5;
    /// Longest delay between attempts.
    pub const MAX_DELAY: Duration = Duration::from_secs(300);
    /// Entries kept before old ones are dropped.
    const MAX_ENTRIES: usize = 10_000;

    fn delay(count: u32) -> Duration {
        if count < Self::FREE_FAILURES {
            return Duration::ZERO;
        }
        let exp = (count - Self::FREE_FAILURES).min(16);
        Duration::from_secs(1u64 << exp).min(Self::MAX_DELAY)
    }

    /// How long the caller must still wait before trying any of `keys`.
    pub fn wait(&self, keys: &[String]) -> Option<Duration> {
        let map = self.failures.lock().ok()?;
        let now = Instant::now();
        keys.iter()
            .filter_map(|k| map.get(k))
            .filter_map(|f| (f.last + Self::delay(f.count)).checked_duration_since(now))
            .filter(|d| !d.is_zero())
            .max()
    }

    /// Records a failed attempt for each key.
    pub fn failed(&self, keys: &[String]) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        let now = Instant::now();
        if map.len() >= Self::MAX_ENTRIES {
            map.retain(|_, f| now.duration_since(f.last) < Self::MAX_DELAY);
        }
        for k in keys {
            let f = map.entry(k.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
    }

    /// Forgets the failures of `keys` after a successful sign-in.
    pub fn succeeded(&self, keys: &[String]) {
        if let Ok(mut map) = self.failures.lock() {
            for k in keys {
                map.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify_and_wrong_ones_fail() {
        let hash = hash_blocking("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_blocking(Some(&hash), "correct horse battery"));
        assert!(!verify_blocking(Some(&hash), "correct horse batterY"));
        assert!(!verify_blocking(None, "correct horse battery"));
        assert!(!verify_blocking(Some("not a phc string"), "x"));
        // The dummy hash never lets anything in, even its own password.
        assert!(!verify_blocking(Some(dummy_hash()), ""));
    }

    #[test]
    fn cookies_parse_and_render() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hangar_session=hs_abc ; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("hs_abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("hangar_session="));
        assert_eq!(session_cookie(&h), None);
        let c = set_cookie("hs_x", true).to_str().unwrap().to_owned();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(
            !set_cookie("hs_x", false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
        assert!(clear_cookie(false).to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        assert_eq!(csrf_token("hs_a"), csrf_token("hs_a"));
        assert_ne!(csrf_token("hs_a"), csrf_token("hs_b"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn throttle_backs_off_after_free_failures_and_resets() {
        let t = LoginThrottle::default();
        let keys = vec!["ip:1".to_owned(), "email:a@b".to_owned()];
        for _ in 0..LoginThrottle::FREE_FAILURES - 1 {
            t.failed(&keys);
        }
        assert_eq!(t.wait(&keys), None);
        t.failed(&keys);
        let wait = t.wait(&keys).unwrap();
        assert!(wait <= Duration::from_secs(1) && !wait.is_zero());
        // Another address trying the same email waits too.
        assert!(
            t.wait(&["ip:2".to_owned(), "email:a@b".to_owned()])
                .is_some()
        );
        t.succeeded(&keys);
        assert_eq!(t.wait(&keys), None);
        assert_eq!(LoginThrottle::delay(100), LoginThrottle::MAX_DELAY);
    }
}

/// How long a sign-in link printed by `hangar up` works.
pub const SIGN_IN_LINK_TTL: Duration = Duration::from_secs(15 * 60);

/// Single-use sign-in links (`/login/link/<token>`), kept in this process's
/// memory only: `hangar up` prints one for whoever started it; a restart
/// makes the old one worthless. Only the SHA-256 of a token is kept.
#[derive(Default)]
pub struct SignInLinks {
    links: Mutex<HashMap<Vec<u8>, (i64, Instant)>>,
}

impl SignInLinks {
    /// A fresh token that signs `user_id` in once, within [`SIGN_IN_LINK_TTL`].
    pub fn mint(&self, user_id: i64) -> String {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        links.retain(|_, (_, expires)| *expires > now);
        links.insert(hash_secret(&token), (user_id, now + SIGN_IN_LINK_TTL));
        token
    }

    /// The user a live, unused token signs in; the token is spent either way.
    pub fn take(&self, token: &str) -> Option<i64> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let (user_id, expires) = links.remove(&hash_secret(token))?;
        (expires > Instant::now()).then_some(user_id)
    }
}
