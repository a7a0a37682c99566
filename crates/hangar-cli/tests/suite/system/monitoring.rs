//! Monitoring (issue 13), with the real parts: `promtool` on the `/metrics`
//! of real server and worker processes, a real Prometheus scraping
//! `hangar up`, an OTLP collector receiving the protobuf export of metrics
//! and of one run's trace, runs by state across a restart and two replicas,
//! and JSON logs.

use crate::suite::common::{ended, hangar_bin, run_on};
use hangar_testkit::cluster::{ClusterOptions, TestCluster, metrics_url};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use hangar_testkit::poll::{eventually, eventually_ok};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// The repository root (deploy/ lives there).
fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

async fn scrape(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("scrape")
}

async fn scrape_text(url: &str, token: Option<&str>) -> String {
    let resp = scrape(url, token).await;
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.text().await.unwrap()
}

/// The value of one exact series (`name{labels}` as exported) in a scrape.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum over every series of metric `name`.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `promtool check metrics` on a scrape: exit 0 and no lint findings.
fn promtool_check_metrics(text: &str, what: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics on the {what}'s /metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `deploy/monitoring/check.py`: every metric the dashboard and the alert
/// rules query is in the code's catalog and, given scrapes, really exported.
fn check_dashboards(scrapes: &[&Path]) {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(repo().join("deploy/monitoring/check.py"))
        .arg("--catalog-rs")
        .arg(repo().join("crates/hangar-telemetry/src/catalog.rs"))
        .current_dir(repo());
    if !scrapes.is_empty() {
        cmd.arg("--scrape").args(scrapes);
    }
    let out = cmd.output().expect("python3");
    assert!(
        out.status.success(),
        "deploy/monitoring/check.py: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A cluster serving server metrics on their own listener (with a bearer
/// token) and worker metrics through `OTEL_METRICS_EXPORTER=prometheus`.
async fn metrics_cluster(llm: &FakeLlm, token_file: &Path, env: &[(&str, &str)]) -> TestCluster {
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    options.extra_config.push_str(&format!(
        "metrics:\n  listen: 127.0.0.1:0\n  bearer_token_file: {}\n  refresh_interval: 200ms\n",
        token_file.display()
    ));
    options.env = [
        ("OTEL_METRICS_EXPORTER", "prometheus"),
        ("OTEL_EXPORTER_PROMETHEUS_PORT", "0"),
    ]
    .iter()
    .chain(env)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    TestCluster::start(&hangar_bin(), options)
        .await
        .expect("start cluster")
}

const TOKEN: &str = "scrape-token-7c1e0f";

fn token_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("metrics-token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn monitoring_promtool_checks_metrics_of_a_server_and_worker_after_succeeded_failed_and_cancelled_runs()
 {
    let llm = FakeLlm::start(vec![
        Turn::text("done"),
        Turn::error(400, "the model refused the request"),
        Turn::delayed(Duration::from_secs(60), Turn::text("too late")),
    ])
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = metrics_cluster(&llm, &token_file(tmp.path()), &[]).await;
    let worker_log = cluster.start_worker("m1", &[]).await.unwrap().log.clone();
    let server_url = metrics_url(&cluster.server_log(), 0).await.unwrap();
    let worker_url = metrics_url(&worker_log, 0).await.unwrap();

    // The server's listener wants the token; the worker's has none (loopback).
    assert_eq!(scrape(&server_url, None).await.status(), 401);
    assert_eq!(scrape(&server_url, Some("wrong")).await.status(), 401);
    // Every series exists from the first scrape (primed at zero).
    let first = scrape_text(&worker_url, None).await;
    assert_eq!(
        value(
            &first,
            "hangar_worker_task_failures_total{phase=\"backend\",reason=\"setup_command\"}"
        ),
        Some(0.0),
        "{first}"
    );
    assert_eq!(
        value(&first, "hangar_worker_tasks_max_concurrent"),
        Some(4.0),
        "{first}"
    );

    // The succeeded run prepares an environment (a setup command), so the
    // prepare histogram has a sample too.
    let client = cluster.client();
    client
        .post_json::<_, serde_json::Value>(
            "api/v1/environments",
            &serde_json::json!({"name": "with-setup", "setup_commands": ["true"]}),
        )
        .await
        .unwrap();
    let ok = client
        .create_run(&hangar_protocol::RunAgentRequest {
            prompt: Some("succeed".into()),
            config: Some(hangar_protocol::AgentConfig {
                worker_host: Some("m1".into()),
                environment_id: Some("with-setup".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .run_id;
    assert_eq!(ended(&cluster, &ok).await["state"], "SUCCEEDED");
    let failed = run_on(&cluster, "m1", "fail").await;
    assert_eq!(ended(&cluster, &failed).await["state"], "FAILED");
    let cancelled = run_on(&cluster, "m1", "cancel me").await;
    eventually(
        "the third run to start",
        Duration::from_secs(30),
        || async {
            let r = client.get_run(&cancelled).await.ok()?;
            (r.state == hangar_protocol::RunState::InProgress).then_some(())
        },
    )
    .await;
    client.cancel_run(&cancelled).await.unwrap();
    assert_eq!(ended(&cluster, &cancelled).await["state"], "CANCELLED");

    let server = eventually(
        "runs by state to be refreshed",
        Duration::from_secs(20),
        || async {
            let text = scrape_text(&server_url, Some(TOKEN)).await;
            (value(&text, "hangar_server_runs{state=\"CANCELLED\"}") == Some(1.0)
                && value(&text, "hangar_server_worker_slots{state=\"busy\"}") == Some(0.0))
            .then_some(text)
        },
    )
    .await;
    let worker = eventually(
        "the worker to count three ends",
        Duration::from_secs(20),
        || async {
            let text = scrape_text(&worker_url, None).await;
            (total(&text, "hangar_worker_tasks_completed_total") == 3.0).then_some(text)
        },
    )
    .await;

    for (series, want) in [
        ("hangar_server_runs_created_total{source=\"API\"}", 3.0),
        ("hangar_server_runs{state=\"SUCCEEDED\"}", 1.0),
        ("hangar_server_runs{state=\"FAILED\"}", 1.0),
        ("hangar_server_runs{state=\"QUEUED\"}", 0.0),
        ("hangar_server_websocket_connections{kind=\"worker\"}", 1.0),
        ("hangar_server_workers_connected", 1.0),
        ("hangar_server_worker_slots{state=\"free\"}", 4.0),
        ("hangar_server_dispatch_latency_seconds_count", 3.0),
        ("hangar_server_queue_depth{host=\"any\"}", 0.0),
    ] {
        assert_eq!(value(&server, series), Some(want), "{series}\n{server}");
    }
    assert!(
        value(
            &server,
            "hangar_server_http_requests_total{method=\"POST\",route=\"/api/v1/agent/runs\",status_class=\"2xx\"}"
        ) == Some(3.0),
        "{server}"
    );
    assert!(
        total(&server, "hangar_server_events_ingested_total") > 0.0,
        "{server}"
    );
    assert!(total(&server, "hangar_server_llm_tokens_total") >= 0.0);
    for (series, want) in [
        ("hangar_worker_tasks_claimed_total", 3.0),
        ("hangar_worker_tasks_active", 0.0),
        ("hangar_worker_connected", 1.0),
        (
            "hangar_worker_tasks_completed_total{result=\"succeeded\"}",
            1.0,
        ),
        (
            "hangar_worker_tasks_completed_total{result=\"failed\"}",
            1.0,
        ),
        (
            "hangar_worker_tasks_completed_total{result=\"cancelled\"}",
            1.0,
        ),
        (
            "hangar_worker_task_failures_total{phase=\"backend\",reason=\"agent_invocation\"}",
            1.0,
        ),
        (
            "hangar_worker_task_duration_seconds_count{result=\"failed\"}",
            1.0,
        ),
        (
            "hangar_worker_info{backend=\"direct\",version=\"0.1.0\",worker_id=\"m1\"}",
            1.0,
        ),
        (
            "hangar_worker_prepare_duration_seconds_count{step=\"setup\"}",
            1.0,
        ),
    ] {
        assert_eq!(value(&worker, series), Some(want), "{series}\n{worker}");
    }
    // Bounded labels only: no run id or prompt anywhere in either scrape.
    for text in [&server, &worker] {
        for id in [&ok, &failed, &cancelled] {
            assert!(!text.contains(id.as_str()), "a run id is a label value");
        }
        assert!(!text.contains("cancel me"));
    }

    promtool_check_metrics(&server, "server");
    promtool_check_metrics(&worker, "worker");
    let server_file = tmp.path().join("server.prom");
    let worker_file = tmp.path().join("worker.prom");
    std::fs::write(&server_file, &server).unwrap();
    std::fs::write(&worker_file, &worker).unwrap();
    check_dashboards(&[&server_file, &worker_file]);
}

#[test]
fn monitoring_alert_rules_pass_promtool_and_dashboards_query_only_cataloged_metrics() {
    let rules = repo().join("deploy/monitoring/prometheus/hangar-alerts.yml");
    for args in [
        vec!["check", "rules"],
        vec!["test", "rules"],
        vec!["check", "config"],
    ] {
        let file = match args[0] {
            "test" => repo().join("deploy/monitoring/prometheus/hangar-alerts.test.yml"),
            _ if args[1] == "config" => repo().join("deploy/monitoring/prometheus/prometheus.yml"),
            _ => rules.clone(),
        };
        let out = std::process::Command::new("promtool")
            .args(&args)
            .arg(&file)
            .current_dir(file.parent().unwrap())
            .output()
            .expect("promtool (Debian package `prometheus`)");
        assert!(
            out.status.success(),
            "promtool {args:?} {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    check_dashboards(&[]);
    // The README's catalog names every metric, with its kind.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Monitoring")
        .nth(1)
        .expect("README has a Monitoring section");
    for m in hangar_telemetry::catalog::all() {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` ", m.name)))
            .unwrap_or_else(|| panic!("README's metric catalog lacks `{}`", m.name));
        assert!(row.contains(m.kind.prometheus_type()), "{row}");
    }
}

/// `hangar up` on a fresh HOME with a real Prometheus scraping it: runs
/// created, queue depth and worker saturation move as runs go through.
#[tokio::test(flavor = "multi_thread")]
async fn monitoring_prometheus_scrapes_hangar_up_and_sees_runs_queue_and_saturation_move() {
    let llm = FakeLlm::start(
        (0..3)
            .map(|_| Turn::delayed(Duration::from_secs(3), Turn::text("done")))
            .collect(),
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("hangar.yaml");
    std::fs::write(
        &config,
        format!(
            "providers_from_env: false\nproviders:\n  fake:\n    kind: openai\n    base_url: {}\n    api_key: test-key\n    default_model: test-model\nmetrics:\n  refresh_interval: 200ms\n",
            llm.base_url()
        ),
    )
    .unwrap();
    let up = hangar_testkit::up::HangarUp::start(
        &hangar_bin(),
        home,
        &[
            "--max-concurrent-tasks".into(),
            "1".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &[],
    )
    .unwrap();
    // The banner says where to scrape.
    let target = metrics_url(&up.log, 0).await.unwrap();
    let banner = up.output();
    assert!(banner.contains("  Metrics     http://"), "{banner}");
    let client = hangar_client::Client::new(&up.url(), up.api_key().unwrap()).unwrap();

    // A real Prometheus scraping it every 200 ms.
    let prom_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hostport = target
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    std::fs::write(
        up.home.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 200ms\n  evaluation_interval: 200ms\nscrape_configs:\n  - job_name: hangar\n    static_configs:\n      - targets: ['{hostport}']\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(up.home.path().join("prometheus.log")).unwrap();
    let _prometheus = tokio::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            up.home.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            up.home.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(prom_log.try_clone().unwrap())
        .stderr(prom_log)
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus (Debian package `prometheus`)");
    let http = reqwest::Client::new();
    let query = |q: String| {
        let http = http.clone();
        async move {
            let body: serde_json::Value = http
                .get(format!("http://127.0.0.1:{prom_port}/api/v1/query"))
                .query(&[("query", q.as_str())])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            body["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
        }
    };
    eventually(
        "Prometheus to scrape hangar up",
        Duration::from_secs(60),
        || query("up{job=\"hangar\"} == 1".into()),
    )
    .await;
    assert_eq!(
        query("sum(hangar_server_runs_created_total)".into()).await,
        Some(0.0)
    );

    // Three three-second runs on a worker that takes one at a time.
    let mut ids = Vec::new();
    for i in 0..3 {
        let run = client
            .create_run(&hangar_protocol::RunAgentRequest {
                prompt: Some(format!("run {i}")),
                ..Default::default()
            })
            .await
            .unwrap();
        ids.push(run.run_id);
    }
    eventually(
        "runs created to reach 3",
        Duration::from_secs(30),
        || async {
            (query("sum(hangar_server_runs_created_total)".into()).await == Some(3.0)).then_some(())
        },
    )
    .await;
    eventually(
        "the queue to hold runs",
        Duration::from_secs(30),
        || async {
            let depth = query("max(max_over_time(hangar_server_queue_depth[1m]))".into()).await?;
            (depth >= 1.0).then_some(())
        },
    )
    .await;
    eventually("the worker to be saturated", Duration::from_secs(30), || async {
        let q = "max_over_time((sum(hangar_worker_tasks_active) / sum(hangar_worker_tasks_max_concurrent))[1m:200ms])";
        (query(q.into()).await? >= 1.0).then_some(())
    })
    .await;
    eventually("all three to succeed", Duration::from_secs(60), || async {
        (query("max(hangar_server_runs{state=\"SUCCEEDED\"})".into()).await == Some(3.0))
            .then_some(())
    })
    .await;
    eventually("the queue to drain", Duration::from_secs(30), || async {
        (query("max(hangar_server_queue_depth)".into()).await == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(
        query("sum(hangar_worker_tasks_completed_total{result=\"succeeded\"})".into()).await,
        Some(3.0)
    );
    for id in ids {
        assert_eq!(
            client.get_run(&id).await.unwrap().state,
            hangar_protocol::RunState::Succeeded
        );
    }
}

/// OTLP: a collector receives the protobuf export of metrics and of one
/// run's trace, with spans of the server, the worker and the agent under the
/// trace id the run's details show.
#[tokio::test(flavor = "multi_thread")]
async fn monitoring_otlp_collector_receives_metrics_and_one_trace_from_server_worker_and_agent() {
    let collector = hangar_testkit::otlp::Collector::start().await.unwrap();
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", serde_json::json!({"command": "echo traced"})),
        Turn::text("done"),
    ])
    .await;
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    let endpoint = collector.endpoint();
    options.env = [
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    cluster.start_worker("t1", &[]).await.unwrap();
    let run_id = run_on(&cluster, "t1", "trace me").await;
    let run = ended(&cluster, &run_id).await;
    assert_eq!(run["state"], "SUCCEEDED", "{run}");
    let trace_id = run["trace_id"]
        .as_str()
        .expect("trace_id in the run's details")
        .to_owned();
    assert_eq!(trace_id.len(), 32);

    let wanted = [
        ("hangar-server", "hangar.run"),
        ("hangar-server", "run.create"),
        ("hangar-server", "run.dispatch"),
        ("hangar-worker", "worker.task"),
        ("hangar-worker", "task.prepare"),
        ("hangar-worker", "task.launch"),
        ("hangar-agent", "agent.run"),
        ("hangar-agent", "agent.turn"),
        ("hangar-agent", "llm.call"),
        ("hangar-agent", "tool.call"),
    ];
    let what = format!("every span of trace {trace_id}");
    let spans = eventually_ok(&what, Duration::from_secs(30), async || {
        let spans: Vec<_> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        let have: BTreeSet<(String, String)> = spans
            .iter()
            .map(|s| (s.service.clone(), s.name.clone()))
            .collect();
        if wanted
            .iter()
            .all(|(svc, name)| have.contains(&(svc.to_string(), name.to_string())))
        {
            return Ok(spans);
        }
        let received: BTreeSet<(String, String, String)> = collector
            .spans()
            .into_iter()
            .map(|s| (s.trace_id, s.service, s.name))
            .collect();
        Err(format!(
            "received: {received:#?}; rejected: {:?}",
            collector.rejected()
        ))
    })
    .await;
    // One tree: one root, and every other span's parent is in the trace.
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert_eq!(roots[0].name, "hangar.run");
    for s in &spans {
        assert!(
            s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_str()),
            "{} ({}) has a parent outside the trace: {spans:#?}",
            s.name,
            s.service
        );
    }
    let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
    assert_eq!(
        by_name("agent.run").parent_span_id,
        by_name("worker.task").span_id
    );
    assert_eq!(by_name("worker.task").parent_span_id, roots[0].span_id);
    assert!(
        by_name("tool.call")
            .attributes
            .contains(&("gen_ai.tool.name".into(), "shell".into()))
    );

    let metrics = eventually(
        "metrics from server and worker",
        Duration::from_secs(30),
        || async {
            let names: BTreeSet<(String, String)> = collector
                .metrics()
                .into_iter()
                .map(|m| (m.service, m.name))
                .collect();
            [
                ("hangar-server", "hangar_server_runs_created_total"),
                ("hangar-server", "hangar_server_runs"),
                ("hangar-worker", "hangar_worker_tasks_claimed_total"),
                ("hangar-worker", "hangar_worker_task_duration_seconds"),
            ]
            .iter()
            .all(|(s, n)| names.contains(&(s.to_string(), n.to_string())))
            .then_some(names)
        },
    )
    .await;
    assert!(!metrics.is_empty());
    assert!(
        collector.rejected().is_empty(),
        "{:?}",
        collector.rejected()
    );
    // The trace id is in the logs of the run too.
    let worker_log = std::fs::read_to_string(&cluster.worker("t1").unwrap().log).unwrap();
    assert!(
        worker_log.contains(&trace_id),
        "the worker's log lines name the trace"
    );
    let server_log = std::fs::read_to_string(cluster.server_log()).unwrap();
    assert!(
        server_log.contains(&trace_id),
        "the server logs the trace id"
    );
}

/// Runs by state come from the database: right after a restart, and the
/// same on two replicas.
#[tokio::test(flavor = "multi_thread")]
async fn monitoring_runs_by_state_is_right_after_a_server_restart() {
    let llm = FakeLlm::start(vec![Turn::text("one"), Turn::text("two")]).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = metrics_cluster(&llm, &token_file(tmp.path()), &[]).await;
    cluster.start_worker("r1", &[]).await.unwrap();
    for prompt in ["a", "b"] {
        let id = run_on(&cluster, "r1", prompt).await;
        assert_eq!(ended(&cluster, &id).await["state"], "SUCCEEDED");
    }
    // A queued run for a worker that does not exist.
    run_on(&cluster, "nobody", "waits").await;
    let expect = |text: &str| {
        value(text, "hangar_server_runs{state=\"SUCCEEDED\"}") == Some(2.0)
            && value(text, "hangar_server_runs{state=\"QUEUED\"}") == Some(1.0)
            && value(text, "hangar_server_queue_depth{host=\"nobody\"}") == Some(1.0)
    };
    let url = metrics_url(&cluster.server_log(), 0).await.unwrap();
    eventually(
        "the counts before the restart",
        Duration::from_secs(20),
        || async { expect(&scrape_text(&url, Some(TOKEN)).await).then_some(()) },
    )
    .await;

    let seen = std::fs::metadata(cluster.server_log()).unwrap().len() as usize;
    cluster.restart_server().await.unwrap();
    let url = metrics_url(&cluster.server_log(), seen).await.unwrap();
    let text = eventually(
        "the counts after the restart",
        Duration::from_secs(20),
        || async {
            let text = scrape_text(&url, Some(TOKEN)).await;
            expect(&text).then_some(text)
        },
    )
    .await;
    // The counters of this process start again; the gauges do not.
    assert_eq!(
        total(&text, "hangar_server_runs_created_total"),
        0.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn monitoring_runs_by_state_agrees_across_two_replicas() {
    let schema = crate::suite::system::replicas::Schema::new();
    let llm = FakeLlm::start(vec![Turn::text("one")]).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    options.postgres = Some((schema.url.clone(), schema.name.clone()));
    options.extra_config.push_str(&format!(
        "metrics:\n  listen: 127.0.0.1:0\n  bearer_token_file: {}\n  refresh_interval: 200ms\n",
        token_file(tmp.path()).display()
    ));
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    cluster.start_replica("b").await.unwrap();
    cluster.start_worker("p1", &[]).await.unwrap();
    let id = run_on(&cluster, "p1", "a").await;
    assert_eq!(ended(&cluster, &id).await["state"], "SUCCEEDED");
    run_on(&cluster, "nobody", "waits").await;
    let a = metrics_url(&cluster.server_log(), 0).await.unwrap();
    let b = metrics_url(&cluster.replica_log("b").unwrap(), 0)
        .await
        .unwrap();
    for url in [a, b] {
        eventually(
            "both replicas to count the same",
            Duration::from_secs(20),
            || async {
                let text = scrape_text(&url, Some(TOKEN)).await;
                (value(&text, "hangar_server_runs{state=\"SUCCEEDED\"}") == Some(1.0)
                    && value(&text, "hangar_server_runs{state=\"QUEUED\"}") == Some(1.0)
                    && value(&text, "hangar_server_queue_depth{host=\"nobody\"}") == Some(1.0))
                .then_some(())
            },
        )
        .await;
    }
    drop(cluster);
    schema.drop_it().await;
}

/// `--log-format json`: one object per line; request lines carry
/// `request_id`, task lines the run, execution, worker and trace ids; the
/// API key is never in them.
#[tokio::test(flavor = "multi_thread")]
async fn monitoring_json_logs_carry_request_and_run_fields_and_no_secret() {
    let llm = FakeLlm::start(vec![Turn::text("done")]).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = metrics_cluster(
        &llm,
        &token_file(tmp.path()),
        &[("HANGAR_LOG_FORMAT", "json")],
    )
    .await;
    let worker_log = cluster.start_worker("j1", &[]).await.unwrap().log.clone();
    let id = run_on(&cluster, "j1", "log me").await;
    assert_eq!(ended(&cluster, &id).await["state"], "SUCCEEDED");
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/agent/runs/{id}", cluster.url))
        .bearer_auth(&cluster.api_key)
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-42");
    let trace_id = hangar_telemetry::trace::TraceParent::for_run(&id).trace_id_hex();

    let lines = |path: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let span_field = |line: &serde_json::Value, field: &str| -> Option<String> {
        line["spans"]
            .as_array()?
            .iter()
            .find_map(|s| s[field].as_str().map(str::to_owned))
    };
    let server = lines(&cluster.server_log());
    assert!(
        server.iter().any(|l| span_field(l, "request_id").is_some()),
        "no server line carries a request_id"
    );
    assert!(
        server
            .iter()
            .any(|l| l["fields"]["trace_id"] == trace_id.as_str())
    );
    let worker = lines(&worker_log);
    let task_line = worker
        .iter()
        .find(|l| span_field(l, "run_id").as_deref() == Some(id.as_str()))
        .expect("a worker line inside the task's span");
    assert!(span_field(task_line, "execution_id").is_some());
    assert_eq!(span_field(task_line, "worker_id").as_deref(), Some("j1"));
    assert_eq!(
        span_field(task_line, "trace_id").as_deref(),
        Some(trace_id.as_str())
    );
    // (The server prints the bootstrap key once on stdout, which this test
    // sends to the same file; the log lines themselves never hold it.)
    for path in [cluster.server_log(), worker_log] {
        for line in lines(&path) {
            let text = line.to_string();
            assert!(
                !text.contains(&cluster.api_key),
                "{} logs the API key: {text}",
                path.display()
            );
            assert!(
                !text.contains(TOKEN),
                "{} logs the metrics token: {text}",
                path.display()
            );
        }
    }
}
