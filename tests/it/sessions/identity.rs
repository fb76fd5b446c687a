//! What the upstream learns about the session and what it may not touch: identity headers set
//! by the gateway alone (SECURITY.md rule 3), the gateway's cookie never forwarded, session
//! data carried in both directions, and the gateway's cookie never settable by the app.

use reqwest::{Method, StatusCode};

use super::support::{respond_path, session_id, user, Browser, Site, ALICE_EMAIL, COOKIE, USER_AGENT};
use crate::kit::{secs, within, Echo, HttpVersion};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_the_identity_after_login_under_the_same_session_id() {
    let site = Site::start().await;
    let mut alice = site.browser();

    let anonymous = alice.get("/page").await.echo();
    let id = session_id(&anonymous).expect("session id");
    alice.login("alice").await;
    let echo = alice.get("/page").await.echo();
    assert_eq!(session_id(&echo), Some(id), "X-Session-Id changed at login");
    assert_eq!(user(&echo).as_deref(), Some("alice"));
    assert_eq!(echo.header("x-forwarded-email"), [ALICE_EMAIL]);
    assert_eq!(echo.header("x-forwarded-groups"), ["admins"]);

    // Several groups arrive comma-separated; no email means no email header.
    let mut bob = site.browser();
    bob.login("bob").await;
    let echo = bob.get("/app/x").await.echo();
    assert_eq!(user(&echo).as_deref(), Some("bob"));
    assert_eq!(echo.header("x-forwarded-groups"), ["dev,ops"]);
    assert!(!echo.has_header("x-forwarded-email"), "{:?}", echo.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_cookie_never_reaches_the_upstream_and_other_cookies_are_joined() {
    let site = Site::start().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let mut browser = site.browser_on(version);
        browser.login("alice").await;
        let token = browser.expect_token();

        for path in ["/page", "/app/x", "/public/x"] {
            // Ours in the middle of one header.
            let one_header = browser
                .request_without_cookie(Method::GET, path)
                .header("cookie", format!("a=1; {COOKIE}={token}; b=2"));
            let echo = browser.send(one_header).await.echo();
            assert_eq!(echo.header("cookie"), ["a=1; b=2"], "{version:?} {path}");
            assert!(!echo.0.to_string().contains(&token), "{version:?} {path}: {:?}", echo.0);

            // Split over several headers (as HTTP/2 clients do): one header reaches the app.
            let split = browser
                .request_without_cookie(Method::GET, path)
                .header("cookie", "a=1")
                .header("cookie", format!("{COOKIE}={token}"))
                .header("cookie", "b=2");
            let echo = browser.send(split).await.echo();
            assert_eq!(echo.header("cookie"), ["a=1; b=2"], "{version:?} {path}");
            assert!(!echo.0.to_string().contains(&token), "{version:?} {path}: {:?}", echo.0);

            // Only ours: no Cookie header at all.
            let echo = browser.get(path).await.echo();
            assert!(!echo.has_header("cookie"), "{version:?} {path}: {:?}", echo.0);
        }
        // The session was used along the way: the token still works.
        assert_eq!(user(&browser.get("/app/x").await.echo()).as_deref(), Some("alice"));
    }
}

/// Header names a client might use to pass itself off as someone: every spelling an
/// upstream framework could fold into one of the gateway's names.
const SPOOFED: &[&str] = &[
    "X-Forwarded-User",
    "x_forwarded_user",
    "X.Forwarded.User",
    "X-FORWARDED-USER",
    "x-forwarded_email",
    "X-Forwarded-Groups",
    "x.forwarded-groups",
    "X-Session-Id",
    "x_session_id",
    "X-SESSION-DATA",
    "x_session.data",
    "X-Session-Data-Set",
];

/// Whether a header name folds (lowercase, `_` and `.` to `-`) into one of the gateway's.
fn is_owned(name: &str) -> bool {
    let folded = name.to_ascii_lowercase().replace(['_', '.'], "-");
    [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-session-id",
        "x-session-data",
        "x-session-data-set",
    ]
    .contains(&folded.as_str())
}

fn assert_no_spoofed_identity(echo: &Echo, context: &str) {
    let headers = echo.0["headers"].as_object().expect("echo headers");
    for (name, values) in headers {
        let text = values.to_string();
        assert!(
            !text.contains("mallory"),
            "{context}: {name}: {text} reached the upstream"
        );
        if is_owned(name) {
            assert!(
                [
                    "x-forwarded-user",
                    "x-forwarded-email",
                    "x-forwarded-groups",
                    "x-session-id",
                    "x-session-data"
                ]
                .contains(&name.as_str()),
                "{context}: client spelling {name} reached the upstream"
            );
        }
    }
}

fn spoofing(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    SPOOFED
        .iter()
        .fold(request, |request, name| request.header(*name, "mallory"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_identity_headers_never_reach_the_upstream_in_any_spelling() {
    let site = Site::start().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let mut anonymous = site.browser_on(version);
        let mut alice = site.browser_on(version);
        alice.login("alice").await;

        for path in ["/public/x", "/page", "/respond-public/x", "/respond/x"] {
            let context = format!("{version:?} anonymous {path}");
            let echo = anonymous
                .send(spoofing(anonymous.request(Method::GET, path)))
                .await
                .echo();
            assert_no_spoofed_identity(&echo, &context);
            assert_eq!(user(&echo), None, "{context}");
            assert!(!echo.has_header("x-session-data"), "{context}");
        }
        for path in ["/public/x", "/page", "/app/x", "/admins/x", "/respond/x"] {
            let context = format!("{version:?} alice {path}");
            let echo = alice.send(spoofing(alice.request(Method::GET, path))).await.echo();
            assert_no_spoofed_identity(&echo, &context);
            if path != "/public/x" {
                assert_eq!(user(&echo).as_deref(), Some("alice"), "{context}");
                assert_eq!(echo.header("x-forwarded-groups"), ["admins"], "{context}");
                assert_eq!(echo.header("x-forwarded-email"), [ALICE_EMAIL], "{context}");
            }
        }

        // Spoofing on a required route does not get an anonymous client in.
        let refused = anonymous.send(spoofing(anonymous.request(Method::GET, "/app/x"))).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{version:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_header_cannot_remove_the_gateway_identity_headers() {
    let site = Site::start().await;
    let mut alice = site.browser();
    alice.login("alice").await;
    let token = alice.expect_token();

    let mut conn = site.gw.raw().await;
    let request = format!(
        "GET /app/x HTTP/1.1\r\n\
         Host: {}\r\n\
         User-Agent: {USER_AGENT}\r\n\
         Cookie: {COOKIE}={token}\r\n\
         Connection: keep-alive, X-Forwarded-User, X-Session-Id, X-Forwarded-Groups\r\n\r\n",
        site.gw.host_header()
    );
    let response = within(secs(5), "response", conn.roundtrip(request))
        .await
        .expect("response");
    let echo = response.echo();
    assert_eq!(user(&echo).as_deref(), Some("alice"));
    assert_eq!(echo.header("x-forwarded-groups"), ["admins"]);
    assert!(session_id(&echo).is_some(), "{:?}", echo.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_session_data_is_stored_forwarded_and_never_shown_to_the_client() {
    let site = Site::with(|c| c.section("[session]\nmax_data_bytes = 64\n")).await;
    let mut browser = site.browser();

    // Set on the very request that created the session.
    let set = browser
        .get(&respond_path("/respond/a", &[("X-Session-Data-Set", "cart=3")]))
        .await;
    assert!(browser.token().is_some(), "no session cookie");
    assert!(set.header("x-session-data-set").is_none(), "{:?}", set.headers);
    assert!(set.header("x-session-data").is_none(), "{:?}", set.headers);
    assert!(!set.echo().has_header("x-session-data"), "no data before it was set");
    assert_eq!(browser.get("/page").await.echo().header("x-session-data"), ["cart=3"]);

    // Replaced, not appended.
    browser
        .get(&respond_path("/respond/b", &[("X-Session-Data-Set", "cart=4")]))
        .await;
    assert_eq!(browser.get("/page").await.echo().header("x-session-data"), ["cart=4"]);

    // Exactly the limit is kept; one byte more is ignored (the old data stays).
    let at_limit = "d".repeat(64);
    browser
        .get(&respond_path("/respond/c", &[("X-Session-Data-Set", &at_limit)]))
        .await;
    assert_eq!(
        browser.get("/page").await.echo().header("x-session-data"),
        [at_limit.as_str()]
    );
    let over = browser
        .get(&respond_path("/respond/d", &[("X-Session-Data-Set", &"e".repeat(65))]))
        .await;
    assert_eq!(over.status, StatusCode::OK);
    assert!(over.header("x-session-data-set").is_none(), "{:?}", over.headers);
    assert_eq!(
        browser.get("/page").await.echo().header("x-session-data"),
        [at_limit.as_str()]
    );

    // Other browsers do not see it; an empty value clears it.
    let mut other = site.browser();
    assert!(!other.get("/page").await.echo().has_header("x-session-data"));
    browser
        .get(&respond_path("/respond/e", &[("X-Session-Data-Set", "")]))
        .await;
    assert!(!browser.get("/page").await.echo().has_header("x-session-data"));

    // An `auth = "none"` route has no session: the header is dropped, nothing is stored.
    let dropped = browser
        .get(&respond_path("/respond-public/f", &[("X-Session-Data-Set", "sneaky")]))
        .await;
    assert!(dropped.header("x-session-data-set").is_none(), "{:?}", dropped.headers);
    assert!(!browser.get("/page").await.echo().has_header("x-session-data"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cannot_set_the_gateway_cookie_but_can_set_its_own() {
    let site = Site::start().await;
    let mut browser = site.browser();
    browser.login("alice").await;
    let token = browser.expect_token();
    let forged = "A".repeat(43);

    for prefix in ["/respond/x", "/respond-public/x"] {
        let path = respond_path(
            prefix,
            &[
                ("Set-Cookie", &format!("{COOKIE}={forged}; Path=/; Secure; HttpOnly")),
                ("Set-Cookie", "app=1; Path=/"),
                ("Set-Cookie", &format!(" {COOKIE} = {forged}")),
            ],
        );
        let reply = browser.get(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "{prefix}: {}", reply.text());
        // The app's own cookie passes, made `Secure` (see the next test).
        assert_eq!(reply.set_cookies(), ["app=1; Path=/; Secure"], "{prefix}");
        assert_eq!(browser.token(), Some(token.as_str()), "{prefix}");
    }
    assert_eq!(user(&browser.get("/app/x").await.echo()).as_deref(), Some("alice"));

    // The gateway's own cookie for a new session is still the only one of that name.
    let mut newcomer = site.browser();
    let path = respond_path(
        "/respond/x",
        &[("Set-Cookie", &format!("{COOKIE}={forged}; Path=/; Secure"))],
    );
    let reply = newcomer.get(&path).await;
    let cookie = reply.session_cookie().expect("the gateway's cookie");
    assert_ne!(cookie.value, forged);
}

/// The app's own cookies are never weaker than the HTTPS-only site: `Secure` is always
/// added, `HttpOnly` and `SameSite` when `[upstream_cookies]` asks; what the app wrote stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cookies_gain_the_attributes_they_lack() {
    let cookies = [
        ("Set-Cookie", "JSESSIONID=abc; Path=/app"),
        ("Set-Cookie", "prefs=dark; Secure; SameSite=Strict"),
        ("Set-Cookie", "XSRF-TOKEN=t; HttpOnly"),
    ];
    let site = Site::start().await;
    let reply = site.browser().get(&respond_path("/respond-public/x", &cookies)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.set_cookies(),
        [
            "JSESSIONID=abc; Path=/app; Secure",
            "prefs=dark; Secure; SameSite=Strict",
            "XSRF-TOKEN=t; HttpOnly; Secure",
        ]
    );

    let strict = Site::with(|c| c.section("[upstream_cookies]\nhttp_only = true\nsame_site = \"lax\"\n")).await;
    let reply = strict.browser().get(&respond_path("/respond-public/x", &cookies)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.set_cookies(),
        [
            "JSESSIONID=abc; Path=/app; Secure; HttpOnly; SameSite=Lax",
            "prefs=dark; Secure; SameSite=Strict; HttpOnly",
            "XSRF-TOKEN=t; HttpOnly; Secure; SameSite=Lax",
        ]
    );
}

/// Session ids are per session and survive login; a browser's own copy does not leak into
/// another's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ids_are_distinct_per_session() {
    let site = Site::start().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let mut browser: Browser = site.browser();
        ids.push(session_id(&browser.get("/page").await.echo()).expect("session id"));
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}
