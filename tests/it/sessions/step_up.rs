//! Step-up: a route with `max_auth_age` admits a session only while its user's last sign-in
//! is that recent; an older one is sent to sign in again (browsers to the login page, which
//! passes the age on to the OpenID provider as `max_age`; other clients 401), and the new
//! sign-in rotates the token and keeps the session. Waiting for time to pass is what these
//! tests are about, so they sleep past a two-second age.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::support::{fetch, session_id, site_config, Browser, Responder, PASSWORD};
use crate::kit::idp::TestIdp;
use crate::kit::{quoted, GatewayConfig, RouteSpec, TestGateway, TestUpstream};

/// The age the `/sudo/` route allows.
const AGE: Duration = Duration::from_secs(2);

/// The standard site plus `/sudo/` (`auth = "required"`, `max_auth_age = "2s"`), and `extra`
/// sections.
async fn site(extra: &str) -> (TestUpstream, Responder, TestGateway) {
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let config: GatewayConfig = site_config(&upstream, &responder)
        .route(
            RouteSpec::new("/sudo/", upstream.url())
                .set("auth", quoted("required"))
                .set("max_auth_age", quoted("2s")),
        )
        .section(extra);
    let gw = TestGateway::start(config).await;
    (upstream, responder, gw)
}

async fn past_the_age() {
    tokio::time::sleep(AGE + Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_sign_in_must_be_made_again_and_the_session_carries_on() {
    let (_upstream, _responder, gw) = site("").await;
    let mut alice = Browser::new(&gw, gw.client());
    alice.login("alice").await;
    assert_eq!(alice.upstream_user("/sudo/keys").await.as_deref(), Some("alice"));
    let id = session_id(&alice.get("/app/x").await.echo()).expect("session id");
    let old_token = alice.expect_token();

    past_the_age().await;
    // Other routes go on; the step-up route wants a new sign-in.
    assert_eq!(alice.upstream_user("/app/x").await.as_deref(), Some("alice"));
    let api = alice.get("/sudo/keys").await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{}", api.text());
    assert_eq!(api.json()["error"], "reauthentication required");
    let page = alice.navigate("/sudo/keys?x=1").await;
    assert_eq!(page.status, StatusCode::FOUND);
    let login = page.header("location").expect("location").to_string();
    assert_eq!(login, "/.sessiongate/login?rd=%2Fsudo%2Fkeys%3Fx%3D1&max_age=2");
    let form = alice.navigate(&login).await;
    assert!(form.text().contains("Sign in again to continue."), "{}", form.text());

    // Signing in again rotates the token and keeps the session.
    let before = alice.get("/.sessiongate/session").await.json()["authenticated_at"].clone();
    let reply = alice.submit_login("alice", PASSWORD, "/sudo/keys?x=1").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    assert_ne!(alice.expect_token(), old_token);
    let echo = alice.get("/sudo/keys?x=1").await.echo();
    assert_eq!(echo.header("x-forwarded-user"), ["alice"]);
    assert_eq!(session_id(&echo).as_deref(), Some(id.as_str()));
    let after = alice.get("/.sessiongate/session").await.json()["authenticated_at"].clone();
    assert!(
        before.as_str().is_some() && after.as_str() > before.as_str(),
        "{before} then {after}"
    );
    let stale = fetch(alice.with_token(&old_token).request(Method::GET, "/app/x")).await;
    assert_ne!(stale.status, StatusCode::OK, "the pre-step-up token still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_is_asked_to_sign_the_user_in_again_and_must_say_it_did() {
    let idp = TestIdp::start().await;
    let (_upstream, _responder, gw) = site(&idp.gateway_section("")).await;
    let mut browser = Browser::new(&gw, gw.client());
    let flow = |browser: &mut Browser, path: &'static str| {
        let mut browser = browser.clone();
        let idp = &idp;
        async move {
            let start = browser.get(path).await;
            assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.text());
            let location = start.header("location").expect("location").to_string();
            let callback = idp.approve(&location).await;
            (location, callback.replacen(&browser.origin(), "", 1), browser)
        }
    };
    let (_, callback, signed_in) = flow(&mut browser, "/.sessiongate/oidc/start?rd=%2F").await;
    browser = signed_in;
    assert_eq!(browser.get(&callback).await.status, StatusCode::SEE_OTHER);
    assert_eq!(browser.upstream_user("/sudo/x").await.as_deref(), Some("u-1001"));

    past_the_age().await;
    let page = browser.navigate("/sudo/x").await;
    let login = page.header("location").expect("location").to_string();
    let form = browser.navigate(&login).await.text();
    assert!(
        form.contains("/.sessiongate/oidc/start?rd=%2Fsudo%2Fx&amp;max_age=2"),
        "{form}"
    );
    let (location, callback, again) = flow(&mut browser, "/.sessiongate/oidc/start?rd=%2Fsudo%2Fx&max_age=2").await;
    browser = again;
    assert!(location.contains("&max_age=2"), "{location}");
    let reply = browser.get(&callback).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    assert_eq!(browser.upstream_user("/sudo/x").await.as_deref(), Some("u-1001"));

    // A provider that ignores max_age (its auth_time an hour old) does not pass the step-up,
    // and neither does a browser that drops max_age from the authorization request.
    past_the_age().await;
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        - 3600;
    idp.set_claims(serde_json::json!({"sub": "u-1001", "auth_time": hour_ago}));
    let (_, callback, again) = flow(&mut browser, "/.sessiongate/oidc/start?rd=%2Fsudo%2Fx&max_age=2").await;
    browser = again;
    let reply = browser.get(&callback).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    idp.set_claims(serde_json::json!({"sub": "u-1001"}));
    let (location, _, again) = flow(&mut browser, "/.sessiongate/oidc/start?rd=%2Fsudo%2Fx&max_age=2").await;
    browser = again;
    let dropped = location.replace("&max_age=2", "");
    let callback = idp.approve(&dropped).await.replacen(&browser.origin(), "", 1);
    let reply = browser.get(&callback).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(browser.navigate("/sudo/x").await.status, StatusCode::FOUND);
}
