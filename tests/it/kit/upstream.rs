//! `TestUpstream`: a real hyper 1 HTTP/1.1 server standing in for the app behind the gateway.
//!
//! By default it answers every request with a JSON report of what it received ([`Echo`]), so
//! a test can assert on exactly what the gateway forwarded. A few paths behave differently:
//!
//! | path | behaviour |
//! |---|---|
//! | `/bytes/{n}` | streams `n` bytes in 64 KiB chunks (never built whole) |
//! | `/delay/{ms}` | waits `ms` before sending anything, then echoes |
//! | `/slow-body/{ms}` | sends headers at once and [`SLOW_BODY`] after `ms` |
//! | `/resp-headers` | answers with hop-by-hop response headers, `X-End-To-End: kept` and [`UPSTREAM_HSTS`] |
//! | `/many-headers/{n}` | answers 200 with `n` response headers `X-Many-{i}: {i}` |
//! | `.../with-headers?name=value&...` | answers 200 with each query pair as a response header (form-decoded) |
//! | `/ws` | WebSocket echo (text and binary messages come back unchanged) |
//! | `/healthz` | an empty answer with the status set by [`TestUpstream::set_health`] (200 until then), for active health checks |
//!
//! It also counts TCP accepts and records the target of every request, so a test can prove
//! that something was *not* forwarded, or that connections were reused.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{stream, SinkExt, StreamExt};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::{
    body::{Frame, Incoming},
    header,
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_tungstenite::{
    tungstenite::{handshake::derive_accept_key, protocol::Role},
    WebSocketStream,
};

/// The `Strict-Transport-Security` that `/resp-headers` sends, as a legacy app might.
pub const UPSTREAM_HSTS: &str = "max-age=60";

/// The body `/slow-body/{ms}` sends once its delay has passed.
pub const SLOW_BODY: &[u8] = b"slow body complete\n";

/// One chunk of `/bytes/{n}`; a static so every chunk is a zero-copy `Bytes`.
static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the upstream has seen so far, shared with its connection tasks.
struct Seen {
    /// TCP connections accepted; proves (or disproves) connection pooling in the gateway.
    accepts: AtomicUsize,
    /// Request targets (path and query) in arrival order; proves what reached the app.
    targets: Mutex<Vec<String>>,
    /// The status `/healthz` answers, so a test can make the gateway's health check fail.
    health: AtomicU16,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            accepts: AtomicUsize::new(0),
            targets: Mutex::new(Vec::new()),
            health: AtomicU16::new(200),
        }
    }
}

/// A running upstream app on `127.0.0.1:<random port>`; stops accepting when dropped.
pub struct TestUpstream {
    addr: SocketAddr,
    seen: Arc<Seen>,
    accept_loop: JoinHandle<()>,
}

impl TestUpstream {
    /// Starts an upstream whose echo reports `"upstream": "upstream"`.
    pub async fn start() -> Self {
        Self::named("upstream").await
    }

    /// Starts an upstream whose echo reports `"upstream": name`, to tell several apart.
    pub async fn named(name: &str) -> Self {
        Self::named_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts an upstream named `name` on `addr`, say a [`closed_port`] that a test has seen
    /// refused and now brings up. Fails the test if `addr` cannot be bound.
    pub async fn named_on(name: &str, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind the test upstream on {addr}: {e}"));
        let addr = listener.local_addr().expect("test upstream address");
        let seen = Arc::new(Seen::default());
        let accept_loop = tokio::spawn(accept_loop(listener, Arc::from(name), seen.clone()));
        Self {
            addr,
            seen,
            accept_loop,
        }
    }

    /// Starts an upstream that speaks HTTPS with `tls` (its certificate, and
    /// whether it asks for a client's), echoing as `"upstream": "tls-upstream"`.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the test upstream");
        let addr = listener.local_addr().expect("test upstream address");
        let seen = Arc::new(Seen::default());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let accept_loop = tokio::spawn(tls_accept_loop(listener, acceptor, seen.clone()));
        Self {
            addr,
            seen,
            accept_loop,
        }
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the form a route's `upstream` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many TCP connections it has accepted.
    pub fn accepts(&self) -> usize {
        self.seen.accepts.load(Ordering::SeqCst)
    }

    /// The target (path and query) of every request received so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.seen.targets.lock().expect("upstream log lock").clone()
    }

    /// How many requests it has received.
    pub fn request_count(&self) -> usize {
        self.seen.targets.lock().expect("upstream log lock").len()
    }

    /// From now on `/healthz` answers `status` (an app whose database is gone answers 503).
    pub fn set_health(&self, status: u16) {
        assert!(StatusCode::from_u16(status).is_ok(), "not a status: {status}");
        self.seen.health.store(status, Ordering::SeqCst);
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, read, released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a throwaway port");
    listener.local_addr().expect("throwaway port address").port()
}

async fn accept_loop(listener: TcpListener, name: Arc<str>, seen: Arc<Seen>) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        seen.accepts.fetch_add(1, Ordering::SeqCst);
        let (name, seen) = (name.clone(), seen.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, name.clone(), seen.clone()));
            // An error here is the gateway hanging up mid-exchange, which some tests cause.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn tls_accept_loop(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, seen: Arc<Seen>) {
    let name: Arc<str> = Arc::from("tls-upstream");
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        seen.accepts.fetch_add(1, Ordering::SeqCst);
        let (name, seen, acceptor) = (name.clone(), seen.clone(), acceptor.clone());
        tokio::spawn(async move {
            // A failed handshake is what some tests are about; it serves nothing.
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |req| handle(req, name.clone(), seen.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, name: Arc<str>, seen: Arc<Seen>) -> Result<Response<Body>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    seen.targets.lock().expect("upstream log lock").push(target);

    let path = req.uri().path().to_owned();
    let response = if path == "/ws" {
        websocket_echo(req)
    } else if path == "/healthz" {
        let status = StatusCode::from_u16(seen.health.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
        plain_status(status)
    } else if let Some(n) = number_after(&path, "/bytes/") {
        byte_stream(n)
    } else if let Some(ms) = number_after(&path, "/delay/") {
        // Simulates a slow app; this is the behaviour under test, not synchronisation.
        tokio::time::sleep(Duration::from_millis(ms)).await;
        echo(req, &name).await
    } else if let Some(ms) = number_after(&path, "/slow-body/") {
        slow_body(ms)
    } else if path == "/resp-headers" {
        hop_by_hop_response()
    } else if let Some(n) = number_after(&path, "/many-headers/") {
        many_headers(n)
    } else if path.ends_with("/with-headers") {
        with_headers(req.uri().query().unwrap_or_default())
    } else {
        echo(req, &name).await
    };
    Ok(response)
}

fn number_after(path: &str, prefix: &str) -> Option<u64> {
    path.strip_prefix(prefix)?.parse().ok()
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

/// A legacy app's habit: a response with very many header fields.
fn many_headers(n: u64) -> Response<Body> {
    let mut response = plain_status(StatusCode::OK);
    for i in 0..n {
        let name = header::HeaderName::try_from(format!("x-many-{i}")).expect("header name");
        response.headers_mut().insert(name, header::HeaderValue::from(i));
    }
    response
}

/// An app that states its own response headers (a framing policy, say).
fn with_headers(query: &str) -> Response<Body> {
    let mut response = plain_status(StatusCode::OK);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let name = header::HeaderName::try_from(name.as_ref()).expect("header name");
        let value = header::HeaderValue::try_from(value.as_ref()).expect("header value");
        response.headers_mut().append(name, value);
    }
    response
}

fn plain_status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// The default answer: a JSON report of the request, reading (and counting) the whole body.
async fn echo(req: Request<Incoming>, name: &str) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut body_len: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_len += data.len() as u64;
                }
            }
            Err(_) => return plain_status(StatusCode::BAD_REQUEST),
        }
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let report = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body_len,
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(report.to_string()))
        .expect("echo response")
}

/// `/bytes/{n}`: `n` bytes of `x`, streamed chunk by chunk.
fn byte_stream(total: u64) -> Response<Body> {
    let chunks = stream::unfold(total, |remaining| async move {
        if remaining == 0 {
            return None;
        }
        let take = remaining.min(CHUNK.len() as u64) as usize;
        let frame = Frame::data(Bytes::from_static(&CHUNK[..take]));
        Some((Ok::<_, Infallible>(frame), remaining - take as u64))
    });
    Response::new(StreamBody::new(chunks).boxed_unsync())
}

/// `/slow-body/{ms}`: headers now, [`SLOW_BODY`] after `ms`.
fn slow_body(ms: u64) -> Response<Body> {
    let later = stream::once(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(SLOW_BODY)))
    });
    Response::new(StreamBody::new(later).boxed_unsync())
}

/// `/resp-headers`: every kind of hop-by-hop response header, plus one end-to-end header.
fn hop_by_hop_response() -> Response<Body> {
    Response::builder()
        .header(header::CONNECTION, "close, X-Hop-Resp")
        .header("x-hop-resp", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "x")
        .header("x-end-to-end", "kept")
        .header(header::STRICT_TRANSPORT_SECURITY, UPSTREAM_HSTS)
        .body(full("hop-by-hop headers attached"))
        .expect("hop-by-hop response")
}

/// `/ws`: accepts the upgrade and echoes text and binary messages until the peer closes.
fn websocket_echo(mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return plain_status(StatusCode::BAD_REQUEST);
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() || message.is_binary() {
                if ws.send(message).await.is_err() {
                    break;
                }
            } else if message.is_close() {
                // tungstenite answers the close frame itself.
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(full(Bytes::new()))
        .expect("upgrade response")
}

/// The upstream's JSON report of one request, as the client received it through the gateway.
#[derive(Debug, Clone)]
pub struct Echo(pub Value);

impl Echo {
    /// Parses an echo body, failing the test with the body if it is not one.
    pub fn from_slice(body: &[u8]) -> Self {
        match serde_json::from_slice(body) {
            Ok(value) => Self(value),
            Err(e) => panic!("not an upstream echo ({e}): {}", String::from_utf8_lossy(body)),
        }
    }

    /// Reads a response that must be a 200 echo.
    pub async fn from_response(response: reqwest::Response) -> Self {
        let status = response.status();
        let body = response.bytes().await.expect("read echo body");
        assert_eq!(
            status,
            reqwest::StatusCode::OK,
            "expected an echo, got {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Self::from_slice(&body)
    }

    /// Which `TestUpstream` answered (its name).
    pub fn upstream(&self) -> &str {
        self.0["upstream"].as_str().unwrap_or_default()
    }

    /// The method the upstream received.
    pub fn method(&self) -> &str {
        self.0["method"].as_str().unwrap_or_default()
    }

    /// The path the upstream received (without query).
    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or_default()
    }

    /// The raw query the upstream received, if any.
    pub fn query(&self) -> Option<&str> {
        self.0["query"].as_str()
    }

    /// How many body bytes the upstream received.
    pub fn body_len(&self) -> u64 {
        self.0["body_len"].as_u64().unwrap_or_default()
    }

    /// Every value the upstream received for header `name` (lowercase), in order.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.0["headers"][name]
            .as_array()
            .map(|values| values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// The values of header `name` joined as one field value (`a, b`), as RFC 9110 allows.
    pub fn header_joined(&self, name: &str) -> String {
        self.header(name).join(", ")
    }

    /// Whether the upstream received header `name` at all.
    pub fn has_header(&self, name: &str) -> bool {
        !self.header(name).is_empty()
    }
}
