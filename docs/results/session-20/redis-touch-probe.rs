// Session 20's probe of a Redis touch flush's duration. Not compiled: to
// reproduce, append this test to tests/it/redis/write_behind.rs and run
//   cargo test --release --test it probe_flush_time -- --ignored --nocapture
// Pipelined (this session's RedisStore::touch): 266 ms for 20,000 touches.
// One EVALSHA awaited at a time (before): 3.00 s.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn probe_flush_time() {
    let redis = RedisServer::start().await;
    let store = RedisStore::open(&config(vec![redis.url()], false)).await.unwrap_or_else(|e| panic!("{e}"));
    let now = now_ms();
    let all: Vec<TokenHash> = (0..20_000u32)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
            TokenHash(h)
        })
        .collect();
    for h in &all {
        store.put(*h, record(1, now - 10_000)).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let flush: Vec<_> = all.iter().map(|h| (*h, now)).collect();
    let t = Instant::now();
    store.touch(flush).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("PROBE flush of 20,000 touches: {:?}", t.elapsed());
}
