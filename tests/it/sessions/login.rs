//! The built-in login: the form and its CSRF field, token rotation (OWASP session fixation),
//! one answer for every kind of bad credentials, throttling, `rd` staying home (SECURITY.md
//! rule 7), what `required` routes answer without a login, groups, and the session endpoint.

use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};

use super::support::{
    encode_form, fetch, hidden_input, query_param, respond_path, session_id, site_config, user, Browser, Responder,
    Site, ALICE_EMAIL, COOKIE, HOLD, PASSWORD, USER_AGENT,
};
use crate::kit::raw::RawResponse;
use crate::kit::{secs, within, BinaryGateway, HttpVersion, TestUpstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_form_has_a_csrf_field_and_starts_a_session() {
    let site = Site::start().await;
    let mut browser = site.browser();

    let (form, csrf) = browser.login_form(Some("/app/x?y=1")).await;
    assert!(
        form.header("content-type").is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        form.headers
    );
    assert_eq!(form.header("cache-control"), Some("no-store"));
    assert!(csrf.len() >= 16, "csrf value {csrf:?}");
    assert_eq!(hidden_input(&form.text(), "rd").as_deref(), Some("/app/x?y=1"));
    let token = form.new_token();

    // Reloading the form keeps the session and its CSRF value.
    let (again, csrf_again) = browser.login_form(None).await;
    assert!(again.session_cookies().is_empty(), "{:?}", again.set_cookies());
    assert_eq!(csrf_again, csrf);
    assert!(!form.text().contains(&token), "the token is in the page");

    // Another session has another CSRF value.
    let (_, other_csrf) = site.browser().login_form(None).await;
    assert_ne!(other_csrf, csrf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rotates_the_token_and_keeps_the_session_id_and_data() {
    let site = Site::start().await;
    let mut browser = site.browser();
    browser
        .get(&respond_path("/respond/x", &[("X-Session-Data-Set", "theme=dark")]))
        .await;
    let anonymous_token = browser.expect_token();
    let id = session_id(&browser.get("/page").await.echo()).expect("session id");

    let reply = browser.submit_login("alice", PASSWORD, "/app/page?x=1&y=%2F").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("/app/page?x=1&y=%2F"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let token = reply.new_token();
    assert_ne!(token, anonymous_token, "the token was not rotated at login");

    let echo = browser.get("/app/page?x=1&y=%2F").await.echo();
    assert_eq!(user(&echo).as_deref(), Some("alice"));
    assert_eq!(session_id(&echo).as_deref(), Some(id.as_str()));
    assert_eq!(echo.header("x-session-data"), ["theme=dark"]);

    // The pre-login token is dead: a fresh anonymous session, not alice, not the old id.
    let mut replay = browser.with_token(&anonymous_token);
    let refused = replay.get("/app/x").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let mut replay = browser.with_token(&anonymous_token);
    let reply = replay.get("/page").await;
    let fresh = reply.new_token();
    assert_ne!(fresh, anonymous_token);
    assert_ne!(fresh, token);
    let echo = reply.echo();
    assert_eq!(user(&echo), None);
    assert_ne!(session_id(&echo).as_deref(), Some(id.as_str()));
    assert!(!echo.has_header("x-session-data"));

    // The new token still works after the replay attempt.
    assert_eq!(browser.upstream_user("/page").await.as_deref(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_in_again_as_someone_else_rotates_again() {
    let site = Site::start().await;
    let mut browser = site.browser();
    browser.login("alice").await;
    let alice_token = browser.expect_token();
    browser.login("bob").await;
    let echo = browser.get("/ops/x").await.echo();
    assert_eq!(user(&echo).as_deref(), Some("bob"));
    assert_eq!(echo.header("x-forwarded-groups"), ["dev,ops"]);
    assert!(
        !echo.has_header("x-forwarded-email"),
        "alice's email stuck: {:?}",
        echo.0
    );

    let mut replay = browser.with_token(&alice_token);
    assert_eq!(replay.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let site = Site::start().await;
    let mut browser = site.browser();
    browser.get("/page").await;
    let token = browser.expect_token();

    let wrong = browser.submit_login("alice", "not the password", "/x").await;
    let unknown = browser.submit_login("nobody", PASSWORD, "/x").await;
    for (what, reply) in [("wrong password", &wrong), ("unknown user", &unknown)] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.text());
        assert!(reply.session_cookies().is_empty(), "{what}: {:?}", reply.set_cookies());
        assert!(hidden_input(&reply.text(), "csrf").is_some(), "{what}: no form again");
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{what}");
    }
    assert_eq!(wrong.header("content-type"), unknown.header("content-type"));
    assert_eq!(wrong.text(), unknown.text(), "the two failures can be told apart");
    assert!(!wrong.text().contains("not the password"));

    // Nothing changed: same token, still anonymous.
    assert_eq!(browser.token(), Some(token.as_str()));
    assert_eq!(browser.upstream_user("/page").await, None);
    let metrics = site.admin().metrics().await;
    assert_eq!(metrics.value("sessiongate_logins_total", &[("result", "failed")]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_the_session_csrf_value_is_forbidden() {
    let site = Site::start().await;
    let mut browser = site.browser();
    let (_, csrf) = browser.login_form(None).await;
    let (_, other_csrf) = site.browser().login_form(None).await;

    let attempts: [(&str, Vec<(&str, &str)>); 4] = [
        ("missing", vec![("username", "alice"), ("password", PASSWORD)]),
        (
            "empty",
            vec![("username", "alice"), ("password", PASSWORD), ("csrf", "")],
        ),
        (
            "wrong",
            vec![("username", "alice"), ("password", PASSWORD), ("csrf", "x")],
        ),
        (
            "another session's",
            vec![("username", "alice"), ("password", PASSWORD), ("csrf", &other_csrf)],
        ),
    ];
    for (what, fields) in attempts {
        let reply = browser.post_form("/.sessiongate/login", &fields).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what} csrf: {}", reply.text());
        assert!(reply.session_cookies().is_empty(), "{what}: {:?}", reply.set_cookies());
    }
    // The right value without the session it belongs to.
    let mut cookieless = browser.clone();
    cookieless.set_token(None);
    let reply = cookieless
        .post_form(
            "/.sessiongate/login",
            &[("username", "alice"), ("password", PASSWORD), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "no cookie: {}", reply.text());
    assert_eq!(cookieless.upstream_user("/page").await, None);

    assert_eq!(browser.upstream_user("/page").await, None);
    let metrics = site.admin().metrics().await;
    assert_eq!(metrics.value("sessiongate_sessions_rotated_total", &[]), 0.0);
}

fn login_throttled(c: crate::kit::GatewayConfig) -> crate::kit::GatewayConfig {
    c.section("[login]\nmax_failures = 2\nfailure_window = \"10m\"\n")
}

/// A browser whose connections come from `ip` (any 127/8 address works on loopback).
fn browser_from(site: &Site, ip: [u8; 4]) -> Browser {
    let client = site.gw.client_builder().local_address(ip.into()).build();
    Browser::new(&site.gw, client)
}

fn assert_throttled(reply: &super::support::Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{what}: {}", reply.text());
    let retry = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"));
    let secs: u64 = retry
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {retry:?}"));
    assert!(secs > 0, "{what}: Retry-After {secs}");
    assert!(reply.session_cookies().is_empty(), "{what}: logged in anyway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_username() {
    let site = Site::with(login_throttled).await;
    let mut attacker = browser_from(&site, [127, 0, 0, 1]);
    for n in 1..=2 {
        let reply = attacker.submit_login("alice", &format!("guess {n}"), "/").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "failure {n}");
    }
    let reply = attacker.submit_login("alice", PASSWORD, "/").await;
    assert_throttled(&reply, "3rd attempt, right password");

    // The username is blocked from any address, even with the right password.
    let mut elsewhere = browser_from(&site, [127, 0, 0, 2]);
    let reply = elsewhere.submit_login("alice", PASSWORD, "/").await;
    assert_throttled(&reply, "alice from another address");
    assert_eq!(elsewhere.upstream_user("/page").await, None);

    // Other users are not affected.
    let mut bob = browser_from(&site, [127, 0, 0, 3]);
    bob.login("bob").await;
    let metrics = site.admin().metrics().await;
    assert_eq!(metrics.value("sessiongate_logins_total", &[("result", "failed")]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_client_address() {
    let site = Site::with(login_throttled).await;
    let mut sprayer = browser_from(&site, [127, 0, 0, 4]);
    for name in ["u1", "u2"] {
        let reply = sprayer.submit_login(name, "pw", "/").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{name}");
    }
    let reply = sprayer.submit_login("alice", PASSWORD, "/").await;
    assert_throttled(&reply, "a fresh username from the blocked address");
    assert_eq!(sprayer.upstream_user("/page").await, None);

    // alice from her own address is fine.
    let mut alice = browser_from(&site, [127, 0, 0, 1]);
    alice.login("alice").await;
}

/// Values of `rd` that would leave the site, as the login form's field carries them (the
/// gateway decodes the form, so `\t` here is a real tab on its side).
const OFFSITE: &[&str] = &[
    "//evil.example",
    "/\\evil.example",
    "https://evil.example",
    "/\t/evil.example",
    "\\\\evil.example",
    "https:evil.example",
    "http://evil.example/app",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "\t//evil.example",
    " //evil.example",
    "javascript:alert(1)",
    "evil.example",
    "",
];

/// How many of [`OFFSITE`] also go through a real login (each costs a password check).
const OFFSITE_LOGINS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsite_rd_ends_at_the_root() {
    let site = Site::start().await;

    // The form's hidden field already says `/` (no password check needed for that).
    for rd in OFFSITE {
        let mut browser = site.browser();
        let (form, _) = browser.login_form(Some(rd)).await;
        assert_eq!(
            hidden_input(&form.text(), "rd").as_deref(),
            Some("/"),
            "form for rd {rd:?}"
        );
    }

    // And a successful login never redirects there, whatever the form posted.
    let mut browser = site.browser();
    for rd in &OFFSITE[..OFFSITE_LOGINS] {
        let reply = browser.submit_login("alice", PASSWORD, rd).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "rd {rd:?}: {}", reply.text());
        assert_eq!(reply.header("location"), Some("/"), "rd {rd:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_route_sends_browsers_to_the_login_and_back() {
    let site = Site::start().await;
    let mut browser = site.browser();
    let target = "/app/page?x=1&next=%2Fa%26b";

    let redirect = browser.navigate(target).await;
    assert_eq!(redirect.status, StatusCode::FOUND, "{}", redirect.text());
    assert_eq!(redirect.header("cache-control"), Some("no-store"));
    let location = redirect.header("location").expect("Location").to_owned();
    assert!(location.starts_with("/.sessiongate/login?rd="), "{location}");
    assert_eq!(query_param(&location, "rd").as_deref(), Some(target), "{location}");

    // Follow it like a browser: the form carries rd, the login returns to it.
    let form = browser.navigate(&location).await;
    assert_eq!(hidden_input(&form.text(), "rd").as_deref(), Some(target));
    let csrf = hidden_input(&form.text(), "csrf").expect("csrf");
    let reply = browser
        .post_form(
            "/.sessiongate/login",
            &[
                ("username", "alice"),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("rd", target),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    assert_eq!(reply.header("location"), Some(target));
    let echo = browser.navigate(target).await.echo();
    assert_eq!(user(&echo).as_deref(), Some("alice"));
    assert_eq!(site.upstream.targets(), [target], "the upstream saw a refused request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_route_answers_other_clients_with_401_json() {
    let site = Site::start().await;
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let mut client = site.browser_on(version);
        for accept in [None, Some("application/json"), Some("*/*")] {
            let mut request = client.request(Method::GET, "/app/data");
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            let reply = client.send(request).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{version:?} {accept:?}");
            assert!(
                reply
                    .header("content-type")
                    .is_some_and(|t| t.starts_with("application/json")),
                "{version:?} {accept:?}: {:?}",
                reply.headers
            );
            assert!(reply.json().is_object(), "{version:?} {accept:?}");
            assert!(reply.header("location").is_none(), "{version:?} {accept:?}");
        }
    }
    assert_eq!(site.upstream.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_restricted_routes_need_membership() {
    let site = Site::start().await;
    let mut alice = site.browser();
    alice.login("alice").await;
    let mut bob = site.browser();
    bob.login("bob").await;

    assert_eq!(user(&alice.get("/admins/x").await.echo()).as_deref(), Some("alice"));
    assert_eq!(user(&bob.get("/ops/x").await.echo()).as_deref(), Some("bob"));
    let before = site.upstream.request_count();
    for (who, browser, path) in [("alice", &mut alice, "/ops/x"), ("bob", &mut bob, "/admins/x")] {
        let reply = browser.navigate(path).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{who} on {path}");
        assert!(
            reply.header("location").is_none(),
            "{who} on {path}: sent to log in again"
        );
    }
    assert_eq!(
        site.upstream.request_count(),
        before,
        "a forbidden request was forwarded"
    );
    // Anonymous on a group route: the login, not 403.
    let mut anonymous = site.browser();
    assert_eq!(anonymous.get("/admins/x").await.status, StatusCode::UNAUTHORIZED);
}

fn parse_time(value: &serde_json::Value, what: &str) -> SystemTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{what} {text:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_endpoint_describes_the_session_but_never_the_token() {
    let site = Site::start().await;
    let mut browser = site.browser();

    let none = browser.session_info().await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{}", none.text());
    assert!(none.session_cookies().is_empty(), "{:?}", none.set_cookies());
    let mut forged = browser.with_token(&"B".repeat(43));
    assert_eq!(forged.session_info().await.status, StatusCode::UNAUTHORIZED);

    let id = session_id(&browser.get("/page").await.echo()).expect("session id");
    let anonymous = browser.session_info().await;
    assert_eq!(anonymous.status, StatusCode::OK, "{}", anonymous.text());
    assert_eq!(anonymous.header("cache-control"), Some("no-store"));
    let json = anonymous.json();
    assert_eq!(json["authenticated"], false);
    assert!(json["user"].is_null(), "{json}");
    assert_eq!(json["groups"], serde_json::json!([]));
    assert_eq!(json["session_id"], id.as_str());

    browser.login("alice").await;
    let token = browser.expect_token();
    let reply = browser.session_info().await;
    let json = reply.json();
    assert_eq!(json["authenticated"], true, "{json}");
    assert_eq!(json["user"], "alice");
    assert_eq!(json["email"], ALICE_EMAIL);
    assert_eq!(json["groups"], serde_json::json!(["admins"]));
    assert_eq!(json["session_id"], id.as_str());
    let now = SystemTime::now();
    let idle = parse_time(&json["idle_expires_at"], "idle_expires_at");
    let absolute = parse_time(&json["expires_at"], "expires_at");
    // Defaults: 30 minutes idle, 12 hours absolute.
    assert!(idle > now + Duration::from_secs(25 * 60), "{json}");
    assert!(idle <= now + Duration::from_secs(31 * 60), "{json}");
    assert!(absolute > now + Duration::from_secs(11 * 3600), "{json}");
    assert!(absolute <= now + Duration::from_secs(12 * 3600 + 60), "{json}");
    assert!(!reply.text().contains(&token), "the token is in the session JSON");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_arriving_after_login_cannot_revive_the_pre_login_token() {
    let site = Site::start().await;
    let mut browser = site.browser();
    let id = session_id(&browser.get("/page").await.echo()).expect("session id");
    let anonymous = browser.expect_token();

    // A request with the pre-login token is at the app while the user logs in.
    let mut in_flight = browser.clone();
    let path = respond_path("/respond/held", &[(HOLD, "1"), ("X-Session-Data-Set", "written late")]);
    let pending = tokio::spawn(async move { in_flight.get(&path).await });
    site.responder.held_request_arrived().await;
    browser.login("alice").await;
    site.responder.release();
    let late = within(secs(10), "the held response", pending)
        .await
        .expect("held request task");
    assert_eq!(late.status, StatusCode::OK, "{}", late.text());

    let mut replay = browser.with_token(&anonymous);
    let reply = replay.get("/page").await;
    assert_ne!(reply.new_token(), anonymous);
    let echo = reply.echo();
    assert_eq!(user(&echo), None);
    assert_ne!(session_id(&echo).as_deref(), Some(id.as_str()));
    assert_eq!(browser.upstream_user("/app/x").await.as_deref(), Some("alice"));

    // The store holds the session once, as alice's.
    let all = fetch(site.admin().authed(Method::GET, "/sessions")).await.json();
    let copies: Vec<_> = all["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter(|s| s["id"] == id.as_str())
        .collect();
    assert_eq!(copies.len(), 1, "{all}");
    assert_eq!(copies[0]["user"], "alice", "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_logout_keep_the_connection_open() {
    // One raw connection carries the form, the login, the page after it and the sign-out, as
    // a browser's would: their form bodies are read to their end, so it need not close.
    // (A pooling client may race a second connection; bytes on one socket cannot.)
    let site = Site::start().await;
    let mut conn = site.gw.raw().await;
    let host = site.gw.host_header();
    let mut on_conn = async |request: String, what: &str| {
        within(secs(20), what, conn.roundtrip(request))
            .await
            .unwrap_or_else(|e| panic!("{what}, on the login connection: {e}"))
    };

    let form = on_conn(
        format!(
            "GET /.sessiongate/login HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n\
             Accept: text/html\r\n\r\n"
        ),
        "login form",
    )
    .await;
    assert_eq!(form.status, 200, "{}", form.text());
    let anonymous = raw_session_token(&form).expect("the form starts a session");
    let csrf = hidden_input(&form.text(), "csrf").expect("csrf field");

    let body = encode_form(&[
        ("username", "alice"),
        ("password", PASSWORD),
        ("csrf", &csrf),
        ("rd", "/"),
    ]);
    let login = on_conn(
        same_origin_form_post("/.sessiongate/login", &host, &anonymous, &body),
        "login",
    )
    .await;
    assert_eq!(login.status, 303, "{}", login.text());
    assert_ne!(login.header("connection"), Some("close"), "{:?}", login.headers);
    let token = raw_session_token(&login).expect("login sets the rotated token");
    assert_ne!(token, anonymous);

    let page = on_conn(
        get_with_token("/app/after-login", &host, &token),
        "the page after login",
    )
    .await;
    assert_eq!(page.echo().header_joined("x-forwarded-user"), "alice");

    // A same-origin sign-out needs no form field, but a browser's form sends one: the
    // body is read all the same, so this connection stays open too.
    let body = encode_form(&[("csrf", &csrf)]);
    let logout = on_conn(
        same_origin_form_post("/.sessiongate/logout", &host, &token, &body),
        "logout",
    )
    .await;
    assert_eq!(logout.status, 303, "{}", logout.text());
    assert_ne!(logout.header("connection"), Some("close"), "{:?}", logout.headers);
    let after = on_conn(
        get_with_token("/app/after-logout", &host, &token),
        "a request after logout",
    )
    .await;
    assert!(
        after.header("x-forwarded-user").is_none() && !after.text().contains("x-forwarded-user"),
        "the revoked token still names alice: {}",
        after.text()
    );
}

/// A browser's GET of `path`, carrying the session `token`.
fn get_with_token(path: &str, host: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nCookie: {COOKIE}={token}\r\n\r\n")
}

/// A browser's same-origin form POST to `path`, carrying the session `token`.
fn same_origin_form_post(path: &str, host: &str, token: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nOrigin: https://{host}\r\n\
         Cookie: {COOKIE}={token}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The session token a raw response sets, if it sets one.
fn raw_session_token(response: &RawResponse) -> Option<String> {
    response.header_all("set-cookie").into_iter().find_map(|c| {
        let value = c.strip_prefix(COOKIE)?.strip_prefix('=')?;
        let value = value.split(';').next()?;
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// `Cpus_allowed_list` of each thread of `gw`, by thread name.
#[cfg(target_os = "linux")]
fn cpus_allowed(gw: &BinaryGateway) -> Vec<(String, String)> {
    gw.thread_files("status")
        .into_iter()
        .filter_map(|status| {
            Some((
                status_field(&status, "Name")?,
                status_field(&status, "Cpus_allowed_list")?,
            ))
        })
        .collect()
}

#[cfg(target_os = "linux")]
fn status_field(status: &str, name: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// `[login] hash_cpus`: the password hashes run on the listed CPUs only (one thread per CPU),
/// every other thread where the process was started, and logins work as before.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_threads_run_only_on_the_configured_cpus() {
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let config = site_config(&upstream, &responder).section("[login]\nhash_cpus = [0]\n");
    let threads = threads_after_a_login(config).await;
    let hashing: Vec<&str> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("sg-argon2"))
        .map(|(_, cpus)| cpus.as_str())
        .collect();
    assert_eq!(hashing, ["0"], "{threads:?}");
    assert_others_keep_the_process_cpus(&threads, |name| name.starts_with("sg-argon2"));
}

/// Pinned to one CPU while others are free to it (`taskset -c`), the binary warns at start
/// that logins' password hashes will share the worker's CPU and names the keys that move
/// them, with a free CPU filled in; with `[login] hash_cpus` set it says nothing of it. On a
/// machine that gives this test one CPU there is nothing to advise, and nothing is said.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_pinned_beside_free_cpus_names_the_placement_keys() {
    let own = status_field(
        &std::fs::read_to_string("/proc/self/status").expect("own status"),
        "Cpus_allowed_list",
    )
    .expect("Cpus_allowed_list");
    let allowed: Vec<usize> = own
        .split(',')
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b): (usize, usize) = (a.parse().expect("a CPU"), b.parse().expect("a CPU"));
            a..=b
        })
        .collect();
    let pinned = allowed[0].to_string();
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let advice = "hash_cpus = [";

    let gw = BinaryGateway::start_pinned(site_config(&upstream, &responder), &pinned).await;
    let log = gw.stderr_text();
    match allowed.get(1) {
        Some(free) => {
            let named = format!("[login] hash_cpus = [{free}] and [server] background_cpus = [{free}]");
            assert!(log.contains(&named), "no advice naming CPU {free}:\n{log}");
        }
        None => assert!(!log.contains(advice), "{log}"),
    }
    drop(gw);

    let keyed = site_config(&upstream, &responder).section(&format!("[login]\nhash_cpus = [{pinned}]\n"));
    let gw = BinaryGateway::start_pinned(keyed, &pinned).await;
    let log = gw.stderr_text();
    assert!(!log.contains(advice), "advice although hash_cpus is set:\n{log}");
}

/// Starts the binary with `config`, logs alice in (a hash, a handshake and commits) and
/// returns `Cpus_allowed_list` of each of its threads, by name.
#[cfg(target_os = "linux")]
async fn threads_after_a_login(config: crate::kit::GatewayConfig) -> Vec<(String, String)> {
    let gw = BinaryGateway::start(config).await;
    let mut browser = Browser::new(&gw, gw.client_builder().build());
    browser.login("alice").await;
    assert_eq!(
        browser.upstream_user("/app/after-login").await.as_deref(),
        Some("alice")
    );
    cpus_allowed(&gw)
}

/// Every thread that `placed` does not name may run where this test process may.
#[cfg(target_os = "linux")]
fn assert_others_keep_the_process_cpus(threads: &[(String, String)], placed: impl Fn(&str) -> bool) {
    let own = status_field(
        &std::fs::read_to_string("/proc/self/status").expect("own status"),
        "Cpus_allowed_list",
    );
    for (name, cpus) in threads.iter().filter(|(name, _)| !placed(name)) {
        assert_eq!(
            Some(cpus),
            own.as_ref(),
            "{name} should keep the process's CPUs: {threads:?}"
        );
    }
}

/// `[server] background_cpus`: the TLS handshake threads (one per worker), the embedded
/// store's commit thread and the blocking pools (its reads) run on the listed CPUs only, the workers and the hashes where the
/// process was started; logins (handshakes, commits) work as before.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_threads_run_only_on_the_configured_cpus() {
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let config = site_config(&upstream, &responder)
        .server("background_cpus", "[0]")
        .server_str("tls_handshakes", "background")
        .store_section(Some("[store]\nkind = \"embedded\"\npath = \"sessions.redb\"\n"));
    let threads = threads_after_a_login(config).await;
    let is_background = |name: &str| name.starts_with("sg-tls-") || name == "sg-store-commit" || name == "sg-blocking";
    let background: Vec<(&str, &str)> = threads
        .iter()
        .filter(|(name, _)| is_background(name))
        .map(|(name, cpus)| (name.as_str(), cpus.as_str()))
        .collect();
    // Two workers, so two handshake threads; one commit thread; and the blocking pool's
    // threads that read the login's session from the store (one or more, for a while).
    let mut names: Vec<&str> = background.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names,
        ["sg-blocking", "sg-store-commit", "sg-tls-0", "sg-tls-1"],
        "{threads:?}"
    );
    assert!(background.iter().all(|(_, cpus)| *cpus == "0"), "{threads:?}");
    assert_others_keep_the_process_cpus(&threads, is_background);
}
