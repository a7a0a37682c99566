//! The `hangar` client commands, run as a user would.

use crate::suite::common::{cluster_with, hangar_bin};
use hangar_testkit::fake_llm::FakeLlm;
use std::io::Write;
use std::process::{Command, Stdio};

struct Cli {
    url: String,
    key: String,
    home: tempfile::TempDir,
}

impl Cli {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(hangar_bin());
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("HANGAR_SERVER_URL", &self.url)
            .env("HANGAR_API_KEY", &self.key);
        c
    }

    /// Runs and returns stdout; panics with stderr on failure.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "hangar {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(!out.status.success(), "hangar {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_commands_work_end_to_end() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let cli = Cli {
        url: cluster.url.clone(),
        key: cluster.api_key.clone(),
        home: tempfile::tempdir().unwrap(),
    };

    let me: serde_json::Value =
        serde_json::from_str(&cli.ok(&["whoami", "--output-format", "json"])).unwrap();
    assert_eq!(me["kind"], "api_key");
    assert_eq!(me["team"]["name"], "default");

    // A secret from stdin, never echoed back.
    let mut child = cli
        .cmd(&["secret", "create", "GH_TOKEN"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ghp_dontshowme\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let listed = cli.ok(&["secret", "list"]);
    assert_eq!(listed.trim(), "GH_TOKEN");

    let created: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "environment",
        "create",
        "-n",
        "web",
        "-d",
        "debian:bookworm",
        "-r",
        "https://github.com/acme/web@main",
        "-c",
        "make deps",
        "-e",
        "CI=1",
        "-s",
        "GH_TOKEN",
        "--network",
        "allow:github.com,*.npmjs.org",
        "--output-format",
        "json",
    ]))
    .unwrap();
    assert_eq!(created["name"], "web");
    assert_eq!(created["repos"][0]["ref"], "main");
    assert_eq!(created["network_policy"]["hosts"][1], "*.npmjs.org");
    let pretty = cli.ok(&["environment", "get", "web"]);
    assert!(
        pretty.contains("https://github.com/acme/web @ main"),
        "{pretty}"
    );
    assert!(!pretty.contains("ghp_dontshowme"));
    assert_eq!(
        cli.ok(&["environment", "list", "--output-format", "text"])
            .trim(),
        created["id"].as_str().unwrap()
    );
    let err = cli.fails(&[
        "environment",
        "create",
        "-n",
        "bad",
        "--network",
        "sometimes",
    ]);
    assert!(err.contains("--network"), "{err}");

    // Runs: create with the environment, read back in every format.
    let run: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "agent",
        "run-cloud",
        "-p",
        "build the site",
        "--host",
        "nobody",
        "-e",
        "web",
        "--output-format",
        "json",
    ]))
    .unwrap();
    let id = run["run_id"].as_str().unwrap();
    assert_eq!(run["state"], "QUEUED");
    assert_eq!(
        cli.ok(&["run", "get", id, "--output-format", "text"])
            .trim(),
        "QUEUED"
    );
    let got: serde_json::Value =
        serde_json::from_str(&cli.ok(&["run", "get", id, "--output-format", "json"])).unwrap();
    assert_eq!(got["source"], "CLI");
    assert_eq!(
        got["agent_config"]["environment_id"], created["id"],
        "-e resolves the name to the id"
    );
    assert!(cli.ok(&["run", "list"]).contains(id));
    assert!(cli.ok(&["run", "cancel", id]).contains("Cancelled"));
    let err = cli.fails(&["run", "cancel", id]);
    assert!(err.contains("already ended"), "{err}");
    let err = cli.fails(&["run", "get", "does-not-exist"]);
    assert!(err.contains("does-not-exist"), "{err}");
    let err = cli.fails(&["run", "list", "--state", "DONE"]);
    assert!(err.contains("DONE"), "{err}");

    cli.ok(&["environment", "delete", "web"]);
    cli.ok(&["secret", "delete", "GH_TOKEN"]);

    // login saves credentials; later commands need no flags; logout forgets them.
    let saved = cli.home.path().join("config/hangar/cli.json");
    cli.ok(&["login"]);
    assert!(saved.exists());
    let mut bare = cli.cmd(&["whoami", "--output-format", "text"]);
    bare.env_remove("HANGAR_SERVER_URL")
        .env_remove("HANGAR_API_KEY");
    let out = bare.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "default");
    cli.ok(&["logout"]);
    assert!(!saved.exists());
    let mut bad = cli.cmd(&["login"]);
    bad.env("HANGAR_API_KEY", "hk_wrong");
    let out = bad.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));

    assert!(cli.ok(&["completions", "bash"]).contains("hangar"));
}

#[tokio::test(flavor = "multi_thread")]
async fn s8_worker_token_commands_create_list_and_expire() {
    let llm = FakeLlm::start(vec![]).await;
    let mut cluster = cluster_with(&llm).await;
    let cli = Cli {
        url: cluster.url.clone(),
        key: cluster.api_key.clone(),
        home: tempfile::tempdir().unwrap(),
    };

    // Exactly one binding.
    let err = cli.fails(&[
        "worker",
        "token",
        "create",
        "--worker-id",
        "a",
        "--pool",
        "b",
    ]);
    assert!(err.contains("--pool"), "{err}");
    let err = cli.fails(&["worker", "token", "create", "--name", "nothing"]);
    assert!(err.contains("--worker-id"), "{err}");

    let created: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "worker",
        "token",
        "create",
        "--worker-id",
        "cli-box",
        "--name",
        "cli box",
        "--output-format",
        "json",
    ]))
    .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("hw_"), "{created}");
    assert_eq!(created["worker_id"], "cli-box");
    assert_eq!(created["name"], "cli box");

    // Pretty output shows the secret once and how to start the worker.
    let pretty = cli.ok(&["worker", "token", "create", "--pool", "ci-"]);
    assert!(pretty.contains("hw_"), "{pretty}");
    assert!(
        pretty.contains(&format!("--server-url {}", cluster.url)),
        "{pretty}"
    );

    let listed: serde_json::Value =
        serde_json::from_str(&cli.ok(&["worker", "token", "list", "--output-format", "json"]))
            .unwrap();
    let mine = listed["worker_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap_or_else(|| panic!("not listed: {listed}"))
        .clone();
    assert!(mine.get("token").is_none(), "a secret is listed: {listed}");
    assert!(!listed.to_string().contains(&token), "{listed}");

    // A worker started with it connects; expiring it cuts the worker off.
    cluster.use_worker_token("cli-box", &token);
    cluster.start_worker("cli-box", &[]).await.unwrap();
    let table = cli.ok(&["worker", "token", "list"]);
    assert!(
        table.contains("worker cli-box") && table.contains("active"),
        "{table}"
    );
    cli.ok(&["worker", "token", "expire", &id]);
    cluster.wait_worker("cli-box", false).await.unwrap();
    let table = cli.ok(&["worker", "token", "list"]);
    assert!(table.contains("revoked"), "{table}");

    // The oz-agent-worker choice: a team key, made by an admin.
    let team_key: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "api-key",
        "create",
        "oz-worker",
        "--team",
        "--output-format",
        "json",
    ]))
    .unwrap();
    let oz = Cli {
        url: cluster.url.clone(),
        key: team_key["key"].as_str().unwrap().to_owned(),
        home: tempfile::tempdir().unwrap(),
    };
    let me: serde_json::Value =
        serde_json::from_str(&oz.ok(&["whoami", "--output-format", "json"])).unwrap();
    assert!(me["user"].is_null(), "a team key belongs to no user: {me}");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_test_command_queues_a_ping_in_the_delivery_log() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let cli = Cli {
        url: cluster.url.clone(),
        key: cluster.api_key.clone(),
        home: tempfile::tempdir().unwrap(),
    };
    let json = |text: String| -> serde_json::Value { serde_json::from_str(&text).unwrap() };
    let hook = json(cli.ok(&[
        "webhook",
        "create",
        "--url",
        "https://example.com/hangar-hook",
        "--output-format",
        "json",
    ]));
    let id = hook["id"].as_str().unwrap().to_owned();
    let ping = json(cli.ok(&["webhook", "test", &id, "--output-format", "json"]));
    assert_eq!(ping["event_type"], "ping", "{ping}");
    assert_eq!(ping["sequence"], -1);
    let pretty = cli.ok(&["webhook", "test", &id]);
    assert!(pretty.contains("(ping) queued"), "{pretty}");
    let log = json(cli.ok(&["webhook", "deliveries", &id, "--output-format", "json"]));
    let events: Vec<&str> = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["ping", "ping"], "{log}");
    let err = cli.fails(&["webhook", "test", "no-such-webhook"]);
    assert!(err.contains("does not exist"), "{err}");
}
