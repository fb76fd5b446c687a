//! Configuration: file structs → validation → runtime types.
//!
//! `raw` mirrors the TOML exactly; [`Config::parse`] validates it into the
//! precise runtime types below (`SocketAddr`, `Duration`, `IpNet`, enums), so
//! that code past startup never re-checks or re-defaults anything. Every error
//! names the file, the key and, when it can be found, the line. Secrets (admin
//! token, password hashes) are never echoed in an error.

mod raw;

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A configuration that could not be loaded. Its `Display` is the one line an
/// operator sees: file, key, line and reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}{line}: key `{key}`: {reason}", line = line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: String,
        key: String,
        line: Option<usize>,
        reason: String,
    },
}

/// The smallest `store.page_cache_bytes` accepted: below that redb would
/// re-read the B-tree's branch pages from disk on every miss.
pub const MIN_PAGE_CACHE_BYTES: usize = 1024 * 1024;
/// More worker threads than this is a typo, not a machine.
pub const MAX_WORKERS: usize = 1024;

/// `[server] max_headers` by default: hyper's HTTP/1 parser keeps this many
/// on the stack; any other value makes it allocate them on every request.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// More new sessions per address and minute than this is no limit at all
/// (a million a minute is more than the store commits).
const MAX_NEW_PER_MINUTE: u32 = 60_000_000;
/// A browser sends about 15 header fields; fewer than this would refuse them.
const MIN_HEADERS: usize = 32;
const MAX_HEADERS: usize = 10_000;

/// Who may reach a route without a session, and what happens when they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No session work at all.
    None,
    /// A session is issued and identity forwarded when present; never required.
    Optional,
    /// A logged-in session is required (and membership in `groups`, when set).
    Required,
}

/// What a route does with a state-changing request from another origin
/// (see `cross_origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossOrigin {
    /// Refused with 403 (the default).
    Reject,
    /// Passed on: the upstream checks it, or wants it (a form other sites post to).
    Allow,
}

/// Who may show a route's pages in a frame (see `proxy::framing`), when
/// the upstream does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Pages of this origin only (the default).
    SameOrigin,
    /// Nobody.
    Deny,
    /// Anyone: nothing is added.
    Allow,
}

/// `[upstream_cookies]`: what is added to the upstream's own `Set-Cookie`
/// fields besides `Secure`, which always is (see `proxy::upstream_cookies`).
#[derive(Debug, Clone, Default)]
pub struct UpstreamCookies {
    /// Add `HttpOnly` where absent.
    pub http_only: bool,
    /// Add `SameSite` with this value where absent.
    pub same_site: Option<SameSite>,
}

/// `[cross_origin]`.
#[derive(Debug, Clone, Default)]
pub struct CrossOriginConfig {
    /// Origins whose state-changing requests every `reject` route lets through.
    pub trusted_origins: crate::cross_origin::TrustedOrigins,
}

/// An upstream origin: plain HTTP, host and port, nothing else.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
}

impl Upstream {
    /// The port, or the scheme's default when none is written.
    pub fn port(&self) -> u16 {
        let default = if self.scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        self.authority.port_u16().unwrap_or(default)
    }
}

/// Origins compare as origins (RFC 6454): the host in any case, the
/// default port written or not.
impl PartialEq for Upstream {
    fn eq(&self, other: &Upstream) -> bool {
        self.scheme == other.scheme
            && self.port() == other.port()
            && self.authority.host().eq_ignore_ascii_case(other.authority.host())
    }
}

impl Eq for Upstream {}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

/// A route's upstream servers: one or more, each named once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams(Box<[Upstream]>);

impl Upstreams {
    /// `None` when `all` is empty or names a server twice.
    pub fn new(all: Vec<Upstream>) -> Option<Upstreams> {
        let distinct = all.iter().enumerate().all(|(i, u)| !all[..i].contains(u));
        (!all.is_empty() && distinct).then(|| Upstreams(all.into()))
    }

    pub fn as_slice(&self) -> &[Upstream] {
        &self.0
    }
}

/// How a route with several upstream servers picks one for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// A request with a session goes to the server its session id ranks
    /// first (among those not marked down), so an app that keeps state in
    /// its own memory sees all of a session's requests, before and after
    /// login. Requests without one take turns.
    Sticky,
    /// Every request takes its turn, session or not.
    RoundRobin,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub path_prefix: String,
    /// Lowercased host without port.
    pub host: Option<String>,
    pub upstreams: Upstreams,
    pub balance: Balance,
    pub auth: AuthMode,
    pub groups: Vec<String>,
    pub max_body_bytes: Option<u64>,
    /// Step-up: the user must have signed in within this long, or sign in
    /// again (`auth = "required"` routes only).
    pub max_auth_age: Option<Duration>,
    pub cross_origin: CrossOrigin,
    pub framing: Framing,
    /// The path (and query) each of its servers is asked for by the active
    /// health check; only on routes with several servers.
    pub health_check: Option<http::uri::PathAndQuery>,
    /// The `Host` the checks send, as configured (`host[:port]`); `None`:
    /// the route's `host`, else each server's own `host:port`.
    pub health_check_host: Option<String>,
}

#[cfg(test)]
impl RouteConfig {
    /// For unit tests: `path_prefix` to `servers` (origins), sticky, with
    /// `auth` and every other key at its default.
    pub fn for_tests(path_prefix: &str, servers: &[&str], auth: AuthMode) -> RouteConfig {
        let all = servers
            .iter()
            .map(|s| parse_upstream(s).unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect();
        RouteConfig {
            path_prefix: path_prefix.into(),
            host: None,
            upstreams: Upstreams::new(all).unwrap_or_else(|| panic!("bad list {servers:?}")),
            balance: Balance::Sticky,
            auth,
            groups: Vec::new(),
            max_body_bytes: None,
            max_auth_age: None,
            cross_origin: CrossOrigin::Reject,
            framing: Framing::SameOrigin,
            health_check: None,
            health_check_host: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub http_redirect_listen: Option<SocketAddr>,
    /// The port browsers use for HTTPS, for redirects (default: `listen`'s).
    pub public_https_port: Option<u16>,
    /// One log line per request at `info` (target `sessiongate::access`).
    pub access_log: bool,
    pub trusted_proxies: Vec<IpNet>,
    /// TCP load balancers whose connections begin with a PROXY protocol
    /// header (v1 or v2) declaring the client's address (see
    /// `proxy_protocol`); empty: none do.
    pub proxy_protocol_from: Vec<IpNet>,
    pub upstream_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_header_bytes: usize,
    /// Request header fields (count) → 431 beyond it.
    pub max_headers: usize,
    /// Request target (path and query) bytes → 414 beyond it.
    pub max_uri_bytes: usize,
    /// Header fields (count) of an upstream's HTTP/1.1 response → 502
    /// beyond it. A separate key because the upstream is the operator's own
    /// app: a legacy one that sets many cookies may need more than clients do.
    pub upstream_max_headers: usize,
    pub max_connections: usize,
    /// Single-threaded event loops serving the HTTPS listener, each with its
    /// own upstream pool (see `server`).
    pub workers: std::num::NonZeroUsize,
    pub shutdown_grace: Duration,
    pub upstream_pool_idle_timeout: Duration,
    pub upstream_pool_max_idle_per_host: usize,
    /// How long one of a route's several upstream servers gets no requests
    /// after a connection to it failed (see `proxy::balance`).
    pub upstream_fail_timeout: Duration,
    /// How often the servers of routes with `health_check` are checked,
    /// and how long a check may take (see `proxy::health_check`).
    pub health_check_interval: Duration,
    pub health_check_timeout: Duration,
    /// How many checks in a row must fail to mark a server down, and pass
    /// to bring it back (1 to 10 each).
    pub health_check_fails: u32,
    pub health_check_passes: u32,
    pub tls_handshakes: Handshakes,
    /// CPUs the TLS handshake threads and the embedded store's commit
    /// thread are confined to, each listed once; empty: wherever the process
    /// may run. Listing CPUs that serve no requests keeps their work from
    /// delaying the workers (see `priority`).
    pub background_cpus: Vec<usize>,
    /// Every upstream matches paths case-sensitively, so `/Admin` is not
    /// `/admin` to any of them: routing skips the case-folded reading of a
    /// path (see `routing::Router::route`).
    pub upstream_paths_case_sensitive: bool,
    /// An upstream may serve `/admin.json` as `/admin` (Rails' formats,
    /// Spring MVC's suffix patterns before 5.3): routing also reads a path
    /// without the extension of its last segment (see
    /// `routing::Router::route`). Default true.
    pub upstream_paths_format_suffix: bool,
}

/// Where TLS handshakes run (`[server] tls_handshakes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshakes {
    /// On the worker's `SCHED_IDLE` companion thread while the worker has
    /// kept-alive connections (whose requests would otherwise wait behind
    /// the handshake's half millisecond of CPU), on the worker otherwise
    /// (moving a connection costs more than it saves when nobody waits).
    Auto,
    /// Always on the companion thread: established connections always go
    /// first, at the price of two moves per connection.
    Background,
    /// Always on the worker itself, between requests, as nginx does.
    Inline,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `Strict-Transport-Security` on every response of the HTTPS listener,
    /// replacing an upstream's; `None` with `hsts = false`.
    pub hsts: Option<http::HeaderValue>,
}

/// HSTS preload lists take a site only with a max-age of a year or more
/// (hstspreload.org).
const HSTS_PRELOAD_MIN: Duration = Duration::from_secs(365 * 24 * 3600);

/// TLS towards `https://` upstreams: the client configuration built from
/// `[upstream_tls]`, and the files it came from (all `Debug` shows).
///
/// The configuration is swappable: a reload (SIGHUP, `POST /reload`) puts
/// the one built from the files as they are now in force for new upstream
/// connections, so a renewed client certificate or CA needs no restart.
#[derive(Clone)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
    pub config: Arc<arc_swap::ArcSwap<rustls::ClientConfig>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca", &self.ca)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// The admin bearer token. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<AdminToken>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
}

/// How a session is tied to the client's IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpBinding {
    Exact,
    Subnet { v4: u8, v6: u8 },
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMismatch {
    /// Delete the session server-side: a stolen cookie becomes worthless.
    Revoke,
    /// Treat only the offending request as unauthenticated.
    Reject,
}

#[derive(Debug, Clone)]
pub struct BindingConfig {
    pub ip: IpBinding,
    /// Lowercased header names hashed into the session's fingerprint.
    pub fingerprint_headers: Vec<http::HeaderName>,
    pub on_mismatch: OnMismatch,
}

/// What a new logged-in session does when its user already holds
/// `[session] max_per_user` of them (SECURITY.md rule 9: bounded sessions
/// per user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUserLimit {
    /// End the user's sessions unused the longest, so that the new one fits.
    /// A stolen password can then push the owner out, but never lock them
    /// out; every ended session is logged and counted.
    EndLeastRecent,
    /// Refuse the login (429) until one of the user's sessions ends.
    Refuse,
}

/// The bound on one user's logged-in sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimit {
    /// At least 1.
    pub max: usize,
    pub on_limit: OnUserLimit,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub same_site: SameSite,
    pub persistent: bool,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub max_data_bytes: usize,
    pub per_user: UserLimit,
    /// Anonymous sessions one client address may create per minute (and at
    /// once); at least 1.
    pub new_per_ip_per_minute: u32,
    /// Look every request's session up from scratch, even when its
    /// connection verified the same cookie just before (`session::recent`).
    pub recheck_each_request: bool,
    pub binding: BindingConfig,
}

#[derive(Debug, Clone)]
pub enum StoreKind {
    Memory,
    Embedded {
        path: PathBuf,
        /// redb's page cache ceiling. redb's own default is 1 GiB, which a
        /// large session table fills and keeps: more than the sessions'
        /// moka cache itself at a million sessions.
        page_cache_bytes: usize,
    },
    Redis(RedisConfig),
}

/// A Redis deployment holding the sessions of several gateway instances.
#[derive(Clone)]
pub struct RedisConfig {
    /// One URL (single node) or the seed nodes of a cluster.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// From `password_file`; overrides a password in the URL.
    pub password: Option<String>,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry credentials: show hosts only.
        let hosts: Vec<&str> = self.urls.iter().map(|u| u.rsplit('@').next().unwrap_or(u)).collect();
        f.debug_struct("RedisConfig")
            .field("hosts", &hosts)
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub touch_interval: Duration,
    pub cache_capacity: u64,
    pub sweep_interval: Duration,
}

/// Names of the headers the gateway owns towards the upstream.
#[derive(Debug, Clone)]
pub struct HeaderNames {
    pub user: http::HeaderName,
    pub email: http::HeaderName,
    pub groups: http::HeaderName,
    pub session_id: http::HeaderName,
    pub session_data: http::HeaderName,
    pub session_data_set: http::HeaderName,
}

#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub max_failures: u32,
    pub failure_window: Duration,
    pub max_concurrent: usize,
    /// CPUs the password-hashing threads are confined to, each listed once;
    /// empty: wherever the process may run (see `auth::hasher`).
    pub hash_cpus: Vec<usize>,
}

/// The highest CPU number `[login] hash_cpus` and `[server] background_cpus`
/// accept, plus one: the size of the kernel's `cpu_set_t`, which
/// `sched_setaffinity` takes.
pub const MAX_CPUS: usize = 1024;

/// A user of the built-in login. `password_hash` is an argon2id PHC string.
#[derive(Clone)]
pub struct UserConfig {
    pub name: String,
    pub password_hash: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("email", &self.email)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// `[oidc]`: sign-in through an OpenID Connect provider (authorization
/// code flow with PKCE, a confidential client).
#[derive(Clone)]
pub struct OidcConfig {
    /// Exactly as configured (no trailing `/` added or removed): the ID
    /// token's `iss` and the discovery document's `issuer` must equal it.
    pub issuer: String,
    pub client_id: String,
    /// Read from `client_secret_file` at start (or given inline).
    pub client_secret: String,
    /// Always holds `openid`.
    pub scopes: Vec<String>,
    pub username_claim: String,
    pub email_claim: String,
    pub groups_claim: String,
    /// The label of the login page's button ("Sign in with ...").
    pub name: String,
    /// Bound on each request to the provider, connection included.
    pub timeout: Duration,
    /// Roots for the provider's certificate (`ca`, or the system's store).
    pub tls: Arc<rustls::ClientConfig>,
    /// When set, only accounts with a verified email in one of these
    /// domains (lowercase) may sign in.
    pub allowed_email_domains: Vec<String>,
    /// When set, only members of one of these groups may sign in.
    pub allowed_groups: Vec<String>,
    /// A sign-out of a session the provider made goes on to the provider's
    /// `end_session_endpoint`, ending its session too.
    pub logout_at_provider: bool,
    /// Code exchanges with the provider in flight at once; more callbacks
    /// are answered 503 at once.
    pub max_concurrent: usize,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("username_claim", &self.username_claim)
            .field("email_claim", &self.email_claim)
            .field("groups_claim", &self.groups_claim)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("allowed_email_domains", &self.allowed_email_domains)
            .field("allowed_groups", &self.allowed_groups)
            .field("logout_at_provider", &self.logout_at_provider)
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

/// The validated, runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for messages.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub admin: AdminConfig,
    pub routes: Vec<RouteConfig>,
    /// How `https://` upstreams are spoken to; `None` when no route has one.
    pub upstream_tls: Option<UpstreamTls>,
    pub session: SessionConfig,
    pub store: StoreConfig,
    pub headers: HeaderNames,
    pub login: LoginConfig,
    pub users: Vec<UserConfig>,
    /// Sign-in through an OpenID Connect provider, beside or instead of
    /// `[[users]]`.
    pub oidc: Option<OidcConfig>,
    pub cross_origin: CrossOriginConfig,
    pub upstream_cookies: UpstreamCookies,
}

impl Config {
    /// Reads and validates `path`. Relative paths inside the file resolve
    /// against the file's directory, so a config works from any working dir.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// A warning when routes require a login that nobody can make: no
    /// `[[users]]` and no `[oidc]` (only sessions minted through the admin
    /// API get in). Said by `check` and at start.
    pub fn sign_in_warning(&self) -> Option<&'static str> {
        let required = self.routes.iter().any(|r| r.auth == AuthMode::Required);
        (required && self.users.is_empty() && self.oidc.is_none()).then_some(
            "routes require a login, but there is no [[users]] entry and no [oidc]: \
             nobody can sign in (only sessions minted through the admin API get in)",
        )
    }

    /// Validates `text` as if it had been read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| syntax_error(&file, e))?;
        let v = Validator {
            file,
            text,
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        v.config(raw, path)
    }
}

fn syntax_error(file: &str, e: toml::de::Error) -> ConfigError {
    // toml's message already carries line, column and a caret.
    ConfigError::Syntax {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
    }
}

/// Carries what every validation error needs: the file name and its text (to
/// find the line of a key).
struct Validator<'a> {
    file: String,
    text: &'a str,
    base: PathBuf,
}

impl Validator<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.to_string(),
            line: find_key_line(self.text, key),
            reason: reason.into(),
        }
    }

    fn duration(&self, key: &str, value: &str) -> Result<Duration, ConfigError> {
        let d = humantime::parse_duration(value.trim()).map_err(|e| {
            self.err(
                key,
                format!("`{value}` is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"15m\", \"12h\""),
            )
        })?;
        if d.is_zero() {
            return Err(self.err(key, "must be greater than zero"));
        }
        Ok(d)
    }

    fn addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        value.parse().map_err(|_| {
            self.err(
                key,
                format!("`{value}` is not a socket address like \"0.0.0.0:8443\" or \"[::1]:8443\""),
            )
        })
    }

    fn path(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// A list of CPU numbers: each below [`MAX_CPUS`], none twice. Whether
    /// the machine has them is found out when a thread is moved there.
    fn cpus(&self, key: &str, cpus: &[usize]) -> Result<Vec<usize>, ConfigError> {
        for (i, &cpu) in cpus.iter().enumerate() {
            if cpu >= MAX_CPUS {
                return Err(self.err(key, format!("CPU {cpu} is out of range (0-{})", MAX_CPUS - 1)));
            }
            if cpus[..i].contains(&cpu) {
                return Err(self.err(key, format!("CPU {cpu} is listed twice")));
            }
        }
        Ok(cpus.to_vec())
    }

    fn header_name(&self, key: &str, value: &str) -> Result<http::HeaderName, ConfigError> {
        http::HeaderName::from_bytes(value.as_bytes())
            .map_err(|_| self.err(key, format!("`{value}` is not a valid header name")))
    }

    fn config(&self, raw: raw::RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let server = self.server(&raw.server)?;
        let tls = self.tls(&raw.tls)?;
        let admin = self.admin(&raw.admin)?;
        if raw.routes.is_empty() {
            return Err(self.err("routes", "at least one [[routes]] entry is required"));
        }
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        if !server.upstream_paths_case_sensitive {
            self.no_case_twins(&routes)?;
        }
        if server.upstream_paths_format_suffix {
            self.no_format_suffixes(&routes)?;
        }
        self.no_slash_twins(&routes)?;
        let upstream_tls = self.upstream_tls(&raw.upstream_tls, &routes)?;
        let session = self.session(&raw.session)?;
        let store = self.store(&raw.store)?;
        let headers = self.headers(&raw.headers)?;
        let login = LoginConfig {
            max_failures: raw.login.max_failures.max(1),
            failure_window: self.duration("login.failure_window", &raw.login.failure_window)?,
            max_concurrent: raw.login.max_concurrent.max(1),
            hash_cpus: self.cpus("login.hash_cpus", &raw.login.hash_cpus)?,
        };
        let users = raw
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| self.user(i, u))
            .collect::<Result<Vec<_>, _>>()?;
        let oidc = raw.oidc.as_ref().map(|o| self.oidc(o)).transpose()?;
        let cross_origin = self.cross_origin(&raw.cross_origin)?;
        let upstream_cookies = UpstreamCookies {
            http_only: raw.upstream_cookies.http_only,
            same_site: raw
                .upstream_cookies
                .same_site
                .as_deref()
                .map(|v| self.same_site("upstream_cookies.same_site", v))
                .transpose()?,
        };
        Ok(Config {
            source: path.to_path_buf(),
            server,
            tls,
            admin,
            routes,
            upstream_tls,
            session,
            store,
            headers,
            login,
            users,
            oidc,
            cross_origin,
            upstream_cookies,
        })
    }

    fn same_site(&self, key: &str, value: &str) -> Result<SameSite, ConfigError> {
        match value.to_ascii_lowercase().as_str() {
            "lax" => Ok(SameSite::Lax),
            "strict" => Ok(SameSite::Strict),
            other => Err(self.err(key, format!("`{other}` is not \"lax\" or \"strict\""))),
        }
    }

    fn cross_origin(&self, c: &raw::RawCrossOrigin) -> Result<CrossOriginConfig, ConfigError> {
        let origins = c
            .trusted_origins
            .iter()
            .map(|o| {
                crate::cross_origin::normalize(o).ok_or_else(|| {
                    self.err(
                        "cross_origin.trusted_origins",
                        format!(
                            "`{o}` is not an origin: write `https://host` or `https://host:port`, nothing after it"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CrossOriginConfig {
            trusted_origins: crate::cross_origin::TrustedOrigins::new(origins),
        })
    }

    /// `[oidc]`. The provider itself is asked nothing here: a provider that
    /// is down must not keep the gateway from serving.
    fn oidc(&self, o: &raw::RawOidc) -> Result<OidcConfig, ConfigError> {
        let issuer = self.oidc_issuer(&o.issuer)?;
        if o.client_id.is_empty() || o.client_id.chars().any(char::is_control) {
            return Err(self.err("oidc.client_id", "must be set"));
        }
        let client_secret = self.oidc_secret(o)?;
        if !o.scopes.iter().any(|s| s == "openid") {
            return Err(self.err("oidc.scopes", "must include \"openid\""));
        }
        if let Some(bad) = o
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.contains(|c: char| c == ' ' || c.is_control()))
        {
            return Err(self.err("oidc.scopes", format!("`{bad}` is not a scope")));
        }
        for (key, claim) in [
            ("oidc.username_claim", &o.username_claim),
            ("oidc.email_claim", &o.email_claim),
            ("oidc.groups_claim", &o.groups_claim),
        ] {
            if claim.is_empty() {
                return Err(self.err(key, "must name a claim"));
            }
        }
        let allowed_email_domains = self.oidc_admission(o)?;
        let ca = o.ca.as_deref().map(|c| self.path(c));
        let tls = crate::tls::client_config("oidc", ca.as_deref(), None).map_err(|e| self.err(&e.key, e.reason))?;
        Ok(OidcConfig {
            issuer,
            client_id: o.client_id.clone(),
            client_secret,
            scopes: o.scopes.clone(),
            username_claim: o.username_claim.clone(),
            email_claim: o.email_claim.clone(),
            groups_claim: o.groups_claim.clone(),
            name: o.name.clone(),
            timeout: self.duration("oidc.timeout", &o.timeout)?,
            tls,
            allowed_email_domains,
            allowed_groups: o.allowed_groups.clone(),
            logout_at_provider: o.logout_at_provider,
            max_concurrent: o.max_concurrent.max(1),
        })
    }

    /// An `https://` URL without query or fragment, kept as written.
    fn oidc_issuer(&self, issuer: &str) -> Result<String, ConfigError> {
        let issuer = issuer.trim();
        let uri: http::Uri = issuer
            .parse()
            .map_err(|e| self.err("oidc.issuer", format!("`{issuer}` is not a URL ({e})")))?;
        if uri.scheme() != Some(&http::uri::Scheme::HTTPS) || uri.host().is_none_or(str::is_empty) {
            return Err(self.err("oidc.issuer", format!("`{issuer}` must be an https:// URL")));
        }
        if uri.query().is_some() || issuer.contains('#') {
            return Err(self.err("oidc.issuer", "must have no query or fragment"));
        }
        Ok(issuer.to_string())
    }

    /// `client_secret`, or the contents of `client_secret_file` without a
    /// final newline: exactly one, not empty.
    fn oidc_secret(&self, o: &raw::RawOidc) -> Result<String, ConfigError> {
        let secret = match (&o.client_secret, &o.client_secret_file) {
            (Some(s), None) => s.clone(),
            (None, Some(f)) => {
                let path = self.path(f);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.err(
                        "oidc.client_secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                text.trim_end_matches(['\r', '\n']).to_string()
            }
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "oidc.client_secret",
                    "set client_secret or client_secret_file, not both",
                ))
            }
            (None, None) => {
                return Err(self.err(
                    "oidc",
                    "needs client_secret_file (or client_secret): the client's secret at the provider",
                ))
            }
        };
        if secret.is_empty() {
            return Err(self.err("oidc.client_secret_file", "the secret is empty"));
        }
        Ok(secret)
    }

    /// Who may sign in, which is never left to chance (a provider open to
    /// the world, such as Google, would sign in anyone): the allowed email
    /// domains (lowercase), or groups, or `allow_any_account`.
    fn oidc_admission(&self, o: &raw::RawOidc) -> Result<Vec<String>, ConfigError> {
        let mut domains = Vec::new();
        for d in &o.allowed_email_domains {
            let d = d.trim().trim_start_matches('@').to_ascii_lowercase();
            if d.is_empty() || d.contains(['@', ' ', '/']) || !d.contains('.') {
                return Err(self.err(
                    "oidc.allowed_email_domains",
                    format!("`{d}` is not a domain like \"example.com\""),
                ));
            }
            domains.push(d);
        }
        let restricted = !domains.is_empty() || !o.allowed_groups.is_empty();
        if restricted && o.allow_any_account {
            return Err(self.err(
                "oidc.allow_any_account",
                "contradicts allowed_email_domains or allowed_groups; keep one",
            ));
        }
        if !restricted && !o.allow_any_account {
            return Err(self.err(
                "oidc",
                "say who may sign in: allowed_email_domains, allowed_groups, or allow_any_account = true \
                 (only for a provider that holds nobody but your users, such as your own Keycloak realm)",
            ));
        }
        Ok(domains)
    }

    /// `[upstream_tls]`, built when a route's upstream is `https://`.
    fn upstream_tls(
        &self,
        t: &raw::RawUpstreamTls,
        routes: &[RouteConfig],
    ) -> Result<Option<UpstreamTls>, ConfigError> {
        let client = match (&t.client_cert, &t.client_key) {
            (Some(c), Some(k)) => Some((self.path(c), self.path(k))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.err(
                    "upstream_tls.client_cert",
                    "needs client_key, the certificate's private key",
                ))
            }
            (None, Some(_)) => return Err(self.err("upstream_tls.client_key", "needs client_cert, its certificate")),
        };
        let https = |u: &Upstream| u.scheme == http::uri::Scheme::HTTPS;
        if !routes.iter().any(|r| r.upstreams.as_slice().iter().any(https)) {
            return Ok(None);
        }
        let ca = t.ca.as_deref().map(|c| self.path(c));
        let client_paths = client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let config = crate::tls::client_config("upstream_tls", ca.as_deref(), client_paths)
            .map_err(|e| self.err(&e.key, e.reason))?;
        Ok(Some(UpstreamTls {
            ca,
            client,
            config: Arc::new(arc_swap::ArcSwap::new(config)),
        }))
    }

    /// A list of CIDRs (or bare addresses) under `key`.
    fn cidrs(&self, key: &str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
        list.iter()
            .map(|c| {
                parse_cidr(c)
                    .ok_or_else(|| self.err(key, format!("`{c}` is not a CIDR like \"10.0.0.0/8\" or an IP address")))
            })
            .collect()
    }

    fn server(&self, s: &raw::RawServer) -> Result<ServerConfig, ConfigError> {
        let trusted_proxies = self.cidrs("server.trusted_proxies", &s.trusted_proxies)?;
        let proxy_protocol_from = self.cidrs("server.proxy_protocol_from", &s.proxy_protocol_from)?;
        if s.max_header_bytes < 1024 {
            return Err(self.err("server.max_header_bytes", "must be at least 1024"));
        }
        if s.max_uri_bytes < 256 {
            return Err(self.err("server.max_uri_bytes", "must be at least 256"));
        }
        if !(MIN_HEADERS..=MAX_HEADERS).contains(&s.max_headers) {
            return Err(self.err(
                "server.max_headers",
                format!("must be between {MIN_HEADERS} and {MAX_HEADERS}"),
            ));
        }
        if !(MIN_HEADERS..=MAX_HEADERS).contains(&s.upstream_max_headers) {
            return Err(self.err(
                "server.upstream_max_headers",
                format!("must be between {MIN_HEADERS} and {MAX_HEADERS}"),
            ));
        }
        if s.max_connections == 0 {
            return Err(self.err("server.max_connections", "must be at least 1"));
        }
        let workers = match s.workers {
            None => std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN),
            Some(n) if n > MAX_WORKERS => {
                return Err(self.err("server.workers", format!("must be at most {MAX_WORKERS}")))
            }
            Some(n) => {
                std::num::NonZeroUsize::new(n).ok_or_else(|| self.err("server.workers", "must be at least 1"))?
            }
        };
        Ok(ServerConfig {
            listen: self.addr("server.listen", &s.listen)?,
            http_redirect_listen: s
                .http_redirect_listen
                .as_deref()
                .map(|a| self.addr("server.http_redirect_listen", a))
                .transpose()?,
            public_https_port: s.public_https_port,
            access_log: s.access_log,
            trusted_proxies,
            proxy_protocol_from,
            upstream_timeout: self.duration("server.upstream_timeout", &s.upstream_timeout)?,
            upstream_connect_timeout: self.duration("server.upstream_connect_timeout", &s.upstream_connect_timeout)?,
            tls_handshake_timeout: self.duration("server.tls_handshake_timeout", &s.tls_handshake_timeout)?,
            header_read_timeout: self.duration("server.header_read_timeout", &s.header_read_timeout)?,
            keepalive_timeout: self.duration("server.keepalive_timeout", &s.keepalive_timeout)?,
            max_header_bytes: s.max_header_bytes,
            max_headers: s.max_headers,
            max_uri_bytes: s.max_uri_bytes,
            upstream_max_headers: s.upstream_max_headers,
            max_connections: s.max_connections,
            workers,
            shutdown_grace: self.duration("server.shutdown_grace", &s.shutdown_grace)?,
            upstream_pool_idle_timeout: self
                .duration("server.upstream_pool_idle_timeout", &s.upstream_pool_idle_timeout)?,
            upstream_pool_max_idle_per_host: s.upstream_pool_max_idle_per_host,
            upstream_fail_timeout: self.duration("server.upstream_fail_timeout", &s.upstream_fail_timeout)?,
            // Never zero: `duration` refuses it.
            health_check_interval: self.duration("server.health_check_interval", &s.health_check_interval)?,
            health_check_timeout: self.health_check_timeout(s)?,
            health_check_fails: self.check_run("server.health_check_fails", s.health_check_fails)?,
            health_check_passes: self.check_run("server.health_check_passes", s.health_check_passes)?,
            tls_handshakes: match s.tls_handshakes.to_ascii_lowercase().as_str() {
                "auto" => Handshakes::Auto,
                "background" => Handshakes::Background,
                "inline" => Handshakes::Inline,
                other => {
                    return Err(self.err(
                        "server.tls_handshakes",
                        format!("`{other}` is not \"auto\", \"background\" or \"inline\""),
                    ))
                }
            },
            background_cpus: self.cpus("server.background_cpus", &s.background_cpus)?,
            upstream_paths_case_sensitive: s.upstream_paths_case_sensitive,
            upstream_paths_format_suffix: s.upstream_paths_format_suffix,
        })
    }

    fn tls(&self, t: &raw::RawTls) -> Result<TlsConfig, ConfigError> {
        let cert = self.path(&t.cert);
        let key = self.path(&t.key);
        for (k, p) in [("tls.cert", &cert), ("tls.key", &key)] {
            if let Err(e) = std::fs::File::open(p) {
                return Err(self.err(k, format!("cannot read {}: {e}", p.display())));
            }
        }
        Ok(TlsConfig {
            cert,
            key,
            hsts: self.hsts(t)?,
        })
    }

    /// The `Strict-Transport-Security` value. The gateway owns the site's
    /// TLS, so it owns this promise too: a legacy upstream rarely makes it.
    fn hsts(&self, t: &raw::RawTls) -> Result<Option<http::HeaderValue>, ConfigError> {
        if !t.hsts {
            return Ok(None);
        }
        // Zero is allowed: `max-age=0` tells browsers to forget the promise.
        let max_age = humantime::parse_duration(t.hsts_max_age.trim()).map_err(|e| {
            self.err(
                "tls.hsts_max_age",
                format!("`{}` is not a duration ({e}); write e.g. \"365d\"", t.hsts_max_age),
            )
        })?;
        if t.hsts_preload && !(t.hsts_include_subdomains && max_age >= HSTS_PRELOAD_MIN) {
            return Err(self.err(
                "tls.hsts_preload",
                "preload lists need hsts_include_subdomains = true and hsts_max_age of at least \"365d\"",
            ));
        }
        let mut value = format!("max-age={}", max_age.as_secs());
        if t.hsts_include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if t.hsts_preload {
            value.push_str("; preload");
        }
        // Leaked once per load of the file (a start, a reload): each
        // response's copy is then a pointer copy, not a reference count
        // that every worker's CPU would write.
        Ok(Some(http::HeaderValue::from_static(Box::leak(value.into_boxed_str()))))
    }

    fn admin(&self, a: &raw::RawAdmin) -> Result<AdminConfig, ConfigError> {
        let token = match (&a.token, &a.token_file) {
            (Some(_), Some(_)) => {
                return Err(self.err("admin.token_file", "set either `token` or `token_file`, not both"))
            }
            (Some(t), None) => Some(t.trim().to_string()),
            (None, Some(f)) => {
                let p = self.path(f);
                let t = std::fs::read_to_string(&p)
                    .map_err(|e| self.err("admin.token_file", format!("cannot read {}: {e}", p.display())))?;
                Some(t.trim().to_string())
            }
            (None, None) => None,
        };
        if let Some(t) = &token {
            if t.len() < 16 {
                return Err(self.err("admin.token", "must be at least 16 characters"));
            }
        }
        Ok(AdminConfig {
            listen: self.addr("admin.listen", &a.listen)?,
            token: token.map(AdminToken),
        })
    }

    /// Routing reads a path case-folded as well as literally and refuses a
    /// path whose readings pick different routes, so two prefixes that
    /// differ only in case would make every path below them refused.
    fn no_case_twins(&self, routes: &[RouteConfig]) -> Result<(), ConfigError> {
        for (j, later) in routes.iter().enumerate() {
            let twin = routes[..j].iter().position(|earlier| {
                earlier.host == later.host
                    && earlier.path_prefix != later.path_prefix
                    && earlier.path_prefix.eq_ignore_ascii_case(&later.path_prefix)
            });
            if let Some(i) = twin {
                return Err(self.err(
                    &format!("routes[{j}].path_prefix"),
                    format!(
                        "differs from routes[{i}].path_prefix only in case; set \
                         [server] upstream_paths_case_sensitive = true if every upstream tells them apart"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A path that is a prefix without its final `/` is redirected to the
    /// prefix with it (`routing::PathError::MissingSlash`), and everything
    /// below goes to the longer prefix, so `/admin` beside `/admin/` (same
    /// host) would serve nothing.
    fn no_slash_twins(&self, routes: &[RouteConfig]) -> Result<(), ConfigError> {
        for (j, later) in routes.iter().enumerate() {
            let twin = routes[..j].iter().position(|earlier| {
                let (short, long) = if earlier.path_prefix.len() < later.path_prefix.len() {
                    (&earlier.path_prefix, &later.path_prefix)
                } else {
                    (&later.path_prefix, &earlier.path_prefix)
                };
                earlier.host == later.host && long.strip_suffix('/') == Some(short.as_str())
            });
            if let Some(i) = twin {
                return Err(self.err(
                    &format!("routes[{j}].path_prefix"),
                    format!(
                        "differs from routes[{i}].path_prefix only by a final `/`; `{}` is redirected to \
                         the prefix with the slash, so keep one of them",
                        routes[j].path_prefix.trim_end_matches('/')
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Routing reads a path without the extension of its last segment as
    /// well, so a prefix whose last segment has one (`/login.php`) would
    /// make every request for it refused: its stem routes elsewhere.
    fn no_format_suffixes(&self, routes: &[RouteConfig]) -> Result<(), ConfigError> {
        match routes
            .iter()
            .position(|r| crate::routing::format_stem(&r.path_prefix).is_some())
        {
            Some(i) => Err(self.err(
                &format!("routes[{i}].path_prefix"),
                format!(
                    "`{}`: upstreams that read a format suffix (Rails, Spring MVC before 5.3) serve it \
                     without its extension, so requests for it would be refused; set [server] \
                     upstream_paths_format_suffix = false if no upstream does",
                    routes[i].path_prefix
                ),
            )),
            None => Ok(()),
        }
    }

    /// A route's `upstream`: one origin or a list of distinct ones.
    fn upstreams(&self, key: &str, raw: &raw::RawUpstreams) -> Result<Upstreams, ConfigError> {
        let listed = match raw {
            raw::RawUpstreams::One(one) => std::slice::from_ref(one),
            raw::RawUpstreams::Many(many) => many.as_slice(),
        };
        let most = crate::proxy::balance::MAX_SERVERS;
        if listed.len() > most {
            return Err(self.err(
                key,
                format!("lists {} upstreams; a route takes at most {most}", listed.len()),
            ));
        }
        let mut all = Vec::with_capacity(listed.len());
        for origin in listed {
            let upstream = parse_upstream(origin).map_err(|reason| self.err(key, format!("`{origin}`: {reason}")))?;
            if all.contains(&upstream) {
                return Err(self.err(key, format!("`{origin}` is listed twice")));
            }
            all.push(upstream);
        }
        Upstreams::new(all).ok_or_else(|| self.err(key, "the list is empty: name at least one upstream"))
    }

    fn route(&self, i: usize, r: &raw::RawRoute) -> Result<RouteConfig, ConfigError> {
        let key = |k: &str| format!("routes[{i}].{k}");
        if !r.path_prefix.starts_with('/') {
            return Err(self.err(&key("path_prefix"), "must start with `/`"));
        }
        if crate::routing::normalize_path(&r.path_prefix).as_deref() != Ok(r.path_prefix.as_str()) {
            return Err(self.err(
                &key("path_prefix"),
                "must be a normalised path (no `.`/`..` segments, `//`, `%` escapes or `\\`)",
            ));
        }
        if crate::routing::has_reading_marks(&r.path_prefix) {
            return Err(self.err(
                &key("path_prefix"),
                "must not contain `;`, `%2F` or `%3B`: upstreams read them in different ways",
            ));
        }
        if crate::routing::has_alias_marks(&r.path_prefix) {
            return Err(self.err(
                &key("path_prefix"),
                "no segment may end in `.` or `%20`: Windows upstreams drop them, so every path below \
                 would be refused",
            ));
        }
        let upstreams = self.upstreams(&key("upstream"), &r.upstream)?;
        let balance = match r.balance.as_str() {
            "sticky" => Balance::Sticky,
            "round-robin" => Balance::RoundRobin,
            other => {
                return Err(self.err(
                    &key("balance"),
                    format!("`{other}` is not \"sticky\" or \"round-robin\""),
                ))
            }
        };
        let auth = match r.auth.as_str() {
            "none" => AuthMode::None,
            "optional" => AuthMode::Optional,
            "required" => AuthMode::Required,
            other => {
                return Err(self.err(
                    &key("auth"),
                    format!("`{other}` is not one of \"none\", \"optional\", \"required\""),
                ))
            }
        };
        if !r.groups.is_empty() && auth != AuthMode::Required {
            return Err(self.err(&key("groups"), "groups only apply to routes with auth = \"required\""));
        }
        let max_auth_age = match &r.max_auth_age {
            Some(_) if auth != AuthMode::Required => {
                return Err(self.err(
                    &key("max_auth_age"),
                    "max_auth_age only applies to routes with auth = \"required\"",
                ))
            }
            Some(age) => Some(self.duration(&key("max_auth_age"), age)?),
            None => None,
        };
        let cross_origin = match r.cross_origin.as_str() {
            "reject" => CrossOrigin::Reject,
            "allow" => CrossOrigin::Allow,
            other => {
                return Err(self.err(
                    &key("cross_origin"),
                    format!("`{other}` is not \"reject\" or \"allow\""),
                ))
            }
        };
        let framing = match r.framing.as_str() {
            "same-origin" => Framing::SameOrigin,
            "deny" => Framing::Deny,
            "allow" => Framing::Allow,
            other => {
                return Err(self.err(
                    &key("framing"),
                    format!("`{other}` is not one of \"same-origin\", \"deny\", \"allow\""),
                ))
            }
        };
        let host = match &r.host {
            Some(h) if h.is_empty() || h.contains(['/', ' ', ':']) => {
                return Err(self.err(
                    &key("host"),
                    format!("`{h}` is not a host name (no port, scheme or path)"),
                ))
            }
            Some(h) if h.ends_with('.') => {
                return Err(self.err(
                    &key("host"),
                    format!("`{h}`: write the name without its final dot (requests naming it with one match it)"),
                ))
            }
            Some(h) => Some(h.to_ascii_lowercase()),
            None => None,
        };
        let health_check = self.health_check(&key("health_check"), r, &upstreams)?;
        let health_check_host = match &r.health_check_host {
            Some(_) if health_check.is_none() => {
                return Err(self.err(&key("health_check_host"), "only applies to routes with health_check"))
            }
            Some(h) if h.parse::<http::uri::Authority>().is_err() || h.contains('@') || h.is_empty() => {
                return Err(self.err(
                    &key("health_check_host"),
                    format!("`{h}` is not a host name, with a port or without"),
                ))
            }
            other => other.clone(),
        };
        Ok(RouteConfig {
            path_prefix: r.path_prefix.clone(),
            host,
            upstreams,
            balance,
            auth,
            groups: r.groups.clone(),
            max_body_bytes: r.max_body_bytes,
            max_auth_age,
            cross_origin,
            framing,
            health_check,
            health_check_host,
        })
    }

    /// A route's `health_check`: a path, and only where a server can be
    /// left out (a route's only upstream always gets its requests).
    fn health_check(
        &self,
        key: &str,
        r: &raw::RawRoute,
        upstreams: &Upstreams,
    ) -> Result<Option<http::uri::PathAndQuery>, ConfigError> {
        let Some(path) = &r.health_check else {
            return Ok(None);
        };
        if upstreams.as_slice().len() < 2 {
            return Err(self.err(
                key,
                "needs several upstream servers: a route's only upstream gets every request whatever a check says",
            ));
        }
        match path.parse::<http::uri::PathAndQuery>() {
            Ok(pq) if path.starts_with('/') => Ok(Some(pq)),
            _ => Err(self.err(
                key,
                format!("`{path}` is not a path starting with `/` (a query may follow)"),
            )),
        }
    }

    /// A run of check results that changes a verdict: 1 to 10.
    fn check_run(&self, key: &str, n: u32) -> Result<u32, ConfigError> {
        if !(1..=10).contains(&n) {
            return Err(self.err(key, format!("{n} is not between 1 and 10")));
        }
        Ok(n)
    }

    /// `health_check_timeout`, at most `health_check_interval`: checks of
    /// one server never overlap.
    fn health_check_timeout(&self, s: &raw::RawServer) -> Result<Duration, ConfigError> {
        let timeout = self.duration("server.health_check_timeout", &s.health_check_timeout)?;
        let interval = self.duration("server.health_check_interval", &s.health_check_interval)?;
        if timeout > interval {
            return Err(self.err(
                "server.health_check_timeout",
                format!("must not exceed health_check_interval ({})", s.health_check_interval),
            ));
        }
        Ok(timeout)
    }

    fn session(&self, s: &raw::RawSession) -> Result<SessionConfig, ConfigError> {
        let same_site = self.same_site("session.same_site", &s.same_site)?;
        if !s.cookie_name.starts_with("__Host-") {
            return Err(self.err(
                "session.cookie_name",
                "must start with `__Host-` (the prefix makes browsers refuse Domain and non-Secure copies)",
            ));
        }
        if s.cookie_name.len() <= 7
            || !s
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.err(
                "session.cookie_name",
                "must be a cookie token of letters, digits, `-`, `_` or `.`",
            ));
        }
        let b = &s.binding;
        let ip = match b.ip.as_str() {
            "exact" => IpBinding::Exact,
            "off" => IpBinding::Off,
            "subnet" => {
                if b.ipv4_prefix == 0 || b.ipv4_prefix > 32 {
                    return Err(self.err("session.binding.ipv4_prefix", "must be between 1 and 32"));
                }
                if b.ipv6_prefix == 0 || b.ipv6_prefix > 128 {
                    return Err(self.err("session.binding.ipv6_prefix", "must be between 1 and 128"));
                }
                IpBinding::Subnet {
                    v4: b.ipv4_prefix,
                    v6: b.ipv6_prefix,
                }
            }
            other => {
                return Err(self.err(
                    "session.binding.ip",
                    format!("`{other}` is not one of \"exact\", \"subnet\", \"off\""),
                ))
            }
        };
        let on_mismatch = match b.on_mismatch.as_str() {
            "revoke" => OnMismatch::Revoke,
            "reject" => OnMismatch::Reject,
            other => {
                return Err(self.err(
                    "session.binding.on_mismatch",
                    format!("`{other}` is not \"revoke\" or \"reject\""),
                ))
            }
        };
        let fingerprint_headers = b
            .fingerprint_headers
            .iter()
            .map(|h| self.header_name("session.binding.fingerprint_headers", h))
            .collect::<Result<Vec<_>, _>>()?;
        let per_user = self.user_limit(s)?;
        let new_per_ip_per_minute = match u32::try_from(s.new_per_ip_per_minute) {
            Ok(n) if (1..=MAX_NEW_PER_MINUTE).contains(&n) => n,
            _ => {
                return Err(self.err(
                    "session.new_per_ip_per_minute",
                    format!("must be between 1 and {MAX_NEW_PER_MINUTE}"),
                ))
            }
        };
        let idle_timeout = self.duration("session.idle_timeout", &s.idle_timeout)?;
        let absolute_timeout = self.duration("session.absolute_timeout", &s.absolute_timeout)?;
        Ok(SessionConfig {
            cookie_name: s.cookie_name.clone(),
            same_site,
            persistent: s.persistent,
            idle_timeout,
            absolute_timeout,
            max_data_bytes: s.max_data_bytes,
            per_user,
            new_per_ip_per_minute,
            recheck_each_request: s.recheck_each_request,
            binding: BindingConfig {
                ip,
                fingerprint_headers,
                on_mismatch,
            },
        })
    }

    fn user_limit(&self, s: &raw::RawSession) -> Result<UserLimit, ConfigError> {
        let max = match usize::try_from(s.max_per_user) {
            Ok(n) if n >= 1 => n,
            _ => return Err(self.err("session.max_per_user", "must be at least 1")),
        };
        let on_limit = match s.on_user_limit.as_str() {
            "end_least_recent" => OnUserLimit::EndLeastRecent,
            "refuse" => OnUserLimit::Refuse,
            other => {
                return Err(self.err(
                    "session.on_user_limit",
                    format!("`{other}` is not \"end_least_recent\" or \"refuse\""),
                ))
            }
        };
        Ok(UserLimit { max, on_limit })
    }

    fn store(&self, s: &raw::RawStore) -> Result<StoreConfig, ConfigError> {
        let kind = match s.kind.as_str() {
            "memory" => StoreKind::Memory,
            "embedded" => StoreKind::Embedded {
                path: self.path(&s.path),
                page_cache_bytes: self.page_cache(s.page_cache_bytes)?,
            },
            "redis" => StoreKind::Redis(self.redis(s)?),
            other => {
                return Err(self.err(
                    "store.kind",
                    format!("`{other}` is not \"embedded\", \"memory\" or \"redis\""),
                ))
            }
        };
        if s.cache_capacity == 0 {
            return Err(self.err("store.cache_capacity", "must be at least 1"));
        }
        Ok(StoreConfig {
            kind,
            touch_interval: self.duration("store.touch_interval", &s.touch_interval)?,
            cache_capacity: s.cache_capacity,
            sweep_interval: self.duration("store.sweep_interval", &s.sweep_interval)?,
        })
    }

    fn page_cache(&self, bytes: u64) -> Result<usize, ConfigError> {
        match usize::try_from(bytes) {
            Ok(b) if b >= MIN_PAGE_CACHE_BYTES => Ok(b),
            _ => Err(self.err(
                "store.page_cache_bytes",
                format!("must be at least {MIN_PAGE_CACHE_BYTES} (1 MiB) and fit in memory"),
            )),
        }
    }

    fn redis(&self, s: &raw::RawStore) -> Result<RedisConfig, ConfigError> {
        let (key, urls) = match (&s.url, s.nodes.is_empty()) {
            (Some(_), false) => return Err(self.err("store.nodes", "set either `url` or `nodes`, not both")),
            (Some(u), true) => ("store.url", vec![u.clone()]),
            (None, false) => ("store.nodes", s.nodes.clone()),
            (None, true) => {
                return Err(self.err("store.url", "kind = \"redis\" needs `url` (or `nodes` for a cluster)"))
            }
        };
        for u in &urls {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                let shown = u.rsplit('@').next().unwrap_or(u);
                return Err(self.err(key, format!("`{shown}` must start with redis:// or rediss://")));
            }
        }
        let password = match &s.password_file {
            Some(f) => {
                let p = self.path(f);
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| self.err("store.password_file", format!("cannot read {}: {e}", p.display())))?;
                Some(text.trim().to_string())
            }
            None => None,
        };
        if s.key_prefix.is_empty() || s.key_prefix.contains(['{', '}']) {
            return Err(self.err(
                "store.key_prefix",
                "must be non-empty and contain no `{` or `}` (hash tags are ours)",
            ));
        }
        Ok(RedisConfig {
            cluster: s.cluster || !s.nodes.is_empty(),
            urls,
            password,
            key_prefix: s.key_prefix.clone(),
            connect_timeout: self.duration("store.connect_timeout", &s.connect_timeout)?,
            response_timeout: self.duration("store.response_timeout", &s.response_timeout)?,
        })
    }

    fn headers(&self, h: &raw::RawHeaders) -> Result<HeaderNames, ConfigError> {
        Ok(HeaderNames {
            user: self.header_name("headers.user", &h.user)?,
            email: self.header_name("headers.email", &h.email)?,
            groups: self.header_name("headers.groups", &h.groups)?,
            session_id: self.header_name("headers.session_id", &h.session_id)?,
            session_data: self.header_name("headers.session_data", &h.session_data)?,
            session_data_set: self.header_name("headers.session_data_set", &h.session_data_set)?,
        })
    }

    fn user(&self, i: usize, u: &raw::RawUser) -> Result<UserConfig, ConfigError> {
        let key = |k: &str| format!("users[{i}].{k}");
        if u.name.is_empty() || u.name.len() > 256 || u.name.chars().any(char::is_control) {
            return Err(self.err(&key("name"), "must be 1 to 256 printable characters"));
        }
        crate::auth::check_phc(&u.password_hash).map_err(|reason| self.err(&key("password_hash"), reason))?;
        Ok(UserConfig {
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            email: u.email.clone(),
            groups: u.groups.clone(),
        })
    }
}

/// Accepts `10.0.0.0/8`, `::1/128` or a bare address (as a host route).
fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

/// An upstream origin from `http://host:port` or `https://host:port`.
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("not a URL ({e})"))?;
    let scheme = uri.scheme().cloned().ok_or("must start with http://")?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err("must start with http:// or https://".into());
    }
    let authority = uri.authority().cloned().ok_or("must name a host")?;
    if authority.as_str().contains('@') {
        return Err("must not contain credentials".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must be an origin (`http://host:port` or `https://host:port`) without a path or query".into());
    }
    Ok(Upstream { scheme, authority })
}

/// Finds the 1-based line of a dotted key like `server.listen` or
/// `routes[1].upstream` by walking the TOML text's table headers. Best effort:
/// used only to point the operator at the right line.
pub fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let (table, index, leaf) = split_key(key);
    let mut current = String::new();
    let mut array_index: Option<usize> = None;
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            current = h.trim().to_string();
            let c = counts.entry(current.clone()).or_insert(0);
            array_index = Some(*c);
            *c += 1;
            if current == table && index == array_index && leaf.is_none() {
                return Some(n + 1);
            }
            continue;
        }
        if let Some(h) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = h.trim().to_string();
            array_index = None;
            if current == table && leaf.is_none() {
                return Some(n + 1);
            }
            continue;
        }
        let Some(leaf) = leaf else { continue };
        if current == table && array_index == index {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().trim_matches('"') == leaf {
                    return Some(n + 1);
                }
            }
        }
    }
    None
}

/// `routes[2].upstream` → ("routes", Some(2), Some("upstream")); `server.listen`
/// → ("server", None, Some("listen")); `session.binding.ip` → ("session.binding", None, Some("ip")).
fn split_key(key: &str) -> (String, Option<usize>, Option<&str>) {
    let (head, leaf) = match key.rsplit_once('.') {
        Some((h, l)) => (h, Some(l)),
        None => (key, None),
    };
    if let Some((name, rest)) = head.split_once('[') {
        let idx = rest.trim_end_matches(']').parse().ok();
        return (name.to_string(), idx, leaf);
    }
    (head.to_string(), None, leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_of_nested_and_array_keys() {
        let text = "[server]\nlisten = \"x\"\n\n[[routes]]\nupstream = \"a\"\n[[routes]]\npath_prefix=\"/\"\nupstream = \"b\"\n[session.binding]\nip = \"z\"\n";
        assert_eq!(find_key_line(text, "server.listen"), Some(2));
        assert_eq!(find_key_line(text, "routes[0].upstream"), Some(5));
        assert_eq!(find_key_line(text, "routes[1].upstream"), Some(8));
        assert_eq!(find_key_line(text, "session.binding.ip"), Some(10));
        assert_eq!(find_key_line(text, "server.nope"), None);
    }

    #[test]
    fn upstream_must_be_plain_http_origin() {
        assert!(parse_upstream("http://127.0.0.1:8080").is_ok());
        assert!(parse_upstream("ftp://x").is_err());
        assert!(parse_upstream("http://x/path").is_err());
        assert!(parse_upstream("http://u:p@x").is_err());
    }

    #[test]
    fn route_prefixes_must_be_normalised() {
        let dir = std::env::temp_dir();
        let (cert, key) = crate::tls::write_self_signed(&dir.join("sg-config-unit"), &["localhost".into()])
            .unwrap_or_else(|e| panic!("certificate: {e}"));
        let cfg = |prefix: &str| {
            let text = format!(
                "[tls]\ncert = {cert:?}\nkey = {key:?}\n[store]\nkind = \"memory\"\n\
                 [[routes]]\npath_prefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:9\"\n"
            );
            Config::parse(&text, &dir.join("c.toml"))
        };
        for ok in ["/", "/api", "/api/"] {
            assert!(cfg(ok).is_ok(), "{ok}");
        }
        for bad in ["/a/../", "/a//b/", "/a/./", "/%61/"] {
            let err = cfg(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("routes[0].path_prefix"), "{bad}: {err}");
        }
    }

    #[test]
    fn page_cache_bytes_has_a_default_and_a_floor() {
        let dir = std::env::temp_dir();
        let (cert, key) = crate::tls::write_self_signed(&dir.join("sg-config-unit-pc"), &["localhost".into()])
            .unwrap_or_else(|e| panic!("certificate: {e}"));
        let cfg = |extra: &str| {
            let text = format!(
                "[tls]\ncert = {cert:?}\nkey = {key:?}\n[store]\nkind = \"embedded\"\n{extra}\
                 [[routes]]\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\n"
            );
            Config::parse(&text, &dir.join("c.toml"))
        };
        let page_cache = |extra: &str| match cfg(extra).map(|c| c.store.kind) {
            Ok(StoreKind::Embedded { page_cache_bytes, .. }) => Some(page_cache_bytes),
            _ => None,
        };
        assert_eq!(page_cache(""), Some(16 * 1024 * 1024));
        assert_eq!(page_cache("page_cache_bytes = 1048576\n"), Some(1024 * 1024));
        let err = cfg("page_cache_bytes = 1048575\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("store.page_cache_bytes"), "{err}");
    }

    #[test]
    fn cidr_accepts_bare_addresses() {
        assert_eq!(
            parse_cidr("10.1.2.3"),
            Some("10.1.2.3/32".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert!(parse_cidr("10.0.0.0/33").is_none());
    }
}
