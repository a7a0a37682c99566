//! Scheduled agents end to end: the CLI, the REST API's problems, the official
//! Python SDK (`oz-agent-sdk`), and a real cron slot creating a real run.

use crate::suite::common::{cluster_with, hangar_bin};
use hangar_testkit::cluster::TestCluster;
use hangar_testkit::fake_llm::FakeLlm;
use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::Duration;

struct Cli<'a> {
    cluster: &'a TestCluster,
    home: tempfile::TempDir,
}

impl<'a> Cli<'a> {
    fn new(cluster: &'a TestCluster) -> Self {
        Cli {
            cluster,
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(hangar_bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("HANGAR_SERVER_URL", &self.cluster.url)
            .env("HANGAR_API_KEY", &self.cluster.api_key)
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hangar {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output-format", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "hangar {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schedule_commands_manage_schedules_in_every_output_format() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let cli = Cli::new(&cluster);
    // Schedules may only name environments of their team; a name resolves to the id.
    let env: serde_json::Value = cluster
        .client()
        .post_json("api/v1/environments", &serde_json::json!({"name": "env-1"}))
        .await
        .unwrap();
    let env_id = env["id"].as_str().unwrap().to_owned();

    let created = cli.json(&[
        "schedule",
        "create",
        "--name",
        "Nightly deps",
        "--cron",
        "0 3 * * *",
        "-p",
        "Update dependencies",
        "--model",
        "fake/test-model",
        "--host",
        "builder-1",
        "--skill",
        "acme/tools:deps",
        "-e",
        "env-1",
        "--mcp",
        r#"{"docs": {"url": "http://127.0.0.1:9/mcp"}}"#,
    ]);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "Nightly deps");
    assert_eq!(created["cron_schedule"], "0 3 * * *");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["prompt"], "Update dependencies");
    let config = &created["agent_config"];
    assert_eq!(config["model_id"], "fake/test-model");
    assert_eq!(config["worker_host"], "builder-1");
    assert_eq!(config["skill_spec"], "acme/tools:deps");
    assert_eq!(config["environment_id"], env_id.as_str());
    assert_eq!(
        config["mcp_servers"]["docs"]["url"],
        "http://127.0.0.1:9/mcp"
    );
    let next = created["history"]["next_run"].as_str().unwrap();
    assert!(next.ends_with("T03:00:00Z"), "{next}");
    assert!(created["history"]["last_ran"].is_null());

    // A second one, to check ordering by name and the list formats.
    let text_id = cli.ok(&[
        "schedule",
        "create",
        "--name",
        "Alpha report",
        "--cron",
        "*/15 * * * *",
        "-p",
        "Report",
        "--output-format",
        "text",
    ]);
    let alpha = text_id.trim().to_owned();
    let listed = cli.json(&["schedule", "list"]);
    let names: Vec<&str> = listed["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Alpha report", "Nightly deps"]);
    let ids = cli.ok(&["schedule", "list", "--output-format", "text"]);
    assert_eq!(
        ids.lines().collect::<Vec<_>>(),
        [alpha.as_str(), id.as_str()]
    );
    let ndjson = cli.ok(&["schedule", "list", "--output-format", "ndjson"]);
    assert_eq!(ndjson.lines().count(), 2);
    for line in ndjson.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
    let table = cli.ok(&["schedule", "list"]);
    assert!(table.starts_with("SCHEDULE"), "{table}");
    assert!(
        table.contains("Nightly deps") && table.contains("0 3 * * *"),
        "{table}"
    );

    let pretty = cli.ok(&["schedule", "get", &id]);
    assert!(pretty.contains("Cron       0 3 * * * (UTC)"), "{pretty}");
    assert!(pretty.contains("Host       builder-1"), "{pretty}");

    // Update changes what is given and keeps the rest (the CLI sends a full PUT).
    let updated = cli.json(&[
        "schedule",
        "update",
        &id,
        "--cron",
        "30 9 * * 1-5",
        "--timezone",
        "Europe/Berlin",
    ]);
    assert_eq!(updated["cron_schedule"], "30 9 * * 1-5");
    assert_eq!(updated["timezone"], "Europe/Berlin");
    assert_eq!(updated["name"], "Nightly deps");
    assert_eq!(updated["prompt"], "Update dependencies");
    assert_eq!(updated["agent_config"]["worker_host"], "builder-1");
    let next = updated["history"]["next_run"].as_str().unwrap();
    // 09:30 in Berlin is 08:30 (winter) or 07:30 (summer) UTC.
    assert!(
        next.ends_with("T08:30:00Z") || next.ends_with("T07:30:00Z"),
        "{next}"
    );

    let paused = cli.json(&["schedule", "pause", &id]);
    assert_eq!(paused["enabled"], false);
    assert!(paused["history"]["next_run"].is_null());
    assert!(cli.ok(&["schedule", "get", &id]).contains("no (paused)"));
    let resumed = cli.json(&["schedule", "resume", &id]);
    assert_eq!(resumed["enabled"], true);
    assert!(resumed["history"]["next_run"].is_string());
    let disabled = cli.json(&["schedule", "update", &id, "--disable", "--utc"]);
    assert_eq!(disabled["enabled"], false);
    assert!(disabled["timezone"].is_null());

    // Bad input is refused with a reason.
    let err = cli.fails(&[
        "schedule",
        "create",
        "--name",
        "x",
        "--cron",
        "0 25 * * *",
        "-p",
        "y",
    ]);
    assert!(err.contains("field 2 (hour) `25`"), "{err}");
    let err = cli.fails(&[
        "schedule", "create", "--name", "x", "--cron", "0 9 * *", "-p", "y",
    ]);
    assert!(err.contains("exactly 5"), "{err}");
    let err = cli.fails(&[
        "schedule",
        "create",
        "--name",
        "x",
        "--cron",
        "0 9 * * *",
        "-p",
        "y",
        "--timezone",
        "Nowhere/City",
    ]);
    assert!(err.contains("Nowhere/City"), "{err}");

    let deleted = cli.json(&["schedule", "delete", &id]);
    assert_eq!(deleted["success"], true);
    let err = cli.fails(&["schedule", "get", &id]);
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(
        cli.ok(&["schedule", "delete", &alpha, "--output-format", "text"])
            .trim(),
        alpha
    );
    assert!(cli.ok(&["schedule", "list"]).contains("No schedules yet"));
}

async fn call(method: reqwest::Method, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(ctype, "application/problem+json", "{body}");
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn schedule_routes_follow_the_oz_api_and_explain_bad_input() {
    use reqwest::Method;
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let key = cluster.api_key.as_str();
    let base = format!("{}/api/v1/agent/schedules", cluster.url);

    let (status, created) = call(
        Method::POST,
        &base,
        key,
        Some(json!({"name": "n", "cron_schedule": "0 9 * * *", "prompt": "p"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let one = format!("{base}/{id}");

    let bad: Vec<(Method, String, Value, u16, &str)> = vec![
        (
            Method::POST,
            base.clone(),
            json!({"name": "n", "cron_schedule": "61 * * * *", "prompt": "p"}),
            400,
            "field 1 (minute)",
        ),
        (
            Method::POST,
            base.clone(),
            json!({"name": "n", "cron_schedule": "* * * * MON-FUNDAY", "prompt": "p"}),
            400,
            "field 5 (day-of-week)",
        ),
        (
            Method::POST,
            base.clone(),
            json!({"name": "n", "cron_schedule": "0 0 30 2 *", "prompt": "p"}),
            400,
            "never matches",
        ),
        (
            Method::POST,
            base.clone(),
            json!({"name": "n", "prompt": "p"}),
            400,
            "cron_schedule",
        ),
        (
            Method::POST,
            base.clone(),
            json!({"name": "n", "cron_schedule": "0 9 * * *"}),
            400,
            "`prompt` is required",
        ),
        (
            Method::POST,
            base.clone(),
            json!({"name": " ", "cron_schedule": "0 9 * * *", "prompt": "p"}),
            400,
            "`name`",
        ),
        (
            Method::POST,
            base.clone(),
            json!({"name": "n", "cron_schedule": "0 9 * * *", "prompt": "p", "enabled": "yes"}),
            400,
            "expected a boolean",
        ),
        (
            Method::POST,
            base.clone(),
            json!({"name": "n", "cron_schedule": "0 9 * * *", "prompt": "p", "cron": "x"}),
            400,
            "unknown field `cron`",
        ),
        (
            Method::POST,
            base.clone(),
            json!({"name": "n", "cron_schedule": "0 9 * * *", "prompt": "p", "agent_config": {"model_id": "nope/x"}}),
            400,
            "model_id",
        ),
        (
            Method::POST,
            base.clone(),
            json!({"name": "n", "cron_schedule": "0 9 * * *", "prompt": "p", "timezone": "Mars/Base"}),
            400,
            "Mars/Base",
        ),
        // PUT is a full replace: name, cron_schedule and enabled are required.
        (
            Method::PUT,
            one.clone(),
            json!({"name": "n", "cron_schedule": "0 9 * * *", "prompt": "p"}),
            400,
            "missing field `enabled`",
        ),
        (
            Method::PUT,
            one.clone(),
            json!({"cron_schedule": "0 9 * * *", "enabled": true, "prompt": "p"}),
            400,
            "missing field `name`",
        ),
        (
            Method::PUT,
            format!("{base}/no-such-id"),
            json!({"name": "n", "cron_schedule": "0 9 * * *", "enabled": true, "prompt": "p"}),
            404,
            "no-such-id",
        ),
        (
            Method::GET,
            format!("{base}/no-such-id"),
            Value::Null,
            404,
            "no-such-id",
        ),
        (
            Method::DELETE,
            format!("{base}/no-such-id"),
            Value::Null,
            404,
            "no-such-id",
        ),
        (
            Method::POST,
            format!("{base}/no-such-id/pause"),
            Value::Null,
            404,
            "no-such-id",
        ),
        (
            Method::POST,
            format!("{base}/no-such-id/resume"),
            Value::Null,
            404,
            "no-such-id",
        ),
    ];
    for (method, url, body, want, needle) in bad {
        let body = (!body.is_null()).then_some(body);
        let (status, problem) = call(method.clone(), &url, key, body).await;
        assert_eq!(status, want, "{method} {url}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(needle),
            "{method} {url}: {detail:?} should mention {needle:?}"
        );
    }
    // Unauthenticated.
    let (status, _) = call(Method::GET, &base, "hk_wrong", None).await;
    assert_eq!(status, 401);

    // A full replace drops what is not sent.
    let (status, replaced) = call(
        Method::PUT,
        &one,
        key,
        Some(
            json!({"name": "m", "cron_schedule": "*/10 * * * *", "enabled": false, "prompt": "q"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["enabled"], false);
    assert!(replaced.get("agent_config").is_none());
    assert!(replaced["history"]["next_run"].is_null());

    // Runs can be filtered by schedule.
    let (status, runs) = call(
        Method::GET,
        &format!("{}/api/v1/agent/runs?schedule_id={id}", cluster.url),
        key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs["runs"], json!([]));

    let (status, deleted) = call(Method::DELETE, &one, key, None).await;
    assert_eq!((status, deleted), (200, json!({"success": true})));
}

const SDK_SCRIPT: &str = r#"
import json, os, sys
from oz_agent_sdk import OzAPI

client = OzAPI(api_key=os.environ["KEY"], base_url=os.environ["BASE"])
s = client.agent.schedules
out = {}

created = s.create(name="SDK nightly", cron_schedule="0 4 * * *", prompt="Tidy up",
                   agent_config={"model_id": "fake/test-model", "worker_host": "w1"})
out["created"] = created.model_dump(mode="json", by_alias=True)
got = s.retrieve(created.id)
out["retrieved_same"] = got.id == created.id and got.cron_schedule == "0 4 * * *"
listed = s.list()
out["listed"] = [x.name for x in listed.schedules]
updated = s.update(created.id, name="SDK nightly 2", cron_schedule="15 4 * * *", enabled=True,
                   prompt="Tidy up more")
out["updated"] = updated.model_dump(mode="json", by_alias=True)
out["paused"] = s.pause(created.id).enabled
out["resumed"] = s.resume(created.id).enabled
out["deleted"] = s.delete(created.id).success
try:
    s.retrieve(created.id)
    out["missing"] = "no error"
except Exception as e:
    out["missing"] = type(e).__name__ + ":" + str(getattr(e, "status_code", ""))
try:
    s.create(name="bad", cron_schedule="99 * * * *", prompt="x")
    out["bad_cron"] = "no error"
except Exception as e:
    out["bad_cron"] = type(e).__name__ + ":" + str(getattr(e, "status_code", "")) + ":" + str(e)
runs = client.agent.runs.list(schedule_id=created.id)
out["runs_for_schedule"] = len(runs.runs)
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_manages_schedules() {
    let python = crate::suite::common::test_python();
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(SDK_SCRIPT)
        .env("KEY", &cluster.api_key)
        .env("BASE", format!("{}/api/v1", cluster.url))
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; run scripts/test to create it"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SDK script failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));

    let created = &report["created"];
    assert_eq!(created["name"], "SDK nightly");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["agent_config"]["model_id"], "fake/test-model");
    assert_eq!(created["agent_config"]["worker_host"], "w1");
    assert!(
        created["history"]["next_run"]
            .as_str()
            .unwrap()
            .contains("T04:00:00")
    );
    assert_eq!(created["scope"]["type"], "Team");
    assert_eq!(report["retrieved_same"], true);
    assert_eq!(report["listed"], json!(["SDK nightly"]));
    assert_eq!(report["updated"]["name"], "SDK nightly 2");
    assert_eq!(report["updated"]["cron_schedule"], "15 4 * * *");
    assert_eq!(report["updated"]["prompt"], "Tidy up more");
    assert_eq!(report["paused"], false);
    assert_eq!(report["resumed"], true);
    assert_eq!(report["deleted"], true);
    assert_eq!(report["missing"], "NotFoundError:404");
    let bad = report["bad_cron"].as_str().unwrap();
    assert!(
        bad.starts_with("BadRequestError:400") && bad.contains("minute"),
        "{bad}"
    );
    assert_eq!(report["runs_for_schedule"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_slot_creates_one_scheduled_run() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let key = cluster.api_key.as_str();
    let (status, created) = call(
        reqwest::Method::POST,
        &format!("{}/api/v1/agent/schedules", cluster.url),
        key,
        Some(json!({"name": "every minute", "cron_schedule": "* * * * *", "prompt": "tick"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let runs_url = format!("{}/api/v1/agent/runs?schedule_id={id}", cluster.url);

    // Cron has minute resolution: the first slot comes within 60 s.
    let run = hangar_testkit::poll::eventually_ok(
        "a scheduled run",
        Duration::from_secs(75),
        async || {
            let (_, page) = call(reqwest::Method::GET, &runs_url, key, None).await;
            match page["runs"].as_array().and_then(|r| r.first()) {
                Some(run) => Ok(run.clone()),
                None => Err(page),
            }
        },
    )
    .await;
    assert_eq!(run["source"], "SCHEDULED_AGENT");
    assert_eq!(run["title"], "every minute");
    assert_eq!(run["prompt"], "tick");
    assert_eq!(
        run["schedule"],
        json!({"schedule_id": id, "schedule_name": "every minute", "cron_schedule": "* * * * *"})
    );
    assert_eq!(run["agent_config"]["model_id"], "fake/test-model");
    let (_, page) = call(reqwest::Method::GET, &runs_url, key, None).await;
    assert_eq!(
        page["runs"].as_array().unwrap().len(),
        1,
        "one run for one slot"
    );

    let (_, schedule) = call(
        reqwest::Method::GET,
        &format!("{}/api/v1/agent/schedules/{id}", cluster.url),
        key,
        None,
    )
    .await;
    assert!(schedule["history"]["last_ran"].is_string(), "{schedule}");
    assert!(schedule["last_spawn_error"].is_null());
}
