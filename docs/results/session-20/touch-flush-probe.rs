// Session 20's probe of how long a durable write waits behind a touch flush
// (embedded store). Not compiled: to reproduce, append this module to
// src/session/store/embedded.rs and run
//   cargo test --release --lib flush_wait_probe -- --ignored --nocapture
// With TOUCH_CHUNK = 4096 (f735b34): flush 271-362 ms, put waited 1.2-1.9 ms.
// With TOUCH_CHUNK = usize::MAX (one transaction, as before): flush
// 389-413 ms, put waited 299-331 ms.
#[cfg(test)]
mod flush_wait_probe {
    use super::*;
    use crate::session::store::SessionStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn probe() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb"), 64 << 20).unwrap_or_else(|e| panic!("{e}")));
        let hash = |i: u64| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
            TokenHash(h)
        };
        // A million keys in the last_seen table, as with a million sessions.
        let all: Vec<_> = (0..1_000_000u64).map(|i| (hash(i), 1)).collect();
        store.touch(all).await.unwrap_or_else(|e| panic!("{e}"));
        for round in 0..3u64 {
            let flush: Vec<_> = (0..140_000u64).map(|i| (hash(i * 7 + round), 100 + round)).collect();
            let s2 = store.clone();
            let t0 = std::time::Instant::now();
            let f = tokio::spawn(async move { s2.touch(flush).await });
            // Past the sort: the flush's writes are on the commit thread.
            tokio::time::sleep(std::time::Duration::from_millis(80)).await;
            let t1 = std::time::Instant::now();
            let r = crate::session::record::SessionRecord {
                id: crate::session::token::SessionId([round as u8; 16]),
                identity: None,
                binding: crate::session::record::ClientBinding { ip: None, fingerprint: crate::session::record::Fingerprint([0; 32]) },
                created_at: 1, authenticated_at: 1, last_seen: 1, expires_at: u64::MAX,
                data: String::new(), csrf: String::new(), login_entry: None,
            };
            store.put(TokenHash([round as u8 + 200; 32]), r).await.unwrap_or_else(|e| panic!("{e}"));
            let put_wait = t1.elapsed();
            f.await.ok();
            eprintln!("round {round}: flush of 140k took {:?}, a put issued 80 ms in waited {:?}", t0.elapsed(), put_wait);
        }
    }
}
