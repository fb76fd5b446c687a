//! Password verification on dedicated, low-priority threads.
//!
//! argon2id is deliberately CPU-heavy (tens of milliseconds per hash). On
//! tokio's blocking pool a burst of logins competes on equal terms with the
//! runtime's worker threads for the CPU, so every proxied request waits behind
//! hashes: with one worker on one core, 20 logins/s more than doubled the p99
//! of other users' requests (`bench/login-burst.sh`, docs/benchmarks.md).
//! Here hashing runs on threads of its own that lower their scheduling
//! priority to nice [`NICE`] when they start: the kernel gives the workers
//! the CPU whenever they want it, and logins, not proxied requests, absorb the
//! wait. Logins still complete: an otherwise idle CPU runs them at full speed.
//!
//! Only verification runs here: no I/O, no lock held across a hash. The
//! threads exit when the [`Hasher`] is dropped.

use std::sync::{mpsc, Arc, Mutex, PoisonError};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// Niceness of the hashing threads: the lowest priority short of `SCHED_IDLE`
/// (a weight of 15 against a worker's 1024 under CFS/EEVDF).
pub const NICE: i32 = 19;

struct Job {
    phc: String,
    password: String,
    reply: oneshot::Sender<bool>,
    /// Released when the hash is done, not when the login is abandoned, so
    /// the caller's bound on concurrent hashes holds even for dropped logins.
    permit: Option<OwnedSemaphorePermit>,
}

/// A fixed set of low-priority threads that verify passwords.
pub struct Hasher {
    jobs: mpsc::Sender<Job>,
    /// How many threads started; 0 (spawning failed) falls back to the blocking pool.
    threads: usize,
}

impl Hasher {
    /// Starts `threads` hashing threads (at least one).
    pub fn new(threads: usize) -> Hasher {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("sg-argon2-{i}"))
                .spawn(move || run(&rx));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "could not start a password-hashing thread"),
            }
        }
        Hasher { jobs, threads: started }
    }

    /// Verifies `password` against the argon2id PHC string `phc`; `permit`
    /// (if any) is held until the hash has run.
    pub async fn verify(&self, phc: String, password: String, permit: Option<OwnedSemaphorePermit>) -> bool {
        if self.threads == 0 {
            return tokio::task::spawn_blocking(move || {
                let ok = super::verify(&phc, &password);
                drop(permit);
                ok
            })
            .await
            .unwrap_or(false);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            phc,
            password,
            reply,
            permit,
        };
        if self.jobs.send(job).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

fn run(rx: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        // The guard is dropped at the end of this statement: one thread waits
        // in recv(), the others on the mutex, and none holds it while hashing.
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        let ok = super::verify(&job.phc, &job.password);
        // The login may have been abandoned (client gone); nothing to do then.
        let _ = job.reply.send(ok);
        drop(job.permit);
    }
}

/// Lowers the calling thread's priority. On Linux `setpriority(PRIO_PROCESS,
/// tid)` applies to that one thread, not to the whole process.
#[cfg(target_os = "linux")]
fn lower_priority() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), NICE) {
        tracing::warn!(error = %e, "could not lower the priority of a password-hashing thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_on_its_own_low_priority_threads() {
        let h = super::super::hash_password("pw").unwrap_or_default();
        let hasher = Hasher::new(2);
        assert_eq!(hasher.threads, 2);
        assert!(hasher.verify(h.clone(), "pw".into(), None).await);
        assert!(!hasher.verify(h, "other".into(), None).await);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_the_lowest_priority() {
        let hasher = Hasher::new(1);
        // Wait until the thread has set its priority, then read it back.
        assert!(!hasher.verify("not a phc".into(), String::new(), None).await);
        let mine = std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            .find(|stat| stat.contains("(sg-argon2-0)"));
        let nice = mine
            .as_deref()
            .and_then(|s| s.rsplit(") ").next())
            .and_then(|rest| rest.split_whitespace().nth(16))
            .and_then(|n| n.parse::<i32>().ok());
        assert_eq!(nice, Some(NICE));
    }
}
