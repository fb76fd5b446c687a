//! Sign-in through an OpenID Connect provider (`[oidc]`), against the kit's provider
//! (`kit::idp`, real TLS): the authorization code flow with PKCE, the token rotated as at a
//! password login (the session's id and data carry over), the identity from the ID token's
//! claims reaching the upstream, and every way the flow must fail closed: a token that does not
//! verify, a callback in another browser or replayed, the provider refusing or down.

use reqwest::{Method, StatusCode};

use super::support::{
    fetch, respond_path, session_id, site_config, site_config_with_users, user, Browser, Reply, Responder, Site,
};
use crate::kit::binary::log_field_text;
use crate::kit::idp::{Tamper, TestIdp};
use crate::kit::{closed_port, quoted, secs, within, GatewayConfig, HttpVersion, TestGateway, TestUpstream};

async fn site_with(idp: &TestIdp, extra: &str) -> Site {
    let section = idp.gateway_section(extra);
    Site::with(|c| c.section(&section)).await
}

/// `sessiongate_logins_total{result="RESULT"}` of `site`.
async fn logins(site: &Site, result: &str) -> Option<f64> {
    site.gw
        .metric(&format!("sessiongate_logins_total{{result=\"{result}\"}}"))
        .await
}

/// The path and query of an absolute URL on the gateway.
fn local(url: &str, browser: &Browser) -> String {
    let origin = browser.origin();
    url.strip_prefix(&origin)
        .unwrap_or_else(|| panic!("{url} is not on {origin}"))
        .to_string()
}

/// A query parameter of an absolute URL.
fn param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Starts a flow back to `rd` and lets the provider approve it: the callback path.
async fn to_callback(browser: &mut Browser, idp: &TestIdp, rd: &str) -> String {
    let start = browser
        .get(&format!("/.sessiongate/oidc/start?rd={}", urlencode(rd)))
        .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.text());
    let location = start.header("location").expect("a location").to_string();
    local(&idp.approve(&location).await, browser)
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `POST /.sessiongate/logout` from the site itself.
async fn sign_out(browser: &mut Browser) -> Reply {
    let request = browser
        .request(Method::POST, "/.sessiongate/logout")
        .header("origin", browser.origin());
    browser.send(request).await
}

/// The full flow back to `rd`; fails the test unless it signed in.
async fn sign_in(browser: &mut Browser, idp: &TestIdp, rd: &str) -> Reply {
    let callback = to_callback(browser, idp, rd).await;
    let reply = browser.get(&callback).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "callback: {}", reply.text());
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_login_rotates_the_token_and_forwards_the_claims() {
    let idp = TestIdp::start().await;
    let site = site_with(&idp, "").await;
    let mut browser = site.browser();
    browser
        .get(&respond_path("/respond/x", &[("X-Session-Data-Set", "cart=3")]))
        .await;
    let anonymous = browser.expect_token();
    let id = session_id(&browser.get("/page").await.echo()).expect("session id");

    // The login page offers the provider beside the password form.
    let page = browser.navigate("/.sessiongate/login?rd=%2Fapp%2Fx").await.text();
    assert!(page.contains("Sign in with Test IdP"), "{page}");
    assert!(
        page.contains("href=\"/.sessiongate/oidc/start?rd=%2Fapp%2Fx\""),
        "{page}"
    );
    assert!(page.contains("name=\"password\""), "{page}");

    let start = browser.get("/.sessiongate/oidc/start?rd=%2Fapp%2Fx%3Fy%3D1").await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.text());
    assert_eq!(start.header("cache-control"), Some("no-store"));
    let location = start.header("location").expect("location").to_string();
    assert!(
        location.starts_with(&format!("{}/authorize?", idp.issuer())),
        "{location}"
    );
    let expected_redirect = format!("{}/.sessiongate/oidc/callback", browser.origin());
    assert_eq!(param(&location, "redirect_uri"), Some(expected_redirect.clone()));
    assert_eq!(param(&location, "client_id").as_deref(), Some(idp.client_id()));
    assert_eq!(param(&location, "response_type").as_deref(), Some("code"));
    assert_eq!(param(&location, "scope").as_deref(), Some("openid email profile"));
    assert_eq!(param(&location, "code_challenge_method").as_deref(), Some("S256"));
    assert!(param(&location, "nonce").is_some_and(|n| n.len() >= 32), "{location}");
    assert!(!location.contains(&anonymous), "the token went to the provider");

    let callback = local(&idp.approve(&location).await, &browser);
    let reply = browser.get(&callback).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("/app/x?y=1"));
    let token = reply.new_token();
    assert_ne!(token, anonymous, "the token was not rotated at login");

    // The upstream gets the provider's identity, on the same session with its data.
    let echo = browser.get("/app/x?y=1").await.echo();
    assert_eq!(
        user(&echo).as_deref(),
        Some("u-1001"),
        "the default username_claim is sub"
    );
    assert_eq!(echo.header("x-forwarded-email"), ["alice@example.test"]);
    assert_eq!(echo.header("x-forwarded-groups"), ["staff"]);
    assert_eq!(session_id(&echo).as_deref(), Some(id.as_str()));
    assert_eq!(echo.header("x-session-data"), ["cart=3"]);
    assert!(!echo.header_joined("cookie").contains(&token));

    // The token seen before the login is worthless.
    let refused = browser.with_token(&anonymous).get("/app/x").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // The code was exchanged with the client's credentials in Basic and the PKCE verifier.
    let requests = idp.token_requests();
    assert_eq!(requests.len(), 1);
    let basic = format!(
        "Basic {}",
        base64_standard(&format!("{}:{}", idp.client_id(), idp.client_secret()))
    );
    assert_eq!(requests[0].authorization.as_deref(), Some(basic.as_str()));
    assert_eq!(requests[0].field("redirect_uri"), Some(expected_redirect.as_str()));
    assert!(requests[0].field("code_verifier").is_some_and(|v| v.len() >= 43));
    assert_eq!(requests[0].field("client_secret"), None);

    let info = browser.get("/.sessiongate/session").await.json();
    assert_eq!(info["authenticated"], true);
    assert_eq!(info["user"], "u-1001");
    assert_eq!(logins(&site, "succeeded").await, Some(1.0));
    // The admin listing says how each signed in.
    let mut alice = site.browser();
    alice.login("alice").await;
    for (user, login) in [("u-1001", "oidc"), ("alice", "password")] {
        let listed = fetch(site.admin().authed(Method::GET, &format!("/sessions?user={user}"))).await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
        assert_eq!(listed.json()["sessions"][0]["login"], login, "{}", listed.text());
    }

    // Signing out ends it as any session.
    let out = sign_out(&mut browser).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.header("location"), Some("/"), "signed out at the provider unasked");
    let after = browser.with_token(&token).get("/app/x").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

fn base64_standard(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_claims_name_the_user_and_the_groups_pick_routes() {
    let idp = TestIdp::start().await;
    let site = site_with(&idp, "username_claim = \"preferred_username\"").await;
    idp.set_claims(serde_json::json!({
        "sub": "u-7", "preferred_username": "carol", "email": "carol@example.test",
        "email_verified": false, "groups": ["admins", "a,b"]
    }));
    let mut carol = site.browser();
    sign_in(&mut carol, &idp, "/admins/").await;
    let echo = carol.get("/admins/panel").await.echo();
    assert_eq!(user(&echo).as_deref(), Some("carol"));
    assert!(
        !echo.has_header("x-forwarded-email"),
        "an unverified email was passed on"
    );
    assert_eq!(echo.header("x-forwarded-groups"), ["admins"]);

    idp.set_claims(serde_json::json!({"sub": "u-8", "preferred_username": "dave"}));
    let mut dave = site.browser();
    sign_in(&mut dave, &idp, "/").await;
    assert_eq!(dave.upstream_user("/app/x").await.as_deref(), Some("dave"));
    let denied = dave.get("/admins/panel").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    // A token without the claim signs nobody in.
    idp.set_claims(serde_json::json!({"sub": "u-9"}));
    let mut nobody = site.browser();
    let callback = to_callback(&mut nobody, &idp, "/app/x").await;
    let reply = nobody.get(&callback).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(nobody.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_that_does_not_verify_signs_nobody_in() {
    let idp = TestIdp::start().await;
    // Every browser here is 127.0.0.1: more refusals than the default allows one address.
    let site = site_with(&idp, "\n[login]\nmax_failures = 100").await;
    let tampers = [
        ("audience", Tamper::WrongAudience),
        ("issuer", Tamper::WrongIssuer),
        ("expired", Tamper::Expired),
        ("nonce", Tamper::WrongNonce),
        ("unknown key", Tamper::UnknownKey),
        ("HS256 with the client secret", Tamper::HmacAlg),
    ];
    let count = tampers.len();
    for (what, tamper) in tampers {
        idp.set_tamper(tamper);
        let mut browser = site.browser();
        let callback = to_callback(&mut browser, &idp, "/app/x").await;
        let anonymous = browser.expect_token();
        let reply = browser.get(&callback).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.text());
        assert!(reply.session_cookies().is_empty(), "{what}: {:?}", reply.set_cookies());
        assert!(
            reply.text().contains("could not be verified"),
            "{what}: {}",
            reply.text()
        );
        assert_eq!(browser.expect_token(), anonymous);
        let after = browser.get("/app/x").await;
        assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{what}: signed in");
    }
    assert_eq!(logins(&site, "oidc_refused").await, Some(count as f64));
    assert_eq!(logins(&site, "succeeded").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_in_another_browser_or_a_second_time_is_refused() {
    let idp = TestIdp::start().await;
    let site = site_with(&idp, "").await;
    let mut victim = site.browser();
    let mut attacker = site.browser();
    // The attacker's own approved callback, planted in the victim's browser (login CSRF).
    let planted = to_callback(&mut attacker, &idp, "/app/x").await;
    victim.get("/page").await;
    let reply = victim.get(&planted).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert_eq!(victim.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        idp.token_requests().len(),
        0,
        "a foreign state reached the token endpoint"
    );

    // Where it started, it works once; a replay after the login finds the secret rotated.
    let reply = attacker.get(&planted).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    let again = attacker.get(&planted).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN, "{}", again.text());
    assert_eq!(attacker.upstream_user("/app/x").await.as_deref(), Some("u-1001"));

    // Without any cookie (SameSite=Strict withholds it on the provider's redirect), the
    // callback loads itself again from this site, once.
    let mut cookieless = site.browser();
    let callback = to_callback(&mut cookieless, &idp, "/").await;
    let mut bare = site.browser();
    let hop = bare.get(&callback).await;
    assert_eq!(hop.status, StatusCode::OK, "{}", hop.text());
    let text = hop.text();
    assert!(text.contains("http-equiv=\"refresh\""), "{text}");
    assert!(text.contains("&amp;hop=1"), "{text}");
    let second = bare.get(&format!("{callback}&hop=1")).await;
    assert_eq!(second.status, StatusCode::FORBIDDEN, "{}", second.text());
    // The state is tampered with: refused too.
    let forged = callback.replace("state=", "state=x");
    assert_eq!(cookieless.get(&forged).await.status, StatusCode::FORBIDDEN);
    // Planted, replayed, cookieless after the hop, forged.
    assert_eq!(logins(&site, "oidc_expired").await, Some(4.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_refusing_or_failing_is_a_page_not_a_login() {
    let idp = TestIdp::start().await;
    let site = site_with(&idp, "").await;

    idp.set_tamper(Tamper::Deny);
    let mut browser = site.browser();
    let callback = to_callback(&mut browser, &idp, "/app/x").await;
    assert_eq!(param(&callback, "error").as_deref(), Some("access_denied"));
    let reply = browser.get(&callback).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert!(reply.text().contains("did not sign you in"), "{}", reply.text());

    idp.set_tamper(Tamper::TokenError);
    let mut browser = site.browser();
    let callback = to_callback(&mut browser, &idp, "/app/x").await;
    let reply = fetch(browser.request(Method::GET, &callback)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert!(reply.text().contains("not available"), "{}", reply.text());
    assert!(reply.session_cookies().is_empty());
    assert_eq!(browser.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(logins(&site, "oidc_unavailable").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_leaves_the_gateway_serving() {
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let issuer = format!("https://localhost:{}", closed_port());
    let dir = tempfile::tempdir().expect("temp dir");
    sessiongate::tls::write_self_signed(dir.path(), &["localhost".to_string()]).expect("certificate");
    let section = format!(
        "[oidc]\nissuer = {}\nclient_id = \"c\"\nclient_secret = \"s\"\ntimeout = \"2s\"\nca = {}\nallow_any_account = true\n",
        quoted(&issuer),
        quoted(&dir.path().join("cert.pem").display().to_string())
    );
    let gw = TestGateway::start(site_config(&upstream, &responder).section(&section)).await;
    let mut browser = Browser::new(&gw, gw.client());
    assert_eq!(browser.get("/page").await.status, StatusCode::OK);
    let reply = fetch(browser.request(Method::GET, "/.sessiongate/oidc/start?rd=%2F")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert!(reply.text().contains("not available"), "{}", reply.text());
    // The password form still works.
    let login = browser.submit_login("alice", super::support::PASSWORD, "/").await;
    assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", login.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_at_the_provider_is_followed() {
    let idp = TestIdp::start().await;
    let site = site_with(&idp, "").await;
    sign_in(&mut site.browser(), &idp, "/").await;
    let fetched = idp.jwks_fetches();
    assert!(fetched >= 1);
    sign_in(&mut site.browser(), &idp, "/").await;
    assert_eq!(idp.jwks_fetches(), fetched, "the keys were fetched again without need");
    idp.rotate_key();
    let mut browser = site.browser();
    sign_in(&mut browser, &idp, "/").await;
    assert_eq!(idp.jwks_fetches(), fetched + 1);
    assert_eq!(browser.upstream_user("/app/x").await.as_deref(), Some("u-1001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_users_the_login_page_sends_browsers_to_the_provider() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let config: GatewayConfig = site_config_with_users(&upstream, &responder, "").section(&idp.gateway_section(""));
    let gw = TestGateway::start(config).await;
    let mut browser = Browser::new(&gw, gw.client());
    let to_login = browser.navigate("/app/x").await;
    assert_eq!(to_login.status, StatusCode::FOUND, "{}", to_login.text());
    let login = to_login.header("location").expect("location").to_string();
    let reply = browser.navigate(&login).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.text());
    let location = reply.header("location").expect("location").to_string();
    assert!(
        location.starts_with(&format!("{}/authorize?", idp.issuer())),
        "{location}"
    );
    let callback = local(&idp.approve(&location).await, &browser);
    let done = browser.get(&callback).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text());
    assert_eq!(done.header("location"), Some("/app/x"));
    assert_eq!(browser.upstream_user("/app/x").await.as_deref(), Some("u-1001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_whose_callbacks_keep_failing_is_held_off() {
    let idp = TestIdp::start().await;
    let site = site_with(&idp, "\n[login]\nmax_failures = 2").await;
    let mut browser = site.browser();
    // Made-up codes with this session's own valid state: each would cost a token request.
    let callback = to_callback(&mut browser, &idp, "/").await;
    let state = param(&format!("https://x{callback}"), "state").expect("state");
    for n in 0..2 {
        let made_up = format!(
            "/.sessiongate/oidc/callback?code=made-up-{n}&state={}",
            urlencode(&state)
        );
        let reply = fetch(browser.request(Method::GET, &made_up)).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    }
    assert_eq!(idp.token_requests().len(), 2);
    let reply = browser.get(&callback).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text());
    assert!(reply.header("retry-after").is_some());
    assert_eq!(
        idp.token_requests().len(),
        2,
        "a held-off callback reached the provider"
    );
    assert_eq!(browser.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_works_over_http2() {
    let idp = TestIdp::start().await;
    let site = site_with(&idp, "").await;
    let mut browser = site.browser_on(HttpVersion::Http2);
    let reply = sign_in(&mut browser, &idp, "/app/h2").await;
    assert_eq!(reply.header("location"), Some("/app/h2"));
    assert_eq!(browser.upstream_user("/app/h2").await.as_deref(), Some("u-1001"));
    let requests = idp.token_requests();
    let expected = format!("{}/.sessiongate/oidc/callback", browser.origin());
    assert_eq!(requests[0].field("redirect_uri"), Some(expected.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_accounts_of_the_allowed_domains_and_groups_sign_in() {
    let idp = TestIdp::start().await;
    let site = site_with(
        &idp,
        "allowed_email_domains = [\"example.test\"]\nallowed_groups = [\"staff\"]\n[login]\nmax_failures = 100",
    )
    .await;
    // The default account: alice@example.test, verified, in staff.
    let mut alice = site.browser();
    sign_in(&mut alice, &idp, "/").await;
    assert_eq!(alice.upstream_user("/app/x").await.as_deref(), Some("u-1001"));

    let refused = [
        (
            "another domain",
            serde_json::json!({"sub": "u-2", "email": "eve@elsewhere.test", "email_verified": true, "groups": ["staff"]}),
        ),
        (
            "a look-alike domain",
            serde_json::json!({"sub": "u-3", "email": "eve@example.test.evil.test", "email_verified": true, "groups": ["staff"]}),
        ),
        (
            "an unverified email",
            serde_json::json!({"sub": "u-4", "email": "eve@example.test", "email_verified": false, "groups": ["staff"]}),
        ),
        (
            "not in the group",
            serde_json::json!({"sub": "u-5", "email": "bob@example.test", "email_verified": true, "groups": ["guests"]}),
        ),
    ];
    let count = refused.len();
    for (what, claims) in refused {
        idp.set_claims(claims);
        let mut browser = site.browser();
        let callback = to_callback(&mut browser, &idp, "/app/x").await;
        let reply = browser.get(&callback).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}: {}", reply.text());
        assert!(
            reply.text().contains("may not sign in here"),
            "{what}: {}",
            reply.text()
        );
        assert!(reply.session_cookies().is_empty(), "{what}");
        assert_eq!(browser.get("/app/x").await.status, StatusCode::UNAUTHORIZED, "{what}");
    }
    assert_eq!(logins(&site, "oidc_not_allowed").await, Some(count as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_at_provider_sends_a_provider_made_session_on_to_the_provider() {
    let idp = TestIdp::start().await;
    let site = site_with(&idp, "logout_at_provider = true").await;
    let mut sso = site.browser();
    sign_in(&mut sso, &idp, "/").await;
    let token = sso.expect_token();
    let out = sign_out(&mut sso).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text());
    let expected = format!(
        "{}/logout?client_id={}&post_logout_redirect_uri={}",
        idp.issuer(),
        idp.client_id(),
        urlencode(&format!("{}/", sso.origin()))
    );
    assert_eq!(out.header("location"), Some(expected.as_str()));
    assert!(out.session_cookies().iter().any(|c| c.is_removal()));
    assert_eq!(
        sso.with_token(&token).get("/app/x").await.status,
        StatusCode::UNAUTHORIZED
    );

    // A password login on the same site signs out at home.
    let mut alice = site.browser();
    alice.login("alice").await;
    let out = sign_out(&mut alice).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.header("location"), Some("/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_in_flight_are_bounded_and_the_rest_answered_at_once() {
    let idp = TestIdp::start().await;
    let site = site_with(&idp, "max_concurrent = 1").await;
    let mut first = site.browser();
    let first_callback = to_callback(&mut first, &idp, "/").await;
    let mut second = site.browser();
    let second_callback = to_callback(&mut second, &idp, "/app/x").await;

    // The provider is slow: the first exchange holds the only slot.
    idp.hold_tokens();
    let held = tokio::spawn(async move { first.get(&first_callback).await.status });
    within(secs(10), "the first token request", idp.token_requests_arrived(1)).await;
    let busy = fetch(second.request(Method::GET, &second_callback)).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE, "{}", busy.text());
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert!(busy.session_cookies().is_empty());
    assert_eq!(idp.token_requests().len(), 1, "the busy callback reached the provider");

    idp.release_tokens();
    let first_status = within(secs(10), "the held callback", held).await.expect("join");
    assert_eq!(first_status, StatusCode::SEE_OTHER);
    // The busy one's code was not spent: reloading the page signs in.
    let again = second.get(&second_callback).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.text());
    assert_eq!(second.upstream_user("/app/x").await.as_deref(), Some("u-1001"));
    assert_eq!(logins(&site, "oidc_busy").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_says_oidc_changes_need_a_restart_and_keeps_provider_sessions() {
    let idp = TestIdp::start().await;
    let site = site_with(&idp, "").await;
    let mut browser = site.browser();
    sign_in(&mut browser, &idp, "/").await;
    let text = std::fs::read_to_string(site.gw.config_path()).expect("config");
    let reload = || async {
        let reply = fetch(site.admin().authed(Method::POST, "/reload")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    };

    // Unchanged: nothing to restart, and [[users]] reloaded leaves the provider's session be.
    assert_eq!(reload().await["restart_needed"], serde_json::json!([]));
    let changed = text.replace("name = \"Test IdP\"", "name = \"Other IdP\"");
    assert_ne!(changed, text);
    std::fs::write(site.gw.config_path(), &changed).expect("rewrite config");
    assert_eq!(reload().await["restart_needed"], serde_json::json!(["oidc"]));
    let secret = text.replace(
        &format!("client_secret = {}", quoted(idp.client_secret())),
        "client_secret = \"rotated\"",
    );
    assert_ne!(secret, text);
    std::fs::write(site.gw.config_path(), &secret).expect("rewrite config");
    let report = reload().await;
    assert_eq!(
        report["restart_needed"],
        serde_json::json!(["oidc.client_secret"]),
        "{report}"
    );
    assert!(!report.to_string().contains("rotated"), "the secret is in the report");
    assert_eq!(browser.upstream_user("/app/x").await.as_deref(), Some("u-1001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_other_than_the_one_the_provider_names_signs_nobody_in() {
    let idp = TestIdp::start().await;
    // A final slash the provider's own issuer lacks: discovery answers, but for another issuer.
    let issuer = quoted(&idp.issuer());
    let slashed = quoted(&format!("{}/", idp.issuer()));
    let section = idp.gateway_section("").replace(&issuer, &slashed);
    assert!(section.contains(&slashed), "{section}");
    let site = Site::with(|c| c.section(&section)).await;
    let browser = site.browser();
    let reply = fetch(browser.request(Method::GET, "/.sessiongate/oidc/start?rd=%2F")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert!(idp.discovery_fetches() >= 1);
    assert!(idp.token_requests().is_empty());
}

/// The binary reads the provider's discovery document at start, so that an operator sees a
/// wrong issuer or an unreachable provider in the log before anyone signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_asks_the_provider_at_start_and_logs_what_it_found() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let responder = Responder::start().await;
    let gw = TestGateway::spawn_binary(site_config(&upstream, &responder).section(&idp.gateway_section(""))).await;
    let found = gw
        .wait_for_log(secs(10), |l| {
            log_field_text(l, "message").is_some_and(|m| m.contains("OpenID provider discovered"))
        })
        .await;
    assert_eq!(log_field_text(&found, "issuer"), Some(idp.issuer()), "{found}");
    assert_eq!(idp.discovery_fetches(), 1);
    drop(gw);

    let down = idp.gateway_section("").replace(
        &quoted(&idp.issuer()),
        &quoted(&format!("https://localhost:{}", closed_port())),
    );
    let gw = TestGateway::spawn_binary(site_config(&upstream, &responder).section(&down)).await;
    let line = gw
        .wait_for_log(secs(10), |l| {
            log_field_text(l, "message").is_some_and(|m| m.contains("OpenID provider not reachable yet"))
        })
        .await;
    assert!(
        log_field_text(&line, "error").is_some_and(|e| e.contains("connect")),
        "{line}"
    );
    // It serves all the same.
    let mut browser = Browser::new(&gw, gw.client());
    assert_eq!(browser.get("/page").await.status, StatusCode::OK);
}
