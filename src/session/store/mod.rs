//! The store of record for sessions, behind an object-safe async trait so that
//! another backend (Redis) slots in without touching the request path.
//!
//! Creation, rotation and deletion must be durable when the returned future
//! resolves: the response that announces them leaves only afterwards.
//! `touch` is the exception: `last_seen` is written behind and may be lost in
//! a crash, which at worst shortens a session's idle life.

pub mod embedded;
pub mod memory;
pub mod redis;

use super::record::{ServerKey, SessionRecord};
use super::token::{SessionId, TokenHash};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;

/// The newest `limit` of the sessions offered to it (by `created_at`) that
/// have not reached their absolute lifetime at `now`, and how many such
/// were offered. A store scan feeds it record by record, so that listing a
/// million sessions holds `limit` records, not a million: collected whole
/// and described as JSON, such a listing took 2.4 GB of the gateway's
/// memory (docs/benchmarks.md, session 27).
pub struct Newest {
    limit: usize,
    now: u64,
    matched: usize,
    /// The oldest kept on top, to be dropped for a newer one.
    kept: BinaryHeap<Reverse<ByAge>>,
}

impl Newest {
    pub fn new(limit: usize, now: u64) -> Newest {
        Newest {
            limit,
            now,
            matched: 0,
            kept: BinaryHeap::with_capacity(limit.min(1024) + 1),
        }
    }

    /// Counts the session and keeps it if it is among the newest so far.
    pub fn offer(&mut self, hash: TokenHash, record: SessionRecord) {
        if record.expires_at <= self.now {
            return;
        }
        self.matched += 1;
        let item = ByAge(record.created_at, hash, record);
        if self.kept.len() < self.limit {
            self.kept.push(Reverse(item));
        } else if self
            .kept
            .peek()
            .is_some_and(|Reverse(oldest)| oldest.key() < item.key())
        {
            self.kept.pop();
            self.kept.push(Reverse(item));
        }
    }

    /// How many sessions matched (at least as many as are kept).
    pub fn matched(&self) -> usize {
        self.matched
    }

    /// The kept sessions, newest first.
    pub fn into_sorted(self) -> Vec<(TokenHash, SessionRecord)> {
        // Ascending `Reverse` order is descending age order: newest first.
        self.kept
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(ByAge(_, h, r))| (h, r))
            .collect()
    }
}

/// [`SessionStore::newest`] of a listing that is already whole in memory.
pub fn newest_of(
    listed: StoreFuture<'_, Vec<(TokenHash, SessionRecord)>>,
    limit: usize,
    now: u64,
) -> StoreFuture<'_, Newest> {
    Box::pin(async move {
        let mut newest = Newest::new(limit, now);
        for (h, r) in listed.await? {
            newest.offer(h, r);
        }
        Ok(newest)
    })
}

/// A session ordered by creation time, then by hash (a total order).
struct ByAge(u64, TokenHash, SessionRecord);

impl ByAge {
    fn key(&self) -> (u64, TokenHash) {
        (self.0, self.1)
    }
}

impl PartialEq for ByAge {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ByAge {}

impl PartialOrd for ByAge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByAge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// A store operation that could not complete: the caller fails closed (503).
/// `Clone`: one failed batch commit is every waiting caller's error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store backend: {0}")]
    Backend(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("blocking task failed: {0}")]
    Join(String),
    /// The store cannot do this at all (listing every session of a Redis
    /// Cluster): the request's fault, not the store's health.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Cache coherence news from a store shared with other instances.
#[derive(Debug)]
pub enum CacheEvent {
    /// Another instance changed this session (its data).
    Invalidate(TokenHash),
    /// Another instance deleted this token (logout, revocation, rotation).
    Gone(TokenHash),
    /// The news feed broke: the cache may miss invalidations until `Restored`.
    Lost,
    /// The feed is back; anything cached before may be stale.
    Restored,
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

pub trait SessionStore: Send + Sync + 'static {
    /// The record under `hash`, if any.
    fn get(&self, hash: TokenHash) -> StoreFuture<'_, Option<SessionRecord>>;
    /// Creates or replaces the record under `hash`, durably.
    fn put(&self, hash: TokenHash, record: SessionRecord) -> StoreFuture<'_, ()>;
    /// Creates many records at once (batch minting), durably. The default
    /// writes them one by one; a backend that pays per commit (redb's fsync,
    /// Redis round trips) overrides it so that a batch costs one commit.
    /// Not atomic: on an error some records may have been written, and the
    /// caller hands out none of their tokens.
    fn put_many(&self, batch: Vec<(TokenHash, SessionRecord)>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            for (hash, record) in batch {
                self.put(hash, record).await?;
            }
            Ok(())
        })
    }
    /// Replaces the record under `hash` only if one is still there (a
    /// concurrent logout must not be undone). Returns whether it was.
    fn replace(&self, hash: TokenHash, record: SessionRecord) -> StoreFuture<'_, bool>;
    /// Sets the servers a session is pinned to, only if its record is
    /// still there, and nothing else of it: one atomic write (a data
    /// update racing it keeps its data). Returns whether it was there.
    fn set_servers(&self, hash: TokenHash, servers: Vec<ServerKey>) -> StoreFuture<'_, bool>;
    /// Atomically removes `old` and stores `record` under `new`.
    fn rotate(&self, old: TokenHash, new: TokenHash, record: SessionRecord) -> StoreFuture<'_, ()>;
    /// [`SessionStore::rotate`], then deletes `end` (the sessions a login
    /// ends under the per-user limit). Fails only if the rotation did; then
    /// nothing is deleted. Returns, for each of `end`, whether it existed, or
    /// the error that kept it. The default makes a round trip per session;
    /// the embedded store overrides it to commit everything in the
    /// rotation's transaction (one fsync per login instead of two).
    fn rotate_ending(
        &self,
        old: TokenHash,
        new: TokenHash,
        record: SessionRecord,
        end: Vec<TokenHash>,
    ) -> StoreFuture<'_, Vec<Result<bool, StoreError>>> {
        Box::pin(async move {
            self.rotate(old, new, record).await?;
            let mut ended = Vec::with_capacity(end.len());
            for hash in end {
                ended.push(self.delete(hash).await);
            }
            Ok(ended)
        })
    }
    /// Removes the record under `hash`, durably. Returns whether it existed.
    fn delete(&self, hash: TokenHash) -> StoreFuture<'_, bool>;
    /// Write-behind `last_seen` updates. A touch for a record that no longer
    /// exists must never bring it back or reach a later record under the
    /// same key (the embedded store keeps it aside until its next sweep).
    fn touch(&self, batch: Vec<(TokenHash, u64)>) -> StoreFuture<'_, ()>;
    /// Every session, or those of one user.
    fn list(&self, user: Option<String>) -> StoreFuture<'_, Vec<(TokenHash, SessionRecord)>>;
    /// The newest `limit` sessions (all, or one user's) whose absolute
    /// lifetime has not ended at `now`, and how many such there are: the
    /// admin's listing. Stores that can scan override this to keep only
    /// those `limit` in memory while they scan.
    fn newest(&self, user: Option<String>, limit: usize, now: u64) -> StoreFuture<'_, Newest> {
        newest_of(self.list(user), limit, now)
    }
    /// At least as many as `user`'s live sessions (it may count ones that
    /// ended and are not swept yet): the cheap first check of the per-user
    /// limit, which lists them only when this count is over it.
    fn count_user(&self, user: String) -> StoreFuture<'_, usize> {
        let listed = self.list(Some(user));
        Box::pin(async move { Ok(listed.await?.len()) })
    }
    /// `user`'s sessions if [`SessionStore::count_user`] is over `max`,
    /// `None` if it is not: the per-user limit's check and the list it
    /// needs when over, which the embedded store reads in one transaction
    /// (one hand-off to the blocking pool per login instead of two).
    fn user_sessions_over(&self, user: String, max: usize) -> StoreFuture<'_, Option<Vec<(TokenHash, SessionRecord)>>> {
        Box::pin(async move {
            if self.count_user(user.clone()).await? <= max {
                return Ok(None);
            }
            self.list(Some(user)).await.map(Some)
        })
    }
    /// The session with this id.
    fn find_id(&self, id: SessionId) -> StoreFuture<'_, Option<(TokenHash, SessionRecord)>>;
    /// Deletes records whose absolute or idle life ended before `now`.
    fn sweep(&self, now: u64, idle_ms: u64) -> StoreFuture<'_, Vec<TokenHash>>;
    /// Invalidation news from other instances; `None` for a store only this
    /// process writes. Taken once.
    fn events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<CacheEvent>> {
        None
    }
    /// Whether the store answers (readiness).
    fn ping(&self) -> StoreFuture<'_, ()> {
        let probe = self.get(TokenHash([0; 32]));
        Box::pin(async move { probe.await.map(|_| ()) })
    }
    /// Whether a rotated token's hash must share its first byte with the old
    /// one (so both keys live in one Redis cluster slot).
    fn rotation_keeps_tag(&self) -> bool {
        false
    }
}

/// Whether a stored record is past its idle or absolute limit.
pub(crate) fn is_dead(r: &SessionRecord, now: u64, idle_ms: u64) -> bool {
    r.expiry(now, r.last_seen, idle_ms).is_some()
}

pub(crate) fn matches_user(r: &SessionRecord, user: Option<&str>) -> bool {
    match user {
        None => true,
        Some(u) => r.identity.as_ref().is_some_and(|i| i.user == u),
    }
}

/// A flush of touches in key order (the order both stores write them in),
/// sorted off the runtime's threads when it is large: a flush after a busy
/// interval can hold 100,000 touches or more, tens of milliseconds of
/// sorting that requests on the worker would otherwise wait out.
pub(super) async fn in_key_order(batch: Vec<(TokenHash, u64)>) -> Result<Vec<(TokenHash, u64)>, StoreError> {
    const SORT_INLINE: usize = 4096;
    fn sorted(mut batch: Vec<(TokenHash, u64)>) -> Vec<(TokenHash, u64)> {
        batch.sort_unstable_by_key(|(h, _)| h.0);
        batch
    }
    if batch.len() <= SORT_INLINE {
        return Ok(sorted(batch));
    }
    tokio::task::spawn_blocking(move || sorted(batch))
        .await
        .map_err(|e| StoreError::Join(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    fn record(created_at: u64, expires_at: u64) -> SessionRecord {
        SessionRecord::anonymous_at(created_at, expires_at)
    }

    /// Offered in a scrambled order, the newest `limit` come out newest
    /// first; sessions past their absolute lifetime are neither kept nor
    /// counted.
    #[test]
    fn newest_keeps_the_limit_newest_and_counts_the_rest() {
        let mut newest = Newest::new(3, 100);
        for (i, created) in [5u64, 42, 17, 99, 3, 64, 64, 8].into_iter().enumerate() {
            newest.offer(TokenHash([i as u8; 32]), record(created, 1_000));
        }
        newest.offer(TokenHash([200; 32]), record(500, 100));
        assert_eq!(newest.matched(), 8);
        let kept: Vec<(u64, u8)> = newest
            .into_sorted()
            .into_iter()
            .map(|(h, r)| (r.created_at, h.0[0]))
            .collect();
        // Equal times order by hash: the later index wins the tie.
        assert_eq!(kept, [(99, 3), (64, 6), (64, 5)]);
    }
}
