//! Cookies the gateway did not issue, or more than one of ours: never a 500, never adopted,
//! never forwarded (SECURITY.md rules 1 and 2). Each is answered with a fresh anonymous
//! session, as a stale cookie would be.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use reqwest::{header::HeaderValue, Method, StatusCode};

use super::support::{session_id, user, Browser, Site, COOKIE};
use crate::kit::HttpVersion;

/// A token-shaped value nobody issued.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("OS randomness");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `token` with one character changed to another base64url character.
fn flip_one(token: &str, at: usize) -> String {
    token
        .char_indices()
        .map(|(i, c)| match (i == at, c) {
            (true, 'A') => 'B',
            (true, _) => 'A',
            (false, c) => c,
        })
        .collect()
}

/// A request to the gateway carrying these `Cookie` header values, exactly.
fn with_cookies(browser: &Browser, method: Method, path: &str, cookies: &[HeaderValue]) -> reqwest::RequestBuilder {
    cookies
        .iter()
        .fold(browser.request_without_cookie(method, path), |request, value| {
            request.header("cookie", value.clone())
        })
}

struct Valid {
    token: String,
    id: String,
}

/// Runs one malformed case on an optional and a required route.
async fn assert_not_adopted(browser: &mut Browser, case: &str, cookies: &[HeaderValue], valid: &[&Valid]) {
    let reply = browser.send(with_cookies(browser, Method::GET, "/page", cookies)).await;
    assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.text());
    let fresh = reply.new_token();
    for value in cookies {
        let sent = String::from_utf8_lossy(value.as_bytes());
        assert!(!sent.contains(&fresh), "{case}: the sent value was adopted");
    }
    let echo = reply.echo();
    assert_eq!(user(&echo), None, "{case}: the upstream saw a user");
    let id = session_id(&echo).expect("a new session id");
    let body = echo.0.to_string();
    for v in valid {
        assert_ne!(id, v.id, "{case}: an existing session was adopted");
        assert!(!body.contains(&v.token), "{case}: a token reached the upstream");
    }

    let reply = browser
        .send(with_cookies(browser, Method::GET, "/app/x", cookies))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case} on a required route");
    let reply = browser
        .send(with_cookies(browser, Method::GET, "/.sessiongate/session", cookies))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case} on the session endpoint");
}

fn header(value: impl Into<Vec<u8>>) -> HeaderValue {
    HeaderValue::from_bytes(&value.into()).expect("a header value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_forged_cookies_get_a_fresh_session() {
    let site = Site::start().await;
    let admin = site.admin();
    let (alice_id, alice) = admin.mint_for("alice").await;
    let (bob_id, bob) = admin.mint_for("bob").await;
    let alice = Valid {
        token: alice,
        id: alice_id,
    };
    let bob = Valid { token: bob, id: bob_id };
    let t = &alice.token;
    let mut trailing_bits = t[..42].to_owned();
    trailing_bits.push('B');

    let single: Vec<(&str, String)> = vec![
        ("bit-flipped first character", flip_one(t, 0)),
        ("bit-flipped middle character", flip_one(t, 21)),
        ("never issued", random_token()),
        ("empty", String::new()),
        ("4 KB", "A".repeat(4096)),
        ("one character short", t[..42].to_owned()),
        ("one character long", format!("{t}A")),
        ("padded", format!("{t}=")),
        ("non-canonical trailing bits", trailing_bits),
        ("standard base64 alphabet", format!("+/{}", &t[2..])),
        ("spaces inside", format!("{} {}", &t[..20], &t[21..])),
    ];
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let mut browser = site.browser_on(version);
        for (case, value) in &single {
            let case = format!("{version:?} {case}");
            let cookie = header(format!("a=1; {COOKIE}={value}"));
            assert_not_adopted(&mut browser, &case, &[cookie], &[&alice, &bob]).await;
        }

        let conflicts: Vec<(&str, Vec<HeaderValue>)> = vec![
            (
                "two valid values in one header",
                vec![header(format!("a=1; {COOKIE}={}; {COOKIE}={}", alice.token, bob.token))],
            ),
            (
                "a valid value and a forged one",
                vec![header(format!("{COOKIE}={}; {COOKIE}={}", alice.token, random_token()))],
            ),
            (
                "a forged value before a valid one",
                vec![header(format!("{COOKIE}=x; {COOKIE}={}", alice.token))],
            ),
            (
                "two Cookie headers with different values",
                vec![
                    header(format!("{COOKIE}={}", alice.token)),
                    header(format!("{COOKIE}={}", bob.token)),
                ],
            ),
            (
                "a valid value next to bytes that are not text",
                vec![header(
                    [format!("{COOKIE}={}; x=", alice.token).as_bytes(), b"\xff\xfe"].concat(),
                )],
            ),
        ];
        for (case, cookies) in &conflicts {
            let case = format!("{version:?} {case}");
            assert_not_adopted(&mut browser, &case, cookies, &[&alice, &bob]).await;
        }
    }

    // None of that hurt the real sessions.
    for valid in [&alice, &bob] {
        let mut owner = site.browser().with_token(&valid.token);
        let echo = owner.get("/page").await.echo();
        assert_eq!(session_id(&echo), Some(valid.id.clone()));
        assert!(user(&echo).is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_cookie_in_a_raw_request_is_not_a_server_error() {
    let site = Site::start().await;
    let mut conn = site.gw.raw().await;
    for cookie in [
        COOKIE.to_owned(),
        format!("{COOKIE}=="),
        format!("{COOKIE}=;;;{COOKIE}"),
        format!("=; {COOKIE}=\"{}\"", "A".repeat(43)),
        format!("{COOKIE}={}", "%41".repeat(43)),
    ] {
        let request = format!(
            "GET /app/x HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
            site.gw.host_header()
        );
        let response = crate::kit::within(crate::kit::secs(5), "response", conn.roundtrip(request))
            .await
            .expect("response");
        assert_eq!(response.status, 401, "Cookie: {cookie}: {}", response.text());
    }
}
