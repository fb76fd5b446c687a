//! What the Redis tests share: the `[store]` sections, gateway instances of the standard site
//! (see `sessions/support.rs`) on a shared store, and the checks "this instance serves that
//! token" / "refuses it within a bound".
//!
//! Every instance's upstream is named after the instance ("A", "B"), so an echo proves which
//! gateway served a request.

use std::{
    ops::Deref,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use sessiongate::session::token::{hex, SessionToken};

pub use super::{
    server::{redis_missing, RedisCluster, RedisServer},
    site::{fetch, session_id, site_config, user, Browser, Reply, Responder, Site},
};
use crate::kit::{client::plain_client, millis, quoted, secs, Echo, TestGateway, TestUpstream};

/// The key prefix the tests configure; not the default, so that its use is visible.
pub const PREFIX: &str = "sg-it:";

/// The invalidation channel for [`PREFIX`].
pub fn channel() -> String {
    format!("{PREFIX}invalidate")
}

/// How soon another instance must refuse a token after the response that ended it.
pub const PROPAGATION: Duration = Duration::from_millis(100);

/// Upper bound for an instance to subscribe to the channel after start.
pub const SUBSCRIBE_LIMIT: Duration = Duration::from_secs(5);

/// `[store]` for the single node `redis`, plus raw TOML lines `extra` (`touch_interval = ...`).
pub fn single_store(redis: &RedisServer, extra: &str) -> String {
    format!(
        "[store]\nkind = \"redis\"\nurl = {}\nkey_prefix = {}\n{extra}",
        quoted(&redis.url()),
        quoted(PREFIX)
    )
}

/// `[store]` for `cluster`, seeded with every node.
pub fn cluster_store(cluster: &RedisCluster, extra: &str) -> String {
    format!(
        "[store]\nkind = \"redis\"\nnodes = {}\nkey_prefix = {}\n{extra}",
        cluster.nodes_toml(),
        quoted(PREFIX)
    )
}

/// One gateway instance of the standard site on a shared store.
pub struct Instance {
    /// What this instance's upstream reports as `"upstream"`.
    pub name: &'static str,
    pub site: Site,
}

impl Instance {
    /// Starts the standard site with `store` as its `[store]` section.
    pub async fn start(name: &'static str, store: &str) -> Self {
        let upstream = TestUpstream::named(name).await;
        let responder = Responder::start().await;
        let gw = TestGateway::start(site_config(&upstream, &responder).store_section(Some(store))).await;
        Self {
            name,
            site: Site {
                upstream,
                responder,
                gw,
            },
        }
    }

    /// A browser of this instance presenting `token`.
    pub fn presenting(&self, token: &str) -> Browser {
        self.browser().with_token(token)
    }

    /// `GET /app/x` (`auth = "required"`) with `token`, adopting no cookie.
    pub async fn app(&self, token: &str) -> Reply {
        fetch(self.presenting(token).request(Method::GET, "/app/x")).await
    }

    /// Asserts this instance serves `token` as `user`: its own upstream sees the user on a
    /// required route, and the cookie is kept. Returns the echo.
    pub async fn assert_serves(&self, token: &str, user_name: &str, when: &str) -> Echo {
        let reply = self.app(token).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{when}: {} refused {user_name}'s token: {}",
            self.name,
            reply.text()
        );
        assert!(
            reply.session_cookies().is_empty(),
            "{when}: {} replaced the cookie: {:?}",
            self.name,
            reply.set_cookies()
        );
        let echo = reply.echo();
        assert_eq!(echo.upstream(), self.name, "{when}: answered by the wrong upstream");
        assert_eq!(user(&echo).as_deref(), Some(user_name), "{when}: on {}", self.name);
        echo
    }

    /// Asserts this instance refuses `token` on a required route (401) and on an optional one
    /// (a new anonymous session).
    pub async fn assert_refuses(&self, token: &str, when: &str) {
        let reply = self.app(token).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{when}: {} on a required route: {}",
            self.name,
            reply.text()
        );
        let state = Probe::new(self).state(token).await;
        assert_eq!(state, State::Refused, "{when}: {} on an optional route", self.name);
    }

    /// `GET path` on the admin listener: the status.
    pub async fn admin_status(&self, path: &str) -> StatusCode {
        fetch(plain_client().get(self.gw.admin_url(path))).await.status
    }

    /// Polls `/readyz` until it answers `want`; returns how long that took (at most `limit`).
    pub async fn wait_readyz(&self, want: StatusCode, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let status = self.admin_status("/readyz").await;
            if status == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{}: /readyz still {status} after {limit:?}, expected {want}",
                self.name
            );
            tokio::time::sleep(millis(20)).await;
        }
    }

    /// `sessiongate_session_cache_hits_total` of this instance.
    pub async fn cache_hits(&self) -> f64 {
        self.admin()
            .metrics()
            .await
            .value("sessiongate_session_cache_hits_total", &[])
    }

    /// Presents `token` on an optional route until this instance answers it from its cache, so
    /// that a later refusal proves the cache entry was invalidated rather than never made.
    /// Returns what the session looked like.
    pub async fn cache(&self, token: &str) -> State {
        let probe = Probe::new(self);
        let before = self.cache_hits().await;
        let start = Instant::now();
        loop {
            let state = probe.state(token).await;
            assert_ne!(
                state,
                State::Refused,
                "precondition: {} refused a live session",
                self.name
            );
            if self.cache_hits().await > before {
                return state;
            }
            assert!(
                start.elapsed() < secs(5),
                "precondition: {} never served the session from its cache",
                self.name
            );
        }
    }
}

impl Deref for Instance {
    type Target = Site;

    fn deref(&self) -> &Site {
        &self.site
    }
}

/// Instances A and B of the standard site on one shared store.
///
/// Tests wait until both are subscribed to the invalidation channel before they act, so that
/// both trust their caches and a refusal proves an invalidation arrived.
pub struct Pair {
    pub a: Instance,
    pub b: Instance,
}

impl Pair {
    pub async fn start(store: &str) -> Self {
        let a = Instance::start("A", store).await;
        let b = Instance::start("B", store).await;
        Self { a, b }
    }
}

/// What an instance makes of a token on an optional route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The session is live: no new cookie; the upstream saw this id and user.
    Live { id: String, user: Option<String> },
    /// The token is not a session (any more): a fresh anonymous session was issued.
    Refused,
}

impl State {
    /// The session id of a live session.
    pub fn id(&self) -> &str {
        match self {
            State::Live { id, .. } => id,
            State::Refused => panic!("a refused token has no session id"),
        }
    }

    /// The user of a live session (`None`: anonymous).
    pub fn user(&self) -> Option<&str> {
        match self {
            State::Live { user, .. } => user.as_deref(),
            State::Refused => panic!("a refused token has no user"),
        }
    }
}

/// A browser with a warm connection to one instance, for checks against a deadline (no TLS
/// handshake inside the measured window).
pub struct Probe<'a> {
    instance: &'a Instance,
    browser: Browser,
}

impl<'a> Probe<'a> {
    pub fn new(instance: &'a Instance) -> Self {
        Self {
            instance,
            browser: instance.browser(),
        }
    }

    /// Opens the connection (a request to a route without sessions).
    pub async fn warm(self) -> Self {
        let reply = fetch(self.browser.request(Method::GET, "/public/warm")).await;
        assert_eq!(reply.status, StatusCode::OK, "warming up {}", self.instance.name);
        self
    }

    /// `GET /page` (`auth = "optional"`) with `token`: is it a live session?
    pub async fn state(&self, token: &str) -> State {
        let reply = fetch(self.browser.with_token(token).request(Method::GET, "/page")).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{} on an optional route: {}",
            self.instance.name,
            reply.text()
        );
        let echo = reply.echo();
        assert_eq!(echo.upstream(), self.instance.name);
        match reply.session_cookie() {
            None => State::Live {
                id: session_id(&echo).expect("a live session has an X-Session-Id"),
                user: user(&echo),
            },
            Some(cookie) => {
                assert!(!cookie.is_removal() && cookie.value != token, "{}", cookie.raw);
                assert_eq!(user(&echo), None, "a fresh session carries a user");
                State::Refused
            }
        }
    }

    /// Presents each of `tokens` back to back until every one is refused; fails unless each
    /// was refused by a request sent at most `limit` after `since`, or if any was served as
    /// anyone else than before. Returns when the last refusal was sent.
    pub async fn refused_within(&self, tokens: &[&str], since: Instant, limit: Duration, what: &str) -> Duration {
        let mut pending: Vec<(&str, Option<State>)> = tokens.iter().map(|t| (*t, None)).collect();
        let mut served: Vec<Duration> = Vec::new();
        let mut last = Duration::ZERO;
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (token, first) in pending {
                let sent = since.elapsed();
                assert!(
                    sent <= limit,
                    "{what}: {} still served a token {sent:?} after the change (limit {limit:?}); \
                     it answered {} earlier requests as live, at {served:?}",
                    self.instance.name,
                    served.len()
                );
                match self.state(token).await {
                    State::Refused => last = last.max(sent),
                    live => {
                        if let Some(first) = &first {
                            assert_eq!(&live, first, "{what}: the session changed while still served");
                        }
                        served.push(sent);
                        still.push((token, Some(first.unwrap_or(live))));
                    }
                }
            }
            pending = still;
        }
        last
    }
}

/// `hex(SHA-256(token bytes))`: the name the store may know a token by.
pub fn token_hash_hex(token: &str) -> String {
    let parsed = SessionToken::parse(token).unwrap_or_else(|| panic!("not a token: {token}"));
    hex(&parsed.hash().0)
}

/// `hex` of the token's raw 32 bytes: another spelling of the secret itself.
pub fn token_bytes_hex(token: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {token}"));
    hex(&bytes)
}

/// The session hash key of `token` among `keys`: `<prefix>s:{TT}:<hash hex>`.
pub fn session_key<'k>(keys: &'k [String], token: &str) -> Option<&'k str> {
    let suffix = format!("}}:{}", token_hash_hex(token));
    let start = format!("{PREFIX}s:{{");
    keys.iter()
        .map(String::as_str)
        .find(|k| k.starts_with(&start) && k.ends_with(&suffix))
}

/// Asserts `Retry-After` is present and a number of seconds of at least 1.
pub fn assert_retry_after(reply: &Reply, what: &str) {
    let value = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: 503 without Retry-After: {:?}", reply.headers));
    let seconds: u64 = value
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After is not a number of seconds: {value:?}"));
    assert!(seconds >= 1, "{what}: Retry-After: {value}");
}
