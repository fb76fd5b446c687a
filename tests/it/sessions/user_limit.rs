//! `[session] max_per_user`: how many logged-in sessions one user holds at once. By default a
//! login past the limit ends that user's session unused the longest; with
//! `on_user_limit = "refuse"` it is answered 429 and nothing changes. Other users are never
//! touched, a re-login of a session already counted is not a new one, and admin mints obey the
//! same bound (a batch never ends other sessions: it fits or it is refused).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::support::{fetch, Browser, Site, USER_AGENT};

/// The standard site with `max_per_user` and, when given, `on_user_limit`.
async fn site(max: usize, on_limit: Option<&str>) -> Site {
    site_on(max, on_limit, None).await
}

/// [`site`] on the given `[store]` section (`None`: the kit's memory store).
async fn site_on(max: usize, on_limit: Option<&str>, store: Option<&'static str>) -> Site {
    let mut section = format!("[session]\nmax_per_user = {max}\n");
    if let Some(mode) = on_limit {
        section.push_str(&format!("on_user_limit = \"{mode}\"\n"));
    }
    Site::with(|c| {
        let c = c.section(&section);
        match store {
            Some(store) => c.store_section(Some(store)),
            None => c,
        }
    })
    .await
}

/// The embedded store ends the least recent session in the login's own rotation commit.
const EMBEDDED: &str = "[store]\nkind = \"embedded\"\npath = \"sessions.redb\"\n";

async fn logged_in(site: &Site, user: &str) -> Browser {
    let mut browser = site.browser();
    browser.login(user).await;
    browser
}

async fn status(browser: &mut Browser) -> StatusCode {
    browser.get("/app/x").await.status
}

/// `last_seen` has millisecond resolution: a request made in the same millisecond as another
/// session's login would tie with it. Waiting out the clock is the event here.
async fn next_millisecond() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_past_the_limit_ends_the_users_least_recently_used_session() {
    ends_the_least_recently_used_session(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_past_the_limit_ends_the_least_recent_session_on_the_embedded_store_too() {
    ends_the_least_recently_used_session(Some(EMBEDDED)).await;
}

async fn ends_the_least_recently_used_session(store: Option<&'static str>) {
    let site = site_on(2, None, store).await;
    let mut first = logged_in(&site, "alice").await;
    let mut second = logged_in(&site, "alice").await;
    let mut bob = logged_in(&site, "bob").await;
    next_millisecond().await;
    // `first` is used after `second` logged in: `second` is now the least recent.
    assert_eq!(status(&mut first).await, StatusCode::OK);
    next_millisecond().await;

    let mut third = logged_in(&site, "alice").await;

    assert_eq!(status(&mut third).await, StatusCode::OK);
    assert_eq!(
        status(&mut first).await,
        StatusCode::OK,
        "the recently used session was ended"
    );
    assert_eq!(
        status(&mut second).await,
        StatusCode::UNAUTHORIZED,
        "the least recently used session is still alive"
    );
    assert_eq!(
        status(&mut bob).await,
        StatusCode::OK,
        "another user's session was touched"
    );

    let admin = site.admin();
    let listed = fetch(admin.authed(Method::GET, "/sessions?user=alice")).await.json();
    assert_eq!(listed["count"], 2, "{listed}");
    let metrics = admin.metrics().await;
    let ended = [("reason", "user_limit")];
    assert_eq!(metrics.value("sessiongate_sessions_revoked_total", &ended), 1.0);
    let action = [("action", "ended_least_recent")];
    assert_eq!(metrics.value("sessiongate_user_session_limit_total", &action), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_refuse_a_login_past_the_limit_is_429_until_a_session_ends() {
    let site = site(1, Some("refuse")).await;
    let mut holder = logged_in(&site, "alice").await;

    let mut newcomer = site.browser();
    let refused = newcomer.submit_login("alice", super::support::PASSWORD, "/").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text());
    assert!(refused.text().contains("too many places"), "{}", refused.text());
    assert!(
        refused.session_cookie().is_none(),
        "a refused login must not hand out a session"
    );
    assert_eq!(status(&mut newcomer).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&mut holder).await, StatusCode::OK, "the session held was ended");

    // Signing in again from the session already counted replaces it: not a new one.
    holder.login("alice").await;
    assert_eq!(status(&mut holder).await, StatusCode::OK);
    // Another user is not limited by alice's sessions.
    logged_in(&site, "bob").await;

    let metrics = site.admin().metrics().await;
    assert_eq!(
        metrics.value("sessiongate_logins_total", &[("result", "session_limit")]),
        1.0
    );
    let action = [("action", "refused")];
    assert_eq!(metrics.value("sessiongate_user_session_limit_total", &action), 1.0);

    // Once the holder signs out, the newcomer gets in.
    assert_eq!(holder.logout().await.status, StatusCode::SEE_OTHER);
    newcomer.login("alice").await;
    assert_eq!(status(&mut newcomer).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mints_obey_the_limit_and_a_batch_never_ends_other_sessions() {
    let site = site(3, None).await;
    let admin = site.admin();
    let batch = |count: u64| json!({"user": "alice", "client_ip": "127.0.0.1", "headers": {"user-agent": USER_AGENT}, "count": count});

    // Larger than the limit: refused whole, with the figures a script needs.
    let refused = fetch(admin.authed(Method::POST, "/sessions").json(&batch(4))).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text());
    let answer = refused.json();
    assert_eq!(answer["max_per_user"], 3, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| e.contains("max_per_user")),
        "{answer}"
    );

    let minted = admin.mint_batch("alice", 2).await;
    // Two held plus two more would pass 3: refused, and the two held keep working.
    let refused = fetch(admin.authed(Method::POST, "/sessions").json(&batch(2))).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text());
    for (_, token) in &minted {
        assert_eq!(status(&mut site.browser().with_token(token)).await, StatusCode::OK);
    }

    // Single mints follow on_user_limit: the third fits, the fourth ends the least recent.
    let (_, third) = admin.mint_for("alice").await;
    next_millisecond().await;
    for token in [&minted[1].1, &third] {
        assert_eq!(status(&mut site.browser().with_token(token)).await, StatusCode::OK);
    }
    next_millisecond().await;
    let (_, fourth) = admin.mint_for("alice").await;
    assert_eq!(status(&mut site.browser().with_token(&fourth)).await, StatusCode::OK);
    assert_eq!(
        status(&mut site.browser().with_token(&minted[0].1)).await,
        StatusCode::UNAUTHORIZED,
        "the least recently used minted session is still alive"
    );
    let listed = fetch(admin.authed(Method::GET, "/sessions?user=alice")).await.json();
    assert_eq!(listed["count"], 3, "{listed}");
}
