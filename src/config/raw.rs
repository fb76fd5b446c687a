//! Raw configuration structs: a one-to-one mirror of the TOML file.
//!
//! Every table uses `deny_unknown_fields` so a typo is an error, not a silently
//! ignored key. Defaults live in named functions so that `config.toml.example`
//! and the code agree on one value each. Nothing here is interpreted: that is
//! `validate`'s job.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub tls: RawTls,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub upstream_tls: RawUpstreamTls,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub headers: RawHeaders,
    #[serde(default)]
    pub login: RawLogin,
    #[serde(default)]
    pub users: Vec<RawUser>,
    pub oidc: Option<RawOidc>,
    #[serde(default)]
    pub cross_origin: RawCrossOrigin,
    #[serde(default)]
    pub upstream_cookies: RawUpstreamCookies,
}

/// `[upstream_cookies]`: attributes added to the upstream's own cookies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamCookies {
    #[serde(default)]
    pub http_only: bool,
    pub same_site: Option<String>,
}

/// `[cross_origin]`: origins whose state-changing requests are let through.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCrossOrigin {
    #[serde(default)]
    pub trusted_origins: Vec<String>,
}

/// `[oidc]`: sign-in through an OpenID Connect provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    #[serde(default = "d_oidc_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "d_oidc_username_claim")]
    pub username_claim: String,
    #[serde(default = "d_oidc_email_claim")]
    pub email_claim: String,
    #[serde(default = "d_oidc_groups_claim")]
    pub groups_claim: String,
    pub ca: Option<String>,
    #[serde(default = "d_oidc_name")]
    pub name: String,
    #[serde(default = "d_oidc_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default)]
    pub allow_any_account: bool,
    #[serde(default)]
    pub logout_at_provider: bool,
    #[serde(default = "d_oidc_max_concurrent")]
    pub max_concurrent: usize,
}

fn d_oidc_max_concurrent() -> usize {
    32
}

fn d_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn d_oidc_username_claim() -> String {
    "sub".into()
}

fn d_oidc_email_claim() -> String {
    "email".into()
}

fn d_oidc_groups_claim() -> String {
    "groups".into()
}

fn d_oidc_name() -> String {
    "single sign-on".into()
}

fn d_oidc_timeout() -> String {
    "10s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "d_listen")]
    pub listen: String,
    pub http_redirect_listen: Option<String>,
    pub public_https_port: Option<u16>,
    #[serde(default = "d_true")]
    pub access_log: bool,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
    #[serde(default = "d_upstream_timeout")]
    pub upstream_timeout: String,
    #[serde(default = "d_upstream_connect_timeout")]
    pub upstream_connect_timeout: String,
    #[serde(default = "d_tls_handshake_timeout")]
    pub tls_handshake_timeout: String,
    #[serde(default = "d_header_read_timeout")]
    pub header_read_timeout: String,
    #[serde(default = "d_keepalive_timeout")]
    pub keepalive_timeout: String,
    #[serde(default = "d_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "d_max_headers")]
    pub max_headers: usize,
    #[serde(default = "d_max_uri_bytes")]
    pub max_uri_bytes: usize,
    #[serde(default = "d_max_headers")]
    pub upstream_max_headers: usize,
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    /// `None`: one per CPU.
    pub workers: Option<usize>,
    #[serde(default = "d_shutdown_grace")]
    pub shutdown_grace: String,
    #[serde(default = "d_upstream_pool_idle")]
    pub upstream_pool_idle_timeout: String,
    #[serde(default = "d_upstream_fail_timeout")]
    pub upstream_fail_timeout: String,
    #[serde(default = "d_health_check_interval")]
    pub health_check_interval: String,
    #[serde(default = "d_health_check_timeout")]
    pub health_check_timeout: String,
    #[serde(default = "d_health_check_runs")]
    pub health_check_fails: u32,
    #[serde(default = "d_health_check_runs")]
    pub health_check_passes: u32,
    #[serde(default = "d_upstream_pool_max_idle")]
    pub upstream_pool_max_idle_per_host: usize,
    #[serde(default = "d_tls_handshakes")]
    pub tls_handshakes: String,
    #[serde(default)]
    pub background_cpus: Vec<usize>,
    #[serde(default)]
    pub upstream_paths_case_sensitive: bool,
    #[serde(default = "d_true")]
    pub upstream_paths_format_suffix: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: d_listen(),
            http_redirect_listen: None,
            public_https_port: None,
            access_log: true,
            trusted_proxies: Vec::new(),
            proxy_protocol_from: Vec::new(),
            upstream_timeout: d_upstream_timeout(),
            upstream_connect_timeout: d_upstream_connect_timeout(),
            tls_handshake_timeout: d_tls_handshake_timeout(),
            header_read_timeout: d_header_read_timeout(),
            keepalive_timeout: d_keepalive_timeout(),
            max_header_bytes: d_max_header_bytes(),
            max_headers: d_max_headers(),
            max_uri_bytes: d_max_uri_bytes(),
            upstream_max_headers: d_max_headers(),
            max_connections: d_max_connections(),
            workers: None,
            shutdown_grace: d_shutdown_grace(),
            upstream_pool_idle_timeout: d_upstream_pool_idle(),
            upstream_fail_timeout: d_upstream_fail_timeout(),
            health_check_interval: d_health_check_interval(),
            health_check_timeout: d_health_check_timeout(),
            health_check_fails: d_health_check_runs(),
            health_check_passes: d_health_check_runs(),
            upstream_pool_max_idle_per_host: d_upstream_pool_max_idle(),
            tls_handshakes: d_tls_handshakes(),
            background_cpus: Vec::new(),
            upstream_paths_case_sensitive: false,
            upstream_paths_format_suffix: true,
        }
    }
}

fn d_tls_handshakes() -> String {
    "auto".into()
}
fn d_true() -> bool {
    true
}
fn d_listen() -> String {
    "0.0.0.0:8443".into()
}
fn d_upstream_timeout() -> String {
    "30s".into()
}
fn d_upstream_fail_timeout() -> String {
    "10s".into()
}
fn d_health_check_interval() -> String {
    "5s".into()
}
fn d_health_check_timeout() -> String {
    "2s".into()
}
fn d_health_check_runs() -> u32 {
    2
}
fn d_upstream_connect_timeout() -> String {
    "5s".into()
}
fn d_tls_handshake_timeout() -> String {
    "10s".into()
}
fn d_header_read_timeout() -> String {
    "10s".into()
}
fn d_keepalive_timeout() -> String {
    "60s".into()
}
fn d_max_uri_bytes() -> usize {
    8192
}
fn d_max_headers() -> usize {
    crate::config::DEFAULT_MAX_HEADERS
}
fn d_max_header_bytes() -> usize {
    16 * 1024
}
fn d_max_connections() -> usize {
    10_000
}
fn d_shutdown_grace() -> String {
    "30s".into()
}
fn d_upstream_pool_idle() -> String {
    "90s".into()
}
fn d_upstream_pool_max_idle() -> usize {
    256
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
    #[serde(default = "d_true")]
    pub hsts: bool,
    #[serde(default = "d_hsts_max_age")]
    pub hsts_max_age: String,
    #[serde(default)]
    pub hsts_include_subdomains: bool,
    #[serde(default)]
    pub hsts_preload: bool,
}

fn d_hsts_max_age() -> String {
    "365d".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default = "d_admin_listen")]
    pub listen: String,
    pub token: Option<String>,
    pub token_file: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: d_admin_listen(),
            token: None,
            token_file: None,
        }
    }
}

fn d_admin_listen() -> String {
    "127.0.0.1:9090".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path_prefix: String,
    pub host: Option<String>,
    pub upstream: RawUpstreams,
    #[serde(default = "d_balance")]
    pub balance: String,
    #[serde(default = "d_auth")]
    pub auth: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub max_body_bytes: Option<u64>,
    pub max_auth_age: Option<String>,
    #[serde(default = "d_route_cross_origin")]
    pub cross_origin: String,
    #[serde(default = "d_route_framing")]
    pub framing: String,
    pub health_check: Option<String>,
    pub health_check_host: Option<String>,
}

/// A route's `upstream`: one origin, or a list of them. Read by hand,
/// not `#[serde(untagged)]`, so that a wrong type is told what is wanted
/// rather than "did not match any variant".
#[derive(Debug)]
pub enum RawUpstreams {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for RawUpstreams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Origins;
        impl<'de> serde::de::Visitor<'de> for Origins {
            type Value = RawUpstreams;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an origin like \"http://127.0.0.1:8081\", or a list of them")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawUpstreams, E> {
                Ok(RawUpstreams::One(v.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawUpstreams, A::Error> {
                let mut all = Vec::new();
                while let Some(origin) = seq.next_element::<String>()? {
                    all.push(origin);
                }
                Ok(RawUpstreams::Many(all))
            }
        }
        d.deserialize_any(Origins)
    }
}

fn d_balance() -> String {
    "sticky".into()
}

fn d_route_framing() -> String {
    "same-origin".into()
}

fn d_route_cross_origin() -> String {
    "reject".into()
}

fn d_auth() -> String {
    "none".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    #[serde(default = "d_cookie_name")]
    pub cookie_name: String,
    #[serde(default = "d_same_site")]
    pub same_site: String,
    #[serde(default)]
    pub persistent: bool,
    #[serde(default = "d_idle_timeout")]
    pub idle_timeout: String,
    #[serde(default = "d_absolute_timeout")]
    pub absolute_timeout: String,
    #[serde(default = "d_max_data_bytes")]
    pub max_data_bytes: usize,
    #[serde(default = "d_max_per_user")]
    pub max_per_user: u64,
    #[serde(default = "d_on_user_limit")]
    pub on_user_limit: String,
    #[serde(default = "d_new_per_ip_per_minute")]
    pub new_per_ip_per_minute: u64,
    #[serde(default)]
    pub recheck_each_request: bool,
    #[serde(default)]
    pub binding: RawBinding,
}

impl Default for RawSession {
    fn default() -> Self {
        RawSession {
            cookie_name: d_cookie_name(),
            same_site: d_same_site(),
            persistent: false,
            idle_timeout: d_idle_timeout(),
            absolute_timeout: d_absolute_timeout(),
            max_data_bytes: d_max_data_bytes(),
            max_per_user: d_max_per_user(),
            on_user_limit: d_on_user_limit(),
            new_per_ip_per_minute: d_new_per_ip_per_minute(),
            recheck_each_request: false,
            binding: RawBinding::default(),
        }
    }
}

fn d_cookie_name() -> String {
    "__Host-sessiongate".into()
}
fn d_same_site() -> String {
    "lax".into()
}
fn d_idle_timeout() -> String {
    "30m".into()
}
fn d_absolute_timeout() -> String {
    "12h".into()
}
fn d_max_data_bytes() -> usize {
    4096
}
fn d_max_per_user() -> u64 {
    10
}
fn d_new_per_ip_per_minute() -> u64 {
    600
}
fn d_on_user_limit() -> String {
    "end_least_recent".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBinding {
    #[serde(default = "d_bind_ip")]
    pub ip: String,
    #[serde(default = "d_v4_prefix")]
    pub ipv4_prefix: u8,
    #[serde(default = "d_v6_prefix")]
    pub ipv6_prefix: u8,
    #[serde(default = "d_fingerprint_headers")]
    pub fingerprint_headers: Vec<String>,
    #[serde(default = "d_on_mismatch")]
    pub on_mismatch: String,
}

impl Default for RawBinding {
    fn default() -> Self {
        RawBinding {
            ip: d_bind_ip(),
            ipv4_prefix: d_v4_prefix(),
            ipv6_prefix: d_v6_prefix(),
            fingerprint_headers: d_fingerprint_headers(),
            on_mismatch: d_on_mismatch(),
        }
    }
}

fn d_bind_ip() -> String {
    "exact".into()
}
fn d_v4_prefix() -> u8 {
    24
}
fn d_v6_prefix() -> u8 {
    64
}
fn d_fingerprint_headers() -> Vec<String> {
    vec!["user-agent".into()]
}
fn d_on_mismatch() -> String {
    "revoke".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    #[serde(default = "d_store_kind")]
    pub kind: String,
    #[serde(default = "d_store_path")]
    pub path: String,
    #[serde(default = "d_touch_interval")]
    pub touch_interval: String,
    #[serde(default = "d_cache_capacity")]
    pub cache_capacity: u64,
    #[serde(default = "d_sweep_interval")]
    pub sweep_interval: String,
    #[serde(default = "d_page_cache_bytes")]
    pub page_cache_bytes: u64,
    pub url: Option<String>,
    pub password_file: Option<String>,
    #[serde(default = "d_key_prefix")]
    pub key_prefix: String,
    #[serde(default)]
    pub cluster: bool,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default = "d_redis_connect_timeout")]
    pub connect_timeout: String,
    #[serde(default = "d_redis_response_timeout")]
    pub response_timeout: String,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            kind: d_store_kind(),
            path: d_store_path(),
            touch_interval: d_touch_interval(),
            cache_capacity: d_cache_capacity(),
            sweep_interval: d_sweep_interval(),
            page_cache_bytes: d_page_cache_bytes(),
            url: None,
            password_file: None,
            key_prefix: d_key_prefix(),
            cluster: false,
            nodes: Vec::new(),
            connect_timeout: d_redis_connect_timeout(),
            response_timeout: d_redis_response_timeout(),
        }
    }
}

fn d_store_kind() -> String {
    "embedded".into()
}
fn d_store_path() -> String {
    "sessiongate.redb".into()
}
fn d_touch_interval() -> String {
    "60s".into()
}
fn d_cache_capacity() -> u64 {
    1_000_000
}
fn d_sweep_interval() -> String {
    "5m".into()
}
/// The embedded store's page cache. Lookups hit the sessions' own cache
/// first, so redb's cache only serves misses, writes and the sweeper: it
/// needs the B-tree's branch pages, not the whole table. A flush of 140,000
/// touches into a million rows took 308-471 ms with 16 MiB and 305-402 ms
/// with 32 MiB, and at a million sessions the 16 MiB saved kept the gateway
/// under 512 MiB once the writes had filled the cache (docs/benchmarks.md,
/// session 21).
fn d_page_cache_bytes() -> u64 {
    16 * 1024 * 1024
}
fn d_key_prefix() -> String {
    "sessiongate:".into()
}
fn d_redis_connect_timeout() -> String {
    "2s".into()
}
fn d_redis_response_timeout() -> String {
    "1s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    #[serde(default = "d_h_user")]
    pub user: String,
    #[serde(default = "d_h_email")]
    pub email: String,
    #[serde(default = "d_h_groups")]
    pub groups: String,
    #[serde(default = "d_h_session_id")]
    pub session_id: String,
    #[serde(default = "d_h_session_data")]
    pub session_data: String,
    #[serde(default = "d_h_session_data_set")]
    pub session_data_set: String,
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders {
            user: d_h_user(),
            email: d_h_email(),
            groups: d_h_groups(),
            session_id: d_h_session_id(),
            session_data: d_h_session_data(),
            session_data_set: d_h_session_data_set(),
        }
    }
}

fn d_h_user() -> String {
    "X-Forwarded-User".into()
}
fn d_h_email() -> String {
    "X-Forwarded-Email".into()
}
fn d_h_groups() -> String {
    "X-Forwarded-Groups".into()
}
fn d_h_session_id() -> String {
    "X-Session-Id".into()
}
fn d_h_session_data() -> String {
    "X-Session-Data".into()
}
fn d_h_session_data_set() -> String {
    "X-Session-Data-Set".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    #[serde(default = "d_max_failures")]
    pub max_failures: u32,
    #[serde(default = "d_failure_window")]
    pub failure_window: String,
    #[serde(default = "d_max_concurrent_logins")]
    pub max_concurrent: usize,
    #[serde(default)]
    pub hash_cpus: Vec<usize>,
}

impl Default for RawLogin {
    fn default() -> Self {
        RawLogin {
            max_failures: d_max_failures(),
            failure_window: d_failure_window(),
            max_concurrent: d_max_concurrent_logins(),
            hash_cpus: Vec::new(),
        }
    }
}

fn d_max_failures() -> u32 {
    5
}
fn d_failure_window() -> String {
    "15m".into()
}
fn d_max_concurrent_logins() -> usize {
    8
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    pub password_hash: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}
