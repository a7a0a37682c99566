//! Injected faults: each shows in pod and job status as Kubernetes shows it.

use crate::common::*;

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
