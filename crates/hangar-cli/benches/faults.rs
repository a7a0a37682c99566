//! Fault detection benchmark (not a test): prints, over many trials, how long
//! it takes from a fault to the run being ended by its expired lease, against
//! the configured lease, and counts runs lost or reported twice.
//!
//! `cargo bench -p hangar-cli --bench faults`. Real `hangar server` and
//! `hangar worker` processes (direct backend, real agent, fake LLM) with a
//! lease of `HANGAR_BENCH_LEASE_MS` (default 3000) and heartbeats of a third
//! of it, `HANGAR_BENCH_FAULT_TRIALS` trials per fault (default 10):
//!
//! 1. **worker kill**: `kill -9` of the worker mid-task;
//! 2. **worker freeze**: `SIGSTOP` of the worker mid-task (thawed afterwards);
//! 3. **replica death**: `kill -9` of the replica holding the worker's
//!    connection together with the worker, detected by the surviving replica
//!    (PostgreSQL: needs `HANGAR_TEST_DATABASE_URL`, as `scripts/test` sets).
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use nix::sys::signal::Signal;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    WorkerKill,
    WorkerFreeze,
    ReplicaDeath,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::WorkerKill => "worker kill -9",
            Fault::WorkerFreeze => "worker SIGSTOP",
            Fault::ReplicaDeath => "replica + worker kill -9",
        }
    }
}

struct Outcome {
    detections: Vec<Duration>,
    lost: usize,
    duplicated: usize,
    wrong_state: usize,
}

fn hangar_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hangar"))
}

async fn trial_set(fault: Fault, trials: usize, lease: Duration) -> Option<Outcome> {
    let turns = (0..trials)
        .map(|_| {
            Turn::tool_call(
                "shell",
                json!({"command": "sleep 300", "timeout_ms": 600000}),
            )
        })
        .collect();
    let llm = FakeLlm::start(turns).await;
    let mut options = ClusterOptions {
        heartbeat: lease / 3,
        lost_timeout: lease,
        ..ClusterOptions::default()
    }
    .with_fake_llm(&llm.base_url());
    let schema = format!("hangar_faultbench_{}", std::process::id());
    if fault == Fault::ReplicaDeath {
        let Ok(url) = std::env::var("HANGAR_TEST_DATABASE_URL") else {
            println!(
                "{:<26} skipped: set HANGAR_TEST_DATABASE_URL (PostgreSQL)",
                fault.name()
            );
            return None;
        };
        options.postgres = Some((url, schema.clone()));
    }
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    let client = cluster.client();
    let lease_arg = format!("{}ms", lease.as_millis());
    let hb_arg = format!("{}ms", (lease / 3).as_millis());
    let mut out = Outcome {
        detections: Vec::new(),
        lost: 0,
        duplicated: 0,
        wrong_state: 0,
    };
    for i in 0..trials {
        let id = format!("w{i}");
        let args = [
            "--kill-grace",
            "1s",
            "--heartbeat-interval",
            &hb_arg,
            "--read-timeout",
            &lease_arg,
            "--fence-after",
            &lease_arg,
        ];
        let replica = format!("r{i}");
        if fault == Fault::ReplicaDeath {
            let url = cluster.start_replica(&replica).await.unwrap();
            cluster.start_worker_on(&url, &id, &args).await.unwrap();
        } else {
            cluster.start_worker(&id, &args).await.unwrap();
        }
        let run = client
            .create_run(&RunAgentRequest {
                prompt: Some("sleep".into()),
                config: Some(AgentConfig {
                    worker_host: Some(id.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        cluster
            .wait_run(&run.run_id, Duration::from_secs(30), |r| {
                r.state == RunState::InProgress
            })
            .await
            .unwrap();
        // Let the tool start and a renewal or two pass.
        tokio::time::sleep(lease / 2).await;
        let worker = cluster.worker(&id).unwrap();
        match fault {
            Fault::WorkerKill => worker.signal(Signal::SIGKILL).unwrap(),
            Fault::WorkerFreeze => worker.signal(Signal::SIGSTOP).unwrap(),
            Fault::ReplicaDeath => {
                worker.signal(Signal::SIGKILL).unwrap();
                cluster.kill_replica(&replica).await.unwrap();
            }
        }
        let at = Instant::now();
        match cluster
            .wait_run(&run.run_id, lease * 4, |r| r.state.is_terminal())
            .await
        {
            Ok(ended) => {
                out.detections.push(at.elapsed());
                if ended.state != RunState::Error {
                    out.wrong_state += 1;
                }
                // Reported once: nothing changes it afterwards.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let again = client.get_run(&run.run_id).await.unwrap();
                if again.state != ended.state || again.status_message != ended.status_message {
                    out.duplicated += 1;
                }
            }
            Err(_) => out.lost += 1,
        }
        if fault == Fault::WorkerFreeze {
            let worker = cluster.worker(&id).unwrap();
            worker.signal(Signal::SIGCONT).unwrap();
            worker.signal(Signal::SIGKILL).unwrap();
        }
    }
    drop(cluster);
    if fault == Fault::ReplicaDeath
        && let Ok(url) = std::env::var("HANGAR_TEST_DATABASE_URL")
    {
        let store = hangar_store::PostgresStore::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(store.pool())
        .await
        .unwrap();
    }
    Some(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let trials = env_u64("HANGAR_BENCH_FAULT_TRIALS", 10) as usize;
    let lease = Duration::from_millis(env_u64("HANGAR_BENCH_LEASE_MS", 3000));
    println!(
        "hangar fault detection: fault -> run ended by its expired lease; lease {} ms, \
         heartbeat {} ms, sweep tick {} ms, {trials} trials each",
        lease.as_millis(),
        (lease / 3).as_millis(),
        (lease / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1))
            .as_millis()
    );
    runtime.block_on(async {
        for fault in [Fault::WorkerKill, Fault::WorkerFreeze, Fault::ReplicaDeath] {
            let Some(mut out) = trial_set(fault, trials, lease).await else {
                continue;
            };
            out.detections.sort();
            let p50 = out
                .detections
                .get(out.detections.len() / 2)
                .copied()
                .unwrap_or_default();
            let max = out.detections.last().copied().unwrap_or_default();
            println!(
                "{:<26} n={:<3} p50={:>7.0} ms  max={:>7.0} ms  (max - lease = {:>+6.0} ms)  \
                 lost={} duplicated={} not-ERROR={}",
                fault.name(),
                out.detections.len(),
                ms(p50),
                ms(max),
                ms(max) - ms(lease),
                out.lost,
                out.duplicated,
                out.wrong_state
            );
        }
    });
}
