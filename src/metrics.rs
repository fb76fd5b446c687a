//! Prometheus metrics, served as text by the admin listener.
//!
//! Per-route handles are resolved once at startup ([`RouteMetrics`]), so the
//! request path only increments atomics: no label formatting, no map lookup.
//! Labels never carry secrets (no tokens, no cookie values, no user input
//! other than configured route prefixes).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Upper bounds (seconds) of the latency buckets: steps of about 1.5× below
/// 10 ms, where a proxied request's time lies (a p99 of 0.3-0.5 ms on our
/// bench host), so that a 20 % rise shows as a move between buckets; then
/// coarser, up to 30 s. Powers of two from 0.25 ms put a whole 0.3-0.45 ms
/// p99 in one bucket. `observe` scans from the smallest, so a fast request
/// meets few of them.
const LATENCY_BUCKETS: [f64; 24] = [
    0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<Labels, Counter>,
    upstream_down: Family<Labels, Counter>,
    upstream_requests: Family<Labels, Counter>,
    health_checks: Family<Labels, Counter>,
    upstream_ready: Family<Labels, Gauge>,
    requests_refused: Family<Labels, Counter>,
    pub open_connections: Gauge,
    connections_accepted: Family<Labels, Counter>,
    tls_handshakes: Family<Labels, Counter>,
    pub sessions_created: Counter,
    pub sessions_rotated: Counter,
    sessions_revoked: Family<Labels, Counter>,
    sessions_expired: Family<Labels, Counter>,
    session_pins: Family<Labels, Counter>,
    user_session_limit: Family<Labels, Counter>,
    pub sessions_not_issued: Counter,
    tls_reloads: Family<Labels, Counter>,
    config_reloads: Family<Labels, Counter>,
    pub sessions_active: Gauge,
    binding_mismatches: Family<Labels, Counter>,
    cross_origin_refused: Family<Labels, Counter>,
    pub cache_hits: Counter,
    /// Of `cache_hits`: answered by the connection's own memory (`session::recent`).
    pub recalls: Counter,
    pub cache_misses: Counter,
    logins: Family<Labels, Counter>,
    pub store_errors: Counter,
    pub header_timeouts: Counter,
    pub proxy_protocol_errors: Counter,
}

/// Status classes in the order of `StatusCode::as_u16() / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Pre-resolved handles for one route.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
}

impl RouteMetrics {
    pub fn observe(&self, status: http::StatusCode, seconds: f64) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.latency.observe(seconds);
    }
}

/// TLS handshakes started, by the thread they run on.
#[derive(Clone)]
pub struct HandshakeCounters {
    pub on_worker: Counter,
    pub in_background: Counter,
}

/// Why the upstream leg failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Other,
}

impl UpstreamErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::Other => "other",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sessiongate");
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let upstream_errors = Family::<Labels, Counter>::default();
        let upstream_down = Family::<Labels, Counter>::default();
        let upstream_requests = Family::<Labels, Counter>::default();
        let health_checks = Family::<Labels, Counter>::default();
        let upstream_ready = Family::<Labels, Gauge>::default();
        let requests_refused = Family::<Labels, Counter>::default();
        let open_connections = Gauge::default();
        let connections_accepted = Family::<Labels, Counter>::default();
        let tls_handshakes = Family::<Labels, Counter>::default();
        let sessions_created = Counter::default();
        let sessions_rotated = Counter::default();
        let sessions_revoked = Family::<Labels, Counter>::default();
        let sessions_expired = Family::<Labels, Counter>::default();
        let session_pins = Family::<Labels, Counter>::default();
        let user_session_limit = Family::<Labels, Counter>::default();
        let sessions_not_issued = Counter::default();
        let tls_reloads = Family::<Labels, Counter>::default();
        let config_reloads = Family::<Labels, Counter>::default();
        let sessions_active = Gauge::default();
        let binding_mismatches = Family::<Labels, Counter>::default();
        let cross_origin_refused = Family::<Labels, Counter>::default();
        let cache_hits = Counter::default();
        let recalls = Counter::default();
        let cache_misses = Counter::default();
        let logins = Family::<Labels, Counter>::default();
        let store_errors = Counter::default();
        let header_timeouts = Counter::default();
        let proxy_protocol_errors = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by route and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            latency.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream exchanges, by kind",
            upstream_errors.clone(),
        );
        registry.register(
            "upstream_down",
            "Times one of a route's several upstream servers was marked down after a failed connection or failed health checks, by server",
            upstream_down.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests answered by each of a route's several upstream servers (any status), by server: a drained server's falls to zero as its sessions end",
            upstream_requests.clone(),
        );
        registry.register(
            "health_checks",
            "Active health checks of upstream servers, by server and result (passed, failed)",
            health_checks.clone(),
        );
        registry.register(
            "upstream_ready",
            "1 while an upstream server takes requests, 0 while it is marked down, failing its health checks or in maintenance (set at each scrape)",
            upstream_ready.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections currently open",
            open_connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted, by worker (how evenly the workers share them)",
            connections_accepted.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes started, by thread: the worker itself, or its background (SCHED_IDLE) thread",
            tls_handshakes.clone(),
        );
        registry.register("sessions_created", "Sessions issued", sessions_created.clone());
        registry.register(
            "sessions_rotated",
            "Session tokens rotated (login)",
            sessions_rotated.clone(),
        );
        registry.register(
            "sessions_revoked",
            "Sessions ended on purpose, by reason",
            sessions_revoked.clone(),
        );
        registry.register(
            "sessions_expired",
            "Sessions refused as expired, by reason",
            sessions_expired.clone(),
        );
        registry.register(
            "session_pins",
            "Sessions pinned to an upstream server of a route with several: first (its first request there) or moved (its server was out of service or down)",
            session_pins.clone(),
        );
        registry.register(
            "user_session_limit",
            "New sessions that met [session] max_per_user, by action (refused, ended_least_recent)",
            user_session_limit.clone(),
        );
        registry.register(
            "sessions_not_issued",
            "Anonymous sessions not created because the client address passed [session] new_per_ip_per_minute",
            sessions_not_issued.clone(),
        );
        registry.register(
            "tls_reloads",
            "Reloads of the TLS certificate and key, by result (ok, failed)",
            tls_reloads.clone(),
        );
        registry.register(
            "config_reloads",
            "Reloads of the config file's [[users]] and [[routes]] (SIGHUP, POST /reload), by result (ok, failed)",
            config_reloads.clone(),
        );
        registry.register(
            "sessions_active",
            "Sessions in the session cache",
            sessions_active.clone(),
        );
        registry.register(
            "binding_mismatches",
            "Requests whose session was bound to another client, by kind",
            binding_mismatches.clone(),
        );
        registry.register(
            "cross_origin_refused",
            "State-changing requests from another origin refused (403), by the rule that refused them",
            cross_origin_refused.clone(),
        );
        registry.register(
            "session_cache_hits",
            "Session lookups answered by the cache",
            cache_hits.clone(),
        );
        registry.register(
            "session_recalls",
            "Session lookups (counted among the cache hits) answered by what the connection remembered of its previous request",
            recalls.clone(),
        );
        registry.register(
            "session_cache_misses",
            "Session lookups that read the store",
            cache_misses.clone(),
        );
        registry.register("logins", "Login attempts, by result", logins.clone());
        registry.register(
            "store_errors",
            "Session store operations that failed",
            store_errors.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests answered before a route was chosen, by reason (ambiguous_path, unsafe_path, bad_host, \
             no_route, missing_slash, ...); requests_total counts routed ones",
            requests_refused.clone(),
        );
        registry.register(
            "header_timeouts",
            "HTTP/1 connections cut because a request head was not complete within header_read_timeout",
            header_timeouts.clone(),
        );
        registry.register(
            "proxy_protocol_errors",
            "Connections from a server.proxy_protocol_from peer closed because their PROXY header was missing, \
             malformed or late",
            proxy_protocol_errors.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            upstream_errors,
            upstream_down,
            upstream_requests,
            health_checks,
            upstream_ready,
            requests_refused,
            open_connections,
            connections_accepted,
            tls_handshakes,
            sessions_created,
            sessions_rotated,
            sessions_revoked,
            sessions_expired,
            session_pins,
            user_session_limit,
            sessions_not_issued,
            tls_reloads,
            config_reloads,
            sessions_active,
            binding_mismatches,
            cross_origin_refused,
            cache_hits,
            recalls,
            cache_misses,
            logins,
            store_errors,
            header_timeouts,
            proxy_protocol_errors,
        }
    }

    /// Resolves the handles for a route label once.
    pub fn route(&self, label: &str) -> RouteMetrics {
        let by_class = CLASSES.map(|c| {
            self.requests
                .get_or_create(&vec![("route", label.to_string()), ("status", c.to_string())])
                .clone()
        });
        let latency = self.latency.get_or_create(&vec![("route", label.to_string())]).clone();
        RouteMetrics { by_class, latency }
    }

    /// The accepted-connections counter of one worker, resolved once.
    pub fn worker_accepts(&self, worker: usize) -> Counter {
        self.connections_accepted
            .get_or_create(&vec![("worker", worker.to_string())])
            .clone()
    }

    /// The handshake counters, resolved once.
    pub fn handshakes(&self) -> HandshakeCounters {
        let counter = |thread: &str| {
            self.tls_handshakes
                .get_or_create(&vec![("thread", thread.to_string())])
                .clone()
        };
        HandshakeCounters {
            on_worker: counter("worker"),
            in_background: counter("background"),
        }
    }

    /// One of a route's several servers was marked down (`proxy::balance`).
    /// The handle counting `upstream`'s answers, as one of a route's
    /// several servers (a route's only server is counted by its route).
    pub fn upstream_requests(&self, upstream: &crate::config::Upstream) -> Counter {
        self.upstream_requests
            .get_or_create(&vec![("upstream", upstream.to_string())])
            .clone()
    }

    pub fn upstream_down(&self, upstream: &crate::config::Upstream) {
        self.upstream_down
            .get_or_create(&vec![("upstream", upstream.to_string())])
            .inc();
    }

    /// One active health check of `upstream` (`proxy::health_check`).
    pub fn health_check(&self, upstream: &crate::config::Upstream, passed: bool) {
        let result = if passed { "passed" } else { "failed" };
        self.health_checks
            .get_or_create(&vec![
                ("upstream", upstream.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    /// Forgets every `upstream_ready` series; a scrape sets the ones of
    /// the routes in force again.
    pub fn clear_upstream_ready(&self) {
        self.upstream_ready.clear();
    }

    /// Whether an upstream server takes requests, as the admin reads it at a scrape.
    pub fn upstream_ready(&self, upstream: &crate::config::Upstream, ready: bool) {
        self.upstream_ready
            .get_or_create(&vec![("upstream", upstream.to_string())])
            .set(i64::from(ready));
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .get_or_create(&vec![("kind", kind.as_str().to_string())])
            .inc();
    }

    /// A request answered before any route was chosen (see
    /// `GatewayError::refusal`).
    pub fn request_refused(&self, reason: &'static str) {
        self.requests_refused
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    pub fn session_revoked(&self, reason: &'static str) {
        self.sessions_revoked
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// A session pinned to an upstream server (`Sessions::pin`).
    pub fn session_pinned(&self, moved: bool) {
        let why = if moved { "moved" } else { "first" };
        self.session_pins.get_or_create(&vec![("why", why.to_string())]).inc();
    }

    pub fn session_expired(&self, reason: &'static str) {
        self.sessions_expired
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    pub fn binding_mismatch(&self, kind: &'static str) {
        self.binding_mismatches
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// A state-changing request from another origin was refused, `by` the
    /// rule that refused it (`cross_origin::Refusal`).
    pub fn cross_origin_refused(&self, by: &'static str) {
        self.cross_origin_refused
            .get_or_create(&vec![("by", by.to_string())])
            .inc();
    }

    /// A new session met `[session] max_per_user`: `refused`, or one of the
    /// user's others `ended_least_recent`.
    pub fn user_limit(&self, action: &'static str) {
        self.user_session_limit
            .get_or_create(&vec![("action", action.to_string())])
            .inc();
    }

    pub fn tls_reload(&self, result: &'static str) {
        self.tls_reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    pub fn login(&self, result: &'static str) {
        self.logins.get_or_create(&vec![("result", result.to_string())]).inc();
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
