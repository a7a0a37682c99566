//! The fake Kubernetes API server, driven by the real `kube` client.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use futures::{StreamExt, TryStreamExt};
use hangar_testkit::fake_kube::{FakeKube, Fault, Kubelet, NAMESPACE};
use hangar_testkit::poll::{empty, within};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::ObjectMeta;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn scripted(run_for_ms: u64) -> (FakeKube, kube::Client) {
    let fake = FakeKube::start(Kubelet::Scripted {
        run_for: Duration::from_millis(run_for_ms),
    })
    .await;
    let client = fake.client().await;
    (fake, client)
}

fn jobs(client: &kube::Client) -> Api<Job> {
    Api::namespaced(client.clone(), NAMESPACE)
}

fn pods(client: &kube::Client) -> Api<Pod> {
    Api::namespaced(client.clone(), NAMESPACE)
}

fn secrets(client: &kube::Client) -> Api<Secret> {
    Api::namespaced(client.clone(), NAMESPACE)
}

fn events(client: &kube::Client) -> Api<Event> {
    Api::namespaced(client.clone(), NAMESPACE)
}

/// A Job from its pod spec (restartPolicy Never, backoffLimit 0).
fn job(name: &str, pod_spec: Value) -> Job {
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
fn simple_job(name: &str) -> Job {
    job(
        name,
        json!({"containers": [{"name": "task", "image": "busybox:1.36", "command": ["echo", "hi"]}]}),
    )
}

fn secret(name: &str, labels: Value) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "stringData": {"token": "s3cret"},
    }))
    .unwrap()
}

/// The next watch event that is not a BOOKMARK (`None` when the stream
/// ended).
async fn next_event<K>(
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

fn api_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other:?}"),
    }
}

fn api_status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("not an API error: {other:?}"),
    }
}

/// Waits until the Job has condition `kind` (`Complete`, `Failed`).
async fn wait_job_condition(fake: &FakeKube, name: &str, kind: &str) -> Value {
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

fn has_condition(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// The pods of a Job (by its `job-name` label).
fn job_pods(fake: &FakeKube, job: &str) -> Vec<Value> {
    fake.objects("Pod")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["job-name"] == job)
        .collect()
}

/// Waits until a pod of `job` satisfies `check`; answers it.
async fn wait_pod(fake: &FakeKube, job: &str, check: impl Fn(&Value) -> bool) -> Value {
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
const POLL: Duration = Duration::from_millis(20);

/// The state of container `name` in a pod (init or regular).
fn container_state<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][*k].as_array())
        .flatten()
        .find(|s| s["name"] == name)
        .map(|s| &s["state"])
        .unwrap_or(&Value::Null)
}

/// `(reason, message)` of the events about object `name`.
async fn events_of(client: &kube::Client, name: &str) -> Vec<(String, String, String)> {
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

async fn wait_event(client: &kube::Client, name: &str, reason: &str) -> (String, String, String) {
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

#[tokio::test]
async fn discovery_reports_v1_33_and_the_served_resources() {
    let (_fake, client) = scripted(50).await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    assert!(version.git_version.starts_with("v1.33."), "{version:?}");

    let core = client.list_core_api_resources("v1").await.unwrap();
    let pod = core.resources.iter().find(|r| r.name == "pods").unwrap();
    assert!(pod.namespaced);
    assert_eq!(pod.kind, "Pod");
    for verb in ["create", "get", "list", "watch", "delete"] {
        assert!(pod.verbs.iter().any(|v| v == verb), "{verb}");
    }
    for name in ["pods/log", "secrets", "events"] {
        assert!(core.resources.iter().any(|r| r.name == name), "{name}");
    }
    let groups = client.list_api_groups().await.unwrap();
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["batch", "authorization.k8s.io"]);
    let batch = client.list_api_group_resources("batch/v1").await.unwrap();
    let jobs = batch.resources.iter().find(|r| r.name == "jobs").unwrap();
    assert_eq!((jobs.kind.as_str(), jobs.namespaced), ("Job", true));
    let authz = client
        .list_api_group_resources("authorization.k8s.io/v1")
        .await
        .unwrap();
    let ssar = &authz.resources[0];
    assert_eq!(ssar.name, "selfsubjectaccessreviews");
    assert!(!ssar.namespaced);

    for discovery in [
        kube::Discovery::new(client.clone()).run().await.unwrap(),
        kube::Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        let gvk = kube::api::GroupVersionKind::gvk("batch", "v1", "Job");
        let (resource, caps) = discovery.resolve_gvk(&gvk).unwrap();
        assert_eq!(resource.plural, "jobs");
        assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
        assert!(discovery.has_group(""));
    }
}

#[tokio::test]
async fn requests_without_the_bearer_token_are_refused_with_401() {
    let (fake, _client) = scripted(50).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/namespaces/default/pods", fake.url());
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let wrong = http.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http
        .get(&url)
        .bearer_auth(fake.token())
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let list: Value = right.json().await.unwrap();
    assert_eq!(list["kind"], "PodList");
    let version = http
        .get(format!("{}/version", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(version.status(), 200, "/version is public");
    fake.require_token(false);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    let wrong = http.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401, "a wrong token is still refused");
}

#[tokio::test]
async fn the_kubeconfig_file_points_a_client_at_the_fake() {
    let (fake, _client) = scripted(50).await;
    let dir = tempfile::tempdir().unwrap();
    let path = fake.kubeconfig(dir.path());
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, NAMESPACE);
    assert_eq!(config.cluster_url.to_string(), format!("{}/", fake.url()));
    let client = kube::Client::try_from(config).unwrap();
    let list = secrets(&client).list(&ListParams::default()).await.unwrap();
    assert!(list.items.is_empty());
}

#[tokio::test]
async fn secrets_are_created_read_listed_and_deleted() {
    let (fake, client) = scripted(50).await;
    let api = secrets(&client);
    let created = api
        .create(&PostParams::default(), &secret("run-1", json!({"a": "b"})))
        .await
        .unwrap();
    let data = created.data.clone().unwrap();
    assert_eq!(data["token"].0, b"s3cret");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let got = api.get("run-1").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    let raw = fake.requests();
    assert!(
        raw.iter()
            .any(|r| r.method == "GET" && r.path == "/api/v1/namespaces/default/secrets")
    );

    let again = api
        .create(&PostParams::default(), &secret("run-1", json!({})))
        .await
        .unwrap_err();
    let status = api_status(again);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(status.message, "secrets \"run-1\" already exists");

    let deleted = api.delete("run-1", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right(), "a plain delete answers a Status");
    let gone = api.get("run-1").await.unwrap_err();
    let status = api_status(gone);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "secrets \"run-1\" not found");
    assert_eq!(
        api_code(
            &api.delete("run-1", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        404
    );
}

#[tokio::test]
async fn objects_get_uids_timestamps_resource_versions_and_generated_names() {
    let (_fake, client) = scripted(50).await;
    let api = secrets(&client);
    let mut generated = Secret {
        metadata: ObjectMeta {
            generate_name: Some("run-".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    let a = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    generated.metadata.generate_name = Some("run-".into());
    let b = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    for s in [&a, &b] {
        let name = s.metadata.name.as_deref().unwrap();
        assert!(name.starts_with("run-") && name.len() == 9, "{name}");
        assert!(s.metadata.uid.is_some());
        assert!(s.metadata.creation_timestamp.is_some());
    }
    assert_ne!(a.metadata.name, b.metadata.name);
    assert_ne!(a.metadata.uid, b.metadata.uid);
    let rv = |s: &Secret| -> u64 {
        s.metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(rv(&b) > rv(&a), "one global counter");
    let patched = api
        .patch(
            a.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert!(rv(&patched) > rv(&b));
    assert_eq!(patched.metadata.labels.unwrap()["x"], "y");
    let mut stale = a.clone();
    stale.metadata.labels = Some([("z".to_owned(), "1".to_owned())].into());
    let conflict = api
        .replace(
            a.metadata.name.as_deref().unwrap(),
            &PostParams::default(),
            &stale,
        )
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&conflict),
        409,
        "a stale resourceVersion conflicts"
    );
}

#[tokio::test]
async fn invalid_objects_are_refused_with_422_and_field_causes() {
    let (_fake, client) = scripted(50).await;
    let nameless = secrets(&client)
        .create(&PostParams::default(), &Secret::default())
        .await
        .unwrap_err();
    let status = api_status(nameless);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .contains("metadata.name: Required value: name or generateName is required"),
        "{}",
        status.message
    );

    let no_containers = jobs(&client)
        .create(
            &PostParams::default(),
            &job("empty", json!({"containers": []})),
        )
        .await
        .unwrap_err();
    let status = api_status(no_containers);
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "Job.batch \"empty\" is invalid: spec.template.spec.containers: Required value"
    );
    let causes = status.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.template.spec.containers");
    assert_eq!(causes[0].reason, "FieldValueRequired");

    let mut always = simple_job("always");
    always
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("Always".into());
    let status = api_status(
        jobs(&client)
            .create(&PostParams::default(), &always)
            .await
            .unwrap_err(),
    );
    assert!(
        status.message.contains("Unsupported value: \"Always\""),
        "{}",
        status.message
    );

    let image_volume = job(
        "imagevol",
        json!({
            "containers": [{"name": "task", "image": "busybox", "volumeMounts": [{"name": "agent", "mountPath": "/agent"}]}],
            "volumes": [{"name": "agent", "image": {"reference": "hangar:1"}}],
        }),
    );
    let status = api_status(
        jobs(&client)
            .create(&PostParams::default(), &image_volume)
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("image volumes are not supported"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists() {
    let (_fake, client) = scripted(50).await;
    let api = secrets(&client);
    for (name, labels) in [
        ("s1", json!({"app": "hangar", "run": "1"})),
        ("s2", json!({"app": "hangar", "run": "2"})),
        ("s3", json!({"app": "other"})),
        ("s4", json!({})),
    ] {
        api.create(&PostParams::default(), &secret(name, labels))
            .await
            .unwrap();
    }
    let names = |lp: ListParams| {
        let api = api.clone();
        async move {
            api.list(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|s| s.metadata.name.unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(ListParams::default().labels("app=hangar")).await,
        ["s1", "s2"]
    );
    assert_eq!(
        names(ListParams::default().labels("app!=hangar")).await,
        ["s3", "s4"]
    );
    assert_eq!(
        names(ListParams::default().labels("run")).await,
        ["s1", "s2"]
    );
    assert_eq!(
        names(ListParams::default().labels("app=hangar,run=2")).await,
        ["s2"]
    );
    assert_eq!(names(ListParams::default().labels("!app")).await, ["s4"]);
    assert_eq!(
        names(ListParams::default().labels("app in (other,x)")).await,
        ["s3"]
    );
    assert_eq!(
        names(ListParams::default().fields("metadata.name=s3")).await,
        ["s3"]
    );
    let bad = api
        .list(&ListParams::default().fields("data.token=x"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&bad), 400);
}

#[tokio::test]
async fn lists_page_with_limit_and_continue() {
    let (_fake, client) = scripted(50).await;
    let api = secrets(&client);
    for i in 0..5 {
        api.create(&PostParams::default(), &secret(&format!("s{i}"), json!({})))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().unwrap();
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<_> = second
        .items
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["s2", "s3"]);
}

#[tokio::test]
async fn a_watch_sees_added_modified_and_deleted() {
    let (_fake, client) = scripted(50).await;
    let api = secrets(&client);
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=hangar"), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(
        &PostParams::default(),
        &secret("w1", json!({"app": "hangar"})),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &secret("other", json!({"app": "x"})),
    )
    .await
    .unwrap();
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
    )
    .await
    .unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = next_event(&mut stream).await.unwrap();
        let (kind, s) = match event {
            WatchEvent::Added(s) => ("ADDED", s),
            WatchEvent::Modified(s) => ("MODIFIED", s),
            WatchEvent::Deleted(s) => ("DELETED", s),
            other => panic!("unexpected {other:?}"),
        };
        seen.push((kind, s.metadata.name.unwrap()));
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "w1".to_owned()),
            ("MODIFIED", "w1".to_owned()),
            ("DELETED", "w1".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_watch_from_an_expired_resource_version_gets_410_and_relists() {
    let (fake, client) = scripted(50).await;
    let api = secrets(&client);
    api.create(&PostParams::default(), &secret("before", json!({})))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut open = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    fake.expire_watches();
    // The open watch ends with an ERROR event carrying a 410 Status.
    match tokio::time::timeout(WAIT, open.try_next()).await.unwrap() {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        Ok(Some(WatchEvent::Error(s))) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // Watching again from the old resourceVersion is refused the same way.
    let mut again = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, again.try_next()).await.unwrap() {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410),
        Ok(Some(WatchEvent::Error(s))) => assert_eq!(s.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // The client re-lists and watches from the new resourceVersion.
    let relisted = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(relisted.items.len(), 1);
    let new_rv = relisted.metadata.resource_version.unwrap();
    assert!(new_rv.parse::<u64>().unwrap() > rv.parse::<u64>().unwrap());
    let mut fresh = api
        .watch(&WatchParams::default(), &new_rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &secret("after", json!({})))
        .await
        .unwrap();
    match next_event(&mut fresh).await {
        Some(WatchEvent::Added(s)) => assert_eq!(s.metadata.name.as_deref(), Some("after")),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn watches_send_bookmarks_when_allowed() {
    let (fake, client) = scripted(50).await;
    fake.set_bookmark_interval(Duration::from_millis(50));
    let api = secrets(&client);
    api.create(&PostParams::default(), &secret("b", json!({})))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Bookmark(b)) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a BOOKMARK, got {other:?}"),
    }
    let raw = fake.requests();
    let watch = raw
        .iter()
        .rev()
        .find(|r| r.param("watch").is_some())
        .unwrap();
    assert_eq!(watch.param("allowWatchBookmarks").as_deref(), Some("true"));
    assert_eq!(watch.param("resourceVersion").as_deref(), Some(rv.as_str()));
}

#[tokio::test]
async fn close_watches_ends_every_open_stream() {
    let (fake, client) = scripted(50).await;
    let mut a = secrets(&client)
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut b = pods(&client)
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(fake.open_watches(), 2);
    fake.close_watches();
    assert!(next_event(&mut a).await.is_none());
    assert!(next_event(&mut b).await.is_none());
}

#[tokio::test]
async fn watch_timeout_seconds_ends_the_stream() {
    let (_fake, client) = scripted(50).await;
    let mut stream = secrets(&client)
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    assert!(next_event(&mut stream).await.is_none());
}

#[tokio::test]
async fn a_job_runs_to_completion_with_realistic_pod_and_job_status() {
    let (fake, client) = scripted(100).await;
    let created = jobs(&client)
        .create(&PostParams::default(), &simple_job("run-ok"))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );
    let job = wait_job_condition(&fake, "run-ok", "Complete").await;
    assert!(has_condition(&job, "SuccessCriteriaMet"));
    assert_eq!(condition(&job, "Complete")["reason"], "CompletionsReached");
    assert_eq!(job["status"]["succeeded"], 1);
    assert!(job["status"]["active"].is_null());
    assert!(job["status"]["startTime"].is_string());
    assert!(job["status"]["completionTime"].is_string());
    // The typed client reads the same.
    let typed = jobs(&client).get("run-ok").await.unwrap();
    assert_eq!(typed.status.unwrap().succeeded, Some(1));

    let all = pods(&client)
        .list(&ListParams::default().labels("job-name=run-ok"))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1);
    let pod = &all.items[0];
    let name = pod.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("run-ok-") && name.len() == "run-ok-".len() + 5,
        "{name}"
    );
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["app"], "hangar");
    assert_eq!(labels["controller-uid"], uid);
    assert_eq!(labels["batch.kubernetes.io/job-name"], "run-ok");
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Job", uid.as_str())
    );
    assert_eq!(owner.controller, Some(true));
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    let terminated = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("PodCompleted"))
    );

    let pod_events: Vec<String> = events_of(&client, &name)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(
            pod_events.iter().any(|r| r == reason),
            "{reason} in {pod_events:?}"
        );
    }
    let job_events: Vec<String> = events_of(&client, "run-ok")
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(
        job_events.contains(&"SuccessfulCreate".to_owned()),
        "{job_events:?}"
    );
    assert!(
        job_events.contains(&"Completed".to_owned()),
        "{job_events:?}"
    );
}

#[tokio::test]
async fn pods_go_pending_then_through_init_containers_then_running_then_succeeded() {
    let (_fake, client) = scripted(300).await;
    let api = pods(&client);
    let mut stream = api
        .watch(&WatchParams::default().labels("job-name=phases"), "0")
        .await
        .unwrap()
        .boxed();
    let spec = json!({
        "initContainers": [
            {"name": "copy-agent", "image": "hangar:1", "command": ["cp", "-r", "/agent", "/shared"]},
            {"name": "setup", "image": "busybox", "command": ["true"]},
        ],
        "containers": [{"name": "task", "image": "busybox", "command": ["true"]}],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("phases", spec))
        .await
        .unwrap();
    let mut steps: Vec<String> = Vec::new();
    loop {
        let event = next_event(&mut stream).await.unwrap();
        let pod = match event {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
            other => panic!("unexpected {other:?}"),
        };
        let status = pod.status.unwrap_or_default();
        let phase = status.phase.unwrap_or_default();
        let running_init: Vec<String> = status
            .init_container_statuses
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
            .map(|s| s.name)
            .collect();
        let step = match running_init.first() {
            Some(init) => format!("{phase}/{init}"),
            None => phase.clone(),
        };
        if steps.last() != Some(&step) {
            steps.push(step);
        }
        if phase == "Succeeded" {
            break;
        }
    }
    assert_eq!(
        steps,
        [
            "Pending",
            "Pending/copy-agent",
            "Pending",
            "Pending/setup",
            "Pending",
            "Running",
            "Succeeded"
        ]
    );
}

#[tokio::test]
async fn native_sidecars_start_with_the_pod_and_stop_without_failing_it() {
    let (fake, client) = scripted(200).await;
    let spec = json!({
        "initContainers": [
            {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"},
            {"name": "setup", "image": "busybox", "command": ["true"]},
        ],
        "containers": [{"name": "task", "image": "busybox", "command": ["true"]}],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("sidecar", spec))
        .await
        .unwrap();
    // While setup runs, the sidecar already runs.
    let pod = wait_pod(&fake, "sidecar", |p| {
        !container_state(p, "setup")["running"].is_null()
    })
    .await;
    assert!(
        !container_state(&pod, "proxy")["running"].is_null(),
        "{pod:#?}"
    );
    wait_job_condition(&fake, "sidecar", "Complete").await;
    let pod = &job_pods(&fake, "sidecar")[0];
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let proxy = &container_state(pod, "proxy")["terminated"];
    assert_eq!(proxy["exitCode"], 143, "stopped by SIGTERM: {pod:#?}");
    let name = pod["metadata"]["name"].as_str().unwrap();
    let killing = wait_event(&client, name, "Killing").await;
    assert_eq!(killing.2, "Stopping container proxy");
}

#[tokio::test]
async fn pod_logs_honour_container_tail_lines_and_limit_bytes() {
    let (fake, client) = scripted(50).await;
    let spec = json!({
        "containers": [
            {"name": "task", "image": "busybox", "command": ["echo", "hello"]},
            {"name": "helper", "image": "busybox", "args": ["serve"]},
        ],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("logs", spec))
        .await
        .unwrap();
    wait_job_condition(&fake, "logs", "Complete").await;
    let name = job_pods(&fake, "logs")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = pods(&client);
    let text = api
        .logs(
            &name,
            &LogParams {
                container: Some("task".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(text, "fake-kubelet: container task ran echo hello\n");
    let limited = api
        .logs(
            &name,
            &LogParams {
                container: Some("helper".into()),
                limit_bytes: Some(12),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(limited, "fake-kubelet");
    let tail = api
        .logs(
            &name,
            &LogParams {
                container: Some("task".into()),
                tail_lines: Some(1),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, text);
    let ambiguous = api.logs(&name, &LogParams::default()).await.unwrap_err();
    let status = api_status(ambiguous);
    assert_eq!(status.code, 400);
    assert!(
        status
            .message
            .contains("a container name must be specified"),
        "{}",
        status.message
    );
    let raw = fake.requests();
    let log_req = raw.iter().find(|r| r.path.ends_with("/log")).unwrap();
    assert_eq!(log_req.param("container").as_deref(), Some("task"));
}

#[tokio::test]
async fn pod_logs_follow_streams_until_the_container_ends() {
    let (fake, client) = scripted(400).await;
    jobs(&client)
        .create(&PostParams::default(), &simple_job("follow"))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "follow", |p| p["status"]["phase"] == "Running").await;
    let name = pod["metadata"]["name"].as_str().unwrap();
    let stream = pods(&client)
        .log_stream(
            name,
            &LogParams {
                follow: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let mut text = String::new();
    let mut stream = Box::pin(stream);
    let read = futures::AsyncReadExt::read_to_string(&mut stream, &mut text);
    tokio::time::timeout(WAIT, read).await.unwrap().unwrap();
    assert_eq!(text, "fake-kubelet: container task ran echo hi\n");
    let pod = fake.object("Pod", NAMESPACE, name).unwrap();
    assert!(
        !container_state(&pod, "task")["terminated"].is_null(),
        "the stream ended with the container"
    );
}

#[tokio::test]
async fn delete_collection_removes_the_selected_objects() {
    let (fake, client) = scripted(50).await;
    let api = secrets(&client);
    for (name, labels) in [
        ("a", json!({"run": "1"})),
        ("b", json!({"run": "1"})),
        ("c", json!({"run": "2"})),
    ] {
        api.create(&PostParams::default(), &secret(name, labels))
            .await
            .unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("run=1"),
    )
    .await
    .unwrap();
    let left: Vec<Value> = fake.objects("Secret");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["metadata"]["name"], "c");
}

/// A Job whose task runs for a long time, and a Secret owned by it.
async fn running_job_with_secret(fake: &FakeKube, client: &kube::Client, name: &str) -> String {
    let created = jobs(client)
        .create(&PostParams::default(), &simple_job(name))
        .await
        .unwrap();
    let uid = created.metadata.uid.unwrap();
    let owned: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{name}-env"),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}],
        },
        "stringData": {"HANGAR_TOKEN": "t"},
    }))
    .unwrap();
    secrets(client)
        .create(&PostParams::default(), &owned)
        .await
        .unwrap();
    wait_pod(fake, name, |p| p["status"]["phase"] == "Running").await;
    uid
}

/// The resourceVersion of the DELETED event for each object named in
/// `names`, seen on watches started at `rv`.
async fn deletion_order(client: &kube::Client, rv: &str, names: &[&str]) -> Vec<(String, u64)> {
    let job_events = jobs(client)
        .watch(&WatchParams::default(), rv)
        .await
        .unwrap()
        .map_ok(|e| match e {
            WatchEvent::Deleted(j) => Some((
                j.metadata.name.unwrap(),
                j.metadata.resource_version.unwrap(),
            )),
            _ => None,
        });
    let pod_events = pods(client)
        .watch(&WatchParams::default(), rv)
        .await
        .unwrap()
        .map_ok(|e| match e {
            WatchEvent::Deleted(p) => Some((
                p.metadata.name.unwrap(),
                p.metadata.resource_version.unwrap(),
            )),
            _ => None,
        });
    let secret_events = secrets(client)
        .watch(&WatchParams::default(), rv)
        .await
        .unwrap()
        .map_ok(|e| match e {
            WatchEvent::Deleted(s) => Some((
                s.metadata.name.unwrap(),
                s.metadata.resource_version.unwrap(),
            )),
            _ => None,
        });
    let mut all = futures::stream::select(
        futures::stream::select(job_events.boxed(), pod_events.boxed()),
        secret_events.boxed(),
    );
    let mut deleted = Vec::new();
    while deleted.len() < names.len() {
        let next = tokio::time::timeout(WAIT, all.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some((name, rv)) = next {
            let matched = names.iter().any(|n| name.starts_with(n));
            if matched {
                deleted.push((name, rv.parse().unwrap()));
            }
        }
    }
    deleted.sort_by_key(|(_, rv)| *rv);
    deleted
}

#[tokio::test]
async fn foreground_delete_removes_the_pod_and_the_owned_secret_before_the_job() {
    let (fake, client) = scripted(60_000).await;
    running_job_with_secret(&fake, &client, "fg").await;
    let rv = jobs(&client)
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let answer = jobs(&client)
        .delete("fg", &DeleteParams::foreground())
        .await
        .unwrap();
    let pending = answer
        .left()
        .expect("the Job, still there while its dependents go");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.finalizers.unwrap(), ["foregroundDeletion"]);
    let order = deletion_order(&client, &rv, &["fg-env", "fg-", "fg"]).await;
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.last(), Some(&"fg"), "the Job goes last: {names:?}");
    assert!(fake.objects("Pod").is_empty());
    assert!(fake.objects("Secret").is_empty());
    assert!(fake.objects("Job").is_empty());
}

#[tokio::test]
async fn background_delete_removes_the_job_at_once_and_its_dependents_after() {
    let (fake, client) = scripted(60_000).await;
    running_job_with_secret(&fake, &client, "bg").await;
    let rv = jobs(&client)
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let answer = jobs(&client)
        .delete("bg", &DeleteParams::background())
        .await
        .unwrap();
    assert!(answer.is_right(), "a Status: the Job is gone");
    assert_eq!(api_code(&jobs(&client).get("bg").await.unwrap_err()), 404);
    let order = deletion_order(&client, &rv, &["bg-env", "bg-", "bg"]).await;
    assert_eq!(order[0].0, "bg", "the Job goes first: {order:?}");
    assert!(fake.objects("Pod").is_empty() && fake.objects("Secret").is_empty());
}

#[tokio::test]
async fn deleting_a_job_without_a_policy_orphans_its_pods_as_batch_v1_does() {
    let (fake, client) = scripted(60_000).await;
    running_job_with_secret(&fake, &client, "orphan").await;
    jobs(&client)
        .delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pods = job_pods(&fake, "orphan");
    assert_eq!(pods.len(), 1, "the pod keeps running");
    assert!(pods[0]["metadata"]["ownerReferences"].is_null());
    assert_eq!(pods[0]["status"]["phase"], "Running");
    assert_eq!(fake.objects("Secret").len(), 1);
    let explicit = jobs(&client)
        .create(&PostParams::default(), &simple_job("orphan2"))
        .await;
    assert!(explicit.is_ok());
    jobs(&client)
        .delete("orphan2", &DeleteParams::orphan())
        .await
        .unwrap();
    assert!(fake.object("Job", NAMESPACE, "orphan2").is_none());
}

#[tokio::test]
async fn garbage_collection_removes_secrets_whose_owners_are_gone() {
    let (fake, client) = scripted(50).await;
    let never: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "dangling",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}],
        },
    }))
    .unwrap();
    secrets(&client)
        .create(&PostParams::default(), &never)
        .await
        .unwrap();
    let created = jobs(&client)
        .create(&PostParams::default(), &simple_job("gc"))
        .await
        .unwrap();
    let owned: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": "gc-env",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "gc", "uid": created.metadata.uid}],
        },
    }))
    .unwrap();
    secrets(&client)
        .create(&PostParams::default(), &owned)
        .await
        .unwrap();
    fake.wait_for("Secret", NAMESPACE, "dangling", WAIT, |s| s.is_none())
        .await
        .unwrap();
    assert!(
        fake.object("Secret", NAMESPACE, "gc-env").is_some(),
        "its owner exists"
    );
    jobs(&client)
        .delete("gc", &DeleteParams::background())
        .await
        .unwrap();
    fake.wait_for("Secret", NAMESPACE, "gc-env", WAIT, |s| s.is_none())
        .await
        .unwrap();
}

#[tokio::test]
async fn deleting_a_running_pod_sends_sigterm_and_removes_it_after_termination() {
    let (fake, client) = scripted(60_000).await;
    jobs(&client)
        .create(&PostParams::default(), &simple_job("grace"))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "grace", |p| p["status"]["phase"] == "Running").await;
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let rv = pod["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut stream = pods(&client)
        .watch(
            &WatchParams::default().fields(&format!("metadata.name={name}")),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let answer = pods(&client)
        .delete(&name, &DeleteParams::default().grace_period(5))
        .await
        .unwrap();
    let terminating = answer
        .left()
        .expect("a graceful pod deletion answers the pod");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(5));
    let mut last_status = None;
    loop {
        match next_event(&mut stream).await.unwrap() {
            WatchEvent::Modified(p) => last_status = p.status,
            WatchEvent::Deleted(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let status = last_status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let terminated = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(terminated.exit_code, 143);
    let killing = wait_event(&client, &name, "Killing").await;
    assert_eq!(killing.2, "Stopping container task");
}

#[tokio::test]
async fn self_subject_access_reviews_answer_from_the_deny_list_which_rbac_enforces() {
    let (fake, client) = scripted(50).await;
    fake.deny("create", "jobs");
    fake.deny("get", "pods/log");
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = |verb: &str, group: &str, resource: &str, sub: Option<&str>| {
        let body: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {
                "namespace": NAMESPACE, "verb": verb, "group": group, "resource": resource, "subresource": sub,
            }},
        }))
        .unwrap();
        let reviews = reviews.clone();
        async move {
            reviews
                .create(&PostParams::default(), &body)
                .await
                .unwrap()
                .status
                .unwrap()
                .allowed
        }
    };
    assert!(!review("create", "batch", "jobs", None).await);
    assert!(review("delete", "batch", "jobs", None).await);
    assert!(review("watch", "", "pods", None).await);
    assert!(!review("get", "", "pods", Some("log")).await);
    let refused = jobs(&client)
        .create(&PostParams::default(), &simple_job("denied"))
        .await
        .unwrap_err();
    let status = api_status(refused);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert!(
        status
            .message
            .contains("cannot create resource \"jobs\" in API group \"batch\""),
        "{}",
        status.message
    );
    fake.allow_all();
    assert!(review("create", "batch", "jobs", None).await);
}

#[tokio::test]
async fn admission_rejection_refuses_jobs_with_403_and_the_policy_message() {
    let (fake, client) = scripted(50).await;
    fake.reject_jobs("containers must not run as root (policy require-non-root)");
    let refused = jobs(&client)
        .create(&PostParams::default(), &simple_job("blocked"))
        .await
        .unwrap_err();
    let status = api_status(refused);
    assert_eq!(status.code, 403);
    assert!(
        status.message.contains(
            "denied the request: containers must not run as root (policy require-non-root)"
        ),
        "{}",
        status.message
    );
    assert!(fake.objects("Job").is_empty());
    fake.admit_all();
    jobs(&client)
        .create(&PostParams::default(), &simple_job("blocked"))
        .await
        .unwrap();
}

#[tokio::test]
async fn rejected_pods_leave_failed_create_events_on_the_job() {
    let (fake, client) = scripted(50).await;
    fake.reject_pods("violates PodSecurity \"restricted:latest\": runAsNonRoot != true");
    jobs(&client)
        .create(&PostParams::default(), &simple_job("psa"))
        .await
        .unwrap();
    let (kind, _, message) = wait_event(&client, "psa", "FailedCreate").await;
    assert_eq!(kind, "Warning");
    assert!(
        message.starts_with("Error creating: pods \"psa-"),
        "{message}"
    );
    assert!(message.contains("violates PodSecurity"), "{message}");
    assert!(job_pods(&fake, "psa").is_empty());
}

#[tokio::test]
async fn a_missing_env_from_secret_is_create_container_config_error_until_it_exists() {
    let (fake, client) = scripted(50).await;
    let spec = json!({"containers": [{
        "name": "task", "image": "busybox", "command": ["true"],
        "envFrom": [{"secretRef": {"name": "late-env"}}],
    }]});
    jobs(&client)
        .create(&PostParams::default(), &job("late", spec))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "late", |p| {
        container_state(p, "task")["waiting"]["reason"] == "CreateContainerConfigError"
    })
    .await;
    assert_eq!(
        container_state(&pod, "task")["waiting"]["message"],
        "secret \"late-env\" not found"
    );
    secrets(&client)
        .create(&PostParams::default(), &secret("late-env", json!({})))
        .await
        .unwrap();
    wait_job_condition(&fake, "late", "Complete").await;
}

#[tokio::test]
async fn pods_requesting_more_than_the_node_are_unschedulable() {
    let (fake, client) = scripted(50).await;
    let spec = json!({"containers": [{
        "name": "task", "image": "busybox",
        "resources": {"requests": {"memory": "64Gi"}},
    }]});
    jobs(&client)
        .create(&PostParams::default(), &job("huge", spec))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "huge", |p| !condition(p, "PodScheduled").is_null()).await;
    let scheduled = condition(&pod, "PodScheduled");
    assert_eq!(scheduled["reason"], "Unschedulable");
    assert!(
        scheduled["message"]
            .as_str()
            .unwrap()
            .contains("Insufficient memory")
    );
}

#[tokio::test]
async fn ttl_seconds_after_finished_deletes_the_finished_job_and_its_pods() {
    let (fake, client) = scripted(50).await;
    let mut ttl = simple_job("ttl");
    ttl.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(0);
    jobs(&client)
        .create(&PostParams::default(), &ttl)
        .await
        .unwrap();
    wait_pod(&fake, "ttl", |_| true).await;
    fake.wait_for("Job", NAMESPACE, "ttl", WAIT, |j| j.is_none())
        .await
        .unwrap();
    within("the Job's pods to go with it", WAIT, POLL, async || {
        empty(job_pods(&fake, "ttl"))
    })
    .await
    .unwrap();
}

// ---- Faults (scripted kubelet) ----

#[tokio::test]
async fn fault_unschedulable_keeps_the_pod_pending_with_failed_scheduling() {
    let (fake, client) = scripted(50).await;
    fake.inject(Fault::Unschedulable);
    jobs(&client)
        .create(&PostParams::default(), &simple_job("unsched"))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "unsched", |p| {
        !condition(p, "PodScheduled").is_null()
    })
    .await;
    assert_eq!(pod["status"]["phase"], "Pending");
    let c = condition(&pod, "PodScheduled");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("Unschedulable"))
    );
    let name = pod["metadata"]["name"].as_str().unwrap();
    let (kind, _, message) = wait_event(&client, name, "FailedScheduling").await;
    assert_eq!(kind, "Warning");
    assert!(message.starts_with("0/1 nodes are available"), "{message}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = fake.object("Pod", NAMESPACE, name).unwrap();
    assert_eq!(later["status"]["phase"], "Pending", "forever");
    assert!(later["spec"]["nodeName"].is_null());
}

#[tokio::test]
async fn fault_image_pull_shows_err_image_pull_then_image_pull_back_off() {
    let (fake, client) = scripted(50).await;
    fake.inject(Fault::ImagePull);
    jobs(&client)
        .create(&PostParams::default(), &simple_job("pull"))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "pull", |p| {
        container_state(p, "task")["waiting"]["reason"] == "ErrImagePull"
    })
    .await;
    assert_eq!(pod["status"]["phase"], "Pending");
    let message = container_state(&pod, "task")["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("failed to pull and unpack image \"docker.io/library/busybox:1.36\""),
        "{message}"
    );
    wait_pod(&fake, "pull", |p| {
        container_state(p, "task")["waiting"]["reason"] == "ImagePullBackOff"
    })
    .await;
    let name = pod["metadata"]["name"].as_str().unwrap();
    let events = events_of(&client, name).await;
    assert!(
        events.iter().any(|(t, r, m)| t == "Warning"
            && r == "Failed"
            && m.starts_with("Failed to pull image \"busybox:1.36\"")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|(_, r, m)| r == "Failed" && m == "Error: ErrImagePull")
    );
    assert!(
        events
            .iter()
            .any(|(_, r, m)| r == "BackOff" && m == "Back-off pulling image \"busybox:1.36\"")
    );
}

#[tokio::test]
async fn fault_invalid_image_shows_invalid_image_name() {
    let (fake, client) = scripted(50).await;
    fake.inject(Fault::InvalidImage);
    jobs(&client)
        .create(&PostParams::default(), &simple_job("badimage"))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "badimage", |p| {
        container_state(p, "task")["waiting"]["reason"] == "InvalidImageName"
    })
    .await;
    assert_eq!(pod["status"]["phase"], "Pending");
    let name = pod["metadata"]["name"].as_str().unwrap();
    let (_, _, message) = wait_event(&client, name, "InspectFailed").await;
    assert!(message.contains("invalid reference format"), "{message}");
    // A malformed reference gets the same without any injection.
    let upper = job(
        "upper",
        json!({"containers": [{"name": "task", "image": "Busybox:1"}]}),
    );
    jobs(&client)
        .create(&PostParams::default(), &upper)
        .await
        .unwrap();
    wait_pod(&fake, "upper", |p| {
        container_state(p, "task")["waiting"]["reason"] == "InvalidImageName"
    })
    .await;
}

#[tokio::test]
async fn fault_init_container_fails_the_pod_with_its_exit_code() {
    let (fake, client) = scripted(50).await;
    fake.inject(Fault::InitContainer { exit_code: 3 });
    let spec = json!({
        "initContainers": [{"name": "copy-agent", "image": "hangar:1", "command": ["cp"]}],
        "containers": [{"name": "task", "image": "busybox"}],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("initfail", spec))
        .await
        .unwrap();
    let job = wait_job_condition(&fake, "initfail", "Failed").await;
    assert_eq!(condition(&job, "Failed")["reason"], "BackoffLimitExceeded");
    let pod = &job_pods(&fake, "initfail")[0];
    assert_eq!(pod["status"]["phase"], "Failed");
    let init = &container_state(pod, "copy-agent")["terminated"];
    assert_eq!(
        (init["exitCode"].as_i64(), init["reason"].as_str()),
        (Some(3), Some("Error"))
    );
    assert_eq!(
        container_state(pod, "task")["waiting"]["reason"],
        "PodInitializing"
    );
    let initialized = condition(pod, "Initialized");
    assert_eq!(initialized["status"], "False");
    assert_eq!(
        initialized["message"],
        "containers with incomplete status: [copy-agent]"
    );
}

#[tokio::test]
async fn fault_oom_terminates_the_task_container_oom_killed_137() {
    let (fake, client) = scripted(50).await;
    fake.inject(Fault::Oom);
    jobs(&client)
        .create(&PostParams::default(), &simple_job("oom"))
        .await
        .unwrap();
    let job = wait_job_condition(&fake, "oom", "Failed").await;
    assert_eq!(job["status"]["failed"], 1);
    let pod = &job_pods(&fake, "oom")[0];
    assert_eq!(pod["status"]["phase"], "Failed");
    let t = &container_state(pod, "task")["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(137), Some("OOMKilled"))
    );
}

#[tokio::test]
async fn fault_evicted_fails_the_pod_with_reason_evicted() {
    let (fake, client) = scripted(400).await;
    fake.inject(Fault::Evicted);
    jobs(&client)
        .create(&PostParams::default(), &simple_job("evict"))
        .await
        .unwrap();
    wait_job_condition(&fake, "evict", "Failed").await;
    let pod = &job_pods(&fake, "evict")[0];
    assert_eq!(pod["status"]["phase"], "Failed");
    assert_eq!(pod["status"]["reason"], "Evicted");
    assert!(
        pod["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("The node was low on resource: memory.")
    );
    let disruption = condition(pod, "DisruptionTarget");
    assert_eq!(disruption["reason"], "TerminationByKubelet");
    assert_eq!(container_state(pod, "task")["terminated"]["exitCode"], 137);
    let name = pod["metadata"]["name"].as_str().unwrap();
    let (kind, _, _) = wait_event(&client, name, "Evicted").await;
    assert_eq!(kind, "Warning");
}

#[tokio::test]
async fn fault_active_deadline_kills_the_pod_and_fails_the_job_deadline_exceeded() {
    let (fake, client) = scripted(50).await;
    fake.inject(Fault::ActiveDeadline);
    let mut deadline = simple_job("deadline");
    deadline.spec.as_mut().unwrap().active_deadline_seconds = Some(28_800);
    jobs(&client)
        .create(&PostParams::default(), &deadline)
        .await
        .unwrap();
    wait_pod(&fake, "deadline", |p| p["status"]["phase"] == "Running").await;
    let job = wait_job_condition(&fake, "deadline", "Failed").await;
    let failed = condition(&job, "Failed");
    assert_eq!(failed["reason"], "DeadlineExceeded");
    assert_eq!(
        failed["message"],
        "Job was active longer than specified deadline"
    );
    assert!(job_pods(&fake, "deadline").is_empty(), "the pod was killed");
    let (kind, _, _) = wait_event(&client, "deadline", "DeadlineExceeded").await;
    assert_eq!(kind, "Warning");
}

#[tokio::test]
async fn a_real_active_deadline_fails_the_job_too() {
    let (fake, client) = scripted(60_000).await;
    let mut deadline = simple_job("realdeadline");
    deadline.spec.as_mut().unwrap().active_deadline_seconds = Some(1);
    jobs(&client)
        .create(&PostParams::default(), &deadline)
        .await
        .unwrap();
    let job = wait_job_condition(&fake, "realdeadline", "Failed").await;
    assert_eq!(condition(&job, "Failed")["reason"], "DeadlineExceeded");
}

#[tokio::test]
async fn fault_volume_mount_keeps_the_pod_pending_with_failed_mount() {
    let (fake, client) = scripted(50).await;
    fake.inject(Fault::VolumeMount);
    let spec = json!({
        "containers": [{"name": "task", "image": "busybox", "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}],
        "volumes": [{"name": "workspace", "emptyDir": {"sizeLimit": "10Gi"}}],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("mount", spec))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "mount", |p| p["spec"]["nodeName"].is_string()).await;
    let name = pod["metadata"]["name"].as_str().unwrap();
    let (kind, _, message) = wait_event(&client, name, "FailedMount").await;
    assert_eq!(kind, "Warning");
    assert!(
        message.starts_with("MountVolume.SetUp failed for volume \"workspace\""),
        "{message}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = fake.object("Pod", NAMESPACE, name).unwrap();
    assert_eq!(later["status"]["phase"], "Pending");
    assert_eq!(
        container_state(&later, "task")["waiting"]["reason"],
        "ContainerCreating"
    );
}

#[tokio::test]
async fn fault_job_failed_exhausts_the_backoff_limit() {
    let (fake, client) = scripted(50).await;
    fake.inject(Fault::JobFailed);
    let mut retried = simple_job("fails");
    retried.spec.as_mut().unwrap().backoff_limit = Some(1);
    jobs(&client)
        .create(&PostParams::default(), &retried)
        .await
        .unwrap();
    let job = wait_job_condition(&fake, "fails", "Failed").await;
    let failed = condition(&job, "Failed");
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    assert!(has_condition(&job, "FailureTarget"));
    assert_eq!(job["status"]["failed"], 2, "one retry, then the limit");
    let pods = job_pods(&fake, "fails");
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        let t = &container_state(pod, "task")["terminated"];
        assert_eq!(
            (t["exitCode"].as_i64(), t["reason"].as_str()),
            (Some(1), Some("Error"))
        );
    }
    let (kind, _, _) = wait_event(&client, "fails", "BackoffLimitExceeded").await;
    assert_eq!(kind, "Warning");
}

#[tokio::test]
async fn faults_can_target_jobs_by_label_selector() {
    let (fake, client) = scripted(50).await;
    fake.inject_matching("run=doomed", Fault::Oom);
    jobs(&client)
        .create(&PostParams::default(), &simple_job("fine"))
        .await
        .unwrap();
    jobs(&client)
        .create(&PostParams::default(), &simple_job("doomed"))
        .await
        .unwrap();
    wait_job_condition(&fake, "fine", "Complete").await;
    wait_job_condition(&fake, "doomed", "Failed").await;
}

// ---- Docker kubelet ----

fn docker_image() -> String {
    hangar_testkit::images::base_image().unwrap()
}

async fn docker_fake() -> (FakeKube, kube::Client, String) {
    let image = tokio::task::spawn_blocking(docker_image).await.unwrap();
    let fake = FakeKube::start(Kubelet::Docker).await;
    let client = fake.client().await;
    (fake, client, image)
}

#[tokio::test]
async fn docker_init_container_copies_into_an_empty_dir_that_the_task_reads() {
    let (fake, client, image) = docker_fake().await;
    let spec = json!({
        "initContainers": [{
            "name": "copy-agent", "image": image,
            "command": ["sh", "-c", "echo copied-by-init > /agent/file"],
            "volumeMounts": [{"name": "agent", "mountPath": "/agent"}],
        }],
        "containers": [{
            "name": "task", "image": image,
            "command": ["cat"], "args": ["/agent/file"],
            "workingDir": "/agent",
            "volumeMounts": [{"name": "agent", "mountPath": "/agent", "readOnly": true}],
            "resources": {"limits": {"memory": "128Mi"}},
        }],
        "volumes": [{"name": "agent", "emptyDir": {}}],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("docker-copy", spec))
        .await
        .unwrap();
    let job = wait_job_condition(&fake, "docker-copy", "Complete").await;
    assert_eq!(job["status"]["succeeded"], 1);
    let pod = &job_pods(&fake, "docker-copy")[0];
    let name = pod["metadata"]["name"].as_str().unwrap();
    let log = pods(&client)
        .logs(
            name,
            &LogParams {
                container: Some("task".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(log, "copied-by-init\n");
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap();
    assert!(id.starts_with("docker://"), "{id}");
}

#[tokio::test]
async fn docker_env_and_env_from_resolve_secrets() {
    let (fake, client, image) = docker_fake().await;
    let env: Secret = serde_json::from_value(json!({
        "metadata": {"name": "run-env"},
        "stringData": {"HANGAR_TOKEN": "tok-123", "OTHER": "x"},
    }))
    .unwrap();
    secrets(&client)
        .create(&PostParams::default(), &env)
        .await
        .unwrap();
    let spec = json!({"containers": [{
        "name": "task", "image": image,
        "command": ["sh", "-c", "echo $HANGAR_TOKEN $PLAIN $PICKED $(PLAIN)-x"],
        "envFrom": [{"secretRef": {"name": "run-env"}}],
        "env": [
            {"name": "PLAIN", "value": "plain"},
            {"name": "PICKED", "valueFrom": {"secretKeyRef": {"name": "run-env", "key": "OTHER"}}},
        ],
    }]});
    jobs(&client)
        .create(&PostParams::default(), &job("docker-env", spec))
        .await
        .unwrap();
    wait_job_condition(&fake, "docker-env", "Complete").await;
    let name = job_pods(&fake, "docker-env")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = pods(&client)
        .logs(&name, &LogParams::default())
        .await
        .unwrap();
    assert_eq!(log, "tok-123 plain x plain-x\n");
}

#[tokio::test]
async fn docker_failures_exit_codes_and_missing_images_show_in_the_status() {
    let (fake, client, image) = docker_fake().await;
    let failing = json!({"containers": [{"name": "task", "image": image, "command": ["sh", "-c", "echo bye >&2; exit 7"]}]});
    jobs(&client)
        .create(&PostParams::default(), &job("docker-exit", failing))
        .await
        .unwrap();
    let missing = json!({"containers": [{"name": "task", "image": "hangar-test/not-built:1"}]});
    jobs(&client)
        .create(&PostParams::default(), &job("docker-missing", missing))
        .await
        .unwrap();
    wait_job_condition(&fake, "docker-exit", "Failed").await;
    let pod = &job_pods(&fake, "docker-exit")[0];
    let t = &container_state(pod, "task")["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(7), Some("Error"))
    );
    assert_eq!(
        fake.logs(NAMESPACE, pod["metadata"]["name"].as_str().unwrap(), "task"),
        "bye\n"
    );
    let pod = wait_pod(&fake, "docker-missing", |p| {
        container_state(p, "task")["waiting"]["reason"] == "ErrImagePull"
    })
    .await;
    assert_eq!(pod["status"]["phase"], "Pending");
}

#[tokio::test]
async fn docker_pods_get_sigterm_then_sigkill_after_the_grace_period() {
    let (fake, client, image) = docker_fake().await;
    let spec = json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {"name": "task", "image": image, "command": ["sh", "-c", "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done"]},
            {"name": "stubborn", "image": image, "command": ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]},
        ],
    });
    jobs(&client)
        .create(&PostParams::default(), &job("docker-grace", spec))
        .await
        .unwrap();
    let pod = wait_pod(&fake, "docker-grace", |p| p["status"]["phase"] == "Running").await;
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let rv = pod["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut stream = pods(&client)
        .watch(
            &WatchParams::default().fields(&format!("metadata.name={name}")),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    pods(&client)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let mut last = None;
    loop {
        match next_event(&mut stream).await.unwrap() {
            WatchEvent::Modified(p) => last = Some(serde_json::to_value(p).unwrap()),
            WatchEvent::Deleted(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let last = last.unwrap();
    assert_eq!(
        container_state(&last, "task")["terminated"]["exitCode"],
        0,
        "it handled SIGTERM"
    );
    assert_eq!(
        container_state(&last, "stubborn")["terminated"]["exitCode"],
        137,
        "SIGKILL after the grace"
    );
}

#[tokio::test]
async fn dropping_the_fake_removes_its_docker_containers() {
    let (fake, client, image) = docker_fake().await;
    let spec =
        json!({"containers": [{"name": "task", "image": image, "command": ["sleep", "600"]}]});
    jobs(&client)
        .create(&PostParams::default(), &job("docker-drop", spec))
        .await
        .unwrap();
    wait_pod(&fake, "docker-drop", |p| p["status"]["phase"] == "Running").await;
    let filter = format!("label=dev.hangar.fakekube={}", fake.server_id());
    let listed = |filter: &str| {
        let out = std::process::Command::new("docker")
            .args(["ps", "--all", "--quiet", "--filter", filter])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .count()
    };
    assert_eq!(listed(&filter), 1);
    let names = std::process::Command::new("docker")
        .args(["ps", "--all", "--format", "{{.Names}}", "--filter", &filter])
        .output()
        .unwrap();
    let name = String::from_utf8_lossy(&names.stdout).trim().to_owned();
    assert!(
        name.starts_with(&format!(
            "hangar-fakekube-{}-docker-drop-",
            fake.server_id()
        )),
        "{name}"
    );
    assert!(name.ends_with("-task"), "{name}");
    drop(fake);
    assert_eq!(listed(&filter), 0);
}
