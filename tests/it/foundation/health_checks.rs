//! Active health checks: a route with several servers and `health_check = "/path"` has each
//! of them asked `GET /path` every `[server] health_check_interval` (`Host` the server's own,
//! `User-Agent: sessiongate-health-check`). A 2xx or 3xx within `health_check_timeout` passes;
//! anything else (another status, no answer in time) fails, and `health_check_fails` failures
//! in a row (2 by default, as here) mark the server down: its sessions and its turns go to the
//! route's other servers until `health_check_passes` checks in a row pass.
//! An answer to a real request does not undo a failing check.
//!
//! What shows it: `GET /upstreams` on the admin listener gives each server a `"check"`
//! (`"none"`, `"passing"`, `"failing"`) beside its `"state"` (maintenance, unchanged),
//! `sessiongate_upstream_ready` is 0 while it fails, `sessiongate_upstream_down_total` counts the
//! failure once, and the log says `upstream_down` (warn) and `upstream_up` (info).
//!
//! Checks follow `POST /reload`: a route given `health_check` is checked from the next round,
//! and a route that loses it no longer keeps its servers down.
//!
//! The servers here are `TestUpstream`s, whose `/healthz` answers what `set_health` says, and
//! a hung server ([`HungServer`]) that accepts connections and never answers. Checks run every
//! 250 ms; tests wait for their effect by polling the admin API, never by sleeping a guess.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{io::AsyncReadExt, net::TcpListener, task::JoinHandle};

use super::{
    balancing::{browser, browsers_on, down_series, listed, ready_series, served_by, ADMIN_TOKEN},
    route_reload::{reload_routes, rewrite_routes},
};
use crate::kit::{
    binary::log_field_text, millis, quoted, secs, BinaryGateway, GatewayAddrs, GatewayConfig, RouteSpec, TestGateway,
    TestUpstream,
};

/// The path the checks ask for; `TestUpstream` answers it with its `set_health` status.
const HEALTHZ: &str = "/healthz";

/// How long a check result may take to show: many rounds of 250 ms.
const CHECK_LIMIT: Duration = Duration::from_secs(10);

/// A gateway with [`ADMIN_TOKEN`], checks every 250 ms that may take 250 ms (a healthy test
/// server answers in far less, even on a loaded machine), and `routes`.
fn site(routes: impl IntoIterator<Item = RouteSpec>) -> GatewayConfig {
    routes.into_iter().fold(
        GatewayConfig::new()
            .server_str("health_check_interval", "250ms")
            .server_str("health_check_timeout", "250ms")
            .admin("token", quoted(ADMIN_TOKEN)),
        GatewayConfig::route,
    )
}

/// `/` to `origins`, sticky by session (`auth = "optional"`: every browser gets one).
fn sessions_to(origins: &[String]) -> RouteSpec {
    RouteSpec::balanced("/", origins).set("auth", quoted("optional"))
}

/// The same route, with its servers checked at `path`.
fn checked(origins: &[String], path: &str) -> RouteSpec {
    sessions_to(origins).set("health_check", quoted(path))
}

/// `/` to `origins` without sessions (`auth` left at `"none"`): requests take turns.
fn turns_to(origins: &[String]) -> RouteSpec {
    RouteSpec::balanced("/", origins)
}

/// What reached `server` besides the health checks.
fn real_requests(server: &TestUpstream) -> Vec<String> {
    server
        .targets()
        .into_iter()
        .filter(|t| !t.starts_with(HEALTHZ))
        .collect()
}

/// How many health checks `server` has been asked.
fn checks_of(server: &TestUpstream) -> usize {
    server.targets().iter().filter(|t| t.starts_with(HEALTHZ)).count()
}

/// Polls `done` every 20 ms until it holds, failing the test with `what` after `limit`.
async fn eventually<F: Future<Output = bool>>(limit: Duration, what: &str, mut done: impl FnMut() -> F) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        // Checks run on their own clock; there is no event to await.
        tokio::time::sleep(millis(20)).await;
    }
}

/// Polls `GET /upstreams` until `upstream`'s `"check"` is `want`.
async fn wait_for_check(gw: &GatewayAddrs, upstream: &str, want: &str) {
    let what = format!("{upstream} shown with \"check\": \"{want}\"");
    eventually(CHECK_LIMIT, &what, || async {
        listed(gw, upstream).await["check"] == want
    })
    .await;
}

/// A server that accepts connections and never answers: an app stuck on its database. It
/// keeps the head of every request it receives, and holds the connection until the peer
/// closes it.
struct HungServer {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    accept_loop: JoinHandle<()>,
}

impl HungServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the hung server");
        let addr = listener.local_addr().expect("hung server address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let accept_loop = tokio::spawn(hold_connections(listener, heads.clone()));
        Self {
            addr,
            heads,
            accept_loop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request heads received so far (one per connection), lowercased.
    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("hung server lock").clone()
    }
}

impl Drop for HungServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn hold_connections(listener: TcpListener, heads: Arc<Mutex<Vec<String>>>) {
    loop {
        let Ok((mut stream, _peer)) = listener.accept().await else {
            continue;
        };
        let heads = heads.clone();
        tokio::spawn(async move {
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            // Read (never write) until the peer hangs up: the head is kept once complete.
            let mut kept = false;
            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                received.extend_from_slice(&buf[..n]);
                if !kept && received.windows(4).any(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&received).to_ascii_lowercase();
                    heads.lock().expect("hung server lock").push(head);
                    kept = true;
                }
            }
        });
    }
}

/// An app whose check fails (503, its database gone) gets nothing but checks: its sessions go
/// to the other server, which answers them; it is shown failing, not ready and counted down
/// once, while its `state` stays `ready` (maintenance is the operator's, apart). When its check
/// passes again it takes new sessions; the ones that moved stay pinned where they went. The
/// real binary, for the log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_fails_its_check_gets_no_requests_until_it_passes_again() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let gw = BinaryGateway::start(site([checked(&[a.url(), b.url()], HEALTHZ)])).await;
    for server in [&a, &b] {
        assert_eq!(listed(&gw, &server.url()).await["check"], "passing");
    }
    let on = browsers_on(&gw, &["a", "b"]).await;
    let (on_a, on_b) = (&on["a"], &on["b"]);

    a.set_health(503);
    wait_for_check(&gw, &a.url(), "failing").await;
    let line = gw
        .wait_for_log(secs(5), |l| {
            log_field_text(l, "event").as_deref() == Some("upstream_down")
                && log_field_text(l, "upstream") == Some(a.url())
        })
        .await;
    assert_eq!(log_field_text(&line, "level").as_deref(), Some("WARN"), "{line}");

    let a_before = real_requests(&a);
    for i in 0..4 {
        assert_eq!(served_by(on_a, &gw, &format!("/failing/{i}")).await, "b", "a's session");
        assert_eq!(served_by(on_b, &gw, &format!("/failing/{i}")).await, "b", "b's session");
        assert_eq!(
            served_by(&browser(&gw), &gw, &format!("/new/{i}")).await,
            "b",
            "a new session"
        );
    }
    assert_eq!(real_requests(&a), a_before, "a server failing its check got requests");
    assert!(
        a.targets().iter().any(|t| t == HEALTHZ),
        "a was never asked: {:?}",
        a.targets()
    );
    let entry = listed(&gw, &a.url()).await;
    assert_eq!(entry["state"], "ready", "a failing check is not maintenance: {entry}");
    assert_eq!(entry["check"], "failing", "{entry}");
    assert_eq!(listed(&gw, &b.url()).await["check"], "passing");
    assert_eq!(gw.metric(&ready_series(&a.url())).await, Some(0.0));
    assert_eq!(gw.metric(&ready_series(&b.url())).await, Some(1.0));
    assert_eq!(
        gw.metric(&down_series(&a.url())).await,
        Some(1.0),
        "failures mark it down once, however many checks fail after it"
    );
    assert_eq!(gw.metric(&down_series(&b.url())).await, None);
    let checks = |origin: &str, result: &str| {
        format!("sessiongate_health_checks_total{{upstream=\"{origin}\",result=\"{result}\"}}")
    };
    let failed = gw.metric(&checks(&a.url(), "failed")).await.unwrap_or(0.0);
    assert!(failed >= 2.0, "two failures in a row mark it down, {failed} counted");
    assert!(gw.metric(&checks(&b.url(), "passed")).await.unwrap_or(0.0) >= 2.0);
    assert_eq!(gw.metric(&checks(&b.url(), "failed")).await, None);

    a.set_health(200);
    wait_for_check(&gw, &a.url(), "passing").await;
    let line = gw
        .wait_for_log(secs(5), |l| {
            log_field_text(l, "event").as_deref() == Some("upstream_up")
                && log_field_text(l, "upstream") == Some(a.url())
        })
        .await;
    assert_eq!(log_field_text(&line, "level").as_deref(), Some("INFO"), "{line}");
    // a takes new sessions again; the one that moved is pinned to b and stays (`pinning`).
    browsers_on(&gw, &["a"]).await;
    assert_eq!(served_by(on_a, &gw, "/back").await, "b", "a's old session stays on b");
    assert_eq!(served_by(on_b, &gw, "/back").await, "b");
    assert_eq!(gw.metric(&ready_series(&a.url())).await, Some(1.0));
    assert_eq!(gw.metric(&down_series(&a.url())).await, Some(1.0));
}

/// A server that accepts connections and never answers fails its check by the timeout. Ten
/// fresh sessions, about half of which rank it first, are then all answered by the live
/// server: a request sent to the hung one would wait `upstream_timeout` (20 s) and fail the
/// test. Every request the hung server received is a check, as the contract writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fails_its_check_by_the_timeout() {
    let hung = HungServer::start().await;
    let live = TestUpstream::named("live").await;
    let path = "/healthz?from=gateway";
    let gw = TestGateway::start(site([checked(&[hung.url(), live.url()], path)]).server_str("upstream_timeout", "20s"))
        .await;

    wait_for_check(&gw, &hung.url(), "failing").await;
    assert_eq!(listed(&gw, &live.url()).await["check"], "passing");
    for n in 0..10 {
        assert_eq!(served_by(&browser(&gw), &gw, &format!("/session/{n}")).await, "live");
    }
    assert_eq!(real_requests(&live).len(), 10);
    assert!(live.targets().iter().any(|t| t == path), "{:?}", live.targets());
    assert_eq!(gw.metric(&ready_series(&hung.url())).await, Some(0.0));
    assert_eq!(gw.metric(&down_series(&hung.url())).await, Some(1.0));

    let heads = hung.heads();
    assert!(!heads.is_empty(), "the hung server was never asked");
    let host = format!("host: {}\r\n", hung.addr);
    for head in &heads {
        assert!(head.starts_with(&format!("get {path} http/1.1\r\n")), "{head}");
        assert!(head.contains(&host), "not the server's own Host: {head}");
        assert!(head.contains("user-agent: sessiongate-health-check\r\n"), "{head}");
    }
}

/// Servers of routes without `health_check` are not checked (`"check": "none"`), and keep
/// their turns whatever their `/healthz` says. A reload that gives the route `health_check`
/// has them checked from the next round: the failing one is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_given_a_health_check_by_a_reload_is_checked() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let origins = [a.url(), b.url()];
    let gw = TestGateway::start(site([turns_to(&origins)])).await;
    a.set_health(503);
    for server in [&a, &b] {
        assert_eq!(listed(&gw, &server.url()).await["check"], "none");
    }
    let turns = [
        served_by(&gw.client(), &gw, "/turn/0").await,
        served_by(&gw.client(), &gw, "/turn/1").await,
    ];
    assert_eq!(turns, ["a", "b"], "unchecked, a keeps its turns");
    assert_eq!(checks_of(&a), 0, "a route without health_check had its servers checked");

    rewrite_routes(
        gw.config_path(),
        &[turns_to(&origins).set("health_check", quoted(HEALTHZ))],
    );
    reload_routes(&gw).await;

    wait_for_check(&gw, &a.url(), "failing").await;
    assert_eq!(listed(&gw, &b.url()).await["check"], "passing");
    for i in 0..4 {
        assert_eq!(served_by(&gw.client(), &gw, &format!("/checked/{i}")).await, "b");
    }
    assert_eq!(gw.metric(&ready_series(&a.url())).await, Some(0.0));
    assert_eq!(gw.metric(&down_series(&a.url())).await, Some(1.0));
}

/// A reload that takes `health_check` away from the only route checking a failing server
/// leaves nothing to clear its mark: the mark goes with it, and the server takes new
/// sessions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_the_health_check_puts_a_failing_server_back() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let origins = [a.url(), b.url()];
    let gw = TestGateway::start(site([checked(&origins, HEALTHZ)])).await;
    let on = browsers_on(&gw, &["a", "b"]).await;
    a.set_health(503);
    wait_for_check(&gw, &a.url(), "failing").await;
    assert_eq!(served_by(&on["a"], &gw, "/failing").await, "b");

    rewrite_routes(gw.config_path(), &[sessions_to(&origins)]);
    reload_routes(&gw).await;

    assert_eq!(listed(&gw, &a.url()).await["check"], "none");
    assert_eq!(gw.metric(&ready_series(&a.url())).await, Some(1.0));
    browsers_on(&gw, &["a"]).await;
    assert_eq!(
        served_by(&on["a"], &gw, "/unchecked").await,
        "b",
        "moved, and pinned there"
    );
}

/// An answer to a real request does not undo a failing check. With every server failing, a
/// request still goes to its session's first choice (never refused for health alone), which
/// answers; that server stays failing through the next rounds and is not counted down again
/// (it would be, were the answer taken as its recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_to_a_request_does_not_clear_a_failing_check() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let gw = TestGateway::start(site([checked(&[a.url(), b.url()], HEALTHZ)])).await;
    let on = browsers_on(&gw, &["a"]).await;
    a.set_health(503);
    b.set_health(503);
    wait_for_check(&gw, &a.url(), "failing").await;
    wait_for_check(&gw, &b.url(), "failing").await;

    assert_eq!(served_by(&on["a"], &gw, "/all-failing").await, "a", "its first choice");
    let asked = checks_of(&a);
    eventually(CHECK_LIMIT, "two more checks of a", || async {
        checks_of(&a) >= asked + 2
    })
    .await;
    assert_eq!(listed(&gw, &a.url()).await["check"], "failing");
    assert_eq!(gw.metric(&ready_series(&a.url())).await, Some(0.0));
    assert_eq!(gw.metric(&down_series(&a.url())).await, Some(1.0), "marked down again");
}

/// The checks send the route's `Host`: `health_check_host`, else the route's `host` (an app
/// behind name-based virtual hosts answers only for its own name), else the server's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_send_the_routes_host_or_health_check_host() {
    let (vhost, named, plain) = (
        HungServer::start().await,
        HungServer::start().await,
        HungServer::start().await,
    );
    let live = TestUpstream::named("live").await;
    let gw = TestGateway::start(site([
        checked(&[vhost.url(), live.url()], HEALTHZ).set("health_check_host", quoted("app.example.test:8080")),
        checked(&[named.url(), live.url()], HEALTHZ).host("shop.example.test"),
        RouteSpec::balanced("/plain/", &[plain.url(), live.url()]).set("health_check", quoted(HEALTHZ)),
    ]))
    .await;
    for (server, host) in [
        (&vhost, "app.example.test:8080".to_owned()),
        (&named, "shop.example.test".to_owned()),
        (&plain, plain.addr.to_string()),
    ] {
        wait_for_check(&gw, &server.url(), "failing").await;
        let heads = server.heads();
        assert!(!heads.is_empty(), "{} was never asked", server.url());
        for head in &heads {
            assert!(
                head.contains(&format!("\r\nhost: {host}\r\n")),
                "not Host {host}: {head}"
            );
        }
    }
}
