//! The Integrations page: integrations and outbound webhooks, with a
//! receiver that records what the outbox sends.

use super::*;

/// A local HTTP receiver for outbound webhooks: answers every request 204
/// and records each request's `X-Hangar-Delivery` and `X-Hangar-Event`.
struct HookReceiver {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HookReceiver {
    async fn start() -> HookReceiver {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
        let seen = got.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Headers, then the body's Content-Length bytes.
                    let (head, want) = loop {
                        let Ok(n) = conn.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (head, end + 4 + len);
                        }
                    };
                    while buf.len() < want {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(name))
                            .map(|v| v.trim().to_owned())
                            .unwrap_or_default()
                    };
                    seen.lock()
                        .unwrap()
                        .push((header("x-hangar-delivery:"), header("x-hangar-event:")));
                    let _ = conn
                        .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        HookReceiver { url, got, task }
    }

    /// How often the delivery `id` arrived.
    fn count(&self, id: &str) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, _)| d == id)
            .count()
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Issue 14, item 8: an admin creates an integration on the Integrations
/// page and sees its webhook URL; edits it without losing its secret;
/// tests it (the answer, or the API's error, shows cleanly); sends a test
/// to an outbound webhook and redelivers it. A member sees the page
/// read-only and the API refuses their create.
#[tokio::test(flavor = "multi_thread")]
async fn integrations_page_creates_an_integration_and_tests_and_redelivers_webhooks() {
    let llm = FakeLlm::start(vec![]).await;
    let options = hangar_testkit::cluster::ClusterOptions {
        extra_config: "webhooks:\n  allow_internal_targets: true\n  poll_interval: 200ms\n".into(),
        ..Default::default()
    }
    .with_fake_llm(&llm.base_url());
    let cluster = TestCluster::start(&crate::suite::common::hangar_bin(), options)
        .await
        .unwrap();
    add_user(&cluster, "ines@example.com", UserRole::Admin)
        .await
        .unwrap();
    add_user(&cluster, "milo@example.com", UserRole::Member)
        .await
        .unwrap();
    let rx = HookReceiver::start().await;
    let admin = cluster.client();
    let hook: Value = admin
        .post_json(
            "api/v1/webhooks",
            &json!({"url": rx.url, "event_types": ["run_succeeded"]}),
        )
        .await
        .unwrap();
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let base = cluster.url.clone();
    let got = std::sync::Arc::new(rx);
    let rx = got.clone();
    let probe = cluster.client();
    with_browser("integrations_page_creates_an_integration_and_tests_and_redelivers_webhooks", |c| async move {
        login(&c, &base, "ines@example.com").await?;
        c.goto(&format!("{base}/integrations")).await?;
        wait_js(&c, &format!("{}.includes('Integrations')", text_of("main h1")), Duration::from_secs(10), "the Integrations page").await?;
        ensure!(c.find(Locator::Css("nav[aria-label=Main] a[aria-current=page][href='/integrations']")).await.is_ok(), "no current nav entry");
        c.execute("window.__errors = []; window.addEventListener('error', (e) => window.__errors.push(String(e.message))); window.addEventListener('unhandledrejection', (e) => window.__errors.push(String(e.reason)));", vec![]).await?;

        // Create a signed-webhook integration from the form.
        c.find(Locator::Css("#integration-editor > summary")).await?.click().await?;
        c.execute("const k = document.querySelector('#int-kind'); k.value = 'webhook'; k.dispatchEvent(new Event('change'));", vec![]).await?;
        c.find(Locator::Css("#int-name")).await?.send_keys("alerts").await?;
        c.find(Locator::Css("#int-secret")).await?.send_keys("s3cret-signing-value").await?;
        c.find(Locator::Css("#int-template")).await?.send_keys("Investigate {{alert.title}}").await?;
        c.find(Locator::Css("#int-host")).await?.send_keys("oncall-worker").await?;
        c.find(Locator::Css("#int-save")).await?.click().await?;
        wait_js(&c, "!!document.querySelector('section.integration')", Duration::from_secs(15), "the new integration's card").await?;
        let listed: Value = probe.get_json("api/v1/integrations").await?;
        let created = listed["integrations"].as_array().and_then(|l| l.first()).cloned().context("no integration was created")?;
        ensure!(created["name"] == "alerts" && created["kind"] == "webhook", "{created}");
        ensure!(created["settings"]["prompt_template"] == "Investigate {{alert.title}}", "{created}");
        ensure!(created["settings"]["agent_config"]["worker_host"] == "oncall-worker", "{created}");
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        let url = created["webhook_url"].as_str().unwrap_or_default().to_owned();
        ensure!(url.ends_with(&format!("/integrations/webhook/{id}/events")), "{url}");
        // Its webhook URL, with a copy button, and the flash message.
        let shown = c.execute(&format!("return document.querySelector('#url-{id}').value"), vec![]).await?;
        ensure!(shown == json!(url), "the page shows {shown}, the API {url}");
        ensure!(c.find(Locator::Css(&format!("button[data-copy='url-{id}']"))).await.is_ok(), "no copy button");
        wait_js(&c, &format!("{}.includes('Created')", text_of("#integration-status")), Duration::from_secs(5), "the created message").await?;
        // The secret is never on the page.
        let html = c.source().await?;
        ensure!(!html.contains("s3cret-signing-value"), "the secret is in the page");

        // Edit: the form is filled from the settings, the secret stays empty
        // and is kept when left empty; settings the form does not show stay.
        c.find(Locator::Css(&format!("button[data-integration-edit='{id}']"))).await?.click().await?;
        let filled = c.execute("return [document.querySelector('#int-name').value, document.querySelector('#int-secret').value, document.querySelector('#int-host').value]", vec![]).await?;
        ensure!(filled == json!(["alerts", "", "oncall-worker"]), "edit form: {filled}");
        c.find(Locator::Css("#int-prefix")).await?.send_keys("From the pager:").await?;
        // The create's "Saved" flash is still shown: clear it, so that the
        // wait below sees the edit's own (after its reload), not the old one.
        c.execute("document.querySelector('#integration-status').textContent = ''", vec![]).await?;
        c.find(Locator::Css("#int-save")).await?.click().await?;
        wait_js(&c, &format!("{}.includes('Saved')", text_of("#integration-status")), Duration::from_secs(15), "the saved message").await?;
        let after: Value = probe.get_json(&format!("api/v1/integrations/{id}")).await?;
        ensure!(after["settings"]["prompt_prefix"] == "From the pager:", "{after}");
        ensure!(after["settings"]["prompt_template"] == "Investigate {{alert.title}}", "{after}");

        // A signed delivery to the webhook URL starts a run: it is listed
        // under the integration's last runs, with its state and link.
        let body = br#"{"alert": {"title": "disk full"}}"#.to_vec();
        let ts = hangar_protocol::Timestamp::now().unix_millis() / 1000;
        let signature = hangar_server::integrations::signature::hangar_signature(b"s3cret-signing-value", ts, &body);
        let sent = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("x-hangar-timestamp", ts.to_string())
            .header("x-hangar-signature", signature)
            .header("x-hangar-delivery", "page-delivery-1")
            .body(body)
            .send()
            .await?;
        ensure!(sent.status().is_success(), "the signed delivery answered {}", sent.status());
        let accepted: Value = sent.json().await?;
        let run_id = accepted["run_id"].as_str().unwrap_or_default().to_owned();
        c.refresh().await?;
        let link = wait_js(&c, &format!("(() => {{ const a = document.querySelector(\"section[data-integration='{id}'] .runs a[href='/runs/{run_id}']\"); return a ? a.textContent : ''; }})()"), Duration::from_secs(10), "the run under the integration").await?;
        let title = probe.get_run(&run_id).await?.title;
        ensure!(link == json!(title), "the run's link reads {link}, its title is {title:?}");
        ensure!(c.find(Locator::Css(&format!("section[data-integration='{id}'] .runs .badge[data-state]"))).await.is_ok(), "no state badge for the run");

        // Test: the answer ({ok, detail}) or the API's error shows, cleanly.
        c.execute("window.__errors = []; window.addEventListener('error', (e) => window.__errors.push(String(e.message))); window.addEventListener('unhandledrejection', (e) => window.__errors.push(String(e.reason)));", vec![]).await?;
        c.find(Locator::Css(&format!("button[data-integration-test='{id}']"))).await?.click().await?;
        let answer = wait_js(&c, &format!("(() => {{ const t = document.querySelector('[data-test-result=\"{id}\"]').textContent; return t && t !== 'Testing…' ? t : ''; }})()"), Duration::from_secs(15), "the test's answer").await?;
        let errors = c.execute("return window.__errors", vec![]).await?;
        ensure!(errors == json!([]), "script errors after Test: {errors} (answer {answer})");
        eprintln!("the Test button showed: {answer}");

        // Outbound webhook: send a test, see it delivered, redeliver it.
        let sel = format!("tbody[data-deliveries='{hook_id}']");
        c.find(Locator::Css(&format!("button[data-webhook-test='{hook_id}']"))).await?.click().await?;
        let ping = wait_js(&c, &format!("(() => {{ const r = document.querySelector(\"{sel} tr[data-state='delivered']\"); return r && r.textContent.includes('ping') && r.textContent.includes('204') ? r.dataset.delivery : ''; }})()"), Duration::from_secs(20), "the ping delivered in the log").await?;
        let ping = ping.as_str().unwrap_or_default().to_owned();
        ensure!(rx.count(&ping) == 1, "the receiver got the ping {} times", rx.count(&ping));
        c.find(Locator::Css(&format!("button[data-redeliver='{ping}']"))).await?.click().await?;
        wait_js(&c, &format!("{}.includes('Queued again')", text_of("#webhook-status")), Duration::from_secs(10), "the redelivery queued").await?;
        within("the redelivery to arrive", Duration::from_secs(20), Duration::from_millis(100), async || {
            if rx.count(&ping) == 2 { Ok(()) } else { Err(rx.count(&ping)) }
        }).await?;
        wait_js(&c, &format!("(() => {{ const r = document.querySelector(\"{sel} tr[data-delivery='{ping}']\"); return r && r.dataset.state === 'delivered' && /\\b2\\b/.test(r.querySelector('td[data-label=Attempts]').textContent); }})()"), Duration::from_secs(20), "two attempts in the log").await?;

        if let Some(dir) = std::env::var_os("HANGAR_SCREENSHOTS") {
            save_page(&c, &PathBuf::from(dir), "integrations-admin").await;
        }

        // Delete, after a confirmation.
        let old: Value = probe.post_json("api/v1/integrations", &json!({"kind": "webhook", "name": "old-hook", "secret": "x-secret"})).await?;
        let old_id = old["id"].as_str().unwrap_or_default().to_owned();
        c.refresh().await?;
        c.execute("window.confirm = () => true;", vec![]).await?;
        c.find(Locator::Css(&format!("button[data-integration-delete='{old_id}']"))).await?.click().await?;
        wait_js(&c, &format!("{}.includes('Deleted “old-hook”')", text_of("#integration-status")), Duration::from_secs(15), "the deleted message").await?;
        ensure!(c.find(Locator::Css(&format!("section[data-integration='{old_id}']"))).await.is_err(), "the deleted integration is still listed");
        let left: Value = probe.get_json("api/v1/integrations").await?;
        ensure!(left["integrations"].as_array().map(Vec::len) == Some(1), "{left}");

        // A member: read-only page, and the API refuses their create.
        c.goto(&format!("{base}/logout")).await?;
        login(&c, &base, "milo@example.com").await?;
        c.goto(&format!("{base}/integrations")).await?;
        wait_js(&c, "!!document.querySelector('section.integration')", Duration::from_secs(10), "the integration for the member").await?;
        for sel in ["#integration-form", "button[data-integration-edit]", "button[data-integration-delete]", "button[data-integration-test]", "button[data-webhook-test]", "button[data-redeliver]"] {
            ensure!(c.find(Locator::Css(sel)).await.is_err(), "a member sees {sel}");
        }
        let shown = c.execute(&format!("return document.querySelector('#url-{id}').value"), vec![]).await?;
        ensure!(shown == json!(url), "the member sees {shown}");
        let status = c.execute(
            r#"const csrf = document.querySelector('meta[name="csrf-token"]').content;
               return fetch('/api/v1/integrations', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-Hangar-CSRF': csrf}, body: JSON.stringify({kind: 'webhook', name: 'sneaky', secret: 'x'})}).then(r => r.status);"#,
            vec![],
        ).await?;
        ensure!(status == json!(403), "a member's create answered {status}");
        Ok(())
    })
    .await;
}
