//! The session admin API (bearer token): mint a session for automation, list a user's
//! sessions without their tokens, revoke one or all; and the session metrics.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::support::{
    fetch, is_session_id_shaped, is_token_shaped, session_id, user, Site, ADMIN_TOKEN, COOKIE, USER_AGENT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_api_needs_the_bearer_token() {
    let site = Site::start().await;
    let admin = site.admin();
    let created = admin.metrics().await.value("sessiongate_sessions_created_total", &[]);
    let wrong = format!("{ADMIN_TOKEN}x");
    let short = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
    let mint_body = json!({"user": "alice", "client_ip": "127.0.0.1", "headers": {"user-agent": "X"}});

    for token in [None, Some(wrong.as_str()), Some(short), Some("")] {
        for (method, path) in [
            (Method::GET, "/sessions?user=alice"),
            (Method::GET, "/sessions"),
            (Method::POST, "/sessions"),
            (Method::DELETE, "/sessions?user=alice"),
            (Method::DELETE, "/sessions/00000000000000000000000000000000"),
        ] {
            let mut request = admin.request(method.clone(), path, token);
            if method == Method::POST {
                request = request.json(&mint_body);
            }
            let reply = fetch(request).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path} with {token:?}");
            assert!(!reply.text().contains("__Host-"), "{method} {path}: {}", reply.text());
        }
    }
    // The token in another scheme is not a bearer token.
    let basic = admin
        .request(Method::GET, "/sessions", None)
        .header("authorization", format!("Basic {ADMIN_TOKEN}"));
    assert_eq!(fetch(basic).await.status, StatusCode::UNAUTHORIZED);

    let after = admin.metrics().await.value("sessiongate_sessions_created_total", &[]);
    assert_eq!(after, created, "an unauthorised mint created a session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_sessions_work_list_without_tokens_and_can_be_revoked() {
    let site = Site::start().await;
    let admin = site.admin();

    let (id1, cookie1) = admin
        .mint(json!({"user": "alice", "client_ip": "127.0.0.1", "headers": {"user-agent": "X"}}))
        .await;
    assert!(is_session_id_shaped(&id1), "{id1}");
    let token1 = cookie1
        .strip_prefix(&format!("{COOKIE}="))
        .unwrap_or_else(|| panic!("cookie {cookie1}"))
        .to_owned();
    assert!(is_token_shaped(&token1), "{cookie1}");

    // The minted cookie works from that client, as alice with her configured groups.
    let mut automation = site.browser().with_user_agent("X").with_token(&token1);
    let echo = automation.get("/app/x").await.echo();
    assert_eq!(user(&echo).as_deref(), Some("alice"));
    assert_eq!(echo.header("x-forwarded-groups"), ["admins"]);
    assert_eq!(session_id(&echo).as_deref(), Some(id1.as_str()));

    // More sessions: another minted one and a real login for alice, one for bob.
    let (id2, token2) = admin.mint_for("alice").await;
    let mut browser = site.browser();
    browser.login("alice").await;
    let token3 = browser.expect_token();
    let (bob_id, bob_token) = admin.mint_for("bob").await;

    let list = fetch(admin.authed(Method::GET, "/sessions?user=alice")).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    let text = list.text();
    for token in [&token1, &token2, &token3, &bob_token] {
        assert!(!text.contains(token.as_str()), "a token is in the listing: {text}");
    }
    let json = list.json();
    assert_eq!(json["count"], 3, "{json}");
    let sessions = json["sessions"].as_array().expect("sessions array");
    assert_eq!(sessions.len(), 3, "{json}");
    for session in sessions {
        assert_eq!(session["user"], "alice", "{session}");
        for key in ["id", "ip_prefix", "created_at", "last_seen", "expires_at"] {
            assert!(session[key].is_string(), "{key} missing in {session}");
        }
        assert!(
            session["ip_prefix"].as_str().is_some_and(|p| p.contains("127.0.0.1")),
            "{session}"
        );
        for key in ["token", "cookie", "hash", "csrf"] {
            assert!(session.get(key).is_none(), "{key} in {session}");
        }
    }
    let ids: Vec<&str> = sessions.iter().filter_map(|s| s["id"].as_str()).collect();
    assert!(ids.contains(&id1.as_str()) && ids.contains(&id2.as_str()), "{ids:?}");
    // Minted sessions name no login; the real one says password.
    let mut logins: Vec<String> = sessions.iter().map(|s| s["login"].to_string()).collect();
    logins.sort();
    assert_eq!(logins, ["\"password\"", "null", "null"], "{json}");

    // Revoke one by id: that cookie is refused, the others still work.
    let reply = fetch(admin.authed(Method::DELETE, &format!("/sessions/{id1}"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let mut automation = site.browser().with_user_agent("X").with_token(&token1);
    assert_eq!(automation.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    let reply = fetch(admin.authed(Method::DELETE, &format!("/sessions/{id1}"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "revoked twice: {}", reply.text());
    let mut second = site.browser().with_token(&token2);
    assert_eq!(second.upstream_user("/app/x").await.as_deref(), Some("alice"));

    // Revoke every session of alice: the minted one and the logged-in browser.
    let reply = fetch(admin.authed(Method::DELETE, "/sessions?user=alice")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["revoked"], 2, "{}", reply.text());
    for token in [&token2, &token3] {
        let mut replay = site.browser().with_token(token);
        assert_eq!(replay.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    }
    let list = fetch(admin.authed(Method::GET, "/sessions?user=alice")).await.json();
    assert_eq!(list["count"], 0, "{list}");

    // bob was not touched.
    let mut bob = site.browser().with_token(&bob_token);
    let echo = bob.get("/app/x").await.echo();
    assert_eq!(user(&echo).as_deref(), Some("bob"));
    assert_eq!(session_id(&echo).as_deref(), Some(bob_id.as_str()));
    let metrics = admin.metrics().await;
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "admin")]),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_sessions_are_bound_to_the_given_client() {
    let site = Site::start().await;
    let (_, token) = site.admin().mint_for("alice").await;
    let mut wrong_agent = site.browser().with_user_agent("X").with_token(&token);
    assert_eq!(wrong_agent.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    let (_, cookie) = site
        .admin()
        .mint(json!({"user": "alice", "client_ip": "10.1.2.3", "headers": {"user-agent": USER_AGENT}}))
        .await;
    let token = cookie.trim_start_matches(&format!("{COOKIE}=")).to_owned();
    let mut wrong_address = site.browser().with_token(&token);
    assert_eq!(wrong_address.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_session_lifecycle() {
    let site = Site::start().await;
    let admin = site.admin();
    let before = admin.metrics().await;
    for name in [
        "sessiongate_sessions_created_total",
        "sessiongate_sessions_rotated_total",
        "sessiongate_session_cache_hits_total",
    ] {
        assert!(before.has(name), "{name} missing:\n{}", before.0);
    }

    let mut browser = site.browser();
    browser.get("/page").await;
    let failed = browser.submit_login("alice", "wrong", "/").await;
    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    browser.login("alice").await;
    for _ in 0..3 {
        browser.get("/app/x").await.echo();
    }
    let reply = browser.logout().await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);

    let after = admin.metrics().await;
    let delta = |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);
    assert_eq!(delta("sessiongate_sessions_created_total", &[]), 1.0, "{}", after.0);
    assert_eq!(delta("sessiongate_sessions_rotated_total", &[]), 1.0, "{}", after.0);
    assert_eq!(
        delta("sessiongate_sessions_revoked_total", &[("reason", "logout")]),
        1.0,
        "{}",
        after.0
    );
    assert_eq!(
        delta("sessiongate_logins_total", &[("result", "failed")]),
        1.0,
        "{}",
        after.0
    );
    assert!(delta("sessiongate_session_cache_hits_total", &[]) >= 3.0, "{}", after.0);
    assert!(!after.0.contains("__Host-"), "a cookie in the metrics");
}

/// `GET /sessions` answers the newest `limit` sessions (1000 unless `?limit=` says otherwise,
/// at most 10,000), newest first, with how many match (`total`) and whether more did
/// (`truncated`): a listing never grows with the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_is_bounded_newest_first_and_says_how_many_match() {
    let site = Site::with(|config| config.section("[session]\nmax_per_user = 2000\n")).await;
    assert_bounded_listing(&site).await;
}

/// The same on the embedded store, which keeps only the newest while it scans its table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_lists_the_same_bounded_way() {
    let site = Site::with(|config| {
        config
            .section("[session]\nmax_per_user = 2000\n")
            .store_section(Some("[store]\nkind = \"embedded\"\npath = \"sessions.redb\"\n"))
    })
    .await;
    assert_bounded_listing(&site).await;
}

async fn assert_bounded_listing(site: &Site) {
    let admin = site.admin();
    admin.mint_batch("alice", 1001).await;
    admin.mint_for("bob").await;
    let list = |query: &str| fetch(admin.authed(Method::GET, &format!("/sessions{query}")));

    let default = list("").await.json();
    assert_eq!(default["count"], 1000, "{}", default["total"]);
    assert_eq!(default["sessions"].as_array().map(Vec::len), Some(1000));
    assert_eq!(default["total"], 1002);
    assert_eq!(default["truncated"], true);

    let all = list("?limit=2000").await.json();
    assert_eq!(
        (&all["count"], &all["total"], &all["truncated"]),
        (&json!(1002), &json!(1002), &json!(false))
    );
    let created: Vec<&str> = all["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["created_at"].as_str().expect("created_at"))
        .collect();
    // RFC 3339 in UTC with a fixed width: text order is time order.
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "not newest first");
    let newest = list("?limit=1").await.json();
    assert_eq!(newest["sessions"][0]["created_at"].as_str(), created.first().copied());
    assert_eq!(newest["truncated"], true);

    let alice = list("?user=alice&limit=10").await.json();
    assert_eq!((&alice["count"], &alice["total"]), (&json!(10), &json!(1001)));
    let bob = list("?user=bob").await.json();
    assert_eq!(
        (&bob["count"], &bob["total"], &bob["truncated"]),
        (&json!(1), &json!(1), &json!(false))
    );

    for bad in ["?limit=0", "?limit=10001", "?limit=many", "?limit="] {
        let reply = list(bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {}", reply.text());
        assert!(reply.text().contains("limit must be between 1 and 10000"), "{bad}");
    }
}
