//! The pooled upstream client: keep-alive HTTP/1.1 connections per origin,
//! shared by every request (hyper-util's legacy client does the pooling).

use crate::config::{ServerConfig, DEFAULT_MAX_HEADERS};
use crate::proxy::body::Body;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub type UpstreamClient = Client<HttpConnector, Body>;

pub fn client(server: &ServerConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(server.upstream_connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    let mut builder = Client::builder(TokioExecutor::new());
    if server.upstream_max_headers != DEFAULT_MAX_HEADERS {
        // Only when asked: any other count makes hyper allocate the parse
        // array on every response instead of keeping it on the stack.
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
