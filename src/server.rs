//! Listeners, workers, connection limits, TLS handshakes and graceful shutdown.
//!
//! The HTTPS listener is served by `[server] workers` workers, each a
//! single-threaded tokio runtime on a thread of its own (the first one is
//! the caller's), like nginx's worker processes: a connection lives on the
//! worker that accepted it, together with the upstream connections its
//! requests use, so the hot path has no cross-thread wake-ups, work-stealing
//! queues or shared pool locks. Each worker accepts from its own descriptor
//! of the one listening socket; the kernel hands each connection to one.
//! Sessions, login throttling and metrics are shared by all workers.
//!
//! Each worker also has a companion thread in `SCHED_IDLE` (unless
//! `tls_handshakes = "inline"`). While the worker has kept-alive
//! connections it moves a new connection's TLS handshake there and takes the
//! connection back afterwards (see `handshake`), so that a handshake's half
//! millisecond of CPU does not delay their requests.
//!
//! The accept loop takes a permit from a semaphore *before* accepting, so
//! excess connections wait in the kernel backlog instead of exhausting the
//! process. Each connection runs in its own task: TLS handshake under
//! `tls_handshake_timeout`, then hyper (HTTP/1.1 or HTTP/2 by ALPN), watched
//! by one watchdog per connection that enforces `keepalive_timeout` (idle,
//! nothing in flight) and, for HTTP/1, `header_read_timeout` (slowloris).
//! Accept errors (EMFILE and friends) are retried with backoff, never fatal.

use crate::config::{Config, Handshakes};
use crate::handshake::{InTransit, PortableTcp, Tls};
use crate::metrics::Metrics;
use crate::proxy::{
    self,
    body::{Body, Uploading},
    upstream::UpstreamClient,
    ConnInfo, Shared,
};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("session store: {0}")]
    Store(#[from] crate::session::store::StoreError),
    /// `[login] hash_cpus` names CPUs the kernel refuses: a configuration error.
    #[error("key `login.hash_cpus`: cannot run the password-hashing threads on CPUs {cpus:?}: {source}")]
    HashCpus {
        cpus: Vec<usize>,
        #[source]
        source: std::io::Error,
    },
    /// `[server] background_cpus` names CPUs the kernel refuses: a configuration error.
    #[error("key `server.background_cpus`: cannot run the background threads on CPUs {cpus:?}: {source}")]
    BackgroundCpus {
        cpus: Vec<usize>,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start worker {index}: {source}")]
    Worker {
        index: usize,
        #[source]
        source: std::io::Error,
    },
}

/// Reloads a running [`Gateway`]'s certificate and key from their files.
/// Cheap to clone.
#[derive(Clone)]
pub struct TlsReloadHandle(Arc<crate::admin::AdminState>);

impl TlsReloadHandle {
    /// See [`crate::admin::AdminState::reload_tls`].
    pub fn reload(&self) -> Result<(), crate::tls::TlsError> {
        self.0.reload_tls()
    }

    /// See [`crate::admin::AdminState::reload_config`] (SIGHUP in the binary).
    pub async fn reload_config(&self) -> Result<crate::admin::ConfigReloaded, String> {
        self.0.reload_config().await
    }
}

/// Starts a graceful shutdown of a running [`Gateway`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A gateway whose listeners are bound; [`Gateway::run`] serves them.
pub struct Gateway {
    config: Arc<Config>,
    shared: Arc<Shared>,
    tls: crate::tls::Reloadable,
    https: TcpListener,
    admin: TcpListener,
    redirect: Option<TcpListener>,
    shutdown_tx: Arc<watch::Sender<bool>>,
    admin_state: Arc<crate::admin::AdminState>,
}

/// Warns an operator who pinned the gateway (`taskset -c 0`) and left other
/// CPUs free that logins' password hashes will share the workers' CPUs.
fn advise_placement(config: &Config) {
    // Probes only the online CPUs outside the affinity: none, unpinned.
    let spare = crate::priority::spare_cpus();
    let advice = crate::priority::placement_advice(
        &config.login.hash_cpus,
        &config.server.background_cpus,
        !config.users.is_empty(),
        &spare,
    );
    if let Some(advice) = advice {
        tracing::warn!(spare_cpus = ?spare, "{advice}");
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

impl Gateway {
    /// Loads certificates, opens the session store and binds every listener.
    pub async fn bind(config: Config) -> Result<Gateway, StartError> {
        // Before the store starts its commit thread there.
        let cpus = &config.server.background_cpus;
        crate::priority::check_cpus(cpus).map_err(|source| StartError::BackgroundCpus {
            cpus: cpus.clone(),
            source,
        })?;
        advise_placement(&config);
        if let Some(warning) = config.sign_in_warning() {
            tracing::warn!("{warning}");
        }
        let config = Arc::new(config);
        let tls = crate::tls::Reloadable::load(&config.tls.cert, &config.tls.key)?;
        let metrics = Arc::new(Metrics::new());
        let sessions = Arc::new(crate::session::Sessions::open(config.clone(), metrics.clone()).await?);
        sessions.start_background();
        let shared = Arc::new(Shared::new(config.clone(), metrics.clone(), sessions.clone())?);
        if let Some(oidc) = shared.auth.oidc.clone() {
            tokio::spawn(async move { oidc.warm_up().await });
        }
        let https = bind("server.listen", config.server.listen).await?;
        let admin = bind("admin.listen", config.admin.listen).await?;
        let redirect = match config.server.http_redirect_listen {
            Some(addr) => Some(bind("server.http_redirect_listen", addr).await?),
            None => None,
        };
        let (shutdown_tx, _) = watch::channel(false);
        let admin_state = Arc::new(crate::admin::AdminState::new(
            config.clone(),
            metrics,
            sessions,
            tls.clone(),
            shared.auth.users.directory(),
            shared.routes.clone(),
        ));
        Ok(Gateway {
            config,
            shared,
            tls,
            https,
            admin,
            redirect,
            shutdown_tx: Arc::new(shutdown_tx),
            admin_state,
        })
    }

    pub fn https_addr(&self) -> SocketAddr {
        local(&self.https)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        local(&self.admin)
    }

    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().map(local)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown_tx.clone())
    }

    /// Reloads the certificate and key (SIGHUP in the binary).
    pub fn tls_reload_handle(&self) -> TlsReloadHandle {
        TlsReloadHandle(self.admin_state.clone())
    }

    /// Starts workers 1.. on threads of their own (worker 0 is the caller).
    fn start_workers(
        &self,
        worker: impl Fn(usize) -> Worker,
        drained: &watch::Receiver<bool>,
    ) -> Result<Vec<std::thread::JoinHandle<()>>, StartError> {
        let mut threads = Vec::new();
        for index in 1..self.config.server.workers.get() {
            match dup_listener(&self.https)
                .and_then(|l| worker(index).spawn(l, drained.clone(), &self.config.server.background_cpus))
            {
                Ok(thread) => threads.push(thread),
                Err(source) => {
                    // The workers already running stop with the gateway.
                    self.shutdown_tx.send_replace(true);
                    return Err(StartError::Worker { index, source });
                }
            }
        }
        Ok(threads)
    }

    /// One handshake thread per worker, unless handshakes run inline: its
    /// thread, and the handle its worker spawns handshakes on.
    fn start_handshake_threads(
        &self,
        drained: &watch::Receiver<bool>,
    ) -> Result<(Vec<std::thread::JoinHandle<()>>, Vec<Handle>), StartError> {
        let (mut threads, mut handles) = (Vec::new(), Vec::new());
        if self.config.server.tls_handshakes == Handshakes::Inline {
            return Ok((threads, handles));
        }
        for index in 0..self.config.server.workers.get() {
            let rt = crate::priority::current_thread_runtime(&self.config.server.background_cpus)
                .map_err(|source| StartError::Worker { index, source })?;
            handles.push(rt.handle().clone());
            let cpus = self.config.server.background_cpus.clone();
            let placed = async move {
                crate::priority::confine_or_warn(&cpus, "TLS handshakes");
                crate::priority::become_idle("TLS handshakes");
            };
            let thread = spawn_loop(format!("sg-tls-{index}"), rt, drained.clone(), placed)
                .map_err(|source| StartError::Worker { index, source })?;
            threads.push(thread);
        }
        Ok((threads, handles))
    }

    /// Serves until shutdown is requested, then stops accepting and waits up
    /// to `shutdown_grace` for open connections to finish their requests.
    pub async fn run(self) -> Result<(), StartError> {
        let https_addr = self.https_addr();
        tracing::info!(listener = "https", addr = %https_addr, "listening");
        tracing::info!(listener = "admin", addr = %self.admin_addr(), "listening");
        if let Some(addr) = self.redirect_addr() {
            tracing::info!(listener = "redirect", addr = %addr, "listening");
        }
        let limit = self.config.server.max_connections;
        let permits = Arc::new(Semaphore::new(limit));
        let conn_settings = Arc::new(ConnSettings::new(&self.config));
        let shutdown_rx = self.shutdown_tx.subscribe();
        // Set once the gateway has drained: until then the other workers
        // (and handshake threads) keep driving the connections they own.
        let (drained_tx, drained_rx) = watch::channel(false);
        let (mut threads, handshakers) = self.start_handshake_threads(&drained_rx)?;
        let worker = |index: usize| Worker {
            index,
            tls: self.tls.watch(),
            shared: self.shared.clone(),
            settings: conn_settings.clone(),
            permits: permits.clone(),
            upstream: proxy::upstream::client(
                &self.config.server,
                self.shared.routes.origins().clone(),
                self.config.upstream_tls.as_ref(),
            ),
            accepted: self.shared.metrics.worker_accepts(index),
            handshake_counts: self.shared.metrics.handshakes(),
            shutdown: shutdown_rx.clone(),
            handshakes: handshakers.get(index).cloned(),
            policy: self.config.server.tls_handshakes,
            kept_alive: Arc::new(AtomicUsize::new(0)),
        };
        threads.extend(self.start_workers(worker, &drained_rx)?);

        let admin_task = tokio::spawn(crate::admin::serve(
            self.admin,
            self.admin_state.clone(),
            shutdown_rx.clone(),
        ));
        // Always running: a reload may give a route its first `health_check`.
        let checks = proxy::health_check::Checks {
            tables: self.shared.routes.clone(),
            client: proxy::upstream::client(
                &self.config.server,
                self.shared.routes.origins().clone(),
                self.config.upstream_tls.as_ref(),
            ),
            metrics: self.shared.metrics.clone(),
            interval: self.config.server.health_check_interval,
            timeout: self.config.server.health_check_timeout,
            streaks: proxy::health_check::Streaks::new(
                self.config.server.health_check_fails,
                self.config.server.health_check_passes,
            ),
        };
        let checks_task = tokio::spawn(checks.run(shutdown_rx.clone()));
        let redirect_task = self.redirect.map(|l| {
            let port = self.config.server.public_https_port.unwrap_or(https_addr.port());
            let balancers = self.config.server.proxy_protocol_from.clone();
            tokio::spawn(crate::redirect::serve(l, port, balancers, shutdown_rx.clone()))
        });
        worker(0).accept_loop(self.https).await;

        tracing::info!(grace = ?self.config.server.shutdown_grace, "shutting down: draining connections");
        let limit_u32 = u32::try_from(limit).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(self.config.server.shutdown_grace, permits.acquire_many(limit_u32)).await;
        if drained.is_err() {
            tracing::warn!("shutdown grace elapsed with connections still open");
        }
        drained_tx.send_replace(true);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        admin_task.abort();
        checks_task.abort();
        if let Some(t) = redirect_task {
            t.abort();
        }
        self.shared.sessions.settle().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves once shutdown has been requested.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn local(l: &TcpListener) -> SocketAddr {
    l.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Per-connection protocol settings, built once.
struct ConnSettings {
    handshake_timeout: Duration,
    limits: WatchLimits,
    /// hyper's own HTTP/1 server: no protocol detection, no IO rewind layer.
    h1: hyper::server::conn::http1::Builder,
    /// hyper's own HTTP/2 server (hyper-util's `auto` builder would pull
    /// its HTTP/2 client code into the upstream client's futures too).
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl ConnSettings {
    fn new(config: &Config) -> ConnSettings {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        // No hyper timer: hyper's header timeout arms a wheel timer for every
        // request and counts idle keep-alive time as header time. The
        // connection's watchdog enforces `header_read_timeout` instead.
        h1.header_read_timeout(None)
            .max_buf_size(config.server.max_header_bytes.max(8192))
            // Flatten head and body into one buffer: over TLS each vectored
            // chunk would become its own record and write.
            .writev(false)
            .keep_alive(true);
        // hyper answers a head with more fields 431 itself; left at its
        // default, it parses them into a stack array instead of the heap.
        if config.server.max_headers != crate::config::DEFAULT_MAX_HEADERS {
            h1.max_headers(config.server.max_headers);
        }
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.server.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256)
            .keep_alive_interval(Some(config.server.keepalive_timeout / 2))
            .keep_alive_timeout(Duration::from_secs(20));
        ConnSettings {
            handshake_timeout: config.server.tls_handshake_timeout,
            limits: WatchLimits {
                idle: config.server.keepalive_timeout,
                head: config.server.header_read_timeout,
            },
            h1,
            h2,
        }
    }
}

/// A descriptor of its own for the listening socket, for another worker's
/// reactor (one socket, so no `SO_REUSEPORT` and no second bind).
fn dup_listener(l: &TcpListener) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::AsFd;
    let listener = std::net::TcpListener::from(l.as_fd().try_clone_to_owned()?);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// One single-threaded event loop serving the HTTPS listener.
struct Worker {
    index: usize,
    /// The TLS configuration in force (replaced by a reload).
    tls: watch::Receiver<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    settings: Arc<ConnSettings>,
    /// `max_connections`, counted across all workers.
    permits: Arc<Semaphore>,
    /// This worker's own pool: its connections never cross threads.
    upstream: UpstreamClient,
    accepted: prometheus_client::metrics::counter::Counter,
    handshake_counts: crate::metrics::HandshakeCounters,
    shutdown: watch::Receiver<bool>,
    /// This worker's handshake thread (`None` with inline handshakes).
    handshakes: Option<Handle>,
    policy: Handshakes,
    /// This worker's connections that have completed a request and are
    /// still open: with `tls_handshakes = "auto"`, the ones a handshake on
    /// the worker would hold up.
    kept_alive: Arc<AtomicUsize>,
}

/// Runs `task` on a thread of its own in `rt`, then keeps `rt` (and the
/// connections on it) going until the gateway has drained (or given up).
fn spawn_loop(
    name: String,
    rt: tokio::runtime::Runtime,
    mut drained: watch::Receiver<bool>,
    task: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        rt.block_on(async move {
            task.await;
            let _ = drained.wait_for(|d| *d).await;
        });
    })
}

impl Worker {
    /// Starts this worker on a thread of its own; it returns once the
    /// gateway has drained (or given up waiting).
    fn spawn(
        self,
        listener: std::net::TcpListener,
        drained: watch::Receiver<bool>,
        background_cpus: &[usize],
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let name = format!("sessiongate-worker-{}", self.index);
        let task = async move {
            match TcpListener::from_std(listener) {
                Ok(l) => self.accept_loop(l).await,
                Err(e) => tracing::error!(worker = self.index, error = %e, "worker cannot use the listener"),
            }
        };
        spawn_loop(
            name,
            crate::priority::current_thread_runtime(background_cpus)?,
            drained,
            task,
        )
    }

    /// Where the next connection's handshake runs: on the handshake
    /// thread, or here (`None`).
    fn handshake_thread(&self) -> Option<&Handle> {
        let offload = match self.policy {
            Handshakes::Inline => false,
            Handshakes::Background => true,
            // Only requests on kept-alive connections can wait behind a
            // handshake; with none, moving it costs more than it saves.
            Handshakes::Auto => self.kept_alive.load(Ordering::Relaxed) > 0,
        };
        self.handshakes.as_ref().filter(|_| offload)
    }

    /// Accepts and spawns connections until shutdown.
    async fn accept_loop(mut self, listener: TcpListener) {
        let mut backoff = Duration::from_millis(5);
        loop {
            let permit = tokio::select! {
                p = self.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = crate::server::stopped(&mut self.shutdown) => return,
            };
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = crate::server::stopped(&mut self.shutdown) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => {
                    backoff = Duration::from_millis(5);
                    pair
                }
                Err(e) => {
                    // Out of descriptors or a reset during accept: back off, go on.
                    tracing::warn!(worker = self.index, error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            self.accepted.inc();
            let _ = tcp.set_nodelay(true);
            let admitted = Admitted::new(permit, &self.shared.metrics);
            let conn = Connection {
                tls: TlsAcceptor::from(self.tls.borrow().clone()),
                shared: self.shared.clone(),
                settings: self.settings.clone(),
                upstream: self.upstream.clone(),
                shutdown: self.shutdown.clone(),
                kept_alive: self.kept_alive.clone(),
            };
            match self.handshake_thread() {
                None => {
                    self.handshake_counts.on_worker.inc();
                    tokio::spawn(async move {
                        if let Some((tls, client)) = conn.handshake(PortableTcp::new(tcp), peer).await {
                            conn.serve(tls, client, admitted).await;
                        }
                    });
                }
                Some(handshakes) => {
                    self.handshake_counts.in_background.inc();
                    conn.handshake_elsewhere(tcp, peer, admitted, handshakes);
                }
            }
        }
    }
}

/// A connection admitted under `max_connections`: its permit and its place
/// in the open-connections gauge go with it to the worker that serves it.
struct Admitted {
    _permit: OwnedSemaphorePermit,
    _open: OpenGuard,
}

impl Admitted {
    fn new(permit: OwnedSemaphorePermit, metrics: &Arc<Metrics>) -> Admitted {
        metrics.open_connections.inc();
        Admitted {
            _permit: permit,
            _open: OpenGuard(metrics.clone()),
        }
    }
}

struct Connection {
    tls: TlsAcceptor,
    shared: Arc<Shared>,
    settings: Arc<ConnSettings>,
    upstream: UpstreamClient,
    shutdown: watch::Receiver<bool>,
    kept_alive: Arc<AtomicUsize>,
}

/// Keeps the open-connections gauge honest whatever way the task ends.
struct OpenGuard(Arc<Metrics>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

impl Connection {
    /// The client's address and the TLS handshake, together under
    /// `tls_handshake_timeout`; `None` if either failed. The address is the
    /// socket's peer, or what a PROXY header declares when the peer is in
    /// `[server] proxy_protocol_from`.
    async fn handshake(&self, mut tcp: PortableTcp, peer: SocketAddr) -> Option<(Tls, SocketAddr)> {
        let deadline = tokio::time::Instant::now() + self.settings.handshake_timeout;
        let client = self.client_addr(&mut tcp, peer, deadline).await?;
        match tokio::time::timeout_at(deadline, self.tls.accept(tcp)).await {
            Ok(Ok(s)) => Some((s, client)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// Reads the PROXY header of a connection from a listed balancer.
    async fn client_addr(
        &self,
        tcp: &mut PortableTcp,
        peer: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> Option<SocketAddr> {
        let from = &self.shared.config.server.proxy_protocol_from;
        if !crate::proxy_protocol::expected_from(peer.ip(), from) {
            return Some(peer);
        }
        let socket = match tcp.socket() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection lost before its PROXY header");
                return None;
            }
        };
        let error = match tokio::time::timeout_at(deadline, crate::proxy_protocol::client_of(socket, peer)).await {
            Ok(Ok(client)) => return Some(client),
            Ok(Err(crate::proxy_protocol::ProxyHeaderError::Empty)) => {
                tracing::debug!(%peer, "balancer connection closed without a PROXY header (a health check?)");
                return None;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no complete PROXY header within tls_handshake_timeout".to_string(),
        };
        self.shared.metrics.proxy_protocol_errors.inc();
        tracing::warn!(event = "proxy_protocol_refused", %peer, error = %error, "connection from a proxy_protocol_from peer closed");
        None
    }

    /// Runs the handshake on `handshakes`' thread, then serves the
    /// connection back on this worker.
    fn handshake_elsewhere(self, tcp: TcpStream, peer: SocketAddr, admitted: Admitted, handshakes: &Handle) {
        let worker = Handle::current();
        let tcp = match InTransit::tcp(tcp) {
            Ok(tcp) => tcp,
            Err(e) => return tracing::debug!(%peer, error = %e, "connection could not leave its worker"),
        };
        handshakes.spawn(async move {
            let tcp = match tcp.arrive() {
                Ok(tcp) => tcp,
                Err(e) => return tracing::debug!(%peer, error = %e, "connection could not join the handshake thread"),
            };
            let Some((tls, client)) = self.handshake(tcp, peer).await else {
                return;
            };
            let tls = match InTransit::tls(tls) {
                Ok(tls) => tls,
                Err(e) => return tracing::debug!(%peer, error = %e, "connection could not leave the handshake thread"),
            };
            worker.spawn(async move {
                match tls.arrive() {
                    Ok(tls) => self.serve(tls, client, admitted).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "connection could not rejoin its worker"),
                }
            });
        });
    }

    /// Serves HTTP on `tls`; `peer` is the client's address (the socket's
    /// peer, or what its balancer's PROXY header declared).
    async fn serve(mut self, tls: Tls, peer: SocketAddr, _admitted: Admitted) {
        // HTTP/2 only when negotiated by ALPN (RFC 9113 §3.2); a client that
        // sends no ALPN speaks HTTP/1.x, so no protocol sniffing per connection.
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        // Activity is recorded per request, not per byte: a request counts
        // as in flight until its response body is done, so the watchdog
        // never closes a connection under a streaming response.
        let handler = Handler(Arc::new(HandlerState {
            conn: ConnInfo {
                peer: proxy::headers::PeerInfo::new(peer, &self.shared.config.server.trusted_proxies),
                upstream: self.upstream,
                recent: Default::default(),
                upstream_deadline: Default::default(),
            },
            table: self.shared.routes.current(),
            shared: self.shared,
            activity: Activity::new(h2),
            kept_alive: KeptAlive {
                worker: self.kept_alive,
                counted: AtomicBool::new(false),
            },
        }));
        let state = handler.0.clone();
        let activity = &state.activity;
        let limits = self.settings.limits;
        let result = if h2 {
            // Each stream becomes a task of its own, and its future is moved
            // into it: boxed, that is a pointer rather than kilobytes.
            let service = service_fn(move |req| Box::pin(handler.clone().call(req)));
            let io = TokioIo::new(tls);
            let conn = self.settings.h2.serve_connection(io, service);
            tokio::pin!(conn);
            drive(conn, |c| c.graceful_shutdown(), activity, limits, &mut self.shutdown).await
        } else {
            // One request at a time, its future moved once into hyper's own
            // slot: a box per request would cost more than it saves.
            let io = TokioIo::new(HeadClock {
                inner: tls,
                state: state.clone(),
            });
            let service = service_fn(move |req| handler.clone().call(req));
            let conn = self.settings.h1.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            drive(conn, |c| c.graceful_shutdown(), activity, limits, &mut self.shutdown).await
        };
        match result {
            Ok(Ended::Served) => {}
            Ok(Ended::Stopped) => tracing::debug!(%peer, "shutdown with a request head pending: connection dropped"),
            Ok(Ended::HeadTimeout) => {
                state.shared.metrics.header_timeouts.inc();
                tracing::debug!(%peer, "request head not complete within header_read_timeout: connection cut");
            }
            Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
        }
    }
}

/// Serves the requests of one connection: one reference count per request.
#[derive(Clone)]
struct Handler(Arc<HandlerState>);

struct HandlerState {
    shared: Arc<Shared>,
    /// The routes in force when the connection opened; its requests take
    /// the current ones instead once a reload replaced them.
    table: Arc<proxy::table::Table>,
    conn: ConnInfo,
    activity: Activity,
    kept_alive: KeptAlive,
}

/// Counts its connection among its worker's kept-alive connections from the
/// end of its first request until the connection is gone (see
/// `Worker::handshake_thread`).
struct KeptAlive {
    worker: Arc<AtomicUsize>,
    counted: AtomicBool,
}

impl KeptAlive {
    fn served(&self) {
        // A load per request; the swap only once per connection.
        if !self.counted.load(Ordering::Relaxed) && !self.counted.swap(true, Ordering::Relaxed) {
            self.worker.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for KeptAlive {
    fn drop(&mut self) {
        if *self.counted.get_mut() {
            self.worker.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Handler {
    async fn call(self, req: hyper::Request<Incoming>) -> Result<hyper::Response<Tracked>, Infallible> {
        // In flight until the response body is done, or until this future is
        // dropped (a reset stream, a closed connection): the watchdog never
        // closes a connection under a request, and the end of one touches.
        let in_flight = InFlight::begin(self);
        let state = &*in_flight.0 .0;
        let upload = |body: Body| Body::boxed(Uploading::new(body, Upload::begin(&in_flight.0)));
        let reloaded;
        let table = if state.shared.routes.is_current(&state.table) {
            &*state.table
        } else {
            reloaded = state.shared.routes.current();
            &*reloaded
        };
        let mut resp = proxy::handle(&state.shared, table, &state.conn, req, &upload).await;
        if let Some(hsts) = &state.shared.config.tls.hsts {
            resp.headers_mut()
                .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        Ok(resp.map(|body| Tracked {
            body,
            _in_flight: in_flight,
        }))
    }
}

/// A request in flight on its connection; its end when dropped.
struct InFlight(Handler);

impl InFlight {
    fn begin(handler: Handler) -> InFlight {
        handler.0.activity.begin();
        InFlight(handler)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0 .0;
        state.activity.end();
        state.kept_alive.served();
    }
}

/// A request body still being forwarded upstream; its end when dropped.
/// It may outlast its response (an upstream that answers before it has
/// read the whole upload): the bytes still arriving are that body, not the
/// next request's head, and the connection is not idle.
struct Upload(Handler);

impl Upload {
    fn begin(handler: &Handler) -> Upload {
        handler.0.activity.upload_begin();
        Upload(handler.clone())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.0 .0.activity.upload_end();
    }
}

/// A response body that keeps its request in flight until hyper drops it,
/// which it does once the body is written (or the connection is gone).
struct Tracked {
    body: Body,
    /// Held for its `Drop`.
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = proxy::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The connection's IO for HTTP/1, noting when the first byte of a request
/// head arrives: `header_read_timeout` counts from there, as nginx's
/// `client_header_timeout` does, and the watchdog enforces it. Bytes read
/// while a request is in flight are its body, not a head.
struct HeadClock<S> {
    inner: S,
    state: Arc<HandlerState>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for HeadClock<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.activity.head_bytes();
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for HeadClock<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What the watchdog enforces on one connection.
#[derive(Clone, Copy, Debug)]
struct WatchLimits {
    /// `keepalive_timeout`: idle with nothing in flight.
    idle: Duration,
    /// `header_read_timeout`: an HTTP/1 request head must be complete this
    /// long after its first byte (the first head: after the handshake).
    head: Duration,
}

/// How the watchdog ends a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Idle, or the gateway is stopping: hyper finishes what is in flight,
    /// then closes.
    Graceful,
    /// Dropped, since nobody awaits a response and hyper's graceful
    /// shutdown would wait for the request head: the head did not arrive
    /// in time ...
    HeadTimeout,
    /// ... or the gateway is stopping while a head is pending.
    Stop,
}

/// How a connection driven by [`drive`] ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// hyper finished it: the client closed, or a graceful shutdown completed.
    Served,
    /// Dropped by the watchdog: a request head too slow.
    HeadTimeout,
    /// Dropped by the watchdog: the gateway stopped while a head was pending.
    Stopped,
}

/// Runs a connection to its end, under its watchdog: a graceful shutdown
/// when the gateway shuts down or the connection has been idle for
/// `limits.idle`; cut when an HTTP/1 request head is slower than
/// `limits.head`.
///
/// The connection is polled on every wake-up of the task; the watchdog
/// (shutdown signal, its timer) only when its own waker fired. A `select!`
/// would poll all three on every wake-up, several times per request, for
/// events that happen once per connection at most.
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    limits: WatchLimits,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Ended, E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut watchdog = Some(std::pin::pin!(watchdog(activity, limits, shutdown)));
    let signal = Arc::new(WatchdogSignal::default());
    let watchdog_waker = Waker::from(signal.clone());
    // The task's waker as last handed to the signal: handed again only when
    // it changes, which for a tokio task is never (no lock or atomic swap
    // per poll).
    let mut registered: Option<Waker> = None;
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                return Poll::Ready(res.map(|()| Ended::Served));
            }
            let Some(dog) = watchdog.as_mut() else {
                return Poll::Pending;
            };
            if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                signal.set_task(cx.waker());
                registered = Some(cx.waker().clone());
            }
            if !signal.fired.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            match dog.as_mut().poll(&mut Context::from_waker(&watchdog_waker)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Verdict::HeadTimeout) => return Poll::Ready(Ok(Ended::HeadTimeout)),
                Poll::Ready(Verdict::Stop) => return Poll::Ready(Ok(Ended::Stopped)),
                // Closing: the connection is polled again so that it acts on it.
                Poll::Ready(Verdict::Graceful) => {
                    watchdog = None;
                    graceful(conn.as_mut());
                }
            }
        }
    })
    .await
}

/// Resolves when a connection should close, and how.
///
/// It sleeps until the next moment a limit could be reached and looks
/// again (see [`Activity::next_check`]); nothing on the request path arms
/// or resets a timer.
async fn watchdog(activity: &Activity, limits: WatchLimits, shutdown: &mut watch::Receiver<bool>) -> Verdict {
    loop {
        let deadline = match activity.next_check(Instant::now(), limits) {
            Ok(deadline) => deadline,
            Err(verdict) => return verdict,
        };
        tokio::select! {
            biased;
            _ = stopped(shutdown) => {
                return if activity.head_started().is_some() { Verdict::Stop } else { Verdict::Graceful };
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

/// Wakes the connection task and marks the watchdog as due for a poll.
/// The task's waker is kept, not taken, by a wake: the watchdog fires
/// again and again over a connection's life, and it must always reach the
/// task.
struct WatchdogSignal {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Default for WatchdogSignal {
    fn default() -> WatchdogSignal {
        // Fired at first, so the watchdog is polled once and arms itself.
        WatchdogSignal {
            fired: AtomicBool::new(true),
            task: Mutex::new(None),
        }
    }
}

impl WatchdogSignal {
    fn set_task(&self, waker: &Waker) {
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
    }
}

impl Wake for WatchdogSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(task) = self.task.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            task.wake_by_ref();
        }
    }
}

/// When the connection was last active, how many requests it has in
/// flight, and when the HTTP/1 request head it is waiting for began.
///
/// Times are milliseconds since `base`: plain atomics, written on the
/// request path with no timer to arm.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    /// 1 + the millisecond the pending head's first byte arrived; 0 when
    /// no head is pending (always, for HTTP/2).
    head_ms: AtomicU64,
    requests: AtomicUsize,
    /// Request bodies still being forwarded (see [`Upload`]); only requests
    /// with a body touch it.
    uploads: AtomicUsize,
    /// HTTP/2: streams overlap, so the count needs atomic increments.
    /// HTTP/1 serves one request at a time, so a plain store is exact and
    /// spares two locked instructions per request.
    multiplexed: bool,
}

impl Activity {
    /// For HTTP/1 the first head is pending from the start: a client that
    /// completes the handshake and sends nothing is cut like a slow one.
    fn new(multiplexed: bool) -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(u64::from(!multiplexed)),
            requests: AtomicUsize::new(0),
            uploads: AtomicUsize::new(0),
            multiplexed,
        }
    }

    /// A request head is complete and its request now in flight.
    fn begin(&self) {
        if self.multiplexed {
            self.requests.fetch_add(1, Ordering::Relaxed);
        } else {
            self.requests.store(1, Ordering::Relaxed);
            self.head_ms.store(0, Ordering::Relaxed);
        }
    }

    /// The end of a request is activity: the idle period starts here.
    fn end(&self) {
        if self.multiplexed {
            self.requests.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.requests.store(0, Ordering::Relaxed);
        }
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request body started on its way upstream.
    fn upload_begin(&self) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
    }

    /// A request body has been forwarded (or abandoned): activity, as the
    /// end of a request is.
    fn upload_end(&self) {
        self.uploads.fetch_sub(1, Ordering::Relaxed);
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Bytes arrived on an HTTP/1 connection: with no request in flight
    /// they are the start of the next head (if it has not started yet).
    fn head_bytes(&self) {
        if self.head_ms.load(Ordering::Relaxed) == 0 && !self.busy() {
            self.head_ms.store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    fn busy(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0 || self.uploads.load(Ordering::Relaxed) > 0
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn head_started(&self) -> Option<Instant> {
        match self.head_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms - 1)),
        }
    }

    /// When the watchdog should look again, or how the connection ends now.
    ///
    /// Heads start and requests end without telling the watchdog, so it
    /// looks at least once per the shorter limit: a head is then cut on
    /// time, and an idle connection closed within two idle periods.
    fn next_check(&self, now: Instant, limits: WatchLimits) -> Result<Instant, Verdict> {
        let period = now + limits.head.min(limits.idle);
        if let Some(started) = self.head_started() {
            let due = started + limits.head;
            return if due <= now {
                Err(Verdict::HeadTimeout)
            } else {
                Ok(due.min(period))
            };
        }
        if self.busy() {
            return Ok(period);
        }
        let idle_due = self.last() + limits.idle;
        if idle_due <= now {
            return Err(Verdict::Graceful);
        }
        Ok(idle_due.min(period))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WatchLimits = WatchLimits {
        idle: Duration::from_secs(60),
        head: Duration::from_secs(10),
    };

    fn at(activity: &Activity, ms: u64) -> Instant {
        activity.base + Duration::from_millis(ms)
    }

    #[test]
    fn first_http1_head_is_due_one_header_timeout_after_the_handshake() {
        let a = Activity::new(false);
        assert_eq!(a.next_check(at(&a, 0), LIMITS), Ok(at(&a, 10_000)));
        assert_eq!(a.next_check(at(&a, 10_000), LIMITS), Err(Verdict::HeadTimeout));
    }

    #[tokio::test]
    async fn shutdown_drops_a_pending_head_and_is_graceful_otherwise() {
        let (_tx, mut rx) = watch::channel(true);
        let pending = Activity::new(false);
        assert_eq!(watchdog(&pending, LIMITS, &mut rx).await, Verdict::Stop);
        let served = Activity::new(false);
        served.begin();
        assert_eq!(watchdog(&served, LIMITS, &mut rx).await, Verdict::Graceful);
    }

    #[test]
    fn http2_has_no_head_clock_and_closes_gracefully_when_idle() {
        let a = Activity::new(true);
        assert_eq!(a.head_started(), None);
        assert_eq!(a.next_check(at(&a, 0), LIMITS), Ok(at(&a, 10_000)));
        assert_eq!(a.next_check(at(&a, 60_000), LIMITS), Err(Verdict::Graceful));
    }

    #[test]
    fn a_request_in_flight_is_never_closed_and_is_looked_at_every_header_period() {
        let a = Activity::new(false);
        a.begin();
        assert_eq!(a.head_started(), None);
        // Bytes read while a request is in flight are its body, not a head.
        a.head_bytes();
        assert_eq!(a.head_started(), None);
        assert_eq!(a.next_check(at(&a, 500_000), LIMITS), Ok(at(&a, 510_000)));
    }

    #[test]
    fn an_upload_that_outlasts_its_response_is_neither_a_head_nor_idleness() {
        let a = Activity::new(false);
        a.begin();
        a.upload_begin();
        // The upstream answered early: the response is done, the body is not.
        a.end();
        a.head_bytes();
        assert_eq!(a.head_started(), None);
        assert_eq!(a.next_check(at(&a, 500_000), LIMITS), Ok(at(&a, 510_000)));
        // Once it is forwarded, idle time counts from then, and bytes start a head.
        a.upload_end();
        let ended = a.last();
        assert_eq!(a.next_check(ended, LIMITS), Ok(ended + LIMITS.head));
        a.head_bytes();
        assert!(a.head_started().is_some());
    }

    #[test]
    fn after_a_request_idle_time_is_keepalive_time_until_a_head_starts() {
        let a = Activity::new(false);
        a.begin();
        a.end();
        let ended = a.last();
        // Idle: looked at every header period, closed at the keep-alive timeout.
        assert_eq!(a.next_check(ended, LIMITS), Ok(ended + LIMITS.head));
        assert_eq!(a.next_check(ended + LIMITS.idle, LIMITS), Err(Verdict::Graceful));
        // The first byte of the next head starts its clock; later bytes do not move it.
        a.head_bytes();
        let started = a.head_started().expect("head started");
        a.head_bytes();
        assert_eq!(a.head_started(), Some(started));
        assert_eq!(a.next_check(started, LIMITS), Ok(started + LIMITS.head));
        assert_eq!(a.next_check(started + LIMITS.head, LIMITS), Err(Verdict::HeadTimeout));
        // A complete head stops it.
        a.begin();
        assert_eq!(a.head_started(), None);
    }
}
