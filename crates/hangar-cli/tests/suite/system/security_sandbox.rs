//! Issue 11, build item 1, against real server, worker and agent processes
//! and real bubblewrap: what a task on the direct backend can see and reach
//! (S7), the network policies enforced in the sandbox (S11), and the
//! explicit `--no-sandbox` relaxation shown in the run's details.

use crate::suite::common::cluster_with;
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::cluster::TestCluster;
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::{Value, json};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn run_on(host: &str, environment: Option<&str>) -> RunAgentRequest {
    RunAgentRequest {
        prompt: Some("look around".into()),
        config: Some(AgentConfig {
            worker_host: Some(host.into()),
            environment_id: environment.map(str::to_owned),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates environment `env` (`name`, `network_policy`) when given, runs a
/// task on `host` in it, waits for it to succeed and returns what its tools
/// answered the model.
async fn succeed_on(
    cluster: &TestCluster,
    llm: &FakeLlm,
    host: &str,
    env: Option<(&str, Value)>,
) -> String {
    let client = cluster.client();
    if let Some((name, policy)) = &env {
        client
            .post_json::<_, Value>(
                "api/v1/environments",
                &json!({"name": name, "network_policy": policy}),
            )
            .await
            .unwrap();
    }
    let run = client
        .create_run(&run_on(host, env.as_ref().map(|(n, _)| *n)))
        .await
        .unwrap();
    let done = cluster.wait_finished(&run.run_id, TIMEOUT).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    tool_output(llm)
}

/// The output of the first tool call, as the model received it.
fn tool_output(llm: &FakeLlm) -> String {
    let requests = llm.requests();
    let second = requests
        .get(1)
        .expect("the model was asked again with the tool result");
    second["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line `KEY=value` of the probe's output.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the probe output:\n{out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn s7_direct_task_sees_only_its_workspace_its_processes_and_its_variables() {
    let probe = r#"
echo "uid=$(id -u)"
echo "pids=$(ls /proc | grep -cE '^[0-9]+$')"
echo "cmdlines=$(for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline; echo -n '|'; done)"
test -e "$CLUSTER_DIR/data" && echo data=visible || echo data=hidden
test -e "$CLUSTER_DIR/server.log" && echo serverlog=visible || echo serverlog=hidden
ls /root >/dev/null 2>&1 && echo home=visible || echo home=hidden
cat /proc/$PPID/environ >/dev/null 2>&1 && echo agent_environ=readable || echo agent_environ=denied
echo "init_environ=$(tr '\0' ' ' < /proc/1/environ)"
echo "tokens_anywhere=$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c '^HANGAR_RUN_TOKEN=')"
touch /usr/hangar-probe 2>/dev/null && echo usr=writable || echo usr=readonly
touch /etc/hangar-probe 2>/dev/null && echo etc=writable || echo etc=readonly
touch ./mine && echo workspace=writable || echo workspace=readonly
echo "siblings=$(ls .. | tr '\n' ' ')"
echo "env_names=$(env | cut -d= -f1 | sort | tr '\n' ' ')"
"#;
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": probe})),
        Turn::text("done"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let cluster_dir = cluster.dir().to_path_buf();
    let root = cluster
        .start_worker(
            "s7box",
            &["-e", &format!("CLUSTER_DIR={}", cluster_dir.display())],
        )
        .await
        .unwrap()
        .workspace_root
        .clone();
    // Another execution's workspace on the same root, which must stay unseen.
    std::fs::create_dir_all(root.join("someone-elses-run")).unwrap();
    let out = succeed_on(&cluster, &llm, "s7box", None).await;

    assert_eq!(field(&out, "uid"), "65534", "tasks never run as root");
    // bwrap's init, the agent, the shell tool and the probe: nothing of the host.
    let pids: usize = field(&out, "pids").parse().unwrap();
    assert!(pids <= 8, "the task sees {pids} processes:\n{out}");
    let cmdlines = field(&out, "cmdlines");
    assert!(!cmdlines.contains("hangar worker"), "{cmdlines}");
    assert!(!cmdlines.contains("hangar server"), "{cmdlines}");
    assert!(
        cmdlines.contains("agent run"),
        "the agent is there: {cmdlines}"
    );
    assert_eq!(field(&out, "data"), "hidden", "the server's data directory");
    assert_eq!(field(&out, "serverlog"), "hidden");
    assert_eq!(
        field(&out, "home"),
        "hidden",
        "the worker's home (cli.json)"
    );
    assert_eq!(
        field(&out, "agent_environ"),
        "denied",
        "the agent is non-dumpable"
    );
    let init_environ = field(&out, "init_environ");
    assert!(
        !init_environ.contains("HANGAR_"),
        "bubblewrap's init holds no task variable: {init_environ}"
    );
    assert_eq!(field(&out, "tokens_anywhere"), "0", "no readable run token");
    assert_eq!(field(&out, "usr"), "readonly");
    assert_eq!(field(&out, "etc"), "readonly");
    assert_eq!(field(&out, "workspace"), "writable");
    assert!(
        !field(&out, "siblings").contains("someone-elses-run"),
        "other workspaces are not in the view: {out}"
    );
    let names = field(&out, "env_names");
    assert!(!names.contains("HANGAR_RUN_TOKEN"), "{names}");
    assert!(!names.contains("HANGAR_API_KEY"), "{names}");
    assert!(!out.contains(&cluster.api_key), "the worker's key leaked");
    for expected in ["HOME", "PATH", "TMPDIR", "CLUSTER_DIR", "HANGAR_RUN_ID"] {
        assert!(
            names.split(' ').any(|n| n == expected),
            "{expected} missing: {names}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s7_direct_network_policy_none_leaves_loopback_and_the_server_only() {
    let probe = r#"
echo "interfaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
(exec 3<>/dev/tcp/1.1.1.1/80) 2>/dev/null && echo outside=reachable || echo outside=unreachable
(exec 3<>/dev/tcp/$FAKE_LLM_HOST/$FAKE_LLM_PORT) 2>/dev/null && echo host_service=reachable || echo host_service=unreachable
"#;
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": probe})),
        Turn::text("done"),
    ])
    .await;
    let llm_url = url::Url::parse(&llm.base_url()).unwrap();
    let mut cluster = cluster_with(&llm).await;
    cluster
        .start_worker(
            "netnone",
            &[
                "-e",
                &format!("FAKE_LLM_HOST={}", llm_url.host_str().unwrap()),
                "-e",
                &format!("FAKE_LLM_PORT={}", llm_url.port().unwrap()),
            ],
        )
        .await
        .unwrap();
    let out = succeed_on(
        &cluster,
        &llm,
        "netnone",
        Some(("offline", json!({"mode": "none"}))),
    )
    .await;
    assert_eq!(field(&out, "interfaces").trim(), "lo", "{out}");
    assert_eq!(field(&out, "outside"), "unreachable");
    assert_eq!(
        field(&out, "host_service"),
        "unreachable",
        "a service of the host on loopback is not the sandbox's loopback"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s11_direct_allowlist_goes_through_the_proxy_which_refuses_the_metadata_address() {
    let probe = r#"
echo "proxy=$HTTPS_PROXY"
ask() { exec 3<>/dev/tcp/127.0.0.1/3128 || { echo "$1=no-proxy"; return; }
  printf 'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$2" >&3
  read -r status <&3; echo "$1=$status"; exec 3>&-; }
ask metadata http://169.254.169.254/latest/meta-data/
ask unlisted http://example.org/
ask listed "http://$FAKE_LLM_HOST:$FAKE_LLM_PORT/v1/models"
(exec 4<>/dev/tcp/$FAKE_LLM_HOST/$FAKE_LLM_PORT) 2>/dev/null && echo direct=reachable || echo direct=unreachable
"#;
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": probe})),
        Turn::text("done"),
    ])
    .await;
    let llm_url = url::Url::parse(&llm.base_url()).unwrap();
    let host = llm_url.host_str().unwrap().to_owned();
    let mut cluster = cluster_with(&llm).await;
    // The fake LLM listens on loopback, an internal address: the worker must
    // list it explicitly for the proxy to reach it.
    let config = cluster.dir().join("worker-allow.yaml");
    std::fs::write(
        &config,
        format!("backend:\n  direct:\n    egress_allow_internal: [\"{host}\"]\n"),
    )
    .unwrap();
    cluster
        .start_worker(
            "netallow",
            &[
                "--config-file",
                config.to_str().unwrap(),
                "-e",
                &format!("FAKE_LLM_HOST={host}"),
                "-e",
                &format!("FAKE_LLM_PORT={}", llm_url.port().unwrap()),
            ],
        )
        .await
        .unwrap();
    let out = succeed_on(
        &cluster,
        &llm,
        "netallow",
        Some((
            "allow",
            json!({"mode": "allowlist",
                "hosts": [host.clone(), "169.254.169.254"]}),
        )),
    )
    .await;
    assert_eq!(field(&out, "proxy"), "http://127.0.0.1:3128");
    assert!(
        field(&out, "metadata").contains(" 403"),
        "the metadata address, although allowlisted: {out}"
    );
    assert!(field(&out, "unlisted").contains(" 403"), "{out}");
    assert!(
        field(&out, "listed").starts_with("HTTP/1.1 ") && !field(&out, "listed").contains(" 403"),
        "an allowlisted host is reached through the proxy: {out}"
    );
    assert_eq!(
        field(&out, "direct"),
        "unreachable",
        "no route but the proxy"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s7_sandbox_none_is_an_explicit_relaxation_shown_in_the_run_details() {
    let llm = FakeLlm::start(vec![Turn::text("one"), Turn::text("two")]).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("boxed", &[]).await.unwrap();
    cluster
        .start_worker("bare", &["--no-sandbox"])
        .await
        .unwrap();
    let client = cluster.client();
    for (host, expected) in [("boxed", None), ("bare", Some("none"))] {
        let run = client.create_run(&run_on(host, None)).await.unwrap();
        let done = cluster.wait_finished(&run.run_id, TIMEOUT).await.unwrap();
        assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
        let item: Value = client
            .get_json(&format!("api/v1/agent/runs/{}", run.run_id))
            .await
            .unwrap();
        assert_eq!(item["sandbox"].as_str(), expected, "{host}: {item}");
    }
    // Without the sandbox a restricted network cannot be enforced: refused.
    client
        .post_json::<_, Value>(
            "api/v1/environments",
            &json!({"name": "offline", "network_policy": {"mode": "none"}}),
        )
        .await
        .unwrap();
    let llm_left = client
        .create_run(&run_on("bare", Some("offline")))
        .await
        .unwrap();
    let done = cluster
        .wait_finished(&llm_left.run_id, TIMEOUT)
        .await
        .unwrap();
    assert_ne!(done.state, RunState::Succeeded);
    let message = serde_json::to_string(&done.status_message).unwrap();
    assert!(message.contains("sandbox"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn s1_direct_task_has_no_capabilities_no_new_privileges_and_no_host_namespaces() {
    let probe = r#"
grep -E '^(CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status | tr -d '\t' | sed 's/:/=/'
for ns in pid mnt ipc uts net user; do echo "ns_$ns=$(readlink /proc/self/ns/$ns)"; done
su -c id root </dev/null >/dev/null 2>&1 && echo su=worked || echo su=refused
"#;
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": probe})),
        Turn::text("done"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("s1box", &[]).await.unwrap();
    let out = succeed_on(
        &cluster,
        &llm,
        "s1box",
        Some(("offline", json!({"mode": "none"}))),
    )
    .await;
    for cap in ["CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(field(&out, cap), "0000000000000000", "{cap}: {out}");
    }
    assert_eq!(field(&out, "NoNewPrivs"), "1", "{out}");
    assert_eq!(field(&out, "su"), "refused", "setuid binaries give nothing");
    // Every namespace a task could use to reach the host is its own (the
    // user namespace is the host's for a root worker: tasks run as nobody).
    for ns in ["pid", "mnt", "ipc", "uts", "net"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(
            field(&out, &format!("ns_{ns}")),
            host.to_string_lossy(),
            "the task shares the host's {ns} namespace"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s6_direct_tools_cannot_escape_the_workspace_even_through_symlinks() {
    let llm = FakeLlm::start(vec![
        Turn::tool_calls([
            ("read_file", json!({"path": "../../host-secret.txt"})),
            ("read_file", json!({"path": "/proc/1/environ"})),
            (
                "shell",
                json!({"command": "ln -s \"$CLUSTER_DIR/host-secret.txt\" key; cat key && echo read=yes || echo read=no"}),
            ),
            ("read_file", json!({"path": "key"})),
        ]),
        Turn::text("done"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let cluster_dir = cluster.dir().to_path_buf();
    // A file of the host beside the worker's workspace root, like its data dir.
    let secret = "host-only-5e1c";
    std::fs::write(cluster_dir.join("host-secret.txt"), secret).unwrap();
    cluster
        .start_worker(
            "s6box",
            &["-e", &format!("CLUSTER_DIR={}", cluster_dir.display())],
        )
        .await
        .unwrap();
    let out = succeed_on(&cluster, &llm, "s6box", None).await;
    assert!(out.contains("read=no"), "the shell read the key: {out}");
    assert!(
        !out.contains(secret),
        "a host file reached the model: {out}"
    );
    assert!(!out.contains("HANGAR_RUN_TOKEN"), "{out}");
}

/// The network tests above, with server, worker and agent running as a user
/// that is not root (`nobody`): bubblewrap then makes a user namespace, and
/// the worker's relay and proxy still open inside the task's network
/// namespace. Re-runs this test binary under `setpriv` (CI runs as root).
#[tokio::test(flavor = "multi_thread")]
async fn s7_direct_network_policies_hold_for_a_worker_that_is_not_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test re-runs others as nobody and needs to start as root"
    );
    let me = std::env::current_exe().unwrap();
    let output = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&me)
        .args([
            "--exact",
            "suite::system::security_sandbox::s7_direct_network_policy_none_leaves_loopback_and_the_server_only",
            "suite::system::security_sandbox::s11_direct_allowlist_goes_through_the_proxy_which_refuses_the_metadata_address",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/tmp")
        .env("TMPDIR", "/tmp")
        .current_dir("/tmp")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("2 passed"),
        "as nobody:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
