//! The shared store: sessions in Redis, so several gateway instances behind
//! one load balancer serve the same sessions.
//!
//! Layout (every operation on a session touches one hash slot):
//! - `<prefix>s:{TT}:<hash>`: a hash with fields `r` (the record as JSON) and
//!   `s` (`last_seen`, ms). `TT` is the first byte of the token hash in hex:
//!   a hash tag. Rotation picks the new token so that its hash shares that
//!   byte (see `SessionToken::generate_with_tag`), so DEL old + HSET new run
//!   in one MULTI/EXEC even on a cluster: at no moment are both tokens valid,
//!   or neither. The key expires at the record's absolute expiry (hygiene;
//!   idle and absolute limits are still enforced from the timestamps).
//! - `<prefix>id:<session id>` → token hash (admin revocation by id).
//! - `<prefix>user:<name>` → set of token hashes (list or revoke a user's
//!   sessions across instances). Advisory: stale members are pruned on read.
//! - channel `<prefix>invalidate`: every rotation, deletion and data change
//!   is published as `<instance>:gone|changed:<hash>`; every other instance evicts the
//!   entry from its cache (see [`super::CacheEvent`]).

use super::{matches_user, CacheEvent, Newest, SessionStore, StoreError, StoreFuture};
use crate::config::RedisConfig;
use crate::session::record::{ServerKey, SessionRecord};
use crate::session::token::{hex, SessionId, TokenHash};
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Script, Value};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// One connection handle for either deployment; both multiplex and
/// reconnect by themselves.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

pub struct RedisStore {
    conn: Conn,
    prefix: String,
    channel: String,
    /// Distinguishes our own invalidations from other instances'.
    instance: String,
    events: Mutex<Option<mpsc::UnboundedReceiver<CacheEvent>>>,
    replace_script: Script,
    touch_script: Script,
    servers_script: Script,
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn connection_info(url: &str, password: Option<&str>) -> Result<redis::ConnectionInfo, StoreError> {
    let info = url.into_connection_info().map_err(backend)?;
    Ok(match password {
        Some(p) => {
            let settings = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(settings)
        }
        None => info,
    })
}

/// Commands per pipeline (or members per SADD) when writing a batch's
/// indexes: large enough to amortise round trips, small enough to keep each
/// request and reply a few hundred KiB.
const INDEX_PIPELINE: usize = 5_000;

const REPLACE: &str =
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'r', ARGV[1]) return 1 end return 0";
const TOUCH: &str = "if redis.call('EXISTS', KEYS[1]) == 1 then \
    local cur = tonumber(redis.call('HGET', KEYS[1], 's') or '0') \
    if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 's', ARGV[1]) end end return 0";

/// Pins live in a field of their own, `p`, so that setting them never
/// rewrites the record (`r`) that another instance may be replacing.
const SET_SERVERS: &str =
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'p', ARGV[1]) return 1 end return 0";

/// The most touches one pipeline carries (see `RedisStore::touch`).
const TOUCH_PIPELINE: usize = 1000;

impl RedisStore {
    /// Connects (failing fast if Redis cannot be reached at start) and
    /// starts the invalidation subscriber.
    pub async fn open(config: &RedisConfig) -> Result<RedisStore, StoreError> {
        let password = config.password.as_deref();
        let conn = if config.cluster {
            let nodes = config
                .urls
                .iter()
                .map(|u| connection_info(u, password))
                .collect::<Result<Vec<_>, _>>()?;
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .build()
                .map_err(backend)?;
            Conn::Cluster(client.get_async_connection().await.map_err(backend)?)
        } else {
            let client = redis::Client::open(connection_info(&config.urls[0], password)?).map_err(backend)?;
            let cm = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            Conn::Single(client.get_connection_manager_with_config(cm).await.map_err(backend)?)
        };
        let instance =
            hex(&crate::session::token::random_bytes::<8>().map_err(|e| StoreError::Backend(e.to_string()))?);
        let channel = format!("{}invalidate", config.key_prefix);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(subscriber(config.clone(), channel.clone(), instance.clone(), tx));
        Ok(RedisStore {
            conn,
            prefix: config.key_prefix.clone(),
            channel,
            instance,
            events: Mutex::new(Some(rx)),
            replace_script: Script::new(REPLACE),
            touch_script: Script::new(TOUCH),
            servers_script: Script::new(SET_SERVERS),
        })
    }

    fn key(&self, hash: &TokenHash) -> String {
        let h = hex(&hash.0);
        format!("{}s:{{{}}}:{h}", self.prefix, &h[..2])
    }

    fn id_key(&self, id: &SessionId) -> String {
        format!("{}id:{id}", self.prefix)
    }

    fn user_key(&self, user: &str) -> String {
        format!("{}user:{user}", self.prefix)
    }

    /// `gone`: the token is dead (deleted, rotated away) rather than changed.
    async fn publish(&self, hash: &TokenHash, gone: bool) {
        let kind = if gone { "gone" } else { "changed" };
        let msg = format!("{}:{kind}:{}", self.instance, hex(&hash.0));
        let mut c = self.conn.clone();
        if let Err(e) = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(msg)
            .query_async::<i64>(&mut c)
            .await
        {
            // The write itself succeeded; other instances fall back on
            // their cache TTL and on the read-through after a lost
            // subscription. Loud, because it widens the staleness bound.
            tracing::warn!(error = %e, "could not publish a session invalidation");
        }
    }

    async fn read(&self, hash: TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        let mut c = self.conn.clone();
        let (r, s, p): (Option<String>, Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(self.key(&hash))
            .arg("r")
            .arg("s")
            .arg("p")
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        let Some(r) = r else { return Ok(None) };
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
        let mut rec: SessionRecord = serde_json::from_str(&r).map_err(corrupt)?;
        rec.last_seen = rec.last_seen.max(s.unwrap_or(0));
        if let Some(p) = p {
            rec.servers = serde_json::from_str(&p).map_err(corrupt)?;
        }
        Ok(Some(rec))
    }

    /// Runs `script` (which sets one field of an existing session to its
    /// argument, `json`) and tells the other instances when it did.
    async fn set_field(
        &self,
        script: &Script,
        hash: TokenHash,
        json: serde_json::Result<String>,
    ) -> Result<bool, StoreError> {
        let json = json.map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut c = self.conn.clone();
        let set: i64 = script
            .key(self.key(&hash))
            .arg(json)
            .invoke_async(&mut c)
            .await
            .map_err(backend)?;
        if set == 1 {
            self.publish(&hash, false).await;
        }
        Ok(set == 1)
    }

    /// Adds the record's key-value pairs to a pipeline: the hash, its expiry
    /// and the indexes.
    fn write_into(&self, pipe: &mut Pipeline, hash: &TokenHash, record: &SessionRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let key = self.key(hash);
        pipe.cmd("HSET")
            .arg(&key)
            .arg("r")
            .arg(json)
            .arg("s")
            .arg(record.last_seen)
            .ignore();
        pipe.cmd("PEXPIREAT").arg(&key).arg(record.expires_at).ignore();
        Ok(())
    }

    /// Index updates live on other slots, so they run after the atomic part.
    async fn index(&self, hash: &TokenHash, record: &SessionRecord, old: Option<&TokenHash>) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let h = hex(&hash.0);
        let ttl_ms = record
            .expires_at
            .saturating_sub(crate::session::record::now_ms())
            .max(1);
        redis::cmd("SET")
            .arg(self.id_key(&record.id))
            .arg(&h)
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut c)
            .await
            .map_err(backend)?;
        if let Some(identity) = &record.identity {
            let ukey = self.user_key(&identity.user);
            if let Some(old) = old {
                redis::cmd("SREM")
                    .arg(&ukey)
                    .arg(hex(&old.0))
                    .query_async::<i64>(&mut c)
                    .await
                    .map_err(backend)?;
            }
            redis::cmd("SADD")
                .arg(&ukey)
                .arg(&h)
                .query_async::<i64>(&mut c)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Batch write: the session hashes grouped by hash tag, each group one
    /// MULTI/EXEC (one slot, so it also works on a cluster), then the
    /// indexes. A batch shares one identity, so the user index is one SADD.
    async fn put_many_inner(&self, batch: Vec<(TokenHash, SessionRecord)>) -> Result<(), StoreError> {
        let mut by_tag: Vec<Vec<&(TokenHash, SessionRecord)>> = vec![Vec::new(); 256];
        for item in &batch {
            by_tag[usize::from(item.0 .0[0])].push(item);
        }
        let mut c = self.conn.clone();
        for group in by_tag.iter().filter(|g| !g.is_empty()) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (hash, record) in group {
                self.write_into(&mut pipe, hash, record)?;
            }
            pipe.query_async::<()>(&mut c).await.map_err(backend)?;
        }
        self.index_many(&batch).await
    }

    /// The id keys of a batch, pipelined on a single node; on a cluster each
    /// id key lives on its own slot and a pipeline may not cross slots, so
    /// they go one by one there.
    async fn index_many(&self, batch: &[(TokenHash, SessionRecord)]) -> Result<(), StoreError> {
        let chunk = match self.conn {
            Conn::Single(_) => INDEX_PIPELINE,
            Conn::Cluster(_) => 1,
        };
        let now = crate::session::record::now_ms();
        let mut c = self.conn.clone();
        for part in batch.chunks(chunk) {
            let mut pipe = redis::pipe();
            for (hash, record) in part {
                let ttl_ms = record.expires_at.saturating_sub(now).max(1);
                pipe.cmd("SET")
                    .arg(self.id_key(&record.id))
                    .arg(hex(&hash.0))
                    .arg("PX")
                    .arg(ttl_ms)
                    .ignore();
            }
            pipe.query_async::<()>(&mut c).await.map_err(backend)?;
        }
        let mut users: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
        for (hash, record) in batch {
            if let Some(identity) = &record.identity {
                users.entry(identity.user.as_str()).or_default().push(hex(&hash.0));
            }
        }
        for (user, hashes) in users {
            for part in hashes.chunks(INDEX_PIPELINE) {
                redis::cmd("SADD")
                    .arg(self.user_key(user))
                    .arg(part)
                    .query_async::<i64>(&mut c)
                    .await
                    .map_err(backend)?;
            }
        }
        Ok(())
    }

    async fn delete_inner(&self, hash: TokenHash) -> Result<bool, StoreError> {
        let record = self.read(hash).await?;
        let mut c = self.conn.clone();
        let removed: i64 = redis::cmd("DEL")
            .arg(self.key(&hash))
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        self.publish(&hash, true).await;
        if let Some(r) = record {
            let _: Result<i64, _> = redis::cmd("DEL").arg(self.id_key(&r.id)).query_async(&mut c).await;
            if let Some(i) = &r.identity {
                let _: Result<i64, _> = redis::cmd("SREM")
                    .arg(self.user_key(&i.user))
                    .arg(hex(&hash.0))
                    .query_async(&mut c)
                    .await;
            }
        }
        Ok(removed > 0)
    }

    async fn list_inner(&self, user: Option<String>) -> Result<Vec<(TokenHash, SessionRecord)>, StoreError> {
        let Some(user) = user else {
            return self.scan_all().await;
        };
        let mut c = self.conn.clone();
        let ukey = self.user_key(&user);
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&ukey)
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        let mut out = Vec::new();
        for m in members {
            let Some(hash) = parse_hash(&m) else { continue };
            match self.read(hash).await? {
                Some(r) if matches_user(&r, Some(&user)) => out.push((hash, r)),
                _ => {
                    let _: Result<i64, _> = redis::cmd("SREM").arg(&ukey).arg(&m).query_async(&mut c).await;
                }
            }
        }
        Ok(out)
    }

    /// Every session: SCAN over the session keys. Single-node only; on a
    /// cluster the admin lists by user.
    async fn scan_all(&self) -> Result<Vec<(TokenHash, SessionRecord)>, StoreError> {
        let mut out = Vec::new();
        self.scan_all_into(|h, r| out.push((h, r))).await?;
        Ok(out)
    }

    /// Every session, read one at a time into `sink` (see [`Self::scan_all`]).
    async fn scan_all_into(&self, mut sink: impl FnMut(TokenHash, SessionRecord)) -> Result<(), StoreError> {
        let Conn::Single(cm) = &self.conn else {
            return Err(StoreError::Unsupported(
                "listing every session needs ?user= on a Redis cluster",
            ));
        };
        let mut c = cm.clone();
        let pattern = format!("{}s:*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await
                .map_err(backend)?;
            for k in keys {
                if let Some(hash) = k.rsplit(':').next().and_then(parse_hash) {
                    if let Some(r) = self.read(hash).await? {
                        sink(hash, r);
                    }
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

fn parse_hash(h: &str) -> Option<TokenHash> {
    if h.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in h.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(TokenHash(out))
}

/// Keeps one pub/sub subscription alive. Losing it is reported at once (the
/// cache stops being trusted); getting it back is reported after the
/// subscription is confirmed, so the manager can drop everything it may
/// have missed.
async fn subscriber(config: RedisConfig, channel: String, instance: String, tx: mpsc::UnboundedSender<CacheEvent>) {
    let own_prefix = format!("{instance}:");
    let mut backoff = Duration::from_millis(20);
    let mut node = 0usize;
    loop {
        let url = &config.urls[node % config.urls.len()];
        node += 1;
        let sub = async {
            let client = redis::Client::open(connection_info(url, config.password.as_deref())?).map_err(backend)?;
            let mut ps = tokio::time::timeout(config.connect_timeout, client.get_async_pubsub())
                .await
                .map_err(|_| StoreError::Backend("pub/sub connect timed out".into()))?
                .map_err(backend)?;
            ps.subscribe(&channel).await.map_err(backend)?;
            Ok::<_, StoreError>(ps)
        };
        match sub.await {
            Ok(ps) => {
                backoff = Duration::from_millis(20);
                if tx.send(CacheEvent::Restored).is_err() {
                    return;
                }
                tracing::info!("session invalidation subscription active");
                let mut stream = ps.into_on_message();
                while let Some(msg) = stream.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if payload.starts_with(&own_prefix) {
                        continue;
                    }
                    let mut parts = payload.rsplit(':');
                    let (Some(hash), Some(kind)) = (parts.next().and_then(parse_hash), parts.next()) else {
                        continue;
                    };
                    let event = if kind == "gone" {
                        CacheEvent::Gone(hash)
                    } else {
                        CacheEvent::Invalidate(hash)
                    };
                    if tx.send(event).is_err() {
                        return;
                    }
                }
                tracing::warn!("session invalidation subscription lost; reading sessions through until it is back");
            }
            Err(e) => tracing::warn!(error = %e, "session invalidation subscription failed"),
        }
        if tx.send(CacheEvent::Lost).is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

impl SessionStore for RedisStore {
    fn get(&self, hash: TokenHash) -> StoreFuture<'_, Option<SessionRecord>> {
        Box::pin(self.read(hash))
    }

    fn put(&self, hash: TokenHash, record: SessionRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.atomic();
            self.write_into(&mut pipe, &hash, &record)?;
            let mut c = self.conn.clone();
            pipe.query_async::<()>(&mut c).await.map_err(backend)?;
            self.index(&hash, &record, None).await
        })
    }

    fn put_many(&self, batch: Vec<(TokenHash, SessionRecord)>) -> StoreFuture<'_, ()> {
        Box::pin(self.put_many_inner(batch))
    }

    fn replace(&self, hash: TokenHash, record: SessionRecord) -> StoreFuture<'_, bool> {
        Box::pin(self.set_field(&self.replace_script, hash, serde_json::to_string(&record)))
    }

    fn set_servers(&self, hash: TokenHash, servers: Vec<ServerKey>) -> StoreFuture<'_, bool> {
        Box::pin(self.set_field(&self.servers_script, hash, serde_json::to_string(&servers)))
    }

    fn rotate(&self, old: TokenHash, new: TokenHash, record: SessionRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if old.0[0] != new.0[0] {
                return Err(StoreError::Backend("rotation across hash slots".into()));
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.cmd("DEL").arg(self.key(&old)).ignore();
            self.write_into(&mut pipe, &new, &record)?;
            let mut c = self.conn.clone();
            pipe.query_async::<()>(&mut c).await.map_err(backend)?;
            self.publish(&old, true).await;
            self.index(&new, &record, Some(&old)).await
        })
    }

    fn delete(&self, hash: TokenHash) -> StoreFuture<'_, bool> {
        Box::pin(self.delete_inner(hash))
    }

    fn touch(&self, batch: Vec<(TokenHash, u64)>) -> StoreFuture<'_, ()> {
        // Pipelined, TOUCH_PIPELINE at a time: awaited one by one, a flush
        // of 100,000 touches was 100,000 round trips. A pipeline holds keys
        // of one hash tag (the hash's first byte, see `key`), which a cluster
        // needs (one slot per pipeline). The first touch of each run goes
        // through `invoke_async`, which loads the script on the node that
        // serves the tag if it lacks it; the rest call it by its hash.
        Box::pin(async move {
            let batch = super::in_key_order(batch).await?;
            let mut c = self.conn.clone();
            for run in batch.chunk_by(|a, b| a.0 .0[0] == b.0 .0[0]) {
                let Some(((first, seen), rest)) = run.split_first() else {
                    continue;
                };
                let _: i64 = self
                    .touch_script
                    .key(self.key(first))
                    .arg(*seen)
                    .invoke_async(&mut c)
                    .await
                    .map_err(backend)?;
                for chunk in rest.chunks(TOUCH_PIPELINE) {
                    let mut pipe = redis::pipe();
                    for (hash, seen) in chunk {
                        pipe.cmd("EVALSHA")
                            .arg(self.touch_script.get_hash())
                            .arg(1)
                            .arg(self.key(hash))
                            .arg(*seen)
                            .ignore();
                    }
                    let () = pipe.query_async(&mut c).await.map_err(backend)?;
                }
            }
            Ok(())
        })
    }

    fn list(&self, user: Option<String>) -> StoreFuture<'_, Vec<(TokenHash, SessionRecord)>> {
        Box::pin(self.list_inner(user))
    }

    fn newest(&self, user: Option<String>, limit: usize, now: u64) -> StoreFuture<'_, Newest> {
        match user {
            None => Box::pin(async move {
                let mut newest = Newest::new(limit, now);
                self.scan_all_into(|h, r| newest.offer(h, r)).await?;
                Ok(newest)
            }),
            Some(user) => super::newest_of(self.list(Some(user)), limit, now),
        }
    }

    fn count_user(&self, user: String) -> StoreFuture<'_, usize> {
        // Members whose session expired stay in the set until a listing of
        // the user prunes them: an upper bound, as the trait asks.
        Box::pin(async move {
            let mut c = self.conn.clone();
            redis::cmd("SCARD")
                .arg(self.user_key(&user))
                .query_async(&mut c)
                .await
                .map_err(backend)
        })
    }

    fn find_id(&self, id: SessionId) -> StoreFuture<'_, Option<(TokenHash, SessionRecord)>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let h: Option<String> = redis::cmd("GET")
                .arg(self.id_key(&id))
                .query_async(&mut c)
                .await
                .map_err(backend)?;
            let Some(hash) = h.as_deref().and_then(parse_hash) else {
                return Ok(None);
            };
            Ok(self.read(hash).await?.filter(|r| r.id == id).map(|r| (hash, r)))
        })
    }

    fn sweep(&self, _now: u64, _idle_ms: u64) -> StoreFuture<'_, Vec<TokenHash>> {
        // Redis expires keys at their absolute expiry by itself; idle ones
        // are refused on read and deleted then.
        Box::pin(async { Ok(Vec::new()) })
    }

    fn events(&self) -> Option<mpsc::UnboundedReceiver<CacheEvent>> {
        self.events.lock().ok().and_then(|mut e| e.take())
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn rotation_keeps_tag(&self) -> bool {
        true
    }
}
