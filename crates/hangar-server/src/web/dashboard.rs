//! The web dashboard: server-rendered HTML (maud) plus a small hand-written
//! script and stylesheet embedded in the binary — no Node, no build step.
//!
//! Owns: the page routes (`/`, `/overview`, `/login`, `/logout`, `/runs/{id}`, `/s/{token}`,
//! `/workers`, `/schedules`, `/environments`, `/secrets`, `/api-keys`,
//! `/providers`, `/users`, `/integrations`), the HTML fragments the script polls
//! (`/_dash/…`), the layout every page shares, and the static assets.
//!
//! Pages read the store directly with the signed-in user's team; every action
//! (follow-up, cancel, share, pause, create key) goes through the JSON API
//! from the script with the session cookie and the `X-Hangar-CSRF` header,
//! so the API's rules (team isolation, session access) apply unchanged.
//! Pages need the session cookie; without one they redirect to `/login`.

mod cron_text;
mod integrations;
mod login;
mod overview;
mod public;
mod runs;
mod schedules;
mod team;

pub use cron_text::describe_cron;

use crate::AppState;
use crate::web::auth as web_auth;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use hangar_protocol::{RunState, Timestamp};
use hangar_store::{TeamRecord, UserRecord};
use maud::{DOCTYPE, Markup, html};

const APP_JS: &str = include_str!("dashboard/static/app.js");
const APP_CSS: &str = include_str!("dashboard/static/app.css");

/// Dashboard routes (merged into the server's router next to `/api/v1`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(runs::list_page))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", get(login::logout).post(login::logout))
        .route("/login/link/{token}", get(login::link))
        .route(
            "/account/password",
            axum::routing::post(login::set_password),
        )
        .route("/runs/{run_id}", get(runs::detail_page))
        .route("/s/{token}", get(public::page))
        .route("/overview", get(overview::page))
        .route("/workers", get(team::workers))
        .route("/schedules", get(schedules::page))
        .route("/environments", get(team::environments))
        .route("/secrets", get(team::secrets))
        .route("/api-keys", get(team::api_keys))
        .route("/providers", get(team::providers))
        .route("/users", get(team::users))
        .route("/integrations", get(integrations::page))
        .route("/_dash/runs", get(runs::rows_fragment))
        .route("/_dash/runs/{run_id}/meta", get(runs::meta_fragment))
        .route(
            "/_dash/webhooks/{webhook_id}/deliveries",
            get(integrations::deliveries_fragment),
        )
        .route("/static/app.js", get(app_js))
        .route("/static/app.css", get(app_css))
        .route("/favicon.ico", get(favicon))
}

/// The signed-in user a page is rendered for.
pub struct Viewer {
    /// Their team.
    pub team: TeamRecord,
    /// Who they are.
    pub user: UserRecord,
    /// The session's CSRF token (rendered into the page).
    pub csrf: String,
    /// The principal, for access decisions shared with the API.
    pub principal: crate::auth::Principal,
}

impl Viewer {
    /// Whether the user administers their team.
    pub fn is_admin(&self) -> bool {
        self.user.role == "admin"
    }
}

/// The signed-in user, or a redirect to `/login?next=<path>`.
pub async fn viewer(app: &AppState, headers: &HeaderMap, path: &str) -> Result<Viewer, Response> {
    let to_login = || {
        let next: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
        Redirect::to(&format!("/login?next={next}")).into_response()
    };
    let Some(token) = web_auth::session_cookie(headers) else {
        return Err(to_login());
    };
    let principal = match web_auth::authenticate_session(app.store.as_ref(), token).await {
        Ok(p) => p,
        Err(_) => return Err(to_login()),
    };
    let crate::auth::Principal::WebSession { team_id, user_id } = principal else {
        return Err(to_login());
    };
    let loaded = async {
        let team = app.store.team(team_id).await?;
        let user = app.store.user(user_id).await?;
        Ok::<_, hangar_store::StoreError>((team, user))
    }
    .await;
    match loaded {
        Ok((team, user)) => Ok(Viewer {
            team,
            user,
            csrf: web_auth::csrf_token(token),
            principal,
        }),
        Err(e) => Err(error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &format!("The dashboard could not load your account ({e}). Retry in a moment."),
        )),
    }
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Runs list and run detail.
    Runs,
    /// The overview.
    Overview,
    /// Workers.
    Workers,
    /// Schedules.
    Schedules,
    /// Environments.
    Environments,
    /// Secrets.
    Secrets,
    /// API keys.
    ApiKeys,
    /// Model providers.
    Providers,
    /// Users.
    Users,
    /// Integrations and outbound webhooks.
    Integrations,
    /// Outside the navigation (login, public viewer).
    None,
}

const NAV: &[(Nav, &str, &str)] = &[
    (Nav::Runs, "/", "Runs"),
    (Nav::Overview, "/overview", "Overview"),
    (Nav::Workers, "/workers", "Workers"),
    (Nav::Schedules, "/schedules", "Schedules"),
    (Nav::Environments, "/environments", "Environments"),
    (Nav::Secrets, "/secrets", "Secrets"),
    (Nav::ApiKeys, "/api-keys", "API keys"),
    (Nav::Providers, "/providers", "Models"),
    (Nav::Users, "/users", "Users"),
    (Nav::Integrations, "/integrations", "Integrations"),
];

fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            @if let Some(csrf) = csrf { meta name="csrf-token" content=(csrf); }
            title { (title) " · Hangar" }
            link rel="stylesheet" href=(asset_url("app.css", APP_CSS));
            script src=(asset_url("app.js", APP_JS)) defer {}
        }
    }
}

/// A page of the signed-in dashboard.
pub fn layout(viewer: &Viewer, nav: Nav, title: &str, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, Some(&viewer.csrf)))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" aria-label="Hangar home" { span aria-hidden="true" { "▰" } " Hangar" }
                    nav aria-label="Main" {
                        ul {
                            @for (entry, href, label) in NAV {
                                li {
                                    @if *entry == nav {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    div.who {
                        span.user title=(viewer.user.email.clone().unwrap_or_default()) {
                            (viewer.user.display_name)
                            @if viewer.is_admin() { " " span.tag { "admin" } }
                        }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" {
                    (body)
                }
            }
        }
    };
    html_response(StatusCode::OK, page)
}

/// A page outside the signed-in area (login, public viewer, errors).
pub fn bare_page(status: StatusCode, title: &str, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body.bare {
                main #main {
                    (body)
                }
            }
        }
    };
    html_response(status, page)
}

/// A plain error page.
pub fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    bare_page(
        status,
        title,
        html! {
            section.card.narrow {
                h1 { (title) }
                p { (detail) }
                p { a href="/" { "Back to the dashboard" } }
            }
        },
    )
}

/// Security headers every dashboard answer carries: no inline script or
/// style, no framing, no referrer (public links carry their token in the path).
fn html_response(status: StatusCode, page: Markup) -> Response {
    let mut resp = (status, page.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An HTML fragment for the script to swap in.
pub fn fragment(markup: Markup) -> Response {
    html_response(StatusCode::OK, markup)
}

/// `/static/<name>?v=<hash of content>`: cache forever, new URL on change.
fn asset_url(name: &str, content: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(content.as_bytes());
    format!("/static/{name}?v={}", hex::encode(&digest[..6]))
}

fn asset(content: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        content,
    )
        .into_response()
}

async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

async fn favicon() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A timestamp in UTC, `2025-01-31 14:05 UTC`, inside `<time>`; the script
/// rewrites it in the reader's time zone.
pub fn time(ms: i64) -> Markup {
    let ts = Timestamp::from_unix_millis(ms);
    let iso = ts.to_string();
    let shown = iso
        .get(..16)
        .map(|s| format!("{} UTC", s.replace('T', " ")))
        .unwrap_or_else(|| iso.clone());
    html! { time datetime=(iso) { (shown) } }
}

/// A run state as a labelled badge (text, not colour alone).
pub fn state_badge(state: RunState) -> Markup {
    let name = state.as_str();
    html! { span class={"badge state-" (name.to_ascii_lowercase())} data-state=(name) { (state_label(state)) } }
}

/// Human wording of a run state.
pub fn state_label(state: RunState) -> &'static str {
    match state {
        RunState::Queued => "Queued",
        RunState::Pending => "Pending",
        RunState::Claimed => "Claimed",
        RunState::InProgress => "Running",
        RunState::Succeeded => "Succeeded",
        RunState::Failed => "Failed",
        RunState::Error => "Error",
        RunState::Blocked => "Blocked",
        RunState::Cancelled => "Cancelled",
    }
}

/// Dollars with enough digits for small model costs.
pub fn money(cost: f64) -> String {
    if cost == 0.0 {
        "$0".to_owned()
    } else if cost < 0.01 {
        format!("${cost:.4}")
    } else {
        format!("${cost:.2}")
    }
}
