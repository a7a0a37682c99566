//! Web hardening (issue 11, item 8): cross-origin WebSockets riding on the
//! dashboard cookie are refused, `/login?next=` is no open redirect, and
//! public-link streams are bounded.

use crate::suite::common::{TwoTeams, no_redirects};
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const PW: &str = "member-password-1";

/// Creates a team A member and signs in; returns the `hangar_session=…` pair.
pub(crate) async fn member_cookie(t: &TwoTeams) -> String {
    let r = t
        .call(
            "POST",
            "/users",
            Some(&t.key_a),
            Some(&json!({"email": "web@example.com", "password": PW}).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let resp = no_redirects()
        .post(format!("{}/login", t.url))
        .form(&[("email", "web@example.com"), ("password", PW)])
        .send()
        .await
        .unwrap();
    let set = resp.headers().get(SET_COOKIE).expect("a session cookie");
    set.to_str().unwrap().split(';').next().unwrap().to_owned()
}

/// Opens a WebSocket with the given headers: `Ok(())` on 101, else the
/// HTTP status and body of the refusal.
async fn open(url: &url::Url, headers: &[(&str, &str)]) -> Result<(), (u16, String)> {
    let mut url = url.clone();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme).unwrap();
    let mut req = url.as_str().into_client_request().unwrap();
    for (k, v) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, HeaderValue::from_str(v).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => Err((0, e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_cross_origin_websocket_with_cookie_is_refused() {
    let t = TwoTeams::start().await;
    let cookie = member_cookie(&t).await;
    let (run, _) = t.local_run("origin check").await;
    // The member may watch it, so only the Origin decides.
    t.ok(
        "POST",
        &format!("/agent/runs/{run}/shares"),
        &t.key_a,
        Some(r#"{"grantee":"team"}"#),
    )
    .await;
    let url = t.ws_url(&format!("/agent/runs/{run}/events/ws"));
    let own = t.url.clone();

    // The attack: a page on another site opens the socket; the browser adds
    // the user's cookie and its own Origin.
    let (status, body) = open(
        &url,
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await
    .expect_err("a cross-origin socket with the cookie must be refused");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("cross-origin WebSocket refused"), "{body}");
    // A look-alike host is no match either.
    let lookalike = format!("{own}.evil.example");
    let refused = open(&url, &[("cookie", &cookie), ("origin", &lookalike)]).await;
    assert_eq!(refused.map_err(|e| e.0), Err(403));
    // The worker socket refuses the cookie from another origin too.
    let worker = t.ws_url("/selfhosted/worker/ws?worker_id=web-origin");
    let refused = open(
        &worker,
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(refused.map_err(|e| e.0), Err(403));

    // The dashboard itself (same origin) still opens it with the cookie.
    open(&url, &[("cookie", &cookie), ("origin", &own)])
        .await
        .expect("a same-origin socket with the cookie");
    // The CLI with a bearer key and no Origin is unaffected.
    let bearer = format!("Bearer {}", t.key_a);
    open(&url, &[("authorization", &bearer)])
        .await
        .expect("a bearer socket without Origin");
    // A bearer key is no cookie: a foreign Origin does not matter there.
    open(
        &url,
        &[
            ("authorization", &bearer),
            ("origin", "https://evil.example"),
        ],
    )
    .await
    .expect("a bearer socket with a foreign Origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_login_next_is_an_open_redirect_no_more() {
    let t = TwoTeams::start().await;
    let r = t
        .call(
            "POST",
            "/users",
            Some(&t.key_a),
            Some(&json!({"email": "next@example.com", "password": PW}).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let client = no_redirects();
    for (next, want) in [
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/runs/x", "/runs/x"),
    ] {
        let resp = client
            .post(format!("{}/login", t.url))
            .form(&[
                ("email", "next@example.com"),
                ("password", PW),
                ("next", next),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 303, "next={next:?}");
        let location = resp.headers().get(LOCATION).unwrap().to_str().unwrap();
        assert_eq!(location, want, "next={next:?}");
        // The form page carries the same value in its hidden field.
        let page = client
            .get(format!("{}/login", t.url))
            .query(&[("next", next)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(&format!("name=\"next\" value=\"{want}\"")),
            "next={next:?}: {page}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c8_public_link_streams_are_bounded_per_address_and_released() {
    let t = TwoTeams::start().await;
    let (run, _) = t.local_run("public flood").await;
    let share = t
        .ok(
            "POST",
            &format!("/agent/runs/{run}/shares"),
            &t.key_a,
            Some(r#"{"grantee":"public"}"#),
        )
        .await;
    let url = share["url"].as_str().unwrap();
    let token = url.rsplit('/').next().unwrap();
    let events = t.api(&format!("/public/sessions/{token}/events"));
    let per_address = hangar_server::rate_limit::PUBLIC_STREAMS_PER_ADDRESS;
    // The attack: one visitor opens stream after stream.
    let mut open = Vec::new();
    for _ in 0..per_address {
        let r = t.http.get(&events).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        open.push(r);
    }
    let over = t.http.get(&events).send().await.unwrap();
    assert_eq!(over.status().as_u16(), 429);
    assert!(over.headers().contains_key("retry-after"));
    let text = over.text().await.unwrap();
    assert!(text.contains("too many open streams"), "{text}");
    // Closing one releases its slot.
    drop(open.pop());
    hangar_testkit::poll::eventually_ok(
        "a closed stream's slot to be released",
        std::time::Duration::from_secs(5),
        async || match t.http.get(&events).send().await.unwrap().status() {
            s if s.as_u16() == 200 => Ok(()),
            other => Err(other),
        },
    )
    .await;
}

/// The Overview page (issue 13, item 7) counts the signed-in team's runs
/// only, and draws them as charts.
#[tokio::test]
async fn monitoring_overview_page_shows_the_team_queue_as_charts() {
    let t = TwoTeams::start().await;
    for (key, n) in [(&t.key_a, 2), (&t.key_b, 3)] {
        for i in 0..n {
            let r = t
                .call(
                    "POST",
                    "/agent/runs",
                    Some(key),
                    Some(&json!({"prompt": format!("wait {i}"), "config": {"worker_host": "nobody"}}).to_string()),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    }
    let cookie = member_cookie(&t).await;
    let page = no_redirects()
        .get(format!("{}/overview", t.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<dd id="stat-queued">2</dd>"#), "{html}");
    assert!(html.contains(r#"<dd id="stat-created">2</dd>"#), "{html}");
    assert!(html.contains("<svg"), "{html}");
    assert!(html.contains(">QUEUED</text>"), "{html}");
    // Signed out: to the login page.
    let out = no_redirects()
        .get(format!("{}/overview", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );
}
