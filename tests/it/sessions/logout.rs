//! Logout: only on proof that the request comes from this site (same `Origin`, or the
//! session's CSRF value), and afterwards the token is dead on every route: a copied cookie is
//! worth nothing (the Vouch trap in SECURITY.md).

use reqwest::{Method, StatusCode};

use super::support::{fetch, form_request, hidden_input, respond_path, session_id, user, Browser, Site, COOKIE, HOLD};
use crate::kit::{secs, within};

/// Checks everything a successful logout answer carries.
fn assert_logged_out_answer(reply: &super::support::Reply) {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("/"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("clear-site-data"), Some("\"cookies\""));
    let cookie = reply
        .session_cookie()
        .expect("a Set-Cookie clearing the session cookie");
    assert_eq!(cookie.name, COOKIE);
    assert!(cookie.value.is_empty(), "{}", cookie.raw);
    assert_eq!(cookie.max_age(), Some(0), "{}", cookie.raw);
    // Browsers only overwrite a `__Host-` cookie with one that has the same attributes.
    assert_eq!(cookie.attribute("path"), Some(Some("/")), "{}", cookie.raw);
    assert_eq!(cookie.attribute("secure"), Some(None), "{}", cookie.raw);
    assert_eq!(cookie.attribute("domain"), None, "{}", cookie.raw);
}

/// The token is refused everywhere: optional routes start over, required ones refuse.
async fn assert_token_dead(template: &Browser, token: &str, old_id: &str) {
    let mut replay = template.with_token(token);
    let reply = replay.get("/page").await;
    let fresh = reply.new_token();
    assert_ne!(fresh, token);
    let echo = reply.echo();
    assert_eq!(user(&echo), None, "the logged-out token still carries a user");
    assert_ne!(session_id(&echo).as_deref(), Some(old_id));

    for path in ["/app/x", "/admins/x"] {
        let mut replay = template.with_token(token);
        assert_eq!(replay.get(path).await.status, StatusCode::UNAUTHORIZED, "{path}");
        let mut replay = template.with_token(token);
        let reply = replay.navigate(path).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{path}");
    }
    let mut replay = template.with_token(token);
    assert_eq!(replay.session_info().await.status, StatusCode::UNAUTHORIZED);
    let mut replay = template.with_token(token);
    let public = replay.get("/public/x").await.echo();
    assert_eq!(user(&public), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_logout_ends_the_session_everywhere() {
    let site = Site::start().await;
    let mut browser = site.browser();
    browser.login("alice").await;
    let token = browser.expect_token();
    let id = session_id(&browser.get("/app/x").await.echo()).expect("session id");

    let reply = browser.logout().await;
    assert_logged_out_answer(&reply);
    assert_eq!(browser.token(), None, "the browser kept the cookie");
    assert_token_dead(&browser, &token, &id).await;

    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "logout")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_with_the_csrf_field_needs_no_origin() {
    let site = Site::start().await;
    let mut browser = site.browser();
    browser.login("alice").await;
    let token = browser.expect_token();
    let id = session_id(&browser.get("/app/x").await.echo()).expect("session id");
    // The logged-in session's CSRF value, as a page of the site would embed it.
    let (_, csrf) = browser.login_form(None).await;

    let reply = browser.post_form("/.sessiongate/logout", &[("csrf", &csrf)]).await;
    assert_logged_out_answer(&reply);
    assert_token_dead(&browser, &token, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_without_proof_of_origin_is_refused() {
    let site = Site::start().await;
    let mut browser = site.browser();
    browser.login("alice").await;
    let token = browser.expect_token();
    let port = site.gw.https.port();
    let (_, csrf) = browser.login_form(None).await;
    let (_, stranger_csrf) = site.browser().login_form(None).await;

    let origins = [
        "https://evil.example".to_owned(),
        format!("http://localhost:{port}"),
        format!("https://localhost:{}", port.wrapping_add(1)),
        format!("https://localhost.evil.example:{port}"),
        format!("https://other.test:{port}"),
        "null".to_owned(),
    ];
    for origin in &origins {
        let request = browser
            .request(Method::POST, "/.sessiongate/logout")
            .header("origin", origin);
        let reply = browser.send(request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "Origin {origin}");
    }
    let bodies: [&[(&str, &str)]; 4] = [&[], &[("csrf", "")], &[("csrf", "nope")], &[("csrf", &stranger_csrf)]];
    for fields in bodies {
        let request = form_request(browser.request(Method::POST, "/.sessiongate/logout"), fields);
        let reply = browser.send(request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "form {fields:?}");
        assert!(
            reply.session_cookies().is_empty(),
            "form {fields:?}: cookie cleared anyway"
        );
    }
    // A GET cannot log out either.
    let reply = browser.get("/.sessiongate/logout").await;
    assert_ne!(reply.status, StatusCode::SEE_OTHER);

    assert_eq!(browser.token(), Some(token.as_str()));
    assert_eq!(browser.upstream_user("/app/x").await.as_deref(), Some("alice"));
    let (form, _) = browser.login_form(None).await;
    assert_eq!(hidden_input(&form.text(), "csrf"), Some(csrf), "the CSRF value changed");
    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "logout")]),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_arriving_after_logout_cannot_bring_the_session_back() {
    let site = Site::start().await;
    let mut alice = site.browser();
    alice.login("alice").await;
    let token = alice.expect_token();
    let id = session_id(&alice.get("/app/x").await.echo()).expect("session id");

    // A request of the session is at the app when the user logs out; the app's answer, which
    // writes session data, comes back afterwards.
    let mut in_flight = alice.clone();
    let path = respond_path("/respond/held", &[(HOLD, "1"), ("X-Session-Data-Set", "written late")]);
    let pending = tokio::spawn(async move { in_flight.get(&path).await });
    site.responder.held_request_arrived().await;
    assert_logged_out_answer(&alice.logout().await);
    site.responder.release();
    let late = within(secs(10), "the held response", pending)
        .await
        .expect("held request task");
    assert_eq!(late.status, StatusCode::OK, "{}", late.text());
    assert!(late.header("x-session-data-set").is_none(), "{:?}", late.headers);

    assert_token_dead(&alice, &token, &id).await;
    let all = fetch(site.admin().authed(Method::GET, "/sessions")).await.json();
    let sessions = all["sessions"].as_array().expect("sessions");
    assert!(
        !sessions.iter().any(|s| s["id"] == id.as_str()),
        "the session is back in the store: {all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_ends_every_session_of_the_user_and_no_one_elses() {
    let site = Site::start().await;
    let mut laptop = site.browser();
    laptop.login("alice").await;
    let mut phone = site.browser();
    phone.login("alice").await;
    let mut other = site.browser();
    other.login("bob").await;
    let phone_token = phone.expect_token();
    let phone_id = session_id(&phone.get("/app/x").await.echo()).expect("session id");

    let request = form_request(
        laptop
            .request(Method::POST, "/.sessiongate/logout")
            .header(reqwest::header::ORIGIN, laptop.origin()),
        &[("everywhere", "1")],
    );
    let reply = laptop.send(request).await;
    assert_logged_out_answer(&reply);
    assert_token_dead(&phone, &phone_token, &phone_id).await;
    assert_eq!(other.upstream_user("/app/x").await.as_deref(), Some("bob"));

    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "logout_everywhere")]),
        2.0
    );
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "logout")]),
        0.0
    );
}
