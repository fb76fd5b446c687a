use sessiongate::session::record::{ClientBinding, Fingerprint, Identity, SessionRecord};
use sessiongate::session::store::embedded::EmbeddedStore;
use sessiongate::session::store::SessionStore;
use sessiongate::session::token::{SessionId, TokenHash};
use std::time::Instant;

fn record(i: u64) -> SessionRecord {
    SessionRecord {
        id: SessionId([7; 16]),
        identity: Some(Identity { user: "bench".into(), email: None, groups: vec![] }),
        binding: ClientBinding { ip: None, fingerprint: Fingerprint([0; 32]) },
        created_at: i, authenticated_at: i, last_seen: i, expires_at: u64::MAX,
        data: String::new(), csrf: "abcdefghijklmnopqrstuvwx".into(),
    }
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(EmbeddedStore::open(&dir.path().join("s.redb"), 32 << 20).unwrap());
    let t = Instant::now();
    for chunk in 0..(n / 10_000) {
        let batch = (0..10_000u64).map(|j| {
            let i = chunk * 10_000 + j;
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&i.wrapping_mul(0x9e3779b97f4a7c15).to_le_bytes());
            (TokenHash(h), record(i))
        }).collect();
        store.put_many(batch).await.unwrap();
    }
    println!("filled {n} in {:?}", t.elapsed());
    let s2 = store.clone();
    let sweep = tokio::spawn(async move {
        let t = Instant::now();
        let dead = s2.sweep(1, 0).await.unwrap();
        (t.elapsed(), dead.len())
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let t = Instant::now();
    store.put(TokenHash([0xfe; 32]), record(5)).await.unwrap();
    println!("a put during the sweep waited {:?}", t.elapsed());
    let (took, dead) = sweep.await.unwrap();
    println!("sweep of {n} took {took:?}, dead {dead}");
}
