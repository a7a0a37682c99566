//! GitHub: the sha256 signature and the comment's age, mentions and labels,
//! the how-to comment, App installation tokens.

use super::*;

pub(super) fn github_comment(login: &str, text: &str, created_at: &str) -> Vec<u8> {
    json!({
        "action": "created",
        "repository": {"full_name": "acme/web"},
        "installation": {"id": 42},
        "issue": {"number": 12, "title": "Crash on save", "body": "Saving a draft crashes", "html_url": "https://github.com/acme/web/issues/12"},
        "comment": {"id": 1, "body": text, "user": {"login": login, "type": "User"},
                    "created_at": created_at, "html_url": "https://github.com/acme/web/issues/12#issuecomment-1"},
        "sender": {"login": login}
    })
    .to_string()
    .into_bytes()
}

pub(super) fn github_headers(body: &[u8], delivery: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "x-hub-signature-256",
            format!("sha256={}", sign_hex(HOOK.as_bytes(), &[body])),
        ),
        ("x-github-delivery", delivery.to_owned()),
        ("x-github-event", "issue_comment".to_owned()),
    ]
}

pub(super) fn rfc3339(secs_ago: i64) -> String {
    hangar_protocol::Timestamp::from_unix_millis((now() - secs_ago) * 1000).to_rfc3339()
}

pub(super) async fn github_setup(t: &TwoTeams) -> (FakeGithub, String) {
    let github = FakeGithub::with_token(PAT).await;
    t.member("ann").await;
    github.add_user("ann", Some("ann@a.test"));
    github.add_user("bob", None);
    secret(t, "GH_TOKEN", PAT).await;
    let (_, url) = integration(
        t,
        "github",
        HOOK,
        json!({"token_secret": "GH_TOKEN", "api_base_url": github.api_base_url(), "repos": ["acme/web"]}),
    )
    .await;
    (github, url)
}

#[tokio::test]
async fn c4_github_mention_starts_one_run_and_comments_on_the_issue() {
    let t = TwoTeams::start().await;
    let (github, url) = github_setup(&t).await;
    let body = github_comment("ann", "@hangar please fix this", &rfc3339(0));
    let (status, answer) = post(&t, &url, &github_headers(&body, "g-1"), &body).await;
    assert_outcome(status, &answer, "started");
    let run_id = answer["run_id"].as_str().unwrap();
    let run = t
        .ok("GET", &format!("/agent/runs/{run_id}"), &t.key_a, None)
        .await;
    assert_eq!(run["source"], "GITHUB_WEBHOOK");
    assert!(
        run["prompt"]
            .as_str()
            .unwrap()
            .contains("Saving a draft crashes")
    );
    reply_in(|| github.posted(), "acme/web#12", run_id).await;
}

#[tokio::test]
async fn c4_github_tampered_body_is_refused_and_starts_no_run() {
    let t = TwoTeams::start().await;
    let (github, url) = github_setup(&t).await;
    let body = github_comment("ann", "@hangar please fix this", &rfc3339(0));
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("fix this", "delete main")
        .into_bytes();
    let (status, answer) = post(&t, &url, &github_headers(&body, "g-2"), &tampered).await;
    assert_eq!(status, 401, "{answer}");
    assert!(runs(&t).await.is_empty());
    assert!(github.posted().is_empty());
}

#[tokio::test]
async fn c4_github_stale_comment_is_refused_and_starts_no_run() {
    let t = TwoTeams::start().await;
    let (github, url) = github_setup(&t).await;
    // Signed correctly, but about a comment made ten minutes ago.
    let stale = github_comment("ann", "@hangar please fix this", &rfc3339(600));
    let (status, answer) = post(&t, &url, &github_headers(&stale, "g-3"), &stale).await;
    assert_refused_as_stale(status, &answer);
    assert!(runs(&t).await.is_empty());
    assert!(github.posted().is_empty());
}

#[tokio::test]
async fn c4_github_replayed_delivery_is_deduplicated() {
    let t = TwoTeams::start().await;
    let (_github, url) = github_setup(&t).await;
    let body = github_comment("ann", "@hangar please fix this", &rfc3339(0));
    let headers = github_headers(&body, "g-4");
    let (status, first) = post(&t, &url, &headers, &body).await;
    assert_outcome(status, &first, "started");
    let (status, replay) = post(&t, &url, &headers, &body).await;
    assert_outcome(status, &replay, "duplicate");
    assert_eq!(runs(&t).await.len(), 1);
}

#[tokio::test]
async fn github_unlinked_user_gets_the_howto_comment() {
    let t = TwoTeams::start().await;
    let (github, url) = github_setup(&t).await;
    let body = github_comment("bob", "@hangar please fix this", &rfc3339(0));
    let (status, answer) = post(&t, &url, &github_headers(&body, "g-6"), &body).await;
    assert_outcome(status, &answer, "unlinked");
    let reply = reply_in(|| github.posted(), "acme/web#12", "hangar user create").await;
    assert!(
        reply.text.contains("did not tell me your e-mail"),
        "{reply:?}"
    );
    assert!(runs(&t).await.is_empty());
}

/// An RSA key pair made by `openssl`: `(PKCS#1 PEM, public key PKCS#1 DER)`.
pub(super) fn rsa_key() -> (String, Vec<u8>) {
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .expect("openssl genrsa");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8(out.stdout).unwrap();
    let der = std::process::Command::new("openssl")
        .args(["rsa", "-RSAPublicKey_out", "-outform", "DER"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(pem.as_bytes())?;
            child.wait_with_output()
        })
        .expect("openssl rsa");
    assert!(
        der.status.success(),
        "{}",
        String::from_utf8_lossy(&der.stderr)
    );
    (pem, der.stdout)
}

#[tokio::test]
async fn github_app_mints_an_installation_token_scoped_to_the_repository() {
    let t = TwoTeams::start().await;
    let (pem, public) = rsa_key();
    let github = FakeGithub::with_app("1234", public).await;
    t.member("ann").await;
    github.add_user("ann", Some("ann@a.test"));
    secret(&t, "GH_APP_KEY", &pem).await;
    let (_, url) = integration(
        &t,
        "github",
        HOOK,
        json!({"app_id": "1234", "private_key_secret": "GH_APP_KEY", "api_base_url": github.api_base_url()}),
    )
    .await;
    let body = github_comment("ann", "@hangar please fix this", &rfc3339(0));
    let (status, answer) = post(&t, &url, &github_headers(&body, "g-5"), &body).await;
    assert_outcome(status, &answer, "started");
    reply_in(
        || github.posted(),
        "acme/web#12",
        answer["run_id"].as_str().unwrap(),
    )
    .await;
    let minted = github.minted();
    assert!(!minted.is_empty());
    assert!(
        minted
            .iter()
            .all(|(installation, repos)| *installation == 42 && repos == &vec!["web".to_owned()]),
        "every installation token is scoped to the one repository: {minted:?}"
    );
}

#[tokio::test]
async fn github_label_added_to_an_issue_starts_a_run() {
    let t = TwoTeams::start().await;
    let github = FakeGithub::with_token(PAT).await;
    t.member("ann").await;
    github.add_user("ann", Some("ann@a.test"));
    secret(&t, "GH_TOKEN", PAT).await;
    let (_, url) = integration(
        &t,
        "github",
        HOOK,
        json!({"token_secret": "GH_TOKEN", "api_base_url": github.api_base_url(), "labels": ["agent"]}),
    )
    .await;
    let labeled = |label: &str| {
        json!({
            "action": "labeled", "label": {"name": label}, "sender": {"login": "ann"},
            "repository": {"full_name": "acme/web"},
            "issue": {"number": 21, "title": "Flaky CI", "body": "The e2e job fails", "updated_at": rfc3339(0)}
        })
        .to_string()
        .into_bytes()
    };
    let headers = |body: &[u8], id: &str| {
        let mut h = github_headers(body, id);
        h[2].1 = "issues".to_owned();
        h
    };
    let other = labeled("bug");
    let (_, answer) = post(&t, &url, &headers(&other, "g-l1"), &other).await;
    assert_eq!(answer["outcome"], "ignored", "{answer}");
    let body = labeled("agent");
    let (status, answer) = post(&t, &url, &headers(&body, "g-l2"), &body).await;
    assert_outcome(status, &answer, "started");
    reply_in(
        || github.posted(),
        "acme/web#21",
        answer["run_id"].as_str().unwrap(),
    )
    .await;
}
