//! The fault suite: real `hangar` processes under injected faults, one test
//! per scenario id of TESTING.md.

use super::replicas::Schema;
use crate::suite::common::{cluster_with, hangar_bin, processes_under};
use hangar_client::Client;
use hangar_protocol::{AgentConfig, RunAgentRequest, RunItem, RunState};
use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use hangar_testkit::poll::{empty, eventually_ok, until_ok};
use nix::sys::signal::Signal;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `GET path` with the admin key, as JSON.
pub(crate) async fn get_json(cluster: &TestCluster, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{}{path}", cluster.url))
        .bearer_auth(&cluster.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A run on worker `host` whose agent runs `sleep 300` in the shell tool.
pub(crate) fn sleeping_run(host: &str) -> RunAgentRequest {
    RunAgentRequest {
        prompt: Some("sleep a long time".into()),
        config: Some(AgentConfig {
            worker_host: Some(host.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sleeping_llm_turns() -> Vec<Turn> {
    vec![Turn::tool_call(
        "shell",
        json!({"command": "sleep 300", "timeout_ms": 600000}),
    )]
}

pub(crate) async fn wait_in_progress(cluster: &TestCluster, client: &Client, run_id: &str) {
    let what = format!("run {run_id} to start ({})", cluster.url);
    eventually_ok(&what, Duration::from_secs(30), async || {
        let run = client.get_run(run_id).await.unwrap();
        if run.state == RunState::InProgress {
            Ok(())
        } else {
            Err(run.state)
        }
    })
    .await;
}

/// Waits until the shell tool's `sleep 300` runs in a workspace under `root`.
async fn wait_for_tool(root: &Path) {
    wait_for_process(root, "sleep 300").await;
}

/// Waits until a process whose command line starts with `command` runs in a
/// workspace under `root`.
pub(crate) async fn wait_for_process(root: &Path, command: &str) {
    let what = format!("`{command}` to start");
    until_ok(&what, Duration::from_secs(30), || {
        let found = processes_under(root);
        if found.iter().any(|(_, cmd)| cmd.starts_with(command)) {
            Ok(())
        } else {
            Err(found)
        }
    })
    .await;
}

/// Waits for the run to end after a fault; asserts its expired lease ended
/// it (`ERROR`, says so in its status and in one `lease_expired` lifecycle
/// event naming the worker); returns it and the time the fault took to detect.
async fn ended_by_lease(cluster: &TestCluster, run_id: &str) -> (RunItem, Duration) {
    let at = Instant::now();
    let run = cluster
        .wait_run(run_id, LEASE * 3, |r| r.state.is_terminal())
        .await
        .unwrap();
    let detected = at.elapsed();
    assert_eq!(run.state, RunState::Error, "{}", status_text(&run));
    assert!(
        status_text(&run).contains("lease expired"),
        "{}",
        status_text(&run)
    );
    let events = get_json(cluster, &format!("/api/v1/agent/events?run_ids={run_id}")).await;
    let expiries: Vec<_> = events
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["event_type"] == "lease_expired")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(expiries.len(), 1, "{events}");
    assert!(expiries[0]["ref_id"].is_string(), "{events}");
    (run, detected)
}

pub(crate) fn status_text(run: &RunItem) -> String {
    format!("{:?}", run.status_message)
}

/// The test lease (`worker_lost_timeout` of the test cluster).
pub(crate) const LEASE: Duration = Duration::from_secs(6);

/// D3 (server side): a worker frozen (SIGSTOP) past its lease has its
/// started run ended `ERROR` by the lease sweep, within the lease plus a
/// heartbeat; the server closes the agent's session and refuses its token,
/// so the agent stops by itself; once thawed the worker is told the task
/// ended, and its late result is refused: the run stays `ERROR`, reported once.
#[tokio::test(flavor = "multi_thread")]
async fn d3_worker_frozen_past_its_lease_is_ended_and_its_late_result_refused() {
    let llm = FakeLlm::start(sleeping_llm_turns()).await;
    let mut cluster = cluster_with(&llm).await;
    let client = cluster.client();
    let worker = cluster
        .start_worker("frozen", &["--kill-grace", "1s"])
        .await
        .unwrap();
    let root = worker.workspace_root.clone();
    let created = client.create_run(&sleeping_run("frozen")).await.unwrap();
    wait_in_progress(&cluster, &client, &created.run_id).await;
    // The operator sees the lease the worker holds.
    let workers = get_json(&cluster, "/api/v1/workers").await;
    let lease = &workers["workers"][0]["leases"][0];
    assert_eq!(lease["run_id"], created.run_id.as_str(), "{workers}");
    assert_eq!(lease["epoch"], 1, "{workers}");
    assert!(lease["expires_at"].is_string(), "{workers}");

    cluster
        .worker("frozen")
        .unwrap()
        .signal(Signal::SIGSTOP)
        .unwrap();
    let (run, detected) = ended_by_lease(&cluster, &created.run_id).await;
    // Liveness is judged on the lease, not on a guess: never before it ran out.
    assert!(
        detected >= LEASE - Duration::from_secs(3),
        "ended after only {detected:?}"
    );

    // The server closed the ended execution's session and refuses its run
    // token: the agent stops its tool and exits by itself, while its worker
    // is still frozen.
    until_ok(
        "the agent of the ended execution to stop working",
        Duration::from_secs(20),
        || empty(processes_under(&root)),
    )
    .await;

    // Thawed, it reconnects, learns the execution ended, and cleans up.
    cluster
        .worker("frozen")
        .unwrap()
        .signal(Signal::SIGCONT)
        .unwrap();
    until_ok("the ended task to stop", Duration::from_secs(30), || {
        empty(processes_under(&root))
    })
    .await;
    // Its late report changed nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = client.get_run(&created.run_id).await.unwrap();
    assert_eq!(after.state, RunState::Error);
    assert_eq!(status_text(&after), status_text(&run));
}

/// R1: another replica starting and restarting while runs are live marks
/// none of them `ERROR` (no replica's memory decides the fate of a run).
#[tokio::test(flavor = "multi_thread")]
async fn r1_replica_restart_with_live_runs_marks_nothing_error() {
    let schema = Schema::new();
    let llm = FakeLlm::start(sleeping_llm_turns()).await;
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    options.postgres = Some((schema.url.clone(), schema.name.clone()));
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    let client = cluster.client();
    cluster
        .start_worker("steady", &["--kill-grace", "1s"])
        .await
        .unwrap();
    let created = client.create_run(&sleeping_run("steady")).await.unwrap();
    wait_in_progress(&cluster, &client, &created.run_id).await;

    cluster.start_replica("b").await.unwrap();
    cluster.kill_replica("b").await.unwrap();
    cluster.start_replica("b2").await.unwrap();
    // Well past the lease: a replica that judged by its own memory would have
    // declared the worker (connected to A) lost by now.
    tokio::time::sleep(LEASE * 2).await;
    let run = client.get_run(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::InProgress, "{}", status_text(&run));

    client.cancel_run(&created.run_id).await.unwrap();
    let run = cluster
        .wait_finished(&created.run_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    drop(cluster);
    schema.drop_it().await;
}

/// R3: a replica dying together with its worker: the surviving replica ends
/// the run (`ERROR`, lease expired) within the lease plus a sweep.
#[tokio::test(flavor = "multi_thread")]
async fn r3_replica_dying_with_its_worker_ends_runs_on_a_survivor() {
    let schema = Schema::new();
    let llm = FakeLlm::start(sleeping_llm_turns()).await;
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    options.postgres = Some((schema.url.clone(), schema.name.clone()));
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    let client = cluster.client();
    let url_b = cluster.start_replica("b").await.unwrap();
    let root = cluster
        .start_worker_on(&url_b, "on-b", &["--kill-grace", "1s"])
        .await
        .unwrap();
    let created = client.create_run(&sleeping_run("on-b")).await.unwrap();
    wait_in_progress(&cluster, &client, &created.run_id).await;

    cluster.kill_replica("b").await.unwrap();
    cluster
        .worker("on-b")
        .unwrap()
        .signal(Signal::SIGKILL)
        .unwrap();
    let (_, detected) = ended_by_lease(&cluster, &created.run_id).await;
    assert!(
        detected <= LEASE + Duration::from_secs(3),
        "the survivor took {detected:?} to end the run (lease {LEASE:?})"
    );
    // Back on the survivor, the worker reaps what its dead life left.
    let cgroups = recorded_cgroups(&root);
    assert_nothing_under(&root, Duration::from_secs(2), "the worker's death").await;
    cluster.start_worker("on-b", &[]).await.unwrap();
    wait_no_workspaces(&root).await;
    assert_removed(&cgroups);
    drop(cluster);
    schema.drop_it().await;
}

/// D3 (worker side): a worker cut off from the server (the server is killed)
/// for longer than its lease stops its task itself, through the normal
/// cancel path, and never before the lease ran out. When the server is back
/// (it gives live leases a fresh term at start-up, since nobody could renew
/// them while it was down) the worker reports what it did: the run ends
/// `ERROR` `worker_lost`, said so once.
#[tokio::test(flavor = "multi_thread")]
async fn d3_worker_cut_off_past_its_lease_stops_its_task_itself() {
    let llm = FakeLlm::start(sleeping_llm_turns()).await;
    let mut cluster = cluster_with(&llm).await;
    let client = cluster.client();
    let fence = format!("{}s", LEASE.as_secs());
    let worker = cluster
        .start_worker(
            "cut",
            &[
                "--kill-grace",
                "1s",
                "--heartbeat-interval",
                "2s",
                "--read-timeout",
                "6s",
                "--fence-after",
                &fence,
            ],
        )
        .await
        .unwrap();
    let root = worker.workspace_root.clone();
    let created = client.create_run(&sleeping_run("cut")).await.unwrap();
    wait_in_progress(&cluster, &client, &created.run_id).await;
    wait_for_tool(&root).await;

    cluster.kill_server().await.unwrap();
    let cut_at = Instant::now();
    until_ok(
        "the cut-off worker to stop its task",
        LEASE + Duration::from_secs(10),
        || empty(processes_under(&root)),
    )
    .await;
    let stopped = cut_at.elapsed();
    assert!(
        stopped >= LEASE - Duration::from_secs(1),
        "the worker stopped its task after only {stopped:?}: it must wait out the lease"
    );

    cluster.restart_server().await.unwrap();
    let run = cluster
        .wait_run(&created.run_id, LEASE * 3, |r| r.state.is_terminal())
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Error, "{}", status_text(&run));
    assert!(
        status_text(&run).contains("lost contact with the control plane for longer than its lease"),
        "{}",
        status_text(&run)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = client.get_run(&created.run_id).await.unwrap();
    assert_eq!(
        status_text(&after),
        status_text(&run),
        "the run changed after it ended"
    );
}

/// Processes whose command line contains `marker`.
pub(crate) fn processes_with(marker: &str) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(marker).then_some((pid, cmd))
        })
        .collect()
}

/// Background work a task leaves behind, the way people write it: a `nohup`
/// job in the command's process group, and a `setsid` daemon that left it
/// and moved to `/`. Each `sleep` has a unique duration to find it by.
struct Daemons {
    nohup: String,
    setsid: String,
}

impl Daemons {
    fn new() -> Daemons {
        let unique = std::process::id() as u64 * 1000 + rand_suffix();
        Daemons {
            nohup: format!("1000.{unique}"),
            setsid: format!("1001.{unique}"),
        }
    }

    /// The shell tool call that starts both.
    fn turn(&self) -> Turn {
        Turn::tool_call(
            "shell",
            json!({"command": format!(
                "nohup sleep {} >/dev/null 2>&1 & cd / && setsid -f sleep {} >/dev/null 2>&1; echo started",
                self.nohup, self.setsid
            )}),
        )
    }

    fn alive(&self) -> Vec<(i32, String)> {
        let mut found = processes_with(&format!("sleep {}", self.nohup));
        found.extend(processes_with(&format!("sleep {}", self.setsid)));
        found
    }

    /// Waits until both run (so the test cannot pass by never starting them).
    async fn wait_started(&self) {
        until_ok(
            "the task's background processes to start",
            Duration::from_secs(30),
            || {
                let alive = self.alive();
                if alive.len() >= 2 { Ok(()) } else { Err(alive) }
            },
        )
        .await;
    }

    /// Asserts both are gone within `limit`.
    async fn assert_gone_within(&self, limit: Duration, after: &str) {
        let what = format!("the task's background processes to end {after}");
        until_ok(&what, limit, || empty(self.alive())).await;
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    u64::from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 1000,
    )
}

/// Waits until nothing runs in the workspaces under `root`.
pub(crate) async fn assert_nothing_under(root: &Path, limit: Duration, after: &str) {
    let what = format!("the task's processes to end {after}");
    until_ok(&what, limit, || empty(processes_under(root))).await;
}

/// Workspaces and execution records left under a worker's root; the kept
/// spool directory is not a workspace.
pub(crate) fn workspaces_under(root: &Path) -> Vec<PathBuf> {
    crate::suite::common::dir_entries(root)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != ".hangar-undelivered"))
        .collect()
}

/// One P1 scenario: a direct worker whose run first starts the task's
/// background processes ([`Daemons`]), then plays `then`.
struct P1 {
    cluster: TestCluster,
    _llm: FakeLlm,
    root: PathBuf,
    run_id: String,
    daemons: Daemons,
}

impl P1 {
    /// Starts the run and waits until its daemons run.
    async fn start(worker: &str, extra: &[&str], then: Vec<Turn>) -> P1 {
        let daemons = Daemons::new();
        let mut turns = vec![daemons.turn()];
        turns.extend(then);
        let llm = FakeLlm::start(turns).await;
        let mut cluster = cluster_with(&llm).await;
        let root = cluster
            .start_worker(worker, extra)
            .await
            .unwrap()
            .workspace_root
            .clone();
        let created = cluster
            .client()
            .create_run(&sleeping_run(worker))
            .await
            .unwrap();
        daemons.wait_started().await;
        P1 {
            cluster,
            _llm: llm,
            root,
            run_id: created.run_id,
            daemons,
        }
    }

    /// Asserts the daemons and every process of the task are gone within `limit`.
    async fn assert_all_gone(&self, limit: Duration, after: &str) {
        self.daemons.assert_gone_within(limit, after).await;
        assert_nothing_under(&self.root, limit, after).await;
    }

    async fn finished(&self, limit: Duration) -> RunItem {
        self.cluster
            .wait_finished(&self.run_id, limit)
            .await
            .unwrap()
    }
}

/// P1 (cancel): the shell tool's `nohup sleep &` and a `setsid` daemon are
/// gone once the run is cancelled, and so is its workspace.
#[tokio::test(flavor = "multi_thread")]
async fn p1_background_children_are_gone_after_cancel() {
    let p1 = P1::start("p1-cancel", &["--kill-grace", "2s"], sleeping_llm_turns()).await;
    wait_for_tool(&p1.root).await;
    p1.cluster.client().cancel_run(&p1.run_id).await.unwrap();
    let run = p1.finished(Duration::from_secs(30)).await;
    assert_eq!(run.state, RunState::Cancelled, "{}", status_text(&run));
    p1.assert_all_gone(Duration::from_secs(2), "cancel").await;
    wait_no_workspaces(&p1.root).await;
}

/// P1 (completion): background children of a run that succeeded are gone
/// when its agent exits.
#[tokio::test(flavor = "multi_thread")]
async fn p1_background_children_are_gone_after_completion() {
    let then = vec![
        Turn::tool_call("shell", json!({"command": "sleep 2"})),
        Turn::text("done"),
    ];
    let p1 = P1::start("p1-done", &[], then).await;
    let run = p1.finished(Duration::from_secs(60)).await;
    assert_eq!(run.state, RunState::Succeeded, "{}", status_text(&run));
    p1.assert_all_gone(Duration::from_secs(5), "completion")
        .await;
    wait_no_workspaces(&p1.root).await;
}

/// P1 (worker killed): `kill -9` of the worker takes the agent, its tool
/// and the task's daemons with it; the next worker on its root reaps the
/// workspace and the cgroup.
#[tokio::test(flavor = "multi_thread")]
async fn p1_background_children_are_gone_after_the_worker_is_killed() {
    let mut p1 = P1::start("p1-kill", &[], sleeping_llm_turns()).await;
    wait_for_tool(&p1.root).await;
    p1.cluster
        .worker("p1-kill")
        .unwrap()
        .signal(Signal::SIGKILL)
        .unwrap();
    p1.assert_all_gone(Duration::from_secs(2), "the worker's death")
        .await;
    let cgroups = recorded_cgroups(&p1.root);
    p1.cluster.start_worker("p1-kill", &[]).await.unwrap();
    wait_no_workspaces(&p1.root).await;
    assert_removed(&cgroups);
}

/// The cgroups the direct backend recorded for the executions under `root`.
fn recorded_cgroups(root: &Path) -> Vec<PathBuf> {
    crate::suite::common::dir_entries(&root.join(".hangar-executions"))
        .iter()
        .filter_map(|p| {
            let record: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
            record["cgroup"].as_str().map(PathBuf::from)
        })
        .collect()
}

fn assert_removed(cgroups: &[PathBuf]) {
    for cgroup in cgroups {
        assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
    }
}

/// D1: a direct worker killed with `kill -9` mid-task: its task dies with it
/// (nothing runs unsupervised), the run ends `ERROR` (lease expired) within
/// twice the lease, and the restarted worker reaps the execution's
/// workspace and record.
#[tokio::test(flavor = "multi_thread")]
async fn d1_worker_killed_mid_task_leaves_no_orphans_and_its_run_ends() {
    let llm = FakeLlm::start(sleeping_llm_turns()).await;
    let mut cluster = cluster_with(&llm).await;
    let client = cluster.client();
    let root = cluster
        .start_worker("d1", &[])
        .await
        .unwrap()
        .workspace_root
        .clone();
    let created = client.create_run(&sleeping_run("d1")).await.unwrap();
    wait_in_progress(&cluster, &client, &created.run_id).await;
    wait_for_tool(&root).await;
    assert!(!workspaces_under(&root).is_empty());

    let cgroups = recorded_cgroups(&root);
    cluster
        .worker("d1")
        .unwrap()
        .signal(Signal::SIGKILL)
        .unwrap();
    assert_nothing_under(&root, Duration::from_secs(2), "kill -9 of the worker").await;
    let (_, detected) = ended_by_lease(&cluster, &created.run_id).await;
    assert!(
        detected <= LEASE * 2,
        "the run took {detected:?} to end (lease {LEASE:?})"
    );

    // The next worker on this root reaps what the dead one left.
    cluster.start_worker("d1", &[]).await.unwrap();
    wait_no_workspaces(&root).await;
    assert_removed(&cgroups);
    let run = client.get_run(&created.run_id).await.unwrap();
    assert_eq!(
        run.state,
        RunState::Error,
        "reported twice: {}",
        status_text(&run)
    );
}

/// Waits until no workspace or execution record is left under `root`.
pub(crate) async fn wait_no_workspaces(root: &Path) {
    until_ok(
        "no workspace to be left behind",
        Duration::from_secs(10),
        || empty(workspaces_under(root)),
    )
    .await;
}

/// R4: a follow-up sent through replica B to an agent connected to replica
/// A is stored before it is acknowledged and reaches the agent exactly once
/// (one user message in the transcript, once in the next model call).
#[tokio::test(flavor = "multi_thread")]
async fn r4_followup_through_another_replica_arrives_once() {
    let schema = Schema::new();
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": "sleep 3; echo slept"})),
        Turn::text("done, with the follow-up"),
    ])
    .await;
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    options.postgres = Some((schema.url.clone(), schema.name.clone()));
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    let client = cluster.client();
    let root = cluster
        .start_worker("on-a", &[])
        .await
        .unwrap()
        .workspace_root
        .clone();
    let url_b = cluster.start_replica("b").await.unwrap();
    let created = client.create_run(&sleeping_run("on-a")).await.unwrap();
    wait_in_progress(&cluster, &client, &created.run_id).await;
    wait_for_process(&root, "sleep 3").await;

    let message = "R4: also update the changelog";
    let through_b = Client::new(&url_b, cluster.api_key.clone()).unwrap();
    let answer: serde_json::Value = through_b
        .post_json(
            &format!("api/v1/agent/runs/{}/followups", created.run_id),
            &json!({ "message": message }),
        )
        .await
        .unwrap();
    assert_eq!(answer["delivered"], true, "{answer}");
    assert!(answer["followup_id"].is_i64(), "{answer}");

    let run = cluster
        .wait_finished(&created.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Succeeded, "{}", status_text(&run));
    let second = llm.requests()[1].to_string();
    assert_eq!(
        second.matches(message).count(),
        1,
        "the follow-up must reach the model once: {second}"
    );
    let transcript = get_json(
        &cluster,
        &format!("/api/v1/agent/runs/{}/transcript", created.run_id),
    )
    .await
    .to_string();
    assert_eq!(
        transcript.matches(message).count(),
        1,
        "the follow-up must be in the transcript once: {transcript}"
    );
    drop(cluster);
    schema.drop_it().await;
}

/// D6 (model call): the server is down (`kill -9`) when the agent asks the
/// gateway for its next turn; the agent waits for it instead of failing, and
/// the run SUCCEEDS once the server is back.
#[tokio::test(flavor = "multi_thread")]
async fn d6_server_down_across_a_model_call_costs_the_run_nothing() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": "sleep 2; echo ok"})),
        Turn::text("done after the outage"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let client = cluster.client();
    let root = cluster
        .start_worker("d6-model", &[])
        .await
        .unwrap()
        .workspace_root
        .clone();
    let created = client.create_run(&sleeping_run("d6-model")).await.unwrap();
    wait_for_process(&root, "sleep 2").await;
    cluster.kill_server().await.unwrap();
    // The tool ends and the agent calls the gateway while nothing listens.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        llm.requests().len(),
        1,
        "the model was called through a dead server"
    );
    cluster.restart_server().await.unwrap();
    let run = cluster
        .wait_finished(&created.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Succeeded, "{}", status_text(&run));
    assert_eq!(llm.requests().len(), 2);
}

/// `lease_expiry_policy: requeue`: a started run whose worker is killed is
/// queued again when its lease expires (once), runs on the next worker and
/// SUCCEEDS; nothing of the first execution is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn lease_expiry_policy_requeue_runs_a_lost_task_again_on_the_next_worker() {
    let llm = FakeLlm::start(vec![
        sleeping_llm_turns().remove(0),
        Turn::text("done on the second worker"),
    ])
    .await;
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    options
        .extra_config
        .push_str("lease_expiry_policy: requeue\n");
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    let client = cluster.client();
    let root = cluster
        .start_worker("lq", &[])
        .await
        .unwrap()
        .workspace_root
        .clone();
    let created = client.create_run(&sleeping_run("lq")).await.unwrap();
    wait_in_progress(&cluster, &client, &created.run_id).await;
    wait_for_tool(&root).await;

    cluster
        .worker("lq")
        .unwrap()
        .signal(Signal::SIGKILL)
        .unwrap();
    let queued = cluster
        .wait_run(&created.run_id, LEASE * 3, |r| r.state == RunState::Queued)
        .await
        .unwrap();
    assert!(
        status_text(&queued).contains("queued again"),
        "{}",
        status_text(&queued)
    );
    cluster.start_worker("lq", &[]).await.unwrap();
    let run = cluster
        .wait_finished(&created.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Succeeded, "{}", status_text(&run));
    assert_eq!(llm.remaining(), 0);
    wait_no_workspaces(&root).await;
}
