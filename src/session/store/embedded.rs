//! The default store: a redb file. Every write transaction is committed with
//! redb's default durability (fsync) before its future resolves, so
//! creation, rotation and deletion survive SIGKILL. redb is synchronous: all
//! work runs on tokio's blocking pool.

use super::{is_dead, matches_user, SessionStore, StoreError, StoreFuture};
use crate::session::record::SessionRecord;
use crate::session::token::{SessionId, TokenHash};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");

pub struct EmbeddedStore {
    db: Arc<Database>,
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
    pub fn open(path: &Path, page_cache_bytes: usize) -> Result<EmbeddedStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(backend)?;
        }
        let db = redb::Builder::new()
            .set_cache_size(page_cache_bytes)
            .create(path)
            .map_err(backend)?;
        let tx = db.begin_write().map_err(backend)?;
        tx.open_table(SESSIONS).map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
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

    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(backend)?;
            let out = {
                let mut table = tx.open_table(SESSIONS).map_err(backend)?;
                f(&mut table)?
            };
            tx.commit().map_err(backend)?;
            Ok(out)
        })
    }

    fn scan<T: Send + 'static>(
        &self,
        mut f: impl FnMut(TokenHash, SessionRecord) -> Option<T> + Send + 'static,
    ) -> StoreFuture<'_, Vec<T>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let table = tx.open_table(SESSIONS).map_err(backend)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let (Some(h), Ok(r)) = (hash_of(k.value()), decode(v.value())) else {
                    continue;
                };
                if let Some(x) = f(h, r) {
                    out.push(x);
                }
            }
            Ok(out)
        })
    }
}

impl SessionStore for EmbeddedStore {
    fn get(&self, hash: TokenHash) -> StoreFuture<'_, Option<SessionRecord>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(backend)?;
            let table = tx.open_table(SESSIONS).map_err(backend)?;
            match table.get(hash.0.as_slice()).map_err(backend)? {
                Some(v) => decode(v.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    fn put(&self, hash: TokenHash, record: SessionRecord) -> StoreFuture<'_, ()> {
        self.write(move |t| {
            t.insert(hash.0.as_slice(), encode(&record)?.as_slice())
                .map_err(backend)?;
            Ok(())
        })
    }

    fn put_many(&self, batch: Vec<(TokenHash, SessionRecord)>) -> StoreFuture<'_, ()> {
        // One transaction, one fsync, however many records.
        self.write(move |t| {
            for (hash, record) in &batch {
                t.insert(hash.0.as_slice(), encode(record)?.as_slice())
                    .map_err(backend)?;
            }
            Ok(())
        })
    }

    fn replace(&self, hash: TokenHash, record: SessionRecord) -> StoreFuture<'_, bool> {
        self.write(move |t| {
            if t.get(hash.0.as_slice()).map_err(backend)?.is_none() {
                return Ok(false);
            }
            t.insert(hash.0.as_slice(), encode(&record)?.as_slice())
                .map_err(backend)?;
            Ok(true)
        })
    }

    fn rotate(&self, old: TokenHash, new: TokenHash, record: SessionRecord) -> StoreFuture<'_, ()> {
        // One transaction: at no point are both tokens, or neither, valid.
        self.write(move |t| {
            t.remove(old.0.as_slice()).map_err(backend)?;
            t.insert(new.0.as_slice(), encode(&record)?.as_slice())
                .map_err(backend)?;
            Ok(())
        })
    }

    fn delete(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        self.write(move |t| Ok(t.remove(hash.0.as_slice()).map_err(backend)?.is_some()))
    }

    fn touch(&self, batch: Vec<(TokenHash, u64)>) -> StoreFuture<'_, ()> {
        self.write(move |t| {
            for (h, seen) in batch {
                let current = match t.get(h.0.as_slice()).map_err(backend)? {
                    Some(v) => decode(v.value())?,
                    None => continue,
                };
                if seen > current.last_seen {
                    let mut r = current;
                    r.last_seen = seen;
                    t.insert(h.0.as_slice(), encode(&r)?.as_slice()).map_err(backend)?;
                }
            }
            Ok(())
        })
    }

    fn list(&self, user: Option<String>) -> StoreFuture<'_, Vec<(TokenHash, SessionRecord)>> {
        self.scan(move |h, r| matches_user(&r, user.as_deref()).then_some((h, r)))
    }

    fn find_id(&self, id: SessionId) -> StoreFuture<'_, Option<(TokenHash, SessionRecord)>> {
        let fut = self.scan(move |h, r| (r.id == id).then_some((h, r)));
        Box::pin(async move { Ok(fut.await?.into_iter().next()) })
    }

    fn sweep(&self, now: u64, idle_ms: u64) -> StoreFuture<'_, Vec<TokenHash>> {
        self.write(move |t| {
            let mut dead = Vec::new();
            for item in t.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let corrupt_or_dead = decode(v.value()).map(|r| is_dead(&r, now, idle_ms)).unwrap_or(true);
                if corrupt_or_dead {
                    if let Some(h) = hash_of(k.value()) {
                        dead.push(h);
                    }
                }
            }
            for h in &dead {
                t.remove(h.0.as_slice()).map_err(backend)?;
            }
            Ok(dead)
        })
    }
}
