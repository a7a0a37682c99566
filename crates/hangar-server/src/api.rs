//! REST routes under `/api/v1`, one module per resource.

pub mod agents;
pub mod conversation;
pub mod environments;
pub mod health;
pub mod integrations;
pub mod keys;
pub mod lifecycle_events;
pub mod mcp;
pub mod models;
pub mod openapi;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod shares;
pub mod users;
pub mod webhooks;
pub mod whoami;
pub mod worker_tokens;
pub mod workers;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::Router;
use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Parses a JSON body with an error that says what is wrong and where.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "the request body is empty; send a JSON object".into(),
        ));
    }
    // Every body of this API is an object: serde would read a struct from an
    // array positionally (`[null, null]`), so an array is refused here.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::BadRequest(
            "the request body is a JSON array; send a JSON object".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        // serde_json reports an enum given a number or a bool as a syntax
        // error; when the body is valid JSON it is the field's value that is wrong.
        if inner.is_syntax()
            && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
            && !field.is_empty()
            && field != "."
        {
            return ApiError::BadRequest(format!(
                "body field \"{field}\": invalid type, expected a string naming one of the allowed values"
            ));
        }
        json_error(&field, inner)
    })?;
    // Trailing data after the value is a syntax error too.
    de.end().map_err(|e| json_error("", e))?;
    Ok(parsed)
}

/// A typed query (a `#[derive(Deserialize, IntoParams)]` struct with
/// `deny_unknown_fields`), taken as a `Result` so the handler reads it after
/// authenticating, in the order every route checks a request.
pub type QueryResult<T> = Result<Query<T>, QueryRejection>;

/// The query of a request, or a 400 that says what is wrong: an unknown
/// parameter is named, with `hint` (what the route takes).
pub fn read_query<T>(query: QueryResult<T>, hint: &str) -> ApiResult<T> {
    let rejection = match query {
        Ok(Query(q)) => return Ok(q),
        Err(rejection) => rejection,
    };
    // The decoder's own message (`unknown field `x`, expected …`, a
    // duplicate field, text that is not UTF-8), without axum's prefix.
    let why = std::error::Error::source(&rejection)
        .map(ToString::to_string)
        .unwrap_or_else(|| rejection.body_text());
    if let Some(rest) = why.strip_prefix("unknown field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        let hint = if hint.is_empty() {
            String::new()
        } else {
            format!("; {hint}")
        };
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter `{name}`{hint}"
        )));
    }
    Err(ApiError::BadRequest(format!(
        "the query string cannot be read: {why}"
    )))
}

/// A body error naming the field (`config.model_id`) when the JSON is valid but a value is not.
fn json_error(field: &str, e: serde_json::Error) -> ApiError {
    let what = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            "the body is not valid JSON".to_owned()
        }
        serde_json::error::Category::Data if field.is_empty() || field == "." => {
            "the body has an invalid field".to_owned()
        }
        serde_json::error::Category::Data => format!("body field \"{field}\""),
        serde_json::error::Category::Io => "the body could not be read".to_owned(),
    };
    ApiError::BadRequest(format!("{what}: {e}"))
}

/// The `/api/v1` routes, each registered with its `#[utoipa::path]`, so a
/// route cannot exist without being in the OpenAPI document; with that
/// document ([`crate::api::openapi::ApiDoc`] adds the title, tags and security).
pub fn openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::api::openapi::ApiDoc::openapi())
        .routes(routes!(runs::create, runs::list))
        .routes(routes!(runs::create_legacy))
        .routes(routes!(runs::create_local))
        .routes(routes!(runs::get_one))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::followup))
        .routes(routes!(shares::create, shares::list))
        .routes(routes!(shares::delete))
        .routes(routes!(shares::public_session))
        .routes(routes!(shares::public_events))
        .routes(routes!(models::list))
        .routes(routes!(mcp::list))
        .routes(routes!(mcp::get_one))
        .routes(routes!(runs::transcript))
        .routes(routes!(runs::environment))
        .routes(routes!(conversation::conversation))
        .routes(routes!(conversation::artifact))
        .routes(routes!(agents::identities))
        .routes(routes!(agents::list_agents))
        .routes(routes!(lifecycle_events::poll))
        .routes(routes!(
            lifecycle_events::run_events,
            lifecycle_events::report
        ))
        .routes(routes!(crate::sessions::viewers::sse))
        .routes(routes!(crate::sessions::viewers::websocket))
        .routes(routes!(crate::sessions::hub::session_socket))
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(
            schedules::get_one,
            schedules::replace,
            schedules::delete
        ))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::expire))
        .routes(routes!(users::list_teams))
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::get_one, users::update, users::delete))
        .routes(routes!(workers::list))
        .routes(routes!(worker_tokens::create, worker_tokens::list))
        .routes(routes!(worker_tokens::expire))
        .routes(routes!(crate::api::openapi::openapi_json))
        .routes(routes!(whoami::whoami))
        .routes(routes!(environments::oz_list))
        .routes(routes!(environments::create, environments::list))
        .routes(routes!(
            environments::get_one,
            environments::update,
            environments::delete
        ))
        .routes(routes!(secrets::create, secrets::list))
        .routes(routes!(secrets::update, secrets::delete))
        .routes(routes!(integrations::create, integrations::list))
        .routes(routes!(
            integrations::get_one,
            integrations::update,
            integrations::delete
        ))
        .routes(routes!(integrations::test))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get_one, webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(webhooks::send_test))
        .routes(routes!(crate::llm::chat_completions))
        .routes(routes!(crate::llm::models))
        .routes(routes!(crate::llm::usage))
        .routes(routes!(crate::dispatch::worker_socket::worker_socket))
}

/// The `/api/v1` routes.
pub fn routes() -> Router<AppState> {
    openapi_router().split_for_parts().0
}
