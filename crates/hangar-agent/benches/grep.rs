//! The `grep` tool's search over a generated 100,000-file tree against
//! ripgrep (`rg`, Debian `ripgrep`) on the same tree in the same run.
//! Target: at least 0.8× rg's speed.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code

#[path = "support/common.rs"]
mod common;

use common::{percentile, summary};
use hangar_agent::CancellationToken;
use hangar_agent::tools::grep_workspace;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const DIRS: usize = 1000;
const FILES_PER_DIR: usize = 100;
const SAMPLES: usize = 9;
const PATTERN: &str = r"NEEDLE_[0-9]+";

fn generate(root: &Path) {
    let body: String = (0..12)
        .map(|i| {
            format!(
                "fn function_{i}(x: u32) -> u32 {{ x * {i} + 7 }} // some ordinary source text\n"
            )
        })
        .collect();
    for d in 0..DIRS {
        let dir = root.join(format!("pkg{d:04}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..FILES_PER_DIR {
            let mut file = std::fs::File::create(dir.join(format!("file{f:03}.rs"))).unwrap();
            file.write_all(body.as_bytes()).unwrap();
            if (d * FILES_PER_DIR + f).is_multiple_of(997) {
                writeln!(file, "// NEEDLE_{d}").unwrap();
            }
        }
    }
}

fn rg(root: &Path) -> usize {
    let out = std::process::Command::new("rg")
        .args(["--no-config", "-n", PATTERN])
        .arg(root)
        .output()
        .expect("rg is not installed (apt-get install ripgrep)");
    out.stdout.iter().filter(|b| **b == b'\n').count()
}

fn main() {
    let dir = tempfile::Builder::new()
        .prefix("hangar-grep-bench")
        .tempdir_in("/var/tmp")
        .unwrap();
    let root = dir.path();
    let t = Instant::now();
    generate(root);
    println!(
        "generated {} files in {:?}",
        DIRS * FILES_PER_DIR,
        t.elapsed()
    );
    let cancel = CancellationToken::new();
    let ours_once = || {
        grep_workspace(root, root, PATTERN, None, 1_000_000, &cancel)
            .unwrap()
            .lines
            .len()
    };
    // Warm the page cache and check both find the same matches.
    let (a, b) = (ours_once(), rg(root));
    assert_eq!(a, b, "grep tool and rg disagree");
    println!("matches: {a}");
    let mut ours: Vec<Duration> = Vec::new();
    let mut theirs: Vec<Duration> = Vec::new();
    for _ in 0..SAMPLES {
        let t = Instant::now();
        std::hint::black_box(ours_once());
        ours.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(rg(root));
        theirs.push(t.elapsed());
    }
    let (o50, r50) = (percentile(&mut ours, 50.0), percentile(&mut theirs, 50.0));
    println!("grep tool: {}", summary(&mut ours));
    println!("rg:        {}", summary(&mut theirs));
    println!(
        "speed relative to rg (p50): {:.2}x  (target >= 0.8x)",
        r50.as_secs_f64() / o50.as_secs_f64()
    );
}
