//! Routes with several upstream servers: which server a request goes to,
//! and which servers are marked down.
//!
//! Why sticky by session: a legacy app that is run twice for capacity
//! usually keeps its own state (its session, a wizard's steps) in each
//! process's memory, so all of a visitor's requests must reach the same
//! process. The gateway owns the session, and its id stays the same when
//! the token rotates at login, so it is the key: rendezvous hashing ranks
//! the servers for each session id, and a server that is marked down moves
//! only its own sessions, to their next-ranked server. Requests without a
//! session take turns.
//!
//! Health is passive: a connection that cannot be made (refused,
//! unreachable, timed out, TLS handshake failed) marks its server down for
//! `[server] upstream_fail_timeout`, shared by every worker. The first
//! request after that tries it again, and any answer from it clears the
//! mark at once. A request whose connection failed is sent to the next
//! server: one without a body, or with a small one read whole first; a
//! larger body streams, and no copy is kept to send again (see
//! `proxy::exchange_balanced`).
//!
//! An operator can take a server out of service for a deploy (the admin
//! API's `POST /upstreams/state`): it gets no requests, as if marked down,
//! without a failed connection first.

use crate::config::{Balance, RouteConfig, Upstream};
use crate::proxy::upstream::Origins;
use crate::session::token::SessionId;
use http::uri::Authority;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The most servers one route may list: a request's tried servers are
/// one bit each of a `u64`.
pub const MAX_SERVERS: usize = 64;

/// One of a route's servers, as requests address it.
#[derive(Debug)]
pub struct Server {
    pub upstream: Upstream,
    /// What stands for the server in requests to the pool (see
    /// `proxy::upstream::Origins`).
    pub pool_authority: Authority,
    /// Its slot in [`Health`] (its origin's position).
    origin: usize,
    /// Its rendezvous seed, from its name: a session ranks the servers the
    /// same way after a restart, or with the list reordered.
    seed: u64,
}

/// A route's servers and how it picks one.
#[derive(Debug)]
pub struct Servers {
    list: Box<[Server]>,
    balance: Balance,
    /// The next turn, for requests without a session.
    turn: AtomicUsize,
}

/// One request's way through its route's servers.
#[derive(Debug)]
pub struct Attempt {
    /// The session id's ranking key, for a sticky route; `None`: turns.
    key: Option<u64>,
    /// The turn taken when the attempt began.
    turn: usize,
    /// The servers tried so far, one bit each.
    tried: u64,
}

impl Server {
    /// Its slot in [`Health`].
    pub fn origin(&self) -> usize {
        self.origin
    }
}

impl Servers {
    pub fn new(route: &RouteConfig, origins: &Origins) -> Servers {
        let list = route
            .upstreams
            .as_slice()
            .iter()
            .map(|u| Server {
                upstream: u.clone(),
                pool_authority: origins.pool_authority(u),
                origin: origins.index_of(u).unwrap_or(usize::MAX),
                seed: seed(u),
            })
            .collect();
        Servers {
            list,
            balance: route.balance,
            turn: AtomicUsize::new(0),
        }
    }

    /// The route's server when it has only one (no choice, no health).
    #[inline]
    pub fn single(&self) -> Option<&Server> {
        match &*self.list {
            [one] => Some(one),
            _ => None,
        }
    }

    pub fn as_slice(&self) -> &[Server] {
        &self.list
    }

    /// The first server for a request with `session` (if any).
    pub fn begin(&self, session: Option<&SessionId>, health: &Health) -> (Attempt, &Server) {
        let key = match (self.balance, session) {
            (Balance::Sticky, Some(id)) => Some(key_of(id)),
            _ => None,
        };
        let turn = match key {
            Some(_) => 0,
            None => self.turn.fetch_add(1, Ordering::Relaxed),
        };
        let mut attempt = Attempt { key, turn, tried: 0 };
        // `None` only if every server were in maintenance, which the admin
        // API refuses (a race of two changes aside): then the first.
        let first = self.choose(&mut attempt, health, true).unwrap_or(0);
        (attempt, &self.list[first])
    }

    /// The next server to try, after the last one's connection failed:
    /// one not marked down and not tried yet. `None` when there is none,
    /// so a request waits for at most one server that is down (each may
    /// take `upstream_connect_timeout` to fail).
    pub fn next(&self, attempt: &mut Attempt, health: &Health) -> Option<&Server> {
        self.choose(attempt, health, false).map(|i| &self.list[i])
    }

    /// The best untried server in service and not marked down; with
    /// `or_down`, when every one is marked down, the best of those in
    /// service (a request is never refused for health alone).
    fn choose(&self, attempt: &mut Attempt, health: &Health, or_down: bool) -> Option<usize> {
        let now = health.now_ms();
        let n = self.list.len();
        let best = |up_only: bool| {
            let candidates = (0..n.min(MAX_SERVERS))
                .filter(|&i| attempt.tried & (1 << i) == 0)
                .filter(|&i| health.in_service(self.list[i].origin))
                .filter(|&i| !up_only || health.is_up(self.list[i].origin, now));
            match attempt.key {
                Some(key) => candidates.max_by_key(|&i| rank(key, self.list[i].seed)),
                // The turn's server first, then the ones after it in order.
                None => candidates.min_by_key(|&i| (i + n - attempt.turn % n) % n),
            }
        };
        let i = best(true).or_else(|| if or_down { best(false) } else { None })?;
        attempt.tried |= 1 << i;
        Some(i)
    }
}

/// Which origins are marked down, and which an operator took out of
/// service, shared by every worker and the admin API; slots by origin.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// The millisecond (since `epoch`) until which the origin is marked down.
    down_until: Box<[AtomicU64]>,
    /// Set through the admin API (`POST /upstreams/state`): no requests.
    maintenance: Box<[AtomicBool]>,
    /// Set while the origin's last active health check failed (see
    /// `proxy::health_check`): marked down until one passes.
    check_failed: Box<[AtomicBool]>,
    /// Held while the admin API checks and changes `maintenance`, so that
    /// two changes cannot each leave the other's route without a server.
    changing: Mutex<()>,
    fail_timeout: Duration,
}

/// An origin's state as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginState {
    pub maintenance: bool,
    /// Its last active health check failed.
    pub check_failed: bool,
    /// How much longer it is marked down; zero when it is not.
    pub down_for: Duration,
}

/// Why an origin's maintenance could not be set.
#[derive(Debug, PartialEq, Eq)]
pub enum StateError {
    /// A route would have no server left in service; its label.
    LastInService(String),
}

impl Health {
    pub fn new(origins: usize, fail_timeout: Duration) -> Health {
        Health {
            epoch: Instant::now(),
            down_until: (0..origins).map(|_| AtomicU64::new(0)).collect(),
            maintenance: (0..origins).map(|_| AtomicBool::new(false)).collect(),
            check_failed: (0..origins).map(|_| AtomicBool::new(false)).collect(),
            changing: Mutex::new(()),
            fail_timeout,
        }
    }

    /// The health of a reloaded route table, with a slot for each of
    /// `named`: a slot that is named (some route lists its server) keeps
    /// the state it has in `previous` (a server in maintenance stays there,
    /// one marked down stays down); the others start up and in service, so
    /// a server retired and listed again later comes back ready. A failed
    /// health check is kept only where a route still checks the slot
    /// (`checked`): nothing else would clear it. Slots are positions in
    /// `upstream::Origins`, which only grows.
    pub fn following(previous: &Health, named: &[bool], checked: &[bool]) -> Health {
        let origins = named.len();
        let kept = |i: usize| named[i];
        let copy_u64 = |i: usize| {
            let down = previous.down_until.get(i).filter(|_| kept(i));
            down.map_or(0, |d| d.load(Ordering::Relaxed))
        };
        let copy_bool = |flags: &[AtomicBool], i: usize| {
            let flag = flags.get(i).filter(|_| kept(i));
            flag.is_some_and(|f| f.load(Ordering::Relaxed))
        };
        Health {
            epoch: previous.epoch,
            down_until: (0..origins).map(|i| AtomicU64::new(copy_u64(i))).collect(),
            maintenance: (0..origins)
                .map(|i| AtomicBool::new(copy_bool(&previous.maintenance, i)))
                .collect(),
            check_failed: (0..origins)
                .map(|i| AtomicBool::new(checked.get(i) == Some(&true) && copy_bool(&previous.check_failed, i)))
                .collect(),
            changing: Mutex::new(()),
            fail_timeout: previous.fail_timeout,
        }
    }

    fn in_service(&self, origin: usize) -> bool {
        self.maintenance.get(origin).is_none_or(|m| !m.load(Ordering::Relaxed))
    }

    /// `origin`'s state (see [`OriginState`]).
    pub fn state(&self, origin: usize) -> OriginState {
        let until = self.down_until.get(origin).map_or(0, |u| u.load(Ordering::Relaxed));
        OriginState {
            maintenance: !self.in_service(origin),
            check_failed: self.check_failed(origin),
            down_for: Duration::from_millis(until.saturating_sub(self.now_ms())),
        }
    }

    /// Takes `origin` out of service (`true`) or puts it back. Refused when
    /// a route among `routes` (label and origins) would have no server in
    /// service: every request of that route would then fail.
    pub fn set_maintenance<'r>(
        &self,
        origin: usize,
        on: bool,
        routes: impl IntoIterator<Item = (&'r str, &'r [usize])>,
    ) -> Result<(), StateError> {
        let _changing = self.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if on {
            for (label, origins) in routes {
                let left = origins.iter().any(|&o| o != origin && self.in_service(o));
                if origins.contains(&origin) && !left {
                    return Err(StateError::LastInService(label.to_owned()));
                }
            }
        }
        if let Some(slot) = self.maintenance.get(origin) {
            slot.store(on, Ordering::Relaxed);
        }
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_up(&self, origin: usize, now: u64) -> bool {
        self.is_up_passively(origin, now) && !self.check_failed(origin)
    }

    fn check_failed(&self, origin: usize) -> bool {
        self.check_failed.get(origin).is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Records an active health check of `origin`. A failed one marks it
    /// down until one passes; a passing one also clears a mark left by a
    /// failed connection (it connected). True when this changed whether
    /// it takes requests, for the caller to report.
    pub fn checked(&self, origin: usize, passed: bool) -> bool {
        let Some(flag) = self.check_failed.get(origin) else {
            return false;
        };
        if passed {
            let was_down = self
                .down_until
                .get(origin)
                .is_some_and(|u| u.swap(0, Ordering::Relaxed) > self.now_ms());
            flag.swap(false, Ordering::Relaxed) || was_down
        } else {
            !flag.swap(true, Ordering::Relaxed) && self.is_up_passively(origin, self.now_ms())
        }
    }

    /// Not marked down by a failed connection (whatever its checks say).
    fn is_up_passively(&self, origin: usize, now: u64) -> bool {
        self.down_until
            .get(origin)
            .is_none_or(|until| until.load(Ordering::Relaxed) <= now)
    }

    /// Marks `server` down for the fail timeout, after a connection to it
    /// failed. True when it was up until now: the caller reports it once.
    pub fn mark_down(&self, server: &Server) -> bool {
        let Some(slot) = self.down_until.get(server.origin) else {
            return false;
        };
        let now = self.now_ms();
        let until = now.saturating_add(u64::try_from(self.fail_timeout.as_millis()).unwrap_or(u64::MAX));
        slot.swap(until, Ordering::Relaxed) <= now
    }

    /// Clears `server`'s mark: it answered, so it is up whatever its
    /// fail timeout says (after an outage of every server, the first one
    /// back takes every request at once). True when it was marked down.
    pub fn mark_up(&self, server: &Server) -> bool {
        let Some(slot) = self.down_until.get(server.origin) else {
            return false;
        };
        // A load first: the common case (it was up) writes nothing.
        slot.load(Ordering::Relaxed) != 0 && slot.swap(0, Ordering::Relaxed) > self.now_ms()
    }

    pub fn fail_timeout(&self) -> Duration {
        self.fail_timeout
    }
}

/// A session id's ranking key: its first 8 bytes, which are random.
fn key_of(id: &SessionId) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(first)
}

/// A server's seed: FNV-1a of its origin (scheme, lowercased host, port
/// with the default written out); fixed, unlike std's hasher, so rankings
/// survive a new build and any spelling of the same origin.
fn seed(upstream: &Upstream) -> u64 {
    let host = upstream.authority.host().to_ascii_lowercase();
    format!("{}://{host}:{}", upstream.scheme, upstream.port())
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The rendezvous weight of a server for a session: splitmix64's
/// finaliser over both, so that every bit of each moves the ranking.
fn rank(key: u64, seed: u64) -> u64 {
    let mut z = key ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;

    fn route(servers: &[&str], balance: Balance) -> RouteConfig {
        RouteConfig {
            balance,
            ..RouteConfig::for_tests("/", servers, AuthMode::Optional)
        }
    }

    fn servers(list: &[&str], balance: Balance) -> (Servers, Health) {
        let r = route(list, balance);
        let origins = Origins::new(std::slice::from_ref(&r));
        (
            Servers::new(&r, &origins),
            Health::new(list.len(), Duration::from_secs(10)),
        )
    }

    fn session(n: u64) -> SessionId {
        let mut id = [0u8; 16];
        // Spread like random ids: consecutive n would share high bytes.
        id[..8].copy_from_slice(&rank(n, 0x5eed).to_le_bytes());
        SessionId(id)
    }

    fn first<'s>(s: &'s Servers, h: &Health, id: Option<&SessionId>) -> &'s str {
        s.begin(id, h).1.pool_authority.as_str()
    }

    const THREE: [&str; 3] = ["http://10.0.0.1:80", "http://10.0.0.2:80", "http://10.0.0.3:80"];

    #[test]
    fn sessions_stick_and_spread_evenly() {
        let (s, h) = servers(&THREE, Balance::Sticky);
        let mut counts = [0usize; 3];
        for n in 0..3000 {
            let id = session(n);
            let pick = first(&s, &h, Some(&id));
            assert_eq!(first(&s, &h, Some(&id)), pick, "session {n} moved");
            counts[pick.parse::<usize>().unwrap_or_else(|e| panic!("{e}"))] += 1;
        }
        assert!(counts.iter().all(|&c| (850..1150).contains(&c)), "{counts:?}");
    }

    #[test]
    fn a_failed_check_marks_down_until_a_check_passes() {
        let (s, h) = servers(&THREE, Balance::Sticky);
        let id = (0..100).map(session).find(|id| first(&s, &h, Some(id)) == "1");
        let id = id.unwrap_or_else(|| panic!("no session on server 1"));
        assert!(h.checked(1, false), "the failure is reported");
        assert!(!h.checked(1, false), "and only once");
        assert!(h.state(1).check_failed);
        assert_ne!(first(&s, &h, Some(&id)), "1", "its session moved");
        // An answer to a request does not override a failing check.
        assert!(!h.mark_up(&s.as_slice()[1]));
        assert_ne!(first(&s, &h, Some(&id)), "1");
        assert!(h.checked(1, true), "the pass is reported");
        assert!(!h.checked(1, true), "and only once");
        assert_eq!(first(&s, &h, Some(&id)), "1", "its session is back");

        // A pass also clears a failed connection's mark: the server connected.
        assert!(h.mark_down(&s.as_slice()[1]));
        assert_ne!(first(&s, &h, Some(&id)), "1");
        assert!(h.checked(1, true));
        assert_eq!(first(&s, &h, Some(&id)), "1");
        // A failure while it is already marked down by a connection is not news.
        assert!(h.mark_down(&s.as_slice()[1]));
        assert!(!h.checked(1, false));
    }

    #[test]
    fn a_server_marked_down_moves_only_its_own_sessions() {
        let (s, h) = servers(&THREE, Balance::Sticky);
        let before: Vec<String> = (0..600).map(|n| first(&s, &h, Some(&session(n))).to_owned()).collect();
        assert!(h.mark_down(&s.as_slice()[1]));
        assert!(!h.mark_down(&s.as_slice()[1]), "reported twice");
        for (n, was) in before.iter().enumerate() {
            let now = first(&s, &h, Some(&session(n as u64)));
            if was == "1" {
                assert_ne!(now, "1");
            } else {
                assert_eq!(now, was, "session {n} moved off a healthy server");
            }
        }
    }

    #[test]
    fn the_ranking_ignores_the_order_and_spelling_of_the_list() {
        let (a, ha) = servers(&THREE, Balance::Sticky);
        let (b, hb) = servers(&["http://10.0.0.3", THREE[0], "http://10.0.0.2:80/"], Balance::Sticky);
        let mut seen = std::collections::HashSet::new();
        for n in 0..200 {
            let (_, in_a) = a.begin(Some(&session(n)), &ha);
            let (_, in_b) = b.begin(Some(&session(n)), &hb);
            assert_eq!(in_a.upstream, in_b.upstream, "session {n}");
            seen.insert(in_a.pool_authority.to_string());
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn requests_without_a_session_take_turns_and_skip_servers_marked_down() {
        let (s, h) = servers(&THREE, Balance::Sticky);
        let turns: Vec<&str> = (0..6).map(|_| first(&s, &h, None)).collect();
        assert_eq!(turns, ["0", "1", "2", "0", "1", "2"]);
        h.mark_down(&s.as_slice()[1]);
        let turns: Vec<&str> = (0..6).map(|_| first(&s, &h, None)).collect();
        assert_eq!(turns, ["0", "2", "2", "0", "2", "2"]);
    }

    #[test]
    fn round_robin_ignores_the_session() {
        let (s, h) = servers(&THREE, Balance::RoundRobin);
        let id = session(7);
        let turns: Vec<&str> = (0..3).map(|_| first(&s, &h, Some(&id))).collect();
        assert_eq!(turns, ["0", "1", "2"]);
    }

    /// The servers one request tries, in order.
    fn tries(s: &Servers, h: &Health, id: &SessionId) -> Vec<String> {
        let (mut attempt, server) = s.begin(Some(id), h);
        let mut order = vec![server.pool_authority.to_string()];
        while let Some(next) = s.next(&mut attempt, h) {
            order.push(next.pool_authority.to_string());
        }
        order
    }

    #[test]
    fn a_request_tries_each_server_up_once_and_a_server_down_only_when_all_are() {
        let (s, h) = servers(&THREE, Balance::Sticky);
        let id = session(3);
        let mut all = tries(&s, &h, &id);
        all.sort();
        assert_eq!(all, ["0", "1", "2"]);
        h.mark_down(&s.as_slice()[0]);
        h.mark_down(&s.as_slice()[2]);
        assert_eq!(tries(&s, &h, &id), ["1"]);
        h.mark_down(&s.as_slice()[1]);
        let last_resort = tries(&s, &h, &id);
        assert_eq!(last_resort.len(), 1, "{last_resort:?}");
    }

    #[test]
    fn a_server_that_answers_is_up_at_once() {
        let (s, h) = servers(&THREE[..2], Balance::RoundRobin);
        assert!(!h.mark_up(&s.as_slice()[0]), "it was never down");
        h.mark_down(&s.as_slice()[0]);
        h.mark_down(&s.as_slice()[1]);
        assert!(h.mark_up(&s.as_slice()[0]));
        assert_eq!([first(&s, &h, None), first(&s, &h, None)], ["0", "0"]);
    }

    #[test]
    fn a_server_in_maintenance_gets_nothing_and_the_last_one_in_service_stays() {
        let (s, h) = servers(&THREE, Balance::Sticky);
        let route = [("/", &[0usize, 1, 2][..])];
        assert_eq!(h.set_maintenance(1, true, route), Ok(()));
        for n in 0..300 {
            assert_ne!(first(&s, &h, Some(&session(n))), "1");
        }
        // Marked down too, the others still come before it.
        h.mark_down(&s.as_slice()[0]);
        h.mark_down(&s.as_slice()[2]);
        assert_ne!(tries(&s, &h, &session(1))[0], "1");
        assert!(tries(&s, &h, &session(1)).iter().all(|t| t != "1"));
        assert_eq!(h.set_maintenance(0, true, route), Ok(()));
        assert_eq!(
            h.set_maintenance(2, true, route),
            Err(StateError::LastInService("/".into()))
        );
        assert!(h.state(1).maintenance && !h.state(2).maintenance);
        assert_eq!(h.set_maintenance(1, false, route), Ok(()));
        assert!(!h.state(1).maintenance);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_is_back_after_the_fail_timeout() {
        let (s, h) = servers(&THREE[..2], Balance::RoundRobin);
        assert!(h.mark_down(&s.as_slice()[0]));
        assert_eq!([first(&s, &h, None), first(&s, &h, None)], ["1", "1"]);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!([first(&s, &h, None), first(&s, &h, None)], ["0", "1"]);
        assert!(h.mark_down(&s.as_slice()[0]), "down again: reported again");
    }
}
