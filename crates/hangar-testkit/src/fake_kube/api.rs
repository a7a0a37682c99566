//! The HTTP side of the fake API server: routing, authentication, RBAC,
//! discovery, CRUD, watches, pod logs, SelfSubjectAccessReviews, and
//! `kind: Status` errors.

mod discovery;
mod stream;

use super::store::{self, FieldSelector, LabelSelector, Res};
use super::{Inner, RecordedRequest, controller, objects};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use discovery::{
    GROUPS, aggregated_core, aggregated_groups, aggregated_response, api_group, resource_list,
    version,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use stream::{logs, watch_response};

/// The user RBAC messages name.
const USER: &str = "fake-user";

/// The router: every path goes through [`handle`].
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new().fallback(handle).with_state(inner)
}

/// An API error, answered as a `kind: Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 for an object.
    pub fn not_found(res: &Res, name: &str) -> ApiError {
        ApiError {
            details: Some(json!({"name": name, "group": res.group, "kind": res.plural})),
            ..ApiError::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", res.qualified()),
            )
        }
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> ApiError {
        ApiError {
            details: Some(
                json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}),
            ),
            ..ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    pub fn already_exists(res: &Res, name: &str) -> ApiError {
        ApiError {
            details: Some(json!({"name": name, "group": res.group, "kind": res.plural})),
            ..ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", res.qualified()),
            )
        }
    }

    /// 409 for a stale resourceVersion or a failed precondition.
    pub fn conflict(res: &Res, name: &str, why: &str) -> ApiError {
        ApiError {
            details: Some(json!({"name": name, "group": res.group, "kind": res.plural})),
            ..ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    res.qualified()
                ),
            )
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 422 with one cause per invalid field.
    pub fn invalid(res: &Res, name: &str, causes: &[objects::Cause]) -> ApiError {
        let list: Vec<String> = causes.iter().map(objects::Cause::text).collect();
        let joined = if list.len() == 1 {
            list.join("")
        } else {
            format!("[{}]", list.join(", "))
        };
        ApiError {
            details: Some(json!({
                "name": name,
                "group": res.group,
                "kind": res.kind,
                "causes": causes.iter().map(objects::Cause::json).collect::<Vec<_>>(),
            })),
            ..ApiError::new(
                422,
                "Invalid",
                format!("{} \"{name}\" is invalid: {joined}", res.qualified_kind()),
            )
        }
    }

    /// The `kind: Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.status())
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A `status: Success` Status, as answered by a delete that removed the
/// object.
pub(crate) fn success_status(res: &Res, obj: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": obj["metadata"]["name"],
            "group": res.group,
            "kind": res.plural,
            "uid": obj["metadata"]["uid"],
        },
    })
}

/// Decodes a query string into pairs, in order.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid {name}: {v:?}"))),
        }
    }
}

/// One request, as the handlers see it.
struct Req {
    inner: Arc<Inner>,
    method: Method,
    params: Params,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    inner.lock().requests.push(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: serde_json::from_slice(&body).ok(),
    });
    let public = matches!(
        path.as_str(),
        "/version" | "/healthz" | "/readyz" | "/livez"
    );
    let expected = format!("Bearer {}", inner.token);
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    let required = inner.token_required.load(Ordering::SeqCst);
    let anonymous = headers.get(header::AUTHORIZATION).is_none();
    if !public && !authorized && (required || !anonymous) {
        return ApiError::new(401, "Unauthorized", "Unauthorized").into_response();
    }
    let req = Req {
        inner,
        method,
        params: Params(query_pairs(&query)),
        headers,
        body,
    };
    match route(req, &path).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn route(req: Req, path: &str) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = req.method == Method::GET;
    let aggregated = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=APIGroupDiscoveryList"));
    match segs.as_slice() {
        ["version"] if get => Ok(ok(&version())),
        ["healthz" | "readyz" | "livez"] if get => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] if get && aggregated => Ok(aggregated_response(&aggregated_core())),
        ["api"] if get => Ok(ok(&json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": req.inner.addr.to_string()}
            ],
        }))),
        ["api", "v1"] if get => Ok(ok(&resource_list(""))),
        ["apis"] if get && aggregated => Ok(aggregated_response(&aggregated_groups())),
        ["apis"] if get => Ok(ok(&json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": GROUPS.iter().map(|g| api_group(g)).collect::<Vec<_>>(),
        }))),
        ["apis", group] if get && GROUPS.contains(group) => Ok(ok(&api_group(group))),
        ["apis", group, "v1"] if get && GROUPS.contains(group) => Ok(ok(&resource_list(group))),
        [
            "apis",
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
        ] => {
            if req.method != Method::POST {
                return Err(method_not_allowed(&req.method));
            }
            self_subject_access_review(&req)
        }
        ["api", "v1", rest @ ..] => resource_request(req, "", rest).await,
        ["apis", group, "v1", rest @ ..] if *group != "authorization.k8s.io" => {
            resource_request(req, group, rest).await
        }
        _ => Err(ApiError::no_route()),
    }
}

fn ok(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource ({method})"),
    )
}

/// Whether RBAC allows `verb` on `resource` (`pods` or `pods/log`).
fn allowed(inner: &Inner, verb: &str, resource: &str) -> bool {
    !inner
        .lock()
        .denies
        .iter()
        .any(|(v, r)| (v == "*" || v == verb) && (r == "*" || r == resource))
}

fn forbidden_by_rbac(
    res: &Res,
    resource: &str,
    verb: &str,
    ns: Option<&str>,
    name: Option<&str>,
) -> ApiError {
    let subject = match name {
        Some(name) => format!("{} \"{name}\"", res.qualified()),
        None => res.qualified(),
    };
    let scope = match ns {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_owned(),
    };
    ApiError {
        details: Some(
            json!({"name": name.unwrap_or_default(), "group": res.group, "kind": res.plural}),
        ),
        ..ApiError::forbidden(format!(
            "{subject} is forbidden: User \"{USER}\" cannot {verb} resource \"{resource}\" in API group \"{}\"{scope}",
            res.group
        ))
    }
}

fn self_subject_access_review(req: &Req) -> Result<Response, ApiError> {
    let body = req.json_body()?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let attrs = &spec["resourceAttributes"];
    let allowed = if attrs.is_object() {
        let verb = attrs["verb"].as_str().unwrap_or_default();
        let mut resource = attrs["resource"].as_str().unwrap_or_default().to_owned();
        if let Some(sub) = attrs["subresource"].as_str().filter(|s| !s.is_empty()) {
            resource = format!("{resource}/{sub}");
        }
        allowed(&req.inner, verb, &resource)
    } else if spec["nonResourceAttributes"].is_object() {
        true
    } else {
        return Err(ApiError {
            details: Some(
                json!({"group": "authorization.k8s.io", "kind": "SelfSubjectAccessReview"}),
            ),
            ..ApiError::new(
                422,
                "Invalid",
                "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )
        });
    };
    let mut status = json!({"allowed": allowed});
    if allowed {
        status["reason"] = json!(format!(
            "RBAC: allowed by RoleBinding \"hangar-worker/{}\" of Role \"hangar-worker\" to User \"{USER}\"",
            attrs["namespace"].as_str().unwrap_or(super::NAMESPACE)
        ));
    }
    let answer = json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status,
    });
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// `/api/v1/…` or `/apis/<group>/v1/…` after the version.
async fn resource_request(req: Req, group: &str, rest: &[&str]) -> Result<Response, ApiError> {
    let (ns, plural, name, sub) = match rest {
        [plural] => (None, *plural, None, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        _ => return Err(ApiError::no_route()),
    };
    let res = store::resource(group, plural).ok_or_else(ApiError::no_route)?;
    if let Some(sub) = sub
        && !res.subresources.iter().any(|(s, _)| *s == sub)
    {
        return Err(ApiError::no_route());
    }
    let watch = req.params.flag("watch");
    let verb = match (&req.method, name, sub) {
        (&Method::GET, None, _) if watch => "watch",
        (&Method::GET, None, _) => "list",
        (&Method::POST, None, _) => "create",
        (&Method::DELETE, None, _) => "deletecollection",
        (&Method::GET, Some(_), _) => "get",
        (&Method::PUT, Some(_), _) => "update",
        (&Method::PATCH, Some(_), _) => "patch",
        (&Method::DELETE, Some(_), None) => "delete",
        (m, _, _) => return Err(method_not_allowed(m)),
    };
    let rbac_resource = match sub {
        Some(sub) => format!("{plural}/{sub}"),
        None => plural.to_owned(),
    };
    if !allowed(&req.inner, verb, &rbac_resource) {
        return Err(forbidden_by_rbac(res, &rbac_resource, verb, ns, name));
    }
    if ns.is_none() && !matches!(verb, "list" | "watch") {
        return Err(method_not_allowed(&req.method));
    }
    let ns_owned = ns.map(str::to_owned);
    match (verb, name, sub) {
        ("watch", _, _) => watch_response(&req, res, ns_owned),
        ("list", _, _) => list(&req, res, ns),
        ("create", _, _) => create(&req, res, ns.unwrap_or_default()),
        ("deletecollection", _, _) => delete_collection(&req, res, ns.unwrap_or_default()),
        ("get", Some(name), Some("log")) => logs(&req, ns.unwrap_or_default(), name),
        ("get", Some(name), _) => get(&req, res, ns.unwrap_or_default(), name),
        ("update", Some(name), sub) => {
            let body = req.json_body()?;
            write(
                &req,
                res,
                ns.unwrap_or_default(),
                name,
                sub.is_some(),
                |_| Ok(body),
            )
        }
        ("patch", Some(name), sub) => patch(&req, res, ns.unwrap_or_default(), name, sub.is_some()),
        ("delete", Some(name), None) => {
            let opts = delete_options(&req)?;
            let answer = controller::delete(&req.inner, res, ns.unwrap_or_default(), name, &opts)?;
            Ok(ok(&answer))
        }
        _ => Err(method_not_allowed(&req.method)),
    }
}

/// `GET` of one object.
fn get(req: &Req, res: &'static Res, ns: &str, name: &str) -> Result<Response, ApiError> {
    let st = req.inner.lock();
    let obj = st
        .get(res.plural, ns, name)
        .ok_or_else(|| ApiError::not_found(res, name))?;
    Ok(ok(obj))
}

/// `PATCH` of one object (or its `status`): merge and strategic merge
/// patches only.
fn patch(
    req: &Req,
    res: &'static Res,
    ns: &str,
    name: &str,
    status_only: bool,
) -> Result<Response, ApiError> {
    let ctype = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !ctype.starts_with("application/merge-patch+json")
        && !ctype.starts_with("application/strategic-merge-patch+json")
    {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the fake API server does not support the patch type {ctype:?} (only merge and strategic merge patches)"
            ),
        ));
    }
    let patch = req.json_body()?;
    write(req, res, ns, name, status_only, |current| {
        let mut obj = current.clone();
        store::merge_patch(&mut obj, &patch);
        Ok(obj)
    })
}

fn list(req: &Req, res: &'static Res, ns: Option<&str>) -> Result<Response, ApiError> {
    let labels = label_selector(&req.params)?;
    let fields = field_selector(res, &req.params)?;
    let limit = req.params.int("limit")?.filter(|l| *l > 0);
    let start_after = match req.params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(decode_continue(token)?),
        None => None,
    };
    let st = req.inner.lock();
    if req.params.get("resourceVersionMatch") == Some("Exact")
        && let Some(rv) = req.params.get("resourceVersion")
        && rv.parse::<u64>().is_ok_and(|rv| rv != st.rv)
    {
        return Err(ApiError::gone(format!(
            "too old resource version: {rv} ({})",
            st.rv
        )));
    }
    let mut items: Vec<&Value> = st
        .list(res.plural, ns)
        .into_iter()
        .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
        .filter(|o| match &start_after {
            Some(after) => object_position(o) > *after,
            None => true,
        })
        .collect();
    let mut metadata = json!({"resourceVersion": st.rv.to_string()});
    if let Some(limit) = limit
        && items.len() > limit as usize
    {
        let remaining = items.len() - limit as usize;
        items.truncate(limit as usize);
        if let Some(last) = items.last() {
            let token = json!({"v": "meta.k8s.io/v1", "rv": st.rv, "start": object_position(last)});
            metadata["continue"] =
                json!(base64::engine::general_purpose::STANDARD.encode(token.to_string()));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|o| {
            let mut o = o.clone();
            if let Some(map) = o.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            o
        })
        .collect();
    Ok(ok(&json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": metadata,
        "items": items,
    })))
}

fn object_position(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn decode_continue(token: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    value["start"].as_str().map(str::to_owned).ok_or_else(bad)
}

fn label_selector(params: &Params) -> Result<LabelSelector, ApiError> {
    LabelSelector::parse(params.get("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)
}

fn field_selector(res: &Res, params: &Params) -> Result<FieldSelector, ApiError> {
    FieldSelector::parse(res, params.get("fieldSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)
}

fn create(req: &Req, res: &'static Res, ns: &str) -> Result<Response, ApiError> {
    let body = req.json_body()?;
    let obj = objects::create(&req.inner, res, ns, body)?;
    Ok(json_response(StatusCode::CREATED, &obj))
}

/// PUT and PATCH: `f` turns the stored object into the new one.
fn write(
    req: &Req,
    res: &'static Res,
    ns: &str,
    name: &str,
    status_only: bool,
    f: impl FnOnce(&Value) -> Result<Value, ApiError>,
) -> Result<Response, ApiError> {
    let obj = objects::write(&req.inner, res, ns, name, status_only, f)?;
    Ok(ok(&obj))
}

/// DeleteOptions from the body and the query.
fn delete_options(req: &Req) -> Result<controller::DeleteOptions, ApiError> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        req.json_body()?
    };
    let policy = body["propagationPolicy"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| req.params.get("propagationPolicy").map(str::to_owned))
        .or_else(|| match body["orphanDependents"].as_bool() {
            Some(true) => Some("Orphan".to_owned()),
            Some(false) => Some("Background".to_owned()),
            None => None,
        });
    let policy = match policy.as_deref() {
        None => None,
        Some("Foreground") => Some(controller::Propagation::Foreground),
        Some("Background") => Some(controller::Propagation::Background),
        Some("Orphan") => Some(controller::Propagation::Orphan),
        Some(other) => {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                ),
            ));
        }
    };
    let grace = match body["gracePeriodSeconds"].as_i64() {
        Some(g) => Some(g),
        None => req.params.int("gracePeriodSeconds")?,
    };
    Ok(controller::DeleteOptions {
        propagation: policy,
        grace_seconds: grace,
        precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_owned),
        precondition_rv: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned),
        dry_run: body["dryRun"].as_array().is_some_and(|a| !a.is_empty())
            || req.params.get("dryRun") == Some("All"),
    })
}

fn delete_collection(req: &Req, res: &'static Res, ns: &str) -> Result<Response, ApiError> {
    let labels = label_selector(&req.params)?;
    let fields = field_selector(res, &req.params)?;
    let opts = delete_options(req)?;
    let names: Vec<String> = req
        .inner
        .lock()
        .list(res.plural, Some(ns))
        .into_iter()
        .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let mut items = Vec::new();
    for name in names {
        match controller::delete(&req.inner, res, ns, &name, &opts) {
            Ok(answer) if answer["kind"] != "Status" => items.push(answer),
            Ok(_) | Err(_) => {}
        }
    }
    let rv = req.inner.lock().rv;
    Ok(ok(&json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        assert_eq!(
            query_pairs("labelSelector=a%3Db%2Cc&watch=true&x=a+b"),
            vec![
                ("labelSelector".to_owned(), "a=b,c".to_owned()),
                ("watch".to_owned(), "true".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
            ]
        );
    }
}
