
// Session 21's probe: a touch flush against a million last_seen rows, with
// redb's page cache at $PC_MIB MiB. Appended to src/session/store/embedded.rs
// for the run only; `PC_MIB=16 cargo test --release --lib page_cache_probe -- --ignored --nocapture`.
#[cfg(test)]
mod page_cache_probe {
    use super::*;
    use crate::session::store::SessionStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn probe() {
        let mib: usize = std::env::var("PC_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(32);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(
            EmbeddedStore::open(&dir.path().join("s.redb"), mib << 20, &[]).unwrap_or_else(|e| panic!("{e}")),
        );
        let hash = |i: u64| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
            TokenHash(h)
        };
        let all: Vec<_> = (0..1_000_000u64).map(|i| (hash(i), 1)).collect();
        store.touch(all).await.unwrap_or_else(|e| panic!("{e}"));
        for round in 0..5u64 {
            let flush: Vec<_> = (0..140_000u64).map(|i| (hash(i * 7 + round), 100 + round)).collect();
            let t0 = std::time::Instant::now();
            store.touch(flush).await.unwrap_or_else(|e| panic!("{e}"));
            eprintln!("page cache {mib} MiB, round {round}: flush of 140k took {:?}", t0.elapsed());
        }
    }
}
