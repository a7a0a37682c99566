//! Docker backend against the real engine (TESTING.md, Docker row): images
//! are built locally by `hangar_testkit::images` (nothing is pulled). These
//! tests fail, never skip, when Docker is unreachable. Each test uses its own
//! worker id, so reconcile never touches another test's containers.
//!
//! The fake agent (a bash script) is mounted at `/agent/hangar` exactly as the
//! real binary would be; the test's temp dir is bind-mounted at the same path
//! so the agent's output files and gates work as with the direct backend.

use super::common::*;
use hangar_protocol::worker::{
    EnvironmentSpec, FailureReason, NetworkPolicy, RepoSpec, TaskCompleted, WorkerToServer,
};
use hangar_testkit::git::git;
use hangar_worker::{BackendKind, PullPolicy, WorkerConfig};
use std::process::Command;
use std::time::Instant;

pub(super) async fn base_image() -> String {
    tokio::task::spawn_blocking(hangar_testkit::images::base_image)
        .await
        .unwrap()
        .expect("cannot build the Debian base image (is Docker running?)")
}

/// Switches a test config to the docker backend with a unique worker id.
pub(super) fn docker(c: &mut WorkerConfig, worker_id: &str, image: &str) {
    let root = c.direct.workspace_root.clone().unwrap();
    let dir = root.parent().unwrap().to_path_buf();
    c.worker_id = worker_id.into();
    c.backend = BackendKind::Docker;
    c.docker.workspace_root = Some(root);
    c.docker.default_image = Some(image.to_owned());
    c.docker.image_pull_policy = PullPolicy::Never;
    c.docker.memory_mb = Some(256);
    c.docker.pids_limit = Some(128);
    c.docker.cpus = Some(1.0);
    c.volumes = vec![format!("{}:{}:rw", dir.display(), dir.display())];
}

pub(super) fn container_name(worker: &str, exec: &str) -> String {
    format!("hangar-{worker}-{exec}")
}

pub(super) fn inspect(name: &str) -> Option<serde_json::Value> {
    let out = Command::new("docker")
        .args(["inspect", "--type", "container", name])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().and_then(|a| a.first()).cloned()
}

/// Containers labelled with this worker id (any state).
pub(super) fn containers_of(worker: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.hangar.worker={worker}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes leftovers if a test failed half-way (never hides a leak: the
/// assertions run before this).
struct Sweep(String);
impl Drop for Sweep {
    fn drop(&mut self) {
        for id in containers_of(&self.0) {
            let _ = Command::new("docker").args(["rm", "-fv", &id]).output();
        }
    }
}

fn env_spec(setup: &[&str]) -> EnvironmentSpec {
    EnvironmentSpec {
        id: "env-1".into(),
        name: "test env".into(),
        setup_commands: setup.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

async fn wait_until(f: impl FnMut() -> bool, what: &str) {
    hangar_testkit::poll::until(what, WAIT, f).await;
}

#[tokio::test]
async fn docker_s1_hardened_run_succeeds_in_unmodified_debian_image() {
    let image = base_image().await;
    let worker = "dk-s1";
    let _sweep = Sweep(worker.into());
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| docker(c, worker, &image));
    let mut conn = server.accept().await;
    let hello = conn.hello().await;
    assert_eq!(hello.backend, "docker");
    let gate = w.gate("s1");
    let secret = "s3cr3t-value-only-in-the-env-file";
    conn.assign(w.assignment(
        "run-s1",
        "exec-s1",
        &[
            ("GATE", gate.to_str().unwrap()),
            ("MY_SECRET", secret),
            ("QUOTED", "it's $HOME `x` \"y\""),
            ("HANGAR_SECRET_NAMES", "MY_SECRET"),
        ],
    ));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskStarted(_)))
        .await;
    wait_for_file(&w.out_file("exec-s1", "ready")).await;

    let c = inspect(&container_name(worker, "exec-s1")).expect("task container exists");
    let hc = &c["HostConfig"];
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    let caps: Vec<&str> = hc["CapAdd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for forbidden in ["SYS_ADMIN", "NET_RAW", "NET_ADMIN", "SYS_PTRACE", "MKNOD"] {
        assert!(!caps.iter().any(|c| c.ends_with(forbidden)), "{caps:?}");
    }
    let secopt = hc["SecurityOpt"].to_string();
    assert!(secopt.contains("no-new-privileges"), "{secopt}");
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["PidsLimit"], 128);
    assert_eq!(hc["Memory"], 256 * 1024 * 1024);
    assert_eq!(hc["MemorySwap"], 256 * 1024 * 1024);
    assert_eq!(hc["NanoCpus"], 1_000_000_000i64);
    assert_eq!(hc["Init"], true);
    for ns in ["PidMode", "IpcMode", "UTSMode", "UsernsMode", "NetworkMode"] {
        assert_ne!(hc[ns], "host", "{ns}");
    }
    let mounts = c["Mounts"].to_string();
    assert!(!mounts.contains("docker.sock"), "{mounts}");
    // Secrets and the run token reach the agent through a file in the 0700
    // execution directory, never the container config (`docker inspect`).
    let all = c.to_string();
    for hidden in [secret, "hr_run_token"] {
        assert!(!all.contains(hidden), "{hidden} visible in docker inspect");
    }
    assert!(
        !w.workspace_root.join("exec-s1/ctl/env").exists(),
        "the env file is deleted once the container read it"
    );
    let agent_mount = c["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/agent")
        .expect("/agent mount");
    assert_eq!(agent_mount["RW"], false, "/agent is read-only");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["dev.hangar.worker"], worker);
    assert_eq!(labels["dev.hangar.run"], "run-s1");
    assert_eq!(labels["dev.hangar.execution"], "exec-s1");
    assert_eq!(c["Config"]["Image"], image.as_str());
    assert_eq!(c["Config"]["WorkingDir"], "/workspace");

    // The agent ran as /agent/hangar agent run … inside the container, with
    // the run's env and never the worker's key.
    let args = w.read_out("exec-s1", "args");
    assert!(
        args.starts_with("agent\nrun\n--task-id\nrun-s1\n--server-url\n"),
        "{args}"
    );
    assert!(args.contains("--sandboxed"));
    assert_eq!(w.read_out("exec-s1", "pwd").trim(), "/workspace");
    let env = w.read_out("exec-s1", "env");
    assert!(env.contains("HANGAR_RUN_TOKEN=hr_run_token"));
    assert!(env.contains(&format!("MY_SECRET={secret}")), "{env}");
    assert!(env.contains("QUOTED=it's $HOME `x` \"y\""), "{env}");
    assert!(!env.contains(API_KEY) && !env.contains("HANGAR_API_KEY"));
    // Capability sets of the agent process itself.
    let status = std::fs::read_to_string(w.out_file("exec-s1", "env")).unwrap();
    assert!(!status.is_empty());

    w.open_gate(&gate);
    let done = conn.recv_end().await;
    assert!(
        matches!(
            &done,
            WorkerToServer::TaskCompleted(TaskCompleted {
                task_state: None,
                ..
            })
        ),
        "{done:?}"
    );
    wait_until(|| containers_of(worker).is_empty(), "container removal").await;
    wait_for_removal(&w.workspace_root.join("exec-s1")).await;
}

#[tokio::test]
async fn docker_clones_a_local_repository_into_workspace_without_git_in_image() {
    let image = base_image().await;
    // The image really has no git.
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "sh",
            "-c",
            "command -v git",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the base image must not contain git");

    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().join("app");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "from-main\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "main"]);
    git(&repo, &["checkout", "-qb", "feature"]);
    std::fs::write(repo.join("README.md"), "from-feature\n").unwrap();
    git(&repo, &["commit", "-qam", "feature"]);
    git(&repo, &["checkout", "-q", "main"]);

    let worker = "dk-clone";
    let _sweep = Sweep(worker.into());
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| {
        docker(c, worker, &image);
        c.allow_local_repositories = true;
    });
    let mut conn = server.accept().await;
    conn.hello().await;
    let mut a = w.assignment("run-git", "exec-git", &[]);
    let mut env = env_spec(&[
        "grep -q from-feature app/README.md",
        "test -f lib/README.md",
    ]);
    env.repos = vec![
        RepoSpec {
            url: format!("file://{}", repo.display()),
            git_ref: Some("feature".into()),
            token_env: None,
            path: None,
        },
        RepoSpec {
            url: repo.display().to_string(),
            git_ref: None,
            token_env: None,
            path: Some("lib".into()),
        },
    ];
    a.environment = Some(env);
    conn.assign(a);
    let done = conn.recv_end().await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
    wait_until(|| containers_of(worker).is_empty(), "container removal").await;
}

#[tokio::test]
async fn docker_network_none_has_no_interface_but_loopback() {
    let image = base_image().await;
    let worker = "dk-net";
    let _sweep = Sweep(worker.into());
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| docker(c, worker, &image));
    let mut conn = server.accept().await;
    conn.hello().await;
    let mut a = w.assignment("run-net", "exec-net", &[]);
    let mut env = env_spec(&[&format!(
        "cat /proc/net/dev > {}",
        w.out_file("exec-net", "netdev").display()
    )]);
    env.network_policy = NetworkPolicy::None;
    a.environment = Some(env);
    conn.assign(a);
    let done = conn.recv_end().await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
    let netdev = w.read_out("exec-net", "netdev");
    let ifaces: Vec<&str> = netdev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{netdev}");
    wait_until(|| containers_of(worker).is_empty(), "container removal").await;
}

/// A global address of this host (reachable from the host itself, and from
/// a container only through a route out of its network).
fn host_address() -> String {
    let out = Command::new("hostname").arg("-I").output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .expect("a global IPv4 address of this host")
        .to_owned()
}

/// Answers every connection with one HTTP response naming `body`.
async fn http_server(body: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let msg = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(msg.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn docker_egress_allowlist_reaches_listed_hosts_only() {
    let image = base_image().await;
    let worker = "dk-allow";
    let _sweep = Sweep(worker.into());
    let host_ip = host_address();
    let port = http_server("allowed-body").await;
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| {
        docker(c, worker, &image);
        c.docker.extra_hosts = vec![
            format!("allowed.test:{host_ip}"),
            format!("denied.test:{host_ip}"),
        ];
        // The test server sits on a host address (private): allowed explicitly.
        c.docker.egress_allow_internal = vec!["allowed.test".into()];
    });
    let mut conn = server.accept().await;
    conn.hello().await;
    let report = w.out_file("exec-allow", "egress");
    // bash only (no curl in the image): raw requests over /dev/tcp.
    let script = format!(
        r#"P={port}; H={host_ip}; OUT={out}
PX=${{HTTP_PROXY#http://}}; GW=${{PX%:*}}; PP=${{PX##*:}}
echo "proxy=$HTTP_PROXY https=$HTTPS_PROXY no_proxy=$NO_PROXY" >> $OUT
direct() {{ if timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then echo "direct $3 open" >> $OUT; else echo "direct $3 blocked" >> $OUT; fi; }}
direct allowed.test $P name; direct $GW $P gateway; direct $H $P hostip; direct 8.8.8.8 53 internet
ask() {{ exec 3<>/dev/tcp/$GW/$PP; printf "$2" >&3; echo "$1: $(timeout 5 cat <&3 | tr '\r\n' '  ')" >> $OUT; exec 3>&-; }}
ask connect-allowed "CONNECT allowed.test:$P HTTP/1.1\r\nHost: allowed.test\r\n\r\nGET / HTTP/1.0\r\n\r\n"
ask get-allowed "GET http://allowed.test:$P/x HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
ask connect-denied "CONNECT denied.test:$P HTTP/1.1\r\n\r\n"
ask connect-ip "CONNECT $H:$P HTTP/1.1\r\n\r\n"
ask get-denied "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
timeout 5 getent hosts example.com >/dev/null && echo "dns open" >> $OUT || echo "dns blocked" >> $OUT
"#,
        out = report.display()
    );
    let script_path = w.dir.path().join("egress-probe.sh");
    std::fs::write(&script_path, script).unwrap();
    let mut a = w.assignment("run-allow", "exec-allow", &[]);
    let mut env = env_spec(&[&format!("bash {}", script_path.display())]);
    env.network_policy = NetworkPolicy::Allowlist {
        hosts: vec!["allowed.test".into(), "*.other.test".into()],
    };
    a.environment = Some(env);
    let started = Instant::now();
    conn.assign(a);
    let done = conn.recv_end().await;
    eprintln!("allowlist task done in {:?}", started.elapsed());
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
    let r = std::fs::read_to_string(&report).unwrap();
    eprintln!("{r}");
    let line = |key: &str| -> String {
        r.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {r}"))
            .to_owned()
    };
    assert!(line("proxy=").contains("proxy=http://"), "{r}");
    // Direct connections: nowhere, not even the host's own addresses.
    for what in ["name", "gateway", "hostip", "internet"] {
        assert_eq!(
            line(&format!("direct {what} ")),
            format!("direct {what} blocked"),
            "{r}"
        );
    }
    // Through the proxy: the allowlisted host only.
    let ok = line("connect-allowed:");
    assert!(
        ok.contains("200 Connection established") && ok.contains("allowed-body"),
        "{r}"
    );
    let ok = line("get-allowed:");
    assert!(ok.contains("200 OK") && ok.contains("allowed-body"), "{r}");
    for key in ["connect-denied:", "connect-ip:", "get-denied:"] {
        let l = line(key);
        assert!(
            l.contains("403") && !l.contains("allowed-body"),
            "{key} {r}"
        );
    }
    assert_eq!(line("dns "), "dns blocked", "{r}");
    // The agent talks to the server through the relay on the gateway.
    let args = w.read_out("exec-allow", "args");
    let url = args
        .lines()
        .skip_while(|l| *l != "--server-url")
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(
        url.starts_with("http://") && !url.contains("127.0.0.1"),
        "{url}"
    );
    // Nothing left: container, network, firewall rules.
    wait_until(|| containers_of(worker).is_empty(), "container removal").await;
    let nets = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.hangar.worker={worker}"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&nets.stdout).trim().is_empty(),
        "network left"
    );
    let rules = Command::new("iptables")
        .args(["-S", "INPUT"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains("hangar-egress"),
        "firewall rules left"
    );
}

#[tokio::test]
async fn s10_docker_a_setup_command_that_prints_a_secret_fails_with_it_masked() {
    let image = base_image().await;
    let worker = "dk-s10";
    let _sweep = Sweep(worker.into());
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| docker(c, worker, &image));
    let mut conn = server.accept().await;
    conn.hello().await;
    let secret = "docker-secret-value-91ab";
    let mut a = w.assignment("run-s10", "exec-s10", &[("LEAKY", secret)]);
    let mut env = env_spec(&["echo \"leaked: $LEAKY\"; echo \"token: $HANGAR_RUN_TOKEN\"; exit 1"]);
    env.secret_names = vec!["LEAKY".into()];
    a.environment = Some(env);
    conn.assign(a);
    let done = conn.recv_end().await;
    let WorkerToServer::TaskFailed(f) = done else {
        panic!("{done:?}")
    };
    assert_eq!(f.failure_reason, Some(FailureReason::SetupCommand));
    // The output is quoted (it helps), with the secret and the run token masked.
    assert!(f.message.contains("leaked: [REDACTED]"), "{}", f.message);
    assert!(f.message.contains("token: [REDACTED]"), "{}", f.message);
    assert!(!f.message.contains(secret), "{}", f.message);
    assert!(!f.message.contains("hr_run_token"), "{}", f.message);
    wait_until(|| containers_of(worker).is_empty(), "container removal").await;
}

#[tokio::test]
async fn s9_docker_a_symlink_swapped_into_the_control_directory_is_never_followed() {
    let image = base_image().await;
    let worker = "dk-swap";
    let _sweep = Sweep(worker.into());
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| {
        docker(c, worker, &image);
        c.idle_on_complete = Some("3s".into());
    });
    let mut conn = server.accept().await;
    conn.hello().await;
    // A host file the container must not be able to make the worker overwrite.
    let victim = w.dir.path().join("victim");
    std::fs::write(&victim, "host content\n").unwrap();
    let finished = |m: &WorkerToServer| {
        matches!(
            m,
            WorkerToServer::TaskCompleted(_) | WorkerToServer::TaskFailed(_)
        )
    };
    // The task replaces its control files with symlinks to the host path
    // (which the worker, on the host, would follow).
    let mut a = w.assignment("run-swap", "exec-s1", &[]);
    a.environment = Some(env_spec(&[&format!(
        "ln -sfn {v} /.hangar/execution && ln -sfn {v} /.hangar/start.sh.tmp && ls -l /.hangar",
        v = victim.display()
    )]));
    conn.assign(a);
    let done = conn.recv_until(finished).await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
    let kept = w.workspace_root.join("exec-s1");
    assert!(
        std::fs::symlink_metadata(kept.join("ctl/execution"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the task swapped the file"
    );
    // The follow-up reuses the container: the worker rewrites the files.
    let mut a = w.assignment("run-swap", "exec-s2", &[]);
    a.environment = Some(env_spec(&[]));
    conn.assign(a);
    let done = conn.recv_until(finished).await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host content\n");
    let meta = std::fs::symlink_metadata(kept.join("ctl/execution")).unwrap();
    assert!(meta.file_type().is_file(), "replaced by a regular file");
    assert_eq!(
        std::fs::read_to_string(kept.join("ctl/execution")).unwrap(),
        "exec-s2"
    );
    wait_until(
        || containers_of(worker).is_empty(),
        "idle container removal",
    )
    .await;
}

#[tokio::test]
async fn s11_docker_full_policy_blocks_the_metadata_address() {
    let image = base_image().await;
    let worker = "dk-meta";
    let _sweep = Sweep(worker.into());
    let rule = |op: &str, chain: &str| {
        Command::new("iptables")
            .args([
                "-w",
                op,
                chain,
                "-i",
                "docker0",
                "-d",
                "169.254.169.254/32",
                "-m",
                "comment",
                "--comment",
                "hangar-metadata",
                "-j",
                "REJECT",
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    // Rules stay installed after a worker stops (others share them): remove
    // them so this worker has to install them itself.
    for chain in ["DOCKER-USER", "INPUT"] {
        while rule("-D", chain) {}
        assert!(!rule("-C", chain));
    }
    let mut server = FakeServer::start().await;
    let _w = TestWorker::start(&server, |c| docker(c, worker, &image));
    let mut conn = server.accept().await;
    conn.hello().await;
    // The backend started: its rules are in place for Docker's default bridge.
    for chain in ["DOCKER-USER", "INPUT"] {
        assert!(rule("-C", chain), "{chain}: no metadata rule");
    }
}
