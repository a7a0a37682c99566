//! Peak RSS of the agent on a 50-turn run (49 shell calls and a final
//! answer) against the fake OpenAI server. The bench re-runs itself as a
//! child process that only runs the agent (so the fake server's memory is
//! not counted) and reads the child's `VmHWM`. Target ≤ 30 MiB.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code

#[path = "support/common.rs"]
mod common;

use common::NullSink;
use hangar_agent::{Agent, CancellationToken, LoopConfig, Redactor, ToolRegistry};
use hangar_llm::{OpenAiConfig, OpenAiProvider};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use std::sync::Arc;

const TURNS: usize = 50;
const CHILD_ENV: &str = "HANGAR_RSS_BENCH_CHILD_URL";

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn child(url: String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let provider =
            Arc::new(OpenAiProvider::new(OpenAiConfig::new(url).with_api_key("sk")).unwrap());
        let agent = Agent::new(
            provider,
            ToolRegistry::with_builtins(),
            LoopConfig::new("m", dir.path(), None),
        )
        .with_redactor(Arc::new(Redactor::from_env()));
        let (_tx, mut rx) = tokio::sync::mpsc::channel(1);
        let outcome = agent
            .run("bench", &NullSink, &mut rx, &CancellationToken::new())
            .await
            .unwrap();
        assert!(outcome.is_success(), "{outcome:?}");
    });
    println!("{}", vm_hwm_kib());
}

fn main() {
    if let Ok(url) = std::env::var(CHILD_ENV) {
        child(url);
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut peaks = Vec::new();
    for _ in 0..5 {
        let llm = rt.block_on(async {
            let mut script: Vec<Turn> = (0..TURNS - 1)
                .map(|i| {
                    Turn::tool_call(
                        "shell",
                        serde_json::json!({"command": format!("seq 1 200; echo turn {i}")}),
                    )
                })
                .collect();
            script.push(Turn::text("done"));
            FakeLlm::start(script).await
        });
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .env(CHILD_ENV, llm.base_url())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kib: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rt.block_on(async { llm.remaining() }), 0);
        peaks.push(kib);
        drop(llm);
    }
    peaks.sort_unstable();
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "agent peak RSS on a {TURNS}-turn run: p50 {:.1} MiB  max {:.1} MiB  (n={}, target <= 30 MiB)",
        mib(peaks[peaks.len() / 2]),
        mib(peaks[peaks.len() - 1]),
        peaks.len()
    );
}
