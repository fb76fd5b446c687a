//! The whole life of a browser session, once per HTTP version: redirected to the login,
//! logged in, identified upstream, logged out, and the old cookie dead.

use reqwest::{StatusCode, Version};

use super::support::{hidden_input, query_param, session_id, user, Site, PASSWORD};
use crate::kit::HttpVersion;

async fn login_identity_logout(version: HttpVersion) {
    let site = Site::start().await;
    let wire = match version {
        HttpVersion::Http1 => Version::HTTP_11,
        HttpVersion::Http2 => Version::HTTP_2,
    };
    let mut browser = site.browser_on(version);

    let redirect = browser.navigate("/app/inbox?page=2").await;
    assert_eq!(redirect.version, wire);
    assert_eq!(redirect.status, StatusCode::FOUND, "{}", redirect.text());
    let anonymous = browser.expect_token();
    let location = redirect.header("location").expect("Location").to_owned();
    let rd = query_param(&location, "rd").expect("rd in the login redirect");
    assert_eq!(rd, "/app/inbox?page=2");

    let form = browser.navigate(&location).await;
    assert_eq!(form.status, StatusCode::OK);
    let csrf = hidden_input(&form.text(), "csrf").expect("csrf");
    let login = browser
        .post_form(
            "/.sessiongate/login",
            &[
                ("username", "alice"),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("rd", &rd),
            ],
        )
        .await;
    assert_eq!(login.version, wire);
    assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", login.text());
    assert_eq!(login.header("location"), Some("/app/inbox?page=2"));
    let token = browser.expect_token();
    assert_ne!(token, anonymous);

    let echo = browser.navigate("/app/inbox?page=2").await.echo();
    assert_eq!(user(&echo).as_deref(), Some("alice"));
    assert_eq!(echo.header("x-forwarded-groups"), ["admins"]);
    let id = session_id(&echo).expect("session id");
    let info = browser.session_info().await.json();
    assert_eq!(info["user"], "alice");
    assert_eq!(info["session_id"], id.as_str());

    let logout = browser.logout().await;
    assert_eq!(logout.version, wire);
    assert_eq!(logout.status, StatusCode::SEE_OTHER, "{}", logout.text());
    assert_eq!(logout.header("clear-site-data"), Some("\"cookies\""));
    assert_eq!(browser.token(), None);

    for old in [&token, &anonymous] {
        let mut replay = browser.with_token(old);
        assert_eq!(replay.get("/app/inbox").await.status, StatusCode::UNAUTHORIZED);
        let mut replay = browser.with_token(old);
        assert_eq!(user(&replay.get("/page").await.echo()), None);
    }
    assert_eq!(browser.navigate("/app/inbox").await.status, StatusCode::FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_identity_logout_over_http1() {
    login_identity_logout(HttpVersion::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_identity_logout_over_http2() {
    login_identity_logout(HttpVersion::Http2).await;
}
