//! The routes in force, and their replacement by a reload.
//!
//! Everything built from `[[routes]]` lives in one [`Table`]: the router,
//! each route's metric handles, and the servers' health. A reload builds a
//! new table and swaps it in whole, so a request never sees half of one.
//!
//! Each connection holds the table that was current when it opened. Its
//! requests compare one generation number with the current one (an atomic
//! load, no reference counting), and only a connection that outlived a
//! reload takes the current table from the swap, per request.

use crate::config::RouteConfig;
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::balance::{Health, Server, Service};
use crate::proxy::upstream::Origins;
use crate::routing::{Readings, Route, Router};
use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// One generation of the routes.
pub struct Table {
    pub router: Router,
    /// Metric handles, parallel to `router.routes()`.
    route_metrics: Vec<RouteMetrics>,
    /// Which servers are marked down, drained or in maintenance, by
    /// origin slot.
    pub health: Arc<Health>,
    /// Each server's answers (`sessiongate_upstream_requests_total`), by
    /// origin slot; counted for the servers of routes with several.
    answers: Box<[Counter]>,
    /// The `[[routes]]` this table was built from, for the next reload to
    /// compare with.
    pub config: Vec<RouteConfig>,
    generation: u64,
}

impl Table {
    pub fn route_metrics(&self, route: &Route) -> Option<&RouteMetrics> {
        self.route_metrics.get(route.index)
    }

    /// Counts an answer from `server`, one of a route's several.
    pub fn answered(&self, server: &Server) {
        if let Some(c) = self.answers.get(server.origin()) {
            c.inc();
        }
    }
}

/// The current [`Table`], and what a new one is built from.
pub struct Tables {
    current: ArcSwap<Table>,
    /// The current table's generation, read by every request.
    generation: AtomicU64,
    origins: Origins,
    readings: Readings,
    metrics: Arc<Metrics>,
    /// Held while a table is replaced, and while the admin API changes a
    /// server's maintenance state: a change made to the old table while
    /// the new one copies it would be lost.
    changing: Mutex<()>,
}

/// What [`Tables::replace`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The routes are the ones in force: nothing to do.
    Unchanged,
    /// The new routes are in force.
    Applied,
    /// The new routes name an `https://` upstream, and the gateway started
    /// without one, so it has no upstream TLS client: a restart is needed.
    NeedsUpstreamTls,
}

impl Tables {
    /// `readings` and `fail_timeout` come from `[server]`, which a reload
    /// does not change.
    pub fn new(routes: &[RouteConfig], readings: Readings, fail_timeout: Duration, metrics: Arc<Metrics>) -> Tables {
        let origins = Origins::new(routes);
        let health = Health::new(origins.count(), fail_timeout);
        let table = build(routes, &origins, readings, &metrics, health, 0);
        Tables {
            current: ArcSwap::from_pointee(table),
            generation: AtomicU64::new(0),
            origins,
            readings,
            metrics,
            changing: Mutex::new(()),
        }
    }

    /// The table in force now.
    pub fn current(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// Whether `table` is still the one in force: one atomic load.
    pub fn is_current(&self, table: &Table) -> bool {
        table.generation == self.generation.load(Ordering::Acquire)
    }

    /// Every origin named since the start, for the workers' connectors.
    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// Puts `routes` in force for every request from now on; requests in
    /// flight finish on the table they started with. Servers named before
    /// and after keep their health and maintenance state; a server no
    /// route names any more loses it. `upstream_tls` says whether
    /// the gateway has an upstream TLS client (it started with an
    /// `https://` upstream).
    pub fn replace(&self, routes: &[RouteConfig], upstream_tls: bool) -> Replaced {
        let _changing = self.lock();
        let old = self.current.load_full();
        if old.config == routes {
            return Replaced::Unchanged;
        }
        let https = routes
            .iter()
            .flat_map(|r| r.upstreams.as_slice())
            .any(|u| u.scheme == http::uri::Scheme::HTTPS);
        if https && !upstream_tls {
            return Replaced::NeedsUpstreamTls;
        }
        self.origins.extend(routes);
        let (mut named, mut checked) = (vec![false; self.origins.count()], vec![false; self.origins.count()]);
        for route in routes {
            for upstream in route.upstreams.as_slice() {
                if let Some(slot) = self.origins.index_of(upstream) {
                    named[slot] = true;
                    checked[slot] |= route.health_check.is_some();
                }
            }
        }
        let health = Health::following(&old.health, &named, &checked);
        let generation = old.generation + 1;
        let table = build(routes, &self.origins, self.readings, &self.metrics, health, generation);
        back_in_service(&table);
        self.current.store(Arc::new(table));
        self.generation.store(generation, Ordering::Release);
        Replaced::Applied
    }

    /// Runs `f` on the current table with replacements held off (see
    /// `changing`).
    pub fn with_current<R>(&self, f: impl FnOnce(&Table) -> R) -> R {
        let _changing = self.lock();
        f(&self.current.load())
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes ready the servers of any route that has none ready (its servers
/// all drained or in maintenance, or its only one): the admin API refuses
/// to make such a route (409), and a reload must not either, or the
/// route's new sessions would go to servers shown as taking none.
fn back_in_service(table: &Table) {
    for route in table.router.routes() {
        let servers = route.servers.as_slice();
        if servers
            .iter()
            .any(|s| table.health.service(s.origin()) == Service::Ready)
        {
            continue;
        }
        for server in servers {
            let none: [(&str, &[usize]); 0] = [];
            let _ = table.health.set_service(server.origin(), Service::Ready, none);
            tracing::warn!(event = "upstream_state", upstream = %server.upstream, route = %route.label, state = "ready", "after the reload the route had no server in service: put back in service");
        }
    }
}

fn build(
    routes: &[RouteConfig],
    origins: &Origins,
    readings: Readings,
    metrics: &Metrics,
    health: Health,
    generation: u64,
) -> Table {
    let router = Router::new(routes, origins, readings);
    let route_metrics = router.routes().iter().map(|r| metrics.route(&r.label)).collect();
    let mut answers: Box<[Counter]> = (0..origins.count()).map(|_| Counter::default()).collect();
    for route in router.routes().iter().filter(|r| r.servers.single().is_none()) {
        for server in route.servers.as_slice() {
            if let Some(slot) = answers.get_mut(server.origin()) {
                *slot = metrics.upstream_requests(&server.upstream);
            }
        }
    }
    Table {
        router,
        route_metrics,
        answers,
        health: Arc::new(health),
        config: routes.to_vec(),
        generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, servers: &[&str]) -> RouteConfig {
        RouteConfig::for_tests(prefix, servers, crate::config::AuthMode::Optional)
    }

    fn tables(routes: &[RouteConfig]) -> Tables {
        let readings = Readings {
            fold_case: false,
            format_suffix: false,
        };
        Tables::new(routes, readings, Duration::from_secs(60), Arc::new(Metrics::new()))
    }

    const A: &str = "http://10.0.0.1:8080";
    const B: &str = "http://10.0.0.2:8080";
    const C: &str = "http://10.0.0.3:8080";

    #[test]
    fn a_reload_keeps_each_named_servers_slot_and_state() {
        let tables = tables(&[route("/", &[A, B])]);
        let old = tables.current();
        let servers = old.router.routes()[0].servers.as_slice();
        assert!(old.health.mark_down(&servers[0]));
        let no_routes: [(&str, &[usize]); 0] = [];
        assert_eq!(
            old.health
                .set_service(servers[1].origin(), Service::Maintenance, no_routes),
            Ok(())
        );

        let new_routes = [route("/", &[C, B]), route("/a/", &[A])];
        assert_eq!(tables.replace(&new_routes, false), Replaced::Applied);
        assert!(!tables.is_current(&old), "connections must notice the reload");
        let new = tables.current();
        assert!(tables.is_current(&new));
        assert_eq!(new.config, new_routes);
        let slot = |u: &str| {
            tables
                .origins()
                .index_of(&crate::config::parse_upstream(u).unwrap_or_else(|e| panic!("{e}")))
        };
        assert_eq!((slot(A), slot(B), slot(C)), (Some(0), Some(1), Some(2)));
        assert!(new.health.state(0).down_for > Duration::ZERO, "a stays marked down");
        assert_eq!(new.health.service(1), Service::Maintenance, "b stays in maintenance");
        assert_eq!(new.health.state(2).down_for, Duration::ZERO);
        assert_eq!(new.health.service(2), Service::Ready);
        let labels: Vec<_> = new.router.routes().iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels.len(), 2);

        // A server that no route names any more keeps its slot: pool names never change meaning.
        assert_eq!(tables.replace(&[route("/", &[C])], false), Replaced::Applied);
        assert_eq!(tables.origins().count(), 3);
        assert_eq!(slot(C), Some(2));
        let table = tables.current();
        let servers = table.router.routes()[0].servers.as_slice();
        assert_eq!(servers.iter().map(|s| s.origin()).collect::<Vec<_>>(), [2]);
        // But not its state: listed again, it starts ready.
        assert_eq!(tables.replace(&[route("/", &[C, B])], false), Replaced::Applied);
        assert_eq!(
            tables.current().health.service(1),
            Service::Ready,
            "a server listed again starts ready"
        );
    }

    #[test]
    fn a_reload_never_leaves_a_route_without_a_server_in_service() {
        let tables = tables(&[route("/", &[A, B]), route("/c/", &[C])]);
        let old = tables.current();
        let no_routes: [(&str, &[usize]); 0] = [];
        assert_eq!(old.health.set_service(0, Service::Maintenance, no_routes), Ok(()));
        assert_eq!(old.health.set_service(2, Service::Drain, no_routes), Ok(()));
        // A, in maintenance, becomes the only server of "/"; C, drained, of
        // "/c/" with B in maintenance.
        assert_eq!(old.health.set_service(1, Service::Maintenance, no_routes), Ok(()));
        assert_eq!(
            tables.replace(&[route("/", &[A]), route("/c/", &[C, B])], false),
            Replaced::Applied
        );
        let health = &tables.current().health;
        assert_eq!(health.service(0), Service::Ready, "A is back in service");
        assert_eq!((health.service(1), health.service(2)), (Service::Ready, Service::Ready));
    }

    #[test]
    fn a_failed_check_lasts_only_while_a_route_checks_the_server() {
        let checked = |path: Option<&str>| RouteConfig {
            health_check: path.map(|p| p.parse().unwrap_or_else(|e| panic!("{e}"))),
            ..route("/", &[A, B])
        };
        let tables = tables(&[checked(Some("/healthz"))]);
        assert!(tables.current().health.checked(0, false));
        assert_eq!(tables.replace(&[checked(Some("/ready"))], false), Replaced::Applied);
        assert!(tables.current().health.state(0).check_failed, "still checked: kept");
        assert_eq!(tables.replace(&[checked(None)], false), Replaced::Applied);
        assert!(
            !tables.current().health.state(0).check_failed,
            "no check left to clear it"
        );
    }

    #[test]
    fn the_same_routes_again_change_nothing() {
        let routes = [route("/", &[A, B])];
        let tables = tables(&routes);
        let old = tables.current();
        assert_eq!(tables.replace(&routes, false), Replaced::Unchanged);
        assert!(tables.is_current(&old));
    }

    #[test]
    fn https_upstreams_need_the_client_the_gateway_started_with() {
        let tables = tables(&[route("/", &[A])]);
        let old = tables.current();
        let https = [route("/", &["https://app.internal"])];
        assert_eq!(tables.replace(&https, false), Replaced::NeedsUpstreamTls);
        assert!(tables.is_current(&old), "nothing of the new routes may apply");
        assert_eq!(tables.origins().count(), 1);
        assert_eq!(tables.replace(&https, true), Replaced::Applied);
    }
}
