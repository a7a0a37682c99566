//! Deletion: collections, propagation policies, garbage collection, pod
//! termination and TTL after finished.

use crate::common::*;

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
