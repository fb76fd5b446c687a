//! What the session tests share: one standard site (users, and a route for every auth
//! mode), a `Browser` that carries the session cookie by hand, an upstream that answers with
//! chosen response headers, and the admin API and metrics.
//!
//! The `Browser` keeps the cookie itself rather than in a cookie jar so that a test can keep
//! an old token after a login or logout, replay it, corrupt it or present it from another
//! address; one test (`cookie::a_real_cookie_jar_follows_the_whole_flow`) uses reqwest's jar
//! to show that the attributes are ones a real client accepts.
//!
//! | path prefix | auth | upstream |
//! |---|---|---|
//! | `/` | optional | `TestUpstream` echo |
//! | `/public/` | none | echo |
//! | `/app/` | required | echo |
//! | `/admins/` | required, groups `admins` | echo |
//! | `/ops/` | required, groups `ops` | echo |
//! | `/respond/` | optional | [`Responder`] |
//! | `/respond-public/` | none | [`Responder`] |

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, header, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use reqwest::{header::HeaderMap, Method, Version};
use serde_json::Value;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

use crate::kit::{
    client::plain_client, quoted, within, Echo, GatewayAddrs, GatewayConfig, HttpVersion, RouteSpec, TestGateway,
    TestUpstream,
};

/// The gateway's cookie name (the default).
pub const COOKIE: &str = "__Host-sessiongate";
/// Password of every configured user.
pub const PASSWORD: &str = "correct horse battery staple";
/// The admin API's bearer token.
pub const ADMIN_TOKEN: &str = "session-tests-admin-token-0123";
/// The User-Agent a `Browser` sends unless told otherwise (it is part of the binding).
pub const USER_AGENT: &str = "sessiongate-tests/1.0";
/// alice: email, group `admins`.
pub const ALICE_EMAIL: &str = "alice@example.test";

/// Upper bound for one request through the gateway (logins include an argon2 check).
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// The argon2id hash of [`PASSWORD`], computed once per test binary (it is slow in debug).
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        sessiongate::auth::hash_password(PASSWORD).unwrap_or_else(|e| panic!("hash_password failed: {e}"))
    })
}

/// `[[users]]`: alice (email, `admins`) and bob (no email, `dev` and `ops`).
pub fn users_section() -> String {
    let hash = quoted(password_hash());
    format!(
        "[[users]]\nname = \"alice\"\npassword_hash = {hash}\nemail = {email}\ngroups = [\"admins\"]\n\n\
         [[users]]\nname = \"bob\"\npassword_hash = {hash}\ngroups = [\"dev\", \"ops\"]\n",
        email = quoted(ALICE_EMAIL),
    )
}

/// The standard site's configuration (see the module table); the store is in memory.
pub fn site_config(upstream: &TestUpstream, responder: &Responder) -> GatewayConfig {
    site_config_with_users(upstream, responder, &users_section())
}

/// The standard site with `users` (TOML `[[users]]` tables) instead of alice and bob.
pub fn site_config_with_users(upstream: &TestUpstream, responder: &Responder, users: &str) -> GatewayConfig {
    let auth = |mode: &str| quoted(mode);
    GatewayConfig::new()
        .admin("token", quoted(ADMIN_TOKEN))
        .section(users)
        .route(RouteSpec::new("/", upstream.url()).set("auth", auth("optional")))
        .route(RouteSpec::new("/public/", upstream.url()).set("auth", auth("none")))
        .route(RouteSpec::new("/app/", upstream.url()).set("auth", auth("required")))
        .route(
            RouteSpec::new("/admins/", upstream.url())
                .set("auth", auth("required"))
                .set("groups", "[\"admins\"]"),
        )
        .route(
            RouteSpec::new("/ops/", upstream.url())
                .set("auth", auth("required"))
                .set("groups", "[\"ops\"]"),
        )
        .route(RouteSpec::new("/respond/", responder.url()).set("auth", auth("optional")))
        .route(RouteSpec::new("/respond-public/", responder.url()).set("auth", auth("none")))
}

/// The standard site running in-process, with its upstreams.
pub struct Site {
    pub upstream: TestUpstream,
    /// Serves the `/respond/` routes.
    pub responder: Responder,
    pub gw: TestGateway,
}

impl Site {
    /// The standard site with default session settings.
    pub async fn start() -> Self {
        Self::with(|config| config).await
    }

    /// The standard site with `tweak` applied to its configuration (extra sections).
    pub async fn with(tweak: impl FnOnce(GatewayConfig) -> GatewayConfig) -> Self {
        let upstream = TestUpstream::start().await;
        let responder = Responder::start().await;
        let gw = TestGateway::start(tweak(site_config(&upstream, &responder))).await;
        Self {
            upstream,
            responder,
            gw,
        }
    }

    /// A browser speaking HTTP/1.1.
    pub fn browser(&self) -> Browser {
        self.browser_on(HttpVersion::Http1)
    }

    /// A browser speaking `version`.
    pub fn browser_on(&self, version: HttpVersion) -> Browser {
        Browser::new(&self.gw, self.gw.client_builder().version(version).build())
    }

    /// The admin API of this site.
    pub fn admin(&self) -> Admin {
        Admin::new(&self.gw)
    }
}

/// One response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// The upstream's echo; fails the test unless the status is 200.
    pub fn echo(&self) -> Echo {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected an upstream echo, got {}: {}",
            self.status,
            self.text()
        );
        Echo::from_slice(&self.body)
    }

    /// The first value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie` value, as text.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// Every `Set-Cookie` for the gateway's cookie.
    pub fn session_cookies(&self) -> Vec<SetCookie> {
        self.set_cookies()
            .into_iter()
            .map(SetCookie::parse)
            .filter(|c| c.name == COOKIE)
            .collect()
    }

    /// The one `Set-Cookie` for the gateway's cookie, if any; fails the test if there are
    /// several.
    pub fn session_cookie(&self) -> Option<SetCookie> {
        let mut cookies = self.session_cookies();
        assert!(
            cookies.len() <= 1,
            "several Set-Cookie for {COOKIE}: {:?}",
            self.set_cookies()
        );
        cookies.pop()
    }

    /// The value of a newly set session cookie; fails the test if none was set.
    pub fn new_token(&self) -> String {
        let cookie = self.session_cookie().unwrap_or_else(|| {
            panic!(
                "expected a new {COOKIE} cookie, got {} with Set-Cookie {:?}",
                self.status,
                self.set_cookies()
            )
        });
        assert!(!cookie.is_removal(), "cookie was removed: {}", cookie.raw);
        cookie.value
    }
}

/// A `Set-Cookie` header, split into name, value and attributes.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub raw: String,
    pub name: String,
    pub value: String,
    /// `(lowercase name, value)` of each attribute, in order.
    pub attributes: Vec<(String, Option<String>)>,
}

impl SetCookie {
    pub fn parse(raw: &str) -> Self {
        let mut parts = raw.split(';');
        let pair = parts.next().unwrap_or_default();
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let attributes = parts
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| match a.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_owned())),
                None => (a.to_ascii_lowercase(), None),
            })
            .collect();
        Self {
            raw: raw.to_owned(),
            name: name.trim().to_owned(),
            value: value.trim().to_owned(),
            attributes,
        }
    }

    /// The attribute `name` (case-insensitive): `None` if absent, `Some(None)` if valueless.
    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        let name = name.to_ascii_lowercase();
        self.attributes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_deref())
    }

    pub fn max_age(&self) -> Option<i64> {
        self.attribute("max-age")
            .flatten()
            .map(|v| v.parse().unwrap_or_else(|_| panic!("bad Max-Age in {}", self.raw)))
    }

    /// Whether this deletes the cookie rather than setting it.
    pub fn is_removal(&self) -> bool {
        self.value.is_empty() || self.max_age().is_some_and(|age| age <= 0)
    }
}

/// A client that holds the session cookie itself, like a browser with one cookie.
#[derive(Clone)]
pub struct Browser {
    client: reqwest::Client,
    addrs: GatewayAddrs,
    token: Option<String>,
    user_agent: String,
}

impl Browser {
    /// A browser without a cookie, sending [`USER_AGENT`], through `client`.
    pub fn new(addrs: &GatewayAddrs, client: reqwest::Client) -> Self {
        Self {
            client,
            addrs: addrs.clone(),
            token: None,
            user_agent: USER_AGENT.to_owned(),
        }
    }

    /// The current session token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The current session token; fails the test if there is none.
    pub fn expect_token(&self) -> String {
        self.token.clone().expect("the browser holds a session cookie")
    }

    /// Presents `token` from now on (`None`: no cookie).
    pub fn set_token(&mut self, token: Option<&str>) {
        self.token = token.map(str::to_owned);
    }

    /// A copy of this browser holding `token` (same client, same User-Agent).
    pub fn with_token(&self, token: &str) -> Self {
        let mut copy = self.clone();
        copy.set_token(Some(token));
        copy
    }

    /// A copy of this browser that sends `user_agent`.
    pub fn with_user_agent(&self, user_agent: &str) -> Self {
        let mut copy = self.clone();
        user_agent.clone_into(&mut copy.user_agent);
        copy
    }

    /// `https://localhost:PORT`, what the browser sends as `Origin`.
    pub fn origin(&self) -> String {
        format!("https://{}", self.addrs.host_header())
    }

    /// A request with the User-Agent and, when held, the session cookie.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.request_without_cookie(method, path);
        match &self.token {
            Some(token) => builder.header(header::COOKIE, format!("{COOKIE}={token}")),
            None => builder,
        }
    }

    /// A request with the User-Agent but no cookie, for tests that write `Cookie` themselves.
    pub fn request_without_cookie(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.addrs.url(path))
            .header(header::USER_AGENT, &self.user_agent)
    }

    /// Sends `request`, reads the whole response and adopts any session cookie it sets.
    ///
    /// Checks two rules on every response a browser gets: no session test ever sees a server
    /// error, and a response that sets or clears the session cookie is never cacheable.
    pub async fn send(&mut self, request: reqwest::RequestBuilder) -> Reply {
        let reply = fetch(request).await;
        assert!(
            !reply.status.is_server_error(),
            "server error: {} {}",
            reply.status,
            reply.text()
        );
        if !reply.session_cookies().is_empty() {
            let cache_control: Vec<_> = reply.headers.get_all(header::CACHE_CONTROL).iter().collect();
            assert_eq!(
                cache_control,
                ["no-store"],
                "a response setting {COOKIE} must be Cache-Control: no-store: {:?}",
                reply.headers
            );
        }
        for cookie in reply.session_cookies() {
            self.token = (!cookie.is_removal()).then_some(cookie.value);
        }
        reply
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    /// `GET path` as a browser navigating: `Accept: text/html`.
    pub async fn navigate(&mut self, path: &str) -> Reply {
        let request = self
            .request(Method::GET, path)
            .header(header::ACCEPT, "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");
        self.send(request).await
    }

    /// `POST path` with an `application/x-www-form-urlencoded` body.
    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let request = form_request(self.request(Method::POST, path), fields);
        self.send(request).await
    }

    /// `GET /.sessiongate/login` (with `rd` when given) and the CSRF value of its form.
    pub async fn login_form(&mut self, rd: Option<&str>) -> (Reply, String) {
        let path = match rd {
            Some(rd) => format!("/.sessiongate/login?{}", encode_form(&[("rd", rd)])),
            None => "/.sessiongate/login".to_owned(),
        };
        let reply = self.navigate(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "login form: {}", reply.text());
        let csrf = hidden_input(&reply.text(), "csrf")
            .unwrap_or_else(|| panic!("no csrf field in the login form: {}", reply.text()));
        (reply, csrf)
    }

    /// Fetches the form and posts `username`, `password` and its CSRF value, with `rd`.
    pub async fn submit_login(&mut self, username: &str, password: &str, rd: &str) -> Reply {
        let (_, csrf) = self.login_form(None).await;
        self.post_form(
            "/.sessiongate/login",
            &[
                ("username", username),
                ("password", password),
                ("csrf", &csrf),
                ("rd", rd),
            ],
        )
        .await
    }

    /// Logs in as `username` with [`PASSWORD`]; fails the test unless it worked.
    pub async fn login(&mut self, username: &str) {
        let before = self.token.clone();
        let reply = self.submit_login(username, PASSWORD, "/").await;
        assert_eq!(
            reply.status,
            StatusCode::SEE_OTHER,
            "login as {username}: {}",
            reply.text()
        );
        let token = reply.new_token();
        assert_ne!(Some(token), before, "login did not rotate the token");
    }

    /// `POST /.sessiongate/logout` with this site's `Origin`.
    pub async fn logout(&mut self) -> Reply {
        let request = self
            .request(Method::POST, "/.sessiongate/logout")
            .header(header::ORIGIN, self.origin());
        self.send(request).await
    }

    /// `GET /.sessiongate/session`.
    pub async fn session_info(&mut self) -> Reply {
        self.get("/.sessiongate/session").await
    }

    /// The user the upstream sees for `path` (an `optional` route), or `None`.
    pub async fn upstream_user(&mut self, path: &str) -> Option<String> {
        let echo = self.get(path).await.echo();
        echo.header("x-forwarded-user").into_iter().next()
    }
}

/// Sends a request and reads the whole response, failing the test on a transport error.
pub async fn fetch(request: reqwest::RequestBuilder) -> Reply {
    let response = within(REQUEST_LIMIT, "response", request.send())
        .await
        .unwrap_or_else(|e| panic!("request failed: {e:?}"));
    let status = response.status();
    let version = response.version();
    let headers = response.headers().clone();
    let body = within(REQUEST_LIMIT, "response body", response.bytes())
        .await
        .unwrap_or_else(|e| panic!("reading the body failed: {e:?}"));
    Reply {
        status,
        version,
        headers,
        body,
    }
}

/// `fields` as `application/x-www-form-urlencoded`.
pub fn encode_form(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// Adds a form body to `request`.
pub fn form_request(request: reqwest::RequestBuilder, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
    request
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(encode_form(fields))
}

/// The `value` of `<input type="hidden" name="{name}" value="...">` in `html`.
pub fn hidden_input(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(unescape_html(&html[start..start + end]))
}

/// Undoes the gateway's HTML escaping of attribute values.
fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The value of query parameter `key` in a `Location` like `/path?rd=...`, decoded.
pub fn query_param(location: &str, key: &str) -> Option<String> {
    let query = location.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Whether `s` looks like a token we issue: 43 characters of base64url.
pub fn is_token_shaped(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `s` looks like a session id: 32 lowercase hex digits.
pub fn is_session_id_shaped(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The `X-Session-Id` the upstream received (exactly one), or `None`.
pub fn session_id(echo: &Echo) -> Option<String> {
    let ids = echo.header("x-session-id");
    assert!(ids.len() <= 1, "several X-Session-Id values: {ids:?}");
    ids.into_iter().next()
}

/// The `X-Forwarded-User` the upstream received (exactly one), or `None`.
pub fn user(echo: &Echo) -> Option<String> {
    let users = echo.header("x-forwarded-user");
    assert!(users.len() <= 1, "several X-Forwarded-User values: {users:?}");
    users.into_iter().next()
}

/// The admin API and metrics of one gateway.
pub struct Admin {
    client: reqwest::Client,
    addrs: GatewayAddrs,
}

impl Admin {
    pub fn new(addrs: &GatewayAddrs) -> Self {
        Self {
            client: plain_client(),
            addrs: addrs.clone(),
        }
    }

    /// A request to the admin listener with `Authorization: Bearer {token}` when given.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, self.addrs.admin_url(path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// A request with the right bearer token.
    pub fn authed(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path, Some(ADMIN_TOKEN))
    }

    /// `POST /sessions` with `body`; fails the test unless 201. Returns `(id, cookie pair)`.
    pub async fn mint(&self, body: Value) -> (String, String) {
        let reply = fetch(self.authed(Method::POST, "/sessions").json(&body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "mint: {}", reply.text());
        let json = reply.json();
        let id = json["id"].as_str().expect("minted id").to_owned();
        let cookie = json["cookie"].as_str().expect("minted cookie").to_owned();
        (id, cookie)
    }

    /// Mints a session for `user` bound to 127.0.0.1 and [`USER_AGENT`]; returns
    /// `(id, token)`.
    pub async fn mint_for(&self, user: &str) -> (String, String) {
        let (id, cookie) = self
            .mint(serde_json::json!({
                "user": user,
                "client_ip": "127.0.0.1",
                "headers": {"user-agent": USER_AGENT},
            }))
            .await;
        let token = cookie
            .strip_prefix(&format!("{COOKIE}="))
            .unwrap_or_else(|| panic!("minted cookie is not {COOKIE}=...: {cookie}"))
            .to_owned();
        (id, token)
    }

    /// `POST /sessions` with `"count": count` for `user`, bound like [`Admin::mint_for`]; fails
    /// the test unless 201 with exactly `count` sessions. Returns `(id, token)` pairs.
    pub async fn mint_batch(&self, user: &str, count: u64) -> Vec<(String, String)> {
        let body = serde_json::json!({
            "user": user,
            "client_ip": "127.0.0.1",
            "headers": {"user-agent": USER_AGENT},
            "count": count,
        });
        let reply = fetch(self.authed(Method::POST, "/sessions").json(&body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "batch mint: {}", reply.text());
        let json = reply.json();
        let sessions = json["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("no sessions: {json}"));
        assert_eq!(sessions.len() as u64, count, "{json}");
        sessions
            .iter()
            .map(|s| {
                let id = s["id"].as_str().unwrap_or_else(|| panic!("id in {s}")).to_owned();
                let cookie = s["cookie"].as_str().unwrap_or_else(|| panic!("cookie in {s}"));
                let token = cookie
                    .strip_prefix(&format!("{COOKIE}="))
                    .unwrap_or_else(|| panic!("minted cookie is not {COOKIE}=...: {cookie}"))
                    .to_owned();
                (id, token)
            })
            .collect()
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> Metrics {
        let reply = fetch(self.client.get(self.addrs.admin_url("/metrics"))).await;
        assert_eq!(reply.status, StatusCode::OK, "GET /metrics");
        Metrics(reply.text())
    }
}

/// A Prometheus text exposition.
#[derive(Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of `name` whose labels include all of `labels`; 0 if none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                let matches = metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| label_text.split(',').any(|l| l == format!("{k}=\"{v}\"")));
                matches.then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }

    /// Whether any sample of `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.0
            .lines()
            .any(|line| line.starts_with(name) && !line.starts_with('#'))
    }
}

/// A tiny upstream that echoes like `TestUpstream` and answers with response headers taken
/// from the query string: every `name=value` pair becomes a response header (repeatable).
///
/// The pair [`HOLD`]`=1` is not a header: it holds that response back until the test calls
/// [`Responder::release`], so a test can act while a request is certainly in flight.
pub struct Responder {
    addr: SocketAddr,
    hold: Arc<Hold>,
    accept_loop: JoinHandle<()>,
}

/// The query key that holds a response back.
pub const HOLD: &str = "hold";

/// Signals between held requests and the test.
#[derive(Default)]
struct Hold {
    arrived: Notify,
    release: Notify,
}

impl Responder {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the responder upstream");
        let addr = listener.local_addr().expect("responder address");
        let hold = Arc::new(Hold::default());
        let shared = hold.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let hold = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| respond(req, hold.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            hold,
            accept_loop,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (at most 10 s) until a held request has reached the responder.
    pub async fn held_request_arrived(&self) {
        within(
            Duration::from_secs(10),
            "a held request to reach the app",
            self.hold.arrived.notified(),
        )
        .await;
    }

    /// Lets one held response go.
    pub fn release(&self) {
        self.hold.release.notify_one();
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// A path on the responder that answers with `headers`: `{prefix}?name=value&...`.
pub fn respond_path(prefix: &str, headers: &[(&str, &str)]) -> String {
    format!("{prefix}?{}", encode_form(headers))
}

async fn respond(req: Request<Incoming>, hold: Arc<Hold>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body_len = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or_default();
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        received
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let report = serde_json::json!({
        "upstream": "responder",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": received,
        "body_len": body_len,
    });
    let mut response = Response::builder().header(header::CONTENT_TYPE, "application/json");
    for (name, value) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        if name == HOLD {
            hold.arrived.notify_one();
            hold.release.notified().await;
            continue;
        }
        response = response.header(name.as_ref(), value.as_ref());
    }
    let response = response
        .body(Full::new(Bytes::from(report.to_string())))
        .unwrap_or_else(|e| {
            let mut bad = Response::new(Full::new(Bytes::from(format!("responder: bad header in query: {e}"))));
            *bad.status_mut() = StatusCode::BAD_REQUEST;
            bad
        });
    Ok(response)
}
