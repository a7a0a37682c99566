//! Team pages: connected workers, environments, secrets (names only), API
//! keys (a new key is shown once), model providers (never their keys) and
//! users.

use super::{Nav, error_page, layout, time, viewer};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hangar_protocol::environment::EnvironmentRequest;
use maud::html;
use std::collections::BTreeMap;

fn unavailable(e: impl std::fmt::Display) -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        &format!("The page could not be loaded ({e}). Retry in a moment."),
    )
}

/// `GET /workers`.
pub async fn workers(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&app, &headers, "/workers").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let workers = app.dispatcher.workers(v.team.id);
    // What each worker runs, with its lease, from the store (all replicas).
    let mut running: BTreeMap<hangar_protocol::WorkerId, Vec<hangar_store::LeaseRecord>> =
        BTreeMap::new();
    match app.store.team_leases(v.team.id).await {
        Ok(leases) => {
            for lease in leases {
                running
                    .entry(lease.worker_id.clone())
                    .or_default()
                    .push(lease);
            }
        }
        Err(e) => return unavailable(e),
    }
    let body = html! {
        h1 { "Workers" }
        p.muted { "Workers connected to this server. Start one with " code { "hangar worker --server-url … --api-key …" } "." }
        @if workers.is_empty() {
            p.card { "No worker is connected." }
        } @else {
            table {
                caption.sr-only { "Connected workers" }
                thead { tr { th scope="col" { "Worker" } th scope="col" { "Backend" } th scope="col" { "Capacity" } th scope="col" { "Running (lease)" } th scope="col" { "Version" } th scope="col" { "Connected" } } }
                tbody {
                    @for w in &workers {
                        tr {
                            td data-label="Worker" {
                                strong { (w.worker_id) }
                                @if w.draining { " " span.tag { "draining" } }
                                @for (k, val) in &w.labels { " " span.tag.muted { (k) "=" (val) } }
                            }
                            td data-label="Backend" { (w.backend) }
                            td data-label="Capacity" {
                                meter min="0" max=(w.max_concurrent_tasks) value=(w.running_tasks)
                                    aria-label={"Used capacity of " (w.worker_id)} {}
                                " " (w.running_tasks) " / " (w.max_concurrent_tasks)
                            }
                            td data-label="Running" {
                                @match running.get(&w.worker_id) {
                                    Some(leases) => { ul.plain { @for l in leases { li {
                                        a href={"/runs/" (l.run_id)} { code { (l.run_id) } }
                                        " " span.muted title={"execution " (l.execution_id) ", held by " (l.holder.as_deref().unwrap_or("—"))} {
                                            "epoch " (l.epoch) " · lease until " (time(l.expires_at))
                                        }
                                    } } } }
                                    None => { span.muted { "idle" } }
                                }
                            }
                            td data-label="Version" { (w.version) }
                            td data-label="Connected" { (time(w.connected_at.unix_millis())) }
                        }
                    }
                }
            }
        }
    };
    layout(&v, Nav::Workers, "Workers", body)
}

/// `GET /environments`.
pub async fn environments(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&app, &headers, "/environments").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let envs = match app.store.list_environments(v.team.id).await {
        Ok(e) => e,
        Err(e) => return unavailable(e),
    };
    let body = html! {
        h1 { "Environments" }
        p.muted { "Where runs execute: image, repositories, setup. Manage them with " code { "hangar environment create|update|delete" } "." }
        @if envs.is_empty() {
            p.card { "No environment yet." }
        } @else {
            table {
                caption.sr-only { "Environments" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Image" } th scope="col" { "Repositories" } th scope="col" { "Setup" } th scope="col" { "Updated" } } }
                tbody {
                    @for e in &envs {
                        @let spec: Option<EnvironmentRequest> = serde_json::from_str(&e.spec).ok();
                        tr {
                            td data-label="Name" {
                                strong { (e.name) }
                                @if let Some(d) = spec.as_ref().and_then(|s| s.description.clone()) { div.muted.small { (d) } }
                                div.muted.small { code { (e.id) } }
                            }
                            td data-label="Image" { (spec.as_ref().and_then(|s| s.docker_image.clone()).unwrap_or_else(|| "default".into())) }
                            td data-label="Repositories" {
                                @if let Some(s) = &spec { ul.plain { @for r in &s.repos { li { code { (r.url) } } } } }
                            }
                            td data-label="Setup" { (spec.as_ref().map(|s| s.setup_commands.len()).unwrap_or(0)) " commands" }
                            td data-label="Updated" { (time(e.updated_at)) }
                        }
                    }
                }
            }
        }
    };
    layout(&v, Nav::Environments, "Environments", body)
}

/// `GET /secrets`: names only — values never leave the server.
pub async fn secrets(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&app, &headers, "/secrets").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match app.store.list_secrets(v.team.id).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let body = html! {
        h1 { "Secrets" }
        p.muted { "Values are encrypted at rest and never shown. Set one with " code { "hangar secret create NAME" } "." }
        @if list.is_empty() {
            p.card { "No secret yet." }
        } @else {
            table {
                caption.sr-only { "Secrets" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Updated" } } }
                tbody {
                    @for s in &list {
                        tr {
                            td data-label="Name" { code { (s.name) } }
                            td data-label="Created" { (time(s.created_at)) }
                            td data-label="Updated" { (time(s.updated_at)) }
                        }
                    }
                }
            }
        }
    };
    layout(&v, Nav::Secrets, "Secrets", body)
}

/// `GET /api-keys`.
pub async fn api_keys(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&app, &headers, "/api-keys").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Admins see the team's keys, members their own (as `GET /api-keys`).
    let keys = match app.store.list_api_keys(v.team.id).await {
        Ok(k) => k
            .into_iter()
            .filter(|k| v.is_admin() || k.user_id == Some(v.user.id))
            .collect::<Vec<_>>(),
        Err(e) => return unavailable(e),
    };
    let now = hangar_protocol::Timestamp::now().unix_millis();
    let body = html! {
        h1 { "API keys" }
        form #new-key.card.inline-form {
            div.grow {
                label for="key-name" { "Name" }
                input #key-name name="name" type="text" required maxlength="100" placeholder="CI pipeline";
            }
            div {
                label for="key-days" { "Expires after (days, optional)" }
                input #key-days name="days" type="number" min="1" max="3650" inputmode="numeric";
            }
            button.primary type="submit" { "Create key" }
        }
        div #new-key-secret.card.secret hidden role="alert" {
            p { strong { "Copy this key now" } " — it is shown only once." }
            div.row {
                input #new-key-value type="text" readonly aria-label="New API key";
                button #copy-key type="button" { "Copy" }
            }
        }
        p #key-status.status role="status" aria-live="polite" {}
        table {
            caption.sr-only { "API keys" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Prefix" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Status" } th scope="col" { span.sr-only { "Actions" } } } }
            tbody {
                @for k in &keys {
                    @let active = k.is_active(now);
                    tr {
                        td data-label="Name" { (k.name) @if k.user_id.is_none() { " " span.tag { "team" } } }
                        td data-label="Prefix" { code { (k.prefix) "…" } }
                        td data-label="Created" { (time(k.created_at)) }
                        td data-label="Expires" { @match k.expires_at { Some(t) => { (time(t)) }, None => { "never" } } }
                        td data-label="Status" { @if active { span.badge.state-succeeded { "active" } } @else { span.badge.state-cancelled { "expired" } } }
                        td {
                            @if active {
                                button.danger.small type="button" data-expire-key=(k.id) data-key-name=(k.name) { "Expire" span.sr-only { " " (k.name) } }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&v, Nav::ApiKeys, "API keys", body)
}

/// `GET /providers`: configured model providers and their models (no keys).
pub async fn providers(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&app, &headers, "/providers").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut by_provider: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in app.llm.providers.models() {
        by_provider
            .entry(m.provider.clone())
            .or_default()
            .push(m.id);
    }
    for name in app.llm.providers.provider_names() {
        by_provider.entry(name).or_default();
    }
    let body = html! {
        h1 { "Models" }
        p.muted {
            "Model providers configured on the server. Default model: "
            code { (app.llm.default_model.clone().unwrap_or_else(|| "none".into())) } "."
        }
        @if by_provider.is_empty() {
            p.card { "No provider is configured. Add one under " code { "providers" } " in the server configuration." }
        }
        div.cards {
            @for (name, models) in &by_provider {
                @let cfg = app.config.providers.get(name);
                section.card aria-labelledby={"p-" (name)} {
                    h2 #{"p-" (name)} { (name) }
                    dl.meta {
                        div { dt { "Kind" } dd { (cfg.map(|c| format!("{:?}", c.kind).to_lowercase()).unwrap_or_else(|| "from environment".into())) } }
                        @if let Some(url) = cfg.and_then(|c| c.base_url.clone()) { div.wide { dt { "Endpoint" } dd { code { (url) } } } }
                        div { dt { "Key" } dd { @if cfg.is_some_and(|c| c.api_key.is_some() || c.api_key_env.is_some()) || cfg.is_none() { "configured (hidden)" } @else { "none" } } }
                    }
                    h3 { "Models" }
                    @if models.is_empty() { p.muted { "Any model the provider accepts." } }
                    ul.plain { @for m in models { li { code { (m) } } } }
                }
            }
        }
    };
    layout(&v, Nav::Providers, "Models", body)
}

/// `GET /users`: the team's users; admins manage them with the CLI or API.
pub async fn users(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&app, &headers, "/users").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match app.store.list_users(v.team.id).await {
        Ok(u) => u,
        Err(e) => return unavailable(e),
    };
    let body = html! {
        h1 { "Users" }
        p.muted { "Team " strong { (v.team.name) } ". Admins add people with " code { "hangar user create --email … --password-stdin" } "." }
        table {
            caption.sr-only { "Users" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Status" } } }
            tbody {
                @for u in &list {
                    tr {
                        td data-label="Name" { (u.display_name) @if u.id == v.user.id { " " span.tag { "you" } } }
                        td data-label="Email" { (u.email.clone().unwrap_or_else(|| "—".into())) }
                        td data-label="Role" { (u.role) }
                        td data-label="Status" { @if u.disabled { "disabled" } @else { "active" } }
                    }
                }
            }
        }
    };
    layout(&v, Nav::Users, "Users", body)
}
