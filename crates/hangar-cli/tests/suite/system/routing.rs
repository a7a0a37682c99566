//! Routing by exact worker host, queueing for absent hosts, and capacity.

use crate::suite::common::{cluster_with, dir_entries};
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use std::time::Duration;

fn for_host(prompt: &str, host: &str) -> RunAgentRequest {
    RunAgentRequest {
        prompt: Some(prompt.to_owned()),
        config: Some(AgentConfig {
            worker_host: Some(host.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_go_only_to_their_host_and_wait_for_an_absent_one() {
    let llm = FakeLlm::start(vec![Turn::text("a1"), Turn::text("a2"), Turn::text("c1")]).await;
    let mut cluster = cluster_with(&llm).await;
    let root_a = cluster
        .start_worker("a", &["--no-cleanup"])
        .await
        .unwrap()
        .workspace_root
        .clone();
    let root_b = cluster
        .start_worker("b", &["--no-cleanup"])
        .await
        .unwrap()
        .workspace_root
        .clone();
    let client = cluster.client();

    for i in 0..2 {
        let run = client
            .create_run(&for_host(&format!("for a #{i}"), "a"))
            .await
            .unwrap();
        let done = cluster
            .wait_finished(&run.run_id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    }
    assert_eq!(dir_entries(&root_a).len(), 2, "both runs executed on a");
    assert!(
        dir_entries(&root_b).is_empty(),
        "worker b ran something: {:?}",
        dir_entries(&root_b)
    );

    // Host `c` is absent: the run waits, untouched by a and b.
    let queued = client.create_run(&for_host("for c", "c")).await.unwrap();
    assert!(queued.at_capacity);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = client.get_run(&queued.run_id).await.unwrap();
    assert_eq!(still.state, RunState::Queued);
    assert!(dir_entries(&root_b).is_empty());
    assert_eq!(dir_entries(&root_a).len(), 2);

    // As soon as c connects, it runs there.
    let root_c = cluster
        .start_worker("c", &["--no-cleanup"])
        .await
        .unwrap()
        .workspace_root
        .clone();
    let done = cluster
        .wait_finished(&queued.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    assert_eq!(dir_entries(&root_c).len(), 1);
    // Host matching is exact: `A` is not `a`.
    let upper = client.create_run(&for_host("for A", "A")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.get_run(&upper.run_id).await.unwrap().state,
        RunState::Queued
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_at_capacity_gets_no_more() {
    let llm = FakeLlm::start(vec![
        Turn::delayed(Duration::from_secs(2), Turn::text("first")),
        Turn::text("second"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    cluster
        .start_worker("solo", &["--max-concurrent-tasks", "1"])
        .await
        .unwrap();
    let client = cluster.client();

    let first = client.create_run(&for_host("first", "solo")).await.unwrap();
    cluster
        .wait_run(&first.run_id, Duration::from_secs(30), |r| {
            r.state == RunState::InProgress
        })
        .await
        .unwrap();
    let second = client
        .create_run(&for_host("second", "solo"))
        .await
        .unwrap();
    assert!(second.at_capacity, "the only worker is busy");
    // While the first runs, the second is not assigned.
    let mut polls = 0;
    loop {
        let a = client.get_run(&first.run_id).await.unwrap();
        let b = client.get_run(&second.run_id).await.unwrap();
        if a.state.is_terminal() {
            break;
        }
        assert_eq!(
            b.state,
            RunState::Queued,
            "second run left the queue while the worker was full"
        );
        polls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        polls > 5,
        "the first run finished too fast to observe capacity ({polls} polls)"
    );
    let done = cluster
        .wait_finished(&second.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
}
