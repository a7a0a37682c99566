//! The fault suite, session-stream and control-plane half: the server killed,
//! connections cut or blackholed, a replica failed over, the database gone,
//! while the real agent streams its events. One test per scenario id of
//! TESTING.md. Every test ends by asserting that no run was lost, that the
//! stored transcript is exactly what the agent spooled (no event lost or
//! duplicated), and that no process or workspace was left behind.

use super::faults::{LEASE, get_json, status_text, wait_in_progress};
use super::replicas::Schema;
use crate::suite::common::{dir_entries, hangar_bin, processes_under};
use hangar_client::Client;
use hangar_protocol::session::{EventBody, SessionEvent};
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use hangar_testkit::poll::{eventually_ok, until_ok, within};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// What a [`Proxy`] does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards both ways.
    Open,
    /// Blackholed: connections stay up but no byte moves (new ones wait),
    /// like a network partition TCP later recovers from.
    Paused,
    /// Closed port: new connections are reset at once.
    Refusing,
}

struct ProxyState {
    target: Mutex<SocketAddr>,
    mode: watch::Sender<Mode>,
    /// Cancelled by [`Proxy::sever`]; replaced by a fresh one each time.
    cut: Mutex<CancellationToken>,
}

/// A loopback TCP proxy the test controls: it can cut every connection
/// through it, blackhole it, refuse new connections, or forward to another
/// address (a load balancer switching replicas).
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    _accept: AbortOnDropHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            target: Mutex::new(target),
            mode: watch::channel(Mode::Open).0,
            cut: Mutex::new(CancellationToken::new()),
        });
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            // Owns every connection: dropping the proxy aborts them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((inbound, _)) = accepted else { continue };
                        if *accept_state.mode.borrow() == Mode::Refusing {
                            let _ = inbound.set_zero_linger();
                            continue;
                        }
                        let cut = lock(&accept_state.cut).clone();
                        connections.spawn(forward(inbound, accept_state.clone(), cut));
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Proxy {
            addr,
            state,
            _accept: AbortOnDropHandle::new(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resets every connection through the proxy (both ends see the cut).
    fn sever(&self) {
        let old = std::mem::take(&mut *lock(&self.state.cut));
        old.cancel();
    }

    fn set_mode(&self, mode: Mode) {
        self.state.mode.send_replace(mode);
    }

    /// New connections go to `target` from now on.
    fn retarget(&self, target: SocketAddr) {
        *lock(&self.state.target) = target;
    }
}

async fn forward(inbound: TcpStream, state: Arc<ProxyState>, cut: CancellationToken) {
    let mut mode = state.mode.subscribe();
    let open = |m: &Mode| *m != Mode::Paused;
    let target = *lock(&state.target);
    let relay = async {
        if mode.wait_for(open).await.is_err() {
            return None;
        }
        let outbound = TcpStream::connect(target).await.ok()?;
        let (ri, wi) = inbound.into_split();
        let (ro, wo) = outbound.into_split();
        let (a, b) = (
            pump(ri, wo, state.mode.subscribe()),
            pump(ro, wi, state.mode.subscribe()),
        );
        tokio::select! {
            _ = async { tokio::join!(a, b) } => None,
            () = cut.cancelled() => Some(()),
        }
    };
    // On a cut the halves are dropped inside `relay`; a zero linger was set
    // on both sockets when they were split, so both ends see a reset.
    let _ = relay.await;
}

/// Copies one direction; holds bytes while the proxy is paused.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let _ = from.as_ref().set_zero_linger();
    let _ = to.as_ref().set_zero_linger();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if mode.wait_for(|m| *m != Mode::Paused).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if mode.wait_for(|m| *m != Mode::Paused).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn socket_of(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).unwrap();
    let host = url.host_str().unwrap();
    let port = url.port_or_known_default().unwrap();
    format!("{host}:{port}").parse().unwrap()
}

/// Parallel shell calls in the burst turn (each makes a `tool_call` and a
/// `tool_result` event).
const BURST_CALLS: usize = 120;

/// The agent's script: one turn of [`BURST_CALLS`] parallel `echo` calls plus
/// one `sleep hold` (so the `tool_call` burst is streamed while the tools
/// run, and the `tool_result` burst follows `hold` later), then a final answer.
fn burst_script(hold: Duration) -> Vec<Turn> {
    // Padding makes every event a realistic size for the server to commit.
    let pad = "x".repeat(512);
    let mut calls = vec![(
        "shell",
        json!({"command": format!("sleep {}", hold.as_secs_f64()), "timeout_ms": 120000}),
    )];
    for i in 0..BURST_CALLS {
        calls.push(("shell", json!({"command": format!("echo burst-{i} {pad}")})));
    }
    let mut script = vec![Turn::tool_calls(calls)];
    // A model call cut in flight (through a severed link) is retried, and a
    // real model answers again: spare answers for the retries.
    script.extend((0..FINAL_ANSWERS).map(|_| Turn::text("all done")));
    script
}

/// Final answers in the script; more than one only when a call is retried.
const FINAL_ANSWERS: usize = 8;

/// A run on worker `host`.
fn run_on(host: &str) -> RunAgentRequest {
    RunAgentRequest {
        prompt: Some("stream a burst of events".into()),
        config: Some(AgentConfig {
            worker_host: Some(host.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Worker flags: the test lease for self-fencing, a short kill grace, and the
/// agent's spool outside the workspace (`-e HANGAR_SPOOL_DIR`), so the test
/// can read what the agent produced after the worker removed the workspace.
fn worker_args(spool: &Path) -> Vec<String> {
    let lease = format!("{}s", LEASE.as_secs());
    vec![
        "--kill-grace".into(),
        "1s".into(),
        "--heartbeat-interval".into(),
        "2s".into(),
        "--read-timeout".into(),
        lease.clone(),
        "--fence-after".into(),
        lease,
        "-e".into(),
        format!("HANGAR_SPOOL_DIR={}", spool.display()),
        "--sandbox-mount".into(),
        crate::suite::common::shared_with_tasks(spool),
    ]
}

fn str_args(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Waits until the stored transcript holds at least `n` `tool_call` events.
async fn wait_tool_calls_stored(client: &Client, run_id: &str, n: usize) {
    wait_stored(client, run_id, "tool_call", n).await;
}

async fn wait_stored(client: &Client, run_id: &str, kind: &str, n: usize) -> usize {
    let what = format!("{n} `{kind}` events stored for {run_id}");
    // Checked every 5 ms: the tests act right after the event is stored.
    within(
        &what,
        Duration::from_secs(30),
        Duration::from_millis(5),
        async || {
            let t = client.transcript(run_id).await.map_err(|e| e.to_string())?;
            let count = t
                .events
                .iter()
                .filter(|e| event_kind(&e.event) == kind)
                .count();
            if count >= n {
                Ok(count)
            } else {
                Err(format!("{count} stored"))
            }
        },
    )
    .await
    .unwrap()
}

fn event_kind(event: &SessionEvent) -> &'static str {
    match &event.body {
        EventBody::ToolCall { .. } => "tool_call",
        EventBody::ToolResult { .. } => "tool_result",
        _ => "other",
    }
}

/// The events the agent spooled: the one spool file in `dir` (beside it, the
/// marker saying the server acknowledged them all).
fn spooled(dir: &Path) -> Vec<SessionEvent> {
    let files: Vec<_> = dir_entries(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    assert_eq!(files.len(), 1, "one execution, one spool: {files:?}");
    std::fs::read_to_string(&files[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("spool line {l}: {e}")))
        .collect()
}

/// Asserts the stored transcript of `run_id` is exactly what its agent
/// produced (its spool): every event once, in order, nothing else. Returns
/// the number of events.
async fn assert_transcript_is_spool(client: &Client, run_id: &str, spool: &Path) -> usize {
    let produced = spooled(spool);
    let seqs: Vec<u64> = produced.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=produced.len() as u64).collect();
    assert_eq!(seqs, expected, "the agent's own numbering has a gap");
    let stored = client.transcript(run_id).await.unwrap().events;
    let executions: std::collections::BTreeSet<&str> =
        stored.iter().map(|e| e.execution_id.as_str()).collect();
    assert_eq!(executions.len(), 1, "one execution: {executions:?}");
    let stored: Vec<SessionEvent> = stored.into_iter().map(|e| e.event).collect();
    let lost: Vec<u64> = produced
        .iter()
        .filter(|e| !stored.contains(e))
        .map(|e| e.seq)
        .collect();
    let extra: Vec<u64> = stored
        .iter()
        .filter(|e| !produced.contains(e))
        .map(|e| e.seq)
        .collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "events lost: {lost:?}; stored but never produced (or altered): {extra:?}"
    );
    assert_eq!(stored, produced, "duplicated or reordered events");
    // The script's calls each got exactly one call and one result event.
    let calls = stored
        .iter()
        .filter(|e| event_kind(e) == "tool_call")
        .count();
    let results = stored
        .iter()
        .filter(|e| event_kind(e) == "tool_result")
        .count();
    assert_eq!(
        (calls, results),
        (BURST_CALLS + 1, BURST_CALLS + 1),
        "tool events"
    );
    stored.len()
}

/// Asserts nothing of the worker's tasks is left: no process in, and no
/// workspace under, `root` (waits for the cleanup that follows the report).
async fn assert_nothing_left(root: &Path) {
    until_ok("nothing left behind", Duration::from_secs(15), || {
        let (processes, workspaces) = (processes_under(root), dir_entries(root));
        if processes.is_empty() && workspaces.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "processes {processes:?}, workspaces {workspaces:?}"
            ))
        }
    })
    .await;
}

/// Asserts every run ever created on the cluster is listed, and each in
/// its expected terminal state (nothing lost, nothing extra).
async fn assert_runs(client: &Client, expected: &[(&str, RunState)]) {
    let list: serde_json::Value = client
        .get_json("api/v1/agent/runs?limit=100")
        .await
        .unwrap();
    let listed = list["runs"].as_array().map(Vec::len).unwrap_or_default();
    assert_eq!(listed, expected.len(), "runs listed: {list}");
    for (id, state) in expected {
        let run = client.get_run(id).await.unwrap();
        assert_eq!(run.state, *state, "run {id}: {}", status_text(&run));
    }
}

/// `unacked` counts the agent logged when its session stream dropped (the
/// worker forwards the agent's log into its own).
fn unacked_at_disconnects(log: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("session stream disconnected"))
        .filter_map(|l| {
            let at = l.find("unacked")? + "unacked".len();
            let digits: String = l[at..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

fn count_in_log(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// Pid of the shell tool's `sleep` in a workspace under `root`.
async fn sleep_pid(root: &Path) -> i32 {
    until_ok("the sleep tool to start", Duration::from_secs(30), || {
        let found = processes_under(root);
        match found.iter().find(|(_, cmd)| cmd.starts_with("sleep ")) {
            Some((pid, _)) => Ok(*pid),
            None => Err(found),
        }
    })
    .await
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

async fn sqlite_cluster(llm: &FakeLlm) -> TestCluster {
    TestCluster::start(
        &hangar_bin(),
        ClusterOptions::default().with_fake_llm(&llm.base_url()),
    )
    .await
    .expect("start cluster")
}

/// D6: the server killed with `kill -9` and restarted while a task runs. The
/// task keeps running (the same tool process), the worker reconnects with
/// jittered backoff and reattaches, nothing is marked lost, and the run then
/// succeeds with its whole transcript.
#[tokio::test(flavor = "multi_thread")]
async fn d6_server_kill_and_restart_keeps_tasks_running_and_reattaches() {
    let llm = FakeLlm::start(burst_script(Duration::from_secs(5))).await;
    let mut cluster = sqlite_cluster(&llm).await;
    let client = cluster.client();
    let spool = tempfile::tempdir().unwrap();
    let args = worker_args(spool.path());
    let worker = cluster
        .start_worker("steady", &str_args(&args))
        .await
        .unwrap();
    let (root, log) = (worker.workspace_root.clone(), worker.log.clone());
    let created = client.create_run(&run_on("steady")).await.unwrap();
    wait_in_progress(&cluster, &client, &created.run_id).await;
    let tool = sleep_pid(&root).await;
    wait_tool_calls_stored(&client, &created.run_id, BURST_CALLS + 1).await;

    cluster.kill_server().await.unwrap();
    // Down for a while: the worker retries more than once meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.restart_server().await.unwrap();
    cluster.wait_worker("steady", true).await.unwrap();
    assert!(alive(tool), "the task's tool died with the server");
    let run = client.get_run(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::InProgress, "{}", status_text(&run));
    // Reattached, not re-assigned: the lease shown is still epoch 1.
    let workers = get_json(&cluster, "/api/v1/workers").await;
    let lease = &workers["workers"][0]["leases"][0];
    assert_eq!(lease["run_id"], created.run_id.as_str(), "{workers}");
    assert_eq!(lease["epoch"], 1, "{workers}");

    let done = cluster
        .wait_finished(&created.run_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{}", status_text(&done));
    assert_eq!(
        count_in_log(&log, "connected to the control plane"),
        2,
        "one connection before the kill, one after"
    );
    assert!(
        count_in_log(&log, "waiting before reconnecting") >= 1,
        "the worker reconnected without backing off"
    );
    let events = assert_transcript_is_spool(&client, &created.run_id, spool.path()).await;
    eprintln!("D6: {events} events stored, as spooled; tool pid {tool} survived the restart");
    assert_runs(&client, &[(&created.run_id, RunState::Succeeded)]).await;
    assert_nothing_left(&root).await;
}

/// E3: the server killed with `kill -9` while it ingests a burst of session
/// events, then restarted. The agent kept what was not acknowledged in its
/// spool and resends it: the stored transcript is exactly what the agent
/// produced, with no acknowledged event missing and none twice.
#[tokio::test(flavor = "multi_thread")]
async fn e3_server_kill_during_event_ingestion_loses_no_acked_event() {
    let llm = FakeLlm::start(burst_script(Duration::from_secs(4))).await;
    let mut cluster = sqlite_cluster(&llm).await;
    let client = cluster.client();
    let spool = tempfile::tempdir().unwrap();
    let args = worker_args(spool.path());
    let worker = cluster
        .start_worker("ingest", &str_args(&args))
        .await
        .unwrap();
    let (root, log) = (worker.workspace_root.clone(), worker.log.clone());
    let created = client.create_run(&run_on("ingest")).await.unwrap();
    // The kill lands once the first events of the burst are committed.
    wait_tool_calls_stored(&client, &created.run_id, 1).await;
    cluster.kill_server().await.unwrap();
    cluster.restart_server().await.unwrap();

    let done = cluster
        .wait_finished(&created.run_id, Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{}", status_text(&done));
    let unacked = unacked_at_disconnects(&log);
    assert!(
        unacked.iter().any(|n| *n > 0),
        "the kill did not land mid-ingestion (unacked at disconnects: {unacked:?})"
    );
    let events = assert_transcript_is_spool(&client, &created.run_id, spool.path()).await;
    eprintln!("E3: {events} events stored, as spooled; unacked at the disconnects: {unacked:?}");
    assert_runs(&client, &[(&created.run_id, RunState::Succeeded)]).await;
    assert_nothing_left(&root).await;
}

/// E1: the agent's and worker's connections to the server cut (reset) in
/// the middle of the `tool_call` burst and again in the middle of the
/// `tool_result` burst. The agent reconnects and resends above the server's
/// ack: the stored transcript equals what the agent produced.
#[tokio::test(flavor = "multi_thread")]
async fn e1_session_stream_cut_mid_burst_stores_exactly_what_the_agent_produced() {
    let llm = FakeLlm::start(burst_script(Duration::from_secs(3))).await;
    let mut cluster = sqlite_cluster(&llm).await;
    let client = cluster.client();
    let proxy = Proxy::start(socket_of(&cluster.url)).await;
    let spool = tempfile::tempdir().unwrap();
    let args = worker_args(spool.path());
    let root = cluster
        .start_worker_on(&proxy.url(), "cut", &str_args(&args))
        .await
        .unwrap();
    let log = cluster.worker("cut").unwrap().log.clone();
    let created = client.create_run(&run_on("cut")).await.unwrap();

    wait_tool_calls_stored(&client, &created.run_id, 1).await;
    proxy.sever();
    wait_stored(&client, &created.run_id, "tool_result", 1).await;
    proxy.sever();

    let done = cluster
        .wait_finished(&created.run_id, Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{}", status_text(&done));
    let unacked = unacked_at_disconnects(&log);
    assert!(
        unacked.iter().filter(|n| **n > 0).count() >= 1,
        "no cut landed mid-burst (unacked at disconnects: {unacked:?})"
    );
    let events = assert_transcript_is_spool(&client, &created.run_id, spool.path()).await;
    eprintln!("E1: {events} events stored, as spooled; unacked at the disconnects: {unacked:?}");
    assert_runs(&client, &[(&created.run_id, RunState::Succeeded)]).await;
    assert_nothing_left(&root).await;
}

/// D4: repeated short blips, each shorter than the lease: the link
/// blackholed (bytes held, as in a partition TCP recovers from) and the
/// port closed (connections reset and refused), in turn, while the run
/// streams and works. No false "lost": the run stays in progress on the
/// same tool process and succeeds; its transcript has no gap or duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn d4_repeated_short_blips_cause_no_false_lost_and_no_stream_gap() {
    // The tool outlives the four blips (about 12 s after it is found) with
    // room for a loaded machine: it was seen ending on its own by the third
    // blip when it slept 14 s and the burst took a while to store.
    let llm = FakeLlm::start(burst_script(Duration::from_secs(24))).await;
    let mut cluster = sqlite_cluster(&llm).await;
    let client = cluster.client();
    let proxy = Proxy::start(socket_of(&cluster.url)).await;
    let spool = tempfile::tempdir().unwrap();
    let args = worker_args(spool.path());
    let root = cluster
        .start_worker_on(&proxy.url(), "blippy", &str_args(&args))
        .await
        .unwrap();
    let log = cluster.worker("blippy").unwrap().log.clone();
    let created = client.create_run(&run_on("blippy")).await.unwrap();
    wait_tool_calls_stored(&client, &created.run_id, 1).await;
    let tool = sleep_pid(&root).await;

    let blip = LEASE / 3;
    for i in 0..4 {
        if i % 2 == 0 {
            proxy.set_mode(Mode::Paused);
        } else {
            proxy.set_mode(Mode::Refusing);
            proxy.sever();
        }
        tokio::time::sleep(blip).await;
        proxy.set_mode(Mode::Open);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let run = client.get_run(&created.run_id).await.unwrap();
        assert_eq!(
            run.state,
            RunState::InProgress,
            "after blip {i}: {}",
            status_text(&run)
        );
        assert!(alive(tool), "the task was stopped by blip {i}");
    }
    let done = cluster
        .wait_finished(&created.run_id, Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{}", status_text(&done));
    let events = assert_transcript_is_spool(&client, &created.run_id, spool.path()).await;
    eprintln!(
        "D4: {events} events stored, as spooled; worker connections: {}; agent unacked at the disconnects: {:?}",
        count_in_log(&log, "connected to the control plane"),
        unacked_at_disconnects(&log)
    );
    assert_runs(&client, &[(&created.run_id, RunState::Succeeded)]).await;
    assert_nothing_left(&root).await;
}

/// R2: a worker behind a load balancer (a proxy the test controls) fails
/// over from replica A to replica B mid-run, in the middle of the
/// `tool_call` burst: its and its agent's connections to A are cut and new
/// ones reach B, while A stays up. The run stays in progress past the lease
/// (A does not declare it lost), succeeds, and its transcript has no gap or
/// duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn r2_worker_failing_over_to_another_replica_mid_run_succeeds() {
    let schema = Schema::new();
    let llm = FakeLlm::start(burst_script(LEASE * 2)).await;
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    options.postgres = Some((schema.url.clone(), schema.name.clone()));
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    let client_a = cluster.client();
    let url_b = cluster.start_replica("b").await.unwrap();
    let client_b = Client::new(&url_b, cluster.api_key.clone()).unwrap();
    let proxy = Proxy::start(socket_of(&cluster.url)).await;
    let spool = tempfile::tempdir().unwrap();
    let args = worker_args(spool.path());
    let root = cluster
        .start_worker_on(&proxy.url(), "roaming", &str_args(&args))
        .await
        .unwrap();
    let log = cluster.worker("roaming").unwrap().log.clone();
    let created = client_a.create_run(&run_on("roaming")).await.unwrap();
    wait_tool_calls_stored(&client_a, &created.run_id, 1).await;

    proxy.retarget(socket_of(&url_b));
    proxy.sever();
    let failed_over = Instant::now();
    // Well past the lease on the worker's old replica, which is still up.
    while failed_over.elapsed() < LEASE + Duration::from_secs(2) {
        let run = client_a.get_run(&created.run_id).await.unwrap();
        assert_eq!(run.state, RunState::InProgress, "{}", status_text(&run));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let done = cluster
        .wait_finished(&created.run_id, Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{}", status_text(&done));
    assert_eq!(
        count_in_log(&log, "connected to the control plane"),
        2,
        "the worker connected to A, then to B"
    );
    let events = assert_transcript_is_spool(&client_b, &created.run_id, spool.path()).await;
    eprintln!(
        "R2: {events} events stored, as spooled; agent unacked at the failover: {:?}",
        unacked_at_disconnects(&log)
    );
    assert_runs(&client_b, &[(&created.run_id, RunState::Succeeded)]).await;
    assert_nothing_left(&root).await;
    drop(cluster);
    schema.drop_it().await;
}

async fn create_run(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    prompt: String,
) -> reqwest::Response {
    http.post(format!("{url}/api/v1/agent/runs"))
        .bearer_auth(key)
        .json(&json!({"prompt": prompt, "config": {"worker_host": "nobody"}}))
        .send()
        .await
        .expect("POST /agent/runs")
}

/// The same URL with its host and port replaced by `addr`.
fn via(url: &str, addr: SocketAddr) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_ip_host(addr.ip()).unwrap();
    url.set_port(Some(addr.port())).unwrap();
    url.to_string()
}

/// E6 (PostgreSQL): the database becomes unreachable (the only port the
/// server reaches PostgreSQL through is closed and its connections reset).
/// Writes are refused with a 503 `storage_unavailable` and `Retry-After`,
/// never a 200 or a 500; `/readyz` fails and `/healthz` stays up; when the
/// database is back the server recovers by itself, and every acknowledged
/// run is there, and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn e6_postgres_unavailable_refuses_writes_with_503_and_recovers() {
    let schema = Schema::new();
    let proxy = Proxy::start(socket_of(&schema.url)).await;
    let mut options = ClusterOptions::default().with_fake_llm("http://127.0.0.1:9/v1");
    options.postgres = Some((via(&schema.url, proxy.addr), schema.name.clone()));
    let cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    let http = reqwest::Client::new();
    let (url, key) = (cluster.url.clone(), cluster.api_key.clone());

    let mut acked = Vec::new();
    for i in 0..3 {
        let r = create_run(&http, &url, &key, format!("before {i}")).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        acked.push(body["run_id"].as_str().unwrap().to_owned());
    }

    proxy.set_mode(Mode::Refusing);
    proxy.sever();
    let attempts = 3;
    let writes = futures::future::join_all(
        (0..attempts).map(|i| create_run(&http, &url, &key, format!("while down {i}"))),
    );
    let ready = http.get(format!("{url}/readyz")).send();
    let (writes, ready) = tokio::join!(writes, ready);
    for r in writes {
        assert_eq!(
            r.status().as_u16(),
            503,
            "an unreachable database is the server's problem, not the caller's"
        );
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );
        assert_eq!(
            r.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        let problem: serde_json::Value = r.json().await.unwrap();
        assert_eq!(problem["error"], "storage_unavailable", "{problem}");
        assert_eq!(problem["retryable"], true, "{problem}");
    }
    assert_eq!(ready.unwrap().status().as_u16(), 503);
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // The database is back: the server recovers by itself.
    proxy.set_mode(Mode::Open);
    eventually_ok("/readyz to recover", Duration::from_secs(20), async || {
        let r = http.get(format!("{url}/readyz")).send().await.unwrap();
        if r.status() == 200 {
            Ok(())
        } else {
            Err(r.status())
        }
    })
    .await;
    let r = create_run(&http, &url, &key, "after".into()).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    acked.push(body["run_id"].as_str().unwrap().to_owned());

    let client = cluster.client();
    let expected: Vec<(&str, RunState)> = acked
        .iter()
        .map(|id| (id.as_str(), RunState::Queued))
        .collect();
    assert_runs(&client, &expected).await;
    drop(cluster);
    schema.drop_it().await;
}
