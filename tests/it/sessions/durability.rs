//! The embedded store is the store of record: logins survive a restart, whether the process
//! stopped cleanly (SIGTERM) or was killed (SIGKILL), and so do logouts, so a copied cookie
//! stays dead (SECURITY.md: "server-side state, durable delete").

use reqwest::StatusCode;
use tempfile::TempDir;

use super::support::{
    respond_path, site_config, site_config_with_users, user, users_section, Admin, Browser, Responder,
};
use crate::kit::{quoted, secs, BinaryGateway, Echo, GatewayConfig, TestUpstream};

/// The standard site on the embedded store in `state` (outside the per-start config dir, so
/// that every start of the binary opens the same file).
fn durable_config(upstream: &TestUpstream, responder: &Responder, state: &TempDir) -> GatewayConfig {
    durable_config_with(upstream, responder, state, "")
}

/// The standard site on the embedded store in `state`, with `users` as `[[users]]`.
fn durable_config_users(upstream: &TestUpstream, responder: &Responder, state: &TempDir, users: &str) -> GatewayConfig {
    let path = state.path().join("sessions.redb");
    let store = format!(
        "[store]\nkind = \"embedded\"\npath = {}\n",
        quoted(&path.display().to_string())
    );
    site_config_with_users(upstream, responder, users)
        .store_section(Some(&store))
        .server_str("shutdown_grace", "2s")
}

/// Like [`durable_config`] with further `[store]` keys.
fn durable_config_with(
    upstream: &TestUpstream,
    responder: &Responder,
    state: &TempDir,
    store_keys: &str,
) -> GatewayConfig {
    let path = state.path().join("sessions.redb");
    let store = format!(
        "[store]\nkind = \"embedded\"\npath = {}\n{store_keys}",
        quoted(&path.display().to_string())
    );
    site_config(upstream, responder)
        .store_section(Some(&store))
        .server_str("shutdown_grace", "2s")
}

/// A browser for `gw` presenting `token`.
fn browser(gw: &BinaryGateway, token: &str) -> Browser {
    Browser::new(gw, gw.client()).with_token(token)
}

/// Stops the process with `signal` and waits for it to go.
async fn stop(mut gw: BinaryGateway, signal: &str) {
    gw.signal(signal);
    gw.wait_exit(secs(10)).await;
}

/// Asserts `token` is alice's live session; returns what the upstream saw.
async fn assert_alice(gw: &BinaryGateway, token: &str, when: &str) -> Echo {
    let mut browser = browser(gw, token);
    let reply = browser.get("/app/x").await;
    assert_eq!(reply.status, StatusCode::OK, "{when}: {}", reply.text());
    let echo = reply.echo();
    assert_eq!(user(&echo).as_deref(), Some("alice"), "{when}");
    assert_eq!(browser.token(), Some(token), "{when}: the cookie was replaced");
    echo
}

async fn assert_dead(gw: &BinaryGateway, token: &str, when: &str) {
    let mut browser = browser(gw, token);
    assert_eq!(browser.get("/app/x").await.status, StatusCode::UNAUTHORIZED, "{when}");
    let mut browser = Browser::new(gw, gw.client()).with_token(token);
    assert_eq!(user(&browser.get("/page").await.echo()), None, "{when}");
    assert_ne!(browser.token(), Some(token), "{when}: the dead cookie was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_and_logouts_survive_sigterm_and_sigkill() {
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let state = tempfile::tempdir().expect("state dir");
    let config = durable_config(&upstream, &responder, &state);

    let gw = BinaryGateway::start(config.clone()).await;
    let mut alice = Browser::new(&gw, gw.client());
    alice.get("/page").await;
    let anonymous = alice.expect_token();
    alice.login("alice").await;
    let token = alice.expect_token();
    alice
        .get(&respond_path("/respond/x", &[("X-Session-Data-Set", "cart=7")]))
        .await;
    let echo = assert_alice(&gw, &token, "before any restart").await;
    assert_eq!(echo.header("x-session-data"), ["cart=7"]);
    drop(alice);
    stop(gw, "TERM").await;

    let gw = BinaryGateway::start(config.clone()).await;
    let echo = assert_alice(&gw, &token, "after SIGTERM and a restart").await;
    assert_eq!(echo.header("x-session-data"), ["cart=7"], "session data after SIGTERM");
    assert_dead(&gw, &anonymous, "the pre-login token after SIGTERM").await;
    stop(gw, "KILL").await;

    let gw = BinaryGateway::start(config.clone()).await;
    let echo = assert_alice(&gw, &token, "after SIGKILL and a restart").await;
    assert_eq!(echo.header("x-session-data"), ["cart=7"], "session data after SIGKILL");
    let mut alice = browser(&gw, &token);
    let reply = alice.logout().await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    assert_dead(&gw, &token, "right after logout").await;
    stop(gw, "KILL").await;

    let gw = BinaryGateway::start(config).await;
    assert_dead(&gw, &token, "after logout, SIGKILL and a restart").await;
    assert_dead(&gw, &anonymous, "the pre-login token at the end").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_forgets_sessions_on_restart() {
    // The counterpart, so the test above cannot pass by accident (e.g. a cookie that carries
    // its own state): with `kind = "memory"` a restart logs everyone out.
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let config = site_config(&upstream, &responder).server_str("shutdown_grace", "2s");
    let gw = BinaryGateway::start(config.clone()).await;
    let (_, token) = super::support::Admin::new(&gw).mint_for("alice").await;
    assert_alice(&gw, &token, "minted").await;
    stop(gw, "TERM").await;

    let gw = BinaryGateway::start(config).await;
    assert_dead(&gw, &token, "after a restart with the memory store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_reaches_the_store_so_an_active_session_survives_a_restart() {
    // Idle 4 s. The session is used for longer than that, then the gateway restarts: only if
    // the written-behind `last_seen` reached the store is the session still alive.
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let state = tempfile::tempdir().expect("state dir");
    let config = durable_config_with(&upstream, &responder, &state, "touch_interval = \"100ms\"\n")
        .section("[session]\nidle_timeout = \"4s\"\n");

    let gw = BinaryGateway::start(config.clone()).await;
    let start = std::time::Instant::now();
    let (_, token) = super::support::Admin::new(&gw).mint_for("alice").await;
    while start.elapsed() < std::time::Duration::from_millis(4500) {
        assert_alice(&gw, &token, &format!("active at {:?}", start.elapsed())).await;
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    stop(gw, "TERM").await;

    let gw = BinaryGateway::start(config).await;
    assert_alice(&gw, &token, "active past the idle timeout, then restarted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_minted_sessions_survives_sigkill() {
    // The batch is written in one store transaction; the answer comes after its commit, so a
    // kill right after it loses none of the sessions.
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let state = tempfile::tempdir().expect("state dir");
    // A batch must fit under the per-user limit (default 10).
    let config = durable_config(&upstream, &responder, &state).section("[session]\nmax_per_user = 50\n");

    let gw = BinaryGateway::start(config.clone()).await;
    let minted = super::support::Admin::new(&gw).mint_batch("alice", 50).await;
    stop(gw, "KILL").await;

    let gw = BinaryGateway::start(config).await;
    for (i, (id, token)) in minted.iter().enumerate() {
        let echo = assert_alice(&gw, token, &format!("batch session {i} after SIGKILL")).await;
        assert_eq!(super::support::session_id(&echo).as_deref(), Some(id.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_anonymous_visitors_all_survive_sigkill() {
    // Sessions created at the same moment are committed together (one transaction, one
    // fsync): each visitor's cookie is sent only after the commit that holds its session, so
    // a kill right after the last answer loses none of them.
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let state = tempfile::tempdir().expect("state dir");
    let config = durable_config(&upstream, &responder, &state);

    let gw = BinaryGateway::start(config.clone()).await;
    let visits = (0..40).map(|_| async {
        let mut visitor = Browser::new(&gw, gw.client());
        let echo = visitor.get("/page").await.echo();
        let id = super::support::session_id(&echo).expect("an anonymous session id");
        (visitor.expect_token(), id)
    });
    let visitors = futures_util::future::join_all(visits).await;
    stop(gw, "KILL").await;

    let gw = BinaryGateway::start(config).await;
    for (i, (token, id)) in visitors.iter().enumerate() {
        let mut visitor = browser(&gw, token);
        let echo = visitor.get("/page").await.echo();
        assert_eq!(
            visitor.token(),
            Some(token.as_str()),
            "visitor {i}: the cookie was replaced"
        );
        assert_eq!(
            super::support::session_id(&echo).as_deref(),
            Some(id.as_str()),
            "visitor {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_limit_counts_the_sessions_kept_across_a_restart() {
    // The embedded store's user index is on disk with the sessions: after a restart a login
    // past `max_per_user` is still refused, and a sign-out still makes room.
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let state = tempfile::tempdir().expect("state dir");
    let config = durable_config(&upstream, &responder, &state)
        .section("[session]\nmax_per_user = 1\non_user_limit = \"refuse\"\n");

    let gw = BinaryGateway::start(config.clone()).await;
    let mut holder = Browser::new(&gw, gw.client());
    holder.login("alice").await;
    let token = holder.expect_token();
    stop(gw, "KILL").await;

    let gw = BinaryGateway::start(config).await;
    let mut newcomer = Browser::new(&gw, gw.client());
    let refused = newcomer.submit_login("alice", super::support::PASSWORD, "/").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text());
    assert_alice(&gw, &token, "after the refused login").await;

    let mut holder = browser(&gw, &token);
    assert_eq!(holder.logout().await.status, StatusCode::SEE_OTHER);
    newcomer.login("alice").await;
    assert_alice(&gw, &newcomer.expect_token(), "after the holder signed out").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_removed_or_changed_while_stopped_loses_their_login_sessions_at_start() {
    // A reload ends such sessions itself; a restart does not know the old `[[users]]`, so a
    // session made by a login remembers the entry it authenticated against.
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let state = tempfile::tempdir().expect("state dir");
    let both = users_section();
    let (alice_only, _) = both
        .split_once("\n[[users]]\nname = \"bob\"")
        .expect("bob's entry in the users section");

    let gw = BinaryGateway::start(durable_config_users(&upstream, &responder, &state, &both)).await;
    let mut alice = Browser::new(&gw, gw.client());
    alice.login("alice").await;
    let alice_token = alice.expect_token();
    let mut bob = Browser::new(&gw, gw.client());
    bob.login("bob").await;
    let bob_token = bob.expect_token();
    let (_, minted_bob) = Admin::new(&gw).mint_for("bob").await;
    drop((alice, bob));
    stop(gw, "TERM").await;

    let gw = BinaryGateway::start(durable_config_users(&upstream, &responder, &state, alice_only)).await;
    assert_alice(&gw, &alice_token, "an unchanged user after a restart").await;
    assert_dead(&gw, &bob_token, "a removed user's login session after a restart").await;
    let mut minted = browser(&gw, &minted_bob);
    assert_eq!(
        minted.get("/app/x").await.status,
        StatusCode::OK,
        "a minted session is the admin's"
    );
    let metrics = Admin::new(&gw).metrics().await;
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "user_removed")]),
        1.0,
        "{}",
        metrics.0
    );
    stop(gw, "TERM").await;

    let regrouped = alice_only.replace("groups = [\"admins\"]", "groups = [\"admins\", \"ops\"]");
    assert_ne!(regrouped, alice_only, "alice's groups line");
    let gw = BinaryGateway::start(durable_config_users(&upstream, &responder, &state, &regrouped)).await;
    assert_dead(&gw, &alice_token, "a changed user's login session after a restart").await;
    let metrics = Admin::new(&gw).metrics().await;
    assert_eq!(
        metrics.value("sessiongate_sessions_revoked_total", &[("reason", "user_changed")]),
        1.0,
        "{}",
        metrics.0
    );
}
