use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher, Version};
use std::time::Instant;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (m, t): (u32, u32) = (a[1].parse().unwrap(), a[2].parse().unwrap());
    let p = Params::new(m, t, 1, None).unwrap();
    let h = Argon2::new(Algorithm::Argon2id, Version::V0x13, p.clone());
    let s = h.hash_password(a[3].as_bytes()).unwrap();
    println!("{s}");
    if a.len() > 4 {
        let mut mem = vec![Block::default(); p.block_count()];
        let mut out = [0u8; 32];
        let n = 20;
        let st = Instant::now();
        for _ in 0..n { h.hash_password_into_with_memory(b"pw", b"saltsaltsalt", &mut out, &mut mem).unwrap(); }
        eprintln!("m={m} t={t}: {:.1} ms per hash (memory kept)", st.elapsed().as_secs_f64() * 1000.0 / n as f64);
    }
}
