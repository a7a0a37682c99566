//! The fault suite's full disk (scenario E6): SQLite on a tmpfs that fills up
//! refuses writes with 503, keeps what it acknowledged, and recovers.

use super::faults::get_json;
use crate::suite::common::hangar_bin;
use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::poll::eventually_ok;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "E6 mounts a small tmpfs to fill its disk and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { mount, _dir: dir }
    }

    /// Fills the filesystem with one file until the kernel says ENOSPC.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount.join("ballast");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // Smaller writes take the last partial block.
        let byte = [0u8; 512];
        while f.write(&byte).is_ok_and(|n| n > 0) {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn integrity_check(db: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])",
        ])
        .arg(db)
        .output()
        .expect("python3 for PRAGMA integrity_check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn create_run(
    http: &reqwest::Client,
    cluster: &TestCluster,
    prompt: &str,
) -> reqwest::Response {
    http.post(format!("{}/api/v1/agent/runs", cluster.url))
        .bearer_auth(&cluster.api_key)
        .json(&serde_json::json!({"prompt": prompt, "config": {"worker_host": "nobody"}}))
        .send()
        .await
        .expect("POST /agent/runs")
}

async fn status_of(http: &reqwest::Client, url: String) -> u16 {
    http.get(url).send().await.expect("GET").status().as_u16()
}

/// E6 (SQLite): with the data directory on a full filesystem every write is
/// refused with a 503 `storage_unavailable` and `Retry-After`, nothing is
/// acknowledged that was not stored, `/readyz` fails while `/healthz` stays
/// up, and the server recovers by itself, uncorrupted, when space returns.
#[tokio::test(flavor = "multi_thread")]
async fn e6_sqlite_disk_full_refuses_writes_with_503_and_recovers() {
    let disk = SmallDisk::mount("16m");
    let data = disk.mount.join("data");
    let options = ClusterOptions {
        data_dir: Some(data.clone()),
        ..ClusterOptions::default()
    }
    .with_fake_llm("http://127.0.0.1:9/v1");
    let mut cluster = TestCluster::start(&hangar_bin(), options)
        .await
        .expect("start cluster");
    let http = reqwest::Client::new();

    // Acknowledged before the disk fills.
    let mut acked = Vec::new();
    for i in 0..5 {
        let r = create_run(&http, &cluster, &format!("before {i}")).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        acked.push(body["run_id"].as_str().unwrap().to_owned());
    }

    let ballast = disk.fill();
    let mut refused = 0;
    for i in 0..40 {
        let r = create_run(&http, &cluster, &format!("while full {i}")).await;
        let status = r.status().as_u16();
        if status == 200 {
            // Only possible if SQLite still had a free page; then it must be stored.
            let body: serde_json::Value = r.json().await.unwrap();
            acked.push(body["run_id"].as_str().unwrap().to_owned());
            continue;
        }
        assert_eq!(
            status, 503,
            "a full disk is the server's problem, not the caller's"
        );
        assert_eq!(
            r.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some("1".to_owned())
        );
        assert_eq!(
            r.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        let problem: serde_json::Value = r.json().await.unwrap();
        assert_eq!(problem["error"], "storage_unavailable", "{problem}");
        assert_eq!(problem["retryable"], true);
        refused += 1;
    }
    assert!(
        refused >= 35,
        "only {refused} of 40 writes were refused on a full disk"
    );
    assert_eq!(
        status_of(&http, format!("{}/readyz", cluster.url)).await,
        503
    );
    assert_eq!(
        status_of(&http, format!("{}/healthz", cluster.url)).await,
        200
    );
    // Reads still work and every acknowledged run is there.
    for id in &acked {
        let status = status_of_authed(&http, &cluster, id).await;
        assert_eq!(
            status, 200,
            "acknowledged run {id} is missing while the disk is full"
        );
    }

    // Space returns: the server recovers by itself, with no restart.
    std::fs::remove_file(&ballast).unwrap();
    eventually_ok(
        "/readyz to recover when space returned",
        Duration::from_secs(10),
        async || match status_of(&http, format!("{}/readyz", cluster.url)).await {
            200 => Ok(()),
            other => Err(other),
        },
    )
    .await;
    let r = create_run(&http, &cluster, "after").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    acked.push(body["run_id"].as_str().unwrap().to_owned());

    // After a restart every acknowledged run is still there, and nothing else.
    cluster.restart_server().await.unwrap();
    for id in &acked {
        assert_eq!(
            status_of_authed(&http, &cluster, id).await,
            200,
            "run {id} lost"
        );
    }
    let list = get_json(&cluster, "/api/v1/agent/runs?limit=100").await;
    let listed = list["runs"].as_array().map(Vec::len).unwrap_or_default();
    assert_eq!(
        listed,
        acked.len(),
        "runs stored that were never acknowledged: {list}"
    );

    cluster.kill_server().await.unwrap();
    assert_eq!(integrity_check(&data.join("hangar.db")), "ok");
}

async fn status_of_authed(http: &reqwest::Client, cluster: &TestCluster, id: &str) -> u16 {
    http.get(format!("{}/api/v1/agent/runs/{id}", cluster.url))
        .bearer_auth(&cluster.api_key)
        .send()
        .await
        .expect("GET run")
        .status()
        .as_u16()
}
