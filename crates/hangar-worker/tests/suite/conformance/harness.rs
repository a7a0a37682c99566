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

    fn assert_running(&self, _w: &TestWorker, exec: &str) {
        let agent = execution_pid(exec, " agent run");
        let pgid = group_of(agent);
        let pids: Vec<i32> = execution_processes(exec)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
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
        assert_eq!(
            execution_processes(exec),
            Vec::new(),
            "processes of {exec} outlived it"
        );
        if let Some((pgid, pids)) = self.seen.lock().unwrap().get(exec) {
            for pid in pids {
                assert!(!alive(*pid), "process {pid} of {exec} survived");
            }
            assert_eq!(
                live_group_members(*pgid),
                Vec::<i32>::new(),
                "processes left in the task's group"
            );
        }
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
pub struct CommandHarness;

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

    fn assert_running(&self, _w: &TestWorker, exec: &str) {
        assert!(
            !execution_processes(exec).is_empty(),
            "the dispatched task {exec} is not running"
        );
    }

    async fn assert_nothing_left(&self, w: &TestWorker, exec: &str) {
        // The wrapper reports the state just before it exits.
        until(&format!("the processes of {exec} to end"), WAIT, || {
            execution_processes(exec).is_empty()
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

    async fn wait_ended(&self, _w: &TestWorker, exec: &str) {
        until(&format!("{exec} to exit"), WAIT, || {
            execution_processes(exec).is_empty()
        })
        .await;
    }
}
