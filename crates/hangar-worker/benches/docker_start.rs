//! Docker backend start latency (TESTING.md benchmarks): assignment → agent
//! process running in its container, against `docker run --rm IMAGE true`
//! measured in the same run. Target: p50 ≤ baseline + 150 ms.
//!
//! `cargo bench -p hangar-worker --bench docker_start` (needs a Docker engine;
//! builds the Debian base image on first use). `SAMPLES=N` sets the count.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hangar_protocol::Timestamp;
use hangar_protocol::worker::{Task, TaskAssignment, TaskDefinition, TaskOwner};
use hangar_worker::PullPolicy;
use hangar_worker::backends::docker::{Docker, DockerConfig};
use hangar_worker::backends::{Backend, TaskSpec};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const AGENT: &str = "#!/bin/sh\n: > \"/bench-out/$HANGAR_EXECUTION_ID\"\nexec sleep 30\n";

fn assignment(run: &str) -> TaskAssignment {
    TaskAssignment {
        task_id: run.into(),
        execution_id: run.into(),
        task: Task {
            id: run.into(),
            title: "bench".into(),
            task_definition: TaskDefinition {
                prompt: "bench".into(),
            },
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            owner: TaskOwner {
                kind: "TEAM".into(),
                id: 1,
            },
            agent_config_snapshot: None,
            agent_conversation_id: None,
        },
        docker_image: None,
        sidecar_image: None,
        env_vars: [("HANGAR_EXECUTION_ID".to_owned(), run.to_owned())]
            .into_iter()
            .collect(),
        additional_sidecars: vec![],
        additional_oz_args: vec![],
        instance_shape: None,
        environment: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let (p50, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
    println!(
        "{name:<44} n={:<3} p50 {:>7.1} ms   p99 {:>7.1} ms",
        v.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    p50
}

#[tokio::main]
async fn main() {
    let samples: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let image = hangar_testkit::images::base_image().expect("base image");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let agent = dir.path().join("agent.sh");
    std::fs::write(&agent, AGENT).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut cfg = DockerConfig::new(
        "bench-worker",
        dir.path().join("workspaces"),
        agent,
        "http://127.0.0.1:9",
    );
    cfg.default_image = Some(image.clone());
    cfg.pull_policy = PullPolicy::Never;
    cfg.volumes = vec![format!("{}:/bench-out:rw", out.display())];
    let backend = Docker::new(cfg).unwrap();
    backend.start().await.unwrap();

    // Warm-up of both paths (page cache, daemon).
    let mut ours = Vec::new();
    let mut baseline = Vec::new();
    for i in 0..samples + 2 {
        // Baseline: the Docker CLI runs a container to completion and removes it.
        let t = Instant::now();
        let st = tokio::process::Command::new("docker")
            .args(["run", "--rm", "--network", "none", &image, "true"])
            .status()
            .await
            .unwrap();
        assert!(st.success());
        if i >= 2 {
            baseline.push(t.elapsed());
        }

        // Ours: assignment → execution → prepare → launch → agent running.
        let run = format!("bench-{i}");
        let marker = out.join(&run);
        let t = Instant::now();
        let mut exec = backend
            .execution(TaskSpec {
                task_id: run.clone(),
                execution_id: run.clone(),
                assignment: assignment(&run),
                allow_local_repositories: false,
            })
            .unwrap();
        exec.prepare(&CancellationToken::new()).await.unwrap();
        exec.launch().await.unwrap();
        while !marker.exists() {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        if i >= 2 {
            ours.push(t.elapsed());
        }
        exec.cancel(Duration::ZERO).await.ok();
        exec.cleanup().await.unwrap();
    }
    println!("docker backend start latency ({samples} samples each)");
    let b = summary("baseline: docker run --rm IMAGE true", baseline);
    let o = summary("hangar: assignment -> agent process running", ours);
    let delta = o.as_secs_f64() * 1e3 - b.as_secs_f64() * 1e3;
    println!("p50 difference: {delta:+.1} ms (target <= +150 ms)");
}
