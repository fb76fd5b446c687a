//! The foundation: TLS termination, routing, forwarding, limits, shutdown, admin, config
//! errors and the access log. Sessions are tested elsewhere.
//!
//! Modules by concern:
//! - `protocol`: HTTP/1.1 and HTTP/2 on one port, ALPN, HTTP/1.0, plaintext on the TLS port.
//! - `redirect`: the plain-HTTP redirect listener.
//! - `proxy_protocol`: client addresses from a TCP load balancer's PROXY header.
//! - `routing`: route choice, path normalisation, paths refused with 400.
//! - `forwarding`: what the upstream receives and what the client gets back (headers).
//! - `hsts`: `Strict-Transport-Security` on every HTTPS response.
//! - `framing`: clickjacking protection added to upstream pages that state none.
//! - `upstream_tls`: `https://` upstreams, verified, with an optional client certificate.
//! - `upstream_errors`: 502 and 504 without leaking the upstream.
//! - `balancing`: several upstreams per route, sticky sessions or round-robin, failover.
//! - `pinning`: a sticky route's server is pinned in the session: reloads, maintenance and
//!   restarts do not move sessions back and forth.
//! - `draining`: a drained server keeps its pinned sessions and takes no new ones.
//! - `health_checks`: active health checks leave out servers that fail them, until they pass.
//! - `limits`: body and header limits, slow clients, the connection limit.
//! - `websocket`: upgrades through the gateway.
//! - `large_bodies`: 50 MB each way through the binary in bounded memory.
//! - `shutdown`: graceful shutdown, in-process and by signal.
//! - `admin`: health and metrics.
//! - `config_errors`: what `check` and a failed start tell the operator; `gen-cert`.
//! - `cross_origin`: state-changing requests from other origins refused with 403 (CSRF).
//! - `access_log`: the JSON access log of the binary.
//! - `idp_kit`: the test kit's mock OpenID Connect provider, on its own (no gateway).
//! - `tls_reload`: a new certificate without a restart (admin API and SIGHUP), new tickets.
//! - `route_reload`: `[[routes]]` put in force by a reload (admin API and SIGHUP), open connections included.

mod access_log;
mod admin;
mod balancing;
mod config_errors;
mod cross_origin;
mod draining;
mod forwarding;
mod framing;
mod health_checks;
mod hsts;
mod idp_kit;
mod large_bodies;
mod limits;
mod pinning;
mod protocol;
mod proxy_protocol;
mod redirect;
mod route_reload;
mod routing;
mod shutdown;
mod tls_reload;
mod upstream_errors;
mod upstream_tls;
mod websocket;
mod workers;
