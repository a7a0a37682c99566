//! How the conformance suite drives each backend: its configuration, and
//! where an execution's traces are (processes, cgroups, containers,
//! directories).

use super::Harness;
use crate::suite::common::*;
use crate::suite::docker::{base_image, container_name, docker, inspect};
use hangar_testkit::poll::until;
use hangar_worker::WorkerConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The direct backend: host processes in a bubblewrap sandbox, in a
/// workspace under the workspace root.
pub struct DirectHarness {
    /// What [`Harness::assert_running`] saw of each execution: the process
    /// group of its agent and its processes.
    seen: Mutex<BTreeMap<String, (i32, Vec<i32>)>>,
}

impl DirectHarness {
    pub fn new() -> Self {
        DirectHarness {
            seen: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The `pids.current` of execution `exec`'s cgroup: v2 when its controller
/// is delegated, else the v1 `pids` hierarchy (hybrid hosts).
fn execution_pids(exec: &str) -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut candidates = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            candidates.push(format!(
                "/sys/fs/cgroup/pids/{path}/hangar-{exec}/pids.current"
            ));
        } else if controllers.is_empty() {
            for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                candidates.push(format!("{base}/{path}/hangar-{exec}/pids.current"));
            }
        }
    }
    candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().parse().unwrap())
}

/// How long SIGKILLed processes may take to be gone (as `wait_for_group_gone`).
const KILLED_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// A kept sandbox directory is the worker's alone (0700).
fn assert_private_dir(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{} is not private", dir.display());
}

/// The process group of `pid`, if it still exists.
fn group_if_alive(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(2)?.parse().ok()
}

impl Harness for DirectHarness {
    const NAME: &'static str = "direct";
    const SETUP_OUTPUT_IN_MESSAGE: bool = false;
    const CONFIGURED_ENV_IN_TASK: bool = true;
    const WORKER_PREPARES: bool = true;
    const KNOWS_EXIT_CODE: bool = true;

    fn configure(&self, _c: &mut WorkerConfig, _test: &str) {
        // `test_config` is the direct backend already.
    }

    fn limit(&self, c: &mut WorkerConfig, pids: u64, memory_mb: u64) {
        c.direct.pids_limit = Some(pids);
        c.direct.memory_mb = Some(memory_mb);
    }

    fn cwd(&self, w: &TestWorker, exec: &str) -> String {
        w.workspace_root.join(exec).to_string_lossy().into_owned()
    }

    fn workspace_file(&self, w: &TestWorker, exec: &str, name: &str) -> PathBuf {
        w.workspace_root.join(exec).join(name)
    }

    fn assert_running(&self, w: &TestWorker, exec: &str) {
        let processes = processes_of(&w.out, exec);
        let agent = processes
            .iter()
            .find(|(_, cmd)| cmd.contains(" agent run"))
            .map(|(pid, _)| *pid)
            .unwrap_or_else(|| panic!("no agent of {exec} runs: {processes:?}"));
        let pgid = group_of(agent);
        let pids: Vec<i32> = processes.into_iter().map(|(pid, _)| pid).collect();
        // Everything the agent started runs in its group (a stray that
        // ignores SIGTERM included), so signalling the group reaches it.
        for pid in &pids {
            if let Some(group) = group_if_alive(*pid) {
                assert_eq!(group, pgid, "process {pid} of {exec} left the task's group");
            }
        }
        assert!(!live_group_members(pgid).is_empty());
        self.seen
            .lock()
            .unwrap()
            .insert(exec.to_owned(), (pgid, pids));
    }

    async fn assert_nothing_left(&self, w: &TestWorker, exec: &str) {
        // Both the processes of its group and any daemon that left it.
        // SIGKILLed processes take a moment to die on a loaded machine.
        let seen = self.seen.lock().unwrap().get(exec).cloned();
        until(
            &format!("every process of {exec} to die"),
            KILLED_WITHIN,
            || {
                processes_of(&w.out, exec).is_empty()
                    && seen.as_ref().is_none_or(|(pgid, pids)| {
                        pids.iter().all(|pid| !alive(*pid)) && live_group_members(*pgid).is_empty()
                    })
            },
        )
        .await;
        assert_eq!(
            execution_pids(exec),
            None,
            "the cgroup of {exec} is removed"
        );
        assert!(
            !self.sandbox_dir(w, exec).exists(),
            "the workspace of {exec} is not removed"
        );
    }

    fn assert_kept(&self, w: &TestWorker, exec: &str) {
        assert!(
            self.sandbox_dir(w, exec).is_dir(),
            "the workspace of {exec} is not kept"
        );
        assert_private_dir(&self.sandbox_dir(w, exec));
    }

    fn assert_private(&self, w: &TestWorker, exec: &str) {
        assert_eq!(w.read_out(exec, "mode").trim(), "700");
    }

    fn sandbox_identity(&self, w: &TestWorker, exec: &str) -> String {
        w.read_out(exec, "pwd")
    }

    fn assert_reused(&self, w: &TestWorker, _kept: &str, new: &str) {
        assert!(
            !self.sandbox_dir(w, new).exists(),
            "the follow-up made a workspace of its own"
        );
    }

    fn pids_current(&self, _w: &TestWorker, exec: &str) -> Option<u64> {
        execution_pids(exec)
    }

    fn assert_oom_message(&self, message: &str) {
        assert!(message.contains("64 MiB"), "{message}");
    }

    async fn wait_ended(&self, _w: &TestWorker, _exec: &str) {
        unreachable!("the direct backend does not reattach")
    }
}

/// The docker backend against the real engine, with images built locally
/// (`hangar_testkit::images`; nothing is pulled). Each test uses its own
/// worker id, so reconcile never touches another test's containers; the
/// harness removes what a failed test left when dropped (after the
/// assertions: it never hides a leak).
pub struct DockerHarness {
    image: String,
    workers: Mutex<Vec<String>>,
}

impl DockerHarness {
    pub async fn new() -> Self {
        DockerHarness {
            image: base_image().await,
            workers: Mutex::new(Vec::new()),
        }
    }

    /// Containers of execution `exec` of worker `worker` (any state).
    fn containers(worker: &str, exec: &str) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=dev.hangar.worker={worker}"))
            .arg("--filter")
            .arg(format!("label=dev.hangar.execution={exec}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "docker ps failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for DockerHarness {
    fn drop(&mut self) {
        for worker in self.workers.lock().unwrap().iter() {
            for id in crate::suite::docker::containers_of(worker) {
                let _ = Command::new("docker").args(["rm", "-fv", &id]).output();
            }
        }
    }
}

impl Harness for DockerHarness {
    const NAME: &'static str = "docker";
    const SETUP_OUTPUT_IN_MESSAGE: bool = true;
    const CONFIGURED_ENV_IN_TASK: bool = true;
    const WORKER_PREPARES: bool = true;
    const KNOWS_EXIT_CODE: bool = true;

    fn configure(&self, c: &mut WorkerConfig, test: &str) {
        let worker = format!("dk-c-{test}");
        docker(c, &worker, &self.image);
        self.workers.lock().unwrap().push(worker);
    }

    fn limit(&self, c: &mut WorkerConfig, pids: u64, memory_mb: u64) {
        c.docker.pids_limit = Some(pids as i64);
        c.docker.memory_mb = Some(memory_mb);
    }

    fn cwd(&self, _w: &TestWorker, _exec: &str) -> String {
        "/workspace".to_owned()
    }

    fn workspace_file(&self, w: &TestWorker, exec: &str, name: &str) -> PathBuf {
        w.workspace_root.join(exec).join("workspace").join(name)
    }

    fn assert_running(&self, w: &TestWorker, exec: &str) {
        let c = inspect(&container_name(&w.worker_id, exec))
            .unwrap_or_else(|| panic!("no container for {exec}"));
        assert_eq!(c["State"]["Running"], true, "{exec} is not running");
    }

    async fn assert_nothing_left(&self, w: &TestWorker, exec: &str) {
        let worker = w.worker_id.clone();
        until(&format!("removal of the container of {exec}"), WAIT, || {
            Self::containers(&worker, exec).is_empty()
        })
        .await;
        wait_for_removal(&self.sandbox_dir(w, exec)).await;
    }

    fn assert_kept(&self, w: &TestWorker, exec: &str) {
        assert_eq!(
            Self::containers(&w.worker_id, exec).len(),
            1,
            "the container of {exec} is kept"
        );
        assert!(self.sandbox_dir(w, exec).is_dir());
        assert_private_dir(&self.sandbox_dir(w, exec));
    }

    fn assert_private(&self, _w: &TestWorker, _exec: &str) {
        // /workspace is 0777 by design, for whatever user the image runs
        // as; it lives in the execution's 0700 directory on the host
        // (checked on a kept sandbox by the `cleanup` behaviour).
    }

    fn sandbox_identity(&self, w: &TestWorker, exec: &str) -> String {
        w.read_out(exec, "env")
            .lines()
            .find(|l| l.starts_with("HOSTNAME="))
            .map(str::to_owned)
            .unwrap()
    }

    fn assert_reused(&self, w: &TestWorker, kept: &str, new: &str) {
        assert_eq!(
            std::fs::read_to_string(self.sandbox_dir(w, kept).join("ctl/execution")).unwrap(),
            new
        );
        assert_eq!(
            crate::suite::docker::containers_of(&w.worker_id).len(),
            1,
            "one container for both executions"
        );
    }

    fn pids_current(&self, w: &TestWorker, exec: &str) -> Option<u64> {
        let c = inspect(&container_name(&w.worker_id, exec))?;
        let id = c["Id"].as_str()?.to_owned();
        ["/sys/fs/cgroup/pids/docker", "/sys/fs/cgroup/system.slice"]
            .iter()
            .filter_map(|base| {
                std::fs::read_to_string(format!("{base}/{id}/pids.current"))
                    .or_else(|_| {
                        std::fs::read_to_string(format!("{base}/docker-{id}.scope/pids.current"))
                    })
                    .ok()
            })
            .next()
            .map(|s| s.trim().parse().unwrap())
    }

    fn assert_oom_message(&self, _message: &str) {
        // The reason (`container_oom`) is what Docker tells; it does not
        // say which limit.
    }

    async fn wait_ended(&self, w: &TestWorker, exec: &str) {
        let name = container_name(&w.worker_id, exec);
        until(&format!("{exec} to exit"), WAIT, || {
            inspect(&name).is_some_and(|c| c["State"]["Running"] == false)
        })
        .await;
    }
}

/// The command backend with the example dispatcher
/// (`examples/command-backend/hangar-dispatch.py`, local mode): each task
/// is a detached process in `<workspace root>/<execution>`. Its "agent" is
/// the fake agent, wrapped to report its outcome where the fake server
/// answers the run's state from (as a real agent reports on its session).
#[derive(Default)]
pub struct CommandHarness {
    /// The out directories of this test's workers: every dispatched task
    /// has one in its environment (`TEST_OUT`).
    outs: Mutex<Vec<PathBuf>>,
}

/// Live processes of execution `exec` of a worker writing to `out`: tests
/// run at once, and other tests' executions may share the id.
fn processes_of(out: &std::path::Path, exec: &str) -> Vec<(i32, String)> {
    let marker = format!("TEST_OUT={}", out.display());
    execution_processes(exec)
        .into_iter()
        .filter(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
        })
        .collect()
}

impl Drop for CommandHarness {
    /// Stops what a failed test left running (after its assertions: it
    /// never hides a leak).
    fn drop(&mut self) {
        let outs = self.outs.lock().map(|o| o.clone()).unwrap_or_default();
        for out in outs {
            let marker = format!("TEST_OUT={}", out.display());
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let ours = std::fs::read(entry.path().join("environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()));
                if ours {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// Runs the fake agent (`$1`), then reports the outcome as the run's state.
const REPORTING_AGENT: &str = r#"#!/bin/bash
agent="$1"; shift
"$agent" "$@"
code=$?
if [ "$code" = 0 ]; then state=SUCCEEDED; else state=FAILED; fi
echo "$state" > "$TEST_OUT/$HANGAR_RUN_ID.state.tmp"
mv "$TEST_OUT/$HANGAR_RUN_ID.state.tmp" "$TEST_OUT/$HANGAR_RUN_ID.state"
exit "$code"
"#;

impl CommandHarness {
    fn state_dir(w: &TestWorker) -> PathBuf {
        w.dir.path().join("command-state")
    }
}

impl Harness for CommandHarness {
    const NAME: &'static str = "command";
    const SETUP_OUTPUT_IN_MESSAGE: bool = false;
    const CONFIGURED_ENV_IN_TASK: bool = false;
    const WORKER_PREPARES: bool = false;
    const KNOWS_EXIT_CODE: bool = false;

    fn configure(&self, c: &mut WorkerConfig, _test: &str) {
        use std::os::unix::fs::PermissionsExt;
        let root = c.direct.workspace_root.clone().unwrap();
        let dir = root.parent().unwrap().to_path_buf();
        let fake_agent = c.agent_path.clone().unwrap();
        // The dispatcher runs `$HANGAR_BIN <base_args>`: a wrapper that
        // hands the fake agent's path first.
        let agent = dir.join("reporting-agent.sh");
        std::fs::write(
            &agent,
            REPORTING_AGENT.replace(
                "agent=\"$1\"; shift",
                &format!("agent={:?}", fake_agent.display().to_string()),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dispatcher = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/command-backend/hangar-dispatch.py");
        let command = |what: &str| format!("python3 {} {what}", dispatcher.display());
        c.backend = hangar_worker::BackendKind::Command;
        c.command.dispatch_command = Some(command("dispatch"));
        c.command.cancel_command = Some(command("cancel"));
        c.command.status_command = Some(command("status"));
        c.command.status_interval = std::time::Duration::from_millis(100);
        c.command.state_dir = Some(dir.join("command-state"));
        c.env.extend([
            ("HANGAR_DISPATCH_MODE".to_owned(), "local".to_owned()),
            ("HANGAR_BIN".to_owned(), agent.display().to_string()),
            (
                "HANGAR_DISPATCH_ROOT".to_owned(),
                root.display().to_string(),
            ),
        ]);
    }

    fn attach(&self, server: &FakeServer, w: &TestWorker) {
        server.serve_run_states(&w.out);
        self.outs.lock().unwrap().push(w.out.clone());
    }

    fn limit(&self, _c: &mut WorkerConfig, _pids: u64, _memory_mb: u64) {
        unreachable!("the command backend sets no limits")
    }

    fn cwd(&self, w: &TestWorker, exec: &str) -> String {
        w.workspace_root.join(exec).to_string_lossy().into_owned()
    }

    fn workspace_file(&self, w: &TestWorker, exec: &str, name: &str) -> PathBuf {
        w.workspace_root.join(exec).join(name)
    }

    fn assert_running(&self, w: &TestWorker, exec: &str) {
        assert!(
            !processes_of(&w.out, exec).is_empty(),
            "the dispatched task {exec} is not running"
        );
    }

    async fn assert_nothing_left(&self, w: &TestWorker, exec: &str) {
        // The wrapper reports the state just before it exits.
        until(&format!("the processes of {exec} to end"), WAIT, || {
            processes_of(&w.out, exec).is_empty()
        })
        .await;
        let record = Self::state_dir(w).join(format!("{exec}.json"));
        assert!(!record.exists(), "the record of {exec} is not removed");
    }

    fn assert_kept(&self, _w: &TestWorker, _exec: &str) {
        unreachable!("the command backend keeps nothing")
    }

    fn assert_private(&self, _w: &TestWorker, _exec: &str) {
        unreachable!("the command backend keeps nothing")
    }

    fn sandbox_identity(&self, _w: &TestWorker, _exec: &str) -> String {
        unreachable!("the command backend does not park")
    }

    fn assert_reused(&self, _w: &TestWorker, _kept: &str, _new: &str) {
        unreachable!("the command backend does not park")
    }

    fn pids_current(&self, _w: &TestWorker, _exec: &str) -> Option<u64> {
        unreachable!("the command backend sets no limits")
    }

    fn assert_oom_message(&self, _message: &str) {
        unreachable!("the command backend sets no limits")
    }

    async fn wait_ended(&self, w: &TestWorker, exec: &str) {
        until(&format!("{exec} to exit"), WAIT, || {
            processes_of(&w.out, exec).is_empty()
        })
        .await;
    }
}

/// The kubernetes backend against the fake API server of `hangar-testkit`
/// with its Docker kubelet: pods really run in the local engine, the agent
/// image holds the fake agent at `/agent/hangar` (copied into the pod by the
/// backend's init container), and a pod template mounts the test's
/// directory at the same path (hostPath), so the fake agent's output files
/// and gates work as on the host.
pub struct KubernetesHarness {
    fake: hangar_testkit::fake_kube::FakeKube,
    base: String,
    agent_image: String,
}

impl KubernetesHarness {
    pub async fn new() -> Self {
        let base = base_image().await;
        let agent_image = {
            let base = base.clone();
            tokio::task::spawn_blocking(move || {
                let dir = tempfile::tempdir().unwrap();
                let script = dir.path().join("hangar");
                std::fs::write(&script, AGENT_SCRIPT).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
                hangar_testkit::images::image_with_files(
                    "hangar-test/fake-agent",
                    &base,
                    &[(script, "/agent/hangar")],
                    &[],
                )
                .expect("cannot build the fake agent image")
            })
            .await
            .unwrap()
        };
        KubernetesHarness {
            fake: hangar_testkit::fake_kube::FakeKube::start(
                hangar_testkit::fake_kube::Kubelet::Docker,
            )
            .await,
            base,
            agent_image,
        }
    }

    /// The fake's objects of `kind` of execution `exec`.
    fn of_execution(&self, kind: &str, exec: &str) -> Vec<serde_json::Value> {
        self.fake
            .objects(kind)
            .into_iter()
            .filter(|o| o["metadata"]["labels"]["hangar.dev/execution"] == exec)
            .collect()
    }

    fn pod_phase(&self, exec: &str) -> Option<String> {
        self.of_execution("pods", exec)
            .first()
            .and_then(|p| p["status"]["phase"].as_str().map(str::to_owned))
    }
}

impl Harness for KubernetesHarness {
    const NAME: &'static str = "kubernetes";
    const SETUP_OUTPUT_IN_MESSAGE: bool = false;
    const CONFIGURED_ENV_IN_TASK: bool = true;
    const WORKER_PREPARES: bool = false;
    const KNOWS_EXIT_CODE: bool = true;

    fn configure(&self, c: &mut WorkerConfig, _test: &str) {
        let root = c.direct.workspace_root.clone().unwrap();
        let dir = root.parent().unwrap().to_path_buf();
        let k = &mut c.kubernetes;
        c.backend = hangar_worker::BackendKind::Kubernetes;
        k.kubeconfig = Some(self.fake.kubeconfig(&dir));
        k.namespace = Some(hangar_testkit::fake_kube::NAMESPACE.to_owned());
        k.agent_image = Some(self.agent_image.clone());
        k.default_image = Some(self.base.clone());
        k.image_pull_policy = Some("Never".to_owned());
        let dir = dir.display().to_string();
        k.pod_template = Some(serde_json::json!({
            "containers": [{
                "name": "task",
                "volumeMounts": [{"name": "test-dir", "mountPath": dir}],
            }],
            "volumes": [{"name": "test-dir", "hostPath": {"path": dir}}],
        }));
    }

    fn limit(&self, c: &mut WorkerConfig, _pids: u64, memory_mb: u64) {
        // The task container's limit in the pod template (a run's
        // instance shape would override it); pods have no process limit
        // of their own.
        let template = c.kubernetes.pod_template.as_mut().unwrap();
        template["containers"][0]["resources"] = serde_json::json!({
            "limits": {"memory": format!("{memory_mb}Mi")},
        });
    }

    fn cwd(&self, _w: &TestWorker, _exec: &str) -> String {
        "/workspace".to_owned()
    }

    fn workspace_file(&self, _w: &TestWorker, _exec: &str, _name: &str) -> PathBuf {
        unreachable!("the workspace is the pod's")
    }

    fn assert_running(&self, _w: &TestWorker, exec: &str) {
        assert_eq!(
            self.pod_phase(exec).as_deref(),
            Some("Running"),
            "the pod of {exec} is not running"
        );
    }

    async fn assert_nothing_left(&self, _w: &TestWorker, exec: &str) {
        // The Secret never outlives the execution; the pod stops; the Job
        // goes, unless it failed (kept for inspection until its TTL).
        until(&format!("the Secret and pod of {exec} to go"), WAIT, || {
            self.of_execution("secrets", exec).is_empty()
                && self
                    .pod_phase(exec)
                    .is_none_or(|p| p == "Succeeded" || p == "Failed")
        })
        .await;
        until(&format!("the Job of {exec} to go"), WAIT, || {
            self.of_execution("jobs", exec).iter().all(|j| {
                j["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Failed" && c["status"] == "True")
            })
        })
        .await;
    }

    fn assert_kept(&self, _w: &TestWorker, exec: &str) {
        assert_eq!(self.of_execution("jobs", exec).len(), 1, "the Job is kept");
        assert_eq!(
            self.of_execution("secrets", exec).len(),
            1,
            "its Secret is kept"
        );
    }

    fn assert_private(&self, _w: &TestWorker, _exec: &str) {
        // The workspace is the pod's emptyDir: nothing else mounts it.
    }

    fn sandbox_identity(&self, _w: &TestWorker, _exec: &str) -> String {
        unreachable!("the kubernetes backend does not park")
    }

    fn assert_reused(&self, _w: &TestWorker, _kept: &str, _new: &str) {
        unreachable!("the kubernetes backend does not park")
    }

    fn pids_current(&self, _w: &TestWorker, _exec: &str) -> Option<u64> {
        unreachable!("pods have no process limit of their own")
    }

    fn assert_oom_message(&self, message: &str) {
        assert!(message.contains("memory limit 64Mi"), "{message}");
    }

    async fn wait_ended(&self, _w: &TestWorker, exec: &str) {
        until(&format!("the pod of {exec} to end"), WAIT, || {
            matches!(
                self.pod_phase(exec).as_deref(),
                Some("Succeeded" | "Failed")
            )
        })
        .await;
    }
}
