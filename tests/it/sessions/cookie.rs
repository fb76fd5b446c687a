//! The session cookie: a `__Host-` cookie holding 43 characters of base64url, `Secure`,
//! `HttpOnly`, `SameSite`, host-only and session-scoped unless configured persistent; issued
//! on `optional` and `required` routes, never on `auth = "none"` routes.

use reqwest::{Method, StatusCode};

use super::support::{
    is_session_id_shaped, is_token_shaped, respond_path, session_id, user, SetCookie, Site, COOKIE, PASSWORD,
};
use crate::kit::Echo;

/// The attributes every session cookie carries, whatever the configuration.
fn assert_host_cookie(cookie: &SetCookie, same_site: &str) {
    assert_eq!(cookie.name, COOKIE, "{}", cookie.raw);
    assert!(is_token_shaped(&cookie.value), "token shape: {}", cookie.raw);
    assert_eq!(cookie.attribute("path"), Some(Some("/")), "{}", cookie.raw);
    assert_eq!(cookie.attribute("secure"), Some(None), "{}", cookie.raw);
    assert_eq!(cookie.attribute("httponly"), Some(None), "{}", cookie.raw);
    let value = cookie.attribute("samesite").flatten().unwrap_or_default();
    assert!(value.eq_ignore_ascii_case(same_site), "{}", cookie.raw);
    assert_eq!(cookie.attribute("domain"), None, "{}", cookie.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_route_issues_an_anonymous_session_with_a_host_only_cookie() {
    let site = Site::start().await;
    let mut browser = site.browser();

    let first = browser.get("/page").await;
    let cookie = first.session_cookie().expect("a session cookie on the first visit");
    assert_host_cookie(&cookie, "Lax");
    assert_eq!(cookie.attribute("max-age"), None, "{}", cookie.raw);
    assert_eq!(cookie.attribute("expires"), None, "{}", cookie.raw);
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let echo = first.echo();
    let id = session_id(&echo).expect("X-Session-Id for a new session");
    assert!(is_session_id_shaped(&id), "X-Session-Id {id:?}");
    assert_eq!(user(&echo), None, "an anonymous session has no user");
    assert!(!echo.has_header("x-forwarded-email"));
    assert!(!echo.has_header("x-forwarded-groups"));
    assert!(!echo.has_header("x-session-data"), "new sessions have no data");

    // The cookie is kept: no new one, same session.
    let second = browser.get("/other").await;
    assert!(second.session_cookies().is_empty(), "{:?}", second.set_cookies());
    assert_eq!(session_id(&second.echo()), Some(id.clone()));

    // Another client without the cookie gets a session of its own.
    let mut stranger = site.browser();
    let theirs = stranger.get("/page").await;
    assert_ne!(theirs.new_token(), cookie.value);
    assert_ne!(session_id(&theirs.echo()), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_route_issues_a_session_even_when_it_refuses_the_request() {
    let site = Site::start().await;
    let mut browser = site.browser();

    let refused = browser.get("/app/x").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text());
    let cookie = refused.session_cookie().expect("a session cookie on a 401");
    assert_host_cookie(&cookie, "Lax");
    assert_eq!(refused.header("cache-control"), Some("no-store"));

    // The anonymous session it issued is the one the login form then uses.
    let (form, _) = browser.login_form(None).await;
    assert!(form.session_cookies().is_empty(), "{:?}", form.set_cookies());
    assert_eq!(site.upstream.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_none_route_never_sets_a_cookie_nor_sends_a_session_id() {
    let site = Site::start().await;
    let mut browser = site.browser();

    let anonymous = browser.get("/public/x").await;
    assert!(anonymous.set_cookies().is_empty(), "{:?}", anonymous.set_cookies());
    assert!(!anonymous.echo().has_header("x-session-id"));

    // Even a logged-in session is not made known to an `auth = "none"` app.
    browser.login("alice").await;
    let token = browser.expect_token();
    let logged_in = browser.get("/public/x").await;
    assert!(logged_in.set_cookies().is_empty(), "{:?}", logged_in.set_cookies());
    let echo = logged_in.echo();
    for name in [
        "x-session-id",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
    ] {
        assert!(!echo.has_header(name), "{name} on an auth none route: {:?}", echo.0);
    }
    assert!(
        !echo.0.to_string().contains(&token),
        "the token reached an auth none upstream: {:?}",
        echo.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_same_site_and_persistent_cookies_follow_the_config() {
    let site =
        Site::with(|c| c.section("[session]\nsame_site = \"strict\"\npersistent = true\nabsolute_timeout = \"2h\"\n"))
            .await;
    let mut browser = site.browser();

    let anonymous = browser.get("/page").await.session_cookie().expect("cookie");
    assert_host_cookie(&anonymous, "Strict");
    assert_eq!(anonymous.max_age(), Some(7200), "{}", anonymous.raw);

    let reply = browser.submit_login("alice", PASSWORD, "/").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    let rotated = reply.session_cookie().expect("cookie after login");
    assert_host_cookie(&rotated, "Strict");
    assert_eq!(rotated.max_age(), Some(7200), "{}", rotated.raw);
}

/// reqwest's cookie jar stands in for a browser: it must accept the cookie as sent (host-only,
/// `Secure` over https), send it back, take the rotated one and drop it on logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cookie_jar_follows_the_whole_flow() {
    let site = Site::start().await;
    let jar = site.gw.client_builder().cookie_store().build();
    let url = |path: &str| site.gw.url(path);
    let get = |path: &str| jar.get(url(path)).header("user-agent", "jar");

    let first = Echo::from_response(get("/page").send().await.expect("GET /page")).await;
    let id = session_id(&first).expect("session id");
    let again = Echo::from_response(get("/page").send().await.expect("GET /page")).await;
    assert_eq!(
        session_id(&again),
        Some(id.clone()),
        "the jar did not send the cookie back"
    );

    let form = get("/.sessiongate/login").send().await.expect("login form");
    let html = form.text().await.expect("form body");
    let csrf = super::support::hidden_input(&html, "csrf").expect("csrf field");
    let body = super::support::encode_form(&[
        ("username", "alice"),
        ("password", PASSWORD),
        ("csrf", &csrf),
        ("rd", "/app/home"),
    ]);
    let login = jar
        .request(Method::POST, url("/.sessiongate/login"))
        .header("user-agent", "jar")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(login.headers()["location"], "/app/home");

    let home = Echo::from_response(get("/app/home").send().await.expect("GET /app/home")).await;
    assert_eq!(user(&home).as_deref(), Some("alice"));
    assert_eq!(session_id(&home), Some(id), "the session id changed at login");

    let logout = jar
        .post(url("/.sessiongate/logout"))
        .header("user-agent", "jar")
        .header("origin", format!("https://{}", site.gw.host_header()))
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    let after = get("/app/home").send().await.expect("GET after logout");
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_setting_the_cookie_is_not_cacheable_whatever_the_app_says() {
    let site = Site::start().await;
    let mut browser = site.browser();
    let path = respond_path(
        "/respond/x",
        &[
            ("Cache-Control", "public, max-age=3600"),
            ("Cache-Control", "immutable"),
        ],
    );
    // `Browser::send` checks that the only Cache-Control is `no-store`.
    let reply = browser.get(&path).await;
    assert!(reply.session_cookie().is_some(), "{:?}", reply.headers);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}
