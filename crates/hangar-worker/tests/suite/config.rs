//! Flags > file > defaults, and errors that say what to fix.

use clap::Parser;
use hangar_worker::{BackendKind, WorkerArgs, WorkerConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

fn args(argv: &[&str]) -> WorkerArgs {
    Cli::try_parse_from(std::iter::once("hangar-worker").chain(argv.iter().copied()))
        .unwrap()
        .args
}

fn write_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("worker.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn flags_override_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        &dir,
        r#"
worker_id: from-file
cleanup: false
max_concurrent_tasks: 7
idle_on_complete: 5m
backend:
  direct:
    workspace_root: /file/root
    setup_command: make setup
    environment:
      - {name: A, value: file}
      - {name: B, value: file}
      - {name: INHERITED}
"#,
    );
    let a = args(&[
        "--config-file",
        file.to_str().unwrap(),
        "--worker-id",
        "from-flag",
        "--api-key",
        "hk_flag",
        "--server-url",
        "http://10.0.0.1:9000",
        "--max-concurrent-tasks",
        "0",
        "-e",
        "A=flag",
        "-e",
        "C=x,y",
        "--workspace-root",
        "/flag/root",
        "--kill-grace",
        "3s",
    ]);
    let host = |k: &str| (k == "INHERITED").then(|| "host-value".to_owned());
    let cfg = a.resolve_with_env(host).unwrap();
    let defaults = WorkerConfig::default();

    // flags
    assert_eq!(cfg.worker_id.as_str(), "from-flag");
    assert_eq!(cfg.api_key.expose(), "hk_flag");
    assert_eq!(cfg.server_url, "http://10.0.0.1:9000");
    assert_eq!(
        cfg.max_concurrent_tasks, 0,
        "the CLI can reset the file's value to unlimited"
    );
    assert_eq!(cfg.direct.workspace_root, Some(PathBuf::from("/flag/root")));
    assert_eq!(cfg.kill_grace, Duration::from_secs(3));
    // file
    assert_eq!(cfg.backend, BackendKind::Direct);
    assert!(!cfg.cleanup);
    assert_eq!(cfg.idle_on_complete.as_deref(), Some("5m"));
    assert_eq!(cfg.direct.setup_command.as_deref(), Some("make setup"));
    // env: file first, flags override in place, no comma splitting, inheritance
    let env: Vec<(&str, &str)> = cfg
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        vec![
            ("A", "flag"),
            ("B", "file"),
            ("INHERITED", "host-value"),
            ("C", "x,y")
        ]
    );
    // defaults
    assert_eq!(cfg.heartbeat_interval, defaults.heartbeat_interval);
    assert_eq!(cfg.read_timeout, defaults.read_timeout);
    assert_eq!(cfg.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(cfg.read_timeout, Duration::from_secs(60));
}

#[test]
fn defaults_apply_without_file() {
    let a = WorkerArgs {
        worker_id: Some("w".into()),
        api_key: Some("hk_x".into()),
        backend: Some(BackendKind::Direct),
        ..Default::default()
    };
    let cfg = a.resolve_with_env(no_env).unwrap();
    assert_eq!(cfg.server_url, "http://127.0.0.1:7420");
    assert_eq!(cfg.max_concurrent_tasks, 4);
    assert!(cfg.cleanup);
    assert_eq!(cfg.kill_grace, Duration::from_secs(10));
    assert_eq!(
        cfg.direct.workspace_root, None,
        "resolved to $XDG_DATA_HOME/hangar/workspaces by Worker::new"
    );
    assert!(
        !format!("{cfg:?}").contains("hk_x"),
        "the key leaks through Debug"
    );
}

#[test]
fn no_cleanup_flag_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        &dir,
        "worker_id: w\ncleanup: true\nbackend:\n  direct: {}\n",
    );
    let a = args(&[
        "--config-file",
        file.to_str().unwrap(),
        "--api-key",
        "k",
        "--no-cleanup",
    ]);
    assert!(!a.resolve_with_env(no_env).unwrap().cleanup);
}

#[test]
fn unknown_yaml_key_is_rejected_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        &dir,
        "worker_id: w\nbackend:\n  direct:\n    workspace_rot: /x\n",
    );
    let a = args(&["--config-file", file.to_str().unwrap(), "--api-key", "k"]);
    let err = a.resolve_with_env(no_env).unwrap_err().to_string();
    assert!(err.contains("workspace_rot"), "{err}");
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains("line 4"), "{err}");

    let file = write_file(&dir, "worker_id: w\nlabels: {}\n");
    let a = args(&["--config-file", file.to_str().unwrap(), "--api-key", "k"]);
    let err = a.resolve_with_env(no_env).unwrap_err().to_string();
    assert!(err.contains("labels") && err.contains("line 2"), "{err}");
}

#[test]
fn bad_env_entries_are_rejected() {
    for (spec, needle) in [
        ("=x", "=x"),
        ("A B=c", "A B"),
        ("HANGAR_NOT_SET_ANYWHERE", "HANGAR_NOT_SET_ANYWHERE"),
    ] {
        let a = args(&[
            "--worker-id",
            "w",
            "--api-key",
            "k",
            "--backend",
            "direct",
            "-e",
            spec,
        ]);
        let err = a.resolve_with_env(no_env).unwrap_err().to_string();
        assert!(err.contains("-e") && err.contains(needle), "{spec}: {err}");
    }
    let a = args(&[
        "--worker-id",
        "w",
        "--api-key",
        "k",
        "--backend",
        "direct",
        "-e",
        "HANGAR_API_KEY=x",
    ]);
    let err = a.resolve_with_env(no_env).unwrap_err().to_string();
    assert!(err.contains("never the worker's key"), "{err}");
}

#[test]
fn missing_or_bad_settings_say_how_to_fix_them() {
    let base = WorkerArgs {
        api_key: Some("k".into()),
        backend: Some(BackendKind::Direct),
        ..Default::default()
    };
    let err = base.resolve_with_env(no_env).unwrap_err().to_string();
    assert!(err.contains("--worker-id"), "{err}");

    let a = WorkerArgs {
        worker_id: Some("a/b".into()),
        ..base.clone()
    };
    assert!(
        a.resolve_with_env(no_env)
            .unwrap_err()
            .to_string()
            .contains("`/`")
    );

    let a = WorkerArgs {
        worker_id: Some("w".into()),
        api_key: None,
        ..base.clone()
    };
    assert!(
        a.resolve_with_env(no_env)
            .unwrap_err()
            .to_string()
            .contains("HANGAR_API_KEY")
    );

    let a = WorkerArgs {
        worker_id: Some("w".into()),
        backend: Some(BackendKind::Kubernetes),
        ..base.clone()
    };
    // Kubernetes resolves; the backend checks its own settings when the
    // worker is built (agent_image is required).
    let cfg = a.resolve_with_env(no_env).unwrap();
    assert_eq!(cfg.backend, BackendKind::Kubernetes);
    let err = hangar_worker::Worker::new(cfg).unwrap_err().to_string();
    assert!(err.contains("agent_image"), "{err}");

    // Docker is supported; its file settings resolve.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.yaml");
    std::fs::write(
        &file,
        "backend:\n  docker: {default_image: img:1, image_pull_policy: never, pids_limit: 64, memory_mb: 512, cpus: 1.5}\n",
    )
    .unwrap();
    let a = WorkerArgs {
        worker_id: Some("w".into()),
        config_file: Some(file),
        backend: None,
        ..base.clone()
    };
    let cfg = a.resolve_with_env(no_env).unwrap();
    assert_eq!(cfg.backend, BackendKind::Docker);
    assert_eq!(cfg.docker.default_image.as_deref(), Some("img:1"));
    assert_eq!(
        cfg.docker.image_pull_policy,
        hangar_worker::PullPolicy::Never
    );
    assert_eq!(
        (cfg.docker.pids_limit, cfg.docker.memory_mb, cfg.docker.cpus),
        (Some(64), Some(512), Some(1.5))
    );

    let a = WorkerArgs {
        worker_id: Some("w".into()),
        server_url: Some("ftp://x".into()),
        ..base.clone()
    };
    assert!(
        a.resolve_with_env(no_env)
            .unwrap_err()
            .to_string()
            .contains("http")
    );

    let a = WorkerArgs {
        worker_id: Some("w".into()),
        volumes: vec!["nocolon".into()],
        ..base
    };
    assert!(
        a.resolve_with_env(no_env)
            .unwrap_err()
            .to_string()
            .contains("HOST:CONTAINER")
    );
}

#[test]
fn backend_flag_conflicting_with_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(&dir, "worker_id: w\nbackend:\n  direct: {}\n");
    let a = args(&[
        "--config-file",
        file.to_str().unwrap(),
        "--api-key",
        "k",
        "--backend",
        "kubernetes",
    ]);
    let err = a.resolve_with_env(no_env).unwrap_err().to_string();
    assert!(err.contains("conflicts"), "{err}");
}

#[test]
fn repeatable_flags_do_not_split_on_commas() {
    let a = args(&["-v", "/a,b:/c", "-v", "/d:/e:ro", "-e", "K=1,2"]);
    assert_eq!(a.volumes, vec!["/a,b:/c", "/d:/e:ro"]);
    assert_eq!(a.env, vec!["K=1,2"]);
}
