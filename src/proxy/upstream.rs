//! The pooled upstream client: keep-alive HTTP/1.1 connections per origin,
//! shared by every request (hyper-util's legacy client does the pooling).
//!
//! Requests reach the pool under a short name per origin (`0`, `1`, ...),
//! not under the configured host and port, and [`Resolver`] turns the name
//! back into the origin's addresses when a connection is made. Why: the
//! legacy pool keys its connections by the request's scheme and authority,
//! and hashes the authority one byte at a time with SipHash, twice per
//! request (checkout and return). For `127.0.0.1:18280` that was about
//! 2,200 instructions of a verified request's 47,400 (callgrind,
//! `bench/ir-per-request.sh`, session 19). The upstream never sees the name: requests
//! go out in origin form, and `Host` is the client's (set by the pipeline).

use crate::config::{RouteConfig, ServerConfig, Upstream, UpstreamTls, DEFAULT_MAX_HEADERS};
use crate::proxy::body::Body;
use http::uri::Authority;
use http::Uri;
use hyper_util::client::legacy::connect::{dns::Name, Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

pub type UpstreamClient = Client<Connector, Body>;

/// The distinct upstream origins the routes have named since the start,
/// in order of first appearance; an origin's position is its pool name and
/// its health slot.
///
/// Shared by the workers' connectors and the route tables, and only ever
/// extended: a reload that names new servers appends them, and a server
/// that no route names any more keeps its position. So a pool name means
/// the same origin for as long as the process runs, and the connections
/// pooled before a reload serve the same servers after it.
#[derive(Clone, Debug)]
pub struct Origins(Arc<arc_swap::ArcSwap<Vec<Arc<Origin>>>>);

#[derive(Debug)]
struct Origin {
    /// Compared as an origin: one server however it is spelled (the host's
    /// case, the default port written or not) is one pool and one health.
    upstream: Upstream,
    /// The host as configured, without IPv6 brackets.
    host: String,
    /// What an `https://` upstream's certificate must name (sent as SNI
    /// when it is a DNS name); `None` for `http://` ones.
    server_name: Option<ServerName<'static>>,
    port: u16,
    /// Set when `host` is an address: no lookup to make.
    addr: Option<SocketAddr>,
}

impl Origins {
    pub fn new(routes: &[RouteConfig]) -> Origins {
        let origins = Origins(Arc::new(arc_swap::ArcSwap::from_pointee(Vec::new())));
        origins.extend(routes);
        origins
    }

    /// Appends the origins of `routes` not yet known. A reload calls it
    /// before it builds the routes that use them.
    pub fn extend(&self, routes: &[RouteConfig]) {
        self.0.rcu(|known| {
            let mut list = Vec::clone(known);
            for upstream in routes.iter().flat_map(|r| r.upstreams.as_slice()) {
                if !list.iter().any(|o| o.upstream == *upstream) {
                    list.push(Arc::new(Origin::new(upstream)));
                }
            }
            list
        });
    }

    /// How many distinct origins the routes named.
    pub fn count(&self) -> usize {
        self.0.load().len()
    }

    /// The position of `upstream` among the origins: its pool name, and
    /// its slot in `balance::Health`.
    pub fn index_of(&self, upstream: &Upstream) -> Option<usize> {
        self.0.load().iter().position(|o| o.upstream == *upstream)
    }

    /// The authority that stands for `upstream` in requests to the pool.
    /// Every route's upstream is one of ours; one that is not (it cannot
    /// be) keeps its own authority, which [`Resolver`] does not know.
    pub fn pool_authority(&self, upstream: &Upstream) -> Authority {
        match self.index_of(upstream) {
            Some(i) => Authority::try_from(i.to_string()).unwrap_or_else(|_| upstream.authority.clone()),
            None => upstream.authority.clone(),
        }
    }

    /// Read when a connection is made, not per request.
    fn by_pool_name(&self, name: &str) -> Option<Arc<Origin>> {
        self.0.load().get(name.parse::<usize>().ok()?).cloned()
    }
}

impl Origin {
    fn new(upstream: &Upstream) -> Origin {
        let authority = &upstream.authority;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let https = upstream.scheme == http::uri::Scheme::HTTPS;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Origin {
            upstream: upstream.clone(),
            addr: host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)),
            server_name: https.then(|| ServerName::try_from(host.clone()).ok()).flatten(),
            host,
            port,
        }
    }
}

/// Resolves a pool name (see [`Origins`]) to its origin's addresses: an
/// address as configured, a host name through the system resolver on every
/// new connection, as hyper-util's own resolver would, but within
/// `upstream_connect_timeout` (hyper-util's connect timeout starts after
/// the lookup, so a resolver that does not answer held the request until
/// `upstream_timeout` and a 504, not the 502 an unreachable upstream gets).
#[derive(Clone, Debug)]
pub struct Resolver {
    origins: Origins,
    timeout: Duration,
    lookup: Lookup,
}

type Resolving = Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

/// How a host name becomes addresses (the system resolver, but for tests).
type Lookup = fn(String, u16) -> Resolving;

fn system_lookup(host: String, port: u16) -> Resolving {
    Box::pin(async move {
        Ok(tokio::net::lookup_host((host.as_str(), port))
            .await?
            .collect::<Vec<_>>()
            .into_iter())
    })
}

impl Resolver {
    fn new(origins: Origins, timeout: Duration) -> Resolver {
        Resolver {
            origins,
            timeout,
            lookup: system_lookup,
        }
    }
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        let Some(origin) = self.origins.by_pool_name(name.as_str()) else {
            let e = io::Error::new(io::ErrorKind::NotFound, format!("no upstream named {name}"));
            return Box::pin(std::future::ready(Err(e)));
        };
        if let Some(addr) = origin.addr {
            return Box::pin(std::future::ready(Ok(vec![addr].into_iter())));
        }
        let (host, timeout) = (origin.host.clone(), self.timeout);
        let lookup = (self.lookup)(host.clone(), origin.port);
        Box::pin(async move {
            match tokio::time::timeout(timeout, lookup).await {
                Ok(Ok(addrs)) => Ok(addrs),
                Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("resolving {host}: {e}"))),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("resolving {host}: no answer within {timeout:?}"),
                )),
            }
        })
    }
}

/// hyper-util's TCP connector, minus the connection facts it attaches to
/// every response, and with TLS for `https://` upstreams.
///
/// Why not `HttpConnector` as it is: a connection from it carries its
/// addresses (`HttpInfo`), and the legacy client inserts a copy into the
/// extensions of every response it returns: an allocation and a map insert
/// per request (about 350 instructions, with its free) for a value the
/// gateway never reads.
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector<Resolver>,
    /// `None` when no route's upstream is `https://`; read at every new
    /// connection, since a reload may replace it.
    tls: Option<Arc<arc_swap::ArcSwap<rustls::ClientConfig>>>,
    origins: Origins,
    /// The TLS handshake's bound, as the TCP connect's.
    timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

type ConnectError = Box<dyn std::error::Error + Send + Sync>;
type Connecting = Pin<Box<dyn Future<Output = Result<UpstreamIo, ConnectError>> + Send>>;

impl Connector {
    /// The TLS connector and the name to verify for `dst`, an `https://`
    /// pool name, and the host as configured (for messages).
    fn tls_for(&self, dst: &Uri) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>, String), ConnectError> {
        let origin = dst.host().and_then(|name| self.origins.by_pool_name(name));
        let (name, host) = origin
            .and_then(|o| Some((o.server_name.clone()?, o.host.clone())))
            .ok_or_else(|| format!("no https upstream named {dst}"))?;
        let config = self.tls.as_ref().ok_or("no [upstream_tls] client configuration")?;
        Ok((tokio_rustls::TlsConnector::from(config.load_full()), name, host))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        let tls = (dst.scheme() == Some(&http::uri::Scheme::HTTPS)).then(|| self.tls_for(&dst));
        let timeout = self.timeout;
        let connecting = self.tcp.call(dst);
        Box::pin(async move {
            let tcp = connecting.await?;
            let Some(tls) = tls else {
                return Ok(UpstreamIo::Plain(tcp));
            };
            let (connector, name, host) = tls?;
            match tokio::time::timeout(timeout, connector.connect(name, tcp.into_inner())).await {
                Ok(Ok(stream)) => Ok(UpstreamIo::Tls(Box::new(TokioIo::new(stream)))),
                Ok(Err(e)) => Err(format!("TLS with the upstream {host}: {e}").into()),
                Err(_) => Err(format!("TLS with the upstream {host}: no handshake within {timeout:?}").into()),
            }
        })
    }
}

/// An upstream connection that reports nothing beyond being one: plain TCP,
/// or TLS over it (boxed: the TLS state is large, and most upstreams are
/// plain). Its IO methods are `#[inline]`: without the hint, a plain
/// upstream's request cost about 400 instructions more (callgrind, session
/// 28).
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for UpstreamIo {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            UpstreamIo::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for UpstreamIo {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            UpstreamIo::Tls(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(io) => Pin::new(io).poll_flush(cx),
            UpstreamIo::Tls(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            UpstreamIo::Tls(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(io) => io.is_write_vectored(),
            UpstreamIo::Tls(io) => io.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }
}

/// The upstream client of one worker. `tls` is `[upstream_tls]`'s client
/// configuration, needed when a route's upstream is `https://`.
pub fn client(server: &ServerConfig, origins: Origins, tls: Option<&UpstreamTls>) -> UpstreamClient {
    let resolver = Resolver::new(origins.clone(), server.upstream_connect_timeout);
    let mut tcp = HttpConnector::new_with_resolver(resolver);
    tcp.set_connect_timeout(Some(server.upstream_connect_timeout));
    tcp.set_nodelay(true);
    // `https://` pool names reach the TCP connector too; TLS follows.
    tcp.enforce_http(false);
    let connector = Connector {
        tcp,
        tls: tls.map(|t| t.config.clone()),
        origins,
        timeout: server.upstream_connect_timeout,
    };
    let mut builder = Client::builder(TokioExecutor::new());
    if server.upstream_max_headers != DEFAULT_MAX_HEADERS {
        // Only when asked: with any other count hyper builds its parse
        // arrays element by element on every response (above 100 it
        // allocates them), ~280 more instructions per request at 99.
        builder.http1_max_headers(server.upstream_max_headers);
    }
    builder
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(server.upstream_pool_idle_timeout)
        .pool_max_idle_per_host(server.upstream_pool_max_idle_per_host)
        // The Host header is the client's, set by the pipeline.
        .set_host(false)
        .build(connector)
}

/// The timer of `[server] upstream_timeout`, kept by a connection between
/// its requests.
///
/// Why: `tokio::time::timeout` per request puts a new entry in the runtime's
/// timer wheel and takes it out again, under the driver's lock each way
/// (about 1.5 % of a verified request's instructions). Moved to a later
/// deadline, a registered timer is extended in place by one atomic store;
/// the wheel meets it again only when its old deadline comes, and then
/// files it under the new one. Requests of one HTTP/1 connection come one at
/// a time, so one timer serves them all; concurrent HTTP/2 streams that
/// find the slot empty make their own.
#[derive(Default)]
pub struct DeadlineTimer(Mutex<Option<Pin<Box<Sleep>>>>);

impl DeadlineTimer {
    /// Runs `fut` until it completes (`Some`) or `timeout` passes (`None`).
    pub async fn run<F: Future>(&self, timeout: Duration, fut: F) -> Option<F::Output> {
        let deadline = Instant::now() + timeout;
        let mut sleep = match self.slot().take() {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let mut fut = pin!(fut);
        let out = poll_fn(|cx| match fut.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending => sleep.as_mut().poll(cx).map(|()| None),
        })
        .await;
        // A future dropped before this point takes its timer with it; the
        // next request makes a new one.
        let mut slot = self.slot();
        if slot.is_none() {
            *slot = Some(sleep);
        }
        out
    }

    fn slot(&self) -> MutexGuard<'_, Option<Pin<Box<Sleep>>>> {
        // Nothing that runs under the lock can panic; a poisoned slot holds
        // at worst a timer that `run` resets before use.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;
    use tower_service::Service;

    fn route(upstream: &str) -> RouteConfig {
        RouteConfig::for_tests("/", &[upstream], AuthMode::None)
    }

    async fn resolve(origins: &Origins, name: &str) -> io::Result<Vec<SocketAddr>> {
        let name: Name = name.parse().unwrap_or_else(|e| panic!("{e}"));
        Ok(Resolver::new(origins.clone(), Duration::from_secs(5))
            .call(name)
            .await?
            .collect())
    }

    #[test]
    fn routes_to_one_origin_share_its_pool_name() {
        let routes = [
            route("http://127.0.0.1:8080"),
            route("http://app.internal:9000"),
            route("http://127.0.0.1:8080"),
            route("http://[::1]"),
        ];
        let origins = Origins::new(&routes);
        let names: Vec<String> = routes
            .iter()
            .map(|r| origins.pool_authority(&r.upstreams.as_slice()[0]).to_string())
            .collect();
        assert_eq!(names, ["0", "1", "0", "2"]);
        // One server however it is spelled: one pool.
        let spelled = [route("http://LocalHost:80"), route("http://localhost")];
        let origins = Origins::new(&spelled);
        assert_eq!(origins.count(), 1);
        assert_eq!(
            origins.pool_authority(&spelled[1].upstreams.as_slice()[0]).as_str(),
            "0"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_that_never_answers_fails_within_the_connect_timeout() {
        let origins = Origins::new(&[route("http://app.internal:9000")]);
        let mut resolver = Resolver::new(origins, Duration::from_secs(5));
        resolver.lookup = |_, _| Box::pin(std::future::pending());
        let started = Instant::now();
        let name: Name = "0".parse().unwrap_or_else(|e| panic!("{e}"));
        // Bounded from outside too: without its own timeout the resolver would wait forever.
        let resolved = tokio::time::timeout(Duration::from_secs(60), resolver.call(name)).await;
        let err = resolved
            .unwrap_or_else(|_| panic!("still resolving after 60 s"))
            .err()
            .unwrap_or_else(|| panic!("resolved"));
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("resolving app.internal"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_pool_name_resolves_to_its_origin() {
        let origins = Origins::new(&[
            route("http://127.0.0.1:8080"),
            route("http://localhost:9000"),
            route("http://[::1]"),
        ]);
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resolve(&origins, "0").await.ok(), Some(vec![addr("127.0.0.1:8080")]));
        assert_eq!(resolve(&origins, "2").await.ok(), Some(vec![addr("[::1]:80")]));
        // A host name goes to the system resolver, with the configured port.
        let local = resolve(&origins, "1").await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!local.is_empty());
        assert!(
            local.iter().all(|a| a.ip().is_loopback() && a.port() == 9000),
            "{local:?}"
        );
        // A name the table does not hold is an error, never a guess.
        assert!(resolve(&origins, "3").await.is_err());
        assert!(resolve(&origins, "app").await.is_err());
    }
}
