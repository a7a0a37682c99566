//! Validation as the API server does it: names, labels, Job and Pod specs,
//! Secret data; each problem is a [`Cause`] of a 422 Status.

use crate::fake_kube::store::{
    self, Res, valid_dns_label, valid_dns_subdomain, valid_label_key, valid_label_value,
};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashSet;

/// One invalid field, as in a 422 Status's `details.causes`.
#[derive(Debug, Clone)]
pub(crate) struct Cause {
    field: String,
    kind: CauseKind,
}

#[derive(Debug, Clone)]
enum CauseKind {
    Required(String),
    Invalid(String, String),
    NotSupported(String, &'static [&'static str]),
    Forbidden(String),
    NotFound(String),
    Duplicate(String),
}

impl Cause {
    pub(crate) fn required(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            field: field.into(),
            kind: CauseKind::Required(detail.to_owned()),
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        detail: &str,
    ) -> Cause {
        Cause {
            field: field.into(),
            kind: CauseKind::Invalid(value.to_string(), detail.to_owned()),
        }
    }

    pub(crate) fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            field: field.into(),
            kind: CauseKind::Forbidden(detail.to_owned()),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            CauseKind::Required(_) => "FieldValueRequired",
            CauseKind::Invalid(..) => "FieldValueInvalid",
            CauseKind::NotSupported(..) => "FieldValueNotSupported",
            CauseKind::Forbidden(_) => "FieldValueForbidden",
            CauseKind::NotFound(_) => "FieldValueNotFound",
            CauseKind::Duplicate(_) => "FieldValueDuplicate",
        }
    }

    fn detail(&self) -> String {
        match &self.kind {
            CauseKind::Required(d) if d.is_empty() => "Required value".to_owned(),
            CauseKind::Required(d) => format!("Required value: {d}"),
            CauseKind::Invalid(v, d) => format!("Invalid value: \"{v}\": {d}"),
            CauseKind::NotSupported(v, supported) => format!(
                "Unsupported value: \"{v}\": supported values: {}",
                supported
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            CauseKind::Forbidden(d) => format!("Forbidden: {d}"),
            CauseKind::NotFound(v) => format!("Not found: \"{v}\""),
            CauseKind::Duplicate(v) => format!("Duplicate value: \"{v}\""),
        }
    }

    /// `field: detail`, as in the Status message.
    pub fn text(&self) -> String {
        format!("{}: {}", self.field, self.detail())
    }

    /// The `details.causes[]` entry.
    pub fn json(&self) -> Value {
        json!({"reason": self.reason(), "message": self.detail(), "field": self.field})
    }
}

const SUBDOMAIN_HELP: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_HELP: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_HELP: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Validation causes for a new or updated object.
pub(super) fn validate(res: &Res, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = &obj["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    if !valid_dns_subdomain(name) {
        causes.push(Cause::invalid("metadata.name", name, SUBDOMAIN_HELP));
    }
    validate_labels(&meta["labels"], "metadata.labels", &mut causes);
    match res.plural {
        "jobs" => validate_job(name, &obj["spec"], &mut causes),
        "pods" => {
            validate_pod_spec(&obj["spec"], "spec", &mut causes);
            match obj["spec"]["restartPolicy"].as_str() {
                Some("Always" | "Never" | "OnFailure") | None => {}
                Some(other) => causes.push(Cause {
                    field: "spec.restartPolicy".into(),
                    kind: CauseKind::NotSupported(
                        other.to_owned(),
                        &["Always", "OnFailure", "Never"],
                    ),
                }),
            }
        }
        "secrets" => {
            if let Some(data) = obj["data"].as_object() {
                validate_secret_data(data, &mut causes);
            }
        }
        _ => {}
    }
    causes
}

/// A Job's name length and `spec`: counts, deadline, completion mode, and
/// its pod template.
fn validate_job(name: &str, spec: &Value, causes: &mut Vec<Cause>) {
    if name.len() > 63 {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "must be no more than 63 characters",
        ));
    }
    for field in [
        "backoffLimit",
        "parallelism",
        "completions",
        "ttlSecondsAfterFinished",
    ] {
        if spec[field].as_i64().is_some_and(|v| v < 0) {
            causes.push(Cause::invalid(
                format!("spec.{field}"),
                &spec[field],
                "must be greater than or equal to 0",
            ));
        }
    }
    if spec["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|v| v <= 0)
    {
        causes.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            &spec["activeDeadlineSeconds"],
            "must be greater than 0",
        ));
    }
    if spec["completionMode"].as_str() == Some("Indexed") {
        causes.push(Cause::forbidden(
            "spec.completionMode",
            "Indexed Jobs are not supported by the fake cluster",
        ));
    }
    validate_labels(
        &spec["template"]["metadata"]["labels"],
        "spec.template.metadata.labels",
        causes,
    );
    let pod_spec = &spec["template"]["spec"];
    validate_pod_spec(pod_spec, "spec.template.spec", causes);
    match pod_spec["restartPolicy"].as_str() {
        Some("Never" | "OnFailure") => {}
        None => causes.push(Cause::required(
            "spec.template.spec.restartPolicy",
            "valid values: \"OnFailure\", \"Never\"",
        )),
        Some(other) => causes.push(Cause {
            field: "spec.template.spec.restartPolicy".into(),
            kind: CauseKind::NotSupported(other.to_owned(), &["OnFailure", "Never"]),
        }),
    }
}

/// A Secret's `data`: its keys, its base64 values, and their total size.
fn validate_secret_data(data: &serde_json::Map<String, Value>, causes: &mut Vec<Cause>) {
    let mut total = 0;
    for (k, v) in data {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            causes.push(Cause::invalid(
                format!("data[{k}]"),
                k,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ));
        }
        match v
            .as_str()
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
        {
            Some(Ok(bytes)) => total += bytes.len(),
            _ => causes.push(Cause::invalid(
                format!("data[{k}]"),
                v,
                "illegal base64 data",
            )),
        }
    }
    if total > 1_048_576 {
        causes.push(Cause {
            field: "data".into(),
            kind: CauseKind::Invalid(
                String::new(),
                "Too long: may not be more than 1048576 bytes".into(),
            ),
        });
    }
}

fn validate_labels(labels: &Value, field: &str, causes: &mut Vec<Cause>) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (k, v) in map {
        if !valid_label_key(k) {
            causes.push(Cause::invalid(
                field,
                k,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ));
        }
        let value = v.as_str().unwrap_or_default();
        if value.len() > 63 {
            causes.push(Cause::invalid(
                field,
                value,
                "must be no more than 63 characters",
            ));
        } else if !valid_label_value(value) {
            causes.push(Cause::invalid(field, value, LABEL_VALUE_HELP));
        }
    }
}

/// A pod spec at `path`: its volumes and containers.
fn validate_pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let volumes = validate_volumes(spec, path, causes);
    let containers = spec["containers"].as_array().filter(|c| !c.is_empty());
    if containers.is_none() {
        causes.push(Cause::required(format!("{path}.containers"), ""));
    }
    let mut names = HashSet::new();
    for key in ["initContainers", "containers"] {
        let Some(cs) = spec[key].as_array() else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            let at = format!("{path}.{key}[{i}]");
            let name = c["name"].as_str().unwrap_or_default();
            if name.is_empty() {
                causes.push(Cause::required(format!("{at}.name"), ""));
            } else if !valid_dns_label(name) {
                causes.push(Cause::invalid(format!("{at}.name"), name, LABEL_HELP));
            } else if !names.insert(name.to_owned()) {
                causes.push(Cause {
                    field: format!("{at}.name"),
                    kind: CauseKind::Duplicate(name.to_owned()),
                });
            }
            validate_container(c, key, &at, &volumes, causes);
        }
    }
}

/// A pod spec's volumes (unique valid names, no image volumes); answers
/// their names.
fn validate_volumes(spec: &Value, path: &str, causes: &mut Vec<Cause>) -> HashSet<String> {
    let mut volumes = HashSet::new();
    if let Some(vs) = spec["volumes"].as_array() {
        for (i, v) in vs.iter().enumerate() {
            let name = v["name"].as_str().unwrap_or_default();
            let field = format!("{path}.volumes[{i}].name");
            if name.is_empty() {
                causes.push(Cause::required(field, ""));
            } else if !valid_dns_label(name) {
                causes.push(Cause::invalid(field, name, LABEL_HELP));
            } else if !volumes.insert(name.to_owned()) {
                causes.push(Cause {
                    field,
                    kind: CauseKind::Duplicate(name.to_owned()),
                });
            }
            if v.get("image").is_some() {
                causes.push(Cause::forbidden(
                    format!("{path}.volumes[{i}].image"),
                    "image volumes are not supported by the fake Kubernetes cluster (use an init container that copies into an emptyDir)",
                ));
            }
        }
    }
    volumes
}

/// One container at `at` (of list `key`), its name aside: image, restart
/// policy, mounts of known `volumes`, environment, resources.
fn validate_container(
    c: &Value,
    key: &str,
    at: &str,
    volumes: &HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    if c["image"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required(format!("{at}.image"), ""));
    }
    match (key, c["restartPolicy"].as_str()) {
        (_, None) | ("initContainers", Some("Always")) => {}
        ("initContainers", Some(other)) => causes.push(Cause {
            field: format!("{at}.restartPolicy"),
            kind: CauseKind::NotSupported(other.to_owned(), &["Always"]),
        }),
        (_, Some(_)) => causes.push(Cause::forbidden(
            format!("{at}.restartPolicy"),
            "may not be set for non-init containers",
        )),
    }
    if let Some(mounts) = c["volumeMounts"].as_array() {
        for (j, m) in mounts.iter().enumerate() {
            let vname = m["name"].as_str().unwrap_or_default();
            if !volumes.contains(vname) {
                causes.push(Cause {
                    field: format!("{at}.volumeMounts[{j}].name"),
                    kind: CauseKind::NotFound(vname.to_owned()),
                });
            }
            if m["mountPath"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(
                    format!("{at}.volumeMounts[{j}].mountPath"),
                    "",
                ));
            }
        }
    }
    validate_env(c, at, causes);
    validate_resources(&c["resources"], at, causes);
}

/// A container's `envFrom` Secret references and `env` names.
fn validate_env(c: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(from) = c["envFrom"].as_array() {
        for (j, e) in from.iter().enumerate() {
            if e["secretRef"].is_object()
                && e["secretRef"]["name"].as_str().is_none_or(str::is_empty)
            {
                causes.push(Cause::required(
                    format!("{at}.envFrom[{j}].secretRef.name"),
                    "",
                ));
            }
        }
    }
    if let Some(env) = c["env"].as_array() {
        for (j, e) in env.iter().enumerate() {
            if e["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{at}.env[{j}].name"), ""));
            }
        }
    }
}

/// A container's CPU and memory quantities, requests within limits.
fn validate_resources(r: &Value, at: &str, causes: &mut Vec<Cause>) {
    for res in ["cpu", "memory"] {
        for kind in ["limits", "requests"] {
            let q = &r[kind][res];
            if !q.is_null() && store::parse_quantity(q).is_none() {
                causes.push(Cause::invalid(
                    format!("{at}.resources.{kind}.{res}"),
                    q,
                    "must be a valid quantity",
                ));
            }
        }
        if let (Some(req), Some(lim)) = (
            store::parse_quantity(&r["requests"][res]),
            store::parse_quantity(&r["limits"][res]),
        ) && req > lim
        {
            causes.push(Cause::invalid(
                format!("{at}.resources.requests"),
                &r["requests"][res],
                &format!(
                    "must be less than or equal to {res} limit of {}",
                    r["limits"][res]
                ),
            ));
        }
    }
}
