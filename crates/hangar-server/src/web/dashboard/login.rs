//! `/login` and `/logout`: the sign-in form, checked against the argon2id
//! hash with a constant-time failure path and a per-address and per-email
//! backoff, and sign-out, which ends the session in the store. Also the
//! single-use sign-in link `hangar up` prints (`/login/link/<token>`) and
//! the form that sets the password afterwards (`/account/password`).

use super::{bare_page, viewer};
use crate::AppState;
use crate::web::auth as web_auth;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hangar_store::UserRecord;
use maud::html;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Largest sign-in form accepted.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// Where to go after signing in: a local path only (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.contains("://")
                && !n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn secure(app: &AppState) -> bool {
    app.public_url.starts_with("https://")
}

fn form(next: &str, email: &str, error: Option<&str>, status: StatusCode) -> Response {
    bare_page(
        status,
        "Sign in",
        html! {
            section.card.narrow.login {
                h1 { span aria-hidden="true" { "▰ " } "Hangar" }
                p.muted { "Sign in to watch and steer your team's agents." }
                @if let Some(error) = error {
                    p.error #login-error role="alert" { (error) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    label for="email" { "Email" }
                    input #email type="email" name="email" value=(email) autocomplete="username"
                        required autofocus[email.is_empty()]
                        aria-describedby=[error.map(|_| "login-error")];
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password"
                        required autofocus[!email.is_empty()];
                    button.primary type="submit" { "Sign in" }
                }
                p.muted.small {
                    "No account yet? An admin creates one with "
                    code { "hangar user create --email you@example.com --password-stdin" }
                    "."
                }
            }
        },
    )
}

/// Query of `GET /login`. Other parameters are ignored.
#[derive(Debug, Default, serde::Deserialize)]
pub struct LoginPageParams {
    /// Where to go once signed in (a path on this server).
    pub next: Option<String>,
}

/// `GET /login`.
pub async fn page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginPageParams>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    // Already signed in: straight on.
    if viewer(&app, &headers, &next).await.is_ok() {
        return Redirect::to(&next).into_response();
    }
    form(&next, "", None, StatusCode::OK)
}

/// A 429 form while `keys` (the address, the email) are backing off after
/// failed sign-ins.
fn throttled(app: &AppState, keys: &[String], next: &str, email: &str) -> Option<Response> {
    let wait = app.web.logins.wait(keys)?;
    crate::metrics::get().rate_limited("login");
    let secs = wait.as_secs().max(1);
    let mut resp = form(
        next,
        email,
        Some(&format!(
            "Too many failed sign-ins. Wait {secs} s and try again."
        )),
        StatusCode::TOO_MANY_REQUESTS,
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Some(resp)
}

/// The user whose email and password these are, checked with one argon2
/// verification whatever happens (so a missing account, a disabled one and
/// a wrong password take the same time); else the form to answer.
async fn check_credentials(
    app: &AppState,
    addr: &str,
    email: &str,
    password: &str,
    next: &str,
    keys: &[String],
) -> Result<UserRecord, Response> {
    let creds = match app.store.credentials_by_email(email).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in lookup failed");
            return Err(form(
                next,
                email,
                Some("Sign-in is temporarily unavailable; try again shortly."),
                StatusCode::SERVICE_UNAVAILABLE,
            ));
        }
    };
    // One argon2 verification whatever happens, so a missing account, a
    // disabled one and a wrong password all take the same time.
    let (hash, user) = match creds {
        Some(c) if !c.user.disabled => (c.password_hash, Some(c.user)),
        _ => (None, None),
    };
    let Some(ok) = web_auth::check_password_bounded(hash, password).await else {
        tracing::warn!(%addr, "sign-in refused: too many password checks at once");
        let mut resp = form(
            next,
            email,
            Some("Too many sign-ins at once. Wait a few seconds and try again."),
            StatusCode::SERVICE_UNAVAILABLE,
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return Err(resp);
    };
    let Some(user) = user.filter(|_| ok) else {
        app.web.logins.failed(keys);
        tracing::info!(%addr, "dashboard sign-in failed");
        return Err(form(
            next,
            email,
            Some("Wrong email or password."),
            StatusCode::UNAUTHORIZED,
        ));
    };
    Ok(user)
}

/// `POST /login` (form: `email`, `password`, `next`).
pub async fn submit(State(app): State<AppState>, req: Request) -> Response {
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    let body = match axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return form(
                "/",
                "",
                Some("The form is too large."),
                StatusCode::PAYLOAD_TOO_LARGE,
            );
        }
    };
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let email = fields.get("email").map(|e| e.trim()).unwrap_or_default();
    let password = fields
        .get("password")
        .map(String::as_str)
        .unwrap_or_default();
    let next = safe_next(fields.get("next").map(String::as_str));
    if email.is_empty() || password.is_empty() {
        return form(
            &next,
            email,
            Some("Enter your email and password."),
            StatusCode::BAD_REQUEST,
        );
    }
    let keys = vec![
        format!("ip:{addr}"),
        format!("email:{}", email.to_lowercase()),
    ];
    if let Some(refused) = throttled(&app, &keys, &next, email) {
        return refused;
    }
    let user = match check_credentials(&app, &addr, email, password, &next, &keys).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    app.web.logins.succeeded(&keys);
    let token = match web_auth::open_session(app.store.as_ref(), &user).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "could not open a web session");
            return form(
                &next,
                email,
                Some("Sign-in is temporarily unavailable; try again shortly."),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    };
    tracing::info!(user = %user.uid, "dashboard sign-in");
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        web_auth::set_cookie(&token, secure(&app)),
    );
    resp
}

/// `GET|POST /logout`: ends the session and clears the cookie. A POST must
/// carry the page's CSRF token; a GET (typed in the address bar) only works
/// same-site, where the SameSite=Strict cookie is sent.
pub async fn logout(State(app): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(token) = web_auth::session_cookie(&parts.headers) {
        let allowed = if parts.method == axum::http::Method::POST {
            let body = axum::body::to_bytes(body, MAX_FORM_BYTES)
                .await
                .unwrap_or_default();
            let sent = url::form_urlencoded::parse(&body)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            web_auth::constant_time_eq(sent.as_bytes(), web_auth::csrf_token(token).as_bytes())
        } else {
            true
        };
        if !allowed {
            return super::error_page(
                StatusCode::FORBIDDEN,
                "Sign-out refused",
                "The sign-out form was not sent from this dashboard. Use the Sign out button.",
            );
        }
        if let Err(e) = web_auth::close_session(app.store.as_ref(), token).await {
            tracing::warn!(error = %e, "could not end a web session");
        }
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, web_auth::clear_cookie(secure(&app)));
    resp
}

/// `GET /login/link/{token}`: a link `hangar up` printed signs its user in
/// once and lands on the runs page, which asks for a password.
pub async fn link(
    State(app): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    let refused = || {
        super::error_page(
            StatusCode::GONE,
            "Sign-in link used or expired",
            "This sign-in link works once, for 15 minutes. Restart `hangar up` for a new \
             one, or sign in with your email and password.",
        )
    };
    let Some(user_id) = app.web.sign_in_links.take(&token) else {
        tracing::info!("a spent or unknown sign-in link was refused");
        return refused();
    };
    let user = match app.store.user(user_id).await {
        Ok(u) if !u.disabled => u,
        _ => return refused(),
    };
    let session = match web_auth::open_session(app.store.as_ref(), &user).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "could not open a web session");
            return super::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "Sign-in is temporarily unavailable; try again shortly.",
            );
        }
    };
    tracing::info!(user = %user.uid, "dashboard sign-in with a one-time link");
    let mut resp = Redirect::to("/?welcome=1").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        web_auth::set_cookie(&session, secure(&app)),
    );
    resp
}

/// `POST /account/password` (form: `csrf`, `email`, `password`): the
/// signed-in user sets their password, and their email when they have none
/// (the bootstrap admin), so they can sign in with the form from then on.
pub async fn set_password(State(app): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let v = match viewer(&app, &parts.headers, "/").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let body = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .unwrap_or_default();
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    if !web_auth::constant_time_eq(field("csrf").as_bytes(), v.csrf.as_bytes()) {
        return super::error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "The form was not sent from this dashboard. Reload the page and try again.",
        );
    }
    let bad =
        |message: String| super::error_page(StatusCode::BAD_REQUEST, "Password not set", &message);
    let email = field("email").trim();
    if v.user.email.is_none() && hangar_protocol::share::validate_email(email).is_err() {
        return bad(format!(
            "`{email}` is not an email address; you sign in with it from now on."
        ));
    }
    let password = field("password");
    if let Err(e) = web_auth::validate_password(password) {
        return bad(e.to_string());
    }
    let hash = match web_auth::hash_password(password).await {
        Ok(h) => h,
        Err(e) => return bad(e.to_string()),
    };
    if v.user.email.is_none() {
        let update = hangar_store::UserUpdate {
            email: Some(email.to_owned()),
            ..Default::default()
        };
        if let Err(e) = app.store.update_user(v.team.id, &v.user.uid, update).await {
            return bad(crate::error::ApiError::from(e).to_string());
        }
    }
    // Setting a password ends every session of the user: open a new one.
    if let Err(e) = app
        .store
        .set_password_hash(v.team.id, &v.user.uid, Some(&hash))
        .await
    {
        return bad(crate::error::ApiError::from(e).to_string());
    }
    let session = match web_auth::open_session(app.store.as_ref(), &v.user).await {
        Ok(t) => t,
        Err(e) => return bad(e.to_string()),
    };
    tracing::info!(user = %v.user.uid, "password set from the dashboard");
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        web_auth::set_cookie(&session, secure(&app)),
    );
    resp
}
