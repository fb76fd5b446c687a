//! `[[users]]` reloaded from the config file without a restart (`POST /reload` on the admin
//! listener, SIGHUP for the process): added users can log in, removed ones cannot, and the
//! sessions of users removed or changed (password, email, groups) end at once. A file that
//! no longer validates changes nothing.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::support::{
    fetch, password_hash, site_config, users_section, Admin, Responder, Site, COOKIE, PASSWORD, USER_AGENT,
};
use crate::kit::{binary::log_field_text, quoted, BinaryGateway, RawConn, TestUpstream};

/// The standard site's config text with its `[[users]]` replaced by `users`.
fn with_users(config_text: &str, users: &str) -> String {
    let old = users_section();
    assert!(
        config_text.contains(&old),
        "the users section is not where expected:\n{config_text}"
    );
    config_text.replace(&old, users)
}

fn user(name: &str, hash: &str, extra: &str) -> String {
    format!(
        "[[users]]\nname = \"{name}\"\npassword_hash = {}\n{extra}\n",
        quoted(hash)
    )
}

async fn reload(admin: &Admin) -> (StatusCode, serde_json::Value) {
    let reply = fetch(admin.authed(Method::POST, "/reload")).await;
    (reply.status, reply.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_puts_users_in_force_and_ends_the_sessions_of_removed_and_changed_ones() {
    let site = Site::start().await;
    let admin = site.admin();
    let mut alice = site.browser();
    alice.login("alice").await;
    let mut bob = site.browser();
    bob.login("bob").await;
    let mut carol = site.browser();
    assert_eq!(
        carol.submit_login("carol", PASSWORD, "/").await.status,
        StatusCode::UNAUTHORIZED
    );
    // A session minted for an identity that is not a configured user is the admin's business.
    let (_, dave) = admin.mint_for("dave").await;

    let new_password = "a new password for alice";
    let new_hash = sessiongate::auth::hash_password(new_password).expect("hash");
    let users = format!(
        "{}{}",
        user(
            "alice",
            &new_hash,
            "email = \"alice@example.test\"\ngroups = [\"admins\"]"
        ),
        user("carol", password_hash(), "groups = [\"ops\"]"),
    );
    let text = std::fs::read_to_string(site.gw.config_path()).expect("config");
    std::fs::write(site.gw.config_path(), with_users(&text, &users)).expect("rewrite config");
    let (status, report) = reload(&admin).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["users_added"], serde_json::json!(["carol"]), "{report}");
    assert_eq!(report["users_removed"], serde_json::json!(["bob"]), "{report}");
    assert_eq!(report["users_changed"], serde_json::json!(["alice"]), "{report}");
    assert_eq!(report["sessions_ended"], 2, "{report}");
    assert_eq!(report["restart_needed"], serde_json::json!([]), "{report}");

    assert_eq!(
        alice.get("/app/x").await.status,
        StatusCode::UNAUTHORIZED,
        "changed user kept a session"
    );
    assert_eq!(
        bob.get("/app/x").await.status,
        StatusCode::UNAUTHORIZED,
        "removed user kept a session"
    );
    let mut minted = site.browser().with_token(&dave);
    assert_eq!(minted.get("/app/x").await.status, StatusCode::OK);

    let mut bob = site.browser();
    assert_eq!(
        bob.submit_login("bob", PASSWORD, "/").await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut alice = site.browser();
    assert_eq!(
        alice.submit_login("alice", PASSWORD, "/").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        alice.submit_login("alice", new_password, "/").await.status,
        StatusCode::SEE_OTHER
    );
    carol.login("carol").await;
    assert_eq!(carol.upstream_user("/page").await.as_deref(), Some("carol"));

    let metrics = admin.metrics().await;
    assert_eq!(
        metrics.value("sessiongate_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "user_removed")]),
        1.0
    );
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "user_changed")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_no_longer_validates_changes_nothing() {
    let site = Site::start().await;
    let admin = site.admin();
    let mut alice = site.browser();
    alice.login("alice").await;

    let text = std::fs::read_to_string(site.gw.config_path()).expect("config");
    let broken = with_users(&text, "[[users]]\nname = \"carol\"\npasword_hash = \"x\"\n");
    std::fs::write(site.gw.config_path(), &broken).expect("rewrite config");
    let (status, report) = reload(&admin).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    let line = broken
        .lines()
        .position(|l| l.starts_with("pasword_hash"))
        .expect("typo line")
        + 1;
    assert!(error.contains("pasword_hash"), "{error}");
    assert!(error.contains(&format!("line {line}")), "{error} (typo on line {line})");

    assert_eq!(alice.upstream_user("/page").await.as_deref(), Some("alice"));
    let mut bob = site.browser();
    bob.login("bob").await;
    assert_eq!(
        admin
            .metrics()
            .await
            .value("sessiongate_config_reloads_total", &[("result", "failed")]),
        1.0
    );

    // Valid again, with a change outside [[users]]: applied at the next restart, and said so.
    assert!(!text.contains("[login]"), "{text}");
    std::fs::write(site.gw.config_path(), format!("{text}\n[login]\nmax_failures = 7\n")).expect("rewrite config");
    let (status, report) = reload(&admin).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["restart_needed"], serde_json::json!(["login"]), "{report}");
    assert_eq!(report["sessions_ended"], 0, "{report}");
    assert_eq!(alice.upstream_user("/page").await.as_deref(), Some("alice"));

    // The cross-origin and upstream-cookie sections are reported by name too.
    let more = "\n[cross_origin]\ntrusted_origins = [\"https://www.example\"]\n\
                \n[upstream_cookies]\nhttp_only = true\n";
    std::fs::write(
        site.gw.config_path(),
        format!("{text}\n[login]\nmax_failures = 7\n{more}"),
    )
    .expect("rewrite config");
    let (status, report) = reload(&admin).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report["restart_needed"],
        serde_json::json!(["login", "cross_origin", "upstream_cookies"]),
        "{report}"
    );

    // Only the admin token may reload.
    let reply = fetch(admin.request(Method::POST, "/reload", None)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_users_of_the_running_process() {
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let gw = BinaryGateway::start(site_config(&upstream, &responder)).await;
    let admin = Admin::new(&gw);
    let (_, bob) = admin.mint_for("bob").await;
    let mut conn: RawConn<_> = gw.raw().await;
    let get = |token: &str| {
        format!(
            "GET /app/x HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nCookie: {COOKIE}={token}\r\n\r\n",
            gw.host_header()
        )
    };
    assert_eq!(conn.roundtrip(get(&bob)).await.expect("response").status, 200);

    let text = std::fs::read_to_string(gw.config_path()).expect("config");
    let only_alice = user("alice", password_hash(), "groups = [\"admins\"]");
    std::fs::write(gw.config_path(), with_users(&text, &only_alice)).expect("rewrite config");
    gw.signal("HUP");
    let line = gw
        .wait_for_log(Duration::from_secs(10), |l| {
            log_field_text(l, "event").as_deref() == Some("config_reloaded")
        })
        .await;
    assert_eq!(log_field_text(&line, "users_removed").as_deref(), Some("1"), "{line}");
    assert_eq!(conn.roundtrip(get(&bob)).await.expect("response").status, 401);
}
