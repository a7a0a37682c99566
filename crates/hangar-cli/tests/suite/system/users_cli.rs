//! `hangar user …` and `hangar team show`: the first dashboard admin is made
//! from the CLI with the bootstrap key, and can then sign in.

use crate::suite::common::{cluster_with, hangar_bin};
use hangar_testkit::fake_llm::FakeLlm;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn hangar(url: &str, key: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(hangar_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("HANGAR_SERVER_URL", url)
        .env("HANGAR_API_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn failed(out: Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should fail");
    String::from_utf8(out.stderr).unwrap()
}

async fn sign_in(url: &str, email: &str, password: &str) -> u16 {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{url}/login"))
        .form(&[("email", email), ("password", password)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_admin_is_created_from_the_cli_and_signs_in() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let (url, key) = (cluster.url.as_str(), cluster.api_key.as_str());
    let run = |args: &[&str], stdin: Option<&str>| hangar(url, key, args, stdin);

    let out = ok(
        run(
            &[
                "user",
                "create",
                "--email",
                "me@example.com",
                "--role",
                "admin",
                "--password-stdin",
            ],
            Some("first admin passphrase\n"),
        ),
        "user create",
    );
    assert!(out.contains("Created admin me@example.com"), "{out}");
    assert!(out.contains("/login"), "{out}");
    assert_eq!(
        sign_in(url, "me@example.com", "first admin passphrase").await,
        303
    );
    // The trailing newline from stdin is not part of the password.
    assert_eq!(
        sign_in(url, "me@example.com", "first admin passphrase\n").await,
        401
    );

    let list = ok(
        run(&["user", "list", "--output-format", "json"], None),
        "user list",
    );
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let users = list["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{list}");
    assert!(!list.to_string().contains("passphrase"), "{list}");
    let table = ok(run(&["user", "list"], None), "user list");
    assert!(
        table.contains("me@example.com") && table.contains("admin"),
        "{table}"
    );
    let team = ok(run(&["team", "show"], None), "team show");
    assert!(
        team.contains("default") && team.contains("Users  2"),
        "{team}"
    );

    // set-password reads stdin; the old password stops working.
    ok(
        run(
            &["user", "set-password", "ME@example.com"],
            Some("second passphrase!"),
        ),
        "user set-password",
    );
    assert_eq!(
        sign_in(url, "me@example.com", "first admin passphrase").await,
        401
    );
    assert_eq!(
        sign_in(url, "me@example.com", "second passphrase!").await,
        303
    );

    // A member, then deleted.
    let id = ok(
        run(
            &[
                "user",
                "create",
                "--email",
                "mo@example.com",
                "--name",
                "Mo",
                "--output-format",
                "text",
            ],
            None,
        ),
        "user create member",
    );
    assert!(!id.trim().is_empty());
    ok(
        run(&["user", "delete", "mo@example.com"], None),
        "user delete",
    );
    let table = ok(run(&["user", "list"], None), "user list");
    assert!(!table.contains("mo@example.com"), "{table}");

    // Mistakes are explained.
    let err = failed(
        run(&["user", "create", "--email", "nope"], None),
        "bad email",
    );
    assert!(err.contains("not an email address"), "{err}");
    let err = failed(
        run(
            &[
                "user",
                "create",
                "--email",
                "x@example.com",
                "--password-stdin",
            ],
            Some(""),
        ),
        "empty stdin",
    );
    assert!(err.contains("standard input is empty"), "{err}");
    let err = failed(
        run(
            &[
                "user",
                "create",
                "--email",
                "x@example.com",
                "--password-stdin",
            ],
            Some("short"),
        ),
        "short password",
    );
    assert!(err.contains("too short"), "{err}");
    let err = failed(
        run(&["user", "delete", "ghost@example.com"], None),
        "unknown user",
    );
    assert!(err.contains("no user with email"), "{err}");
}
