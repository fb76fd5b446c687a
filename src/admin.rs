//! The admin listener (plain HTTP, loopback by default): health, readiness,
//! metrics, and the session admin API behind a bearer token.
//!
//! - `GET /healthz` → 200 while the process serves.
//! - `GET /readyz` → 200 when the session store answers, else 503.
//! - `GET /metrics` → Prometheus/OpenMetrics text.
//! - `POST /tls/reload` → reads `[tls] cert` and `key` again; 200, or 500
//!   with the reason and the old certificate kept.
//! - `POST /reload` → reads the config file again (as SIGHUP does): puts its
//!   `[[users]]` in force, ending the sessions of users removed or changed,
//!   and its `[[routes]]`, and reloads the certificate and key; 200 with
//!   what changed, or 500 with the file, line and reason and nothing changed.
//! - `GET /sessions?user=NAME`, `DELETE /sessions/{id}`, `DELETE /sessions?user=NAME`,
//!   `POST /sessions` (mint one, or `"count": N` of them) → JSON; 401
//!   without the configured token (and always 401 when no token is
//!   configured). Tokens never appear in answers except the freshly minted
//!   cookies.

use crate::auth::endpoints::{json, rfc3339};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::balance::Service;
use crate::proxy::body::{self, Body};
use crate::proxy::table::Replaced;
use crate::session::record::{Identity, ServerKey, SessionRecord};
use crate::session::token::SessionId;
use crate::session::{SessionError, Sessions, UserLimitReached};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct AdminState {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    sessions: Arc<Sessions>,
    tls: crate::tls::Reloadable,
    users: crate::auth::UserDirectory,
    routes: Arc<crate::proxy::table::Tables>,
}

/// What `/upstreams` shows and changes: every origin the routes in force
/// name, the routes that use each, and their shared health
/// (`proxy::balance`). Built from the current route table per request.
pub struct Upstreams<'t> {
    /// In slot order (a reload may leave gaps: a server that no route
    /// names any more keeps its slot).
    origins: Vec<ServerEntry<'t>>,
    /// Each route's label and its servers' slots.
    routes: Vec<(&'t str, Vec<usize>)>,
    health: &'t crate::proxy::balance::Health,
}

/// One origin of [`Upstreams`].
struct ServerEntry<'t> {
    /// Its slot in the health table and the pools.
    slot: usize,
    upstream: &'t crate::config::Upstream,
    /// The labels of the routes that list it.
    routes: Vec<&'t str>,
    /// Whether a route with `health_check` lists it.
    checked: bool,
}

impl<'t> Upstreams<'t> {
    /// From the table's routes, whose servers know their origin's slot.
    pub fn new(table: &'t crate::proxy::table::Table) -> Upstreams<'t> {
        let mut origins = BTreeMap::new();
        let mut routes = Vec::new();
        for route in table.router.routes() {
            let servers = route.servers.as_slice();
            for server in servers {
                let entry = origins.entry(server.origin()).or_insert_with(|| ServerEntry {
                    slot: server.origin(),
                    upstream: &server.upstream,
                    routes: Vec::new(),
                    checked: false,
                });
                entry.routes.push(route.label.as_str());
                entry.checked |= route.health_check.is_some();
            }
            routes.push((route.label.as_str(), servers.iter().map(|s| s.origin()).collect()));
        }
        Upstreams {
            origins: origins.into_values().collect(),
            routes,
            health: &table.health,
        }
    }

    fn find(&self, upstream: &crate::config::Upstream) -> Option<&ServerEntry<'t>> {
        self.origins.iter().find(|o| o.upstream == upstream)
    }

    fn describe(&self, origin: &ServerEntry<'_>) -> serde_json::Value {
        let state = self.health.state(origin.slot);
        let check = match (origin.checked, state.check_failed) {
            (false, _) => "none",
            (true, false) => "passing",
            (true, true) => "failing",
        };
        json!({
            "upstream": origin.upstream.to_string(),
            "routes": origin.routes,
            "state": state.service.as_str(),
            "down_for_ms": u64::try_from(state.down_for.as_millis()).unwrap_or(u64::MAX),
            "check": check,
        })
    }

    /// Whether the health of `origin` is watched: it is one of a route's
    /// several servers (a route's only upstream is never marked down).
    fn watched(&self, origin: &ServerEntry<'_>) -> bool {
        self.routes.iter().any(|(_, o)| o.len() > 1 && o.contains(&origin.slot))
    }
}

impl AdminState {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        sessions: Arc<Sessions>,
        tls: crate::tls::Reloadable,
        users: crate::auth::UserDirectory,
        routes: Arc<crate::proxy::table::Tables>,
    ) -> AdminState {
        AdminState {
            config,
            metrics,
            sessions,
            tls,
            users,
            routes,
        }
    }

    /// Reads the config file again and validates all of it. When valid: its
    /// `[[users]]` are put in force for every login from now on, and every
    /// session of a user who was removed or whose password hash, email or
    /// groups changed is ended (their identity headers would be stale, and
    /// a removed user must lose access at once). Its `[[routes]]` are put
    /// in force for every request from now on (see `proxy::table`), unless
    /// they need an upstream TLS client the gateway did not start with.
    /// Other sections are only compared: a change there is logged as
    /// needing a restart. The certificate and key are reloaded too. When
    /// invalid: nothing changes and the error names the file, key and line.
    pub async fn reload_config(&self) -> Result<ConfigReloaded, String> {
        let source = self.config.source.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Config::load(&source).map(|c| {
                let table = crate::auth::UserTable::new(&c.users);
                (c, table)
            })
        })
        .await
        .map_err(|e| format!("reload task failed: {e}"));
        let (new, table) = match loaded.and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(ok) => ok,
            Err(e) => {
                self.metrics.config_reload("failed");
                tracing::error!(event = "config_reload_failed", error = %e, "config not reloaded; the running one stays");
                return Err(e);
            }
        };
        self.sessions.set_users(&new.users);
        let changes = self.users.replace(table);
        let mut sessions_ended = 0;
        for (names, reason) in [(&changes.removed, "user_removed"), (&changes.changed, "user_changed")] {
            for user in names {
                match self.sessions.revoke_user_because(user, reason).await {
                    Ok(n) => {
                        sessions_ended += n;
                        tracing::warn!(event = "user_sessions_ended", user = %user, reason, sessions = n);
                    }
                    Err(e) => {
                        self.metrics.store_errors.inc();
                        tracing::error!(user = %user, reason, error = %e, "could not end the sessions of a removed or changed user");
                    }
                }
            }
        }
        let upstream_tls_reloaded = match (&self.config.upstream_tls, &new.upstream_tls) {
            (Some(running), Some(read)) => {
                running.config.store(read.config.load_full());
                tracing::info!(event = "upstream_tls_reloaded", "upstream TLS settings reloaded");
                true
            }
            _ => false,
        };
        let routes = self.routes.replace(&new.routes, self.config.upstream_tls.is_some());
        let mut restart_needed = sections_changed(&self.config, &new);
        match routes {
            Replaced::Applied => {
                tracing::info!(
                    event = "routes_reloaded",
                    routes = new.routes.len(),
                    "routes reloaded: every request from now on uses them"
                )
            }
            Replaced::NeedsUpstreamTls => {
                restart_needed.push("routes");
                tracing::warn!("the new routes name an https:// upstream, and the gateway started without one (so without an upstream TLS client): they take effect at the next restart");
            }
            Replaced::Unchanged => {}
        }
        if !restart_needed.is_empty() {
            tracing::warn!(sections = ?restart_needed, "config changes outside [[users]], [[routes]] and the certificate files take effect at the next restart");
        }
        let tls = {
            let (tls, metrics, cert) = (self.tls.clone(), self.metrics.clone(), self.config.tls.cert.clone());
            tokio::task::spawn_blocking(move || reload_and_report(&tls, &metrics, &cert).map_err(|e| e.to_string()))
                .await
                .unwrap_or_else(|e| Err(format!("reload task failed: {e}")))
        };
        self.metrics.config_reload("ok");
        tracing::info!(
            event = "config_reloaded",
            users_added = changes.added.len(),
            users_removed = changes.removed.len(),
            users_changed = changes.changed.len(),
            sessions_ended,
            routes_reloaded = routes == Replaced::Applied,
            "config reloaded"
        );
        Ok(ConfigReloaded {
            users: changes,
            sessions_ended,
            tls,
            upstream_tls_reloaded,
            routes_reloaded: routes == Replaced::Applied,
            restart_needed,
        })
    }

    /// Reads `[tls] cert` and `key` again; new connections get them, open
    /// ones keep theirs. A failure keeps the certificate in force. Logged
    /// and counted either way. It reads files: call it off the event loops.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        reload_and_report(&self.tls, &self.metrics, &self.config.tls.cert)
    }
}

/// What [`AdminState::reload_config`] did.
#[derive(Debug)]
pub struct ConfigReloaded {
    pub users: crate::auth::UserChanges,
    pub sessions_ended: usize,
    /// The certificate reload's outcome (a failure keeps the one in force).
    pub tls: Result<(), String>,
    /// Whether `[upstream_tls]`'s files were read again and put in force
    /// for new upstream connections (when routes have `https://` upstreams).
    pub upstream_tls_reloaded: bool,
    /// Whether `[[routes]]` changed and the new ones are in force.
    pub routes_reloaded: bool,
    /// Sections that differ from the running config but need a restart.
    pub restart_needed: Vec<&'static str>,
}

/// The sections of `new` that differ from `running`, apart from `[[users]]`,
/// `[[routes]]` and `[upstream_tls]` (applied) and the certificate files'
/// contents (reloaded).
fn sections_changed(running: &Config, new: &Config) -> Vec<&'static str> {
    let differs = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut out = Vec::new();
    let sections: [(&'static str, &dyn std::fmt::Debug, &dyn std::fmt::Debug); 10] = [
        ("server", &running.server, &new.server),
        ("tls", &running.tls, &new.tls),
        ("admin", &running.admin, &new.admin),
        ("session", &running.session, &new.session),
        ("store", &running.store, &new.store),
        ("headers", &running.headers, &new.headers),
        ("login", &running.login, &new.login),
        ("oidc", &running.oidc, &new.oidc),
        ("cross_origin", &running.cross_origin, &new.cross_origin),
        ("upstream_cookies", &running.upstream_cookies, &new.upstream_cookies),
    ];
    for (name, a, b) in sections {
        if differs(a, b) {
            out.push(name);
        }
    }
    if running.admin.token.as_ref().map(|t| &t.0) != new.admin.token.as_ref().map(|t| &t.0) {
        out.push("admin.token");
    }
    let secret = |c: &Config| c.oidc.as_ref().map(|o| o.client_secret.clone());
    if secret(running) != secret(new) {
        out.push("oidc.client_secret");
    }
    out
}

fn reload_and_report(
    tls: &crate::tls::Reloadable,
    metrics: &Metrics,
    cert: &std::path::Path,
) -> Result<(), crate::tls::TlsError> {
    match tls.reload() {
        Ok(()) => {
            metrics.tls_reload("ok");
            tracing::info!(event = "tls_reloaded", cert = %cert.display(), "TLS certificate and key reloaded");
            Ok(())
        }
        Err(e) => {
            metrics.tls_reload("failed");
            tracing::error!(event = "tls_reload_failed", error = %e, "TLS reload failed; the certificate in force stays");
            Err(e)
        }
    }
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::server::stopped(&mut shutdown) => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn route(state: &AdminState, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(state).await,
        (&Method::GET, "/metrics") => metrics(state),
        (_, "/tls/reload") => tls_reload(state, &req).await,
        (_, "/reload") => config_reload(state, &req).await,
        (_, "/upstreams" | "/upstreams/state") => upstreams_api(state, req).await,
        (_, p) if p == "/sessions" || p.starts_with("/sessions/") => {
            if !authorized(state, req.headers()) {
                return unauthorized();
            }
            match sessions_api(state, peer, req).await {
                Ok(r) => r,
                Err(crate::session::SessionError::Store(crate::session::store::StoreError::Unsupported(why))) => {
                    json(StatusCode::BAD_REQUEST, &json!({"error": why}))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin session API failed");
                    let mut r = json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"error": "session store unavailable"}),
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    r
                }
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `POST /tls/reload` (admin token): 200 `{"reloaded": true}`, or 500 with
/// the reason (the certificate in force stays).
async fn tls_reload(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if !authorized(state, req.headers()) {
        return unauthorized();
    }
    if req.method() != Method::POST {
        return json(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "POST /tls/reload"}));
    }
    // The admin listener shares the first worker's thread: the file reads
    // and the key parsing run on the blocking pool.
    let tls = state.tls.clone();
    let metrics = state.metrics.clone();
    let cert = state.config.tls.cert.clone();
    let reloaded = tokio::task::spawn_blocking(move || reload_and_report(&tls, &metrics, &cert)).await;
    match reloaded {
        Ok(Ok(())) => json(StatusCode::OK, &json!({"reloaded": true})),
        Ok(Err(e)) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"reloaded": false, "error": e.to_string()}),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"reloaded": false, "error": format!("reload task failed: {e}")}),
        ),
    }
}

/// `POST /reload` (admin token): see [`AdminState::reload_config`].
async fn config_reload(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if !authorized(state, req.headers()) {
        return unauthorized();
    }
    if req.method() != Method::POST {
        return json(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "POST /reload"}));
    }
    match state.reload_config().await {
        Ok(r) => json(
            StatusCode::OK,
            &json!({
                "reloaded": true,
                "users_added": r.users.added,
                "users_removed": r.users.removed,
                "users_changed": r.users.changed,
                "sessions_ended": r.sessions_ended,
                "tls_reloaded": r.tls.is_ok(),
                "tls_error": r.tls.err(),
                "upstream_tls_reloaded": r.upstream_tls_reloaded,
                "routes_reloaded": r.routes_reloaded,
                "restart_needed": r.restart_needed,
            }),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"reloaded": false, "error": e}),
        ),
    }
}

/// `GET /upstreams`: every upstream server with its routes, `state`
/// (`ready`, `drain` or `maintenance`) and `down_for_ms` (how much longer
/// it is marked down after a failed connection). `POST /upstreams/state`
/// with `{"upstream": "http://...", "state": "maintenance" | "drain" |
/// "ready"}` takes a server out of service (its requests go to the
/// route's other servers, as when it is marked down, but without a failed
/// connection first), drains it (only the sessions pinned to it reach it)
/// or puts it back. On this instance only; admin token.
async fn upstreams_api(state: &AdminState, req: Request<Incoming>) -> Response<Body> {
    if !authorized(state, req.headers()) {
        return unauthorized();
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/upstreams") => {
            let table = state.routes.current();
            let ups = Upstreams::new(&table);
            let all: Vec<_> = ups.origins.iter().map(|o| ups.describe(o)).collect();
            json(StatusCode::OK, &json!({ "upstreams": all }))
        }
        (&Method::POST, "/upstreams/state") => set_upstream_state(&state.routes, req).await,
        _ => json(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "GET /upstreams or POST /upstreams/state"}),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateRequest {
    upstream: String,
    state: String,
}

async fn set_upstream_state(tables: &crate::proxy::table::Tables, req: Request<Incoming>) -> Response<Body> {
    let bad = |e: String| json(StatusCode::BAD_REQUEST, &json!({ "error": e }));
    let Ok(bytes) = Limited::new(req.into_body(), 4096)
        .collect()
        .await
        .map(|b| b.to_bytes())
    else {
        return json(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": "body too large"}));
    };
    let asked: StateRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return bad(format!("bad request: {e}")),
    };
    let Some(service) = Service::parse(&asked.state) else {
        return bad(format!(
            "state `{}` is not \"ready\", \"drain\" or \"maintenance\"",
            asked.state
        ));
    };
    let upstream = match crate::config::parse_upstream(&asked.upstream) {
        Ok(u) => u,
        Err(e) => return bad(format!("upstream `{}`: {e}", asked.upstream)),
    };
    // On the current table, with reloads held off until it is set.
    tables.with_current(|table| {
        let ups = Upstreams::new(table);
        let Some(origin) = ups.find(&upstream) else {
            return json(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no route has the upstream {upstream}")}),
            );
        };
        let routes = ups.routes.iter().map(|(label, o)| (*label, o.as_slice()));
        match ups.health.set_service(origin.slot, service, routes) {
            Ok(()) => {
                tracing::warn!(event = "upstream_state", upstream = %upstream, state = asked.state, "upstream server state set through the admin API");
                json(StatusCode::OK, &ups.describe(origin))
            }
            Err(crate::proxy::balance::StateError::LastInService(route)) => json(
                StatusCode::CONFLICT,
                &json!({"error": format!(
                    "route {route} would have no upstream server in service (ready for new sessions); put another back first"
                )}),
            ),
        }
    })
}

fn unauthorized() -> Response<Body> {
    let mut r = json(StatusCode::UNAUTHORIZED, &json!({"error": "admin token required"}));
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn readyz(state: &AdminState) -> Response<Body> {
    match state.sessions.ping().await {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable\n"),
    }
}

fn metrics(state: &AdminState) -> Response<Body> {
    state
        .metrics
        .sessions_active
        .set(i64::try_from(state.sessions.cached()).unwrap_or(i64::MAX));
    // Only servers of routes with several are watched: a route's only
    // upstream is never marked down, so a 1 there would say nothing.
    let table = state.routes.current();
    let ups = Upstreams::new(&table);
    // A server that a reload removed from every route leaves the series.
    state.metrics.clear_upstream_ready();
    for origin in ups.origins.iter().filter(|o| ups.watched(o)) {
        let now = ups.health.state(origin.slot);
        let ready = now.service == Service::Ready && now.down_for.is_zero() && !now.check_failed;
        state.metrics.upstream_ready(origin.upstream, ready);
    }
    let mut r = Response::new(body::full(state.metrics.encode()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// Constant-time comparison against the configured token; no token
/// configured means the API is closed.
fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let Some(expected) = &state.config.admin.token else {
        return false;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    aws_lc_rs::constant_time::verify_slices_are_equal(given.trim().as_bytes(), expected.0.as_bytes()).is_ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    user: String,
    client_ip: Option<IpAddr>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    email: Option<String>,
    groups: Option<Vec<String>>,
    /// Batch mint: this many sessions, all with this identity and binding.
    /// Absent means the single-session answer `{"id","cookie"}`.
    count: Option<u64>,
}

/// The largest batch one `POST /sessions` mints: one store commit holds
/// them all, and the answer (about 100 bytes per session) stays near 10 MB.
pub const MAX_MINT_BATCH: u64 = 100_000;

async fn sessions_api(
    state: &AdminState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, crate::session::SessionError> {
    let user = query_user(req.uri().query());
    let path = req.uri().path().to_string();
    let s = &state.sessions;
    Ok(
        match (req.method().clone(), path.strip_prefix("/sessions").unwrap_or("")) {
            (Method::GET, "") => match query_limit(req.uri().query()) {
                Ok(limit) => {
                    let listing = s.list(user, limit).await?;
                    let table = state.routes.current();
                    let names = ServerNames::of(&table);
                    let sessions: Vec<Described> = listing.sessions.iter().map(|r| Described::of(r, &names)).collect();
                    let answer = Listed {
                        count: sessions.len(),
                        total: listing.matched,
                        truncated: listing.matched > limit,
                        sessions,
                    };
                    json_serialized(StatusCode::OK, &answer)
                }
                Err(e) => json(StatusCode::BAD_REQUEST, &json!({"error": e})),
            },
            (Method::DELETE, "") => match user {
                Some(u) => {
                    let n = s.revoke_user(&u).await?;
                    tracing::info!(event = "admin_revoke_user", user = %u, count = n);
                    json(StatusCode::OK, &json!({"revoked": n}))
                }
                None => json(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "DELETE /sessions needs ?user=NAME"}),
                ),
            },
            (Method::DELETE, id) => match SessionId::parse(id.trim_start_matches('/')) {
                Some(id) if s.revoke_id(id).await? => {
                    tracing::info!(event = "admin_revoke", session_id = %id);
                    json(StatusCode::OK, &json!({"revoked": 1}))
                }
                _ => json(StatusCode::NOT_FOUND, &json!({"error": "no such session"})),
            },
            (Method::POST, "") => mint(state, peer, req).await?,
            _ => json(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "method not allowed"})),
        },
    )
}

async fn mint(
    state: &AdminState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, crate::session::SessionError> {
    let bytes = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(json(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": "body too large"}))),
    };
    let m: MintRequest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            return Ok(json(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("bad request: {e}")}),
            ))
        }
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &m.headers {
        match (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            (Ok(k), Ok(v)) => {
                headers.append(k, v);
            }
            _ => {
                return Ok(json(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("bad header `{k}`")}),
                ))
            }
        }
    }
    let configured = state.users.get(&m.user);
    let identity = Identity {
        email: m.email.or_else(|| configured.as_ref().and_then(|u| u.email.clone())),
        groups: m
            .groups
            .unwrap_or_else(|| configured.map(|u| u.groups).unwrap_or_default()),
        user: m.user,
    };
    let ip = m.client_ip.unwrap_or(peer.ip());
    let Some(count) = m.count else {
        let (token, live) = match state.sessions.mint(ip, &headers, identity).await {
            Err(SessionError::UserLimit(e)) => return Ok(too_many_sessions(&e)),
            minted => minted?,
        };
        return Ok(json(
            StatusCode::CREATED,
            &json!({"id": live.record.id.to_string(), "cookie": state.sessions.cookie_pair(&token)}),
        ));
    };
    let count = match usize::try_from(count) {
        Ok(n) if (1..=MAX_MINT_BATCH).contains(&count) => n,
        _ => {
            return Ok(json(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("count must be between 1 and {MAX_MINT_BATCH}")}),
            ))
        }
    };
    let minted = match state.sessions.mint_many(ip, &headers, identity, count).await {
        Err(SessionError::UserLimit(e)) => return Ok(too_many_sessions(&e)),
        minted => minted?,
    };
    let batch = MintedBatch {
        sessions: minted
            .iter()
            .map(|(token, id)| Minted {
                id: id.to_string(),
                cookie: state.sessions.cookie_pair(token),
            })
            .collect(),
    };
    Ok(json_serialized(StatusCode::CREATED, &batch))
}

/// A mint that `[session] max_per_user` refused: 429, with the reason and
/// the figures a script needs.
fn too_many_sessions(e: &UserLimitReached) -> Response<Body> {
    json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"error": e.to_string(), "active": e.active, "max_per_user": e.max}),
    )
}

/// The answer to a batch mint. Typed rather than a `serde_json::Value`
/// tree: for 100,000 sessions the tree alone would be tens of megabytes.
#[derive(Serialize)]
struct MintedBatch {
    sessions: Vec<Minted>,
}

#[derive(Serialize)]
struct Minted {
    id: String,
    cookie: String,
}

/// Like [`json`], for a value serialised straight to bytes.
fn json_serialized(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            // `json` sets the headers every JSON answer carries.
            let mut r = json(status, &serde_json::Value::Null);
            *r.body_mut() = body::full(bytes);
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise an admin answer");
            json(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": "internal error"}))
        }
    }
}

/// Sessions one `GET /sessions` lists unless `?limit=` says otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 1_000;
/// The most one `GET /sessions` lists: about 2 MB of answer. The gateway
/// keeps only these while its store scans the rest; listing 100,000 of a
/// million raised its resident memory by 118 MB, 10,000 by 28 MB
/// (docs/benchmarks.md, session 27).
pub const MAX_LIST_LIMIT: usize = 10_000;

/// `?limit=N` (1..=[`MAX_LIST_LIMIT`]), or the default.
fn query_limit(query: Option<&str>) -> Result<usize, String> {
    let given = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "limit")
            .map(|(_, v)| v.into_owned())
    });
    let Some(text) = given else {
        return Ok(DEFAULT_LIST_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!("limit must be between 1 and {MAX_LIST_LIMIT}")),
    }
}

fn query_user(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.into_owned())
}

/// The answer to `GET /sessions`. Typed, as [`MintedBatch`] is, so that a
/// listing of many sessions is not a `serde_json::Value` tree first.
#[derive(Serialize)]
struct Listed<'a> {
    count: usize,
    total: usize,
    truncated: bool,
    sessions: Vec<Described<'a>>,
}

/// One listed session: never its token, hash or CSRF secret.
#[derive(Serialize)]
struct Described<'a> {
    id: String,
    user: Option<&'a str>,
    ip_prefix: Option<String>,
    created_at: String,
    last_seen: String,
    expires_at: String,
    /// How the session's user signed in: `password` (`[[users]]`), `oidc`
    /// (the provider), or `null` (anonymous, or minted by the admin API).
    login: Option<&'static str>,
    /// The upstream servers it is pinned to (one per group of servers it
    /// used, see `proxy::balance`), as the routes in force name them; a
    /// server that no route names any more shows as its 16-digit key.
    upstreams: Vec<String>,
}

/// The names of the servers of the routes in force, by their pin key.
struct ServerNames(std::collections::HashMap<ServerKey, String>);

impl ServerNames {
    fn of(table: &crate::proxy::table::Table) -> ServerNames {
        let servers = table.router.routes().iter().flat_map(|r| r.servers.as_slice());
        ServerNames(servers.map(|s| (s.key(), s.upstream.to_string())).collect())
    }

    fn name(&self, key: &ServerKey) -> String {
        match self.0.get(key) {
            Some(name) => name.clone(),
            None => format!("{:016x}", key.0),
        }
    }
}

impl<'a> Described<'a> {
    fn of(r: &'a SessionRecord, names: &ServerNames) -> Described<'a> {
        Described {
            id: r.id.to_string(),
            user: r.identity.as_ref().map(|i| i.user.as_str()),
            ip_prefix: r.binding.ip.map(|n| n.to_string()),
            created_at: rfc3339(r.created_at),
            last_seen: rfc3339(r.last_seen),
            expires_at: rfc3339(r.expires_at),
            login: if r.provider_login {
                Some("oidc")
            } else if r.login_entry.is_some() {
                Some("password")
            } else {
                None
            },
            upstreams: r.servers.iter().map(|k| names.name(k)).collect(),
        }
    }
}
