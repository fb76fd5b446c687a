//! The request pipeline.
//!
//! Every request passes the same phases over one [`RequestCtx`]:
//! request filter (limits, path, route) → gateway endpoints → session stage →
//! upstream request filter (hop-by-hop, forwarding and identity headers) →
//! upstream exchange → response filter → logging, which always runs.
//! Nothing here may forward a request as authenticated after an error in the
//! session path (SECURITY.md rule 1).

pub mod balance;
pub mod body;
mod framing;
pub mod headers;
pub mod health_check;
pub mod identity;
pub mod table;
mod upgrade;
pub mod upstream;
mod upstream_cookies;

use crate::auth::endpoints::{self, Auth, EndpointRequest};
use crate::config::{AuthMode, Config, CrossOrigin};
use crate::cross_origin;
use crate::error::GatewayError;
use crate::metrics::{Metrics, UpstreamErrorKind};
use crate::routing::{normalize_path, PathError, Route};
use crate::server::StartError;
use crate::session::token::SessionId;
use crate::session::{Live, Lookup, SessionError, Sessions};
use balance::Server;
use body::{Body, UploadHook};
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::Limited;
use hyper::body::Incoming;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// State shared by every connection.
pub struct Shared {
    pub config: Arc<Config>,
    /// The routes in force (replaced by a reload), and every upstream
    /// origin named since the start.
    pub routes: Arc<table::Tables>,
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<Sessions>,
    pub auth: Auth,
    owned_headers: identity::OwnedHeaders,
}

impl Shared {
    /// Fails if the password-hashing threads cannot be placed on `[login] hash_cpus`.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, sessions: Arc<Sessions>) -> Result<Shared, StartError> {
        let readings = crate::routing::Readings {
            fold_case: !config.server.upstream_paths_case_sensitive,
            format_suffix: config.server.upstream_paths_format_suffix,
        };
        let routes = Arc::new(table::Tables::new(
            &config.routes,
            readings,
            config.server.upstream_fail_timeout,
            metrics.clone(),
        ));
        let auth = Auth::new(&config).map_err(|source| StartError::HashCpus {
            cpus: config.login.hash_cpus.clone(),
            source,
        })?;
        Ok(Shared {
            auth,
            owned_headers: identity::OwnedHeaders::new(&config.headers),
            routes,
            config,
            metrics,
            sessions,
        })
    }
}

/// What a request needs from the connection it arrived on.
pub struct ConnInfo {
    pub peer: headers::PeerInfo,
    /// The upstream pool of the worker serving the connection: each worker
    /// is one thread, so its pooled connections never cross threads.
    pub upstream: upstream::UpstreamClient,
    /// The session this connection verified last (see `session::recent`).
    pub recent: crate::session::recent::Recent,
    /// `upstream_timeout`'s timer, reused by the connection's requests.
    pub upstream_deadline: upstream::DeadlineTimer,
}

/// What one request accumulates while it passes the phases; read by logging.
pub struct RequestCtx<'s> {
    pub start: Instant,
    pub peer: SocketAddr,
    pub client_ip: IpAddr,
    pub method: Method,
    /// The request target as received: a shared handle, not a copy.
    pub target: Option<PathAndQuery>,
    /// The normalised path, only when it differs from the target's path.
    pub normalized: Option<String>,
    /// Borrowed from the router: no reference counting per request.
    pub route: Option<&'s Route>,
    pub upstream_ms: Option<f64>,
    /// The server the request went to (last, if it was tried on several).
    pub server: Option<&'s Server>,
    pub session_id: Option<crate::session::token::SessionId>,
    pub version: Version,
}

impl RequestCtx<'_> {
    /// The path to log: normalised when it could be normalised, else the raw one.
    pub fn path(&self) -> &str {
        match (&self.normalized, &self.target) {
            (Some(p), _) => p,
            (None, Some(t)) => t.path(),
            (None, None) => "",
        }
    }
}

/// Entry point from the server: never fails, always logs. `table` is the
/// routes in force (see [`table::Tables::is_current`]). `upload` wraps a
/// request body that starts on its way upstream (see [`UploadHook`]).
pub async fn handle(
    shared: &Shared,
    table: &table::Table,
    conn: &ConnInfo,
    req: Request<Incoming>,
    upload: UploadHook<'_>,
) -> Response<Body> {
    let mut ctx = RequestCtx {
        start: Instant::now(),
        peer: conn.peer.addr,
        client_ip: conn.peer.addr.ip(),
        method: req.method().clone(),
        target: req.uri().path_and_query().cloned(),
        normalized: None,
        route: None,
        upstream_ms: None,
        server: None,
        session_id: None,
        version: req.version(),
    };
    let has_body = request_has_body(&req);
    // The pipeline takes the request out when it forwards it or hands it to
    // an endpoint; left here, it was answered without its body being read.
    let mut unread = Some(req);
    let (mut resp, failed) = match pipeline(shared, table, conn, &mut ctx, &mut unread, upload).await {
        Ok(resp) => (resp, false),
        Err(err) => (error_response(shared, &ctx, err), true),
    };
    if let Some(req) = unread.filter(|_| has_body && ctx.version == Version::HTTP_2) {
        // Boxed: rare, and its timer would otherwise enlarge every
        // request's future.
        Box::pin(body::drain_briefly(req.into_body())).await;
    }
    if has_body
        && (ctx.upstream_ms.is_none() || failed)
        && ctx.version < Version::HTTP_2
        && resp.extensions().get::<body::BodyRead>().is_none()
    {
        // Answered locally, or failed upstream (a 502 whose body was still
        // streaming): the body may be unread, and its bytes must never be
        // parsed as the next request on a kept-alive HTTP/1 connection.
        // hyper closes it then; saying so keeps the client from reusing it.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    finish(shared, table, &ctx, &resp);
    resp
}

fn request_has_body(req: &Request<Incoming>) -> bool {
    !req.body().is_end_stream()
}

fn error_response(shared: &Shared, ctx: &RequestCtx<'_>, err: GatewayError) -> Response<Body> {
    if err.is_server_side() {
        tracing::warn!(peer = %ctx.peer, path = ctx.path(), error = %err, "request failed");
    } else {
        tracing::debug!(peer = %ctx.peer, path = ctx.path(), error = %err, "request refused");
    }
    match &err {
        GatewayError::UpstreamConnect(_) | GatewayError::UpstreamOther(_) => {
            let kind = if matches!(err, GatewayError::UpstreamConnect(_)) {
                UpstreamErrorKind::Connect
            } else {
                UpstreamErrorKind::Other
            };
            shared.metrics.upstream_error(kind);
        }
        GatewayError::UpstreamTimeout => shared.metrics.upstream_error(UpstreamErrorKind::Timeout),
        // Routed requests are counted by route in `finish`.
        _ if ctx.route.is_none() => shared.metrics.request_refused(err.refusal()),
        _ => {}
    }
    err.into_response()
}

/// Logging and metrics: runs for every request, whatever happened.
fn finish(shared: &Shared, table: &table::Table, ctx: &RequestCtx<'_>, resp: &Response<Body>) {
    let total = ctx.start.elapsed();
    let status = resp.status();
    if let Some(m) = ctx.route.as_ref().and_then(|r| table.route_metrics(r)) {
        m.observe(status, total.as_secs_f64());
    }
    if !shared.config.server.access_log {
        return;
    }
    tracing::info!(
        target: "sessiongate::access",
        method = %ctx.method,
        path = ctx.path(),
        status = status.as_u16(),
        route = ctx.route.as_ref().map(|r| r.label.as_str()).unwrap_or("-"),
        client_ip = %ctx.client_ip,
        upstream = %ServerName(ctx.server),
        upstream_ms = ctx.upstream_ms.unwrap_or(0.0),
        total_ms = total.as_secs_f64() * 1000.0,
        session_id = ctx.session_id.map(|id| id.to_string()).unwrap_or_default(),
    );
}

/// The access log's `upstream`: the server's origin, or `-`.
struct ServerName<'a>(Option<&'a Server>);

impl std::fmt::Display for ServerName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(server) => server.upstream.fmt(f),
            None => f.write_str("-"),
        }
    }
}

async fn pipeline<'s>(
    shared: &'s Shared,
    table: &'s table::Table,
    conn: &ConnInfo,
    ctx: &mut RequestCtx<'s>,
    slot: &mut Option<Request<Incoming>>,
    upload: UploadHook<'_>,
) -> Result<Response<Body>, GatewayError> {
    let Some(req) = slot.as_mut() else {
        return Err(GatewayError::Internal("request already taken".into()));
    };
    // Request filter: limits and framing.
    let server = &shared.config.server;
    if req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > server.max_uri_bytes {
        return Err(GatewayError::UriTooLong);
    }
    // hyper bounds an HTTP/1 head's field count itself; an HTTP/2 one only
    // by its bytes (each field counts 32 more there).
    if req.headers().len() > server.max_headers || headers::header_bytes(req.headers()) > server.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge);
    }
    if req.version() == Version::HTTP_10 && req.headers().contains_key(header::TRANSFER_ENCODING) {
        return Err(GatewayError::BadRequest("HTTP/1.0 with Transfer-Encoding"));
    }
    // `None`: the path is already normal and the target is forwarded as received.
    ctx.normalized = match normalize_path(req.uri().path())? {
        Cow::Borrowed(_) => None,
        Cow::Owned(p) => Some(p),
    };
    let path = ctx.normalized.as_deref().unwrap_or(req.uri().path());
    let client = conn.peer.client(req.headers(), &shared.config.server.trusted_proxies);
    ctx.client_ip = client.ip;
    let host = request_host(req)?;

    if path.starts_with(endpoints::PREFIX) {
        let ep = EndpointRequest {
            sessions: &shared.sessions,
            auth: &shared.auth,
            client_ip: client.ip,
            authority: request_authority(req),
        };
        let path = path.to_owned();
        let req = take(slot)?;
        // Boxed: the endpoints' state is large and rare; inline it would be
        // copied with every proxied request's future.
        return Box::pin(endpoints::handle(ep, &path, req)).await;
    }

    let route: &'s Route = match table.router.route(host.as_ref().map(|h| &*h.name), path) {
        Ok(route) => route.ok_or(GatewayError::NoRoute)?,
        Err(PathError::MissingSlash) => return Err(missing_slash(path, req)),
        Err(e) => return Err(e.into()),
    };
    ctx.route = Some(route);
    let upgrade_value = req.headers().get(header::UPGRADE).cloned();
    if route.cross_origin == CrossOrigin::Reject && cross_origin::needs_check(req.method(), upgrade_value.is_some()) {
        cross_origin_check(shared, ctx, req)?;
    }
    let forwarded_host = host.and_then(|h| h.forwarded());

    if let Some(limit) = route.max_body_bytes {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(GatewayError::BodyTooLarge);
        }
    }

    // Session stage.
    let mut set_cookie = None;
    let session = match route.auth {
        AuthMode::None => None,
        AuthMode::Optional | AuthMode::Required => {
            let looked_up = match shared.sessions.recall(&conn.recent, req.headers(), client.ip) {
                Ok(live) => Lookup::Valid(live),
                Err(missed) => {
                    shared
                        .sessions
                        .lookup_recent(&conn.recent, req.headers(), client.ip, missed)
                        .await?
                }
            };
            let found = match looked_up {
                Lookup::Valid(live) => Some(live),
                Lookup::None { .. } => {
                    let place = |id: &SessionId| route.servers.placement(id, &table.health);
                    match Box::pin(shared.sessions.issue_placed(client.ip, req.headers(), place)).await {
                        Ok((token, live)) => {
                            set_cookie = Some(shared.sessions.set_cookie(&token));
                            Some(live)
                        }
                        // Past `new_per_ip_per_minute`: an `optional` route goes
                        // on without a session (an anonymous visitor, as far as
                        // the upstream can tell); a `required` one is refused
                        // as it would have been, without the cookie.
                        Err(SessionError::NewSessionLimit { .. }) => None,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            match found {
                Some(live) => {
                    ctx.session_id = Some(live.record.id);
                    if route.auth == AuthMode::Required {
                        if let Some(resp) = authorize(route, &live, req, shared.sessions.absolute_ms()) {
                            return Ok(with_cookie(resp, set_cookie));
                        }
                    }
                    Some(live)
                }
                None if route.auth == AuthMode::Required => return Ok(unauthenticated(req)),
                None => None,
            }
        }
    };

    // Upstream request filter. Hop-by-hop first, then our headers.
    let owned = &shared.owned_headers;
    let wants_upgrade = headers::strip(req.headers_mut(), |n| {
        headers::is_client_forwarding(n) || owned.collides(n)
    }) && req.version() == Version::HTTP_11;
    let upgrade_proto = upgrade_value.filter(|_| wants_upgrade);
    headers::set_forwarding(req.headers_mut(), &client, forwarded_host);
    crate::session::cookies::strip(req.headers_mut(), shared.sessions.cookie_name());
    if let Some(live) = &session {
        identity::apply(req.headers_mut(), &shared.config.headers, live);
    }
    // The target's authority (HTTP/2's `:authority`, an HTTP/1.1
    // absolute-form target) overrides `Host` (RFC 9112 section 3.2.2): it
    // picked the route, so it is the host the upstream is told, without
    // any userinfo.
    if let Some(h) = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str().rsplit('@').next().unwrap_or_default()).ok())
    {
        req.headers_mut().insert(header::HOST, h);
    }
    if let Some(proto) = &upgrade_proto {
        let h = req.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto.clone());
    }

    let client_on_upgrade = upgrade_proto.as_ref().map(|_| hyper::upgrade::on(&mut *req));
    let req = take(slot)?;
    let resp = match route.servers.single() {
        Some(server) => {
            ctx.server = Some(server);
            let upstream_req = build_upstream_request(req, route, server, ctx.normalized.as_deref(), upload)?;
            // The client boxes the exchange: only that pointer enters this future.
            let sent = conn.upstream.request(upstream_req);
            exchange(shared, conn, ctx, sent).await?
        }
        // Boxed: the retry's state stays out of every other request's future.
        None => {
            Box::pin(exchange_balanced(
                shared,
                table,
                conn,
                ctx,
                route,
                session.as_ref(),
                req,
                upload,
            ))
            .await?
        }
    };
    let mut resp = match (client_on_upgrade, resp.status()) {
        (Some(on_client), StatusCode::SWITCHING_PROTOCOLS) => upgrade::splice(on_client, resp),
        (_, _) => response_filter(resp),
    };
    if let Some(data) = session_response_filter(shared, route, resp.headers_mut()) {
        if let Some(live) = &session {
            Box::pin(save_data(shared, live, data)).await;
        }
    }
    Ok(with_cookie(resp, set_cookie))
}

/// The largest request body (declared by its length) that a route with
/// several servers reads whole before sending it, so that it can go to the
/// next server when a connection fails. Larger bodies, and bodies of
/// unknown length, stream as everywhere else.
const REPLAYABLE_BODY_BYTES: u64 = 64 * 1024;

/// Sends the request to one of a route's several servers (see `balance`).
/// A server whose connection fails is marked down, and the request goes to
/// the next one, since nothing of it reached the app: as it is when it has
/// no body, with its body read whole first when that is at most
/// [`REPLAYABLE_BODY_BYTES`]. A larger body gets the 502: it streams from
/// the client into the failed attempt, and no copy is kept to send again.
/// The server that answers a session is pinned in it (see `balance`).
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn exchange_balanced<'s>(
    shared: &Shared,
    table: &table::Table,
    conn: &ConnInfo,
    ctx: &mut RequestCtx<'s>,
    route: &'s Route,
    session: Option<&Arc<Live>>,
    req: Request<Incoming>,
    upload: UploadHook<'_>,
) -> Result<Response<Incoming>, GatewayError> {
    let health = &*table.health;
    let sticky = session.map(|live| (&live.record.id, live.record.servers()));
    let (mut attempt, mut server) = route.servers.begin(sticky, health);
    let has_body = request_has_body(&req);
    let replayable = !has_body
        || req
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n <= REPLAYABLE_BODY_BYTES);
    let mut upstream_req = build_upstream_request(req, route, server, ctx.normalized.as_deref(), upload)?;
    let body = if has_body && replayable {
        Some(read_whole(shared, &mut upstream_req).await?)
    } else {
        None
    };
    loop {
        ctx.server = Some(server);
        let again = replayable.then(|| replay(&upstream_req, body.as_ref()));
        let sent = conn.upstream.request(upstream_req);
        let err = match exchange(shared, conn, ctx, sent).await {
            Err(GatewayError::UpstreamConnect(err)) => err,
            Ok(resp) => {
                table.answered(server);
                if health.mark_up(server) {
                    tracing::info!(event = "upstream_up", upstream = %server.upstream, route = %route.label, "upstream server answers again");
                }
                if let Some(live) = session {
                    if let Some(request) = route.servers.pin_for(live.record.servers(), server) {
                        shared.sessions.pin(live, request);
                    }
                }
                return Ok(resp);
            }
            Err(other) => return Err(other),
        };
        if health.mark_down(server) {
            shared.metrics.upstream_down(&server.upstream);
            tracing::warn!(
                event = "upstream_down",
                upstream = %server.upstream,
                route = %route.label,
                error = %err,
                retry_in = ?health.fail_timeout(),
                "upstream server unreachable: marked down, its requests go to the route's other servers"
            );
        }
        match (again, route.servers.next(&mut attempt, health)) {
            (Some(mut again), Some(next)) => {
                server = next;
                *again.uri_mut() = server_uri(server, again.uri().path_and_query().cloned())?;
                upstream_req = again;
            }
            _ => return Err(GatewayError::UpstreamConnect(err)),
        }
    }
}

/// Reads the request's body whole (within the route's `max_body_bytes`,
/// and `upstream_timeout`), and puts it back as one piece.
async fn read_whole(shared: &Shared, req: &mut Request<Body>) -> Result<bytes::Bytes, GatewayError> {
    use http_body_util::BodyExt;
    let streamed = std::mem::replace(req.body_mut(), body::empty());
    let read = tokio::time::timeout(shared.config.server.upstream_timeout, streamed.collect()).await;
    let whole = match read {
        Err(_) => return Err(GatewayError::BodyTimeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(GatewayError::BodyTooLarge),
        Ok(Err(_)) => return Err(GatewayError::BadRequest("request body could not be read")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    *req.body_mut() = body::full(whole.clone());
    Ok(whole)
}

/// A copy of a request, with `body` (read whole) or none, to send again
/// elsewhere.
fn replay(req: &Request<Body>, body: Option<&bytes::Bytes>) -> Request<Body> {
    let mut again = Request::new(body.map_or_else(body::empty, |b| body::full(b.clone())));
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.version_mut() = req.version();
    *again.headers_mut() = req.headers().clone();
    again
}

/// The request out of `handle`'s slot, for the phase that consumes it
/// (forwarding, or an endpoint, which reads its body itself).
fn take(slot: &mut Option<Request<Incoming>>) -> Result<Request<Incoming>, GatewayError> {
    slot.take()
        .ok_or_else(|| GatewayError::Internal("request already taken".into()))
}

/// Refuses a state-changing request from another origin (see
/// `cross_origin`) before any session work; a refusal is a security event,
/// logged and counted.
fn cross_origin_check(shared: &Shared, ctx: &RequestCtx<'_>, req: &Request<Incoming>) -> Result<(), GatewayError> {
    let authority = request_authority(req);
    let trusted = &shared.config.cross_origin.trusted_origins;
    let Err(refusal) = cross_origin::check(req.headers(), authority.as_deref(), trusted) else {
        return Ok(());
    };
    shared.metrics.cross_origin_refused(refusal.as_str());
    // What the browser said, cut short: the log is not a place for 8 KiB
    // of whatever a client typed.
    let said = |name: &str| {
        req.headers().get(name).map_or_else(String::new, |v| {
            let v = String::from_utf8_lossy(v.as_bytes());
            v.chars().take(200).collect()
        })
    };
    tracing::warn!(
        event = "cross_origin_refused",
        by = refusal.as_str(),
        peer = %ctx.peer,
        client_ip = %ctx.client_ip,
        method = %ctx.method,
        path = ctx.path(),
        route = ctx.route.map_or("-", |r| r.label.as_str()),
        origin = said("origin"),
        sec_fetch_site = said("sec-fetch-site"),
        "state-changing request from another origin refused"
    );
    Err(GatewayError::CrossOrigin(refusal))
}

/// The redirect for a path that is a route's prefix without its final `/`:
/// to the normal path with the slash and the query, 301 for `GET` and
/// `HEAD` (what nginx answers), 308 otherwise so that the method and body
/// are sent again. Same-origin and relative, like every redirect of ours.
fn missing_slash(path: &str, req: &Request<Incoming>) -> GatewayError {
    let location = match req.uri().query() {
        Some(query) => format!("{path}/?{query}"),
        None => format!("{path}/"),
    };
    let status = match *req.method() {
        Method::GET | Method::HEAD => StatusCode::MOVED_PERMANENTLY,
        _ => StatusCode::PERMANENT_REDIRECT,
    };
    match HeaderValue::from_str(&location) {
        Ok(location) => GatewayError::MissingSlash { location, status },
        Err(_) => GatewayError::BadPath(PathError::MissingSlash),
    }
}

/// Decides whether a session may use an `auth = "required"` route; `Some`
/// is the answer when it may not.
fn authorize(route: &Route, live: &Live, req: &Request<Incoming>, absolute_ms: u64) -> Option<Response<Body>> {
    let Some(identity) = &live.record.identity else {
        return Some(unauthenticated(req));
    };
    if !route.groups.is_empty() && !identity.groups.iter().any(|g| route.groups.contains(g)) {
        return Some(crate::error::plain(StatusCode::FORBIDDEN, "Forbidden"));
    }
    if let Some(max) = route.max_auth_age_ms {
        if live
            .record
            .signed_in_before(crate::session::record::now_ms(), max, absolute_ms)
        {
            return Some(sign_in_again(req, max));
        }
    }
    None
}

/// Browsers go to the login form and come back; other clients get 401.
fn unauthenticated(req: &Request<Incoming>) -> Response<Body> {
    login_required(req, None)
}

/// A step-up route whose user signed in longer ago than `max_ms`: the same
/// answer as without a login, and the login page is told how recent the
/// new sign-in must be (the OpenID provider is asked to sign the user in
/// again).
fn sign_in_again(req: &Request<Incoming>, max_ms: u64) -> Response<Body> {
    login_required(req, Some(max_ms.div_ceil(1000)))
}

fn login_required(req: &Request<Incoming>, max_age_secs: Option<u64>) -> Response<Body> {
    let wants_html = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")));
    if wants_html {
        let back = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let rd: String = form_urlencoded::byte_serialize(back.as_bytes()).collect();
        let location = match max_age_secs {
            Some(age) => format!("/.sessiongate/login?rd={rd}&max_age={age}"),
            None => format!("/.sessiongate/login?rd={rd}"),
        };
        return endpoints::redirect(StatusCode::FOUND, &location);
    }
    let error = match max_age_secs {
        Some(_) => "reauthentication required",
        None => "authentication required",
    };
    let mut resp = endpoints::json(StatusCode::UNAUTHORIZED, &serde_json::json!({ "error": error }));
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Cookie realm=\"sessiongate\""),
    );
    resp
}

/// Adds a newly issued session cookie; such responses are never cached.
fn with_cookie(mut resp: Response<Body>, cookie: Option<HeaderValue>) -> Response<Body> {
    if let Some(c) = cookie {
        let h = resp.headers_mut();
        h.append(header::SET_COOKIE, c);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Towards the client: the upstream can never set our cookie, its own
/// cookies are hardened (see `upstream_cookies`), and its session-data
/// header is consumed here, never passed on; it is returned for
/// [`save_data`]. The route's framing policy is added (see `framing`).
fn session_response_filter(shared: &Shared, route: &Route, headers: &mut http::HeaderMap) -> Option<HeaderValue> {
    let data_name = &shared.config.headers.session_data_set;
    // One pass over the few names of a response costs less than looking up
    // four that are nearly always absent (hashing a custom name is the dear part).
    let (mut set_cookie, mut data, mut xfo, mut csp) = (false, false, false, false);
    for n in headers.keys() {
        set_cookie |= n == header::SET_COOKIE;
        data |= n == data_name;
        xfo |= n == header::X_FRAME_OPTIONS;
        csp |= n == header::CONTENT_SECURITY_POLICY;
    }
    framing::apply(route.framing, headers, xfo, csp);
    let name = shared.sessions.cookie_name();
    if set_cookie {
        let policy = &shared.config.upstream_cookies;
        let kept: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| !sets_cookie(v.as_bytes(), name.as_bytes()))
            .map(|v| upstream_cookies::harden(v, policy).unwrap_or_else(|| v.clone()))
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in kept {
            headers.append(header::SET_COOKIE, v);
        }
    }
    if data {
        headers.remove(data_name)
    } else {
        None
    }
}

/// Stores the session data an upstream sent, when it is text and small enough.
async fn save_data(shared: &Shared, live: &Live, data: HeaderValue) {
    let max = shared.config.session.max_data_bytes;
    match data.to_str() {
        Ok(d) if d.len() <= max => {
            if let Err(e) = shared.sessions.set_data(live, d.to_string()).await {
                tracing::warn!(session_id = %live.record.id, error = %e, "session data not saved");
            }
        }
        _ => tracing::warn!(
            session_id = %live.record.id,
            bytes = data.len(),
            max,
            "upstream session data ignored: too large or not text"
        ),
    }
}

/// Whether a `Set-Cookie` value sets the cookie `name` (case-sensitive name,
/// leading whitespace tolerated).
fn sets_cookie(value: &[u8], name: &[u8]) -> bool {
    let v = value.trim_ascii_start();
    v.len() > name.len() && v.starts_with(name) && v[name.len()..].trim_ascii_start().first() == Some(&b'=')
}

/// Rewrites the request for the upstream: absolute URI for the pooled
/// client, HTTP/1.1, limited body, which keeps its connection busy until it
/// is sent. The received target is reused unless normalisation changed the
/// path (`normalized`).
fn build_upstream_request(
    req: Request<Incoming>,
    route: &Route,
    server: &Server,
    normalized: Option<&str>,
    upload: UploadHook<'_>,
) -> Result<Request<Body>, GatewayError> {
    let unforwardable = || GatewayError::BadRequest("request target cannot be forwarded");
    let (mut parts, incoming) = req.into_parts();
    let target = match normalized {
        None => parts.uri.path_and_query().cloned().ok_or_else(unforwardable)?,
        Some(path) => {
            let mut pq = path.to_owned();
            if let Some(q) = parts.uri.query() {
                pq.push('?');
                pq.push_str(q);
            }
            PathAndQuery::try_from(pq).map_err(|_| unforwardable())?
        }
    };
    parts.uri = server_uri(server, Some(target))?;
    parts.version = Version::HTTP_11;
    // No body (every GET): nothing to watch, no allocation.
    let uploads = !incoming.is_end_stream();
    let body: Body = match route.max_body_bytes {
        Some(limit) => Body::boxed(Limited::new(incoming, usize::try_from(limit).unwrap_or(usize::MAX))),
        None => Body::Stream(incoming),
    };
    Ok(Request::from_parts(parts, if uploads { upload(body) } else { body }))
}

/// The absolute URI the pooled client needs: the server's pool name, and
/// the request's target.
pub(crate) fn server_uri(server: &Server, target: Option<PathAndQuery>) -> Result<Uri, GatewayError> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(server.upstream.scheme.clone());
    uri.authority = Some(server.pool_authority.clone());
    uri.path_and_query = target;
    Uri::from_parts(uri).map_err(|_| GatewayError::BadRequest("request target cannot be forwarded"))
}

/// Waits for the upstream's response headers within `upstream_timeout`.
async fn exchange(
    shared: &Shared,
    conn: &ConnInfo,
    ctx: &mut RequestCtx<'_>,
    sent: hyper_util::client::legacy::ResponseFuture,
) -> Result<Response<Incoming>, GatewayError> {
    // Timed only for the access log: two clock reads per request otherwise.
    let started = shared.config.server.access_log.then(Instant::now);
    let result = conn
        .upstream_deadline
        .run(shared.config.server.upstream_timeout, sent)
        .await;
    ctx.upstream_ms = Some(started.map_or(0.0, |s| s.elapsed().as_secs_f64() * 1000.0));
    match result {
        None => Err(GatewayError::UpstreamTimeout),
        Some(Ok(resp)) => Ok(resp),
        Some(Err(e)) => Err(classify_client_error(e)),
    }
}

fn classify_client_error(e: hyper_util::client::legacy::Error) -> GatewayError {
    if e.is_connect() {
        return GatewayError::UpstreamConnect(error_chain(&e));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return GatewayError::BodyTooLarge;
        }
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large)
        {
            // hyper says only "message head is too large": name the key that fixes it.
            return GatewayError::UpstreamOther(format!(
                "{}; the response head has more header fields than [server] upstream_max_headers, or is larger than about 400 KiB",
                error_chain(&e)
            ));
        }
        source = err.source();
    }
    GatewayError::UpstreamOther(error_chain(&e))
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Response filter: hop-by-hop removal towards the client.
fn response_filter(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, incoming) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::Stream(incoming))
}

/// The authority the client addressed, with port (for same-origin checks).
fn request_authority(req: &Request<Incoming>) -> Option<String> {
    req.uri().authority().map(|a| a.as_str().to_string()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    })
}

/// The host the client addressed: lowercased, without port; with the `Host`
/// header it was read from, if it was.
struct RequestHost<'r> {
    name: Cow<'r, str>,
    header: Option<&'r HeaderValue>,
}

impl RequestHost<'_> {
    /// `X-Forwarded-Host`: the client's `Host` header itself (shared, not
    /// copied) when it already is the bare lowercase host, as it nearly always is.
    fn forwarded(&self) -> Option<HeaderValue> {
        match self.header {
            Some(v) if v.as_bytes() == self.name.as_bytes() => Some(v.clone()),
            _ => HeaderValue::from_str(&self.name).ok(),
        }
    }
}

/// RFC 9112 section 3.2: an HTTP/1.1 request carries exactly one `Host`,
/// and any `Host` is a bare `host[:port]`; a target's authority (HTTP/2's
/// `:authority`, an absolute-form target) wins over it. Anything else is
/// refused: the gateway could route by one host while the upstream reads
/// another.
fn request_host(req: &Request<Incoming>) -> Result<Option<RequestHost<'_>>, GatewayError> {
    let mut all = req.headers().get_all(header::HOST).iter();
    let header = all.next();
    if all.next().is_some() {
        return Err(GatewayError::BadHost("more than one Host header"));
    }
    let from_header = match header {
        Some(h) => Some(
            bare_host(h.as_bytes())
                .and_then(|range| std::str::from_utf8(&h.as_bytes()[range]).ok())
                .ok_or(GatewayError::BadHost("malformed Host header"))?,
        ),
        None if req.version() == Version::HTTP_11 => {
            return Err(GatewayError::BadHost("HTTP/1.1 request without Host"))
        }
        None => None,
    };
    let (host, header) = match (req.uri().authority(), from_header) {
        (Some(a), _) => {
            let h = a.host();
            (
                h.strip_prefix('[').and_then(|v6| v6.strip_suffix(']')).unwrap_or(h),
                None,
            )
        }
        (None, Some(h)) => (h, header),
        (None, None) => return Ok(None),
    };
    // `secure.test.` is `secure.test` to DNS and to name-based virtual
    // hosts (nginx drops the dot): it must pick that host's routes.
    let host = host.strip_suffix('.').unwrap_or(host);
    // Hosts almost always arrive lowercase: borrow them then.
    let name = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Ok(Some(RequestHost { name, header }))
}

/// Bytes of a registered name or an IPv4 address in a `Host`.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        i += 1;
    }
    table
};

/// Where the host lies in a bare `host[:port]` (inside the brackets of an
/// IPv6 literal); `None` for anything else: userinfo, a path, a list, a
/// space. A byte scan rather than `Authority`'s parser, which would copy the
/// value on every request.
fn bare_host(v: &[u8]) -> Option<std::ops::Range<usize>> {
    let (host, port) = match v.strip_prefix(b"[") {
        Some(rest) => {
            let end = 1 + rest.iter().position(|&b| b == b']')?;
            let literal = v[1..end].iter().all(|b| b.is_ascii_hexdigit() || b":.".contains(b));
            (literal.then_some(1..end)?, &v[end + 1..])
        }
        None => {
            let end = v.iter().position(|&b| !REG_NAME[usize::from(b)]).unwrap_or(v.len());
            (0..end, &v[end..])
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    (!host.is_empty() && port_ok).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::bare_host;

    #[test]
    fn a_host_value_is_a_bare_host_and_port() {
        for (ok, host) in [
            ("localhost", "localhost"),
            ("a.example:8443", "a.example"),
            ("127.0.0.1:1", "127.0.0.1"),
            ("[::1]:443", "::1"),
            ("[::ffff:10.0.0.1]", "::ffff:10.0.0.1"),
            ("x:", "x"),
        ] {
            assert_eq!(bare_host(ok.as_bytes()).map(|r| &ok[r]), Some(host), "{ok}");
        }
        for bad in [
            "", ":443", "a b", "a,b", "user@a", "a/b", "a:443:1", "a:123456", "a:x", "[::1", "[]", "[::1]x", "[g::1]",
            "a\tb",
        ] {
            assert_eq!(bare_host(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
