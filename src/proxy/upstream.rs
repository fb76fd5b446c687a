//! The pooled upstream client: keep-alive HTTP/1.1 connections per origin,
//! shared by every request (hyper-util's legacy client does the pooling).

use crate::config::{ServerConfig, DEFAULT_MAX_HEADERS};
use crate::proxy::body::Body;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

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
