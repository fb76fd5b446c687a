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
//! Why pinned too: the ranking alone moves sessions whenever the list or
//! the servers' health changes. A server a reload adds would take about
//! 1/(n+1) of the existing sessions, and a server back from maintenance or
//! from being marked down would take its sessions back from the servers
//! that stood in for it, each time leaving the app's state of them
//! behind. So the server that serves a session is recorded in the session
//! (`SessionRecord::servers`, a [`ServerKey`] per group of servers), and
//! it comes first for as long as it is in service and up. The ranking
//! only places sessions that have no server among the route's yet, as
//! HAProxy's cookie persistence with `redispatch` does.
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
//! without a failed connection first. Or drain it first: it keeps the
//! sessions pinned to it and gets no others, so that they end on their
//! own (logout, idle timeout) before the deploy takes it out.

use crate::config::{Balance, RouteConfig, Upstream};
use crate::proxy::upstream::Origins;
use crate::session::record::{ServerKey, MAX_PINS};
use crate::session::token::SessionId;
use http::uri::Authority;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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

/// A session to pin to the server of a route that just answered it (see
/// [`Servers::pin_for`]). Applied to the session's pins when it is
/// written, not when it is asked: the pins a request saw may be older
/// than a write under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRequest {
    /// The route's servers: any of them among the pins is replaced.
    group: Box<[ServerKey]>,
    served: ServerKey,
    /// The server that answered, for the log.
    pub upstream: Upstream,
}

/// A session's new pins (see [`PinRequest::apply`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Pins {
    pub servers: Vec<ServerKey>,
    /// It was pinned to another of the route's servers.
    pub moved: bool,
}

impl PinRequest {
    /// A request of a route whose servers are `group`, from `served`.
    #[cfg(test)]
    pub fn for_tests(group: &[ServerKey], served: ServerKey) -> PinRequest {
        PinRequest {
            group: group.into(),
            served,
            upstream: crate::config::parse_upstream("http://10.0.0.1:80").unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// The pins a session pinned to `current` has after this request, and
    /// whether it moved; `None` when it is pinned to the server already.
    /// `served` replaces any other server of the route among them (the
    /// session moved), or joins them (its first request there), the newest
    /// last and at most [`MAX_PINS`].
    pub fn apply(&self, current: &[ServerKey]) -> Option<Pins> {
        if current.contains(&self.served) {
            return None;
        }
        let mut servers: Vec<ServerKey> = current.iter().copied().filter(|k| !self.group.contains(k)).collect();
        let moved = servers.len() < current.len();
        servers.push(self.served);
        let over = servers.len().saturating_sub(MAX_PINS);
        servers.drain(..over);
        Some(Pins { servers, moved })
    }
}

/// One request's way through its route's servers.
#[derive(Debug)]
pub struct Attempt {
    /// The session id's ranking key, for a sticky route; `None`: turns.
    key: Option<u64>,
    /// The servers the session is pinned to, one bit each (at most one,
    /// unless the route lists servers of two groups the session used).
    pinned: u64,
    /// The turn taken when the attempt began.
    turn: usize,
    /// The servers tried so far, one bit each.
    tried: u64,
}

impl Server {
    /// Its slot in [`Health`] (its origin's position).
    pub fn origin(&self) -> usize {
        self.origin
    }

    /// What a session pinned to it records.
    pub fn key(&self) -> ServerKey {
        ServerKey(self.seed)
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

    /// The first server for a request with a session (its id, and the
    /// servers it is pinned to), or without one.
    pub fn begin(&self, session: Option<(&SessionId, &[ServerKey])>, health: &Health) -> (Attempt, &Server) {
        let (key, pinned) = match (self.balance, session) {
            (Balance::Sticky, Some((id, pins))) => (Some(key_of(id)), self.pinned(pins)),
            _ => (None, 0),
        };
        let turn = match key {
            Some(_) => 0,
            None => self.turn.fetch_add(1, Ordering::Relaxed),
        };
        let mut attempt = Attempt {
            key,
            pinned,
            turn,
            tried: 0,
        };
        // `None` only if every server were in maintenance, which the admin
        // API refuses (a race of two changes aside): then the first.
        let first = self.choose(&mut attempt, health, true).unwrap_or(0);
        (attempt, &self.list[first])
    }

    /// The route's servers among `pins`, one bit each.
    fn pinned(&self, pins: &[ServerKey]) -> u64 {
        if pins.is_empty() {
            return 0;
        }
        let listed = self.list.iter().take(MAX_SERVERS).enumerate();
        listed
            .filter(|(_, s)| pins.contains(&s.key()))
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }

    /// The server a new session with `id` is pinned to from the start, on
    /// a sticky route with several: the one its first request goes to.
    pub fn placement(&self, id: &SessionId, health: &Health) -> Option<ServerKey> {
        if self.balance != Balance::Sticky || self.single().is_some() {
            return None;
        }
        Some(self.begin(Some((id, &[])), health).1.key())
    }

    /// What to pin, if anything, once `served` answered a session pinned
    /// to `pins`: on a sticky route, unless it is pinned to `served`.
    pub fn pin_for(&self, pins: &[ServerKey], served: &Server) -> Option<PinRequest> {
        if self.balance != Balance::Sticky || pins.contains(&served.key()) {
            return None;
        }
        Some(PinRequest {
            group: self.list.iter().map(Server::key).collect(),
            served: served.key(),
            upstream: served.upstream.clone(),
        })
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
                .filter(|&i| health.service(self.list[i].origin).takes(attempt.pinned & 1 << i != 0))
                .filter(|&i| !up_only || health.is_up(self.list[i].origin, now));
            match attempt.key {
                // The pinned server first, then the ranking.
                Some(key) => candidates.max_by_key(|&i| (attempt.pinned & 1 << i != 0, rank(key, self.list[i].seed))),
                // The turn's server first, then the ones after it in order.
                None => candidates.min_by_key(|&i| (i + n - attempt.turn % n) % n),
            }
        };
        let i = best(true).or_else(|| if or_down { best(false) } else { None })?;
        attempt.tried |= 1 << i;
        Some(i)
    }
}

/// What an operator says a server takes (the admin API's
/// `POST /upstreams/state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Every request its routes give it: the default.
    Ready,
    /// Only the sessions pinned to it: no new sessions, no turns of
    /// requests without a session (HAProxy's drain).
    Drain,
    /// Nothing: its pinned sessions move to other servers.
    Maintenance,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Ready, Service::Drain, Service::Maintenance];

    /// Its name in the admin API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Ready => "ready",
            Service::Drain => "drain",
            Service::Maintenance => "maintenance",
        }
    }

    pub fn parse(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn from_u8(v: u8) -> Service {
        Service::ALL.get(usize::from(v)).copied().unwrap_or(Service::Ready)
    }

    /// Whether it takes a request, of a session pinned to it or not.
    fn takes(self, pinned: bool) -> bool {
        match self {
            Service::Ready => true,
            Service::Drain => pinned,
            Service::Maintenance => false,
        }
    }
}

/// Which origins are marked down, and which an operator drained or took
/// out of service, shared by every worker and the admin API; slots by
/// origin.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// The millisecond (since `epoch`) until which the origin is marked down.
    down_until: Box<[AtomicU64]>,
    /// Set through the admin API (`POST /upstreams/state`): a [`Service`].
    service: Box<[AtomicU8]>,
    /// Set while the origin's last active health check failed (see
    /// `proxy::health_check`): marked down until one passes.
    check_failed: Box<[AtomicBool]>,
    /// Held while the admin API checks and changes `service`, so that two
    /// changes cannot each leave the other's route without a server.
    changing: Mutex<()>,
    fail_timeout: Duration,
}

/// An origin's state as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginState {
    pub service: Service,
    /// Its last active health check failed.
    pub check_failed: bool,
    /// How much longer it is marked down; zero when it is not.
    pub down_for: Duration,
}

/// Why an origin's [`Service`] could not be set.
#[derive(Debug, PartialEq, Eq)]
pub enum StateError {
    /// A route would have no server left that takes new sessions; its label.
    LastInService(String),
}

impl Health {
    pub fn new(origins: usize, fail_timeout: Duration) -> Health {
        Health {
            epoch: Instant::now(),
            down_until: (0..origins).map(|_| AtomicU64::new(0)).collect(),
            service: (0..origins).map(|_| AtomicU8::new(Service::Ready as u8)).collect(),
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
        let copy_u8 = |i: usize| {
            let service = previous.service.get(i).filter(|_| kept(i));
            service.map_or(Service::Ready as u8, |s| s.load(Ordering::Relaxed))
        };
        let copy_bool = |flags: &[AtomicBool], i: usize| {
            let flag = flags.get(i).filter(|_| kept(i));
            flag.is_some_and(|f| f.load(Ordering::Relaxed))
        };
        Health {
            epoch: previous.epoch,
            down_until: (0..origins).map(|i| AtomicU64::new(copy_u64(i))).collect(),
            service: (0..origins).map(|i| AtomicU8::new(copy_u8(i))).collect(),
            check_failed: (0..origins)
                .map(|i| AtomicBool::new(checked.get(i) == Some(&true) && copy_bool(&previous.check_failed, i)))
                .collect(),
            changing: Mutex::new(()),
            fail_timeout: previous.fail_timeout,
        }
    }

    /// What the operator set for `origin`.
    pub fn service(&self, origin: usize) -> Service {
        self.service
            .get(origin)
            .map_or(Service::Ready, |s| Service::from_u8(s.load(Ordering::Relaxed)))
    }

    /// `origin`'s state (see [`OriginState`]).
    pub fn state(&self, origin: usize) -> OriginState {
        let until = self.down_until.get(origin).map_or(0, |u| u.load(Ordering::Relaxed));
        OriginState {
            service: self.service(origin),
            check_failed: self.check_failed(origin),
            down_for: Duration::from_millis(until.saturating_sub(self.now_ms())),
        }
    }

    /// Sets what `origin` takes. Draining it or taking it out of service
    /// is refused when a route among `routes` (label and origins) would
    /// have no server left that is ready: its new sessions would then have
    /// nowhere to go.
    pub fn set_service<'r>(
        &self,
        origin: usize,
        service: Service,
        routes: impl IntoIterator<Item = (&'r str, &'r [usize])>,
    ) -> Result<(), StateError> {
        let _changing = self.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if service != Service::Ready {
            for (label, origins) in routes {
                let left = origins
                    .iter()
                    .any(|&o| o != origin && self.service(o) == Service::Ready);
                if origins.contains(&origin) && !left {
                    return Err(StateError::LastInService(label.to_owned()));
                }
            }
        }
        if let Some(slot) = self.service.get(origin) {
            slot.store(service as u8, Ordering::Relaxed);
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
        s.begin(id.map(|id| (id, &[][..])), h).1.pool_authority.as_str()
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
            let (_, in_a) = a.begin(Some((&session(n), &[])), &ha);
            let (_, in_b) = b.begin(Some((&session(n), &[])), &hb);
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
        let (mut attempt, server) = s.begin(Some((id, &[])), h);
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
        assert_eq!(h.set_service(1, Service::Maintenance, route), Ok(()));
        for n in 0..300 {
            assert_ne!(first(&s, &h, Some(&session(n))), "1");
        }
        // Marked down too, the others still come before it.
        h.mark_down(&s.as_slice()[0]);
        h.mark_down(&s.as_slice()[2]);
        assert_ne!(tries(&s, &h, &session(1))[0], "1");
        assert!(tries(&s, &h, &session(1)).iter().all(|t| t != "1"));
        assert_eq!(h.set_service(0, Service::Maintenance, route), Ok(()));
        assert_eq!(
            h.set_service(2, Service::Maintenance, route),
            Err(StateError::LastInService("/".into()))
        );
        assert_eq!(
            h.set_service(2, Service::Drain, route),
            Err(StateError::LastInService("/".into())),
            "drained, it would take no new session either"
        );
        assert_eq!(h.state(1).service, Service::Maintenance);
        assert_eq!(h.state(2).service, Service::Ready);
        assert_eq!(h.set_service(1, Service::Ready, route), Ok(()));
        assert_eq!(h.state(1).service, Service::Ready);
    }

    /// The first server for a session pinned to `pins`.
    fn first_pinned<'s>(s: &'s Servers, h: &Health, id: &SessionId, pins: &[ServerKey]) -> &'s str {
        s.begin(Some((id, pins)), h).1.pool_authority.as_str()
    }

    #[test]
    fn a_pinned_server_comes_first_while_it_is_in_service_and_up() {
        let (s, h) = servers(&THREE, Balance::Sticky);
        let route = [("/", &[0usize, 1, 2][..])];
        for n in 0..60 {
            let id = session(n);
            let ranked = first(&s, &h, Some(&id)).to_owned();
            let other = s.as_slice().iter().find(|x| x.pool_authority.as_str() != ranked);
            let Some(other) = other else {
                unreachable!("three servers")
            };
            let pin = [ServerKey(0x77), other.key()];
            assert_eq!(
                first_pinned(&s, &h, &id, &pin),
                other.pool_authority.as_str(),
                "session {n}"
            );
            // A pin to a server of no route of this one's is no pin here.
            assert_eq!(first_pinned(&s, &h, &id, &[ServerKey(0x77)]), ranked);
        }
        let id = session(1);
        let pinned = &s.as_slice()[2];
        let pin = [pinned.key()];
        assert_eq!(first_pinned(&s, &h, &id, &pin), "2");
        // Down or out of service, it is skipped like any other server.
        assert!(h.mark_down(pinned));
        assert_ne!(first_pinned(&s, &h, &id, &pin), "2");
        assert!(h.mark_up(pinned));
        assert_eq!(h.set_service(2, Service::Maintenance, route), Ok(()));
        assert_ne!(first_pinned(&s, &h, &id, &pin), "2");
        // When every server is down, the pinned one is still tried first.
        assert_eq!(h.set_service(2, Service::Ready, route), Ok(()));
        for server in s.as_slice() {
            h.mark_down(server);
        }
        assert_eq!(first_pinned(&s, &h, &id, &pin), "2");
    }

    #[test]
    fn a_drained_server_keeps_its_pinned_sessions_and_gets_no_others() {
        let (s, h) = servers(&THREE, Balance::Sticky);
        let route = [("/", &[0usize, 1, 2][..])];
        assert_eq!(h.set_service(1, Service::Drain, route), Ok(()));
        let pin = [s.as_slice()[1].key()];
        for n in 0..300 {
            let id = session(n);
            assert_ne!(first(&s, &h, Some(&id)), "1", "a new session, {n}");
            assert_eq!(first_pinned(&s, &h, &id, &pin), "1", "a pinned session, {n}");
        }
        let turns: Vec<&str> = (0..4).map(|_| first(&s, &h, None)).collect();
        assert!(turns.iter().all(|&t| t != "1"), "{turns:?}");
        assert_eq!(Service::parse("drain"), Some(Service::Drain));
        assert_eq!(Service::parse("Drain"), None);
    }

    #[test]
    fn pins_change_only_when_another_server_answers() {
        let (s, _) = servers(&THREE, Balance::Sticky);
        let [a, b, _] = [&s.as_slice()[0], &s.as_slice()[1], &s.as_slice()[2]];
        let elsewhere = ServerKey(0x99);
        let to = |server: &Server, pins: &[ServerKey]| s.pin_for(pins, server).and_then(|r| r.apply(pins));
        assert_eq!(
            to(a, &[]),
            Some(Pins {
                servers: vec![a.key()],
                moved: false
            }),
            "first request: pinned"
        );
        assert_eq!(s.pin_for(&[elsewhere, a.key()], a), None, "served where pinned");
        assert_eq!(
            to(b, &[a.key(), elsewhere]),
            Some(Pins {
                servers: vec![elsewhere, b.key()],
                moved: true
            }),
            "moved: the route's old pin goes, the other group's stays"
        );
        let full: Vec<ServerKey> = (1..=MAX_PINS as u64).map(ServerKey).collect();
        let mut expected = full[1..].to_vec();
        expected.push(a.key());
        assert_eq!(
            to(a, &full).map(|p| p.servers),
            Some(expected),
            "the oldest pin makes room"
        );
        let (rr, _) = servers(&THREE, Balance::RoundRobin);
        assert_eq!(rr.pin_for(&[], &rr.as_slice()[0]), None, "round robin pins nothing");

        // Asked on pins that a write under way then changed: applied to the pins it finds.
        let asked_unpinned = s.pin_for(&[], b);
        let Some(asked) = asked_unpinned else {
            unreachable!("b answered an unpinned session")
        };
        let moved = asked.apply(&[a.key()]);
        assert_eq!(moved.map(|p| (p.servers, p.moved)), Some((vec![b.key()], true)));
        assert_eq!(asked.apply(&[b.key()]), None, "already there");
    }

    #[test]
    fn a_new_session_is_placed_where_its_first_request_goes() {
        let (s, h) = servers(&THREE, Balance::Sticky);
        for n in 0..30 {
            let id = session(n);
            let first = s.begin(Some((&id, &[])), &h).1.key();
            assert_eq!(s.placement(&id, &h), Some(first), "session {n}");
        }
        let (rr, hr) = servers(&THREE, Balance::RoundRobin);
        assert_eq!(rr.placement(&session(1), &hr), None);
        let (one, ho) = servers(&THREE[..1], Balance::Sticky);
        assert_eq!(one.placement(&session(1), &ho), None);
    }

    #[test]
    fn server_keys_are_the_rendezvous_seeds_and_ignore_spelling() {
        let (a, _) = servers(&THREE, Balance::Sticky);
        let (b, _) = servers(
            &["http://10.0.0.3", "http://10.0.0.1:80/", "http://10.0.0.2:80"],
            Balance::Sticky,
        );
        let keys = |s: &Servers| {
            let mut k: Vec<u64> = s.as_slice().iter().map(|x| x.key().0).collect();
            k.sort_unstable();
            k
        };
        assert_eq!(keys(&a), keys(&b));
        // Stored in sessions: the value must never change between builds
        // (FNV-1a of "http://10.0.0.1:80").
        assert_eq!(a.as_slice()[0].key(), ServerKey(0xc2e8_df17_9a35_1d87));
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
