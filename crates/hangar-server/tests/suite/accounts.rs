//! Users API, dashboard sign-in and the session cookie: admin-only writes,
//! write-only passwords, the last-admin rules, cookie flags, CSRF on
//! cookie-authenticated mutations, sign-in backoff, and sessions that end on
//! logout and password change.

use crate::suite::common::{TwoTeams, no_redirects};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

const PW: &str = "member-password-1";

/// Signs in through the form; returns the `hangar_session=…` cookie pair.
async fn sign_in(t: &TwoTeams, email: &str, password: &str) -> reqwest::Response {
    no_redirects()
        .post(format!("{}/login", t.url))
        .form(&[
            ("email", email),
            ("password", password),
            ("next", "/runs/x"),
        ])
        .send()
        .await
        .unwrap()
}

fn session_cookie(resp: &reqwest::Response) -> String {
    let set = resp
        .headers()
        .get(SET_COOKIE)
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap()
        .to_owned();
    set.split(';').next().unwrap().to_owned()
}

/// The CSRF token rendered into a dashboard page for this cookie.
async fn csrf(t: &TwoTeams, cookie: &str) -> String {
    let page = no_redirects()
        .get(format!("{}/", t.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let at = html
        .find("name=\"csrf-token\" content=\"")
        .expect("csrf meta tag")
        + "name=\"csrf-token\" content=\"".len();
    html[at..at + 64].to_owned()
}

async fn with_cookie(
    t: &TwoTeams,
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = no_redirects()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}/api/v1{path}", t.url),
        )
        .header(COOKIE, cookie);
    if let Some(c) = csrf {
        req = req.header("x-hangar-csrf", c);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn create_member(t: &TwoTeams, email: &str) -> Value {
    let r = t
        .call(
            "POST",
            "/users",
            Some(&t.key_a),
            Some(&json!({"email": email, "password": PW}).to_string()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        !r.text.contains(PW) && !r.text.contains("password"),
        "{}",
        r.text
    );
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_and_passwords_are_write_only() {
    let t = TwoTeams::start().await;
    let a = t.key_a.as_str();
    let member = create_member(&t, "Mia@Example.com").await;
    assert_eq!(member["role"], "member");
    assert_eq!(member["display_name"], "Mia");
    let mid = member["id"].as_str().unwrap();

    // Bad input says what is wrong.
    for (body, want) in [
        (json!({"email": "not-an-email"}), "not an email"),
        (json!({"email": "x@y.z", "password": "short"}), "too short"),
        (json!({"email": "x@y.z", "role": "owner"}), "role"),
        (json!({"email": "x@y.z", "passwd": "x"}), "passwd"),
    ] {
        let r = t
            .call("POST", "/users", Some(a), Some(&body.to_string()))
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(want), "{body}: {}", r.text);
    }
    // Emails are unique, case-insensitively.
    let dup = t
        .call(
            "POST",
            "/users",
            Some(a),
            Some(r#"{"email":"mia@EXAMPLE.com"}"#),
        )
        .await;
    assert_eq!(dup.status, 409, "{}", dup.text);

    let list = t.ok("GET", "/users", a, None).await;
    assert!(!list.to_string().contains("password"), "{list}");
    assert_eq!(list["users"].as_array().unwrap().len(), 2, "{list}");
    let teams = t.ok("GET", "/teams", a, None).await;
    assert_eq!(teams["teams"][0]["user_count"], 2, "{teams}");

    // A member may read but not write.
    let login = sign_in(&t, "mia@example.com", PW).await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(&login);
    let token = csrf(&t, &cookie).await;
    let (status, _) = with_cookie(&t, "GET", "/users", &cookie, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = with_cookie(
        &t,
        "POST",
        "/users",
        &cookie,
        Some(&token),
        Some(json!({"email": "sneaky@example.com", "role": "admin"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("admins"),
        "{body}"
    );

    // The only admin can neither step down, be disabled, nor delete themselves.
    let me = t.ok("GET", "/whoami", a, None).await;
    let admin_id = me["user"]["id"].as_str().unwrap().to_owned();
    for body in [r#"{"role":"member"}"#, r#"{"disabled":true}"#] {
        let r = t
            .call("PATCH", &format!("/users/{admin_id}"), Some(a), Some(body))
            .await;
        assert_eq!(r.status, 409, "{body}: {}", r.text);
        assert!(r.text.contains("last active admin"), "{}", r.text);
    }
    let r = t
        .call("DELETE", &format!("/users/{admin_id}"), Some(a), None)
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("your own account"), "{}", r.text);

    // A new password ends the member's sessions.
    let r = t
        .call(
            "PATCH",
            &format!("/users/{mid}"),
            Some(a),
            Some(r#"{"password":"another-password-2"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains("another-password"), "{}", r.text);
    let (status, _) = with_cookie(&t, "GET", "/whoami", &cookie, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        sign_in(&t, "mia@example.com", PW).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sign_in(&t, "mia@example.com", "another-password-2")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );

    // Deleting the member: gone from the API, cannot sign in.
    let r = t
        .call("DELETE", &format!("/users/{mid}"), Some(a), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = t.call("GET", &format!("/users/{mid}"), Some(a), None).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(
        sign_in(&t, "mia@example.com", "another-password-2")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_strict_and_mutations_need_the_csrf_token() {
    let t = TwoTeams::start().await;
    create_member(&t, "sam@example.com").await;

    // Pages need a session.
    let page = no_redirects()
        .get(format!("{}/workers", t.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()[LOCATION], "/login?next=%2Fworkers");

    let wrong = sign_in(&t, "sam@example.com", "nope-nope-nope").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong email or password")
    );
    let unknown = sign_in(&t, "nobody@example.com", PW).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let ok = sign_in(&t, "SAM@example.com", PW).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()[LOCATION], "/runs/x");
    let set = ok.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "http server, no Secure flag: {set}"
    );
    let cookie = session_cookie(&ok);
    // Only a hash of the token is stored.
    let token = cookie.split_once('=').unwrap().1.to_owned();
    let now = hangar_protocol::Timestamp::now().unix_millis();
    let store = t.store();
    assert!(
        store
            .web_session(token.as_bytes(), now)
            .await
            .unwrap()
            .is_none()
    );
    let hashed = hangar_server::auth::hash_secret(&token);
    assert!(store.web_session(&hashed, now).await.unwrap().is_some());

    let (status, me) = with_cookie(&t, "GET", "/whoami", &cookie, None, None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["kind"], "web_session");
    assert_eq!(me["user"]["email"], "sam@example.com");

    // A mutation by cookie needs the page's CSRF token.
    let body = json!({"name": "from the dashboard"});
    let (status, problem) =
        with_cookie(&t, "POST", "/api-keys", &cookie, None, Some(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("X-Hangar-CSRF")
    );
    let (status, _) = with_cookie(
        &t,
        "POST",
        "/api-keys",
        &cookie,
        Some(&"0".repeat(64)),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let token = csrf(&t, &cookie).await;
    let (status, key) =
        with_cookie(&t, "POST", "/api-keys", &cookie, Some(&token), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{key}");
    assert!(key["key"].as_str().unwrap().starts_with("hk_"));

    // Logout needs the token too, then ends the session.
    let forged = no_redirects()
        .post(format!("{}/logout", t.url))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let out = no_redirects()
        .post(format!("{}/logout", t.url))
        .header(COOKIE, &cookie)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _) = with_cookie(&t, "GET", "/whoami", &cookie, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_sign_ins_back_off_and_redirects_stay_local() {
    let t = TwoTeams::start().await;
    create_member(&t, "lee@example.com").await;
    for _ in 0..5 {
        assert_eq!(
            sign_in(&t, "lee@example.com", "wrong-password")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let throttled = sign_in(&t, "lee@example.com", PW).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers().contains_key("retry-after"));
    assert!(
        throttled
            .text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );

    // `next` never leaves the site.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let resp = no_redirects()
        .post(format!("{}/login", t.url))
        .form(&[
            ("email", "lee@example.com"),
            ("password", PW),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_only_show_the_viewers_team() {
    let t = TwoTeams::start().await;
    let a = t.key_a.as_str();
    let run = t
        .ok(
            "POST",
            "/agent/runs",
            a,
            Some(r#"{"prompt":"alpha-only-dashboard-run"}"#),
        )
        .await;
    let run_id = run["run_id"].as_str().unwrap();
    // A user of team B signs in.
    let store = t.store();
    let team_b = store.team(2).await.unwrap();
    let bob = store
        .create_user(hangar_store::NewUser {
            uid: "bob-uid".into(),
            team_id: team_b.id,
            email: Some("bob@team-b.example".into()),
            display_name: "Bob".into(),
            role: "admin".into(),
        })
        .await
        .unwrap();
    let hash = hangar_server::web::auth::hash_password(PW).await.unwrap();
    store
        .set_password_hash(team_b.id, &bob.uid, Some(&hash))
        .await
        .unwrap();
    let cookie = session_cookie(&sign_in(&t, "bob@team-b.example", PW).await);
    let base = t.url.clone();
    let get = |path: String| {
        let cookie = cookie.clone();
        let url = format!("{base}{path}");
        async move {
            let r = no_redirects()
                .get(url)
                .header(COOKIE, cookie)
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, list) = get("/".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!list.contains("alpha-only-dashboard-run"));
    let (status, rows) = get("/_dash/runs?q=alpha".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!rows.contains(run_id));
    for path in [
        format!("/runs/{run_id}"),
        format!("/_dash/runs/{run_id}/meta"),
    ] {
        let (status, body) = get(path.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!body.contains("alpha-only"), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_also_revokes_their_api_keys() {
    let t = TwoTeams::start().await;
    let member = create_member(&t, "kim@example.com").await;
    let mid = member["id"].as_str().unwrap();
    let login = sign_in(&t, "kim@example.com", PW).await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(&login);
    let token = csrf(&t, &cookie).await;
    let (status, key) = with_cookie(
        &t,
        "POST",
        "/api-keys",
        &cookie,
        Some(&token),
        Some(json!({"name": "kim-laptop"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{key}");
    let secret = key["key"].as_str().unwrap().to_owned();
    assert_eq!(
        t.call("GET", "/whoami", Some(&secret), None).await.status,
        200
    );

    let r = t
        .call(
            "PATCH",
            &format!("/users/{mid}"),
            Some(&t.key_a),
            Some(r#"{"disabled":true}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let after = t.call("GET", "/whoami", Some(&secret), None).await;
    assert_eq!(after.status, 401, "{}", after.text);
    assert!(after.text.contains("revoked"), "{}", after.text);
    let (status, _) = with_cookie(&t, "GET", "/whoami", &cookie, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The admin's own key is untouched.
    assert_eq!(
        t.call("GET", "/whoami", Some(&t.key_a), None).await.status,
        200
    );
}
