//! A session as the cache holds it: [`Live`], kept small because a million
//! of them may be cached at once (docs/benchmarks.md, "Scale").
//!
//! What it owns: the fields verification and forwarding read on every
//! request. What it must never do: hold per session what can be shared,
//! rebuilt cheaply or read from the store when rarely needed.
//! - The identity (user, email, groups) and the header values forwarded for
//!   it are shared by every cached session of that identity ([`Identities`]
//!   interns them when a `Live` is built, on a cache fill or a login, never
//!   per request).
//! - The session-id and data header values are made per request, from the
//!   id's 16 bytes and from the data's shared bytes.
//! - The binding keeps 16 of the fingerprint's 32 bytes: enough to check
//!   (see [`check_binding`]); the full value is only ever written from the
//!   store's record or a new request.
//! - The CSRF secret, `created_at` and `authenticated_at` stay in the store:
//!   the login form, logout, login and data updates read the record
//!   (`Sessions::stored`), as they write it anyway.
//!
//! The store's [`SessionRecord`] and its serde form are unchanged: this is
//! only the in-memory shape.

use super::record::{check_binding, ClientBinding, Expiry, Identity, Mismatch, ServerKey, SessionRecord};
use super::token::{self, SessionId, TokenHash};
use crate::config::BindingConfig;
use bytes::Bytes;
use http::HeaderMap;
use http::HeaderValue;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long a cache entry may be served before it is re-read from the store,
/// whatever else happens: a bound on staleness from any cause. Checked from
/// the entry's own `cached_at` rather than with moka's `time_to_live`, which
/// costs a write-order queue node per entry.
pub const CACHE_TTL: Duration = Duration::from_secs(600);

/// A session as the request path sees it.
///
/// Size matters: with glibc's allocator (8 bytes of overhead, 16-byte
/// steps) the `Arc` of a `Live` of up to 120 bytes takes a 144-byte chunk;
/// a unit test pins the size.
pub struct Live {
    pub hash: TokenHash,
    pub record: CachedRecord,
    /// Fresher than the store's: touches are written behind, at most one
    /// per session per `touch_interval` window.
    pub(super) last_seen: AtomicU64,
}

/// The record's fields that requests read, as the cache holds them.
pub struct CachedRecord {
    pub id: SessionId,
    /// Shared with every other cached session of the same identity.
    pub identity: Option<Arc<SharedIdentity>>,
    pub binding: CachedBinding,
    pub expires_at: u64,
    /// The session data and server pins; `None` when both are empty, which
    /// is most sessions: boxed, they cost a cached session nothing then.
    extra: Option<Box<Extra>>,
    /// When this entry was built (Unix seconds): [`CACHE_TTL`] counts from it.
    cached_at: u32,
}

/// What few sessions have, kept out of line (see [`CachedRecord::extra`]).
#[derive(Clone)]
struct Extra {
    /// The session data (UTF-8), shared with the header values made from it.
    data: Bytes,
    /// The servers the session is pinned to (`SessionRecord::servers`).
    servers: smallvec::SmallVec<[ServerKey; 2]>,
}

impl Extra {
    fn boxed(data: Bytes, servers: &[ServerKey]) -> Option<Box<Extra>> {
        (!data.is_empty() || !servers.is_empty()).then(|| {
            Box::new(Extra {
                data,
                servers: servers.iter().copied().collect(),
            })
        })
    }
}

fn unix_secs(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

impl Live {
    /// The cache's form of `record`; its identity is interned in `identities`.
    ///
    /// `absolute_ms` is the absolute lifetime in force: a session begun
    /// under a longer one ends by this one. That also keeps
    /// `expires_at - absolute_ms` at or before the last sign-in, which is
    /// how a step-up route reads the sign-in's age without a field of its
    /// own (a `Live` fills its 120 bytes; see the allocator test).
    pub fn new(hash: TokenHash, record: &SessionRecord, identities: &Identities, now: u64, absolute_ms: u64) -> Live {
        let extra = Extra::boxed(Bytes::copy_from_slice(record.data.as_bytes()), &record.servers);
        Live {
            hash,
            record: CachedRecord {
                id: record.id,
                identity: record.identity.as_ref().map(|i| identities.intern(i)),
                binding: CachedBinding::new(&record.binding),
                expires_at: record
                    .expires_at
                    .min(record.authenticated_at.saturating_add(absolute_ms)),
                extra,
                cached_at: unix_secs(now),
            },
            last_seen: AtomicU64::new(record.last_seen),
        }
    }

    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// This session pinned to `servers` instead: the cache's copy after
    /// the store took the new pins (`Sessions::pin`).
    pub fn with_servers(&self, servers: &[ServerKey]) -> Live {
        let data = self.record.extra.as_deref().map(|e| e.data.clone()).unwrap_or_default();
        Live {
            hash: self.hash,
            record: CachedRecord {
                id: self.record.id,
                identity: self.record.identity.clone(),
                binding: self.record.binding.clone(),
                expires_at: self.record.expires_at,
                extra: Extra::boxed(data, servers),
                cached_at: self.record.cached_at,
            },
            last_seen: AtomicU64::new(self.last_seen()),
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.record.identity.is_some()
    }

    /// Whether the entry has been cached longer than [`CACHE_TTL`] and must
    /// be re-read from the store.
    pub fn is_stale(&self, now: u64) -> bool {
        u64::from(unix_secs(now).saturating_sub(self.record.cached_at)) >= CACHE_TTL.as_secs()
    }

    /// The session-id header value, made per request (a 32-byte copy): a
    /// precomputed one cost 88 bytes per cached session.
    pub fn id_header(&self) -> HeaderValue {
        let mut buf = [0u8; 32];
        token::hex_into(&self.record.id.0, &mut buf);
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The session-data header value (no copy: it shares the data's bytes),
    /// if there is data and it is a valid header value.
    pub fn data_header(&self) -> Option<HeaderValue> {
        let data = &self.record.extra.as_deref()?.data;
        if data.is_empty() {
            return None;
        }
        HeaderValue::from_maybe_shared(data.clone())
            .ok()
            .filter(|v| v.to_str().is_ok())
    }
}

impl CachedRecord {
    /// Whether the last sign-in (or the session's start) is more than
    /// `max_ms` before `now`, under the absolute lifetime `absolute_ms` the
    /// entry was made with (see [`Live::new`]: never later than the real
    /// sign-in, so never more lenient): a step-up route's test.
    pub fn signed_in_before(&self, now: u64, max_ms: u64, absolute_ms: u64) -> bool {
        now.saturating_sub(self.expires_at.saturating_sub(absolute_ms)) > max_ms
    }

    /// Checks the record's own timestamps; `last_seen` is the cache's.
    pub fn expiry(&self, now: u64, last_seen: u64, idle_ms: u64) -> Option<Expiry> {
        super::record::expiry(self.expires_at, now, last_seen, idle_ms)
    }

    /// The session data ("" when none).
    pub fn data(&self) -> &str {
        self.extra
            .as_deref()
            .and_then(|e| std::str::from_utf8(&e.data).ok())
            .unwrap_or("")
    }

    /// The servers the session is pinned to, the newest last.
    pub fn servers(&self) -> &[ServerKey] {
        self.extra.as_deref().map_or(&[], |e| &e.servers)
    }
}

/// The client binding as the cache checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBinding {
    /// The client's address or prefix; `None` when IP binding is off.
    pub ip: Option<IpNet>,
    /// The first 16 bytes of the fingerprint's SHA-256.
    fingerprint: [u8; 16],
}

impl CachedBinding {
    fn new(binding: &ClientBinding) -> CachedBinding {
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&binding.fingerprint.0[..16]);
        CachedBinding {
            ip: binding.ip,
            fingerprint,
        }
    }

    /// Checks a request against the binding; IP first.
    pub fn check(&self, config: &BindingConfig, ip: IpAddr, headers: &HeaderMap) -> Result<(), Mismatch> {
        check_binding(self.ip.as_ref(), &self.fingerprint, config, ip, headers)
    }

    /// [`CachedBinding::check`] with the fingerprint input already gathered
    /// (`record::fingerprint_input`).
    pub fn check_input(&self, ip: IpAddr, input: &[u8]) -> Result<(), Mismatch> {
        super::record::check_binding_input(self.ip.as_ref(), &self.fingerprint, ip, input)
    }
}

/// An identity shared by all cached sessions of it, with the header values
/// forwarded for it built once.
#[derive(Debug)]
pub struct SharedIdentity {
    identity: Identity,
    pub user_header: Option<HeaderValue>,
    pub email_header: Option<HeaderValue>,
    pub groups_header: Option<HeaderValue>,
}

impl SharedIdentity {
    fn new(identity: Identity) -> SharedIdentity {
        let hv = |s: &str| HeaderValue::from_str(s).ok();
        SharedIdentity {
            user_header: hv(&identity.user),
            email_header: identity.email.as_deref().and_then(hv),
            groups_header: Some(&identity.groups)
                .filter(|g| !g.is_empty())
                .and_then(|g| hv(&g.join(","))),
            identity,
        }
    }
}

impl std::ops::Deref for SharedIdentity {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.identity
    }
}

/// Interns identities: one [`SharedIdentity`] per distinct identity among
/// the cached sessions. Entries are weak, so an identity whose sessions have
/// all left the cache is freed; dead entries are pruned whenever the map has
/// doubled since the last prune. Touched only when a [`Live`] is built.
#[derive(Default)]
pub struct Identities {
    inner: Mutex<Interned>,
}

#[derive(Default)]
struct Interned {
    map: HashMap<Identity, Weak<SharedIdentity>>,
    prune_at: usize,
}

impl Identities {
    pub fn intern(&self, identity: &Identity) -> Arc<SharedIdentity> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = inner.map.get(identity).and_then(Weak::upgrade) {
            return shared;
        }
        let shared = Arc::new(SharedIdentity::new(identity.clone()));
        inner.map.insert(identity.clone(), Arc::downgrade(&shared));
        if inner.map.len() >= inner.prune_at {
            inner.map.retain(|_, w| w.strong_count() > 0);
            inner.prune_at = (inner.map.len() * 2).max(64);
        }
        shared
    }

    /// Distinct identities currently held (live or not yet pruned).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::record::Fingerprint;

    fn record(user: Option<&str>, data: &str) -> SessionRecord {
        SessionRecord {
            id: SessionId([7; 16]),
            identity: user.map(|u| Identity {
                user: u.into(),
                email: Some(format!("{u}@example.com")),
                groups: vec!["a".into(), "b".into()],
            }),
            binding: ClientBinding {
                ip: "10.0.0.0/8".parse().ok(),
                fingerprint: Fingerprint([3; 32]),
            },
            created_at: 1,
            authenticated_at: 2,
            last_seen: 3,
            expires_at: 4,
            data: data.into(),
            csrf: token::random_string::<24>().unwrap_or_default(),
            login_entry: None,
            provider_login: false,
            servers: Vec::new(),
        }
    }

    #[test]
    fn a_shorter_absolute_lifetime_ends_older_sessions_and_never_flatters_a_sign_in() {
        let ids = Identities::default();
        // Signed in at 2 under a lifetime of 100 (expires 102); now the lifetime is 50.
        let mut r = record(Some("ann"), "");
        r.authenticated_at = 2;
        r.expires_at = 102;
        let live = Live::new(TokenHash([1; 32]), &r, &ids, 0, 50);
        assert_eq!(live.record.expires_at, 52);
        // The sign-in's age reads true: 60 at 62.
        assert!(!live.record.signed_in_before(62, 60, 50));
        assert!(live.record.signed_in_before(63, 60, 50));
        // Under a longer lifetime (200) the session keeps its end, and its
        // sign-in reads older than it is, never younger.
        let longer = Live::new(TokenHash([1; 32]), &r, &ids, 0, 200);
        assert_eq!(longer.record.expires_at, 102);
        assert!(longer.record.signed_in_before(2, 0, 200));
    }

    #[test]
    fn a_live_session_stays_within_its_allocator_chunk() {
        // glibc hands out 16-byte steps with 8 bytes of overhead: an `Arc`
        // (16 bytes of counts) of up to 120 bytes fits a 144-byte chunk.
        assert!(std::mem::size_of::<Live>() <= 120, "{}", std::mem::size_of::<Live>());
    }

    #[test]
    fn the_cache_keeps_what_requests_read() {
        let ids = Identities::default();
        let r = record(Some("ann"), "k=v");
        let live = Live::new(TokenHash([1; 32]), &r, &ids, 5_000, u64::MAX);
        assert_eq!(live.record.id, r.id);
        assert_eq!(live.record.binding.ip, r.binding.ip);
        assert_eq!(live.record.expires_at, r.expires_at);
        assert_eq!(live.last_seen(), r.last_seen);
        assert_eq!(live.record.data(), "k=v");
        assert_eq!(live.record.identity.as_deref().map(|i| &**i), r.identity.as_ref());
        assert!(live.is_authenticated());
    }

    #[test]
    fn the_cached_binding_checks_like_the_record() {
        let config = BindingConfig {
            ip: crate::config::IpBinding::Exact,
            fingerprint_headers: vec![http::header::USER_AGENT],
            on_mismatch: crate::config::OnMismatch::Reject,
        };
        let ip = IpAddr::from([192, 0, 2, 7]);
        let mut ua = HeaderMap::new();
        ua.insert(http::header::USER_AGENT, HeaderValue::from_static("a"));
        let binding = ClientBinding::new(&config, ip, &ua);
        let cached = CachedBinding::new(&binding);
        let mut other_ua = HeaderMap::new();
        other_ua.insert(http::header::USER_AGENT, HeaderValue::from_static("b"));
        let other_ip = IpAddr::from([192, 0, 2, 8]);
        for (ip, headers) in [(ip, &ua), (ip, &other_ua), (other_ip, &ua), (ip, &HeaderMap::new())] {
            assert_eq!(cached.check(&config, ip, headers), binding.check(&config, ip, headers));
        }
        assert_eq!(cached.check(&config, ip, &ua), Ok(()));
    }

    #[test]
    fn headers_are_made_from_the_cached_fields() {
        let ids = Identities::default();
        let live = Live::new(TokenHash([1; 32]), &record(Some("ann"), "k=v"), &ids, 0, u64::MAX);
        assert_eq!(live.id_header(), "07".repeat(16).as_str());
        assert_eq!(live.data_header(), Some(HeaderValue::from_static("k=v")));
        let identity = live.record.identity.as_ref().map(|i| i.groups_header.clone());
        assert_eq!(identity, Some(Some(HeaderValue::from_static("a,b"))));
        let none = Live::new(TokenHash([1; 32]), &record(None, ""), &ids, 0, u64::MAX);
        assert_eq!(none.data_header(), None);
        // Not a header value: kept in the record, not forwarded (as before).
        let odd = Live::new(TokenHash([1; 32]), &record(None, "é\n"), &ids, 0, u64::MAX);
        assert_eq!(odd.data_header(), None);
        assert_eq!(odd.record.data(), "é\n");
    }

    #[test]
    fn identities_are_shared_and_freed_with_their_sessions() {
        let ids = Identities::default();
        let a = Live::new(TokenHash([1; 32]), &record(Some("ann"), ""), &ids, 0, u64::MAX);
        let b = Live::new(TokenHash([2; 32]), &record(Some("ann"), ""), &ids, 0, u64::MAX);
        let c = Live::new(TokenHash([3; 32]), &record(Some("bob"), ""), &ids, 0, u64::MAX);
        let (Some(ia), Some(ib), Some(ic)) = (&a.record.identity, &b.record.identity, &c.record.identity) else {
            unreachable!("all three are logged in")
        };
        assert!(Arc::ptr_eq(ia, ib));
        assert!(!Arc::ptr_eq(ia, ic));
        drop((a, b, c));
        for i in 0..100 {
            drop(Live::new(
                TokenHash([4; 32]),
                &record(Some(&format!("u{i}")), ""),
                &ids,
                0,
                u64::MAX,
            ));
        }
        assert!(ids.len() < 64, "dead identities are pruned: {}", ids.len());
    }

    #[test]
    fn pins_are_cached_and_replaced_without_touching_the_rest() {
        let ids = Identities::default();
        let mut r = record(Some("ann"), "");
        let plain = Live::new(TokenHash([1; 32]), &r, &ids, 0, u64::MAX);
        assert!(plain.record.extra.is_none(), "no data, no pins: nothing boxed");
        assert_eq!(plain.record.servers(), []);
        r.servers = vec![ServerKey(1), ServerKey(2)];
        r.data = "k=v".into();
        let pinned = Live::new(TokenHash([1; 32]), &r, &ids, 0, u64::MAX);
        assert_eq!(pinned.record.servers(), [ServerKey(1), ServerKey(2)]);
        let moved = pinned.with_servers(&[ServerKey(3)]);
        assert_eq!(moved.record.servers(), [ServerKey(3)]);
        assert_eq!(moved.record.data(), "k=v");
        assert_eq!(moved.data_header(), Some(HeaderValue::from_static("k=v")));
        assert_eq!(moved.record.id, pinned.record.id);
        assert_eq!(moved.last_seen(), pinned.last_seen());
        assert!(moved.record.identity.is_some());
        assert!(plain.with_servers(&[]).record.extra.is_none());
    }

    #[test]
    fn entries_go_stale_after_the_cache_ttl() {
        let live = Live::new(
            TokenHash([1; 32]),
            &record(None, ""),
            &Identities::default(),
            1_000_000,
            u64::MAX,
        );
        let ttl = u64::try_from(CACHE_TTL.as_millis()).unwrap_or(u64::MAX);
        assert!(!live.is_stale(1_000_000 + ttl - 1000));
        assert!(live.is_stale(1_000_000 + ttl));
    }
}
