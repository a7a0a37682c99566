//! Creating and writing objects as the API server does: validation (422
//! with field causes), defaulting, admission (403), the status
//! subresource, immutability, finalizers, and the hooks that start the job
//! controller and the kubelet for new objects.

mod validation;

pub(crate) use validation::Cause;
use validation::validate;

use super::Inner;
use super::api::ApiError;
use super::controller;
use super::store::{self, Res, State, object_mut};
use base64::Engine;
use serde_json::{Value, json};
use std::sync::Arc;

/// Handles a create: checks, defaults, admission, storage, and starts the
/// controllers for it. Answers the stored object.
pub(crate) fn create(
    inner: &Arc<Inner>,
    res: &'static Res,
    ns: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let mut obj = body;
    check_type(res, &obj)?;
    let (uid, name, generate) = reset_metadata(res, ns, &mut obj)?;
    let mut st = inner.lock();
    let name = if name.is_empty() {
        unused_name(&st, res, ns, &generate)
    } else {
        name
    };
    obj["metadata"]["name"] = json!(name);
    default(res, &mut obj, &uid);
    let causes = validate(res, &obj);
    if !causes.is_empty() {
        return Err(ApiError::invalid(res, &name, &causes));
    }
    admit(&st, res, ns, &name)?;
    if res.plural == "jobs" {
        assign_fault(&mut st, &obj);
    }
    let before = st.rv;
    let stored = st.create(res, obj);
    let after = st.rv;
    drop(st);
    if after != before {
        inner.changed.send_replace(after);
    }
    controller::after_create(inner, res, &stored);
    Ok(stored)
}

/// Checks that a create's body is an object of the resource's
/// `apiVersion` and `kind` (when it names them).
fn check_type(res: &Res, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if let Some(av) = obj["apiVersion"].as_str()
        && av != res.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    if let Some(kind) = obj["kind"].as_str()
        && kind != res.kind
    {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {}: no kind \"{kind}\" is registered for this resource",
            res.kind
        )));
    }
    Ok(())
}

/// Sets a new object's namespace and a new uid, dropping the fields the
/// server owns; answers the uid, `name` and `generateName` (one of which
/// must be set).
fn reset_metadata(
    res: &Res,
    ns: &str,
    obj: &mut Value,
) -> Result<(String, String, String), ApiError> {
    let meta = object_mut(obj, "metadata");
    if let Some(other) = meta.get("namespace").and_then(Value::as_str)
        && !other.is_empty()
        && other != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    meta.insert("namespace".into(), json!(ns));
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "managedFields",
        "selfLink",
    ] {
        meta.remove(field);
    }
    let uid = store::new_uid();
    meta.insert("uid".into(), json!(uid));
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() && generate.is_empty() {
        return Err(ApiError::invalid(
            res,
            "",
            &[Cause::required(
                "metadata.name",
                "name or generateName is required",
            )],
        ));
    }
    Ok((uid, name, generate))
}

/// A name from `generate` and a random suffix that no object has yet.
fn unused_name(st: &State, res: &Res, ns: &str, generate: &str) -> String {
    loop {
        let candidate = format!("{generate}{}", store::random_suffix());
        if st.get(res.plural, ns, &candidate).is_none() {
            return candidate;
        }
    }
}

/// Admission: the injected webhook and Pod Security denials, then a name
/// already taken.
fn admit(st: &State, res: &Res, ns: &str, name: &str) -> Result<(), ApiError> {
    if res.plural == "jobs"
        && let Some(message) = &st.reject_jobs
    {
        return Err(webhook_denial(message));
    }
    if res.plural == "pods"
        && let Some(message) = &st.reject_pods
    {
        return Err(pod_security_denial(name, message));
    }
    if st.get(res.plural, ns, name).is_some() {
        return Err(ApiError::already_exists(res, name));
    }
    Ok(())
}

/// A validating webhook's denial.
fn webhook_denial(message: &str) -> ApiError {
    ApiError::forbidden(format!(
        "admission webhook \"policy.fake.hangar.dev\" denied the request: {message}"
    ))
}

/// Pod Security admission's denial of pod `name`.
pub(crate) fn pod_security_denial(name: &str, message: &str) -> ApiError {
    ApiError::forbidden(format!("pods \"{name}\" is forbidden: {message}"))
}

/// Gives a new Job its fault: the next queued one, else the first selector
/// that matches its labels.
fn assign_fault(st: &mut State, job: &Value) {
    let uid = job["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let fault = st.next_faults.pop_front().or_else(|| {
        st.selector_faults
            .iter()
            .find(|(sel, _)| sel.matches(&job["metadata"]["labels"]))
            .map(|(_, f)| f.clone())
    });
    if let Some(fault) = fault {
        st.job_faults.insert(uid, fault);
    }
}

/// Handles PUT and PATCH (`f` makes the new object from the stored one).
pub(crate) fn write(
    inner: &Arc<Inner>,
    res: &'static Res,
    ns: &str,
    name: &str,
    status_only: bool,
    f: impl FnOnce(&Value) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    inner.mutate(|st| {
        let current = st
            .get(res.plural, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let new = f(&current)?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        if let Some(n) = new["metadata"]["name"].as_str()
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(rv) = new["metadata"]["resourceVersion"].as_str()
            && Some(rv) != current["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(
                res,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let merged = if status_only {
            let mut merged = current.clone();
            merged["status"] = new["status"].clone();
            merged
        } else {
            let mut merged = new;
            let has_status = matches!(res.plural, "jobs" | "pods");
            if has_status {
                merged["status"] = current["status"].clone();
            }
            let meta = object_mut(&mut merged, "metadata");
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
            ] {
                match current["metadata"].get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
            meta.insert("name".into(), json!(name));
            if let Some(o) = merged.as_object_mut() {
                o.insert("apiVersion".into(), json!(res.api_version()));
                o.insert("kind".into(), json!(res.kind));
            }
            if res.plural == "secrets" {
                merge_string_data(&mut merged);
            }
            immutable(res, &current, &mut merged)?;
            let causes = validate(res, &merged);
            if !causes.is_empty() {
                return Err(ApiError::invalid(res, name, &causes));
            }
            merged
        };
        let finalizers_empty = merged["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if merged["metadata"]["deletionTimestamp"].is_string()
            && finalizers_empty
            && (res.plural != "pods" || !is_running(&merged))
        {
            let removed = st.remove(res.plural, ns, name);
            return Ok(removed.unwrap_or(merged));
        }
        st.update(res.plural, merged)
            .ok_or_else(|| ApiError::not_found(res, name))
    })
}

/// Whether a pod still has a kubelet working on it (scheduled, not
/// terminal).
pub(crate) fn is_running(pod: &Value) -> bool {
    pod["spec"]["nodeName"].is_string()
        && !matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        )
}

/// Refuses changes to immutable fields (Job templates and selectors, most
/// of a Pod's spec); bumps a Job's generation when its spec changed.
fn immutable(res: &Res, current: &Value, new: &mut Value) -> Result<(), ApiError> {
    let name = current["metadata"]["name"].as_str().unwrap_or_default();
    match res.plural {
        "jobs" => {
            for field in ["template", "selector", "completions", "completionMode"] {
                if new["spec"].get(field).is_some() && new["spec"][field] != current["spec"][field]
                {
                    return Err(ApiError::invalid(
                        res,
                        name,
                        &[Cause::invalid(
                            format!("spec.{field}"),
                            "…",
                            "field is immutable",
                        )],
                    ));
                }
                if new["spec"].get(field).is_none() {
                    new["spec"][field] = current["spec"][field].clone();
                }
            }
            if new["spec"] != current["spec"] {
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
                new["metadata"]["generation"] = json!(generation + 1);
            }
        }
        "pods" => {
            let strip = |spec: &Value| {
                let mut spec = spec.clone();
                for key in ["containers", "initContainers"] {
                    if let Some(cs) = spec[key].as_array_mut() {
                        for c in cs {
                            if let Some(c) = c.as_object_mut() {
                                c.remove("image");
                            }
                        }
                    }
                }
                if let Some(s) = spec.as_object_mut() {
                    s.remove("activeDeadlineSeconds");
                    s.remove("tolerations");
                }
                spec
            };
            if strip(&new["spec"]) != strip(&current["spec"]) {
                return Err(ApiError::invalid(
                    res,
                    name,
                    &[Cause::forbidden(
                        "spec",
                        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)",
                    )],
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Applies the API server's defaults to a new object with uid `uid`.
fn default(res: &Res, obj: &mut Value, uid: &str) {
    match res.plural {
        "jobs" => default_job(obj, uid),
        "pods" => {
            default_pod_spec(&mut obj["spec"], true);
            let qos = qos_class(&obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        "secrets" => {
            if !obj["type"].is_string() {
                obj["type"] = json!("Opaque");
            }
            merge_string_data(obj);
        }
        _ => {}
    }
}

fn default_job(job: &mut Value, uid: &str) {
    let name = job["metadata"]["name"].clone();
    let spec = object_mut(job, "spec");
    for (k, v) in [
        ("parallelism", json!(1)),
        ("completions", json!(1)),
        ("backoffLimit", json!(6)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
    ] {
        spec.entry(k).or_insert(v);
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = &mut job["spec"]["template"];
    if !template.is_object() {
        *template = json!({});
    }
    let labels = object_mut(object_mut_value(template, "metadata"), "labels");
    labels.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
    labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
    labels.insert("controller-uid".into(), json!(uid));
    labels.insert("job-name".into(), name);
    default_pod_spec(&mut job["spec"]["template"]["spec"], false);
    job["status"] = json!({});
}

fn object_mut_value<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    object_mut(obj, key);
    &mut obj[key]
}

/// Pod spec defaults; `pod` adds those of a real Pod (not a template).
fn default_pod_spec(spec: &mut Value, pod: bool) {
    if !spec.is_object() {
        return;
    }
    if let Some(map) = spec.as_object_mut() {
        if pod {
            map.entry("restartPolicy").or_insert(json!("Always"));
            map.entry("serviceAccountName").or_insert(json!("default"));
            map.entry("serviceAccount").or_insert(json!("default"));
            map.entry("enableServiceLinks").or_insert(json!(true));
            map.entry("priority").or_insert(json!(0));
            map.entry("preemptionPolicy")
                .or_insert(json!("PreemptLowerPriority"));
            map.entry("tolerations").or_insert(json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ]));
        }
        map.entry("terminationGracePeriodSeconds")
            .or_insert(json!(30));
        map.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
        map.entry("schedulerName")
            .or_insert(json!("default-scheduler"));
        map.entry("securityContext").or_insert(json!({}));
    }
    for key in ["initContainers", "containers"] {
        if let Some(cs) = spec[key].as_array_mut() {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                let policy = if image_tag_is_latest(image) {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                c.entry("imagePullPolicy").or_insert(json!(policy));
            }
        }
    }
}

/// Whether an image reference has no tag (or `:latest`) and no digest.
fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// `BestEffort`, `Burstable` or `Guaranteed`.
pub(crate) fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let r = &c["resources"];
        for res in ["cpu", "memory"] {
            let limit = &r["limits"][res];
            let request = if r["requests"][res].is_null() {
                limit
            } else {
                &r["requests"][res]
            };
            if !limit.is_null() || !request.is_null() {
                any = true;
            }
            if limit.is_null() || store::parse_quantity(limit) != store::parse_quantity(request) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// Moves `stringData` into `data` (base64), as the API server does.
fn merge_string_data(secret: &mut Value) {
    let Some(string_data) = secret.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    if let Some(map) = string_data.as_object() {
        let data = object_mut(secret, "data");
        for (k, v) in map {
            let text = v.as_str().unwrap_or_default();
            data.insert(
                k.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

/// The pod the job controller creates for `job` (not yet stored).
pub(crate) fn job_pod(job: &Value, st: &State) -> Value {
    let meta = &job["metadata"];
    let job_name = meta["name"].as_str().unwrap_or_default();
    let ns = meta["namespace"].as_str().unwrap_or_default();
    let name = loop {
        let candidate = format!("{job_name}-{}", store::random_suffix());
        if st.get("pods", ns, &candidate).is_none() {
            break candidate;
        }
    };
    let template = &job["spec"]["template"];
    let mut pod = json!({
        "metadata": {
            "name": name,
            "generateName": format!("{job_name}-"),
            "namespace": ns,
            "labels": template["metadata"]["labels"],
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job_name,
                "uid": meta["uid"],
                "controller": true,
                "blockOwnerDeletion": true,
            }],
            "uid": store::new_uid(),
        },
        "spec": template["spec"],
    });
    if template["metadata"]["annotations"].is_object() {
        pod["metadata"]["annotations"] = template["metadata"]["annotations"].clone();
    }
    default_pod_spec(&mut pod["spec"], true);
    let qos = qos_class(&pod["spec"]);
    pod["status"] = json!({"phase": "Pending", "qosClass": qos});
    pod
}
