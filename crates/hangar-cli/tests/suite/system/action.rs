//! The GitHub Action (`action.yml` at the repository root), without GitHub:
//! its `runs.steps` run in order with bash as a runner would run them (each
//! step's `env:` with `inputs.*` and `steps.*.outputs.*` substituted,
//! `GITHUB_OUTPUT`/`GITHUB_STEP_SUMMARY` files, `GITHUB_ACTION_PATH`), then
//! the action's `outputs:` are evaluated. The binary is the one under test
//! (`hangar_path`).

use crate::suite::common::{cluster_with, hangar_bin};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The repository root (where `action.yml` is).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn action() -> serde_norway::Value {
    let text = std::fs::read_to_string(repo_root().join("action.yml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// What one run of the action left behind.
#[derive(Debug)]
struct ActionRun {
    /// Exit status of the last step that ran.
    success: bool,
    /// The action's `outputs:`, evaluated.
    outputs: BTreeMap<String, String>,
    /// Everything the steps printed (stdout then stderr, step by step).
    log: String,
    /// The job summary the steps wrote.
    step_summary: String,
}

/// Parses a `GITHUB_OUTPUT` file: `name=value` lines and `name<<DELIM` blocks.
fn parse_outputs(text: &str) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<") {
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delimiter {
                    break;
                }
                value.push(l);
            }
            outputs.insert(name.to_owned(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            outputs.insert(name.to_owned(), value.to_owned());
        }
    }
    outputs
}

/// Substitutes the `${{ … }}` expressions the action uses; any other
/// expression fails the test (the harness would not run it as GitHub does).
fn substitute(
    text: &str,
    inputs: &BTreeMap<String, String>,
    steps: &BTreeMap<String, BTreeMap<String, String>>,
) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("unclosed ${{") + start;
        let expr = rest[start + 3..end].trim();
        let value = if let Some(name) = expr.strip_prefix("inputs.") {
            inputs
                .get(name)
                .unwrap_or_else(|| panic!("undeclared input {name}"))
                .clone()
        } else if let Some(path) = expr.strip_prefix("steps.") {
            let (id, output) = path.split_once(".outputs.").expect("steps.ID.outputs.NAME");
            steps
                .get(id)
                .and_then(|o| o.get(output))
                .cloned()
                .unwrap_or_default()
        } else {
            panic!("the test harness does not know the expression `{expr}`");
        };
        out.push_str(&value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Runs the action's steps with `given` inputs, in `workspace`, with `env`
/// as the job's environment.
async fn run_action(workspace: &Path, given: &[(&str, &str)], env: &[(&str, &str)]) -> ActionRun {
    let action = action();
    let mut inputs: BTreeMap<String, String> = BTreeMap::new();
    for (name, spec) in action["inputs"].as_mapping().unwrap() {
        let default = spec["default"].as_str().unwrap_or_default();
        inputs.insert(name.as_str().unwrap().to_owned(), default.to_owned());
    }
    let bin = hangar_bin();
    let mut all: Vec<(&str, &str)> = vec![("hangar_path", bin.to_str().unwrap())];
    all.extend_from_slice(given);
    for (name, value) in all {
        assert!(inputs.contains_key(name), "action.yml has no input {name}");
        inputs.insert(name.to_owned(), value.to_owned());
    }
    assert_eq!(action["runs"]["using"].as_str(), Some("composite"));

    let files = tempfile::tempdir().unwrap();
    let summary_file = files.path().join("step-summary.md");
    let mut steps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut log = String::new();
    let mut success = true;
    for (i, step) in action["runs"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(step["shell"].as_str(), Some("bash"), "step {i}");
        let script = step["run"].as_str().unwrap();
        let script_file = files.path().join(format!("step-{i}.sh"));
        std::fs::write(&script_file, substitute(script, &inputs, &steps)).unwrap();
        let output_file = files.path().join(format!("output-{i}"));
        std::fs::write(&output_file, "").unwrap();
        let runner_temp = files.path().join("runner-temp");
        std::fs::create_dir_all(&runner_temp).unwrap();
        let mut cmd = tokio::process::Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&script_file)
            .current_dir(workspace)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", workspace)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_WORKSPACE", workspace)
            .env("GITHUB_ACTION_PATH", repo_root())
            .env("GITHUB_OUTPUT", &output_file)
            .env("GITHUB_STEP_SUMMARY", &summary_file)
            .env("RUNNER_TEMP", &runner_temp);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(step_env) = step["env"].as_mapping() {
            for (k, v) in step_env {
                let value = match v {
                    serde_norway::Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other).unwrap().trim().to_owned(),
                };
                cmd.env(k.as_str().unwrap(), substitute(&value, &inputs, &steps));
            }
        }
        let out = cmd.output().await.unwrap();
        log.push_str(&String::from_utf8_lossy(&out.stdout));
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        if let Some(id) = step["id"].as_str() {
            let written = std::fs::read_to_string(&output_file).unwrap();
            steps.insert(id.to_owned(), parse_outputs(&written));
        }
        if !out.status.success() {
            success = false;
            break;
        }
    }
    let mut outputs = BTreeMap::new();
    for (name, spec) in action["outputs"].as_mapping().unwrap() {
        let value = substitute(spec["value"].as_str().unwrap(), &inputs, &steps);
        outputs.insert(name.as_str().unwrap().to_owned(), value);
    }
    ActionRun {
        success,
        outputs,
        log,
        step_summary: std::fs::read_to_string(&summary_file).unwrap_or_default(),
    }
}

/// The job environment of a run in the job: the fake LLM as OpenAI.
fn llm_env(llm: &FakeLlm) -> Vec<(&'static str, String)> {
    vec![
        ("OPENAI_API_KEY", "sk-fake".to_owned()),
        ("OPENAI_BASE_URL", llm.base_url()),
    ]
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn action_steps_never_interpolate_expressions_into_scripts() {
    // Script injection: an input written into a `run:` text would run as
    // shell. Every value reaches the scripts through `env:`.
    let action = action();
    for step in action["runs"]["steps"].as_sequence().unwrap() {
        let script = step["run"].as_str().unwrap();
        assert!(
            !script.contains("${{"),
            "a run: script interpolates: {script}"
        );
        assert!(
            script.contains("$GITHUB_ACTION_PATH/scripts/action/"),
            "{script}"
        );
    }
    // Every input is declared with a description, and each is used.
    let text = std::fs::read_to_string(repo_root().join("action.yml")).unwrap();
    for (name, spec) in action["inputs"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert!(spec["description"].as_str().is_some(), "{name}");
        assert!(
            text.contains(&format!("${{{{ inputs.{name} }}}}")),
            "input {name} is never passed to a step"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn action_unmanaged_run_in_the_job_sets_the_outputs() {
    let llm = FakeLlm::start(vec![Turn::text("Reviewed: the change looks right.")]).await;
    let cluster = cluster_with(&llm).await;
    let workspace = tempfile::tempdir().unwrap();
    // No model key in the job: a tracked run uses the server's LLM gateway.
    let run = run_action(
        workspace.path(),
        &[
            ("prompt", "Review the change"),
            ("model", "fake/test-model"),
            ("name", "ci-review"),
            ("server_url", &cluster.url),
            ("api_key", &cluster.api_key),
            ("output_format", "json"),
        ],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.log);
    let o = &run.outputs;
    assert_eq!(o["state"], "SUCCEEDED", "{o:?}");
    assert_eq!(o["result"], "Reviewed: the change looks right.");
    // The run in the job is tracked on the server: its id and link.
    let run_id = &o["run_id"];
    assert!(!run_id.is_empty(), "{o:?}\n{}", run.log);
    let item = cluster.client().get_run(run_id).await.unwrap();
    assert_eq!(item.state, hangar_protocol::RunState::Succeeded);
    assert_eq!(
        item.source,
        Some(hangar_protocol::RunSourceType::Local),
        "{item:?}"
    );
    assert_eq!(Some(&o["run_url"]), item.session_link.as_ref());
    assert!(o["run_url"].ends_with(&format!("/runs/{run_id}")), "{o:?}");
    let json: Value = serde_json::from_str(&o["agent_output"]).unwrap();
    assert_eq!(json["state"], "SUCCEEDED");
    assert_eq!(json["run_id"], run_id.as_str());
    assert_eq!(json["run_url"], o["run_url"].as_str());
    assert!(
        run.step_summary.contains("Hangar run: SUCCEEDED"),
        "{}",
        run.step_summary
    );
    assert!(
        run.step_summary.contains(&o["run_url"]),
        "{}",
        run.step_summary
    );
    // The key never appears in the log except in the mask command.
    let key_lines = run
        .log
        .lines()
        .filter(|l| l.contains(&cluster.api_key))
        .collect::<Vec<_>>();
    assert_eq!(
        key_lines,
        vec![format!("::add-mask::{}", cluster.api_key)],
        "{}",
        run.log
    );
    assert_eq!(llm.requests()[0]["model"], "test-model");
}

#[tokio::test(flavor = "multi_thread")]
async fn action_inputs_reach_the_agent_verbatim() {
    let llm = FakeLlm::start(vec![Turn::text("done")]).await;
    let workspace = tempfile::tempdir().unwrap();
    let dir = workspace.path().display().to_string();
    // Shell metacharacters in every position a naive `run: hangar -p "${{ inputs.prompt }}"`
    // would execute; and a value that starts with a dash.
    let prompt = format!(
        "--help \"; touch {dir}/pwned; \" $(touch {dir}/pwned2) `touch {dir}/pwned3` '; touch {dir}/pwned4; ' ${{HOME}} \\ \nsecond line"
    );
    let env = llm_env(&llm);
    let run = run_action(
        workspace.path(),
        &[
            ("prompt", &prompt),
            ("model", "openai/fake-model"),
            ("name", "$(touch pwned5)"),
        ],
        &as_refs(&env),
    )
    .await;
    assert!(run.success, "{}", run.log);
    assert_eq!(run.outputs["state"], "SUCCEEDED");
    assert_eq!(run.outputs["result"], "done");
    assert_eq!(run.outputs["agent_output"], "done");
    // Without a server the run has no id or link.
    assert_eq!(run.outputs["run_id"], "");
    assert_eq!(run.outputs["run_url"], "");
    let leftovers = crate::suite::common::dir_entries(workspace.path())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("pwned")
        })
        .collect::<Vec<_>>();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The model saw the prompt exactly as given.
    let request = &llm.requests()[0];
    let user = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap();
    assert_eq!(user["content"].as_str(), Some(prompt.as_str()), "{request}");
}

#[tokio::test(flavor = "multi_thread")]
async fn action_cloud_run_on_the_teams_workers_sets_the_outputs() {
    let llm = FakeLlm::start(vec![Turn::text("Fixed the flaky test.")]).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("ci-worker", &[]).await.unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let run = run_action(
        workspace.path(),
        &[
            ("prompt", "Fix the flaky test"),
            ("cloud", "true"),
            ("host", "ci-worker"),
            ("name", "ci-fix"),
            ("share", "team:view"),
            ("server_url", &cluster.url),
            ("api_key", &cluster.api_key),
        ],
        &[],
    )
    .await;
    assert!(run.success, "{}", run.log);
    let o = &run.outputs;
    assert_eq!(o["state"], "SUCCEEDED", "{o:?}\n{}", run.log);
    assert_eq!(o["result"], "Fixed the flaky test.");
    assert_eq!(o["agent_output"], "Fixed the flaky test.");
    let item = cluster.client().get_run(&o["run_id"]).await.unwrap();
    assert_eq!(item.state, hangar_protocol::RunState::Succeeded);
    let config = item.agent_config.clone().unwrap();
    assert_eq!(config.worker_host.as_deref(), Some("ci-worker"));
    assert_eq!(config.name.as_deref(), Some("ci-fix"));
    assert_eq!(
        item.source,
        Some(hangar_protocol::RunSourceType::GithubAction)
    );
    assert_eq!(Some(&o["run_url"]), item.session_link.as_ref());
    assert!(
        run.log.contains(&format!("Created run {}", o["run_id"])),
        "{}",
        run.log
    );
    assert!(
        run.log.contains(&format!(
            "::notice title=Hangar run SUCCEEDED::{}",
            o["run_url"]
        )),
        "{}",
        run.log
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn action_without_a_prompt_or_a_server_fails_with_an_error() {
    let workspace = tempfile::tempdir().unwrap();
    let run = run_action(workspace.path(), &[], &[]).await;
    assert!(!run.success);
    assert!(
        run.log
            .contains("::error title=Hangar action::Either `prompt` or `skill` must be provided"),
        "{}",
        run.log
    );
    assert_eq!(run.outputs["state"], "");

    let run = run_action(workspace.path(), &[("prompt", "x"), ("cloud", "true")], &[]).await;
    assert!(!run.success);
    assert!(
        run.log
            .contains("::error title=Hangar action::cloud: true needs server_url"),
        "{}",
        run.log
    );

    let run = run_action(
        workspace.path(),
        &[("prompt", "x"), ("cloud", "yes please")],
        &[],
    )
    .await;
    assert!(!run.success);
    assert!(
        run.log
            .contains("::error title=Hangar action::cloud: expected true or false"),
        "{}",
        run.log
    );

    let run = run_action(
        workspace.path(),
        &[("prompt", "x"), ("hangar_path", "/nonexistent/hangar")],
        &[],
    )
    .await;
    assert!(!run.success);
    assert!(run.log.contains("::error title=Hangar action::hangar_path: /nonexistent/hangar is not an executable file"), "{}", run.log);
}

#[tokio::test(flavor = "multi_thread")]
async fn action_failed_run_sets_the_outputs_and_fails_the_step() {
    let llm = FakeLlm::start(vec![Turn::error(400, "the model refuses")]).await;
    let workspace = tempfile::tempdir().unwrap();
    let env = llm_env(&llm);
    let run = run_action(
        workspace.path(),
        &[("prompt", "do it"), ("model", "openai/fake-model")],
        &as_refs(&env),
    )
    .await;
    assert!(!run.success, "{}", run.log);
    let state = &run.outputs["state"];
    assert!(
        state == "FAILED" || state == "ERROR",
        "{:?}\n{}",
        run.outputs,
        run.log
    );
    assert!(
        run.log.contains(&format!(
            "::error title=Hangar action::the run ended {state}"
        )),
        "{}",
        run.log
    );
}
