//! A control for `bench/login-burst.sh` (`STORM=hashes`): the login storm's
//! argon2 work without its logins. It verifies a password against a PHC
//! string RATE times a second for SECONDS on sessiongate's own hashing
//! thread (`SCHED_IDLE`, memory kept from one hash to the next), with no
//! network at all, then prints `STORM ok=N failed=M resumed=0`.
//!
//!     cargo run --example hash_load -- PHC PASSWORD RATE SECONDS

use sessiongate::auth::hasher::Hasher;
use std::sync::Arc;
use std::time::Duration;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [phc, password, rate, seconds] = args.as_slice() else {
        return Err("usage: hash_load PHC PASSWORD RATE SECONDS".into());
    };
    let rate: u32 = rate.parse().map_err(|e| format!("RATE: {e}"))?;
    let seconds: u32 = seconds.parse().map_err(|e| format!("SECONDS: {e}"))?;
    if rate == 0 {
        return Err("RATE must be at least 1".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    let ok = runtime.block_on(storm(phc, password, rate, seconds));
    let started = u64::from(rate) * u64::from(seconds);
    println!("STORM ok={ok} failed={} resumed=0", started - ok);
    Ok(())
}

/// Starts one verification every 1/RATE s, as the storm starts logins (a
/// slow hash does not delay the next), and counts those that succeed.
async fn storm(phc: &str, password: &str, rate: u32, seconds: u32) -> u64 {
    // One thread, as the gateway starts on one CPU.
    let hasher = match Hasher::new(1, &[]) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            eprintln!("cannot start the hashing thread: {e}");
            return 0;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut jobs = Vec::new();
    for _ in 0..rate * seconds {
        tick.tick().await;
        let (hasher, phc, password) = (hasher.clone(), phc.to_owned(), password.to_owned());
        jobs.push(tokio::spawn(async move { hasher.verify(phc, password, None).await }));
    }
    let mut ok = 0;
    for job in jobs {
        ok += u64::from(matches!(job.await, Ok(true)));
    }
    ok
}
