//! The Kubernetes backend against the fake API server of `hangar-testkit`
//! (no cluster can run here), with the real `kube` client inside a real
//! `hangar worker --backend kubernetes`, a real server and, in
//! `kubernetes_docker_`, the real agent in pods the fake kubelet runs
//! with Docker.

use crate::suite::common::{cluster_with, ended, hangar_bin, run_on};
use hangar_protocol::RunState;
use hangar_testkit::cluster::TestCluster;
use hangar_testkit::fake_kube::{FakeKube, Fault, Kubelet, NAMESPACE};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use hangar_testkit::poll::until;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

const FINISH: Duration = Duration::from_secs(60);
const AGENT_IMAGE: &str = "hangar-test/agent:k8s";

/// A worker config for `fake`, with `extra` YAML under `backend.kubernetes`.
fn config(
    cluster: &TestCluster,
    fake: &FakeKube,
    id: &str,
    agent_image: &str,
    extra: &str,
) -> PathBuf {
    let kubeconfig = fake.kubeconfig(cluster.dir());
    let yaml = format!(
        "backend:\n  kubernetes:\n    kubeconfig: {}\n    namespace: {NAMESPACE}\n    \
         agent_image: {agent_image}\n    unschedulable_timeout: 2s\n{extra}",
        kubeconfig.display()
    );
    let path = cluster.dir().join(format!("k8s-{id}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn start(cluster: &mut TestCluster, id: &str, config: &std::path::Path) {
    cluster
        .start_worker_with(
            id,
            "kubernetes",
            &["--config-file", config.to_str().unwrap()],
        )
        .await
        .unwrap();
}

/// The fake's objects of `kind` labelled with run `run_id`.
fn of_run(fake: &FakeKube, kind: &str, run_id: &str) -> Vec<Value> {
    fake.objects(kind)
        .into_iter()
        .filter(|o| o["metadata"]["labels"]["hangar.dev/run"] == run_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_every_failure_reason_reaches_the_run_with_its_diagnostic() {
    let llm = FakeLlm::start(vec![]).await;
    let mut cluster = cluster_with(&llm).await;
    let fake = FakeKube::start(Kubelet::scripted()).await;
    let cfg = config(&cluster, &fake, "k8s-faults", "hangar:agent", "");
    start(&mut cluster, "k8s-faults", &cfg).await;
    let cases = [
        (
            Fault::Unschedulable,
            "unschedulable",
            "could not be scheduled",
        ),
        (Fault::ImagePull, "image_pull", "cannot pull image"),
        (
            Fault::InvalidImage,
            "invalid_image",
            "not a valid reference",
        ),
        (
            Fault::InitContainer { exit_code: 3 },
            "init_container",
            "hangar-agent",
        ),
        (Fault::Oom, "container_oom", "out of memory"),
        (Fault::Evicted, "evicted", "evicted"),
        (
            Fault::ActiveDeadline,
            "active_deadline",
            "active_deadline_seconds",
        ),
        (Fault::VolumeMount, "volume_mount", "cannot be mounted"),
        (Fault::JobFailed, "container_exit", "exited with 1"),
    ];
    for (fault, reason, hint) in cases {
        fake.inject(fault.clone());
        let run_id = run_on(&cluster, "k8s-faults", reason).await;
        let run = ended(&cluster, &run_id).await;
        assert_eq!(run["failure_reason"], reason, "{fault:?}: {run}");
        let message = run["status_message"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains(hint),
            "{fault:?}: `{hint}` not in {message}"
        );
        // A failed Job stays for inspection (its TTL); its Secret never
        // does; a Job stuck before it ran is deleted, or it would sit
        // Pending forever.
        until("the Secret to go", FINISH, || {
            of_run(&fake, "secrets", &run_id).is_empty()
        })
        .await;
        let stuck = [
            "unschedulable",
            "image_pull",
            "invalid_image",
            "volume_mount",
        ]
        .contains(&reason);
        if stuck {
            until("the stuck Job to go", FINISH, || {
                of_run(&fake, "jobs", &run_id).is_empty()
            })
            .await;
        } else {
            let kept = of_run(&fake, "jobs", &run_id).len();
            assert_eq!(kept, 1, "{reason}: the failed Job was not kept");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_cancel_deletes_the_job_and_its_secret() {
    let llm = FakeLlm::start(vec![]).await;
    let mut cluster = cluster_with(&llm).await;
    let fake = FakeKube::start(Kubelet::Scripted {
        run_for: Duration::from_secs(120),
    })
    .await;
    // (Scripted: only the `task` container runs that long.)
    let cfg = config(&cluster, &fake, "k8s-cancel", "hangar:agent", "");
    start(&mut cluster, "k8s-cancel", &cfg).await;
    let run_id = run_on(&cluster, "k8s-cancel", "long").await;
    cluster
        .wait_run(&run_id, FINISH, |r| r.state == RunState::InProgress)
        .await
        .unwrap();
    assert_eq!(of_run(&fake, "jobs", &run_id).len(), 1);
    assert_eq!(of_run(&fake, "secrets", &run_id).len(), 1);
    cluster.client().cancel_run(&run_id).await.unwrap();
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Cancelled);
    until("Job, pod and Secret to be deleted", FINISH, || {
        of_run(&fake, "jobs", &run_id).is_empty()
            && of_run(&fake, "pods", &run_id).is_empty()
            && of_run(&fake, "secrets", &run_id).is_empty()
    })
    .await;
    // Foreground propagation: the pod went before the Job.
    let deletes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.contains("/jobs/"))
        .collect();
    assert!(
        deletes.iter().any(|r| r
            .body
            .as_ref()
            .is_some_and(|b| b["propagationPolicy"] == "Foreground")),
        "{deletes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_a_restarted_worker_adopts_its_live_job_and_drain_keeps_it_running() {
    let llm = FakeLlm::start(vec![]).await;
    let mut cluster = cluster_with(&llm).await;
    let fake = FakeKube::start(Kubelet::Scripted {
        run_for: Duration::from_secs(8),
    })
    .await;
    let cfg = config(&cluster, &fake, "k8s-adopt", "hangar:agent", "");
    start(&mut cluster, "k8s-adopt", &cfg).await;
    let run_id = run_on(&cluster, "k8s-adopt", "outlives its worker").await;
    cluster
        .wait_run(&run_id, FINISH, |r| r.state == RunState::InProgress)
        .await
        .unwrap();
    // kill -9: the Job runs on in the cluster.
    cluster
        .worker("k8s-adopt")
        .unwrap()
        .signal(nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(of_run(&fake, "jobs", &run_id).len(), 1);
    start(&mut cluster, "k8s-adopt", &cfg).await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    // Adopted, not started again: one Job was ever created for the run.
    let creates = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/jobs"))
        .filter(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b["metadata"]["labels"]["hangar.dev/run"] == run_id.as_str())
        })
        .count();
    assert_eq!(creates, 1);
    until("the succeeded Job to be deleted", FINISH, || {
        of_run(&fake, "jobs", &run_id).is_empty()
    })
    .await;

    // Drain (SIGTERM): no new work, the running Job finishes.
    let second = run_on(&cluster, "k8s-adopt", "finishes during the drain").await;
    cluster
        .wait_run(&second, FINISH, |r| r.state == RunState::InProgress)
        .await
        .unwrap();
    cluster
        .worker("k8s-adopt")
        .unwrap()
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let done = cluster.wait_finished(&second, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_preflight_refuses_with_a_message_naming_the_permission_or_policy() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let fake = FakeKube::start(Kubelet::scripted()).await;
    let cfg = config(&cluster, &fake, "k8s-pre", "hangar:agent", "");
    let log = cluster.dir().join("preflight.log");
    let worker = |cfg: PathBuf, case: &'static str| {
        let url = cluster.url.clone();
        let log = log.clone();
        async move {
            let mut child = tokio::process::Command::new(hangar_bin())
                .args(["worker", "--worker-id", "k8s-pre", "--server-url", &url])
                .args(["--backend", "kubernetes", "--config-file"])
                .arg(cfg)
                .env("HANGAR_API_KEY", "hw_not_needed_before_the_backend_starts")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let status = tokio::time::timeout(FINISH, child.wait()).await;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let status =
                status.unwrap_or_else(|_| panic!("{case}: the worker hung; it said: {text}"));
            (status.unwrap(), text)
        }
    };
    fake.deny("create", "jobs");
    let (status, err) = worker(cfg.clone(), "rbac").await;
    assert!(!status.success());
    assert!(err.contains("`create` on `jobs.batch`"), "{err}");

    fake.allow_all();
    fake.reject_jobs("admission webhook \"policy.example.com\" denied the request: hostPath volumes are not allowed");
    let (status, err) = worker(cfg.clone(), "admission").await;
    assert!(!status.success());
    assert!(err.contains("policy.example.com"), "{err}");

    fake.admit_all();
    fake.inject(Fault::ImagePull);
    let (status, err) = worker(cfg, "image").await;
    assert!(!status.success());
    assert!(err.contains("cannot pull image `hangar:agent`"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_docker_a_run_end_to_end_through_the_fake_cluster_with_teardown() {
    let base = tokio::task::spawn_blocking(hangar_testkit::images::base_image)
        .await
        .unwrap()
        .unwrap();
    // The real `hangar` image (deploy/docker/Dockerfile, without git: no
    // package mirror in a build), as the chart runs it: the init container
    // copies its /agent/hangar into the pod.
    let agent = {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let out = std::process::Command::new(root.join("scripts/image"))
                .arg("--binary")
                .arg(hangar_bin())
                .args(["--tag", AGENT_IMAGE, "--base", &base, "--no-git"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .await
        .unwrap()
    };
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo pod-says-$(cat /etc/debian_version | cut -c1-2); pwd"}),
        ),
        Turn::text("done in the pod"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let fake = FakeKube::start(Kubelet::Docker).await;
    let extra = format!(
        "    default_image: {base}\n    image_pull_policy: Never\n    \
         setup_command: echo setup-in-the-pod\n    teardown_command: echo teardown-ran\n"
    );
    let cfg = config(&cluster, &fake, "k8s-docker", &agent, &extra);
    cluster
        .start_worker_with(
            "k8s-docker",
            "kubernetes",
            &["--config-file", cfg.to_str().unwrap(), "--no-cleanup"],
        )
        .await
        .unwrap();
    let run_id = run_on(&cluster, "k8s-docker", "run in a pod").await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    let out = llm.requests()[1].to_string();
    assert!(out.contains("pod-says-12"), "{out}");
    assert!(out.contains("/workspace"), "{out}");
    // The Job holds no secret; the Secret does; setup and teardown ran in
    // the task container (its log), teardown on a normal exit.
    let job = of_run(&fake, "jobs", &run_id).remove(0);
    assert!(
        !job.to_string().contains("hr_"),
        "the run token is in the Job"
    );
    let pod = of_run(&fake, "pods", &run_id).remove(0);
    let pod_name = pod["metadata"]["name"].as_str().unwrap();
    let log = fake.logs(NAMESPACE, pod_name, "task");
    assert!(log.contains("setup-in-the-pod"), "{log}");
    assert!(log.contains("teardown-ran"), "{log}");
}
