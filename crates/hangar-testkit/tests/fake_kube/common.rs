//! What the tests share: clients for each resource, object builders, and
//! waits on status, conditions and events.

pub(crate) use futures::{StreamExt, TryStreamExt};
pub(crate) use hangar_testkit::fake_kube::{FakeKube, Fault, Kubelet, NAMESPACE};
pub(crate) use hangar_testkit::poll::{empty, within};
pub(crate) use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
pub(crate) use k8s_openapi::api::batch::v1::Job;
pub(crate) use k8s_openapi::api::core::v1::{Event, Pod, Secret};
pub(crate) use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
pub(crate) use kube::core::ObjectMeta;
pub(crate) use serde_json::{Value, json};
pub(crate) use std::time::Duration;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn scripted(run_for_ms: u64) -> (FakeKube, kube::Client) {
    let fake = FakeKube::start(Kubelet::Scripted {
        run_for: Duration::from_millis(run_for_ms),
    })
    .await;
    let client = fake.client().await;
    (fake, client)
}

pub(crate) fn jobs(client: &kube::Client) -> Api<Job> {
    Api::namespaced(client.clone(), NAMESPACE)
}

pub(crate) fn pods(client: &kube::Client) -> Api<Pod> {
    Api::namespaced(client.clone(), NAMESPACE)
}

pub(crate) fn secrets(client: &kube::Client) -> Api<Secret> {
    Api::namespaced(client.clone(), NAMESPACE)
}

pub(crate) fn events(client: &kube::Client) -> Api<Event> {
    Api::namespaced(client.clone(), NAMESPACE)
}

/// A Job from its pod spec (restartPolicy Never, backoffLimit 0).
pub(crate) fn job(name: &str, pod_spec: Value) -> Job {
    let mut spec = pod_spec;
    spec["restartPolicy"] = json!("Never");
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": "hangar", "run": name}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": "hangar", "run": name}},
                "spec": spec,
            },
        },
    }))
    .unwrap()
}

/// A one-container Job.
pub(crate) fn simple_job(name: &str) -> Job {
    job(
        name,
        json!({"containers": [{"name": "task", "image": "busybox:1.36", "command": ["echo", "hi"]}]}),
    )
}

pub(crate) fn secret(name: &str, labels: Value) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "stringData": {"token": "s3cret"},
    }))
    .unwrap()
}

/// The next watch event that is not a BOOKMARK (`None` when the stream
/// ended).
pub(crate) async fn next_event<K>(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> Option<WatchEvent<K>> {
    loop {
        match tokio::time::timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Bookmark(_)) => continue,
            other => return other,
        }
    }
}

pub(crate) fn api_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other:?}"),
    }
}

pub(crate) fn api_status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("not an API error: {other:?}"),
    }
}

/// Waits until the Job has condition `kind` (`Complete`, `Failed`).
pub(crate) async fn wait_job_condition(fake: &FakeKube, name: &str, kind: &str) -> Value {
    let found = fake
        .wait_for("Job", NAMESPACE, name, WAIT, |j| {
            j.is_some_and(|j| has_condition(j, kind))
        })
        .await;
    match found {
        Ok(Some(job)) => job,
        Ok(None) => unreachable!(),
        Err(last) => panic!("job {name} never got {kind}: {last:#?}"),
    }
}

pub(crate) fn has_condition(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

pub(crate) fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// The pods of a Job (by its `job-name` label).
pub(crate) fn job_pods(fake: &FakeKube, job: &str) -> Vec<Value> {
    fake.objects("Pod")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["job-name"] == job)
        .collect()
}

/// Waits until a pod of `job` satisfies `check`; answers it.
pub(crate) async fn wait_pod(fake: &FakeKube, job: &str, check: impl Fn(&Value) -> bool) -> Value {
    let what = format!("a pod of {job} to get there");
    // Every 20 ms: scripted pods pass through short-lived states.
    within(&what, WAIT, POLL, async || {
        let pods = job_pods(fake, job);
        match pods.iter().find(|p| check(p)) {
            Some(p) => Ok(p.clone()),
            None => Err(pods),
        }
    })
    .await
    .unwrap()
}

/// How often the tests look at the fake cluster.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// The state of container `name` in a pod (init or regular).
pub(crate) fn container_state<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][*k].as_array())
        .flatten()
        .find(|s| s["name"] == name)
        .map(|s| &s["state"])
        .unwrap_or(&Value::Null)
}

/// `(reason, message)` of the events about object `name`.
pub(crate) async fn events_of(client: &kube::Client, name: &str) -> Vec<(String, String, String)> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    events(client)
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

pub(crate) async fn wait_event(
    client: &kube::Client,
    name: &str,
    reason: &str,
) -> (String, String, String) {
    let what = format!("a {reason} event about {name}");
    within(&what, WAIT, POLL, async || {
        let all = events_of(client, name).await;
        match all.iter().find(|(_, r, _)| r == reason) {
            Some(e) => Ok(e.clone()),
            None => Err(all),
        }
    })
    .await
    .unwrap()
}
