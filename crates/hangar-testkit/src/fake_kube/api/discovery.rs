//! Discovery documents: `/version`, `/api`, `/apis`, the groups and their
//! `APIResourceList`s, also in the aggregated (`apidiscovery.k8s.io/v2`)
//! form.

use crate::fake_kube::VERSION;
use crate::fake_kube::store::{RESOURCES, VERBS};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The aggregated discovery media type.
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The groups served under `/apis`.
pub(super) const GROUPS: &[&str] = &["batch", "authorization.k8s.io"];

/// `GET /version`: Kubernetes v1.33.
pub(super) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": VERSION,
        "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
        "gitTreeState": "clean",
        "buildDate": "2025-05-15T08:19:58Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The `APIGroup` of `group` (one version, v1).
pub(super) fn api_group(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [gv],
        "preferredVersion": gv,
    })
}

/// The `APIResourceList` of `group`/v1 (`""` for the core group).
pub(super) fn resource_list(group: &str) -> Value {
    let mut resources = Vec::new();
    for res in RESOURCES.iter().filter(|r| r.group == group) {
        resources.push(json!({
            "name": res.plural,
            "singularName": res.singular,
            "namespaced": true,
            "kind": res.kind,
            "verbs": VERBS,
            "shortNames": res.short,
            "categories": if res.kind == "Pod" || res.kind == "Job" { vec!["all"] } else { vec![] },
        }));
        for (sub, verbs) in res.subresources {
            resources.push(json!({
                "name": format!("{}/{sub}", res.plural),
                "singularName": "",
                "namespaced": true,
                "kind": if *sub == "log" { "Pod" } else { res.kind },
                "verbs": verbs,
            }));
        }
    }
    if group == "authorization.k8s.io" {
        resources.push(json!({
            "name": "selfsubjectaccessreviews",
            "singularName": "selfsubjectaccessreview",
            "namespaced": false,
            "kind": "SelfSubjectAccessReview",
            "verbs": ["create"],
        }));
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": if group.is_empty() { "v1".to_owned() } else { format!("{group}/v1") },
        "resources": resources,
    })
}

fn aggregated_resources(group: &str) -> Value {
    let mut resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group)
        .map(|res| {
            json!({
                "resource": res.plural,
                "responseKind": {"group": res.group, "version": "v1", "kind": res.kind},
                "scope": "Namespaced",
                "singularResource": res.singular,
                "verbs": VERBS,
                "shortNames": res.short,
                "subresources": res.subresources.iter().map(|(sub, verbs)| json!({
                    "subresource": sub,
                    "responseKind": {"group": "", "version": "v1", "kind": if *sub == "log" { "Pod" } else { res.kind }},
                    "verbs": verbs,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    if group == "authorization.k8s.io" {
        resources.push(json!({
            "resource": "selfsubjectaccessreviews",
            "responseKind": {"group": group, "version": "v1", "kind": "SelfSubjectAccessReview"},
            "scope": "Cluster",
            "singularResource": "selfsubjectaccessreview",
            "verbs": ["create"],
        }));
    }
    json!([{"version": "v1", "resources": resources, "freshness": "Current"}])
}

/// `GET /api` in the aggregated discovery form.
pub(super) fn aggregated_core() -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": [{"metadata": {"creationTimestamp": null}, "versions": aggregated_resources("")}],
    })
}

/// `GET /apis` in the aggregated discovery form.
pub(super) fn aggregated_groups() -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": GROUPS.iter().map(|g| json!({
            "metadata": {"name": g, "creationTimestamp": null},
            "versions": aggregated_resources(g),
        })).collect::<Vec<_>>(),
    })
}

/// An aggregated discovery answer, with its media type.
pub(super) fn aggregated_response(body: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, AGGREGATED)],
        body.to_string(),
    )
        .into_response()
}
