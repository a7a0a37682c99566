//! Dispatch and run-overhead benchmarks (not tests): prints figures.
//!
//! `cargo bench -p hangar-cli --bench dispatch` (release build). Measures, on
//! one in-process server with SQLite:
//!
//! 1. **dispatch latency**: `POST /agent/runs` sent → `task_assignment`
//!    received by a connected worker socket, over `HANGAR_BENCH_RUNS` runs
//!    (default 2,000). Baseline in the same run: the create call alone.
//! 2. **one-turn run overhead**: create → `SUCCEEDED` for a run whose model
//!    answers at once (fake LLM), on the direct backend of a `hangar worker`
//!    process with the real agent process, over `HANGAR_BENCH_OVERHEAD_RUNS`
//!    runs (default 100).
//! 3. **throughput**: `HANGAR_BENCH_THROUGHPUT_RUNS` runs (default 2,000)
//!    created by 8 concurrent clients and completed at once by 8 protocol
//!    workers, created → `SUCCEEDED` in the store.
//!
//! The whole benchmark runs four times, in child processes, alternating
//! metrics off (no exporter: OpenTelemetry's no-op meter) and on (the
//! Prometheus exporter, scraped every second, and the store-backed gauges
//! refreshed), and prints the ratio of the means (target: within 5%).
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
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

/// A protocol-level worker: connected and greeted as `id`, unlimited.
async fn protocol_worker(server: &Server, key: &str, id: &str) -> hangar_client::WebSocket {
    let url = hangar_client::parse_server_url(server.url())
        .unwrap()
        .join(&format!("api/v1/selfhosted/worker/ws?worker_id={id}"))
        .unwrap();
    let mut ws = hangar_client::connect_websocket(&url, key).await.unwrap();
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
    ws
}

/// What a worker that finishes at once answers to an assignment.
fn claimed_and_completed(
    a: &hangar_protocol::worker::TaskAssignment,
    worker_id: &str,
) -> [Message; 2] {
    [
        WorkerToServer::TaskClaimed(TaskClaimed {
            task_id: a.task_id.clone(),
            worker_id: worker_id.into(),
            execution_id: Some(a.execution_id.clone()),
        }),
        WorkerToServer::TaskCompleted(TaskCompleted {
            task_id: a.task_id.clone(),
            message: "ok".into(),
            task_state: None,
            execution_id: Some(a.execution_id.clone()),
        }),
    ]
    .map(|m| Message::Text(m.to_envelope().to_text().into()))
}

async fn dispatch_latency(server: &Server, runs: usize) -> (f64, f64) {
    let key = server.issue_local_key("bench").await.unwrap();
    let client = Client::new(server.url(), key.clone()).unwrap();
    let mut ws = protocol_worker(server, &key, "bench-worker").await;
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
        for msg in claimed_and_completed(&assignment, "bench-worker") {
            ws.send(msg).await.unwrap();
        }
    }
    println!(
        "{}",
        Stats::new(create).line("create run (POST → 200), baseline")
    );
    let dispatch = Stats::new(dispatch);
    println!(
        "{}",
        dispatch.line("dispatch latency (POST sent → assignment)")
    );
    let _ = ws.close(None).await;
    (ms(dispatch.pct(0.5)), ms(dispatch.pct(0.99)))
}

async fn run_overhead(server: &Server, llm: &FakeLlm, runs: usize, dir: &std::path::Path) {
    let key = server.issue_local_key("bench-worker-direct").await.unwrap();
    // The worker as deployed: its own `hangar worker` process (a small one
    // to fork the sandbox from), not a library inside this benchmark.
    let config = dir.join("worker.yaml");
    std::fs::write(
        &config,
        format!(
            "backend:\n  direct:\n    workspace_root: {}\n",
            dir.join("workspaces").display()
        ),
    )
    .unwrap();
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"))
        .args([
            "worker",
            "--worker-id",
            "direct-bench",
            "--backend",
            "direct",
        ])
        .args(["--max-concurrent-tasks", "1", "--log-level", "warn"])
        .arg("--server-url")
        .arg(server.url())
        .arg("--config-file")
        .arg(&config)
        .env("HANGAR_API_KEY", &key)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
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
    // SIGTERM: the worker drains (nothing runs) and exits.
    let pid = nix::unistd::Pid::from_raw(worker.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
}

/// Runs runs created by `clients` concurrent clients through `workers`
/// protocol workers that complete each assignment at once; answers runs/s
/// from the first create until the store holds every one `SUCCEEDED`.
async fn throughput(server: &Server, runs: usize, workers: usize, clients: usize) -> f64 {
    let key = server.issue_local_key("bench-throughput").await.unwrap();
    let client = Client::new(server.url(), key.clone()).unwrap();
    let mut handles = Vec::new();
    for w in 0..workers {
        let id = format!("tp-{w}");
        let mut ws = protocol_worker(server, &key, &id).await;
        handles.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(Some(ServerToWorker::TaskAssignment(a))) =
                    ServerToWorker::from_envelope(Envelope::parse(&text).unwrap())
                else {
                    continue;
                };
                for reply in claimed_and_completed(&a, &id) {
                    if ws.send(reply).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    loop {
        let list: serde_json::Value = client.get_json("api/v1/workers").await.unwrap();
        let listed = list["workers"].as_array().map_or(0, |ws| {
            ws.iter()
                .filter(|w| {
                    w["worker_id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("tp-"))
                })
                .count()
        });
        if listed == workers {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let store = server.state().store.clone();
    let succeeded = |counts: Vec<(String, i64)>| {
        counts
            .into_iter()
            .find(|(s, _)| s == "SUCCEEDED")
            .map_or(0, |c| c.1)
    };
    // Runs of the earlier phase may still be ending: count from a still store.
    settled(store.as_ref()).await;
    let before = succeeded(store.run_state_counts().await.unwrap());
    let writes_before = store.write_counts();
    let request = RunAgentRequest {
        prompt: Some("bench".into()),
        ..Default::default()
    };
    let t0 = Instant::now();
    let per_client = runs / clients;
    let creators: Vec<_> = (0..clients)
        .map(|_| {
            let client = client.clone();
            let request = request.clone();
            tokio::spawn(async move {
                for _ in 0..per_client {
                    client.create_run(&request).await.unwrap();
                }
            })
        })
        .collect();
    for c in creators {
        c.await.unwrap();
    }
    let want = before + (per_client * clients) as i64;
    while succeeded(store.run_state_counts().await.unwrap()) < want {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = (per_client * clients) as f64 / t0.elapsed().as_secs_f64();
    settled(store.as_ref()).await;
    let written = store.write_counts();
    let per_run = |n: u64| n as f64 / (per_client * clients) as f64;
    println!(
        "{:<44} {:>8.2} writes/run, {:.2} commits/run (group commit: {:.1} writes per commit)",
        "store writes (create → SUCCEEDED)",
        per_run(written.writes - writes_before.writes),
        per_run(written.commits - writes_before.commits),
        (written.writes - writes_before.writes) as f64
            / (written.commits - writes_before.commits).max(1) as f64,
    );
    for h in handles {
        h.abort();
    }
    rate
}

/// Waits until no run is queued or running.
async fn settled(store: &dyn hangar_store::Store) {
    loop {
        let live: i64 = store
            .run_state_counts()
            .await
            .unwrap()
            .into_iter()
            .filter(|(s, _)| !RunState::parse(s).is_some_and(|s| s.is_terminal()))
            .map(|(_, n)| n)
            .sum();
        if live == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One measurement in this process, with metrics `on` or off.
fn measure(on: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let telemetry = on.then(|| {
            let mut settings = hangar_telemetry::Settings::new("hangar-bench");
            settings.prometheus = true;
            hangar_telemetry::Telemetry::init(settings).unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        let llm = FakeLlm::start(vec![]).await;
        let server = start_server(dir.path(), &llm).await;
        // A scraper as Prometheus would be, once a second.
        let stop = tokio_util::sync::CancellationToken::new();
        let scraping = match &telemetry {
            Some(t) => {
                let endpoint = hangar_telemetry::PrometheusEndpoint {
                    addr: "127.0.0.1:0".parse().unwrap(),
                    bearer_token: None,
                };
                let (addr, _) = t.serve_prometheus(&endpoint, stop.clone()).await.unwrap();
                let stop = stop.clone();
                Some(tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    while !stop.is_cancelled() {
                        let text = http
                            .get(format!("http://{addr}/metrics"))
                            .send()
                            .await
                            .unwrap()
                            .text()
                            .await
                            .unwrap();
                        assert!(text.contains("hangar_server_runs_created_total"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }))
            }
            None => None,
        };
        println!(
            "metrics {} (SQLite, WAL, synchronous=FULL; {} CPUs)",
            if on {
                "ON: Prometheus exporter, scraped every second"
            } else {
                "OFF: no exporter"
            },
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        let (p50, p99) = dispatch_latency(&server, env_usize("HANGAR_BENCH_RUNS", 2000)).await;
        let rate = throughput(
            &server,
            env_usize("HANGAR_BENCH_THROUGHPUT_RUNS", 2000),
            8,
            8,
        )
        .await;
        println!(
            "{:<44} {rate:>8.0} runs/s",
            "throughput (8 clients, 8 workers)"
        );
        run_overhead(
            &server,
            &llm,
            env_usize("HANGAR_BENCH_OVERHEAD_RUNS", 100),
            dir.path(),
        )
        .await;
        println!("RESULT p50_ms={p50:.4} p99_ms={p99:.4} throughput={rate:.1}");
        stop.cancel();
        if let Some(s) = scraping {
            let _ = s.await;
        }
        server.shutdown().await;
        if let Some(t) = telemetry {
            t.shutdown().await;
        }
    });
}

fn main() {
    // One process per mode: OpenTelemetry's global meter is set once.
    match std::env::var("HANGAR_BENCH_METRICS").as_deref() {
        Ok("on") => return measure(true),
        Ok("off") => return measure(false),
        _ => {}
    }
    let exe = std::env::current_exe().unwrap();
    // Alternating, twice each, so neither mode gains from going first.
    let mut results: [Vec<std::collections::BTreeMap<String, f64>>; 2] = Default::default();
    for (i, mode) in ["off", "on", "off", "on"].into_iter().enumerate() {
        let out = std::process::Command::new(&exe)
            .env("HANGAR_BENCH_METRICS", mode)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "the {mode} run failed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut figures = std::collections::BTreeMap::new();
        for line in text.lines() {
            match line.strip_prefix("RESULT ") {
                Some(r) => {
                    for kv in r.split_whitespace() {
                        if let Some((k, v)) = kv.split_once('=') {
                            figures.insert(k.to_owned(), v.parse::<f64>().unwrap());
                        }
                    }
                }
                None => println!("{line}"),
            }
        }
        println!();
        results[i % 2].push(figures);
    }
    let mean = |runs: &[std::collections::BTreeMap<String, f64>], key: &str| {
        runs.iter().map(|r| r[key]).sum::<f64>() / runs.len() as f64
    };
    println!("metrics overhead (mean of two runs each, on / off; target within 5%):");
    for (key, what) in [
        ("p50_ms", "dispatch p50"),
        ("p99_ms", "dispatch p99"),
        ("throughput", "throughput"),
    ] {
        let (off, on) = (mean(&results[0], key), mean(&results[1], key));
        println!(
            "  {what:<14} off={off:>10.3}  on={on:>10.3}  ratio={:.3}",
            on / off
        );
    }
}
