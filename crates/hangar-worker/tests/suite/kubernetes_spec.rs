//! The Kubernetes backend's Job and Secret (snapshot) and its reading of
//! Job/Pod/Event objects into the failure taxonomy, without a cluster.

use hangar_protocol::Timestamp;
use hangar_protocol::worker::{
    FailureReason, InstanceShape, Task, TaskAssignment, TaskDefinition, TaskOwner,
};
use hangar_worker::backends::TaskSpec;
use hangar_worker::backends::kubernetes::KubernetesConfig;
use hangar_worker::backends::kubernetes::spec::{self, build_job, build_secret};
use hangar_worker::backends::kubernetes::status::{Clock, Phase, classify};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const SNAPSHOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/snapshots/kubernetes-job.json"
);
const RUN: &str = "01a24ecc-6ce6-71d5-9b62-ac18b0c9080d";
const EXEC: &str = "01a24ecc-6ceb-7066-bd3a-1aeb41f89ded";
const TOKEN: &str = "hr_0123456789abcdef0123456789abcdef";
const SECRET: &str = "s3cret-value-that-must-not-leak";

fn config() -> KubernetesConfig {
    let template = json!({
        "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "initContainers": [{"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"}],
        "containers": [
            {"name": "task", "resources": {"requests": {"cpu": "1", "ephemeral-storage": "1Gi"}}},
            {"name": "log-shipper", "image": "vector:0.40"}
        ]
    });
    KubernetesConfig {
        worker_id: "k8s box/1".into(),
        namespace: "agents".into(),
        kubeconfig: None,
        server_url: "http://hangar.hangar.svc:7420".into(),
        default_image: Some("ubuntu:24.04".into()),
        image_pull_policy: Some("IfNotPresent".into()),
        agent_image: "registry.example.com/hangar:0.1.0".into(),
        preflight_image: "registry.example.com/hangar:0.1.0".into(),
        preflight_resources: None,
        setup_command: Some("apt-get install -y jq".into()),
        teardown_command: Some("echo bye".into()),
        extra_labels: BTreeMap::from([("team".into(), "platform".into())]),
        extra_annotations: BTreeMap::from([("owner".into(), "infra".into())]),
        active_deadline_seconds: 28_800,
        ttl_seconds_after_finished: 86_400,
        workspace_size_limit: Some("10Gi".into()),
        unschedulable_timeout: Duration::from_secs(30),
        pod_template: Some(serde_json::from_value(template).unwrap()),
        env: vec![],
        cleanup: true,
        idle_on_complete: None,
        poll_interval: Duration::from_secs(2),
    }
}

fn task_spec() -> TaskSpec {
    let mut env_vars = BTreeMap::new();
    env_vars.insert(hangar_protocol::ENV_RUN_TOKEN.to_owned(), TOKEN.to_owned());
    env_vars.insert("API_TOKEN".to_owned(), SECRET.to_owned());
    env_vars.insert(
        hangar_protocol::ENV_SECRET_NAMES.to_owned(),
        "API_TOKEN".to_owned(),
    );
    let created = Timestamp::from_unix_millis(1_765_000_000_000);
    TaskSpec {
        task_id: RUN.into(),
        execution_id: EXEC.into(),
        assignment: TaskAssignment {
            task_id: RUN.into(),
            execution_id: EXEC.into(),
            task: Task {
                id: RUN.into(),
                title: "t".into(),
                task_definition: TaskDefinition { prompt: "p".into() },
                created_at: created,
                updated_at: created,
                owner: TaskOwner {
                    kind: "TEAM".into(),
                    id: 1,
                },
                agent_config_snapshot: None,
                agent_conversation_id: None,
            },
            docker_image: Some("python:3.12".into()),
            sidecar_image: None,
            env_vars,
            additional_sidecars: vec![],
            additional_oz_args: vec![],
            instance_shape: Some(InstanceShape {
                vcpus: Some(2.0),
                memory_gb: Some(4.0),
            }),
            environment: None,
        },
        allow_local_repositories: false,
    }
}

fn job() -> Job {
    let args = vec!["agent".into(), "run".into(), "--task-id".into(), RUN.into()];
    build_job(&config(), &task_spec(), args).unwrap()
}

#[test]
fn kubernetes_job_spec_matches_the_snapshot() {
    let text = serde_json::to_string_pretty(&job()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(SNAPSHOT).parent().unwrap()).unwrap();
        std::fs::write(SNAPSHOT, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == text,
        "the Job differs from {SNAPSHOT}; if intended, regenerate it with \
         `UPDATE_SNAPSHOTS=1 cargo nextest run -p hangar-worker -E 'test(/kubernetes_job_spec/)'`"
    );
}

#[test]
fn kubernetes_job_holds_no_secret_value_and_the_secret_is_owned_by_the_job() {
    let job = job();
    let text = serde_json::to_string(&job).unwrap();
    assert!(!text.contains(TOKEN), "the run token is in the Job");
    assert!(!text.contains(SECRET), "a secret is in the Job");
    let v: Value = serde_json::to_value(&job).unwrap();
    let name = v["metadata"]["name"].as_str().unwrap();
    assert!(name.contains(RUN), "{name}");
    assert!(name.len() <= 63, "{name}");
    let labels = &v["metadata"]["labels"];
    assert_eq!(labels[spec::LABEL_RUN], RUN);
    assert_eq!(labels[spec::LABEL_EXECUTION], EXEC);
    // The worker id has a space and a slash: the label is a safe form, the
    // annotation the exact id.
    let worker = labels[spec::LABEL_WORKER].as_str().unwrap();
    assert!(worker.starts_with("k8s-box-1-"), "{worker}");
    assert_eq!(
        v["metadata"]["annotations"][spec::ANNOTATION_WORKER_ID],
        "k8s box/1"
    );
    let pod = &v["spec"]["template"]["spec"];
    // Init: the agent copy first, then the template's native sidecar, kept.
    let init: Vec<&str> = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(init, [spec::AGENT_INIT_CONTAINER, "proxy"]);
    assert_eq!(pod["initContainers"][1]["restartPolicy"], "Always");
    // The task container: the environment's image, the Secret by reference,
    // the workspace and the agent mounted, resources from the shape over the
    // template's (which keeps its other resource names).
    let task = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "task")
        .unwrap();
    assert_eq!(task["image"], "python:3.12");
    assert_eq!(
        task["envFrom"][0]["secretRef"]["name"],
        format!("{name}-env")
    );
    assert!(
        task.get("env").is_none(),
        "plain env values in the Job: {task}"
    );
    let mounts: Vec<&str> = task["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["/workspace", "/agent"]);
    assert_eq!(task["resources"]["requests"]["cpu"], "2");
    assert_eq!(task["resources"]["limits"]["memory"], "4096Mi");
    assert_eq!(task["resources"]["requests"]["ephemeral-storage"], "1Gi");
    assert_eq!(task["securityContext"]["allowPrivilegeEscalation"], false);
    // Teardown on deletion too.
    assert!(
        task["lifecycle"]["preStop"]["exec"]["command"][2]
            .as_str()
            .unwrap()
            .contains("echo bye")
    );
    // The sidecar container of the template is kept as it was.
    assert!(
        pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "log-shipper" && c["image"] == "vector:0.40")
    );
    assert_eq!(pod["nodeSelector"]["gpu"], "a100");
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(v["spec"]["backoffLimit"], 0);
    assert_eq!(v["spec"]["activeDeadlineSeconds"], 28_800);

    // The Secret: every variable, owned by the Job (garbage-collected with it).
    let mut created = job.clone();
    created.metadata.uid = Some("uid-1".into());
    let env = task_spec().assignment.env_vars;
    let secret: Value = serde_json::to_value(build_secret(&created, &env)).unwrap();
    assert_eq!(secret["metadata"]["name"], format!("{name}-env"));
    assert_eq!(secret["stringData"]["API_TOKEN"], SECRET);
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Job");
    assert_eq!(owner["uid"], "uid-1");
    assert!(owner.get("blockOwnerDeletion").is_none());
}

const NOW: i64 = 1_765_000_100;

fn clock() -> Clock {
    Clock {
        now: NOW,
        unschedulable_timeout: Duration::from_secs(30),
    }
}

fn time(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap()
        .to_string()
}

fn job_with(conditions: Value) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": "hangar-run-exec"},
        "spec": {"activeDeadlineSeconds": 600, "template": {}},
        "status": {"conditions": conditions}
    }))
    .unwrap()
}

fn pod_with(status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "hangar-run-exec-abcde", "creationTimestamp": time(NOW - 60)},
        "spec": {
            "initContainers": [
                {"name": "hangar-agent", "image": "hangar:1"},
                {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"}
            ],
            "containers": [{"name": "task", "image": "python:3.12",
                "resources": {"limits": {"memory": "4Gi"}}}]
        },
        "status": status
    }))
    .unwrap()
}

fn failure(phase: Phase) -> (FailureReason, String, Option<i32>) {
    match phase {
        Phase::Failed(e) => (e.reason, e.message, e.exit_code),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn terminated(name: &str, code: i32, reason: &str) -> Value {
    json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": reason}}})
}

fn waiting(name: &str, reason: &str, message: &str) -> Value {
    json!({"name": name, "image": "python:3.12", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": message}}})
}

#[test]
fn kubernetes_failure_taxonomy_each_reason_with_its_diagnostic() {
    let none: &[Event] = &[];
    let running = job_with(json!([]));
    let cases: Vec<(&str, Pod, Vec<Event>, FailureReason, &str)> = vec![
        (
            "evicted",
            pod_with(json!({"phase": "Failed", "reason": "Evicted",
                "message": "Pod ephemeral local storage usage exceeds the total limit of containers 10Gi."})),
            vec![],
            FailureReason::Evicted,
            "workspace_size_limit",
        ),
        (
            "init_container",
            pod_with(json!({"phase": "Failed",
                "initContainerStatuses": [terminated("hangar-agent", 1, "Error")]})),
            vec![],
            FailureReason::InitContainer,
            "agent_image",
        ),
        (
            "image_pull",
            pod_with(json!({"phase": "Pending", "initContainerStatuses": [terminated("hangar-agent", 0, "Completed")],
                "containerStatuses": [waiting("task", "ImagePullBackOff", "Back-off pulling image \"python:3.12\"")]})),
            vec![],
            FailureReason::ImagePull,
            "imagePullSecrets",
        ),
        (
            "invalid_image",
            pod_with(json!({"phase": "Pending",
                "containerStatuses": [waiting("task", "InvalidImageName", "couldn't parse image name")]})),
            vec![],
            FailureReason::InvalidImage,
            "not a valid reference",
        ),
        (
            "container_oom",
            pod_with(json!({"phase": "Failed",
                "containerStatuses": [terminated("task", 137, "OOMKilled")]})),
            vec![],
            FailureReason::ContainerOom,
            "memory limit 4Gi",
        ),
        (
            "unschedulable",
            pod_with(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory.",
                "lastTransitionTime": time(NOW - 45)}]})),
            vec![],
            FailureReason::Unschedulable,
            "3 Insufficient memory",
        ),
        (
            "volume_mount",
            pod_with(json!({"phase": "Pending"})),
            vec![serde_json::from_value(json!({"metadata": {"name": "e1"},
                "involvedObject": {"name": "hangar-run-exec-abcde"}, "reason": "FailedMount",
                "message": "MountVolume.SetUp failed for volume \"cache\" : persistentvolumeclaim \"cache\" not found"}))
            .unwrap()],
            FailureReason::VolumeMount,
            "persistentvolumeclaim \"cache\" not found",
        ),
    ];
    for (label, pod, events, reason, hint) in cases {
        let (got, message, _) = failure(classify(&running, Some(&pod), &events, clock()));
        assert_eq!(got, reason, "{label}: {message}");
        assert!(
            message.contains(hint),
            "{label}: `{hint}` not in: {message}"
        );
    }
    // Not yet unschedulable for long enough: still pending.
    let young = pod_with(
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": "0/3 nodes", "lastTransitionTime": time(NOW - 5)}]}),
    );
    assert!(matches!(
        classify(&running, Some(&young), none, clock()),
        Phase::Pending
    ));
    // The Job's own conditions.
    let deadline = job_with(
        json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
        "message": "Job was active longer than specified deadline"}]),
    );
    let (got, message, _) = failure(classify(&deadline, None, none, clock()));
    assert_eq!(got, FailureReason::ActiveDeadline);
    assert!(message.contains("600 s"), "{message}");
    let failed = job_with(
        json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit"}]),
    );
    let (got, _, _) = failure(classify(&failed, None, none, clock()));
    assert_eq!(got, FailureReason::JobFailed);
    // The agent's own exit is not a platform failure; a signal is 128+n.
    let exited = pod_with(json!({"phase": "Failed", "containerStatuses": [
        {"name": "task", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
         "state": {"terminated": {"exitCode": 0, "signal": 9, "reason": "Error"}}}]}));
    assert!(matches!(
        classify(&running, Some(&exited), none, clock()),
        Phase::Exited { code: 137, .. }
    ));
    // A native sidecar's exit never fails the task.
    let sidecar = pod_with(json!({"phase": "Running",
        "initContainerStatuses": [terminated("hangar-agent", 0, "Completed"), terminated("proxy", 1, "Error")],
        "containerStatuses": [{"name": "task", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}}]}));
    assert!(matches!(
        classify(&running, Some(&sidecar), none, clock()),
        Phase::Running
    ));
    // setup_command: the task script's termination message.
    let setup = pod_with(json!({"phase": "Failed", "containerStatuses": [
        {"name": "task", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
         "state": {"terminated": {"exitCode": 3, "reason": "Error",
            "message": "hangar: setup_command failed (exit code 3)\n"}}}]}));
    let (got, _, code) = failure(classify(&running, Some(&setup), none, clock()));
    assert_eq!((got, code), (FailureReason::SetupCommand, Some(3)));
    let done = job_with(json!([{"type": "Complete", "status": "True"}]));
    assert!(matches!(
        classify(&done, None, none, clock()),
        Phase::Succeeded
    ));
}
