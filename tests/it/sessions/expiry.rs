//! Idle and absolute timeouts, enforced from the server's own timestamps (SECURITY.md rule 2).
//!
//! Waiting for time to pass is what these tests are about, so they sleep; the durations are
//! short and every wait is bounded. Requests are paced well inside the idle timeout so that
//! a slow machine cannot make an active session look idle.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::support::{session_id, user, Browser, Site};

/// A browser holding a freshly minted session of alice (minting skips the slow password check).
async fn minted_alice(site: &Site) -> (Browser, String) {
    let (id, token) = site.admin().mint_for("alice").await;
    (site.browser().with_token(&token), id)
}

/// Asserts the session is alive and still the same one.
async fn assert_alive(browser: &mut Browser, id: &str, when: &str) {
    let reply = browser.get("/page").await;
    assert!(reply.session_cookies().is_empty(), "{when}: a new cookie was set");
    let echo = reply.echo();
    assert_eq!(user(&echo).as_deref(), Some("alice"), "{when}");
    assert_eq!(session_id(&echo).as_deref(), Some(id), "{when}");
}

/// Asserts the token is refused: a new anonymous session on an optional route, 401 on a
/// required one.
async fn assert_refused(browser: &Browser, token: &str, id: &str, when: &str) {
    let mut replay = browser.with_token(token);
    let reply = replay.get("/page").await;
    assert_ne!(reply.new_token(), token, "{when}");
    let echo = reply.echo();
    assert_eq!(user(&echo), None, "{when}");
    assert_ne!(session_id(&echo).as_deref(), Some(id), "{when}");
    let mut replay = browser.with_token(token);
    assert_eq!(replay.get("/app/x").await.status, StatusCode::UNAUTHORIZED, "{when}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_refused_and_activity_keeps_it_alive() {
    let idle = Duration::from_millis(1000);
    let site = Site::with(|c| c.section("[session]\nidle_timeout = \"1s\"\nabsolute_timeout = \"1h\"\n")).await;
    let (mut browser, id) = minted_alice(&site).await;
    let token = browser.expect_token();

    // Active for longer than the idle timeout, one request every 200 ms.
    let start = Instant::now();
    while start.elapsed() < idle + Duration::from_millis(500) {
        assert_alive(&mut browser, &id, &format!("active at {:?}", start.elapsed())).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Then idle for longer than the timeout.
    tokio::time::sleep(idle + Duration::from_millis(300)).await;
    assert_refused(&browser, &token, &id, "after idling").await;
    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_sessions_expired_total", &[("reason", "idle")]),
        1.0
    );
    let list = super::support::fetch(site.admin().authed(reqwest::Method::GET, "/sessions?user=alice")).await;
    assert_eq!(list.json()["count"], 0, "{}", list.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_session_ends_at_the_absolute_timeout() {
    let site = Site::with(|c| c.section("[session]\nidle_timeout = \"800ms\"\nabsolute_timeout = \"2s\"\n")).await;
    let start = Instant::now();
    let (mut browser, id) = minted_alice(&site).await;
    let token = browser.expect_token();

    // Never idle (requests every 200 ms against 800 ms), alive past the idle timeout...
    while start.elapsed() < Duration::from_millis(1600) {
        assert_alive(&mut browser, &id, &format!("active at {:?}", start.elapsed())).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...and still active, but refused once the absolute lifetime is over.
    while start.elapsed() < Duration::from_millis(2100) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Keep it active right up to the limit; these may already be refused near 2 s.
        browser.clone().get("/page").await;
    }
    assert_refused(&browser, &token, &id, "after the absolute timeout").await;
    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_sessions_expired_total", &[("reason", "absolute")]),
        1.0,
        "{}",
        metrics.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_endpoint_reports_the_configured_lifetimes() {
    let site = Site::with(|c| c.section("[session]\nidle_timeout = \"10m\"\nabsolute_timeout = \"1h\"\n")).await;
    let (mut browser, _) = minted_alice(&site).await;
    let json = browser.session_info().await.json();
    let parse = |key: &str| {
        let text = json[key].as_str().unwrap_or_else(|| panic!("{key}: {json}"));
        humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{key} {text:?}: {e}"))
    };
    let now = std::time::SystemTime::now();
    let idle = parse("idle_expires_at").duration_since(now).unwrap_or_default();
    let absolute = parse("expires_at").duration_since(now).unwrap_or_default();
    assert!(
        idle > Duration::from_secs(9 * 60) && idle <= Duration::from_secs(10 * 60),
        "{json}"
    );
    assert!(
        absolute > Duration::from_secs(59 * 60) && absolute <= Duration::from_secs(3600),
        "{json}"
    );
}
