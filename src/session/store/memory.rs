//! An in-process store: sessions end with the process. For tests and for
//! deployments that accept a logout-everyone restart.

use super::{is_dead, matches_user, SessionStore, StoreFuture};
use crate::session::record::{ServerKey, SessionRecord};
use crate::session::token::{SessionId, TokenHash};
use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Default)]
pub struct MemoryStore {
    map: RwLock<HashMap<TokenHash, SessionRecord>>,
}

impl MemoryStore {
    fn read<T>(&self, f: impl FnOnce(&HashMap<TokenHash, SessionRecord>) -> T) -> T {
        let guard = self.map.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    fn write<T>(&self, f: impl FnOnce(&mut HashMap<TokenHash, SessionRecord>) -> T) -> T {
        let mut guard = self.map.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl SessionStore for MemoryStore {
    fn get(&self, hash: TokenHash) -> StoreFuture<'_, Option<SessionRecord>> {
        let r = self.read(|m| m.get(&hash).cloned());
        Box::pin(async move { Ok(r) })
    }

    fn put(&self, hash: TokenHash, record: SessionRecord) -> StoreFuture<'_, ()> {
        self.write(|m| m.insert(hash, record));
        Box::pin(async { Ok(()) })
    }

    fn put_many(&self, batch: Vec<(TokenHash, SessionRecord)>) -> StoreFuture<'_, ()> {
        self.write(|m| m.extend(batch));
        Box::pin(async { Ok(()) })
    }

    fn replace(&self, hash: TokenHash, record: SessionRecord) -> StoreFuture<'_, bool> {
        let replaced = self.write(|m| match m.get_mut(&hash) {
            Some(r) => {
                *r = record;
                true
            }
            None => false,
        });
        Box::pin(async move { Ok(replaced) })
    }

    fn set_servers(&self, hash: TokenHash, servers: Vec<ServerKey>) -> StoreFuture<'_, bool> {
        let set = self.write(|m| m.get_mut(&hash).map(|r| r.servers = servers).is_some());
        Box::pin(async move { Ok(set) })
    }

    fn rotate(&self, old: TokenHash, new: TokenHash, record: SessionRecord) -> StoreFuture<'_, ()> {
        self.write(|m| {
            m.remove(&old);
            m.insert(new, record);
        });
        Box::pin(async { Ok(()) })
    }

    fn delete(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        let existed = self.write(|m| m.remove(&hash).is_some());
        Box::pin(async move { Ok(existed) })
    }

    fn touch(&self, batch: Vec<(TokenHash, u64)>) -> StoreFuture<'_, ()> {
        self.write(|m| {
            for (h, seen) in batch {
                if let Some(r) = m.get_mut(&h) {
                    r.last_seen = r.last_seen.max(seen);
                }
            }
        });
        Box::pin(async { Ok(()) })
    }

    fn list(&self, user: Option<String>) -> StoreFuture<'_, Vec<(TokenHash, SessionRecord)>> {
        let v = self.read(|m| {
            m.iter()
                .filter(|(_, r)| matches_user(r, user.as_deref()))
                .map(|(h, r)| (*h, r.clone()))
                .collect()
        });
        Box::pin(async move { Ok(v) })
    }

    fn find_id(&self, id: SessionId) -> StoreFuture<'_, Option<(TokenHash, SessionRecord)>> {
        let v = self.read(|m| m.iter().find(|(_, r)| r.id == id).map(|(h, r)| (*h, r.clone())));
        Box::pin(async move { Ok(v) })
    }

    fn sweep(&self, now: u64, idle_ms: u64) -> StoreFuture<'_, Vec<TokenHash>> {
        let dead = self.write(|m| {
            let dead: Vec<TokenHash> = m
                .iter()
                .filter(|(_, r)| is_dead(r, now, idle_ms))
                .map(|(h, _)| *h)
                .collect();
            for h in &dead {
                m.remove(h);
            }
            dead
        });
        Box::pin(async move { Ok(dead) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::record::{ClientBinding, Fingerprint, Identity};

    fn of(user: &str) -> SessionRecord {
        SessionRecord {
            id: SessionId([7; 16]),
            identity: Some(Identity {
                user: user.into(),
                email: None,
                groups: Vec::new(),
            }),
            binding: ClientBinding {
                ip: None,
                fingerprint: Fingerprint([0; 32]),
            },
            created_at: 1,
            authenticated_at: 1,
            last_seen: 1,
            expires_at: u64::MAX,
            data: String::new(),
            csrf: "c".into(),
            login_entry: None,
            provider_login: false,
            servers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_default_rotation_with_endings_rotates_then_deletes_each() {
        let store = MemoryStore::default();
        let h = |n: u8| TokenHash([n; 32]);
        for n in 1..=3 {
            store.put(h(n), of("alice")).await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(store
            .user_sessions_over("alice".into(), 3)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        let listed = store
            .user_sessions_over("alice".into(), 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed.map(|l| l.len()), Some(3));
        let ended = store
            .rotate_ending(h(3), h(4), of("alice"), vec![h(1), h(9)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ended: Vec<Option<bool>> = ended.into_iter().map(Result::ok).collect();
        assert_eq!(ended, vec![Some(true), Some(false)]);
        let mut left: Vec<TokenHash> = store
            .list(Some("alice".into()))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        left.sort_by_key(|h| h.0);
        assert_eq!(left, vec![h(2), h(4)]);
    }
}
