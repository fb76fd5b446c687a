//! The optional plain-HTTP listener: every request gets a 308 to the same
//! host and path over HTTPS. It never proxies and never reads a body.

use crate::proxy::body::{self, Body};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a client has to send its request head (and a balancer its
/// PROXY header).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves redirects until shutdown. Connections from `balancers` begin with
/// a PROXY header (as on the HTTPS listener), which is read and dropped: a
/// redirect needs no client address.
pub async fn serve(listener: TcpListener, https_port: u16, balancers: Vec<IpNet>, mut shutdown: watch::Receiver<bool>) {
    let balancers: Arc<[IpNet]> = balancers.into();
    loop {
        let (mut tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "redirect accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::server::stopped(&mut shutdown) => return,
        };
        let balancers = balancers.clone();
        tokio::spawn(async move {
            if crate::proxy_protocol::expected_from(peer.ip(), &balancers) {
                let header = tokio::time::timeout(HEAD_TIMEOUT, crate::proxy_protocol::read_header(&mut tcp)).await;
                if !matches!(header, Ok(Ok(_))) {
                    return tracing::debug!(%peer, "redirect: no valid PROXY header from a proxy_protocol_from peer");
                }
            }
            let svc = service_fn(move |req| async move { Ok::<_, Infallible>(redirect(&req, https_port)) });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn redirect(req: &Request<Incoming>, https_port: u16) -> Response<Body> {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(strip_port)
        .filter(|h| is_hostname(h))
    else {
        return crate::error::plain(StatusCode::BAD_REQUEST, "Bad Request");
    };
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{https_port}{pq}")
    };
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => return crate::error::plain(StatusCode::BAD_REQUEST, "Bad Request"),
    }
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.split_inclusive(']').next().unwrap_or(h);
    }
    h.rsplit_once(':').map_or(h, |(host, _)| host)
}

/// Letters, digits, `-` and `.`, or a bracketed IPv6 literal: nothing that
/// could turn the Location into another origin.
fn is_hostname(h: &str) -> bool {
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !h.is_empty() && h.len() <= 253 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}
