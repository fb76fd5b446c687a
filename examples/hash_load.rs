//! A control for `bench/login-burst.sh` (`STORM=hashes`): the login storm's
//! argon2 work without its logins. It verifies a password against a PHC
//! string RATE times a second for SECONDS on sessiongate's own hashing
//! thread (`SCHED_IDLE`, memory kept from one hash to the next), with no
//! network at all, then prints `STORM offered=N ok=N failed=M rate=R/s`, as
//! `bench/login-storm.py` does. With `--on-off S` it starts hashes only in
//! every second slot of S seconds (slots 1, 3, 5, ...), and it prints
//! `STORM_START t` (wall clock) on stderr before the first, as the login
//! client does, for the script's interleaved mode (`INTERLEAVE=S`).
//!
//!     cargo run --example hash_load -- PHC PASSWORD RATE SECONDS [--on-off S]

use sessiongate::auth::hasher::Hasher;
use std::sync::Arc;
use std::time::Duration;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (phc, password, rate, seconds, on_off) = match args.as_slice() {
        [phc, password, rate, seconds] => (phc, password, rate, seconds, None),
        [phc, password, rate, seconds, flag, slot] if flag == "--on-off" => (phc, password, rate, seconds, Some(slot)),
        _ => return Err("usage: hash_load PHC PASSWORD RATE SECONDS [--on-off S]".into()),
    };
    let rate: u32 = rate.parse().map_err(|e| format!("RATE: {e}"))?;
    let seconds: u32 = seconds.parse().map_err(|e| format!("SECONDS: {e}"))?;
    let slot = match on_off {
        Some(s) => Some(
            s.parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0)
                .ok_or("--on-off: a number of seconds above 0")?,
        ),
        None => None,
    };
    if rate == 0 {
        return Err("RATE must be at least 1".into());
    }
    let count = rate.checked_mul(seconds).ok_or("RATE × SECONDS is too large")?;
    let due = due_times(rate, count, slot);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    let ok = runtime.block_on(storm(phc, password, &due));
    // Seconds in which hashes were started (half of them with --on-off).
    let active = f64::from(seconds) / if slot.is_some() { 2.0 } else { 1.0 };
    let offered = due.len() as u64;
    println!(
        "STORM offered={offered} ok={ok} failed={} rate={:.1}/s",
        offered - ok,
        ok as f64 / active
    );
    Ok(())
}

/// When each of `count` verifications starts, from the storm's start: one
/// every 1/RATE s, only in the odd slots of `slot` seconds if given.
fn due_times(rate: u32, count: u32, slot: Option<f64>) -> Vec<Duration> {
    (0..count)
        .map(|i| Duration::from_secs(1) * i / rate)
        .filter(|t| slot.is_none_or(|s| (t.as_secs_f64() / s) as u64 % 2 == 1))
        .collect()
}

/// Starts each verification when it is due, as the storm starts logins (a
/// slow hash does not delay the next), and counts those that succeed.
async fn storm(phc: &str, password: &str, due: &[Duration]) -> u64 {
    // One thread, as the gateway starts on one CPU.
    let hasher = match Hasher::new(1, &[]) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            eprintln!("cannot start the hashing thread: {e}");
            return 0;
        }
    };
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!("STORM_START {:.6}", wall.as_secs_f64());
    let start = tokio::time::Instant::now();
    let mut jobs = Vec::with_capacity(due.len());
    for offset in due {
        tokio::time::sleep_until(start + *offset).await;
        let (hasher, phc, password) = (hasher.clone(), phc.to_owned(), password.to_owned());
        jobs.push(tokio::spawn(async move { hasher.verify(phc, password, None).await }));
    }
    let mut ok = 0;
    for job in jobs {
        ok += u64::from(matches!(job.await, Ok(true)));
    }
    ok
}
