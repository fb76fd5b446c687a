//! Active health checks: the servers of routes with `health_check` are
//! asked for that path every `[server] health_check_interval`.
//!
//! Passive health (`balance`) only sees connections that fail. An app that
//! accepts connections but is broken (it answers 500 or 503 while its
//! database is gone, or hangs) keeps its sessions until users complain, and
//! a server that died is found by a visitor's request. A check finds both
//! between requests: a server whose checks fail (no answer within
//! `health_check_timeout`, or a status other than 2xx or 3xx)
//! `health_check_fails` times in a row is marked down, and its sessions go
//! to their next-ranked servers, until `health_check_passes` checks in a
//! row pass. Both default to 2 (HAProxy's are 3 and 2): moving a session
//! loses what a legacy app keeps of it in memory, so one slow answer must
//! not move them.
//!
//! One task runs the checks of every server, all at once, from the route
//! table in force at each round, so a reload's routes are checked from the
//! next round on.

use crate::config::Upstream;
use crate::metrics::Metrics;
use crate::proxy::balance::Server;
use crate::proxy::body::{self, Body};
use crate::proxy::table::{Table, Tables};
use crate::proxy::upstream::UpstreamClient;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What one round checks: each server once, with the path of the first
/// route (in the router's order) that checks it.
struct Target<'t> {
    server: &'t Server,
    path: &'t PathAndQuery,
    /// The route's `Host` for checks; `None`: the server's own.
    host: Option<&'t HeaderValue>,
    route: &'t str,
}

/// Why a check failed, for the log.
#[derive(Debug)]
enum Failed {
    Status(StatusCode),
    Timeout(Duration),
    Connect(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Status(s) => write!(f, "answered {s}"),
            Failed::Timeout(t) => write!(f, "no answer within {t:?}"),
            Failed::Connect(e) => write!(f, "request failed: {e}"),
        }
    }
}

/// How the checks run; from `[server]`.
pub struct Checks {
    pub tables: Arc<Tables>,
    pub client: UpstreamClient,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub timeout: Duration,
    pub streaks: Streaks,
}

/// Each origin's run of check results, and how long a run must be to
/// change its verdict. Slots are positions in `upstream::Origins`, which
/// stay the same across reloads, so runs do too.
pub struct Streaks {
    fails: u32,
    passes: u32,
    /// Positive: passes in a row; negative: failures in a row.
    by_slot: Vec<i64>,
}

impl Streaks {
    pub fn new(fails: u32, passes: u32) -> Streaks {
        Streaks {
            fails,
            passes,
            by_slot: Vec::new(),
        }
    }

    /// Adds a result to `slot`'s run: the verdict (`true`: passes) once the
    /// run is long enough, and on every result after that.
    fn record(&mut self, slot: usize, passed: bool) -> Option<bool> {
        if self.by_slot.len() <= slot {
            self.by_slot.resize(slot + 1, 0);
        }
        let run = &mut self.by_slot[slot];
        *run = match (passed, *run) {
            (true, n) if n > 0 => n.saturating_add(1),
            (true, _) => 1,
            (false, n) if n < 0 => n.saturating_sub(1),
            (false, _) => -1,
        };
        let long_enough = if passed {
            *run >= i64::from(self.passes)
        } else {
            -*run >= i64::from(self.fails)
        };
        long_enough.then_some(passed)
    }
}

impl Checks {
    /// Checks every round until `shutdown` says stop.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = crate::server::stopped(&mut shutdown) => return,
            }
            let table = self.tables.current();
            self.round(&table).await;
        }
    }

    /// Checks each server of `table` once, all at once, and records the
    /// results in the table's health.
    async fn round(&mut self, table: &Table) {
        let targets = targets(table);
        if targets.is_empty() {
            return;
        }
        let results = futures_util::future::join_all(targets.iter().map(|t| self.check(t))).await;
        for (target, result) in targets.iter().zip(results) {
            let server = target.server;
            self.metrics.health_check(&server.upstream, result.is_ok());
            if let Err(why) = &result {
                tracing::debug!(upstream = %server.upstream, route = target.route, error = %why, "health check failed");
            }
            let Some(verdict) = self.streaks.record(server.origin(), result.is_ok()) else {
                continue;
            };
            if !table.health.checked(server.origin(), verdict) {
                continue;
            }
            match result {
                Ok(()) => tracing::info!(
                    event = "upstream_up",
                    upstream = %server.upstream,
                    route = target.route,
                    "upstream server passes its health check again"
                ),
                Err(why) => {
                    self.metrics.upstream_down(&server.upstream);
                    tracing::warn!(
                        event = "upstream_down",
                        upstream = %server.upstream,
                        route = target.route,
                        error = %why,
                        "upstream server failed its health check: marked down, its requests go to the route's other servers"
                    );
                }
            }
        }
    }

    async fn check(&self, target: &Target<'_>) -> Result<(), Failed> {
        let req = request(target).map_err(Failed::Connect)?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| Failed::Connect(super::error_chain(&e)))?;
            let status = resp.status();
            // Read to its end, so that the connection goes back to the pool.
            let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await;
            match status.is_success() || status.is_redirection() {
                true => Ok(()),
                false => Err(Failed::Status(status)),
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Failed::Timeout(self.timeout)))
    }
}

/// Every server of a route with `health_check` and several servers, once.
fn targets(table: &Table) -> Vec<Target<'_>> {
    let mut targets: Vec<Target<'_>> = Vec::new();
    for route in table.router.routes() {
        let Some(path) = &route.health_check else {
            continue;
        };
        for server in route.servers.as_slice() {
            if !targets.iter().any(|t| t.server.origin() == server.origin()) {
                targets.push(Target {
                    server,
                    path,
                    host: route.health_check_host.as_ref(),
                    route: &route.label,
                });
            }
        }
    }
    targets
}

/// `GET path` to the target server's pool. There is no client's `Host` to
/// pass on: the route's (an app behind name-based virtual hosts answers
/// only for its name), else the server's own authority.
fn request(target: &Target<'_>) -> Result<Request<Body>, String> {
    let server = target.server;
    let uri = super::server_uri(server, Some(target.path.clone())).map_err(|e| e.to_string())?;
    let host = target.host.cloned().unwrap_or_else(|| host_of(&server.upstream));
    Request::get(uri)
        .header(header::HOST, host)
        .header(header::USER_AGENT, HeaderValue::from_static("sessiongate-health-check"))
        .body(body::empty())
        .map_err(|e| e.to_string())
}

fn host_of(upstream: &Upstream) -> HeaderValue {
    HeaderValue::from_str(upstream.authority.as_str()).unwrap_or(HeaderValue::from_static("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_needs_its_run_of_results() {
        let mut s = Streaks::new(2, 3);
        assert_eq!(s.record(4, false), None, "one failure is not enough");
        assert_eq!(s.record(4, true), None, "a pass breaks the run");
        assert_eq!(s.record(4, false), None);
        assert_eq!(s.record(4, false), Some(false), "two in a row");
        assert_eq!(s.record(4, false), Some(false));
        assert_eq!(s.record(0, true), None, "slots have their own runs");
        assert_eq!(s.record(4, true), None);
        assert_eq!(s.record(4, true), None);
        assert_eq!(s.record(4, true), Some(true), "three passes in a row");
        let mut one = Streaks::new(1, 1);
        assert_eq!(one.record(0, false), Some(false));
        assert_eq!(one.record(0, true), Some(true));
    }
}
