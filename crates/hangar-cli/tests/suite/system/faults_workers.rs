//! The fault suite, worker side: a docker worker killed and restarted (D2), a
//! cancel the task ignores (D8), a worker drained by SIGTERM (D9). Real
//! `hangar server` and `hangar worker` processes, the real agent launched by
//! the worker, faults injected with real signals; each test ends by asserting
//! that no run was lost and nothing was left behind.

use super::docker_system::{Sweep, base_image, containers_of, worker_config};
use super::faults::{
    LEASE, assert_nothing_under, get_json, processes_with, sleeping_run, status_text,
    wait_for_process, wait_in_progress, wait_no_workspaces,
};
use crate::suite::common::{cluster_with, processes_under};
use hangar_agent::tools::KILL_GRACE;
use hangar_protocol::RunState;
use hangar_testkit::cluster::TestCluster;
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use hangar_testkit::poll::{eventually_ok, until, until_ok};
use nix::sys::signal::Signal;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

/// Task containers carrying label `key=value`, as `(id, state)`, any state.
fn containers_labelled(key: &str, value: &str) -> Vec<(String, String)> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("label={key}={value}")])
        .args(["--format", "{{.ID}} {{.State}}"])
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, state)| (id.to_owned(), state.to_owned()))
        .collect()
}

/// The execution label of a container.
fn execution_of(container: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "--format"])
        .arg(format!(
            "{{{{index .Config.Labels \"{}\"}}}}",
            hangar_worker::backends::docker::LABEL_EXECUTION
        ))
        .arg(container)
        .output()
        .expect("docker inspect");
    assert!(out.status.success(), "docker inspect {container} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The lease the worker `id` holds for `run_id`, as `GET /workers` lists it.
async fn lease_of(cluster: &TestCluster, id: &str, run_id: &str) -> Option<serde_json::Value> {
    let workers = get_json(cluster, "/api/v1/workers").await;
    let worker = workers["workers"]
        .as_array()?
        .iter()
        .find(|w| w["worker_id"] == id)?
        .clone();
    worker["leases"]
        .as_array()?
        .iter()
        .find(|l| l["run_id"] == run_id)
        .cloned()
}

/// D2: a docker worker killed with `kill -9` mid-task leaves its task
/// container running (Docker owns it); the worker restarted with the same id
/// within the lease finds that container by its labels and reattaches: it
/// reports the execution in its hello (the server keeps the lease), the run
/// goes on to SUCCEED, and the restarted worker removes the container and the
/// workspace afterwards: no container carries the execution's labels.
///
/// Without the reattach the server would end the execution the reconnected
/// worker no longer claims, and the exited container would stay behind.
#[tokio::test(flavor = "multi_thread")]
async fn d2_docker_worker_killed_and_restarted_reattaches_its_container_and_leaks_none() {
    let image = base_image().await;
    // A duration no other test sleeps, to find the tool among host processes.
    let tool = "sleep 10.25";
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": format!("{tool}; echo slept"), "timeout_ms": 600000}),
        ),
        Turn::text("done across the worker's restart"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let worker = "faults-d2";
    let _sweep = Sweep(worker.into());
    let config = worker_config(&cluster, &image);
    let args = ["--config-file", config.to_str().unwrap()];
    let root = cluster
        .start_worker_with(worker, "docker", &args)
        .await
        .unwrap()
        .workspace_root
        .clone();
    let client = cluster.client();
    let created = client.create_run(&sleeping_run(worker)).await.unwrap();
    wait_in_progress(&cluster, &client, &created.run_id).await;
    until(
        "the tool to run in the container",
        Duration::from_secs(60),
        || !processes_with(tool).is_empty(),
    )
    .await;
    let containers = containers_of(worker);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let execution = execution_of(&containers[0]);
    assert!(
        !execution.is_empty(),
        "the container has no execution label"
    );
    let label = hangar_worker::backends::docker::LABEL_EXECUTION;

    let w = cluster.worker(worker).unwrap();
    w.signal(Signal::SIGKILL).unwrap();
    w.child.wait().await.unwrap();
    let killed_at = Instant::now();
    // The stale container outlives its worker, still running the task.
    assert_eq!(
        containers_labelled(label, &execution),
        [(containers[0].clone(), "running".to_owned())]
    );

    cluster
        .start_worker_with(worker, "docker", &args)
        .await
        .unwrap();
    let back_after = killed_at.elapsed();
    // Still mid-task when the new worker came up: this is the reattach path,
    // not the reap of an ended container.
    assert!(
        !processes_with(tool).is_empty(),
        "the tool ended before the worker was back ({back_after:?})"
    );
    eventually_ok(
        "the restarted worker to hold the run's lease",
        Duration::from_secs(10),
        async || match lease_of(&cluster, worker, &created.run_id).await {
            Some(_) => Ok(()),
            None => Err(get_json(&cluster, "/api/v1/workers").await),
        },
    )
    .await;

    let run = cluster
        .wait_finished(&created.run_id, Duration::from_secs(90))
        .await
        .unwrap();
    let finished_after = killed_at.elapsed();
    assert_eq!(run.state, RunState::Succeeded, "{}", status_text(&run));
    assert_eq!(llm.remaining(), 0, "the agent did not get to its last turn");

    // Nothing leaked: no container with the execution's (or the worker's)
    // labels, no workspace.
    until_ok(
        "no task container to be left",
        Duration::from_secs(30),
        || {
            let (labelled, of_worker) = (
                containers_labelled(label, &execution),
                containers_of(worker),
            );
            if labelled.is_empty() && of_worker.is_empty() {
                Ok(())
            } else {
                Err(format!("{labelled:?} {of_worker:?}"))
            }
        },
    )
    .await;
    wait_no_workspaces(&root).await;
    // Reported once: the run did not change after it ended.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = client.get_run(&created.run_id).await.unwrap();
    assert_eq!(after.state, RunState::Succeeded, "{}", status_text(&after));
    eprintln!(
        "D2: worker back {back_after:?} after kill -9 (lease {LEASE:?}); \
         run SUCCEEDED {finished_after:?} after the kill; 0 containers left"
    );
}

/// D8: cancelling a run whose task ignores SIGTERM (a shell that traps it,
/// with a child that ignores it) ends the run `CANCELLED`; the task got
/// SIGTERM first and outlived it, was SIGKILLed only after a grace (the shell
/// tool's, inside the worker's `--kill-grace` for the agent), and once the
/// grace is over nothing runs under the workspace root and the workspace is
/// gone.
#[tokio::test(flavor = "multi_thread")]
async fn d8_cancel_of_a_task_that_ignores_sigterm_is_killed_after_the_grace_and_ends_cancelled() {
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("term");
    let ignorer = "sleep 300";
    let command = format!(
        "(trap '' TERM; exec {ignorer}) & trap 'echo TERM >> {}' TERM; while :; do sleep 0.1; done",
        mark.display()
    );
    let llm = FakeLlm::start(vec![Turn::tool_call(
        "shell",
        json!({"command": command, "timeout_ms": 600000}),
    )])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let client = cluster.client();
    let kill_grace = Duration::from_secs(3);
    let root = cluster
        .start_worker(
            "d8",
            &[
                "--kill-grace",
                "3s",
                "--sandbox-mount",
                &crate::suite::common::shared_with_tasks(marks.path()),
            ],
        )
        .await
        .unwrap()
        .workspace_root
        .clone();
    let created = client.create_run(&sleeping_run("d8")).await.unwrap();
    wait_in_progress(&cluster, &client, &created.run_id).await;
    wait_for_process(&root, ignorer).await;
    let ignorer_alive = || {
        processes_under(&root)
            .iter()
            .any(|(_, cmd)| cmd.starts_with(ignorer))
    };

    let cancelled_at = Instant::now();
    client.cancel_run(&created.run_id).await.unwrap();
    let mut term_at = None;
    let mut ignorer_seen_after_term = None;
    while !processes_under(&root).is_empty() {
        assert!(
            cancelled_at.elapsed() < kill_grace + Duration::from_secs(2),
            "the task still runs {:?} after the cancel (kill grace {kill_grace:?}): {:?}",
            cancelled_at.elapsed(),
            processes_under(&root)
        );
        if term_at.is_none() && mark.exists() {
            term_at = Some(Instant::now());
        }
        if let Some(term) = term_at
            && ignorer_alive()
        {
            ignorer_seen_after_term = Some(term.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_gone = cancelled_at.elapsed();
    let term_at = term_at
        .or_else(|| mark.exists().then(Instant::now))
        .expect("the task never got SIGTERM: it was killed without warning");
    let term_after = term_at.duration_since(cancelled_at);
    let outlived = ignorer_seen_after_term.expect("SIGTERM killed the process that ignores it");
    // SIGKILL only after the grace, not with the SIGTERM.
    assert!(
        outlived >= KILL_GRACE.saturating_sub(Duration::from_millis(200)),
        "the task was SIGKILLed {outlived:?} after SIGTERM (grace {KILL_GRACE:?})"
    );

    let run = cluster
        .wait_finished(&created.run_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Cancelled, "{}", status_text(&run));
    assert_nothing_under(&root, Duration::from_secs(1), "cancel").await;
    wait_no_workspaces(&root).await;
    let term_lines = std::fs::read_to_string(&mark).unwrap();
    assert!(term_lines.starts_with("TERM"), "{term_lines}");
    eprintln!(
        "D8: SIGTERM {term_after:?} after cancel; the TERM-ignoring child lived {outlived:?} \
         past it; nothing left {all_gone:?} after cancel (kill grace {kill_grace:?})"
    );
}

/// D9: SIGTERM to a worker with a running task drains it: the server sees it
/// draining and gives it no new work (a second run for it stays `QUEUED`),
/// its heartbeats keep renewing the lease so the run is not ended by it even
/// though the drain outlasts the lease, the task finishes (`SUCCEEDED`), the
/// worker exits 0 and leaves nothing behind, and the queued run is not lost:
/// it runs on the next worker with the same id.
#[tokio::test(flavor = "multi_thread")]
async fn d9_sigterm_drains_the_worker_past_its_lease_and_loses_no_run() {
    // Longer than the lease after the SIGTERM.
    let tool = "sleep 12";
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": format!("{tool}; echo drained"), "timeout_ms": 600000}),
        ),
        Turn::text("first run done while draining"),
        Turn::text("second run done on the next worker"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let client = cluster.client();
    let root = cluster
        .start_worker("d9", &["--kill-grace", "2s"])
        .await
        .unwrap()
        .workspace_root
        .clone();
    let first = client.create_run(&sleeping_run("d9")).await.unwrap();
    wait_in_progress(&cluster, &client, &first.run_id).await;
    wait_for_process(&root, tool).await;
    let lease_before = lease_of(&cluster, "d9", &first.run_id)
        .await
        .expect("the worker holds the run's lease");

    cluster
        .worker("d9")
        .unwrap()
        .signal(Signal::SIGTERM)
        .unwrap();
    let sigterm_at = Instant::now();
    eventually_ok(
        "the server to see the worker draining",
        Duration::from_secs(10),
        async || {
            let workers = get_json(&cluster, "/api/v1/workers").await;
            let draining = workers["workers"]
                .as_array()
                .and_then(|ws| ws.iter().find(|w| w["worker_id"] == "d9"))
                .is_some_and(|w| w["draining"] == true);
            if draining { Ok(()) } else { Err(workers) }
        },
    )
    .await;
    let second = client.create_run(&sleeping_run("d9")).await.unwrap();

    // While it drains: the second run waits, the first keeps its lease.
    let mut expiries = vec![lease_before["expires_at"].clone()];
    let first_done = loop {
        let run = client.get_run(&first.run_id).await.unwrap();
        if run.state.is_terminal() {
            break run;
        }
        assert_eq!(run.state, RunState::InProgress, "{}", status_text(&run));
        let queued = client.get_run(&second.run_id).await.unwrap();
        assert_eq!(
            queued.state,
            RunState::Queued,
            "a draining worker took new work: {}",
            status_text(&queued)
        );
        if let Some(lease) = lease_of(&cluster, "d9", &first.run_id).await
            && expiries.last() != Some(&lease["expires_at"])
        {
            expiries.push(lease["expires_at"].clone());
        }
        assert!(
            sigterm_at.elapsed() < Duration::from_secs(60),
            "the drain never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained_in = sigterm_at.elapsed();
    assert_eq!(
        first_done.state,
        RunState::Succeeded,
        "{}",
        status_text(&first_done)
    );
    assert!(
        drained_in > LEASE,
        "the drain took {drained_in:?}, no longer than the lease {LEASE:?}: the test proves nothing"
    );
    // Renewed by heartbeats while draining (every 2 s over ≥ 6 s).
    assert!(
        expiries.len() >= 3,
        "the lease was not renewed while draining: {expiries:?}"
    );

    let status = tokio::time::timeout(
        Duration::from_secs(30),
        cluster.worker("d9").unwrap().child.wait(),
    )
    .await
    .expect("the drained worker did not exit")
    .unwrap();
    let exited_in = sigterm_at.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "the drained worker exited with {status}"
    );
    assert_nothing_under(&root, Duration::from_secs(1), "the drain").await;
    wait_no_workspaces(&root).await;
    let queued = client.get_run(&second.run_id).await.unwrap();
    assert_eq!(queued.state, RunState::Queued, "{}", status_text(&queued));

    // Not lost: the next worker with that id runs it.
    cluster.start_worker("d9", &[]).await.unwrap();
    let second_done = cluster
        .wait_finished(&second.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        second_done.state,
        RunState::Succeeded,
        "{}",
        status_text(&second_done)
    );
    assert_eq!(llm.remaining(), 0);
    assert_nothing_under(&root, Duration::from_secs(5), "the second run").await;
    wait_no_workspaces(&root).await;
    eprintln!(
        "D9: drained in {drained_in:?} (lease {LEASE:?}, {} lease expiries seen), \
         worker exited 0 after {exited_in:?}; queued run SUCCEEDED on the next worker",
        expiries.len()
    );
}
