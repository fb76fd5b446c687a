//! Sessions: issue, verify, bind, rotate, expire and end them.
//!
//! [`Sessions`] owns a moka cache of live sessions ([`Live`], compact: see
//! `live.rs`) in front of the store of record. A verified request on a cache
//! hit does no I/O: it checks the record's own timestamps, the binding, and
//! bumps an atomic `last_seen`; every `touch_interval` at most one
//! write-behind touch per session is queued. Concurrent misses for one token
//! make one store read. Rotation and deletion go to the store first
//! (durably), then invalidate the cache.
//!
//! Lifecycle: created → verified → touched → rotated → revoked | expired.

pub mod cookies;
pub mod live;
pub mod new_limit;
pub mod recent;
pub mod record;
pub mod store;
pub mod token;

use crate::config::{Config, OnMismatch, OnUserLimit, SameSite, StoreKind};
use crate::metrics::Metrics;
use crate::proxy::balance::{PinRequest, Pins};
use http::{HeaderMap, HeaderValue};
pub use live::Live;
use live::{Identities, CACHE_TTL};
use record::ServerKey;
use record::{now_ms, ClientBinding, Identity, SessionRecord};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{SessionStore, StoreError};
use token::{BuildTokenHasher, SessionId, SessionToken, TokenHash};

/// A request [`Sessions::recall`] could not answer, for
/// [`Sessions::lookup_recent`].
pub struct Missed<'h> {
    /// The request's one `Cookie` header, when the connection may remember
    /// what the lookup finds (`None`: several or none, or
    /// `recheck_each_request`).
    cookie: Option<&'h HeaderValue>,
}

/// The result of looking at a request's cookie.
pub enum Lookup {
    /// A live, bound, unexpired session.
    Valid(Arc<Live>),
    /// No usable session; `presented` says whether the request carried our
    /// cookie at all (a stale or forged one is replaced).
    None { presented: bool },
}

/// Failure of a session operation that must fail closed (503).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] token::RandomError),
    #[error(transparent)]
    UserLimit(#[from] UserLimitReached),
    /// The client address used up `[session] new_per_ip_per_minute`.
    #[error("client address passed [session] new_per_ip_per_minute")]
    NewSessionLimit { retry_after: Duration },
}

/// A new logged-in session that `[session] max_per_user` does not allow:
/// with `on_user_limit = "refuse"` once the user holds that many, and in
/// every mode for a batch larger than the limit.
#[derive(Debug, thiserror::Error)]
#[error("user `{user}` has {active} sessions and {adding} more would pass [session] max_per_user = {max}")]
pub struct UserLimitReached {
    pub user: String,
    pub active: usize,
    pub adding: usize,
    pub max: usize,
}

#[derive(Debug)]
enum MissError {
    NotFound,
    Store(StoreError),
    /// Made by a login against a `[[users]]` entry that is gone (`true`)
    /// or changed (`false`).
    UserEntry(bool),
}

fn entries(users: &[crate::config::UserConfig]) -> HashMap<String, record::EntryDigest> {
    users
        .iter()
        .map(|u| (u.name.clone(), record::EntryDigest::of(u)))
        .collect()
}

/// For a session made by a login: `Some(true)` if its user is no longer
/// configured, `Some(false)` if the entry changed, `None` if it still holds
/// (or the session was not made by a login).
fn entry_gone(entries: &HashMap<String, record::EntryDigest>, rec: &SessionRecord) -> Option<bool> {
    let made = rec.login_entry?;
    let user = &rec.identity.as_ref()?.user;
    match entries.get(user) {
        None => Some(true),
        Some(now) if *now != made => Some(false),
        Some(_) => None,
    }
}

/// Revocations of one user's sessions in flight at once
/// ([`Sessions::revoke_user_because`]).
const REVOKE_CONCURRENCY: usize = 64;

/// What the admin's listing answers: the newest sessions asked for, and how
/// many matched.
pub struct Listing {
    pub matched: usize,
    pub sessions: Vec<SessionRecord>,
}

/// The session manager shared by the pipeline, the login endpoints and the
/// admin API.
pub struct Sessions {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    store: Arc<dyn SessionStore>,
    /// Keyed by the token hash's first 8 bytes ([`TokenHash::prefix`]; in
    /// moka an `Arc<u64>` key takes a 32-byte chunk, an `Arc<TokenHash>` 64),
    /// which also serve as the key's hash. An entry answers only a lookup
    /// whose full 32-byte hash equals the one it holds ([`Sessions::get`]).
    cache: moka::future::Cache<u64, Arc<Live>, BuildTokenHasher>,
    /// One shared copy of each identity among the cached sessions.
    identities: Arc<Identities>,
    /// Hashes deleted recently: a store read that raced the delete must not
    /// put the session back into the cache.
    revoked: moka::sync::Cache<TokenHash, (), BuildTokenHasher>,
    /// Write-behind `last_seen` updates, coalesced per session.
    pending_touches: Mutex<HashMap<TokenHash, u64, BuildTokenHasher>>,
    /// False while a shared store's invalidation feed is down: then every
    /// lookup reads through to the store, so a session revoked elsewhere is
    /// never served from a stale cache.
    cache_trusted: Arc<std::sync::atomic::AtomicBool>,
    /// What connections remember ([`recent`]) is valid only while these
    /// have not moved: see [`recent::Generations`].
    generations: recent::Generations,
    /// The `[[users]]` entries in force, by name (see [`record::EntryDigest`]);
    /// replaced by a config reload.
    user_entries: Arc<arc_swap::ArcSwap<HashMap<String, record::EntryDigest>>>,
    events: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<store::CacheEvent>>>,
    idle_ms: u64,
    absolute_ms: u64,
    touch_ms: u64,
    set_cookie_suffix: String,
    clear_cookie: HeaderValue,
    new_limit: new_limit::NewSessionLimit,
    /// Sessions whose pins are being written ([`Sessions::pin`]), with the
    /// latest request that came meanwhile, written next: a burst of a
    /// session's requests writes once or twice, and the last word wins.
    pinning: Mutex<HashMap<TokenHash, Option<PinRequest>, BuildTokenHasher>>,
    /// Told when the last pin in flight is written ([`Sessions::settle`]).
    pins_done: tokio::sync::Notify,
    /// The runtime of the background tasks, which outlives the workers':
    /// pins are written there, so that a worker that stops (shutdown)
    /// does not cancel them.
    background: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Held while a session's record is read, changed and written back
    /// (data, pins), by the token hash's last byte: two such updates of one
    /// session in this process never undo each other.
    updating: Box<[tokio::sync::Mutex<()>]>,
}

/// How many locks [`Sessions::updating`] spreads sessions over.
const UPDATE_LOCKS: usize = 64;

/// A session's pins being written. Its task takes the requests queued
/// for the session ([`Sessions::pin`]) until none is left, and then, under
/// the same lock, lets the session be pinned again; a task that is
/// cancelled does so when it is dropped. [`Sessions::settle`] is told
/// when none is left.
struct Pinning {
    sessions: Arc<Sessions>,
    live: Arc<Live>,
    /// The session's entry is gone: a later one is another task's.
    ended: bool,
}

impl Pinning {
    /// The request queued while the last one was written, if any; when
    /// there is none, the session's entry goes in the same step, so a
    /// request that comes after is not queued for a task that has ended.
    fn next(&mut self) -> Option<PinRequest> {
        let mut pinning = self.sessions.pinning.lock().unwrap_or_else(|p| p.into_inner());
        let next = pinning.get_mut(&self.live.hash).and_then(Option::take);
        if next.is_none() {
            pinning.remove(&self.live.hash);
            self.ended = true;
            if pinning.is_empty() {
                self.sessions.pins_done.notify_waiters();
            }
        }
        next
    }
}

impl Drop for Pinning {
    fn drop(&mut self) {
        // Cancelled (its runtime stopped): what was queued is lost with it.
        while !self.ended && self.next().is_some() {}
    }
}

impl Sessions {
    /// Opens the configured store and starts the background tasks.
    pub async fn open(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<Sessions, StoreError> {
        let store: Arc<dyn SessionStore> = match &config.store.kind {
            StoreKind::Memory => Arc::new(store::memory::MemoryStore::default()),
            StoreKind::Redis(redis) => Arc::new(store::redis::RedisStore::open(redis).await?),
            StoreKind::Embedded { path, page_cache_bytes } => {
                let path = path.clone();
                let cache = *page_cache_bytes;
                let cpus = config.server.background_cpus.clone();
                let s = tokio::task::spawn_blocking(move || store::embedded::EmbeddedStore::open(&path, cache, &cpus))
                    .await
                    .map_err(|e| StoreError::Join(e.to_string()))??;
                Arc::new(s)
            }
        };
        Ok(Sessions::with_store(config, metrics, store))
    }

    pub fn with_store(config: Arc<Config>, metrics: Arc<Metrics>, store: Arc<dyn SessionStore>) -> Sessions {
        let s = &config.session;
        let same_site = match s.same_site {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        };
        let mut suffix = format!("; Path=/; Secure; HttpOnly; SameSite={same_site}");
        if s.persistent {
            suffix.push_str(&format!("; Max-Age={}", s.absolute_timeout.as_secs()));
        }
        let clear = format!(
            "{}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite={same_site}",
            s.cookie_name
        );
        // No `time_to_live`: it costs a write-order queue node per entry (32
        // bytes with glibc); `Live::is_stale` bounds an entry's age instead.
        // `time_to_idle` reuses the access-order queue the size bound needs.
        // Least recently used goes first, not TinyLFU's least frequent: a
        // session just made is the one most likely used next (TinyLFU can
        // refuse it a place while older sessions fill the cache, and then
        // each of its requests reads the store), and LRU keeps no frequency
        // sketch, whose 8 bytes per unit of capacity (16 MiB at a million)
        // take four random memory writes per request once the cache is half
        // full.
        let cache = moka::future::Cache::builder()
            .max_capacity(config.store.cache_capacity)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .time_to_idle(s.idle_timeout.min(CACHE_TTL))
            .build_with_hasher(BuildTokenHasher::default());
        let events = store.events();
        Sessions {
            // A shared store starts untrusted until its feed is confirmed.
            cache_trusted: Arc::new(std::sync::atomic::AtomicBool::new(events.is_none())),
            events: Mutex::new(events),
            generations: recent::Generations::default(),
            user_entries: Arc::new(arc_swap::ArcSwap::from_pointee(entries(&config.users))),
            store,
            cache,
            identities: Arc::default(),
            revoked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL * 2)
                .build_with_hasher(BuildTokenHasher::default()),
            pending_touches: Mutex::new(HashMap::default()),
            idle_ms: millis(s.idle_timeout),
            absolute_ms: millis(s.absolute_timeout),
            touch_ms: millis(config.store.touch_interval),
            set_cookie_suffix: suffix,
            new_limit: new_limit::NewSessionLimit::new(s.new_per_ip_per_minute),
            pinning: Mutex::default(),
            pins_done: tokio::sync::Notify::new(),
            background: std::sync::OnceLock::new(),
            updating: (0..UPDATE_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            clear_cookie: HeaderValue::from_str(&clear).unwrap_or_else(|_| HeaderValue::from_static("")),
            metrics,
            config,
        }
    }

    /// Starts the write-behind and sweeper tasks. They hold a weak reference
    /// and end with the manager.
    pub fn start_background(self: &Arc<Self>) {
        let _ = self.background.set(tokio::runtime::Handle::current());
        let events = self.events.lock().ok().and_then(|mut e| e.take());
        if let Some(mut events) = events {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    let Some(s) = weak.upgrade() else { return };
                    s.apply(ev).await;
                }
            });
        }
        let weak = Arc::downgrade(self);
        let touch_every = self
            .config
            .store
            .touch_interval
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(touch_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                s.flush().await;
            }
        });
        let weak = Arc::downgrade(self);
        let sweep_every = self.config.store.sweep_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sweep_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                s.sweep().await;
            }
        });
    }

    fn store_failed(&self) {
        self.metrics.store_errors.inc();
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn cookie_name(&self) -> &str {
        &self.config.session.cookie_name
    }

    /// At shutdown: waits (a few seconds at most) for the pins being
    /// written, then writes the queued `last_seen` updates.
    pub async fn settle(&self) {
        let written = async {
            loop {
                let done = self.pins_done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if self.pinning.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                    return;
                }
                done.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), written).await.is_err() {
            tracing::warn!("stopping with session pins not yet written");
        }
        self.flush().await;
    }

    /// Writes queued `last_seen` updates to the store.
    pub async fn flush(&self) {
        let batch: Vec<(TokenHash, u64)> = {
            let mut pending = self.pending_touches.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.touch(batch).await {
            self.metrics.store_errors.inc();
            tracing::warn!(error = %e, "write-behind of last_seen failed");
        }
    }

    async fn apply(&self, event: store::CacheEvent) {
        match event {
            store::CacheEvent::Invalidate(hash) => self.uncache(&hash).await,
            store::CacheEvent::Gone(hash) => {
                // Also stops a store read that raced the delete from putting
                // the session back into the cache.
                self.revoked.insert(hash, ());
                self.uncache(&hash).await;
            }
            store::CacheEvent::Lost => {
                self.cache_trusted.store(false, Ordering::SeqCst);
                self.generations.advance_all();
            }
            store::CacheEvent::Restored => {
                // Whatever was cached may have missed invalidations.
                self.cache.invalidate_all();
                self.generations.advance_all();
                self.cache_trusted.store(true, Ordering::SeqCst);
            }
        }
    }

    async fn sweep(&self) {
        match self.store.sweep(now_ms(), self.idle_ms).await {
            Ok(dead) => {
                for h in &dead {
                    self.uncache(h).await;
                }
                if !dead.is_empty() {
                    tracing::info!(count = dead.len(), "swept expired sessions");
                }
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::warn!(error = %e, "session sweep failed");
            }
        }
    }

    /// The session this connection verified last ([`recent`]), when the
    /// request presents exactly what found it; only expiry is checked again.
    ///
    /// Not async, on purpose: a kept-alive connection's repeated request is
    /// answered here without building the lookup's future, whose state
    /// (sized for a store read) would be copied into the request's own.
    pub fn recall<'h>(
        &self,
        recent: &recent::Recent,
        headers: &'h HeaderMap,
        client_ip: IpAddr,
    ) -> Result<Arc<Live>, Missed<'h>> {
        if self.config.session.recheck_each_request {
            return Err(Missed { cookie: None });
        }
        let Some(cookie) = recent::one_cookie(headers) else {
            recent.forget();
            return Err(Missed { cookie: None });
        };
        if self.cache_trusted.load(Ordering::SeqCst) {
            let binding = &self.config.session.binding;
            let fingerprint_is = |input: &[u8]| record::fingerprint_input_is(binding, headers, input);
            if let Some(live) = recent.recall(cookie, client_ip, fingerprint_is, &self.generations) {
                let now = now_ms();
                if !live.is_stale(now) && live.record.expiry(now, live.last_seen(), self.idle_ms).is_none() {
                    self.metrics.cache_hits.inc();
                    self.metrics.recalls.inc();
                    self.touch(live.hash, &live, now);
                    return Ok(live);
                }
            }
        }
        Err(Missed { cookie: Some(cookie) })
    }

    /// [`Sessions::lookup`] after [`Sessions::recall`] missed; remembers what
    /// it finds for the connection's next request.
    pub async fn lookup_recent(
        &self,
        recent: &recent::Recent,
        headers: &HeaderMap,
        client_ip: IpAddr,
        missed: Missed<'_>,
    ) -> Result<Lookup, SessionError> {
        let Some(cookie) = missed.cookie else {
            return self.lookup(headers, client_ip).await;
        };
        let input = record::fingerprint_input(&self.config.session.binding, headers);
        // The generation was read before the cache was: an ending that took
        // the entry out after that advances it afterwards, so what is
        // remembered is never valid for a session ended meanwhile. An entry
        // read around the cache (`read_through`) is born stale: not remembered.
        let (found, generation) = self.lookup_generation(headers, client_ip, Some(&input)).await?;
        match (&found, generation) {
            (Lookup::Valid(live), Some(generation)) if !live.is_stale(now_ms()) => {
                let presented = recent::Presented {
                    cookie,
                    client_ip,
                    fingerprint: &input,
                };
                recent.remember(&presented, live, generation);
            }
            _ => recent.forget(),
        }
        Ok(found)
    }

    /// Finds and verifies the session named by the request's cookie.
    pub async fn lookup(&self, headers: &HeaderMap, client_ip: IpAddr) -> Result<Lookup, SessionError> {
        Ok(self.lookup_generation(headers, client_ip, None).await?.0)
    }

    /// [`Sessions::lookup`], and for a valid session, its generation as read
    /// before the cache was consulted (see [`recent::Generations`]).
    /// `input`: the request's fingerprint input, when the caller has it.
    async fn lookup_generation(
        &self,
        headers: &HeaderMap,
        client_ip: IpAddr,
        input: Option<&[u8]>,
    ) -> Result<(Lookup, Option<recent::Generation>), SessionError> {
        let none = |presented| Ok((Lookup::None { presented }, None));
        let token = match cookies::find(headers, self.cookie_name()) {
            cookies::Presented::Absent => return none(false),
            cookies::Presented::Conflict => return none(true),
            cookies::Presented::One(v) => match SessionToken::parse(v) {
                Some(t) => t,
                None => return none(true),
            },
        };
        let hash = token.hash();
        let generation = self.generations.of(&hash);
        let now = now_ms();
        let Some(live) = self.get(hash, now).await? else {
            return none(true);
        };
        if let Some(why) = live.record.expiry(now, live.last_seen(), self.idle_ms) {
            self.metrics.session_expired(why.as_str());
            tracing::info!(event = "session_expired", session_id = %live.record.id, reason = why.as_str());
            Box::pin(self.remove(hash)).await?;
            return none(true);
        }
        let binding = &self.config.session.binding;
        let checked = match input {
            Some(input) => live.record.binding.check_input(client_ip, input),
            None => live.record.binding.check(binding, client_ip, headers),
        };
        if let Err(kind) = checked {
            self.metrics.binding_mismatch(kind.as_str());
            tracing::warn!(
                event = "binding_mismatch",
                session_id = %live.record.id,
                kind = kind.as_str(),
                bound_prefix = ?live.record.binding.ip,
                client_prefix = ?record::ip_prefix(binding.ip, client_ip),
                action = ?binding.on_mismatch,
                "session presented by a different client"
            );
            if binding.on_mismatch == OnMismatch::Revoke {
                self.metrics.session_revoked("binding_mismatch");
                Box::pin(self.remove(hash)).await?;
            }
            return none(true);
        }
        self.touch(hash, &live, now);
        Ok((Lookup::Valid(live), Some(generation)))
    }

    /// The cache's form of a record (identity interned).
    fn live(&self, hash: TokenHash, record: &SessionRecord) -> Arc<Live> {
        Arc::new(Live::new(hash, record, &self.identities, now_ms(), self.absolute_ms))
    }

    /// Cache first; one store read for concurrent misses of one key. An
    /// entry older than [`CACHE_TTL`] is read again. The cache is keyed by 8
    /// bytes of the hash: an entry whose full hash differs (another session
    /// sharing those 64 bits, about one chance in 2^64 / sessions) is never
    /// used for this one, which is then read from the store uncached.
    async fn get(&self, hash: TokenHash, now: u64) -> Result<Option<Arc<Live>>, StoreError> {
        if !self.cache_trusted.load(Ordering::SeqCst) {
            return self.read_through(hash).await;
        }
        let key = hash.prefix();
        if let Some(live) = self.cache.get(&key).await {
            if live.hash != hash {
                return self.read_through(hash).await;
            }
            if !live.is_stale(now) {
                self.metrics.cache_hits.inc();
                return Ok(Some(live));
            }
            Box::pin(self.cache.invalidate(&key)).await;
        }
        // Boxed: the miss path's state (moka's loader, the store read) is
        // large, and inline it would be copied with every request's future.
        Box::pin(self.load(hash)).await
    }

    /// A cache miss: one store read for concurrent misses of one key.
    async fn load(&self, hash: TokenHash) -> Result<Option<Arc<Live>>, StoreError> {
        let key = hash.prefix();
        self.metrics.cache_misses.inc();
        // A pin written while this reads the store moves it (`store_pin`).
        let before = self.generations.of(&hash);
        let store = self.store.clone();
        let revoked = self.revoked.clone();
        let identities = self.identities.clone();
        let user_entries = self.user_entries.clone();
        let absolute_ms = self.absolute_ms;
        let res = self
            .cache
            .try_get_with(key, async move {
                match store.get(hash).await {
                    Ok(Some(rec)) if !revoked.contains_key(&hash) => match entry_gone(&user_entries.load(), &rec) {
                        Some(gone) => Err(MissError::UserEntry(gone)),
                        None => Ok(Arc::new(Live::new(hash, &rec, &identities, now_ms(), absolute_ms))),
                    },
                    Ok(_) => Err(MissError::NotFound),
                    Err(e) => Err(MissError::Store(e)),
                }
            })
            .await;
        match res {
            // The entry may predate an update that finished meanwhile: out
            // again, and this request reads the store itself.
            Ok(live) if live.hash == hash && self.generations.of(&hash) != before => {
                self.cache.invalidate(&key).await;
                self.read_through(hash).await
            }
            Ok(live) if live.hash == hash => Ok(Some(live)),
            Ok(_) => self.read_through(hash).await,
            Err(e) => match &*e {
                MissError::NotFound => Ok(None),
                MissError::UserEntry(gone) => {
                    self.end_for_user_entry(hash, *gone).await?;
                    Ok(None)
                }
                MissError::Store(se) => {
                    self.metrics.store_errors.inc();
                    Err(StoreError::Backend(se.to_string()))
                }
            },
        }
    }

    /// A store read that bypasses the cache.
    async fn read_through(&self, hash: TokenHash) -> Result<Option<Arc<Live>>, StoreError> {
        self.metrics.cache_misses.inc();
        let rec = self.store.get(hash).await.inspect_err(|_| self.store_failed())?;
        if let Some(gone) = rec.as_ref().and_then(|r| entry_gone(&self.user_entries.load(), r)) {
            self.end_for_user_entry(hash, gone).await?;
            return Ok(None);
        }
        // Built as if cached at the epoch, so it counts as stale: never the
        // cache's entry, never to be remembered by a connection (`recent`).
        Ok(rec.map(|r| Arc::new(Live::new(hash, &r, &self.identities, 0, self.absolute_ms))))
    }

    /// Ends a session whose login's `[[users]]` entry is gone or changed.
    async fn end_for_user_entry(&self, hash: TokenHash, gone: bool) -> Result<(), StoreError> {
        let reason = if gone { "user_removed" } else { "user_changed" };
        if Box::pin(self.revoke(hash, reason)).await? {
            tracing::warn!(
                event = "session_ended",
                reason,
                "session of a user removed or changed in [[users]] ended"
            );
        }
        Ok(())
    }

    /// Puts reloaded `[[users]]` in force for the check above. Their
    /// sessions already cached are the reload's to end (`admin`).
    pub fn set_users(&self, users: &[crate::config::UserConfig]) {
        self.user_entries.store(Arc::new(entries(users)));
    }

    /// The session's full record from the store (the cache holds only what
    /// requests read: the CSRF secret and the other timestamps stay there),
    /// with the cache's fresher `last_seen`. `None` once it has ended.
    pub async fn stored(&self, live: &Live) -> Result<Option<SessionRecord>, SessionError> {
        let rec = self.store.get(live.hash).await.inspect_err(|_| self.store_failed())?;
        Ok(rec.map(|mut r| {
            r.last_seen = r.last_seen.max(live.last_seen());
            r
        }))
    }

    /// Bumps `last_seen`; the first request of each `touch_interval` window
    /// (of wall-clock time) queues a write-behind, so the store lags by less
    /// than one interval and sees at most one touch per session per window.
    fn touch(&self, hash: TokenHash, live: &Live, now: u64) {
        let before = live.last_seen.fetch_max(now, Ordering::Relaxed);
        let window = self.touch_ms.max(1);
        if now / window > before / window {
            let mut pending = self.pending_touches.lock().unwrap_or_else(|p| p.into_inner());
            pending.insert(hash, now);
        }
    }

    /// Takes a session that ended or changed out of the cache, then advances
    /// its generation, in that order (see [`recent::Generations`]).
    async fn uncache(&self, hash: &TokenHash) {
        self.cache.invalidate(&hash.prefix()).await;
        self.generations.advance(hash);
    }

    /// Deletes a session from the store (durably) and the cache.
    async fn remove(&self, hash: TokenHash) -> Result<bool, StoreError> {
        self.revoked.insert(hash, ());
        let existed = self.store.delete(hash).await.inspect_err(|_| self.store_failed())?;
        self.uncache(&hash).await;
        Ok(existed)
    }

    fn new_record(
        &self,
        client_ip: IpAddr,
        headers: &HeaderMap,
        identity: Option<Identity>,
    ) -> Result<SessionRecord, SessionError> {
        let binding = ClientBinding::new(&self.config.session.binding, client_ip, headers);
        self.record_with(binding, identity)
    }

    fn record_with(&self, binding: ClientBinding, identity: Option<Identity>) -> Result<SessionRecord, SessionError> {
        let now = now_ms();
        Ok(SessionRecord {
            id: SessionId::generate()?,
            identity,
            binding,
            created_at: now,
            authenticated_at: now,
            last_seen: now,
            expires_at: now.saturating_add(self.absolute_ms),
            data: String::new(),
            csrf: token::random_string::<24>()?,
            login_entry: None,
            provider_login: false,
            servers: Vec::new(),
        })
    }

    async fn insert(&self, record: SessionRecord) -> Result<(SessionToken, Arc<Live>), SessionError> {
        let token = SessionToken::generate()?;
        let hash = token.hash();
        let live = self.live(hash, &record);
        self.store
            .put(hash, record)
            .await
            .inspect_err(|_| self.store_failed())?;
        self.cache.insert(hash.prefix(), live.clone()).await;
        self.metrics.sessions_created.inc();
        Ok((token, live))
    }

    /// Issues a new anonymous session bound to this client.
    pub async fn issue(
        &self,
        client_ip: IpAddr,
        headers: &HeaderMap,
    ) -> Result<(SessionToken, Arc<Live>), SessionError> {
        self.issue_placed(client_ip, headers, |_| None).await
    }

    /// [`Sessions::issue`], pinned at once to the server `place` picks for
    /// the new session's id, if any (see `SessionRecord::servers`): a
    /// session made by a request to a route with several servers is
    /// written once, its pin included, rather than pinned by a second
    /// write after its first answer.
    pub async fn issue_placed(
        &self,
        client_ip: IpAddr,
        headers: &HeaderMap,
        place: impl FnOnce(&SessionId) -> Option<ServerKey>,
    ) -> Result<(SessionToken, Arc<Live>), SessionError> {
        let (token, live, _) = self.create(client_ip, headers, place).await?;
        Ok((token, live))
    }

    /// [`Sessions::issue`], with the new session's CSRF secret: a login form
    /// needs it, and the cache does not hold it, so without it the form
    /// would read back from the store the record it has just written.
    pub async fn issue_with_csrf(
        &self,
        client_ip: IpAddr,
        headers: &HeaderMap,
    ) -> Result<(SessionToken, Arc<Live>, String), SessionError> {
        self.create(client_ip, headers, |_| None).await
    }

    /// A new anonymous session, pinned to what `place` picks, and its CSRF
    /// secret.
    async fn create(
        &self,
        client_ip: IpAddr,
        headers: &HeaderMap,
        place: impl FnOnce(&SessionId) -> Option<ServerKey>,
    ) -> Result<(SessionToken, Arc<Live>, String), SessionError> {
        self.admit_new(client_ip)?;
        let mut record = self.new_record(client_ip, headers, None)?;
        record.servers.extend(place(&record.id));
        let pinned = !record.servers.is_empty();
        let csrf = record.csrf.clone();
        let (token, live) = self.insert(record).await?;
        if pinned {
            self.metrics.session_pinned(false);
        }
        tracing::debug!(event = "session_created", session_id = %live.record.id);
        Ok((token, live, csrf))
    }

    /// Takes one anonymous session from the client address's allowance
    /// (`[session] new_per_ip_per_minute`). An address past it is logged
    /// once per spell (a flood would otherwise write a line per request).
    fn admit_new(&self, client_ip: IpAddr) -> Result<(), SessionError> {
        match self.new_limit.check(client_ip) {
            new_limit::Verdict::Allowed => Ok(()),
            new_limit::Verdict::Refused { retry_after, first } => {
                self.metrics.sessions_not_issued.inc();
                if first {
                    tracing::warn!(
                        event = "new_session_limit",
                        client_ip = %client_ip,
                        max = self.config.session.new_per_ip_per_minute,
                        "client address passed [session] new_per_ip_per_minute: its requests go on without new sessions"
                    );
                }
                Err(SessionError::NewSessionLimit { retry_after })
            }
        }
    }

    /// Mints a logged-in session for automation (admin API).
    pub async fn mint(
        &self,
        client_ip: IpAddr,
        headers: &HeaderMap,
        identity: Identity,
    ) -> Result<(SessionToken, Arc<Live>), SessionError> {
        self.admit(&identity.user, 1, None, self.config.session.per_user.on_limit)
            .await?;
        let user = identity.user.clone();
        let record = self.new_record(client_ip, headers, Some(identity))?;
        let ending = self.to_end(&user, None, record.created_at).await;
        let out = self.insert(record).await?;
        tracing::info!(event = "session_minted", session_id = %out.1.record.id);
        self.end_now(&user, ending).await;
        Ok(out)
    }

    /// Mints `count` logged-in sessions sharing one identity and binding
    /// (admin batch mint, for load tests with many distinct sessions). The
    /// store writes them in one batch (one commit on the embedded store);
    /// only then are they cached and their tokens returned.
    pub async fn mint_many(
        &self,
        client_ip: IpAddr,
        headers: &HeaderMap,
        identity: Identity,
        count: usize,
    ) -> Result<Vec<(SessionToken, SessionId)>, SessionError> {
        // A batch never ends other sessions (a load test's earlier batches
        // among them): it fits beside them, or it is refused.
        self.admit(&identity.user, count, None, OnUserLimit::Refuse).await?;
        let binding = ClientBinding::new(&self.config.session.binding, client_ip, headers);
        let mut tokens = Vec::with_capacity(count);
        let mut batch = Vec::with_capacity(count);
        for _ in 0..count {
            let token = SessionToken::generate()?;
            let record = self.record_with(binding.clone(), Some(identity.clone()))?;
            batch.push((token.hash(), record));
            tokens.push(token);
        }
        // Built before the write so that the batch moves into the store
        // rather than being copied whole.
        let lives: Vec<Arc<Live>> = batch.iter().map(|(hash, record)| self.live(*hash, record)).collect();
        self.store.put_many(batch).await.inspect_err(|_| self.store_failed())?;
        let mut out = Vec::with_capacity(count);
        for (token, live) in tokens.into_iter().zip(lives) {
            out.push((token, live.record.id));
            self.cache.insert(live.hash.prefix(), live).await;
        }
        self.metrics
            .sessions_created
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
        tracing::info!(event = "sessions_minted", count, user = %identity.user);
        Ok(out)
    }

    /// Login: a new token for the same session (id and data kept), the
    /// identity set, the absolute lifetime restarted, a new CSRF secret.
    /// `record` is `old`'s, as [`Sessions::stored`] read it. The old token
    /// is refused from the moment this returns.
    pub async fn rotate_login(
        &self,
        old: &Live,
        mut record: SessionRecord,
        identity: Identity,
        source: record::LoginSource,
        client_ip: IpAddr,
        headers: &HeaderMap,
    ) -> Result<(SessionToken, Arc<Live>), SessionError> {
        self.admit(&identity.user, 1, Some(old.hash), self.config.session.per_user.on_limit)
            .await?;
        let user = identity.user.clone();
        let now = now_ms();
        record.identity = Some(identity);
        (record.login_entry, record.provider_login) = match source {
            record::LoginSource::Password(entry) => (Some(entry), false),
            record::LoginSource::Provider => (None, true),
        };
        record.binding = ClientBinding::new(&self.config.session.binding, client_ip, headers);
        record.authenticated_at = now;
        record.last_seen = now;
        record.expires_at = now.saturating_add(self.absolute_ms);
        record.csrf = token::random_string::<24>()?;
        let token = if self.store.rotation_keeps_tag() {
            SessionToken::generate_with_tag(old.hash.0[0])?
        } else {
            SessionToken::generate()?
        };
        let hash = token.hash();
        let live = self.live(hash, &record);
        let ending = self.to_end(&user, Some(old.hash), now).await;
        self.revoked.insert(old.hash, ());
        for (h, _) in &ending {
            self.revoked.insert(*h, ());
        }
        let ended = self
            .store
            .rotate_ending(old.hash, hash, record, ending.iter().map(|(h, _)| *h).collect())
            .await
            .inspect_err(|_| {
                self.store_failed();
                // Nothing was deleted: the sessions to end go on.
                for (h, _) in &ending {
                    self.revoked.invalidate(h);
                }
            })?;
        self.uncache(&old.hash).await;
        self.cache.insert(hash.prefix(), live.clone()).await;
        self.metrics.sessions_rotated.inc();
        tracing::info!(event = "session_rotated", session_id = %live.record.id, user = %user);
        self.record_ended(&user, ending, ended).await;
        Ok((token, live))
    }

    /// Whether `user` may gain `adding` logged-in sessions under
    /// `[session] max_per_user`, not counting `replacing` (the session a
    /// login rotates: it becomes the new one rather than adding to them).
    /// With `end_least_recent` only more than the limit at once is refused;
    /// the others make room ([`Sessions::to_end`]).
    /// Concurrent logins of one user are not serialised: with `refuse`, the
    /// user can pass the limit by as many logins as ran at the same moment.
    async fn admit(
        &self,
        user: &str,
        adding: usize,
        replacing: Option<TokenHash>,
        on_limit: OnUserLimit,
    ) -> Result<(), SessionError> {
        let limit = self.config.session.per_user;
        let refused = |active: usize| {
            self.metrics.user_limit("refused");
            tracing::warn!(
                event = "session_limit",
                user,
                active,
                adding,
                max = limit.max,
                action = "refused"
            );
            Err(SessionError::UserLimit(UserLimitReached {
                user: user.to_string(),
                active,
                adding,
                max: limit.max,
            }))
        };
        if adding > limit.max {
            let active = self.store.count_user(user.to_string()).await?;
            return refused(active);
        }
        if on_limit == OnUserLimit::EndLeastRecent {
            return Ok(());
        }
        // The count is an upper bound (it may hold ended sessions): under
        // the limit, nothing to list.
        let Some(listed) = self
            .store
            .user_sessions_over(user.to_string(), limit.max - adding)
            .await
            .inspect_err(|_| self.store_failed())?
        else {
            return Ok(());
        };
        let active = self
            .freshened(listed)
            .await
            .iter()
            .filter(|(h, _)| Some(*h) != replacing)
            .count();
        if active.saturating_add(adding) > limit.max {
            return refused(active);
        }
        Ok(())
    }

    /// With `on_user_limit = "end_least_recent"`: the sessions of `user` to
    /// end so that, with one more made at `made_at`, at most `max_per_user`
    /// remain: those unused the longest, never `keeping` (the session a login
    /// turns into the new one) and never one used since `made_at`: two
    /// logins of one user at once, each over the limit, then end the earlier
    /// one's session at most, not each other's. Chosen before the new
    /// session is written, so that a login ends them in its rotation's
    /// commit. A store failure here is logged and ends nothing (the login
    /// goes on; the next one trims again).
    async fn to_end(&self, user: &str, keeping: Option<TokenHash>, made_at: u64) -> Vec<(TokenHash, SessionRecord)> {
        let limit = self.config.session.per_user;
        if limit.on_limit != OnUserLimit::EndLeastRecent {
            return Vec::new();
        }
        match self
            .least_recent(user, keeping, made_at, limit.max.saturating_sub(1))
            .await
        {
            Ok(ending) => ending,
            Err(e) => {
                self.store_failed();
                tracing::warn!(error = %e, user, "could not end sessions beyond [session] max_per_user");
                Vec::new()
            }
        }
    }

    /// `user`'s sessions beyond the `room` most recently used (other than
    /// `keeping`), least recent first, up to the first one used since
    /// `made_at`.
    async fn least_recent(
        &self,
        user: &str,
        keeping: Option<TokenHash>,
        made_at: u64,
        room: usize,
    ) -> Result<Vec<(TokenHash, SessionRecord)>, StoreError> {
        let Some(listed) = self.store.user_sessions_over(user.to_string(), room).await? else {
            return Ok(Vec::new());
        };
        let mut others: Vec<(TokenHash, SessionRecord)> = self
            .freshened(listed)
            .await
            .into_iter()
            .filter(|(h, _)| Some(*h) != keeping)
            .collect();
        if others.len() <= room {
            return Ok(Vec::new());
        }
        others.sort_by_key(|(_, r)| r.last_seen);
        let excess = others.len() - room;
        Ok(others
            .into_iter()
            .take(excess)
            .take_while(|(_, r)| r.last_seen < made_at)
            .collect())
    }

    /// Ends the sessions [`Sessions::to_end`] chose, each on its own
    /// (outside a rotation: an admin mint).
    async fn end_now(&self, user: &str, ending: Vec<(TokenHash, SessionRecord)>) {
        let mut ended = Vec::with_capacity(ending.len());
        for (h, _) in &ending {
            self.revoked.insert(*h, ());
            ended.push(self.store.delete(*h).await);
        }
        self.record_ended(user, ending, ended).await;
    }

    /// After the store has deleted (or failed to delete) the sessions the
    /// limit ends: takes them out of the cache, counts and logs each. A
    /// failed deletion leaves that session in place, as it was.
    async fn record_ended(
        &self,
        user: &str,
        ending: Vec<(TokenHash, SessionRecord)>,
        ended: Vec<Result<bool, StoreError>>,
    ) {
        let max = self.config.session.per_user.max;
        for ((h, r), outcome) in ending.into_iter().zip(ended) {
            match outcome {
                Ok(existed) => {
                    self.uncache(&h).await;
                    if existed {
                        self.metrics.session_revoked("user_limit");
                        self.metrics.user_limit("ended_least_recent");
                        tracing::warn!(event = "session_limit", user, session_id = %r.id, max, action = "ended_least_recent");
                    }
                }
                Err(e) => {
                    self.store_failed();
                    tracing::warn!(error = %e, user, session_id = %r.id, "could not end a session beyond [session] max_per_user");
                }
            }
        }
    }

    /// Ends a session (logout or admin revocation).
    pub async fn revoke(&self, hash: TokenHash, reason: &'static str) -> Result<bool, StoreError> {
        let existed = self.remove(hash).await?;
        if existed {
            self.metrics.session_revoked(reason);
        }
        Ok(existed)
    }

    /// Replaces the session's data (from the upstream's data header). A
    /// session ended meanwhile (logout, rotation) stays ended: the store
    /// write only replaces an existing record, and a cache entry put back
    /// after a concurrent revocation is taken out again.
    pub async fn set_data(&self, live: &Live, data: String) -> Result<(), StoreError> {
        let _updating = self.updating(&live.hash).lock().await;
        // The full record is in the store only (see `live.rs`).
        let Some(mut record) = self.store.get(live.hash).await.inspect_err(|_| self.store_failed())? else {
            return Ok(());
        };
        record.last_seen = record.last_seen.max(live.last_seen());
        record.data = data;
        let fresh = self.live(live.hash, &record);
        let replaced = self
            .store
            .replace(live.hash, record)
            .await
            .inspect_err(|_| self.store_failed())?;
        if !replaced || self.revoked.contains_key(&live.hash) {
            return Ok(());
        }
        self.cache.insert(live.hash.prefix(), fresh).await;
        // A connection that remembers the old entry must not keep its data.
        self.generations.advance(&live.hash);
        // `remove` marks `revoked` before it invalidates: whichever order the
        // two ran in, the entry does not outlive the revocation.
        if self.revoked.contains_key(&live.hash) {
            self.uncache(&live.hash).await;
        }
        Ok(())
    }

    fn updating(&self, hash: &TokenHash) -> &tokio::sync::Mutex<()> {
        &self.updating[usize::from(hash.0[31]) % UPDATE_LOCKS]
    }

    /// Pins the session to the server that just answered it (see
    /// `SessionRecord::servers`). In the background: the request does not
    /// wait for the store, and a write that fails costs only the pin (the
    /// session is placed again, and pinned, by its next request). While a
    /// pin of the session is written, the latest request that comes is
    /// kept and written after it, applied to the pins that write left.
    pub fn pin(self: &Arc<Self>, live: &Arc<Live>, request: PinRequest) {
        {
            let mut pinning = self.pinning.lock().unwrap_or_else(|p| p.into_inner());
            match pinning.entry(live.hash) {
                std::collections::hash_map::Entry::Occupied(mut under_way) => {
                    *under_way.get_mut() = Some(request);
                    return;
                }
                std::collections::hash_map::Entry::Vacant(none) => {
                    none.insert(None);
                }
            }
        }
        let mut written = Pinning {
            sessions: Arc::clone(self),
            live: Arc::clone(live),
            ended: false,
        };
        let task = async move {
            let mut next = Some(request);
            while let Some(request) = next {
                if let Err(e) = written.sessions.store_pin(&written.live, &request).await {
                    tracing::warn!(session_id = %written.live.record.id, error = %e, "session's upstream server not recorded");
                }
                next = written.next();
            }
        };
        match self.background.get() {
            Some(runtime) => drop(runtime.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }

    /// Writes one pin, applied to the session's pins as they are now.
    async fn store_pin(&self, live: &Live, request: &PinRequest) -> Result<(), StoreError> {
        let _updating = self.updating(&live.hash).lock().await;
        // The cached entry now, which a data update or a pin may have replaced.
        let cached = self
            .cache
            .get(&live.hash.prefix())
            .await
            .filter(|c| c.hash == live.hash);
        let current = match &cached {
            Some(entry) => entry.record.servers().to_vec(),
            None => match self.store.get(live.hash).await.inspect_err(|_| self.store_failed())? {
                Some(record) => record.servers,
                None => return Ok(()),
            },
        };
        let Some(Pins { servers, moved }) = request.apply(&current) else {
            return Ok(());
        };
        let set = self
            .store
            .set_servers(live.hash, servers.clone())
            .await
            .inspect_err(|_| self.store_failed())?;
        if !set {
            return Ok(());
        }
        self.metrics.session_pinned(moved);
        if moved {
            tracing::debug!(event = "session_moved", session_id = %live.record.id, upstream = %request.upstream, "session pinned to another upstream server");
        }
        // The cache gets the new pins, or loses the entry (a fill that read
        // the store before the write may have put it back meanwhile); then
        // the generation moves, which such a fill checks (`load`).
        match cached {
            Some(cached) => {
                let fresh = Arc::new(cached.with_servers(&servers));
                self.cache.insert(live.hash.prefix(), fresh).await;
                self.generations.advance(&live.hash);
            }
            None => self.uncache(&live.hash).await,
        }
        // As in `set_data`: the entry must not outlive a revocation.
        if self.revoked.contains_key(&live.hash) {
            self.uncache(&live.hash).await;
        }
        Ok(())
    }

    /// The newest `limit` live sessions, of all or of one user (admin API),
    /// newest first, and how many there are. The count includes sessions
    /// idle past their timeout that the sweep has not removed yet; the
    /// listing leaves them out.
    pub async fn list(&self, user: Option<String>, limit: usize) -> Result<Listing, StoreError> {
        let newest = self.store.newest(user, limit, now_ms()).await.inspect_err(|e| {
            if !matches!(e, StoreError::Unsupported(_)) {
                self.store_failed();
            }
        })?;
        let matched = newest.matched();
        let sessions = self
            .freshened(newest.into_sorted())
            .await
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        Ok(Listing { matched, sessions })
    }

    /// The unexpired ones of `listed` (records as the store has them), each
    /// with the cache's fresher `last_seen`.
    async fn freshened(&self, listed: Vec<(TokenHash, SessionRecord)>) -> Vec<(TokenHash, SessionRecord)> {
        let now = now_ms();
        let mut out = Vec::with_capacity(listed.len());
        for (h, mut r) in listed {
            if let Some(live) = self.cache.get(&h.prefix()).await.filter(|l| l.hash == h) {
                r.last_seen = r.last_seen.max(live.last_seen());
            }
            if r.expiry(now, r.last_seen, self.idle_ms).is_none() {
                out.push((h, r));
            }
        }
        out
    }

    /// Revokes the session with this id. Returns whether one existed.
    pub async fn revoke_id(&self, id: SessionId) -> Result<bool, StoreError> {
        match self.store.find_id(id).await? {
            Some((h, _)) => self.revoke(h, "admin").await,
            None => Ok(false),
        }
    }

    /// Revokes every session of `user`. Returns how many.
    pub async fn revoke_user(&self, user: &str) -> Result<usize, StoreError> {
        self.revoke_user_because(user, "admin").await
    }

    /// Revokes every session of `user`, counted under `reason`. Returns how
    /// many, or the first error once every other revocation was tried (a
    /// failure leaves no more sessions alive than it must).
    ///
    /// [`REVOKE_CONCURRENCY`] at a time, so that the embedded store commits
    /// them in batches and Redis pipelines them: one after the other, 10,000
    /// sessions of one user took 4.7 s to end, one fsync each (docs/benchmarks.md).
    pub async fn revoke_user_because(&self, user: &str, reason: &'static str) -> Result<usize, StoreError> {
        use futures_util::StreamExt;
        let listed = self.store.list(Some(user.to_string())).await?;
        let mut results = futures_util::stream::iter(listed.into_iter().map(|(h, _)| self.revoke(h, reason)))
            .buffer_unordered(REVOKE_CONCURRENCY);
        let (mut n, mut first_error) = (0, None);
        while let Some(result) = results.next().await {
            match result {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(n), Err)
    }

    /// `Set-Cookie` value carrying `token`.
    pub fn set_cookie(&self, token: &SessionToken) -> HeaderValue {
        let v = format!("{}={}{}", self.cookie_name(), token.encode(), self.set_cookie_suffix);
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie` value that deletes the cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        self.clear_cookie.clone()
    }

    /// The `Cookie:` value for a token (admin mint).
    pub fn cookie_pair(&self, token: &SessionToken) -> String {
        format!("{}={}", self.cookie_name(), token.encode())
    }

    /// The absolute lifetime in force, in milliseconds.
    pub fn absolute_ms(&self) -> u64 {
        self.absolute_ms
    }

    pub fn idle_ms(&self) -> u64 {
        self.idle_ms
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// Entries currently cached (the active-sessions gauge).
    pub fn cached(&self) -> u64 {
        self.cache.entry_count()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;

    fn sessions(dir: &std::path::Path) -> Sessions {
        sessions_with(dir, "")
    }

    /// A manager on the memory store, with `extra` TOML (whole tables).
    fn sessions_with(dir: &std::path::Path, extra: &str) -> Sessions {
        sessions_on(dir, extra, Arc::new(store::memory::MemoryStore::default()))
    }

    /// A manager on `store`, with `extra` TOML (whole tables).
    fn sessions_on(dir: &std::path::Path, extra: &str, store: Arc<dyn SessionStore>) -> Sessions {
        let (cert, key) = crate::tls::write_self_signed(dir, &["localhost".into()]).unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            "[tls]\ncert = {cert:?}\nkey = {key:?}\n[store]\nkind = \"memory\"\n{extra}\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\n"
        );
        let config = Config::parse(&text, &dir.join("test.toml")).unwrap_or_else(|e| panic!("{e}"));
        Sessions::with_store(Arc::new(config), Arc::new(Metrics::new()), store)
    }

    #[tokio::test]
    async fn the_limit_never_ends_a_session_used_since_the_new_one_was_made() {
        // As after two logins of one user at once, with max_per_user = 1: the
        // login made 2 s ago (rotating hashes[2]) sees a session last used 3 s ago and
        // one used 1 s ago (the other login's); it ends only the first.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = sessions_with(dir.path(), "[session]\nmax_per_user = 1\n");
        let ip = IpAddr::from([127, 0, 0, 1]);
        let alice = Identity {
            user: "alice".into(),
            email: None,
            groups: Vec::new(),
        };
        let mut hashes = Vec::new();
        let now = now_ms();
        for seen in [now - 3_000, now - 1_000, now - 2_000] {
            let mut r = s
                .new_record(ip, &HeaderMap::new(), Some(alice.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            (r.created_at, r.last_seen) = (seen, seen);
            let h = SessionToken::generate().unwrap_or_else(|e| panic!("{e}")).hash();
            s.store.put(h, r).await.unwrap_or_else(|e| panic!("{e}"));
            hashes.push(h);
        }
        let ending = s.to_end("alice", Some(hashes[2]), now - 2_000).await;
        s.end_now("alice", ending).await;
        let left: std::collections::HashSet<TokenHash> = s
            .store
            .list(Some("alice".into()))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        assert_eq!(left, std::collections::HashSet::from([hashes[1], hashes[2]]));
    }

    #[tokio::test]
    async fn a_cache_entry_answers_only_its_own_full_hash() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = sessions(dir.path());
        let ip = IpAddr::from([127, 0, 0, 1]);
        let (token, live) = s.issue(ip, &HeaderMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
        // Another session whose hash shares the first 8 bytes (the cache key)
        // takes the cache slot.
        let mut other = live.hash;
        other.0[31] ^= 1;
        let mut impostor = s.stored(&live).await.ok().flatten().unwrap_or_else(|| unreachable!());
        impostor.id = SessionId([9; 16]);
        s.cache.insert(other.prefix(), s.live(other, &impostor)).await;
        let mut headers = HeaderMap::new();
        let cookie = HeaderValue::from_str(&s.cookie_pair(&token)).unwrap_or_else(|e| panic!("{e}"));
        headers.insert(COOKIE, cookie);
        for _ in 0..2 {
            match s.lookup(&headers, ip).await {
                Ok(Lookup::Valid(found)) => assert_eq!(found.record.id, live.record.id),
                _ => panic!("the session must still verify, from the store"),
            }
        }
        // The impostor keeps its slot: the lookups read through.
        let cached = s.cache.get(&other.prefix()).await.map(|l| l.record.id);
        assert_eq!(cached, Some(SessionId([9; 16])));
    }

    #[tokio::test]
    async fn a_full_cache_makes_room_for_a_new_session_by_ending_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = sessions_with(dir.path(), "cache_capacity = 4\n");
        let ip = IpAddr::from([127, 0, 0, 1]);
        let mut regulars = Vec::new();
        for _ in 0..4 {
            let (_, live) = s.issue(ip, &HeaderMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
            regulars.push(live.hash);
        }
        // Each regular is used often, the first one longest ago.
        for _ in 0..5 {
            for h in &regulars {
                assert!(s.cache.get(&h.prefix()).await.is_some());
                s.cache.run_pending_tasks().await;
            }
        }
        let (_, new) = s.issue(ip, &HeaderMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
        s.cache.run_pending_tasks().await;
        // The new session is cached (frequency-based admission would turn it
        // away: it has been used less than any regular) and the least
        // recently used regular has made room.
        assert!(
            s.cache.contains_key(&new.hash.prefix()),
            "the new session is not cached"
        );
        assert!(!s.cache.contains_key(&regulars[0].prefix()));
        assert!(regulars[1..].iter().all(|h| s.cache.contains_key(&h.prefix())));
        assert_eq!(s.cache.entry_count(), 4);
    }

    /// Pins and a data update of one session, all under way: each keeps
    /// the others' changes, in the store and in the cache; a pin asked
    /// while one is written is written after it, on the pins it left (a
    /// move, counted as one); shutdown waits for both.
    #[tokio::test]
    async fn pins_and_a_data_update_keep_each_other() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = Arc::new(sessions(dir.path()));
        let ip = IpAddr::from([127, 0, 0, 1]);
        let (_, live) = s.issue(ip, &HeaderMap::new()).await.unwrap_or_else(|e| panic!("{e}"));
        let group = [ServerKey(1), ServerKey(2)];
        s.pin(&live, PinRequest::for_tests(&group, ServerKey(1)));
        s.pin(&live, PinRequest::for_tests(&group, ServerKey(2)));
        s.set_data(&live, "cart=1".into())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        s.settle().await;
        let stored = s.stored(&live).await.ok().flatten().unwrap_or_else(|| unreachable!());
        assert_eq!((stored.servers, stored.data.as_str()), (vec![ServerKey(2)], "cart=1"));
        let cached = s
            .get(live.hash, now_ms())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| unreachable!());
        assert_eq!(
            (cached.record.servers(), cached.record.data()),
            (&[ServerKey(2)][..], "cart=1")
        );
        assert!(s.pinning.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
        let text = s.metrics.encode();
        for why in ["first", "moved"] {
            let line = format!("sessiongate_session_pins_total{{why=\"{why}\"}} 1");
            assert!(text.contains(&line), "{line} in {text}");
        }
        // The task that wrote them has ended: a later pin starts its own.
        s.pin(&live, PinRequest::for_tests(&group, ServerKey(1)));
        s.settle().await;
        let stored = s.stored(&live).await.ok().flatten().unwrap_or_else(|| unreachable!());
        assert_eq!(stored.servers, [ServerKey(1)]);
        assert!(s
            .metrics
            .encode()
            .contains("sessiongate_session_pins_total{why=\"moved\"} 2"));
        assert!(s.pinning.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
    }

    /// The memory store, whose next read, once `hold` is set, returns what
    /// it read only when `go` is told: a cache fill that read the store
    /// just before a write.
    #[derive(Default)]
    struct HeldRead {
        inner: store::memory::MemoryStore,
        hold: std::sync::atomic::AtomicBool,
        read: tokio::sync::Notify,
        go: tokio::sync::Notify,
    }

    impl SessionStore for HeldRead {
        fn get(&self, hash: TokenHash) -> store::StoreFuture<'_, Option<SessionRecord>> {
            let read = self.inner.get(hash);
            Box::pin(async move {
                let record = read.await;
                if self.hold.swap(false, Ordering::SeqCst) {
                    self.read.notify_one();
                    self.go.notified().await;
                }
                record
            })
        }
        fn put(&self, hash: TokenHash, record: SessionRecord) -> store::StoreFuture<'_, ()> {
            self.inner.put(hash, record)
        }
        fn replace(&self, hash: TokenHash, record: SessionRecord) -> store::StoreFuture<'_, bool> {
            self.inner.replace(hash, record)
        }
        fn set_servers(&self, hash: TokenHash, servers: Vec<ServerKey>) -> store::StoreFuture<'_, bool> {
            self.inner.set_servers(hash, servers)
        }
        fn rotate(&self, old: TokenHash, new: TokenHash, record: SessionRecord) -> store::StoreFuture<'_, ()> {
            self.inner.rotate(old, new, record)
        }
        fn delete(&self, hash: TokenHash) -> store::StoreFuture<'_, bool> {
            self.inner.delete(hash)
        }
        fn touch(&self, batch: Vec<(TokenHash, u64)>) -> store::StoreFuture<'_, ()> {
            self.inner.touch(batch)
        }
        fn list(&self, user: Option<String>) -> store::StoreFuture<'_, Vec<(TokenHash, SessionRecord)>> {
            self.inner.list(user)
        }
        fn find_id(&self, id: SessionId) -> store::StoreFuture<'_, Option<(TokenHash, SessionRecord)>> {
            self.inner.find_id(id)
        }
        fn sweep(&self, now: u64, idle_ms: u64) -> store::StoreFuture<'_, Vec<TokenHash>> {
            self.inner.sweep(now, idle_ms)
        }
    }

    /// A cache fill that read the session before its pin was written, and
    /// puts it in the cache after: the pin is not lost from the cache (the
    /// session would be placed by the ranking again).
    #[tokio::test]
    async fn a_fill_that_read_before_a_pin_does_not_hide_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let held = Arc::new(HeldRead::default());
        let s = Arc::new(sessions_on(dir.path(), "", held.clone()));
        let (_, live) = s
            .issue(IpAddr::from([127, 0, 0, 1]), &HeaderMap::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        s.uncache(&live.hash).await;

        held.hold.store(true, Ordering::SeqCst);
        let filling = {
            let s = s.clone();
            let hash = live.hash;
            tokio::spawn(async move { s.get(hash, now_ms()).await.ok().flatten() })
        };
        held.read.notified().await;
        let pin = PinRequest::for_tests(&[ServerKey(1), ServerKey(2)], ServerKey(1));
        s.store_pin(&live, &pin).await.unwrap_or_else(|e| panic!("{e}"));
        held.go.notify_one();
        let filled = filling
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| unreachable!("the session exists"));
        assert_eq!(filled.record.servers(), [ServerKey(1)], "the fill's own answer");
        let now = s.get(live.hash, now_ms()).await.ok().flatten();
        let now = now.unwrap_or_else(|| unreachable!("the session exists"));
        assert_eq!(now.record.servers(), [ServerKey(1)], "the cache's entry");
    }

    /// A session issued on a route with several servers carries its pin
    /// from its first write: in the store and the cache, counted once.
    #[tokio::test]
    async fn a_placed_session_is_written_once_with_its_pin() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = sessions(dir.path());
        let ip = IpAddr::from([127, 0, 0, 1]);
        let (_, live) = s
            .issue_placed(ip, &HeaderMap::new(), |_| Some(ServerKey(9)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(live.record.servers(), [ServerKey(9)]);
        let stored = s.stored(&live).await.ok().flatten().unwrap_or_else(|| unreachable!());
        assert_eq!(stored.servers, [ServerKey(9)]);
        let (_, plain) = s
            .issue_placed(ip, &HeaderMap::new(), |_| None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain.record.servers(), []);
        let text = s.metrics.encode();
        assert!(
            text.contains("sessiongate_session_pins_total{why=\"first\"} 1\n"),
            "{text}"
        );
    }
}
