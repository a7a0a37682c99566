//! Two `hangar server` replicas on one PostgreSQL database behave as one.

use crate::suite::common::{hangar_bin, processes_under};
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use hangar_testkit::poll::{eventually_ok, until_ok};
use serde_json::json;
use std::time::Duration;

/// A fresh schema in the test database, dropped at the end.
pub(crate) struct Schema {
    pub(crate) url: String,
    pub(crate) name: String,
}

impl Schema {
    pub(crate) fn new() -> Self {
        let url = std::env::var("HANGAR_TEST_DATABASE_URL").unwrap_or_else(|_| {
            panic!("HANGAR_TEST_DATABASE_URL is not set: run `eval \"$(scripts/pg-test-env)\"` or scripts/test")
        });
        Schema {
            url,
            name: format!("hangar_rep_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    pub(crate) async fn drop_it(&self) {
        let store = hangar_store::PostgresStore::connect(&self.url)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        )))
        .execute(store.pool())
        .await
        .unwrap();
    }
}

fn for_host(prompt: &str, host: &str) -> RunAgentRequest {
    RunAgentRequest {
        prompt: Some(prompt.into()),
        config: Some(AgentConfig {
            worker_host: Some(host.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_postgres_dispatch_and_cancel_across_each_other() {
    let schema = Schema::new();
    let llm = FakeLlm::start(vec![
        Turn::text("done on b"),
        Turn::tool_call(
            "shell",
            json!({"command": "sleep 300", "timeout_ms": 600000}),
        ),
    ])
    .await;
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    options.postgres = Some((schema.url.clone(), schema.name.clone()));
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    let url_b = cluster.start_replica("b").await.unwrap();
    let client_a = cluster.client();
    let client_b = hangar_client::Client::new(&url_b, cluster.api_key.clone()).unwrap();

    // A run created through A reaches a worker connected to B.
    cluster.start_worker_on(&url_b, "on-b", &[]).await.unwrap();
    // The worker registry is shared: B's worker is listed through A.
    let workers: serde_json::Value = client_a.get_json("/api/v1/workers").await.unwrap();
    let on_b = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker_id"] == "on-b")
        .unwrap_or_else(|| panic!("worker on-b (on replica B) not listed through A: {workers}"));
    assert_eq!(on_b["status"], "connected", "{on_b}");
    let run = client_a
        .create_run(&for_host("hello", "on-b"))
        .await
        .unwrap();
    let done = cluster
        .wait_finished(&run.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    assert_eq!(
        client_b.get_run(&run.run_id).await.unwrap().state,
        RunState::Succeeded
    );

    // A cancel through B reaches a worker connected to A.
    let root_a = cluster
        .start_worker_on(&cluster.url.clone(), "on-a", &["--kill-grace", "2s"])
        .await
        .unwrap();
    let long = client_b
        .create_run(&for_host("sleep", "on-a"))
        .await
        .unwrap();
    until_ok(
        "the tool to start on worker on-a",
        Duration::from_secs(30),
        || {
            let found = processes_under(&root_a);
            if found.iter().any(|(_, cmd)| cmd.starts_with("sleep 300")) {
                Ok(())
            } else {
                Err(found)
            }
        },
    )
    .await;
    // A viewer on B watches the run whose agent streams to A: it sees the
    // events committed through A live, then the end.
    let mut stream = client_b.run_events(&long.run_id, None, true).await.unwrap();
    let viewer = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(event) = stream.next().await.unwrap() {
            let done = event.event == "end";
            seen.push((event.event, event.data));
            if done {
                break;
            }
        }
        seen
    });
    // Cancel only once the tool call is committed: an event still in the
    // agent's spool when it is killed can be lost today (issue 10, item 6),
    // which is not what this test is about.
    eventually_ok(
        "the tool call to be committed",
        Duration::from_secs(30),
        async || {
            let events = client_b.transcript(&long.run_id).await.unwrap().events;
            let events = serde_json::to_string(&events).unwrap();
            if events.contains("tool_call") {
                Ok(())
            } else {
                Err(events)
            }
        },
    )
    .await;
    client_b.cancel_run(&long.run_id).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), viewer)
        .await
        .expect("the viewer on B never got the end of a run executing through A")
        .unwrap();
    assert!(
        seen.iter()
            .any(|(e, d)| e == "session" && d.contains("\"kind\":\"tool_call\"")),
        "{seen:?}"
    );
    let (last, data) = seen.last().unwrap();
    assert_eq!(last, "end", "{seen:?}");
    assert!(data.contains("CANCELLED"), "{data}");
    let ended = cluster
        .wait_finished(&long.run_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(ended.state, RunState::Cancelled);
    assert!(
        processes_under(&root_a).is_empty(),
        "{:?}",
        processes_under(&root_a)
    );

    drop(cluster);
    schema.drop_it().await;
}
