//! `[[routes]]` put in force by a reload (`POST /reload` on the admin listener, SIGHUP for the
//! process), without a restart: routes added, removed or changed (prefix, host, servers,
//! `auth`), for the next request on every connection, kept-alive ones (HTTP/1.1 and HTTP/2)
//! included, while a request in flight finishes on the routes it started with. The reload's
//! answer says `"routes_reloaded": true`, and `"routes"` is no longer in `restart_needed`.
//!
//! A server named before and after keeps its state (maintenance stays maintenance);
//! `GET /upstreams` lists the servers of the new routes, and a new route has its own
//! `sessiongate_requests_total` series. A file that does not validate changes nothing. Routes
//! naming an `https://` server, when the gateway started with none (so without an upstream TLS
//! client), need a restart: they are not applied, the rest of the reload (users) is.
//!
//! The config file is rewritten from its own text: everything before its first `[[routes]]`
//! table (the kit writes the routes last) is kept, and new routes are rendered by the kit.

use std::{collections::BTreeSet, path::Path};

use reqwest::StatusCode;
use serde_json::Value;

use super::balancing::{listed, send, served_by, set_state, tls_server, upstreams, ADMIN_TOKEN};

use crate::{
    kit::{
        binary::log_field_text, client::plain_client, closed_port, get_request, millis, quoted, secs, within,
        BinaryGateway, Echo, GatewayAddrs, GatewayConfig, RouteSpec, TestGateway, TestUpstream,
    },
    sessions::support::{users_section, Browser},
};

/// Where the kit's config files start their routes (they come last).
const ROUTES_TABLE: &str = "\n[[routes]]\n";

/// A gateway with [`ADMIN_TOKEN`] and `routes`.
fn site(routes: impl IntoIterator<Item = RouteSpec>) -> GatewayConfig {
    routes.into_iter().fold(
        GatewayConfig::new().admin("token", quoted(ADMIN_TOKEN)),
        GatewayConfig::route,
    )
}

/// `[[routes]]` tables for `routes`, as the kit renders them.
fn routes_toml(routes: &[RouteSpec]) -> String {
    let text = site(routes.iter().cloned()).render("cert.pem", "key.pem");
    let start = text
        .find(ROUTES_TABLE)
        .unwrap_or_else(|| panic!("no [[routes]] rendered:\n{text}"));
    text[start..].to_owned()
}

/// Everything in a kit config file before its routes.
fn before_routes(text: &str) -> &str {
    let start = text
        .find(ROUTES_TABLE)
        .unwrap_or_else(|| panic!("no [[routes]] in the config file:\n{text}"));
    &text[..start]
}

/// Rewrites the config file at `path` with `extra` (raw TOML, placed before the routes) and
/// `routes` instead of its routes; the other sections stay as they are.
fn rewrite(path: &Path, extra: &str, routes: &str) {
    let text = std::fs::read_to_string(path).expect("read the config file");
    let new = format!("{}\n{extra}{routes}", before_routes(&text));
    std::fs::write(path, new).expect("rewrite the config file");
}

/// Rewrites the config file at `path` with `routes` instead of its routes.
pub(super) fn rewrite_routes(path: &Path, routes: &[RouteSpec]) {
    rewrite(path, "", &routes_toml(routes));
}

/// `GET path` with `client`: the status only.
async fn status_of(client: &reqwest::Client, gw: &GatewayAddrs, path: &str) -> StatusCode {
    send(client.get(gw.url(path))).await.status()
}

/// `POST /reload` with the admin token: status and JSON answer.
async fn reload(gw: &GatewayAddrs) -> (StatusCode, Value) {
    let response = send(plain_client().post(gw.admin_url("/reload")).bearer_auth(ADMIN_TOKEN)).await;
    let status = response.status();
    (status, response.json().await.expect("a JSON answer to POST /reload"))
}

/// Whether the reload answer's `restart_needed` names `section`.
fn restart_needs(report: &Value, section: &str) -> bool {
    report["restart_needed"]
        .as_array()
        .unwrap_or_else(|| panic!("no restart_needed list: {report}"))
        .iter()
        .any(|s| s == section)
}

/// `POST /reload`, which must have put new routes in force.
pub(super) async fn reload_routes(gw: &GatewayAddrs) -> Value {
    let (status, report) = reload(gw).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["reloaded"], true, "{report}");
    assert_eq!(report["routes_reloaded"], true, "{report}");
    assert!(!restart_needs(&report, "routes"), "routes applied, yet: {report}");
    report
}

/// The servers `GET /upstreams` lists, sorted.
async fn listed_servers(gw: &GatewayAddrs) -> BTreeSet<String> {
    upstreams(gw)
        .await
        .iter()
        .map(|u| u["upstream"].as_str().expect("an `upstream` string").to_owned())
        .collect()
}

/// Client connections the HTTPS listener has accepted, over every worker.
async fn accepted_connections(gw: &GatewayAddrs) -> u64 {
    gw.metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("sessiongate_connections_accepted_total{"))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("a counter value: {l}")) as u64
        })
        .sum()
}

/// A set of upstream names, for comparisons.
fn names<const N: usize>(list: [&str; N]) -> BTreeSet<String> {
    list.into_iter().map(str::to_owned).collect()
}

/// A kept-alive HTTP/1.1 connection and an HTTP/2 client's connection, both opened before the
/// reload, take turns between both servers right after it, on the connections they already
/// had (no new connection is accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_server_and_kept_alive_connections_use_it_next_request() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let round_robin = |origins: &[String]| RouteSpec::balanced("/", origins).set("balance", quoted("round-robin"));
    let gw = TestGateway::start(site([round_robin(&[a.url()])])).await;
    let mut h1 = gw.raw().await;
    let h2 = gw.client_h2();
    let h1_get = |path: &str| get_request(path, &gw.host_header());
    for i in 0..3 {
        let path = format!("/before/{i}");
        let response = h1.roundtrip(h1_get(&path)).await.expect("HTTP/1.1 response");
        assert_eq!(response.echo().upstream(), "a");
        assert_eq!(served_by(&h2, &gw, &path).await, "a");
    }
    let response = send(h2.get(gw.url("/before/h2"))).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let accepted = accepted_connections(&gw).await;

    rewrite_routes(gw.config_path(), &[round_robin(&[a.url(), b.url()])]);
    reload_routes(&gw).await;

    let mut seen = BTreeSet::new();
    for i in 0..4 {
        let request = h1_get(&format!("/after/{i}"));
        let response = within(secs(10), "HTTP/1.1 response after the reload", h1.roundtrip(request))
            .await
            .expect("a response on the HTTP/1.1 connection opened before the reload");
        seen.insert(response.echo().upstream().to_owned());
    }
    assert_eq!(seen, names(["a", "b"]), "HTTP/1.1: four turns after the reload");
    let mut seen = BTreeSet::new();
    for i in 0..4 {
        seen.insert(served_by(&h2, &gw, &format!("/after/{i}")).await);
    }
    assert_eq!(seen, names(["a", "b"]), "HTTP/2: four turns after the reload");
    assert_eq!(
        accepted_connections(&gw).await,
        accepted,
        "the HTTP/2 client's connection from before the reload was replaced"
    );
    assert_eq!(b.request_count(), 4);

    let entry = listed(&gw, &b.url()).await;
    assert_eq!(entry["state"], "ready", "{entry}");
    assert_eq!(entry["routes"], serde_json::json!(["/"]), "{entry}");
    assert_eq!(listed_servers(&gw).await, names([&a.url(), &b.url()]));
}

/// A route removed is no route (404), a route added serves at once and is counted under its
/// own label, a route kept keeps serving. A second reload of the same file changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_routes() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let gw = TestGateway::start(site([
        RouteSpec::new("/old/", a.url()),
        RouteSpec::new("/keep/", a.url()),
    ]))
    .await;
    let new_route_ok = "sessiongate_requests_total{route=\"/new/\",status=\"2xx\"}";
    let client = gw.client();
    assert_eq!(served_by(&client, &gw, "/old/x").await, "a");
    assert_eq!(served_by(&client, &gw, "/keep/x").await, "a");
    assert_eq!(status_of(&client, &gw, "/new/x").await, StatusCode::NOT_FOUND);
    assert_eq!(gw.metric(new_route_ok).await, None);

    rewrite_routes(
        gw.config_path(),
        &[RouteSpec::new("/keep/", a.url()), RouteSpec::new("/new/", b.url())],
    );
    reload_routes(&gw).await;

    assert_eq!(served_by(&client, &gw, "/new/x").await, "b");
    assert_eq!(status_of(&client, &gw, "/old/x").await, StatusCode::NOT_FOUND);
    assert_eq!(served_by(&client, &gw, "/keep/x").await, "a");
    assert_eq!(
        a.targets(),
        ["/old/x", "/keep/x", "/keep/x"],
        "what reached a (the removed route's request must not)"
    );
    assert_eq!(b.targets(), ["/new/x"]);
    assert_eq!(gw.metric(new_route_ok).await, Some(1.0), "{}", gw.metrics_text().await);
    assert_eq!(listed_servers(&gw).await, names([&a.url(), &b.url()]));

    // The same file again: the routes in force are the file's.
    let (status, report) = reload(&gw).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["routes_reloaded"], false, "nothing changed: {report}");
    assert!(!restart_needs(&report, "routes"), "{report}");
    assert_eq!(served_by(&client, &gw, "/new/y").await, "b");
    assert_eq!(status_of(&client, &gw, "/old/y").await, StatusCode::NOT_FOUND);
}

/// A route's other settings change too: `auth` (none to required: a client without a
/// session now gets 401 on the connection it had) and `host` (a new host-specific route).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_a_routes_auth_and_adds_a_host_route() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let gw = TestGateway::start(site([RouteSpec::new("/", a.url()).set("auth", quoted("none"))])).await;
    let client = gw.client();
    let echo = Echo::from_response(send(client.get(gw.url("/page"))).await).await;
    assert_eq!(echo.upstream(), "a");
    assert!(!echo.has_header("x-session-id"), "auth = none does no session work");
    let other_host = Echo::from_response(send(client.get(gw.url_for_host("example.test", "/page"))).await).await;
    assert_eq!(other_host.upstream(), "a");

    rewrite_routes(
        gw.config_path(),
        &[
            RouteSpec::new("/", a.url()).set("auth", quoted("required")),
            RouteSpec::new("/", b.url()).host("example.test"),
        ],
    );
    reload_routes(&gw).await;

    assert_eq!(
        status_of(&client, &gw, "/page").await,
        StatusCode::UNAUTHORIZED,
        "the route now requires a login"
    );
    let other_host = Echo::from_response(send(client.get(gw.url_for_host("example.test", "/page"))).await).await;
    assert_eq!(other_host.upstream(), "b");
    assert_eq!(a.targets(), ["/page", "/page"], "the 401 reached no upstream");
}

/// A server in maintenance, still named after the reload, stays in maintenance: no session
/// and no turn reaches it, while the server the reload added takes its share.
/// Unless the reload leaves it a route's only server: then it is put back in service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_in_maintenance_stays_in_maintenance_across_a_reload() {
    let (a, b, c) = (
        TestUpstream::named("a").await,
        TestUpstream::named("b").await,
        TestUpstream::named("c").await,
    );
    let optional = |origins: &[String]| RouteSpec::balanced("/", origins).set("auth", quoted("optional"));
    let gw = TestGateway::start(site([optional(&[a.url(), b.url()])])).await;
    assert_eq!(set_state(&gw, &a.url(), "maintenance").await.0, StatusCode::OK);
    assert_eq!(served_by(&gw.client(), &gw, "/before").await, "b");

    rewrite_routes(gw.config_path(), &[optional(&[a.url(), b.url(), c.url()])]);
    reload_routes(&gw).await;

    let entry = listed(&gw, &a.url()).await;
    assert_eq!(entry["state"], "maintenance", "{entry}");
    assert_eq!(listed(&gw, &c.url()).await["state"], "ready");
    assert_eq!(listed_servers(&gw).await, names([&a.url(), &b.url(), &c.url()]));
    let a_before = a.request_count();
    let mut used = BTreeSet::new();
    for n in 0..16 {
        let browser = gw.client_builder().cookie_store().build();
        for i in 0..2 {
            used.insert(served_by(&browser, &gw, &format!("/client-{n}/{i}")).await);
        }
    }
    assert_eq!(a.request_count(), a_before, "the server in maintenance got requests");
    assert_eq!(used, names(["b", "c"]), "16 sessions after the reload went to {used:?}");

    // A reload that leaves it the route's only server puts it back in service, as the admin
    // API would never let a route have no server in service (409).
    rewrite_routes(gw.config_path(), &[optional(&[a.url()])]);
    reload_routes(&gw).await;
    assert_eq!(listed(&gw, &a.url()).await["state"], "ready");
    assert_eq!(served_by(&gw.client(), &gw, "/only-a").await, "a");
    assert_eq!(set_state(&gw, &a.url(), "maintenance").await.0, StatusCode::CONFLICT);
}

/// A server the reload removes gets nothing more, on a kept-alive connection or a new one,
/// and `GET /upstreams` no longer lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_server_gets_no_more_requests() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let gw = TestGateway::start(site([
        RouteSpec::balanced("/", &[a.url(), b.url()]).set("balance", quoted("round-robin"))
    ]))
    .await;
    let client = gw.client();
    let mut seen = BTreeSet::new();
    for i in 0..2 {
        seen.insert(served_by(&client, &gw, &format!("/before/{i}")).await);
    }
    assert_eq!(seen, names(["a", "b"]));

    rewrite_routes(gw.config_path(), &[RouteSpec::balanced("/", &[b.url()])]);
    reload_routes(&gw).await;

    let a_before = a.request_count();
    for i in 0..6 {
        assert_eq!(served_by(&client, &gw, &format!("/after/{i}")).await, "b");
        assert_eq!(served_by(&gw.client(), &gw, &format!("/fresh/{i}")).await, "b");
    }
    assert_eq!(a.request_count(), a_before, "the removed server got requests");
    assert_eq!(listed_servers(&gw).await, names([&b.url()]));
}

/// A request the upstream is still answering when the reload removes its route finishes
/// there; the next one finds the new routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_routes_it_started_with() {
    const DELAYED: &str = "/delay/1500";
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let gw = TestGateway::start(site([RouteSpec::new("/", a.url())])).await;
    let (client, url) = (gw.client(), gw.url(DELAYED));
    let in_flight = tokio::spawn(async move { send(client.get(url)).await });
    within(secs(5), "the delayed request to reach a", async {
        // The upstream's log is the only sign that the request got there; nothing to await.
        while !a.targets().iter().any(|t| t == DELAYED) {
            tokio::time::sleep(millis(5)).await;
        }
    })
    .await;

    rewrite_routes(gw.config_path(), &[RouteSpec::new("/other/", b.url())]);
    reload_routes(&gw).await;
    assert!(
        !in_flight.is_finished(),
        "the delayed answer came before the reload was done: nothing was in flight"
    );

    let response = in_flight.await.expect("the in-flight request's task");
    let echo = Echo::from_response(response).await;
    assert_eq!((echo.upstream(), echo.path()), ("a", DELAYED));
    let client = gw.client();
    assert_eq!(status_of(&client, &gw, "/x").await, StatusCode::NOT_FOUND);
    assert_eq!(served_by(&client, &gw, "/other/x").await, "b");
    assert_eq!(a.targets(), [DELAYED]);
}

/// Routes naming an `https://` server need the upstream TLS client the gateway only builds at
/// start when some route has one: not applied, and said so, while the users of the same
/// reload are put in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_added_by_reload_needs_a_restart_when_none_was_configured() {
    let a = TestUpstream::named("a").await;
    let b = TestUpstream::named("b").await;
    let gw = TestGateway::start(site([RouteSpec::new("/", a.url())])).await;
    let client = gw.client();
    assert_eq!(served_by(&client, &gw, "/before").await, "a");

    let https = format!("https://localhost:{}", closed_port());
    rewrite(
        gw.config_path(),
        &users_section(),
        &routes_toml(&[RouteSpec::new("/", https.clone()), RouteSpec::new("/plain/", b.url())]),
    );
    let (status, report) = reload(&gw).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["reloaded"], true, "{report}");
    assert_eq!(report["routes_reloaded"], false, "{report}");
    assert!(restart_needs(&report, "routes"), "{report}");
    let added: BTreeSet<String> = serde_json::from_value(report["users_added"].clone()).expect("users_added");
    assert_eq!(added, names(["alice", "bob"]), "{report}");

    assert_eq!(served_by(&client, &gw, "/after").await, "a");
    assert_eq!(
        served_by(&gw.client(), &gw, "/plain/x").await,
        "a",
        "no route of the refused set is in force"
    );
    assert_eq!(b.request_count(), 0);
    assert_eq!(listed_servers(&gw).await, names([&a.url()]));
    Browser::new(&gw, gw.client()).login("alice").await;
}

/// With an `https://` server at start, a reload may name one: the route moves to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_reloaded_like_any_other_when_one_was_configured() {
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key) =
        sessiongate::tls::write_self_signed(certs.path(), &["localhost".to_owned()]).expect("upstream certificate");
    let secure = TestUpstream::start_tls(tls_server(&cert, &key)).await;
    let secure_origin = format!("https://localhost:{}", secure.addr().port());
    let a = TestUpstream::named("a").await;
    let gw = TestGateway::start(
        site([
            RouteSpec::new("/", a.url()),
            RouteSpec::new("/secure/", secure_origin.clone()),
        ])
        .section(&format!(
            "[upstream_tls]\nca = {}\n",
            quoted(&cert.display().to_string())
        )),
    )
    .await;
    let client = gw.client();
    assert_eq!(served_by(&client, &gw, "/x").await, "a");
    assert_eq!(served_by(&client, &gw, "/secure/x").await, "tls-upstream");

    rewrite_routes(
        gw.config_path(),
        &[
            RouteSpec::new("/", secure_origin.clone()),
            RouteSpec::new("/plain/", a.url()),
        ],
    );
    reload_routes(&gw).await;

    assert_eq!(served_by(&client, &gw, "/x").await, "tls-upstream");
    assert_eq!(served_by(&client, &gw, "/secure/x").await, "tls-upstream");
    assert_eq!(served_by(&client, &gw, "/plain/x").await, "a");
    assert_eq!(a.targets(), ["/x", "/plain/x"]);
}

/// A file that does not validate changes nothing: not its valid routes either. Mended, it
/// applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_leaves_the_routes_in_force() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let gw = TestGateway::start(site([RouteSpec::new("/", a.url())])).await;
    let client = gw.client();
    assert_eq!(served_by(&client, &gw, "/before").await, "a");

    let empty: [&str; 0] = [];
    rewrite_routes(
        gw.config_path(),
        &[RouteSpec::new("/", b.url()), RouteSpec::balanced("/broken/", &empty)],
    );
    let (status, report) = reload(&gw).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{report}");
    assert_eq!(report["reloaded"], false, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains("upstream"), "{report}");

    assert_eq!(served_by(&client, &gw, "/after").await, "a");
    assert_eq!(served_by(&gw.client(), &gw, "/broken/x").await, "a");
    assert_eq!(b.request_count(), 0);
    assert_eq!(listed_servers(&gw).await, names([&a.url()]));

    // Mended, the same change goes through.
    rewrite_routes(gw.config_path(), &[RouteSpec::new("/", b.url())]);
    reload_routes(&gw).await;
    assert_eq!(served_by(&client, &gw, "/mended").await, "b");
    assert_eq!(listed_servers(&gw).await, names([&b.url()]));
}

/// The process reloads its routes on SIGHUP, says so at `info`, and a connection opened
/// before reaches the new server with its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_routes_of_the_running_process() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let gw = BinaryGateway::start(GatewayConfig::new().route(RouteSpec::new("/", a.url()))).await;
    let mut conn = gw.raw().await;
    let before = conn
        .roundtrip(get_request("/before", &gw.host_header()))
        .await
        .expect("a response before the reload");
    assert_eq!(before.echo().upstream(), "a");

    rewrite_routes(gw.config_path(), &[RouteSpec::new("/", b.url())]);
    gw.signal("HUP");
    let line = gw
        .wait_for_log(secs(10), |l| {
            log_field_text(l, "event").as_deref() == Some("routes_reloaded")
        })
        .await;
    assert_eq!(log_field_text(&line, "level").as_deref(), Some("INFO"), "{line}");
    gw.wait_for_log(secs(10), |l| {
        log_field_text(l, "event").as_deref() == Some("config_reloaded")
    })
    .await;

    let after = within(
        secs(10),
        "a request on the connection opened before SIGHUP",
        conn.roundtrip(get_request("/after", &gw.host_header())),
    )
    .await
    .expect("a response on the kept-alive connection");
    let echo = after.echo();
    assert_eq!((echo.upstream(), echo.path()), ("b", "/after"));
    assert_eq!(a.targets(), ["/before"]);
}

/// Requests keep flowing, on HTTP/1.1 and HTTP/2 connections that stay open, while the routes
/// are replaced again and again: every one is answered 200 by a server of the routes in force
/// before or after its reload, and none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_many_reloads_are_all_answered() {
    let (a, b) = (TestUpstream::named("a").await, TestUpstream::named("b").await);
    let round_robin = |origins: &[String]| RouteSpec::balanced("/", origins).set("balance", quoted("round-robin"));
    let gw = TestGateway::start(site([round_robin(&[a.url()])])).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads: Vec<_> = [gw.client(), gw.client(), gw.client_h2(), gw.client_h2()]
        .into_iter()
        .enumerate()
        .map(|(n, client)| {
            let (gw, stop) = ((*gw).clone(), stop.clone());
            tokio::spawn(async move {
                let mut answered = BTreeSet::new();
                let mut count = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    answered.insert(served_by(&client, &gw, &format!("/load/{n}/{count}")).await);
                    count += 1;
                }
                (count, answered)
            })
        })
        .collect();

    let lists = [vec![a.url(), b.url()], vec![b.url()], vec![a.url()]];
    for i in 0..15 {
        rewrite_routes(gw.config_path(), &[round_robin(&lists[i % 3])]);
        reload_routes(&gw).await;
        // Some requests between reloads, whatever the machine's speed.
        let before = a.request_count() + b.request_count();
        within(secs(10), "requests between two reloads", async {
            while a.request_count() + b.request_count() < before + 8 {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for load in loads {
        let (count, answered) = load.await.expect("a load task");
        assert!(count > 0, "a client sent nothing");
        assert!(answered.iter().all(|s| s == "a" || s == "b"), "{answered:?}");
    }
    assert!(a.request_count() > 0 && b.request_count() > 0);
}
