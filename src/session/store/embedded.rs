//! The default store: a redb file. Every write transaction is committed with
//! redb's default durability (fsync) before its future resolves, so
//! creation, rotation and deletion survive SIGKILL. redb is synchronous: the
//! writes of single sessions, and the sweeper's deletions a chunk at a
//! time, are committed in batches by a thread of the store's own
//! (`GroupCommit`); reads (the sweeper's scan among them) and batch mints
//! run on tokio's blocking pool.
//!
//! Tables: `sessions` (token hash → record as JSON), `last_seen` (token
//! hash → ms), and the user index, `user_index` ((user, created_at, token
//! hash) for every logged-in session) with `user_index_counts` (user → how
//! many): the per-user limit counts a user's sessions at every login, and a
//! scan of every record there would cost a login time in proportion to all
//! sessions. The index is kept in step by every write of a record, in the
//! same transaction; a file from before it existed is indexed once, when
//! opened. The write-behind touch only inserts into `last_seen`:
//! with many active sessions every touch lands on a different B-tree leaf,
//! and decoding and re-encoding the JSON record there held verified
//! throughput with a million active sessions to ~0.6× the figure with a
//! thousand (docs/benchmarks.md, "Scale"). A record's `last_seen` is the
//! larger of the two.

use super::{is_dead, matches_user, Newest, SessionStore, StoreError, StoreFuture};
use crate::session::record::{ServerKey, SessionRecord};
use crate::session::token::{SessionId, TokenHash};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const LAST_SEEN: TableDefinition<&[u8], u64> = TableDefinition::new("last_seen");
/// (user, created_at, token hash) → (): one user's sessions are one key
/// range. `created_at` (which a record keeps for life, login included)
/// before the hash puts the sessions made together side by side: a batch
/// mint of 10,000 dirties a hundred leaves of the index, not one leaf per
/// session, as random hashes alone would (a million-session mint took 48 s
/// against 28 s without an index).
const USERS: TableDefinition<(&str, u64, &[u8]), ()> = TableDefinition::new("user_index");
/// user → the entries `USERS` holds for them: the limit's count without a scan.
const USER_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("user_index_counts");
/// Facts about the file's layout; `USER_INDEX` is set once `user_index`
/// holds every logged-in session.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const USER_INDEX: &str = "user_index";

/// The tables of one write transaction.
struct Tables<'t> {
    sessions: redb::Table<'t, &'static [u8], &'static [u8]>,
    seen: redb::Table<'t, &'static [u8], u64>,
    users: redb::Table<'t, (&'static str, u64, &'static [u8]), ()>,
    counts: redb::Table<'t, &'static str, u64>,
}

impl<'t> Tables<'t> {
    fn open(tx: &'t redb::WriteTransaction) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            sessions: tx.open_table(SESSIONS).map_err(backend)?,
            seen: tx.open_table(LAST_SEEN).map_err(backend)?,
            users: tx.open_table(USERS).map_err(backend)?,
            counts: tx.open_table(USER_COUNTS).map_err(backend)?,
        })
    }

    /// Stores `record` under `hash`; a `last_seen` left from an earlier
    /// record under the same key must not outlive it.
    fn put(&mut self, hash: &TokenHash, record: &SessionRecord) -> Result<(), StoreError> {
        self.write(hash, record)?;
        self.seen.remove(hash.0.as_slice()).map_err(backend)?;
        Ok(())
    }

    /// Writes the record alone (its `last_seen` entry stays), and the index.
    fn write(&mut self, hash: &TokenHash, record: &SessionRecord) -> Result<(), StoreError> {
        let before = self
            .sessions
            .insert(hash.0.as_slice(), encode(record)?.as_slice())
            .map_err(backend)?
            .and_then(|v| decode(v.value()).ok());
        self.reindex(hash, before.as_ref(), Some(record))
    }

    /// Writes behind `last_seen` values, in the caller's order; a later one
    /// already stored is kept.
    fn write_seen(&mut self, touches: Vec<(TokenHash, u64)>) -> Result<(), StoreError> {
        for (h, seen) in touches {
            let key = h.0.as_slice();
            let previous = self.seen.insert(key, seen).map_err(backend)?.map(|v| v.value());
            if let Some(later) = previous.filter(|&p| p > seen) {
                self.seen.insert(key, later).map_err(backend)?;
            }
        }
        Ok(())
    }

    fn remove(&mut self, hash: &TokenHash) -> Result<bool, StoreError> {
        self.seen.remove(hash.0.as_slice()).map_err(backend)?;
        let before = match self.sessions.remove(hash.0.as_slice()).map_err(backend)? {
            Some(guard) => decode(guard.value()).ok(),
            None => return Ok(false),
        };
        self.reindex(hash, before.as_ref(), None)?;
        Ok(true)
    }

    /// Moves `hash` in the user index from `before`'s user to `after`'s.
    fn reindex(
        &mut self,
        hash: &TokenHash,
        before: Option<&SessionRecord>,
        after: Option<&SessionRecord>,
    ) -> Result<(), StoreError> {
        let (was, is) = (before.and_then(index_entry), after.and_then(index_entry));
        if was == is {
            return Ok(());
        }
        if let Some((user, created)) = was {
            self.unindex(user, created, hash)?;
        }
        if let Some((user, created)) = is {
            self.index(user, created, hash)?;
        }
        Ok(())
    }

    fn index(&mut self, user: &str, created: u64, hash: &TokenHash) -> Result<(), StoreError> {
        let key = (user, created, hash.0.as_slice());
        let added = self.users.insert(key, ()).map_err(backend)?.is_none();
        if added {
            let n = self.counts.get(user).map_err(backend)?.map_or(0, |v| v.value());
            self.counts.insert(user, n + 1).map_err(backend)?;
        }
        Ok(())
    }

    fn unindex(&mut self, user: &str, created: u64, hash: &TokenHash) -> Result<(), StoreError> {
        let key = (user, created, hash.0.as_slice());
        let removed = self.users.remove(key).map_err(backend)?.is_some();
        if removed {
            let n = self.counts.get(user).map_err(backend)?.map_or(0, |v| v.value());
            if n > 1 {
                self.counts.insert(user, n - 1).map_err(backend)?;
            } else {
                self.counts.remove(user).map_err(backend)?;
            }
        }
        Ok(())
    }
}

/// Where a record sits in the user index: its user and creation time;
/// `None` for an anonymous session.
fn index_entry(r: &SessionRecord) -> Option<(&str, u64)> {
    r.identity.as_ref().map(|i| (i.user.as_str(), r.created_at))
}

/// The record's `last_seen` with the written-behind one folded in.
fn with_seen(mut r: SessionRecord, seen: Option<u64>) -> SessionRecord {
    r.last_seen = r.last_seen.max(seen.unwrap_or(0));
    r
}

fn seen_of(table: &impl ReadableTable<&'static [u8], u64>, hash: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(table.get(hash).map_err(backend)?.map(|v| v.value()))
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    /// Commits single-session writes in batches; `None` once dropped.
    commits: Option<GroupCommit>,
}

/// One session's write inside a batch's transaction; its `bool` is the
/// answer of `replace` and `delete` (whether the record was there).
type Write = Box<dyn FnOnce(&mut Tables<'_>) -> Result<bool, StoreError> + Send>;

/// A write waiting for its commit.
struct Pending {
    write: Write,
    done: oneshot::Sender<Result<bool, StoreError>>,
}

/// A thread that commits writes together, durably: every write that arrived
/// while the previous commit (and its fsync) ran goes into the next
/// transaction, in the order they arrived. Every cookie-less request to an
/// `optional` or `required` route creates a session, and an upstream may
/// set session data on every response. With a transaction, an fsync and a
/// blocking-pool thread each (redb commits one at a time), either kind of
/// traffic ran at about 1,500 requests/s with a p99 of 80-90 ms; in batches,
/// at 5,500-5,600 requests/s with 17-23 ms (`bench/store-writes.sh`,
/// docs/benchmarks.md, session 14). A batch succeeds or fails as one: an
/// error reaches every write in it, and each of their requests gets a 503.
struct GroupCommit {
    queue: mpsc::Sender<Pending>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The most writes one batch commits, so that one transaction's size (and
/// the wait of the writes at the back of the queue) stays bounded.
const MAX_BATCH: usize = 512;

impl GroupCommit {
    /// `cpus`: where the thread may run (`[server] background_cpus`; empty:
    /// anywhere the process may). With this thread and the handshake
    /// threads beside the worker, a storm of 20 logins/s (two commits each)
    /// raised the worker's other requests' p99 ×1.34-1.77, against
    /// ×1.09-1.34 with them on another CPU (docs/benchmarks.md, session
    /// 22). It stays at normal priority: new sessions and logins wait for
    /// it, so it must not starve.
    fn start(db: Arc<Database>, cpus: Vec<usize>) -> Result<GroupCommit, StoreError> {
        let (queue, rx) = mpsc::channel::<Pending>();
        let thread = std::thread::Builder::new()
            .name("sg-store-commit".into())
            .spawn(move || {
                crate::priority::confine_or_warn(&cpus, "store commits");
                commit_until_closed(&db, &rx);
            })
            .map_err(backend)?;
        Ok(GroupCommit {
            queue,
            thread: Some(thread),
        })
    }
}

/// The commit thread: waits for a write, takes whatever else is queued,
/// commits it all and answers each. Returns when the store, the only
/// sender, is dropped.
fn commit_until_closed(db: &Database, rx: &mpsc::Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let (writes, waiting): (Vec<Write>, Vec<_>) = std::iter::once(first)
            .chain(rx.try_iter().take(MAX_BATCH - 1))
            .map(|p| (p.write, p.done))
            .unzip();
        let answers = commit_batch(db, writes);
        for (i, done) in waiting.into_iter().enumerate() {
            let answer = match &answers {
                Ok(answers) => Ok(answers.get(i).copied().unwrap_or(false)),
                Err(e) => Err(e.clone()),
            };
            // The request may be gone (client closed); nothing to tell then.
            let _ = done.send(answer);
        }
    }
}

/// One durable transaction for `writes`; their answers, in order.
fn commit_batch(db: &Database, writes: Vec<Write>) -> Result<Vec<bool>, StoreError> {
    let tx = db.begin_write().map_err(backend)?;
    let mut answers = Vec::with_capacity(writes.len());
    {
        let mut tables = Tables::open(&tx)?;
        for write in writes {
            answers.push(write(&mut tables)?);
        }
    }
    tx.commit().map_err(backend)?;
    Ok(answers)
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Close the queue and wait for the thread's last batch, so that the
        // database is closed (and its file free to reopen) when this returns.
        if let Some(mut group) = self.commits.take() {
            drop(group.queue);
            if let Some(t) = group.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode(r: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(r).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn hash_of(key: &[u8]) -> Option<TokenHash> {
    <[u8; 32]>::try_from(key).ok().map(TokenHash)
}

impl EmbeddedStore {
    /// Opens (or creates) the database file and its table, with a page
    /// cache of at most `page_cache_bytes` (redb's default, 1 GiB, would be
    /// filled and kept by a large table).
    /// `commit_cpus`: the CPUs of its commit thread (`[server] background_cpus`).
    pub fn open(path: &Path, page_cache_bytes: usize, commit_cpus: &[usize]) -> Result<EmbeddedStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(backend)?;
        }
        let db = redb::Builder::new()
            .set_cache_size(page_cache_bytes)
            .create(path)
            .map_err(backend)?;
        let tx = db.begin_write().map_err(backend)?;
        index_users_once(&tx)?;
        tx.commit().map_err(backend)?;
        let db = Arc::new(db);
        let commits = GroupCommit::start(db.clone(), commit_cpus.to_vec())?;
        Ok(EmbeddedStore {
            db,
            commits: Some(commits),
        })
    }

    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&db))
                .await
                .map_err(|e| StoreError::Join(e.to_string()))?
        })
    }

    /// A write of one session, committed with the batch it joins (durably:
    /// the future resolves after the fsync).
    fn queued(
        &self,
        write: impl FnOnce(&mut Tables<'_>) -> Result<bool, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, bool> {
        let (done, committed) = oneshot::channel();
        let pending = Pending {
            write: Box::new(write),
            done,
        };
        let queued = self.commits.as_ref().is_some_and(|g| g.queue.send(pending).is_ok());
        Box::pin(async move {
            if !queued {
                return Err(StoreError::Backend("the store's commit thread is gone".into()));
            }
            committed
                .await
                .map_err(|_| StoreError::Join("the store's commit thread stopped".into()))?
        })
    }

    /// Like [`EmbeddedStore::queued`], for writes with nothing to answer.
    fn queued_unit(
        &self,
        write: impl FnOnce(&mut Tables<'_>) -> Result<(), StoreError> + Send + 'static,
    ) -> StoreFuture<'_, ()> {
        let committed = self.queued(move |t| write(t).map(|()| true));
        Box::pin(async move { committed.await.map(|_| ()) })
    }

    /// A write transaction of its own on the blocking pool (batch mints,
    /// which write many records at once), durable when its future resolves.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tables<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            let out = {
                let mut tables = Tables::open(&tx)?;
                f(&mut tables)?
            };
            tx.commit().map_err(backend)?;
            Ok(out)
        })
    }

    fn scan<T: Send + 'static>(
        &self,
        mut f: impl FnMut(TokenHash, SessionRecord) -> Option<T> + Send + 'static,
    ) -> StoreFuture<'_, Vec<T>> {
        self.scan_into(Vec::new(), move |out, h, r| out.extend(f(h, r)))
    }

    /// Every record, decoded one at a time into `sink`, in one read
    /// transaction on the blocking pool; `acc` is what the sink keeps.
    fn scan_into<A: Send + 'static>(
        &self,
        mut acc: A,
        mut sink: impl FnMut(&mut A, TokenHash, SessionRecord) + Send + 'static,
    ) -> StoreFuture<'_, A> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let table = tx.open_table(SESSIONS).map_err(backend)?;
            let seen = tx.open_table(LAST_SEEN).map_err(backend)?;
            for item in table.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let (Some(h), Ok(r)) = (hash_of(k.value()), decode(v.value())) else {
                    continue;
                };
                sink(&mut acc, h, with_seen(r, seen_of(&seen, k.value())?));
            }
            Ok(acc)
        })
    }
}

impl SessionStore for EmbeddedStore {
    fn get(&self, hash: TokenHash) -> StoreFuture<'_, Option<SessionRecord>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let table = tx.open_table(SESSIONS).map_err(backend)?;
            let Some(v) = table.get(hash.0.as_slice()).map_err(backend)? else {
                return Ok(None);
            };
            let seen = tx.open_table(LAST_SEEN).map_err(backend)?;
            Ok(Some(with_seen(decode(v.value())?, seen_of(&seen, hash.0.as_slice())?)))
        })
    }

    fn put(&self, hash: TokenHash, record: SessionRecord) -> StoreFuture<'_, ()> {
        self.queued_unit(move |t| t.put(&hash, &record))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        // Readiness covers new sessions too: without its commit thread (a
        // panic in redb would end it) the store still reads, but every
        // visitor and login would get a 503.
        let committing = self
            .commits
            .as_ref()
            .and_then(|g| g.thread.as_ref())
            .is_some_and(|t| !t.is_finished());
        let probe = self.get(TokenHash([0; 32]));
        Box::pin(async move {
            if !committing {
                return Err(StoreError::Backend(
                    "the store's commit thread stopped: new sessions cannot be stored".into(),
                ));
            }
            probe.await.map(|_| ())
        })
    }

    fn put_many(&self, mut batch: Vec<(TokenHash, SessionRecord)>) -> StoreFuture<'_, ()> {
        // One transaction, one fsync, however many records. In key order the
        // inserts walk each B-tree forward instead of jumping at random (a
        // million-session mint: 41-52 s against 48-56 s, session 16).
        batch.sort_unstable_by_key(|(hash, _)| hash.0);
        self.write(move |t| {
            for (hash, record) in &batch {
                t.put(hash, record)?;
            }
            Ok(())
        })
    }

    fn replace(&self, hash: TokenHash, record: SessionRecord) -> StoreFuture<'_, bool> {
        // The caller's record carries the freshest `last_seen` it knows; a
        // larger written-behind one stays in its table and still counts.
        self.queued(move |t| {
            if t.sessions.get(hash.0.as_slice()).map_err(backend)?.is_none() {
                return Ok(false);
            }
            t.write(&hash, &record)?;
            Ok(true)
        })
    }

    fn set_servers(&self, hash: TokenHash, servers: Vec<ServerKey>) -> StoreFuture<'_, bool> {
        // Read and written in one transaction: a data update queued before
        // or after it keeps its data.
        self.queued(move |t| {
            let stored = t.sessions.get(hash.0.as_slice()).map_err(backend)?;
            let Some(mut record) = stored.map(|v| decode(v.value())).transpose()? else {
                return Ok(false);
            };
            record.servers = servers;
            t.write(&hash, &record)?;
            Ok(true)
        })
    }

    fn rotate(&self, old: TokenHash, new: TokenHash, record: SessionRecord) -> StoreFuture<'_, ()> {
        // One transaction: at no point are both tokens, or neither, valid.
        self.queued_unit(move |t| {
            t.remove(&old)?;
            t.put(&new, &record)
        })
    }

    fn rotate_ending(
        &self,
        old: TokenHash,
        new: TokenHash,
        record: SessionRecord,
        end: Vec<TokenHash>,
    ) -> StoreFuture<'_, Vec<Result<bool, StoreError>>> {
        // The rotation and the endings in one transaction: a login past the
        // limit costs one commit (and one wait on the commit thread), not two.
        let (tell, told) = oneshot::channel();
        let committed = self.queued_unit(move |t| {
            t.remove(&old)?;
            t.put(&new, &record)?;
            let ended = end.iter().map(|h| t.remove(h)).collect::<Result<Vec<bool>, _>>()?;
            // Read only once the batch has committed; dropped if it failed.
            let _ = tell.send(ended);
            Ok(())
        });
        Box::pin(async move {
            committed.await?;
            let ended = told
                .await
                .map_err(|_| StoreError::Join("the rotation's commit gave no answer".into()))?;
            Ok(ended.into_iter().map(Ok).collect())
        })
    }

    fn delete(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        self.queued(move |t| t.remove(&hash))
    }

    fn touch(&self, batch: Vec<(TokenHash, u64)>) -> StoreFuture<'_, ()> {
        // One insert per touch, into the small table only: no read of the
        // record's leaf to check it still exists. A touch for a session
        // deleted meanwhile leaves an entry no read ever sees (reads start
        // from the record, a new record clears it) until the sweeper drops it.
        //
        // In key order: a flush after a busy interval holds a large share of
        // the table's keys, and inserting them as the B-tree stores them
        // visits each page once, in order, instead of jumping between pages
        // at random. Then a transaction per TOUCH_CHUNK keys, one after the
        // other, so that other writes take turns with them: in one
        // transaction, a flush of 140,000 touches into a table of a million
        // (0.3-0.4 s) held every login and new session queued behind it for
        // 0.3 s; in chunks, such a write waited 1-2 ms (docs/benchmarks.md,
        // session 20).
        Box::pin(async move {
            let mut rest = super::in_key_order(batch).await?.into_iter();
            loop {
                let chunk: Vec<_> = rest.by_ref().take(TOUCH_CHUNK).collect();
                if chunk.is_empty() {
                    return Ok(());
                }
                self.queued_unit(move |t| t.write_seen(chunk)).await?;
            }
        })
    }

    fn list(&self, user: Option<String>) -> StoreFuture<'_, Vec<(TokenHash, SessionRecord)>> {
        match user {
            None => self.scan(|h, r| Some((h, r))),
            Some(user) => self.blocking(move |db| user_sessions(&db.begin_read().map_err(backend)?, &user)),
        }
    }

    fn newest(&self, user: Option<String>, limit: usize, now: u64) -> StoreFuture<'_, Newest> {
        match user {
            None => self.scan_into(Newest::new(limit, now), |newest, h, r| newest.offer(h, r)),
            Some(user) => super::newest_of(self.list(Some(user)), limit, now),
        }
    }

    fn user_sessions_over(&self, user: String, max: usize) -> StoreFuture<'_, Option<Vec<(TokenHash, SessionRecord)>>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            if user_count(&tx, &user)? <= max {
                return Ok(None);
            }
            user_sessions(&tx, &user).map(Some)
        })
    }

    fn count_user(&self, user: String) -> StoreFuture<'_, usize> {
        self.blocking(move |db| user_count(&db.begin_read().map_err(backend)?, &user))
    }

    fn find_id(&self, id: SessionId) -> StoreFuture<'_, Option<(TokenHash, SessionRecord)>> {
        let fut = self.scan(move |h, r| (r.id == id).then_some((h, r)));
        Box::pin(async move { Ok(fut.await?.into_iter().next()) })
    }

    fn sweep(&self, now: u64, idle_ms: u64) -> StoreFuture<'_, Vec<TokenHash>> {
        // The scan runs in a read transaction, which redb's writer does not
        // wait for; the deletions go through the commit queue a chunk at a
        // time. In one write transaction, a sweep of a million live sessions
        // held every login, logout and new visitor for 2.4 s.
        let candidates = self.blocking(move |db| sweep_candidates(db, now, idle_ms));
        Box::pin(async move {
            let (dead, orphans) = candidates.await?;
            let mut swept = Vec::with_capacity(dead.len());
            for chunk in dead.chunks(SWEEP_CHUNK) {
                swept.extend(self.delete_if_dead(chunk.to_vec(), now, idle_ms).await?);
            }
            for chunk in orphans.chunks(SWEEP_CHUNK) {
                self.drop_orphan_touches(chunk.to_vec()).await?;
            }
            Ok(swept)
        })
    }
}

/// `user`'s sessions, through the index. An entry whose record is gone or
/// names someone else (it cannot, while every write keeps the index) is
/// skipped, never believed.
fn user_sessions(tx: &redb::ReadTransaction, user: &str) -> Result<Vec<(TokenHash, SessionRecord)>, StoreError> {
    let users = tx.open_table(USERS).map_err(backend)?;
    let sessions = tx.open_table(SESSIONS).map_err(backend)?;
    let seen = tx.open_table(LAST_SEEN).map_err(backend)?;
    let mut out = Vec::new();
    // (0, the empty hash) sorts before every other: the range starts at the user.
    for entry in users.range((user, 0, [].as_slice())..).map_err(backend)? {
        let (key, _) = entry.map_err(backend)?;
        let (owner, _, hash) = key.value();
        if owner != user {
            break;
        }
        let (Some(h), Some(v)) = (hash_of(hash), sessions.get(hash).map_err(backend)?) else {
            continue;
        };
        let Ok(r) = decode(v.value()) else { continue };
        if matches_user(&r, Some(user)) {
            out.push((h, with_seen(r, seen_of(&seen, hash)?)));
        }
    }
    Ok(out)
}

/// How many entries the user index holds for `user`.
fn user_count(tx: &redb::ReadTransaction, user: &str) -> Result<usize, StoreError> {
    let counts = tx.open_table(USER_COUNTS).map_err(backend)?;
    let n = counts.get(user).map_err(backend)?.map_or(0, |v| v.value());
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Creates the tables, and indexes the logged-in sessions of a file written
/// before the user index existed (once: `META` records it).
fn index_users_once(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META).map_err(backend)?;
    let mut tables = Tables::open(tx)?;
    if meta.get(USER_INDEX).map_err(backend)?.is_some() {
        return Ok(());
    }
    let mut owners = Vec::new();
    for item in tables.sessions.iter().map_err(backend)? {
        let (k, v) = item.map_err(backend)?;
        if let (Some(h), Ok(r)) = (hash_of(k.value()), decode(v.value())) {
            owners.extend(r.identity.map(|i| (i.user, r.created_at, h)));
        }
    }
    for (user, created, hash) in &owners {
        tables.index(user, *created, hash)?;
    }
    let indexed = owners.len();
    meta.insert(USER_INDEX, 1).map_err(backend)?;
    if indexed > 0 {
        tracing::info!(sessions = indexed, "indexed the stored sessions by user");
    }
    Ok(())
}

/// Sessions deleted per write when sweeping: other writes wait for one
/// chunk at most, not for the whole sweep.
const SWEEP_CHUNK: usize = 1024;

/// The most touches one transaction writes (see `EmbeddedStore::touch`):
/// a few milliseconds of the commit thread's time each.
const TOUCH_CHUNK: usize = 4096;

/// What a sweep should delete, read without blocking writers: records that
/// are dead or unreadable, and touches whose session is gone.
fn sweep_candidates(db: &Database, now: u64, idle_ms: u64) -> Result<(Vec<TokenHash>, Vec<TokenHash>), StoreError> {
    let tx = db.begin_read().map_err(backend)?;
    let sessions = tx.open_table(SESSIONS).map_err(backend)?;
    let seen = tx.open_table(LAST_SEEN).map_err(backend)?;
    let mut dead = Vec::new();
    for item in sessions.iter().map_err(backend)? {
        let (k, v) = item.map_err(backend)?;
        if sweepable(v.value(), seen_of(&seen, k.value())?, now, idle_ms) {
            dead.extend(hash_of(k.value()));
        }
    }
    let mut orphans = Vec::new();
    for item in seen.iter().map_err(backend)? {
        let (k, _) = item.map_err(backend)?;
        if sessions.get(k.value()).map_err(backend)?.is_none() {
            orphans.extend(hash_of(k.value()));
        }
    }
    Ok((dead, orphans))
}

/// Whether a stored record is one the sweep deletes: dead (with its
/// written-behind `last_seen`), or unreadable.
fn sweepable(bytes: &[u8], touched: Option<u64>, now: u64, idle_ms: u64) -> bool {
    decode(bytes)
        .map(|r| is_dead(&with_seen(r, touched), now, idle_ms))
        .unwrap_or(true)
}

impl EmbeddedStore {
    /// Deletes those of `hashes` that are still dead or unreadable when the
    /// write runs (a request may have touched one since the scan, or a
    /// logout deleted it); returns the ones it deleted.
    fn delete_if_dead(&self, hashes: Vec<TokenHash>, now: u64, idle_ms: u64) -> StoreFuture<'_, Vec<TokenHash>> {
        // The write hands its list over as it runs; it counts once the
        // batch is committed.
        let (deleted, out) = oneshot::channel();
        let write = self.queued_unit(move |t| {
            let mut gone = Vec::new();
            for h in hashes {
                let touched = seen_of(&t.seen, h.0.as_slice())?;
                let still_dead = match t.sessions.get(h.0.as_slice()).map_err(backend)? {
                    None => continue,
                    Some(v) => sweepable(v.value(), touched, now, idle_ms),
                };
                if still_dead {
                    t.remove(&h)?;
                    gone.push(h);
                }
            }
            let _ = deleted.send(gone);
            Ok(())
        });
        Box::pin(async move {
            write.await?;
            Ok(out.await.unwrap_or_default())
        })
    }

    /// Drops the touches among `hashes` whose session is still gone.
    fn drop_orphan_touches(&self, hashes: Vec<TokenHash>) -> StoreFuture<'_, ()> {
        self.queued_unit(move |t| {
            for h in hashes {
                if t.sessions.get(h.0.as_slice()).map_err(backend)?.is_none() {
                    t.seen.remove(h.0.as_slice()).map_err(backend)?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    fn record(last_seen: u64) -> SessionRecord {
        SessionRecord::anonymous_at(last_seen, u64::MAX)
    }

    fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
        EmbeddedStore::open(&dir.path().join("s.redb"), 1 << 20, &[]).unwrap_or_else(|e| panic!("open: {e}"))
    }

    /// Rows in the `last_seen` table.
    fn seen_rows(store: &EmbeddedStore) -> u64 {
        let tx = store.db.begin_read().unwrap_or_else(|e| panic!("{e}"));
        let table = tx.open_table(LAST_SEEN).unwrap_or_else(|e| panic!("{e}"));
        table.len().unwrap_or_else(|e| panic!("{e}"))
    }

    async fn seen(store: &EmbeddedStore, h: TokenHash) -> Option<u64> {
        store.get(h).await.ok().flatten().map(|r| r.last_seen)
    }

    #[tokio::test]
    async fn touches_live_in_their_own_table_and_count_everywhere() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = open(&dir);
        let (a, b, gone) = (TokenHash([1; 32]), TokenHash([2; 32]), TokenHash([3; 32]));
        let batch = vec![(a, record(1_000)), (b, record(1_000))];
        store.put_many(batch).await.unwrap_or_else(|e| panic!("{e}"));

        // A touch moves last_seen forward only, and skips sessions that are gone.
        let touches = vec![(a, 5_000), (gone, 5_000)];
        store.touch(touches).await.unwrap_or_else(|e| panic!("{e}"));
        store.touch(vec![(a, 4_000)]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen(&store, a).await, Some(5_000));
        assert_eq!(seen(&store, b).await, Some(1_000));
        assert_eq!(seen(&store, gone).await, None);
        assert_eq!(
            seen_rows(&store),
            2,
            "the touch of a missing session is kept until a sweep"
        );
        let listed = store.list(None).await.unwrap_or_else(|e| panic!("{e}"));
        let listed_a = listed.iter().find(|(h, _)| *h == a).map(|(_, r)| r.last_seen);
        assert_eq!(listed_a, Some(5_000));

        // The sweeper judges idleness by the touched value: at 5_500 with 1_000 ms idle,
        // b (seen at 1_000) is dead and a (touched at 5_000) is not.
        let dead = store.sweep(5_500, 1_000).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dead, vec![b]);
        assert_eq!(seen_rows(&store), 1, "the sweep dropped the orphaned touch");
        assert_eq!(seen(&store, a).await, Some(5_000));

        // A record put again under the same key does not inherit the old touch, and a
        // deleted one takes its touch along.
        store.put(a, record(2_000)).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen(&store, a).await, Some(2_000));
        store.touch(vec![(a, 9_000)]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.delete(a).await.ok(), Some(true));
        store.put(a, record(3_000)).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen(&store, a).await, Some(3_000));
    }

    #[tokio::test]
    async fn a_flush_of_several_chunks_writes_every_touch() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = open(&dir);
        let n = 2 * TOUCH_CHUNK + 7;
        let hash = |i: usize| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_be_bytes());
            // Scattered, so that sorting has work to do.
            h.reverse();
            TokenHash(h)
        };
        let later = hash(n / 2);
        store
            .touch(vec![(later, 99_000)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let touches: Vec<_> = (0..n).map(|i| (hash(i), 10_000 + i as u64)).collect();
        store.touch(touches).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen_rows(&store), n as u64, "every touch, the last partial chunk's too");
        let tx = store.db.begin_read().unwrap_or_else(|e| panic!("{e}"));
        let table = tx.open_table(LAST_SEEN).unwrap_or_else(|e| panic!("{e}"));
        let value = |h: TokenHash| table.get(h.0.as_slice()).ok().flatten().map(|v| v.value());
        assert_eq!(value(hash(0)), Some(10_000));
        assert_eq!(value(hash(n - 1)), Some(10_000 + n as u64 - 1));
        assert_eq!(value(later), Some(99_000), "a later value already stored is kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creations_are_all_committed_and_durable() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hashes: Vec<TokenHash> = (0..200u8).map(|i| TokenHash([i; 32])).collect();
        {
            let store = Arc::new(open(&dir));
            let puts = hashes.iter().map(|&h| {
                let store = store.clone();
                tokio::spawn(async move { store.put(h, record(u64::from(h.0[0]))).await })
            });
            for put in futures_util::future::join_all(puts).await {
                put.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
            }
            // Readable once the put has answered.
            assert_eq!(seen(&store, hashes[7]).await, Some(7));
        }
        // Dropping the store stops its commit thread and closes the file.
        let reopened = open(&dir);
        for h in hashes {
            assert_eq!(seen(&reopened, h).await, Some(u64::from(h.0[0])));
        }
    }

    #[tokio::test]
    async fn without_its_commit_thread_the_store_is_not_ready_and_refuses_new_sessions() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut store = open(&dir);
        store.ping().await.unwrap_or_else(|e| panic!("ready at first: {e}"));
        // End the thread as a panic in it would, leaving the store in place:
        // closing its queue lets it return.
        let Some(group) = store.commits.as_mut() else {
            unreachable!("a store starts its thread")
        };
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut group.queue, closed));
        for _ in 0..5_000 {
            if group.thread.as_ref().is_some_and(|t| t.is_finished()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let err = store.ping().await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("commit thread"), "{err}");
        assert!(store.put(TokenHash([1; 32]), record(1)).await.is_err());
    }

    #[tokio::test]
    async fn queued_writes_apply_in_order_and_answer_each_their_own() {
        // Queued at the call, before any is awaited, so they can share a batch.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = open(&dir);
        let (a, b) = (TokenHash([1; 32]), TokenHash([2; 32]));
        let created = store.put(a, record(1));
        let replaced = store.replace(a, record(2));
        let deleted = store.delete(a);
        let replaced_after_delete = store.replace(a, record(3));
        let deleted_missing = store.delete(b);
        let rotated = store.rotate(a, b, record(4));
        created.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(replaced.await.unwrap_or_else(|e| panic!("{e}")));
        assert!(deleted.await.unwrap_or_else(|e| panic!("{e}")));
        assert!(
            !replaced_after_delete.await.unwrap_or_else(|e| panic!("{e}")),
            "a logout is not undone"
        );
        assert!(!deleted_missing.await.unwrap_or_else(|e| panic!("{e}")));
        rotated.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(store.get(a).await.unwrap_or_else(|e| panic!("{e}")).is_none());
        assert_eq!(seen(&store, b).await, Some(4));
    }

    #[tokio::test]
    async fn a_sweep_spares_a_session_touched_after_its_scan() {
        // The scan reads without blocking writers, so a request can touch a
        // candidate before the deletions run; they check again.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = open(&dir);
        let (a, b) = (TokenHash([1; 32]), TokenHash([2; 32]));
        store.put(a, record(1_000)).await.unwrap_or_else(|e| panic!("{e}"));
        store.put(b, record(1_000)).await.unwrap_or_else(|e| panic!("{e}"));
        let (dead, orphans) = sweep_candidates(&store.db, 5_500, 1_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((dead.len(), orphans.len()), (2, 0));
        store.touch(vec![(a, 5_000)]).await.unwrap_or_else(|e| panic!("{e}"));
        let swept = store
            .delete_if_dead(dead, 5_500, 1_000)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(swept, vec![b]);
        assert!(store.get(a).await.unwrap_or_else(|e| panic!("{e}")).is_some());
        assert!(store.get(b).await.unwrap_or_else(|e| panic!("{e}")).is_none());
    }

    fn of(user: &str, last_seen: u64) -> SessionRecord {
        let mut r = record(last_seen);
        r.identity = Some(crate::session::record::Identity {
            user: user.into(),
            email: None,
            groups: Vec::new(),
        });
        r
    }

    async fn users(store: &EmbeddedStore, user: &str) -> (usize, Vec<TokenHash>) {
        let n = store.count_user(user.into()).await.unwrap_or_else(|e| panic!("{e}"));
        let listed = store.list(Some(user.into())).await.unwrap_or_else(|e| panic!("{e}"));
        let mut hashes: Vec<TokenHash> = listed.into_iter().map(|(h, _)| h).collect();
        hashes.sort_by_key(|h| h.0);
        (n, hashes)
    }

    #[tokio::test]
    async fn the_user_index_follows_every_write() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = open(&dir);
        let h = |n: u8| TokenHash([n; 32]);
        let batch = vec![
            (h(1), of("alice", 1_000)),
            (h(2), of("alice", 1_000)),
            (h(3), of("bob", 1_000)),
        ];
        store.put_many(batch).await.unwrap_or_else(|e| panic!("{e}"));
        store.put(h(4), record(1_000)).await.unwrap_or_else(|e| panic!("{e}"));
        // Names that share a prefix with alice's sort next to hers: neither is hers.
        let neighbours = vec![(h(8), of("alic", 10_000)), (h(9), of("alicea", 10_000))];
        store.put_many(neighbours).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(users(&store, "alice").await, (2, vec![h(1), h(2)]));
        assert_eq!(users(&store, "alic").await, (1, vec![h(8)]));
        assert_eq!(users(&store, "bob").await, (1, vec![h(3)]));

        // A login's rotation moves the entry to the new token, or to another user.
        let rotations = [(h(1), h(5), of("alice", 1_000)), (h(3), h(6), of("alice", 10_000))];
        for (old, new, r) in rotations {
            store.rotate(old, new, r).await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(users(&store, "alice").await, (3, vec![h(2), h(5), h(6)]));
        assert_eq!(users(&store, "bob").await, (0, vec![]));
        // An anonymous session logging in joins the index.
        store
            .rotate(h(4), h(7), of("bob", 1_000))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(users(&store, "bob").await, (1, vec![h(7)]));

        // Replacing and deleting keep it in step; so does the sweep (at 5_500 with 1_000 ms
        // idle, all but h(6) are dead).
        let replaced = store
            .replace(h(2), of("bob", 1_000))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(replaced);
        assert_eq!(store.delete(h(5)).await.ok(), Some(true));
        assert_eq!(users(&store, "alice").await, (1, vec![h(6)]));
        assert_eq!(users(&store, "bob").await, (2, vec![h(2), h(7)]));
        let mut swept = store.sweep(5_500, 1_000).await.unwrap_or_else(|e| panic!("{e}"));
        swept.sort_by_key(|h| h.0);
        assert_eq!(swept, vec![h(2), h(7)]);
        assert_eq!(users(&store, "bob").await, (0, vec![]));
        drop(store);
        assert_eq!(users(&open(&dir), "alice").await, (1, vec![h(6)]));
    }

    #[tokio::test]
    async fn a_login_past_the_limit_lists_once_and_ends_sessions_in_its_rotation() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = open(&dir);
        let h = |n: u8| TokenHash([n; 32]);
        let batch = vec![
            (h(1), of("alice", 1_000)),
            (h(2), of("alice", 2_000)),
            (h(3), of("alice", 3_000)),
            (h(4), record(4_000)),
        ];
        store.put_many(batch).await.unwrap_or_else(|e| panic!("{e}"));
        let over = |max| store.user_sessions_over("alice".into(), max);
        assert!(over(3).await.unwrap_or_else(|e| panic!("{e}")).is_none());
        let listed = over(2).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_default();
        let mut hashes: Vec<TokenHash> = listed.into_iter().map(|(h, _)| h).collect();
        hashes.sort_by_key(|h| h.0);
        assert_eq!(hashes, vec![h(1), h(2), h(3)]);

        // The anonymous h(4) logs in as alice and ends h(1) (and h(9),
        // already gone) in the same commit.
        let ended = store
            .rotate_ending(h(4), h(5), of("alice", 5_000), vec![h(1), h(9)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ended: Vec<Option<bool>> = ended.into_iter().map(Result::ok).collect();
        assert_eq!(ended, vec![Some(true), Some(false)]);
        assert!(store.get(h(4)).await.unwrap_or_else(|e| panic!("{e}")).is_none());
        assert_eq!(users(&store, "alice").await, (3, vec![h(2), h(3), h(5)]));
        drop(store);
        assert_eq!(users(&open(&dir), "alice").await, (3, vec![h(2), h(3), h(5)]));
    }

    #[tokio::test]
    async fn a_file_written_before_the_user_index_is_indexed_when_opened() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s.redb");
        let (alice, anonymous) = (TokenHash([1; 32]), TokenHash([2; 32]));
        {
            // The layout before the index: the two tables and nothing else.
            let db = Database::create(&path).unwrap_or_else(|e| panic!("{e}"));
            let tx = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
            {
                let mut sessions = tx.open_table(SESSIONS).unwrap_or_else(|e| panic!("{e}"));
                for (h, r) in [(alice, of("alice", 1)), (anonymous, record(1))] {
                    let bytes = encode(&r).unwrap_or_else(|e| panic!("{e}"));
                    sessions
                        .insert(h.0.as_slice(), bytes.as_slice())
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                tx.open_table(LAST_SEEN).unwrap_or_else(|e| panic!("{e}"));
            }
            tx.commit().unwrap_or_else(|e| panic!("{e}"));
        }
        let store = open(&dir);
        assert_eq!(users(&store, "alice").await, (1, vec![alice]));
        // And it stays in step from then on.
        store.delete(alice).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(users(&store, "alice").await, (0, vec![]));
    }

    #[tokio::test]
    async fn touches_survive_reopening() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = TokenHash([1; 32]);
        {
            let store = open(&dir);
            store.put(a, record(1_000)).await.unwrap_or_else(|e| panic!("{e}"));
            store.touch(vec![(a, 7_000)]).await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(seen(&open(&dir), a).await, Some(7_000));
    }

    /// Pins are set alone: the data and the written-behind `last_seen` stay,
    /// a missing session is not brought back, and they survive reopening.
    #[tokio::test]
    async fn pins_change_nothing_else_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, gone) = (TokenHash([1; 32]), TokenHash([2; 32]));
        let pins = vec![ServerKey(1), ServerKey(u64::MAX)];
        {
            let store = open(&dir);
            let mut r = record(1_000);
            r.data = "cart=3".into();
            store.put(a, r).await.unwrap_or_else(|e| panic!("{e}"));
            store.touch(vec![(a, 7_000)]).await.unwrap_or_else(|e| panic!("{e}"));
            let set = store.set_servers(a, pins.clone()).await;
            assert!(set.unwrap_or_else(|e| panic!("{e}")));
            let missing = store.set_servers(gone, pins.clone()).await;
            assert!(!missing.unwrap_or_else(|e| panic!("{e}")));
            assert!(store.get(gone).await.ok().flatten().is_none());
        }
        let store = open(&dir);
        let r = store.get(a).await.ok().flatten();
        let r = r.unwrap_or_else(|| panic!("the session is gone"));
        assert_eq!((r.servers, r.data.as_str(), r.last_seen), (pins, "cart=3", 7_000));
    }
}
