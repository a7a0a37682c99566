//! `hangar worker --print-config` and config-file errors, as an operator sees them.

use crate::suite::common::hangar_bin;
use std::process::{Command, Output};

fn worker(args: &[&str], home: &std::path::Path) -> Output {
    Command::new(hangar_bin())
        .arg("worker")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("INHERITED_TOKEN", "host-secret-value")
        .output()
        .unwrap()
}

#[test]
fn print_config_shows_the_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.yaml");
    std::fs::write(
        &file,
        "worker_id: from-file\nmax_concurrent_tasks: 7\nbackend:\n  docker:\n    default_image: img:1\n    \
         environment: [{name: FILE_SECRET, value: file-secret-value}, {name: INHERITED_TOKEN}]\n",
    )
    .unwrap();
    let out = worker(
        &[
            "--print-config",
            "--config-file",
            file.to_str().unwrap(),
            "--api-key",
            "hk_very_secret_key",
            "--max-concurrent-tasks",
            "2",
            "-e",
            "FLAG_SECRET=flag-secret-value",
            "--idle-on-complete",
            "5m",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in [
        "hk_very_secret_key",
        "file-secret-value",
        "host-secret-value",
        "flag-secret-value",
    ] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains(secret),
            "{secret} leaked to stderr"
        );
    }
    let cfg: serde_json::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(cfg["worker_id"], "from-file", "{text}");
    assert_eq!(cfg["max_concurrent_tasks"], 2, "flag beats file:\n{text}");
    assert_eq!(cfg["idle_on_complete"], "5m");
    assert_eq!(cfg["api_key"], "***");
    assert_eq!(cfg["cleanup"], true, "default");
    let docker = &cfg["backend"]["docker"];
    assert_eq!(docker["default_image"], "img:1");
    assert_eq!(docker["image_pull_policy"], "if_not_present", "default");
    let names: Vec<&str> = docker["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["FILE_SECRET", "INHERITED_TOKEN", "FLAG_SECRET"]);
}

#[test]
fn config_file_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.yaml");
    std::fs::write(
        &file,
        "worker_id: w\nbackend:\n  direct:\n    setup_command: make\n    workspce_root: /x\n",
    )
    .unwrap();
    let out = worker(
        &[
            "--print-config",
            "--config-file",
            file.to_str().unwrap(),
            "--api-key",
            "k",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("workspce_root"), "{err}");
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains(file.to_str().unwrap()), "{err}");
}
