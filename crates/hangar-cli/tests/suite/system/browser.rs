//! The dashboard in real headless Chromium (Debian `chromium` +
//! `chromium-driver`), driven over WebDriver with `fantoccini`, against real
//! `hangar server` and `hangar worker` processes and the fake model.
//!
//! Flows: sign in; start a run and watch its transcript arrive live; send a
//! follow-up as an editor; a viewer has no follow-up box and a forged
//! follow-up is refused; cancel a run; revoking a share closes the viewer's
//! stream; the Integrations page creates, edits and tests an integration and
//! tests and redelivers an outbound webhook. Every page renders on a desktop
//! and a 390 px phone viewport.
//!
//! On failure each test saves a screenshot and the page source to
//! `$CARGO_TARGET_DIR/browser-failures/<test>.{png,html}`. Set
//! `HANGAR_SCREENSHOTS=<dir>` to keep screenshots of every page.

use crate::suite::common::cluster_with;
use anyhow::{Context, Result, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use hangar_protocol::account::{CreateUserRequest, UserRole};
use hangar_protocol::share::{CreateShareRequest, ShareRole};
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::cluster::TestCluster;
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use hangar_testkit::poll::{until_ok, within};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

mod integrations;

const PASSWORD: &str = "correct horse battery staple";
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
];

/// A Chromium driven through its own chromedriver.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Result<Browser> {
        let chromedriver = which("chromedriver").context(
            "chromedriver is not installed: install the Debian packages `chromium` and \
             `chromium-driver` (scripts/test does)",
        )?;
        let chromium = which("chromium").context(
            "chromium is not installed: install the Debian package `chromium` (scripts/test does)",
        )?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let profile = tempfile::tempdir()?;
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        let what = format!("chromedriver to listen on {url}");
        within(
            &what,
            Duration::from_secs(20),
            Duration::from_millis(50),
            async || {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .await?;
        let mut args: Vec<String> = FLAGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push("--window-size=1280,900".to_owned());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({"binary": chromium, "args": args}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .context("cannot open a Chromium session over WebDriver")?;
        Ok(Browser {
            client,
            driver,
            _profile: profile,
        })
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.start_kill();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

/// `$CARGO_TARGET_DIR/browser-failures` (the target dir is found from the test binary when unset).
fn failure_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("browser-failures");
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // <target>/debug/deps/all-<hash>
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("browser-failures"))
        .unwrap_or_else(|| PathBuf::from("browser-failures"))
}

async fn save_page(client: &Client, dir: &std::path::Path, name: &str) {
    let _ = std::fs::create_dir_all(dir);
    if let Ok(png) = client.screenshot().await {
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
    }
    if let Ok(html) = client.source().await {
        let _ = std::fs::write(dir.join(format!("{name}.html")), html);
    }
}

/// Runs a flow; on failure keeps a screenshot and the page source, then fails the test.
async fn with_browser<F, Fut>(name: &str, flow: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e:#}"));
    let client = browser.client.clone();
    let outcome = flow(client.clone()).await;
    if let Err(e) = outcome {
        let dir = failure_dir();
        save_page(&client, &dir, name).await;
        let url = client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        browser.close().await;
        panic!(
            "{name} failed at {url}: {e:#}\n(screenshot and page source in {})",
            dir.display()
        );
    }
    browser.close().await;
}

/// Polls a JavaScript expression until it is truthy; returns its value.
async fn wait_js(client: &Client, expr: &str, timeout: Duration, what: &str) -> Result<Value> {
    let script = format!("return ({expr});");
    let what = format!("{what} (`{expr}`)");
    let v = within(&what, timeout, Duration::from_millis(100), async || {
        let v = match client.execute(&script, vec![]).await {
            Ok(v) => v,
            Err(failed) => return Ok(Err(failed)),
        };
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy { Ok(Ok(v)) } else { Err(v) }
    })
    .await??;
    Ok(v)
}

fn text_of(sel: &str) -> String {
    format!("(document.querySelector({sel:?}) || {{}}).textContent || ''")
}

async fn add_user(cluster: &TestCluster, email: &str, role: UserRole) -> Result<()> {
    cluster
        .client()
        .create_user(&CreateUserRequest {
            email: email.to_owned(),
            display_name: None,
            role: Some(role),
            password: Some(PASSWORD.into()),
        })
        .await?;
    Ok(())
}

async fn login(client: &Client, base: &str, email: &str) -> Result<()> {
    client.goto(&format!("{base}/login")).await?;
    client
        .find(Locator::Css("#email"))
        .await?
        .send_keys(email)
        .await?;
    client
        .find(Locator::Css("#password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    client
        .find(Locator::Css("form button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_js(
        client,
        "location.pathname === '/' && !!document.querySelector('#run-rows')",
        Duration::from_secs(15),
        "the runs list after signing in",
    )
    .await?;
    Ok(())
}

async fn run_on(cluster: &TestCluster, prompt: &str, host: &str) -> Result<String> {
    let created = cluster
        .client()
        .create_run(&RunAgentRequest {
            prompt: Some(prompt.to_owned()),
            config: Some(AgentConfig {
                worker_host: Some(host.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    Ok(created.run_id)
}

/// Submits the follow-up form from the page's own script (editors have it).
async fn send_followup(client: &Client, text: &str) -> Result<()> {
    let box_ = client.find(Locator::Css("#followup-text")).await?;
    box_.send_keys(text).await?;
    client
        .find(Locator::Css("#followup button[type=submit]"))
        .await?
        .click()
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_start_a_run_watch_it_live_and_follow_up() {
    let llm = FakeLlm::start(vec![
        // Slow enough to watch the transcript grow while the run is live.
        Turn::delayed(
            Duration::from_millis(1500),
            Turn::tool_call("shell", json!({"command": "echo tool-output-7731"})),
        ),
        Turn::delayed(
            Duration::from_millis(1500),
            Turn::text("First answer 4410."),
        ),
        Turn::text("Follow-up answer 9902."),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("bw1", &[]).await.unwrap();
    add_user(&cluster, "ada@example.com", UserRole::Admin)
        .await
        .unwrap();
    let base = cluster.url.clone();
    let probe = cluster.client();
    with_browser("sign_in_start_a_run_watch_it_live_and_follow_up", |c| async move {
        // A wrong password is refused with a readable error.
        c.goto(&format!("{base}/login")).await?;
        c.find(Locator::Css("#email")).await?.send_keys("ada@example.com").await?;
        c.find(Locator::Css("#password")).await?.send_keys("wrong password!").await?;
        c.find(Locator::Css("form button[type=submit]")).await?.click().await?;
        wait_js(&c, &format!("{}.includes('Wrong email or password')", text_of("#login-error")), Duration::from_secs(10), "the sign-in error").await?;

        login(&c, &base, "ada@example.com").await?;

        // Start a run from the dashboard.
        c.find(Locator::Css(".newrun > summary")).await?.click().await?;
        c.find(Locator::Css("#new-prompt")).await?.send_keys("Say hello from the browser").await?;
        c.find(Locator::Css("#new-host")).await?.send_keys("bw1").await?;
        c.find(Locator::Css("#new-run button[type=submit]")).await?.click().await?;
        let run_id = wait_js(&c, "location.pathname.startsWith('/runs/') && document.querySelector('#run').dataset.runId", Duration::from_secs(15), "the run page").await?;
        let run_id = run_id.as_str().unwrap_or_default().to_owned();

        // The transcript arrives live: the tool output first, while the run is
        // still going, then the answer.
        wait_js(&c, &format!("{}.includes('tool-output-7731')", text_of("#transcript")), Duration::from_secs(30), "the tool output in the transcript").await?;
        let run = probe.get_run(&run_id).await?;
        ensure!(!run.state.is_terminal(), "the run ended before the tool output showed: not live ({:?})", run.state);
        wait_js(&c, &format!("{}.includes('First answer 4410.')", text_of("#transcript")), Duration::from_secs(30), "the agent's answer").await?;
        wait_js(&c, "document.querySelector('#run').dataset.stream === 'ended'", Duration::from_secs(30), "the end of the stream").await?;
        ensure!(
            c.execute(&format!("return {}", text_of("#stream-state")), vec![]).await?.as_str().unwrap_or_default().contains("Succeeded"),
            "the page does not show the final state"
        );
        // The run appears in the live-updating list, filterable by text.
        ensure!(c.find(Locator::Css("#cancel-box[hidden]")).await.is_ok(), "cancel offered on an ended run");

        // An editor sends a follow-up: the ended run continues in a new execution.
        send_followup(&c, "Now say it again").await?;
        wait_js(&c, &format!("{}.includes('Sent')", text_of("#followup-status")), Duration::from_secs(15), "the follow-up to be accepted").await?;
        wait_js(&c, &format!("{}.includes('Follow-up answer 9902.')", text_of("#transcript")), Duration::from_secs(45), "the follow-up's answer").await?;

        // The runs list shows the run and filters by text live.
        c.goto(&format!("{base}/")).await?;
        wait_js(&c, &format!("!!document.querySelector('tr[data-run=\"{run_id}\"]')"), Duration::from_secs(10), "the run in the list").await?;
        c.find(Locator::Css("#f-q")).await?.send_keys("no-such-run-text").await?;
        wait_js(&c, "!!document.querySelector('#run-rows tr.empty')", Duration::from_secs(10), "the text filter to empty the list").await?;
        Ok(())
    })
    .await;
}

/// A run that keeps its agent busy (a long shell command) until cancelled.
async fn busy_run(cluster: &TestCluster, host: &str) -> String {
    run_on(cluster, "work for a long time", host).await.unwrap()
}

fn busy_llm() -> Vec<Turn> {
    vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo busy-5150; sleep 300", "timeout_ms": 600000}),
        ),
        Turn::text("stopped"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_has_no_followup_box_and_a_forged_followup_is_refused() {
    let llm = FakeLlm::start(busy_llm()).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("bw2", &[]).await.unwrap();
    add_user(&cluster, "vera@example.com", UserRole::Member)
        .await
        .unwrap();
    let run_id = busy_run(&cluster, "bw2").await;
    cluster
        .client()
        .create_share(
            &run_id,
            &CreateShareRequest {
                grantee: "user:vera@example.com".into(),
                role: ShareRole::View,
            },
        )
        .await
        .unwrap();
    let base = cluster.url.clone();
    let probe = cluster.client();
    let rid = run_id.clone();
    with_browser("a_viewer_has_no_followup_box_and_a_forged_followup_is_refused", |c| async move {
        login(&c, &base, "vera@example.com").await?;
        c.goto(&format!("{base}/runs/{rid}")).await?;
        wait_js(&c, &format!("{}.includes('busy-5150')", text_of("#transcript")), Duration::from_secs(30), "the transcript for the viewer").await?;
        ensure!(c.find(Locator::Css("#followup")).await.is_err(), "a viewer sees the follow-up box");
        ensure!(c.find(Locator::Css("#cancel-run")).await.is_err(), "a viewer sees the cancel button");
        ensure!(c.find(Locator::Css(".viewonly")).await.is_ok(), "no 'view only' marker");

        // Forged requests from the page: with the CSRF token the API still
        // refuses (view access), without it the CSRF check refuses.
        let forged = c.execute(
            r#"const [id, done] = arguments;
               const csrf = document.querySelector('meta[name="csrf-token"]').content;
               const post = (headers) => fetch(`/api/v1/agent/runs/${id}/followups`, {method: 'POST', headers: Object.assign({'Content-Type': 'application/json'}, headers), body: JSON.stringify({message: 'forged'})}).then(r => r.status);
               return Promise.all([post({'X-Hangar-CSRF': csrf}), post({})]);"#,
            vec![json!(rid)],
        ).await?;
        ensure!(forged == json!([403, 403]), "forged follow-ups answered {forged}, want [403, 403]");
        let run = probe.get_run(&rid).await?;
        ensure!(run.state == RunState::InProgress, "the run changed: {:?}", run.state);
        Ok(())
    })
    .await;
    cluster.client().cancel_run(&run_id).await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_editor_cancels_a_running_run() {
    let llm = FakeLlm::start(busy_llm()).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("bw3", &[]).await.unwrap();
    add_user(&cluster, "cole@example.com", UserRole::Admin)
        .await
        .unwrap();
    let run_id = run_on(&cluster, "work for a long time", "bw3")
        .await
        .unwrap();
    let base = cluster.url.clone();
    let probe = cluster.client();
    let rid = run_id.clone();
    with_browser("an_editor_cancels_a_running_run", |c| async move {
        login(&c, &base, "cole@example.com").await?;
        c.goto(&format!("{base}/runs/{rid}")).await?;
        wait_js(
            &c,
            &format!("{}.includes('busy-5150')", text_of("#transcript")),
            Duration::from_secs(30),
            "the running tool",
        )
        .await?;
        c.find(Locator::Css("#cancel-box > summary"))
            .await?
            .click()
            .await?;
        c.find(Locator::Css("#cancel-run")).await?.click().await?;
        wait_js(
            &c,
            &format!("{}.includes('Cancelled')", text_of("#stream-state")),
            Duration::from_secs(30),
            "the page to show the run cancelled",
        )
        .await?;
        // The API agrees (see the note on issue 6: a read right after the
        // stream's `end` was seen to lag by under a second on SQLite).
        within(
            "the API to show the run cancelled, 5 s after the page did",
            Duration::from_secs(5),
            Duration::from_millis(50),
            async || match probe.get_run(&rid).await {
                Err(failed) => Ok(Err(failed)),
                Ok(run) if run.state == RunState::Cancelled => Ok(Ok(())),
                Ok(run) => Err(run.state),
            },
        )
        .await??;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_share_closes_the_viewers_stream() {
    let llm = FakeLlm::start(busy_llm()).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("bw4", &[]).await.unwrap();
    add_user(&cluster, "rhea@example.com", UserRole::Member)
        .await
        .unwrap();
    let run_id = busy_run(&cluster, "bw4").await;
    let admin = cluster.client();
    let share = admin
        .create_share(
            &run_id,
            &CreateShareRequest {
                grantee: "user:rhea@example.com".into(),
                role: ShareRole::View,
            },
        )
        .await
        .unwrap();
    let base = cluster.url.clone();
    let rid = run_id.clone();
    let admin2 = cluster.client();
    with_browser(
        "revoking_a_share_closes_the_viewers_stream",
        |c| async move {
            login(&c, &base, "rhea@example.com").await?;
            c.goto(&format!("{base}/runs/{rid}")).await?;
            wait_js(
                &c,
                &format!("{}.includes('busy-5150')", text_of("#transcript")),
                Duration::from_secs(30),
                "the live transcript",
            )
            .await?;
            wait_js(
                &c,
                "document.querySelector('#run').dataset.stream === 'open'",
                Duration::from_secs(10),
                "an open stream",
            )
            .await?;
            admin2.delete_share(&rid, &share.id).await?;
            // C2: the stream closes within 2 s; the page says so.
            wait_js(
                &c,
                "!document.querySelector('#notice').hidden",
                Duration::from_secs(5),
                "the revocation notice",
            )
            .await?;
            let stream = c
                .execute(
                    "return document.querySelector('#run').dataset.stream",
                    vec![],
                )
                .await?;
            ensure!(
                stream == json!("revoked") || stream == json!("closed"),
                "stream state {stream}"
            );
            Ok(())
        },
    )
    .await;
    cluster.client().cancel_run(&run_id).await.ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_renders_on_desktop_and_phone() {
    let llm = FakeLlm::start(vec![Turn::text("Done: page check.")]).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("bw5", &[]).await.unwrap();
    add_user(&cluster, "pia@example.com", UserRole::Admin)
        .await
        .unwrap();
    let run_id = run_on(&cluster, "Render the pages", "bw5").await.unwrap();
    cluster
        .wait_finished(&run_id, Duration::from_secs(60))
        .await
        .unwrap();
    let admin = cluster.client();
    admin
        .post_json::<_, Value>(
            "api/v1/agent/schedules",
            &json!({"name": "weekday-digest", "cron_schedule": "0 9 * * 1-5", "prompt": "digest"}),
        )
        .await
        .unwrap();
    let base = cluster.url.clone();
    let shots = std::env::var_os("HANGAR_SCREENSHOTS").map(PathBuf::from);
    with_browser("every_page_renders_on_desktop_and_phone", |c| async move {
        // Signed out, pages send people to the login form.
        c.goto(&format!("{base}/workers")).await?;
        wait_js(&c, "location.pathname === '/login' && location.search.includes('next=%2Fworkers')", Duration::from_secs(10), "the redirect to /login").await?;
        if let Some(dir) = &shots {
            save_page(&c, dir, "login-desktop").await;
        }
        login(&c, &base, "pia@example.com").await?;
        let pages = [
            ("runs", "/".to_owned(), "Runs"),
            ("overview", "/overview".to_owned(), "Overview"),
            ("run", format!("/runs/{run_id}"), "Render the pages"),
            ("workers", "/workers".to_owned(), "Workers"),
            ("schedules", "/schedules".to_owned(), "Schedules"),
            ("environments", "/environments".to_owned(), "Environments"),
            ("secrets", "/secrets".to_owned(), "Secrets"),
            ("api-keys", "/api-keys".to_owned(), "API keys"),
            ("providers", "/providers".to_owned(), "Models"),
            ("users", "/users".to_owned(), "Users"),
            ("integrations", "/integrations".to_owned(), "Integrations"),
        ];
        for (width, label) in [(1280, "desktop"), (390, "phone")] {
            c.set_window_size(width, 900).await?;
            for (name, path, heading) in &pages {
                c.goto(&format!("{base}{path}")).await?;
                wait_js(&c, &format!("{}.includes({heading:?})", text_of("main h1")), Duration::from_secs(10), &format!("the heading of {path}")).await?;
                // Landmarks, and nothing wider than the viewport on a phone.
                ensure!(c.find(Locator::Css("main#main")).await.is_ok(), "{path}: no main landmark");
                ensure!(c.find(Locator::Css("nav[aria-label=Main] a[aria-current=page]")).await.is_ok(), "{path}: no current nav entry");
                let overflow = c.execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth", vec![]).await?;
                ensure!(overflow.as_i64().unwrap_or(0) <= 1, "{path} overflows horizontally by {overflow}px at {width}px");
                if *name == "run" {
                    wait_js(&c, &format!("{}.includes('Done: page check.')", text_of("#transcript")), Duration::from_secs(15), "the replayed transcript").await?;
                }
                if *name == "schedules" {
                    wait_js(&c, &format!("{}.includes('At 09:00, on Monday through Friday')", text_of("main")), Duration::from_secs(5), "the cron preview").await?;
                }
                if let Some(dir) = &shots {
                    save_page(&c, dir, &format!("{name}-{label}")).await;
                }
            }
        }
        Ok(())
    })
    .await;
}

/// Issue 16, item 7: a fresh `hangar up` prints a one-time sign-in link;
/// following it lands on the runs page signed in as the admin, which asks
/// for a password; the password then works in the sign-in form, and the
/// link is refused a second time.
#[tokio::test(flavor = "multi_thread")]
async fn hangar_up_sign_in_link_signs_in_once_and_asks_for_a_password() {
    let up = hangar_testkit::up::HangarUp::start(
        &crate::suite::common::hangar_bin(),
        tempfile::tempdir().unwrap(),
        &[],
        &[],
    )
    .unwrap();
    let port = up.port;
    let (link, banner) = until_ok("a sign-in link", Duration::from_secs(30), || {
        let text = up.output();
        let link = text.lines().find_map(|l| {
            let l = l.strip_prefix("Sign in:  ")?;
            l.starts_with("http://").then(|| l.trim().to_owned())
        });
        match link {
            Some(link) => Ok((link, text)),
            None => Err(text),
        }
    })
    .await;
    assert!(
        link.starts_with(&format!("http://127.0.0.1:{port}/login/link/")),
        "{link}"
    );
    assert!(
        banner.contains("hangar worker token create --worker-id NAME"),
        "{banner}"
    );
    assert!(
        banner.contains(&format!(
            "hangar worker --server-url http://127.0.0.1:{port} --worker-id NAME"
        )),
        "{banner}"
    );
    let base = format!("http://127.0.0.1:{port}");
    with_browser("hangar_up_sign_in_link", |client| async move {
        client.goto(&link).await?;
        wait_js(
            &client,
            "location.pathname === '/' && !!document.querySelector('#run-rows') && !!document.querySelector('#set-password')",
            Duration::from_secs(15),
            "the runs page, signed in, asking for a password",
        )
        .await?;
        client.find(Locator::Css("#account-email")).await?.send_keys("owner@example.com").await?;
        client.find(Locator::Css("#account-password")).await?.send_keys(PASSWORD).await?;
        client
            .find(Locator::Css("#set-password button[type=submit]"))
            .await?
            .click()
            .await?;
        wait_js(
            &client,
            "location.pathname === '/' && !!document.querySelector('#run-rows') && !document.querySelector('#set-password')",
            Duration::from_secs(15),
            "the runs page without the password form",
        )
        .await?;
        // Signed out, the password works in the form.
        client.delete_all_cookies().await?;
        login(&client, &base, "owner@example.com").await?;
        // The link works once.
        client.delete_all_cookies().await?;
        client.goto(&link).await?;
        wait_js(
            &client,
            "document.title.startsWith('Sign-in link used or expired')",
            Duration::from_secs(15),
            "the spent link refused",
        )
        .await?;
        let url = client.current_url().await?;
        ensure!(url.path().starts_with("/login/link/"), "redirected to {url}");
        Ok(())
    })
    .await;
    drop(up);
}
