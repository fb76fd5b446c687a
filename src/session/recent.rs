//! The session a connection verified last.
//!
//! A kept-alive connection (a browser's, a load tool's) presents the same
//! cookie on request after request. Verifying it from scratch each time means
//! parsing the cookie, hashing the token, a cache lookup and hashing the
//! fingerprint headers again: together the largest share of the session
//! stage's work. Each connection therefore remembers its last verified
//! session with exactly what the client sent for it; a request that presents
//! the same bytes (the one `Cookie` header, the client address, the
//! fingerprint headers) from the same connection gets the same answer,
//! provided nothing has ended or replaced a cached session of its
//! generation since ([`Generations`]) and the cache was the session's entry
//! when remembered. Expiry (idle and absolute) and the cache entry's age are
//! checked on every request all the same, from the session's own
//! timestamps, and the request counts as a touch.
//!
//! Anything else (a different cookie, several `Cookie` headers, another
//! address behind a trusted proxy, another `User-Agent`) takes the full
//! lookup, which then replaces what the connection remembers.

use super::live::Live;
use super::token::TokenHash;
use http::{header, HeaderMap, HeaderValue};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Generation counters: one per group of sessions (by token hash), advanced
/// *after* a cached session of the group is ended or replaced (every path
/// that takes one out of the cache for a reason other than its age or the
/// cache's size), and one for all, advanced when the cache may have missed
/// invalidations (a shared store's feed lost or restored). A connection's
/// memory is valid only while both stay where they were when its session
/// was found: a request that raced an ending either saw the counter before
/// it moved, and is treated like a cache hit just before the ending, or
/// after, and looks the session up again. 256 groups, so that one logout
/// does not send every connection back to the cache.
pub struct Generations {
    groups: Box<[AtomicU64]>,
    all: AtomicU64,
}

const GROUPS: usize = 256;

impl Default for Generations {
    fn default() -> Self {
        Generations {
            groups: (0..GROUPS).map(|_| AtomicU64::new(0)).collect(),
            all: AtomicU64::new(0),
        }
    }
}

/// Where the counters of one session's group stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    group: u64,
    all: u64,
}

impl Generations {
    fn group(&self, hash: &TokenHash) -> &AtomicU64 {
        &self.groups[usize::from(hash.0[31]) % GROUPS]
    }

    /// The counters for `hash`'s group, now.
    pub fn of(&self, hash: &TokenHash) -> Generation {
        Generation {
            group: self.group(hash).load(Ordering::SeqCst),
            all: self.all.load(Ordering::SeqCst),
        }
    }

    /// After `hash`'s cached session was ended or replaced.
    pub fn advance(&self, hash: &TokenHash) {
        self.group(hash).fetch_add(1, Ordering::SeqCst);
    }

    /// After the cache may have missed invalidations.
    pub fn advance_all(&self) {
        self.all.fetch_add(1, Ordering::SeqCst);
    }
}

/// One connection's memory of the session it verified last.
#[derive(Default)]
pub struct Recent(Mutex<Option<Remembered>>);

struct Remembered {
    /// The request's one `Cookie` header, whole (equal bytes, equal token),
    /// then the bytes the binding's fingerprint hashes
    /// (`record::fingerprint_input`). A copy, in one allocation: a clone of
    /// the header value would share, and so pin, hyper's read buffer.
    presented: Box<[u8]>,
    cookie_len: usize,
    client_ip: IpAddr,
    live: Arc<Live>,
    /// Read after `live` was found, before checking it was the cache's entry.
    generation: Generation,
}

/// What a request presents, as far as [`Recent`] compares it.
pub struct Presented<'a> {
    pub cookie: &'a HeaderValue,
    pub client_ip: IpAddr,
    pub fingerprint: &'a [u8],
}

/// The request's `Cookie` header when it has exactly one: a request with
/// none or several is never answered from memory.
pub fn one_cookie(headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    match (cookies.next(), cookies.next()) {
        (Some(cookie), None) => Some(cookie),
        _ => None,
    }
}

impl Recent {
    /// The remembered session, if the request presents exactly what found
    /// it (the same `Cookie` header, client address, and fingerprint bytes,
    /// which `fingerprint_is` compares without gathering them) and its
    /// generation has not moved.
    pub fn recall(
        &self,
        cookie: &HeaderValue,
        client_ip: IpAddr,
        fingerprint_is: impl FnOnce(&[u8]) -> bool,
        generations: &Generations,
    ) -> Option<Arc<Live>> {
        let slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let r = slot.as_ref()?;
        let (remembered_cookie, fingerprint) = r.presented.split_at(r.cookie_len);
        let same = r.client_ip == client_ip
            && remembered_cookie == cookie.as_bytes()
            && generations.of(&r.live.hash) == r.generation
            && fingerprint_is(fingerprint);
        same.then(|| r.live.clone())
    }

    /// Remembers `live` as found for `presented`. The caller read
    /// `generation` after finding `live`, then saw that `live` was still the
    /// cache's entry.
    pub fn remember(&self, presented: &Presented<'_>, live: &Arc<Live>, generation: Generation) {
        let cookie = presented.cookie.as_bytes();
        let len = cookie.len() + presented.fingerprint.len();
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // A connection that changes cookies (a load test cycling through
        // sessions) presents as many bytes each time: reuse the buffer.
        let mut bytes = match slot.take() {
            Some(r) if r.presented.len() == len => r.presented,
            _ => vec![0; len].into_boxed_slice(),
        };
        bytes[..cookie.len()].copy_from_slice(cookie);
        bytes[cookie.len()..].copy_from_slice(presented.fingerprint);
        *slot = Some(Remembered {
            presented: bytes,
            cookie_len: cookie.len(),
            client_ip: presented.client_ip,
            live: live.clone(),
            generation,
        });
    }

    /// Forgets the remembered session (the request presented something else).
    pub fn forget(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::live::Identities;
    use crate::session::record::{ClientBinding, Fingerprint, SessionRecord};
    use crate::session::token::SessionId;

    fn cached(last: u8) -> Arc<Live> {
        let mut hash = [1; 32];
        hash[31] = last;
        let record = SessionRecord {
            id: SessionId([7; 16]),
            identity: None,
            binding: ClientBinding {
                ip: None,
                fingerprint: Fingerprint([3; 32]),
            },
            created_at: 1,
            authenticated_at: 1,
            last_seen: 1,
            expires_at: 2,
            data: String::new(),
            csrf: String::new(),
            login_entry: None,
            provider_login: false,
            servers: Vec::new(),
        };
        Arc::new(Live::new(TokenHash(hash), &record, &Identities::default(), 1, u64::MAX))
    }

    fn presenting<'a>(h: &'a HeaderMap, client_ip: IpAddr, fingerprint: &'a [u8]) -> Option<Presented<'a>> {
        one_cookie(h).map(|cookie| Presented {
            cookie,
            client_ip,
            fingerprint,
        })
    }

    fn recall(recent: &Recent, p: &Presented<'_>, generations: &Generations) -> Option<Arc<Live>> {
        recent.recall(p.cookie, p.client_ip, |f| f == p.fingerprint, generations)
    }

    fn headers(cookie: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static(cookie));
        h
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn only_the_same_bytes_recall_the_session() {
        let (generations, recent, live) = (Generations::default(), Recent::default(), cached(5));
        let h = headers("sg=token");
        let presented = presenting(&h, IP, b"ua").unwrap_or_else(|| unreachable!());
        assert!(
            recall(&recent, &presented, &generations).is_none(),
            "nothing remembered yet"
        );
        recent.remember(&presented, &live, generations.of(&live.hash));
        let again = recall(&recent, &presented, &generations);
        assert!(again.is_some_and(|l| Arc::ptr_eq(&l, &live)));

        let other = headers("sg=token2");
        let differs = [
            presenting(&other, IP, b"ua"),
            presenting(&h, IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)), b"ua"),
            presenting(&h, IP, b"ub"),
        ];
        for p in differs.iter().flatten() {
            assert!(recall(&recent, p, &generations).is_none());
        }
        recent.forget();
        assert!(recall(&recent, &presented, &generations).is_none());
    }

    #[test]
    fn an_advanced_generation_invalidates_only_its_group_or_all() {
        let (generations, recent, live) = (Generations::default(), Recent::default(), cached(5));
        let h = headers("sg=token");
        let presented = presenting(&h, IP, b"").unwrap_or_else(|| unreachable!());
        recent.remember(&presented, &live, generations.of(&live.hash));
        generations.advance(&cached(6).hash);
        assert!(
            recall(&recent, &presented, &generations).is_some(),
            "another group moved"
        );
        generations.advance(&live.hash);
        assert!(recall(&recent, &presented, &generations).is_none(), "its group moved");

        recent.remember(&presented, &live, generations.of(&live.hash));
        generations.advance_all();
        assert!(recall(&recent, &presented, &generations).is_none(), "all moved");
    }

    #[test]
    fn several_cookie_headers_are_never_remembered() {
        let mut h = headers("sg=token");
        h.append(header::COOKIE, HeaderValue::from_static("other=1"));
        assert!(one_cookie(&h).is_none());
        assert!(one_cookie(&HeaderMap::new()).is_none());
    }
}
