//! Password verification on dedicated, lowest-priority threads.
//!
//! argon2id is deliberately CPU-heavy (tens of milliseconds per hash). On
//! tokio's blocking pool a burst of logins competes on equal terms with the
//! runtime's worker threads for the CPU, so every proxied request waits behind
//! hashes: with one worker on one core, 20 logins/s raised the p99 of other
//! users' requests 13- to 34-fold (`bench/login-burst.sh`, docs/benchmarks.md).
//! Here hashing runs on threads of its own that put themselves in
//! `SCHED_IDLE` when they start: the kernel runs them only on CPU time that
//! normal threads leave over, and a waking worker preempts a hash at once
//! (with nice 19 instead, the worker still waited out the hash's time slice:
//! p99 was 2-5 times higher during the storm, against 1.1-1.8 with
//! `SCHED_IDLE`). Logins, not proxied
//! requests, absorb the wait; they still complete, since an otherwise idle
//! CPU runs them at full speed.
//!
//! Only verification runs here: no I/O, no lock held across a hash. The
//! threads exit when the [`Hasher`] is dropped.

use std::sync::{mpsc, Arc, Mutex, PoisonError};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

struct Job {
    phc: String,
    password: String,
    reply: oneshot::Sender<bool>,
    /// Released when the hash is done, not when the login is abandoned, so
    /// the caller's bound on concurrent hashes holds even for dropped logins.
    permit: Option<OwnedSemaphorePermit>,
}

/// A fixed set of `SCHED_IDLE` threads that verify passwords.
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

/// Moves the calling thread to `SCHED_IDLE` (allowed without privileges).
#[cfg(target_os = "linux")]
fn lower_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
        ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(error = ?e, "could not lower the priority of a password-hashing thread");
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
    async fn hashing_threads_run_in_sched_idle() {
        let hasher = Hasher::new(1);
        // Once a job has run, the thread has set its policy.
        assert!(!hasher.verify("not a phc".into(), String::new(), None).await);
        // /proc/self/task/*/stat: field 41 is the scheduling policy (5 = SCHED_IDLE).
        let policies: Vec<i32> = std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            .filter(|stat| stat.contains("(sg-argon2-0)"))
            .filter_map(|stat| {
                let rest = stat.rsplit(") ").next()?.to_string();
                rest.split_whitespace().nth(41 - 3)?.parse().ok()
            })
            .collect();
        assert!(policies.contains(&5), "policies of sg-argon2-0 threads: {policies:?}");
    }
}
