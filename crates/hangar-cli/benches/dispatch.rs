//! Dispatch and run-overhead benchmarks (not tests): prints figures.
//!
//! `cargo bench -p hangar-cli --bench dispatch` (release build). Measures, on
//! one in-process server with SQLite:
//!
//! 1. **dispatch latency**: `POST /agent/runs` sent → `task_assignment`
//!    received by a connected worker socket, over `HANGAR_BENCH_RUNS` runs
//!    (default 2,000). Baseline in the same run: the create call alone.
//! 2. **one-turn run overhead**: create → `SUCCEEDED` for a run whose model
//!    answers at once (fake LLM), on the direct backend with the real agent
//!    process, over `HANGAR_BENCH_OVERHEAD_RUNS` runs (default 100).

// A benchmark aborts on any failure; unwrapping says where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::{SinkExt, StreamExt};
use hangar_client::Client;
use hangar_protocol::worker::{
    ServerToWorker, TaskClaimed, TaskCompleted, WorkerHello, WorkerToServer,
};
use hangar_protocol::{AgentConfig, Envelope, RunAgentRequest, RunState};
use hangar_server::{Server, ServerConfig};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Stats { samples }
    }
    fn pct(&self, p: f64) -> Duration {
        let idx = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[idx.min(self.samples.len() - 1)]
    }
    fn line(&self, what: &str) -> String {
        format!(
            "{what:<44} n={:<5} p50={:>8.3} ms  p90={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
            self.samples.len(),
            ms(self.pct(0.5)),
            ms(self.pct(0.9)),
            ms(self.pct(0.99)),
            ms(*self.samples.last().unwrap_or(&Duration::ZERO)),
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn start_server(dir: &std::path::Path, llm: &FakeLlm) -> Server {
    let mut providers = hangar_llm::ProvidersConfig::new();
    let mut fake = hangar_llm::ProviderConfig::new(hangar_llm::ProviderKind::Openai);
    fake.base_url = Some(llm.base_url());
    fake.api_key = Some("bench".into());
    fake.default_model = Some("bench-model".into());
    providers.insert("fake".into(), fake);
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        cli_config_path: Some(std::path::PathBuf::new()),
        providers_from_env: false,
        providers,
        // Measures dispatch, not the flood guard: one key creates runs as
        // fast as the server takes them.
        rate_limit: hangar_server::rate_limit::RateLimitConfig {
            requests_per_second: 0,
            burst: 0,
            team_requests_per_second: 0,
            team_burst: 0,
        },
        ..ServerConfig::default()
    };
    Server::start(config).await.expect("server")
}

async fn dispatch_latency(server: &Server, runs: usize) {
    let key = server.issue_local_key("bench").await.unwrap();
    let client = Client::new(server.url(), key.clone()).unwrap();
    let url = hangar_client::parse_server_url(server.url())
        .unwrap()
        .join("api/v1/selfhosted/worker/ws?worker_id=bench-worker")
        .unwrap();
    let mut ws = hangar_client::connect_websocket(&url, &key).await.unwrap();
    let hello = WorkerToServer::WorkerHello(WorkerHello {
        version: "bench".into(),
        backend: "none".into(),
        max_concurrent_tasks: 0,
        labels: Default::default(),
        running: vec![],
    });
    ws.send(Message::Text(hello.to_envelope().to_text().into()))
        .await
        .unwrap();
    // Wait until the server lists the worker.
    loop {
        let list: serde_json::Value = client.get_json("api/v1/workers").await.unwrap();
        if list["workers"].as_array().is_some_and(|w| !w.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let request = RunAgentRequest {
        prompt: Some("bench".into()),
        config: Some(AgentConfig {
            worker_host: Some("bench-worker".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let warmup = runs / 10;
    let mut dispatch = Vec::with_capacity(runs);
    let mut create = Vec::with_capacity(runs);
    for i in 0..runs + warmup {
        let t0 = Instant::now();
        let created = client.create_run(&request).await.unwrap();
        let t_created = t0.elapsed();
        let assignment = loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(text) => {
                    if let Ok(Some(ServerToWorker::TaskAssignment(a))) =
                        ServerToWorker::from_envelope(Envelope::parse(&text).unwrap())
                    {
                        break a;
                    }
                }
                _ => continue,
            }
        };
        let t_assigned = t0.elapsed();
        assert_eq!(assignment.task_id, created.run_id);
        if i >= warmup {
            dispatch.push(t_assigned);
            create.push(t_created);
        }
        for msg in [
            WorkerToServer::TaskClaimed(TaskClaimed {
                task_id: assignment.task_id.clone(),
                worker_id: "bench-worker".into(),
                execution_id: Some(assignment.execution_id.clone()),
            }),
            WorkerToServer::TaskCompleted(TaskCompleted {
                task_id: assignment.task_id.clone(),
                message: "ok".into(),
                task_state: None,
                execution_id: Some(assignment.execution_id.clone()),
            }),
        ] {
            ws.send(Message::Text(msg.to_envelope().to_text().into()))
                .await
                .unwrap();
        }
    }
    println!(
        "{}",
        Stats::new(create).line("create run (POST → 200), baseline")
    );
    println!(
        "{}",
        Stats::new(dispatch).line("dispatch latency (POST sent → assignment)")
    );
    let _ = ws.close(None).await;
}

async fn run_overhead(server: &Server, llm: &FakeLlm, runs: usize, dir: &std::path::Path) {
    let key = server.issue_local_key("bench-worker-direct").await.unwrap();
    let worker_args = hangar_worker::WorkerArgs {
        worker_id: Some("direct-bench".into()),
        api_key: Some(key.clone()),
        server_url: Some(server.url().to_owned()),
        backend: Some(hangar_worker::BackendKind::Direct),
        max_concurrent_tasks: Some(1),
        workspace_root: Some(dir.join("workspaces")),
        agent_path: Some(env!("CARGO_BIN_EXE_hangar").into()),
        ..Default::default()
    };
    let worker = hangar_worker::Worker::new(worker_args.resolve().unwrap()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let hard = tokio_util::sync::CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(stop.clone(), hard.clone()));
    let client = Client::new(server.url(), key).unwrap();
    loop {
        let list: serde_json::Value = client.get_json("api/v1/workers").await.unwrap();
        if list["workers"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["worker_id"] == "direct-bench"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let request = RunAgentRequest {
        prompt: Some("answer at once".into()),
        config: Some(AgentConfig {
            worker_host: Some("direct-bench".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let warmup = 3;
    let mut to_succeeded = Vec::new();
    let mut to_slot_free = Vec::new();
    for i in 0..runs + warmup {
        llm.push([Turn::text("done")]);
        let t0 = Instant::now();
        let created = client.create_run(&request).await.unwrap();
        let mut succeeded = None;
        loop {
            let run = client.get_run(&created.run_id).await.unwrap();
            if run.state == RunState::Succeeded && succeeded.is_none() {
                succeeded = Some(t0.elapsed());
            }
            if run.state.is_terminal() && run.is_sandbox_running == Some(false) {
                assert_eq!(run.state, RunState::Succeeded, "{:?}", run.status_message);
                if i >= warmup {
                    to_succeeded.push(succeeded.unwrap_or(t0.elapsed()));
                    to_slot_free.push(t0.elapsed());
                }
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    println!(
        "{}",
        Stats::new(to_succeeded).line("one-turn run: create → SUCCEEDED")
    );
    println!(
        "{}",
        Stats::new(to_slot_free).line("one-turn run: create → sandbox gone")
    );
    stop.cancel();
    let _ = worker_task.await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let llm = FakeLlm::start(vec![]).await;
        let server = start_server(dir.path(), &llm).await;
        println!(
            "hangar dispatch benchmark (SQLite, WAL, synchronous=FULL; {} CPUs)",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        dispatch_latency(&server, env_usize("HANGAR_BENCH_RUNS", 2000)).await;
        run_overhead(
            &server,
            &llm,
            env_usize("HANGAR_BENCH_OVERHEAD_RUNS", 100),
            dir.path(),
        )
        .await;
        server.shutdown().await;
    });
}
