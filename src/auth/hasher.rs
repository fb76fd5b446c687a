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
//! Each thread also keeps its argon2 working memory (19 MiB with the default
//! parameters) from one hash to the next instead of allocating it for every
//! login. Allocating, zeroing, faulting in and unmapping it was kernel work
//! (about 5 ms of a 40 ms hash, and 1500 page faults) that need not be
//! preempted as promptly as the hash's own arithmetic, and glibc kept much
//! of the freed memory in per-thread arenas (gateway RSS 905 MiB after 116
//! logins). Now a hash faults nothing in; the price is one block held for
//! the gateway's lifetime by each thread that has hashed, which is why the
//! caller starts no more threads than there are CPUs to run them. See
//! `Memory`, and "Login burst" in docs/benchmarks.md for the measurements.
//!
//! Only verification runs here: no I/O, no lock held across a hash. The
//! threads exit when the [`Hasher`] is dropped.

use argon2::password_hash::phc::Output;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
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
    /// Starts `threads` hashing threads (at least one), confined to `cpus`
    /// unless that is empty. Fails, with no thread left running, if the
    /// kernel refuses `cpus`.
    pub fn new(threads: usize, cpus: &[usize]) -> std::io::Result<Hasher> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let (placed_tx, placed) = mpsc::channel::<std::io::Result<()>>();
        let mut started = 0;
        for i in 0..threads.max(1) {
            let (rx, placed_tx, cpus) = (Arc::clone(&rx), placed_tx.clone(), cpus.to_vec());
            let spawned = std::thread::Builder::new()
                .name(format!("sg-argon2-{i}"))
                .spawn(move || {
                    let confined = crate::priority::confine_to(&cpus);
                    let ok = confined.is_ok();
                    let _ = placed_tx.send(confined);
                    if ok {
                        run(&rx);
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!(error = %e, "could not start a password-hashing thread"),
            }
        }
        // Every started thread answers once; on an error, returning drops
        // `jobs`, and the threads already waiting for work exit.
        for _ in 0..started {
            placed.recv().map_err(std::io::Error::other)??;
        }
        Ok(Hasher { jobs, threads: started })
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
    crate::priority::become_idle("password hashing");
    let mut memory = Memory::default();
    loop {
        // The guard is dropped at the end of this statement: one thread waits
        // in recv(), the others on the mutex, and none holds it while hashing.
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        let ok = memory.verify(&job.phc, &job.password);
        // The login may have been abandoned (client gone); nothing to do then.
        let _ = job.reply.send(ok);
        drop(job.permit);
    }
}

/// Largest argon2 memory a hashing thread keeps between hashes: 64 MiB
/// (argon2 blocks are 1 KiB), above the 19-46 MiB that OWASP recommends for
/// argon2id. A hash that needs more is verified the ordinary way, with memory
/// of its own that is freed afterwards, so an odd configuration cannot pin
/// gigabytes per thread.
const MAX_KEPT_BLOCKS: usize = 64 * 1024;

/// One hashing thread's argon2 working memory, kept across hashes.
///
/// `verify_password` allocates the hash's memory (19 MiB with the default
/// parameters), faults it in page by page and frees it, for every login:
/// kernel work (page faults, zeroing, unmapping) on the proxy's core that a
/// `SCHED_IDLE` thread does not necessarily give up as promptly as its own
/// arithmetic. Reusing one block per thread leaves only the arithmetic.
/// Argon2 writes every block before it reads it, so what a previous hash
/// left in the memory does not change the result (the tests check this
/// against `verify_password`). The block is not wiped between hashes; nor
/// was the memory freed before (the argon2 crate's `zeroize` feature is
/// off), so, as before, state derived from recent passwords can remain in
/// the process's memory.
#[derive(Default)]
struct Memory {
    /// Grown to the largest hash seen (at most `MAX_KEPT_BLOCKS`), never shrunk.
    blocks: Vec<Block>,
}

impl Memory {
    /// Verifies `password` against the PHC string `phc`, with the same answer
    /// as argon2's `verify_password`.
    fn verify(&mut self, phc: &str, password: &str) -> bool {
        match self.verify_reusing(phc, password) {
            Some(ok) => ok,
            // Whatever the reusing path does not handle (not argon2, memory
            // above MAX_KEPT_BLOCKS, a malformed string) gets the crate's own
            // verification, so behaviour never depends on this optimisation.
            None => super::verify(phc, password),
        }
    }

    /// `None` when the hash is not one this path handles.
    fn verify_reusing(&mut self, phc: &str, password: &str) -> Option<bool> {
        // The same steps as password_hash's `verify_password` for argon2:
        // algorithm, version (default 0x13), parameters including the output
        // length, then a constant-time comparison of the outputs.
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(hash.algorithm.as_str()).ok()?;
        let version = match hash.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&hash).ok()?;
        let (salt, expected) = (hash.salt.as_ref()?, hash.hash.as_ref()?);
        let needed = params.block_count();
        if needed > MAX_KEPT_BLOCKS {
            return None;
        }
        if self.blocks.len() < needed {
            // Free the old block before allocating the larger one; if that
            // allocation fails, the fallback reports it as argon2 does.
            self.blocks = Vec::new();
            self.blocks.try_reserve_exact(needed).ok()?;
            self.blocks.resize(needed, Block::new());
        }
        let argon2 = Argon2::new(algorithm, version, params);
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = out.get_mut(..expected.len())?;
        let memory = self.blocks.get_mut(..needed)?;
        if argon2
            .hash_password_into_with_memory(password.as_bytes(), salt, out, memory)
            .is_err()
        {
            return None;
        }
        // `Output`'s equality is constant-time (the `subtle` crate).
        Some(Output::new(out).ok()? == *expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_on_its_own_low_priority_threads() {
        let h = super::super::hash_password("pw").unwrap_or_default();
        let hasher = Hasher::new(2, &[]).expect("hashing threads");
        assert_eq!(hasher.threads, 2);
        assert!(hasher.verify(h.clone(), "pw".into(), None).await);
        assert!(!hasher.verify(h, "other".into(), None).await);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn confined_threads_verify_and_refused_cpus_fail_the_start() {
        let h = super::super::hash_password("pw").unwrap_or_default();
        let hasher = Hasher::new(1, &[0]).expect("CPU 0 exists");
        assert!(hasher.verify(h, "pw".into(), None).await);
        // No test machine has 1024 CPUs: alone, the kernel refuses it.
        let refused = Hasher::new(2, &[1023]).err().map(|e| e.raw_os_error());
        assert_eq!(refused, Some(Some(22)), "EINVAL expected");
        // Beside one it has, the kernel would drop it silently; the check does not.
        let partly = Hasher::new(1, &[0, 1023]).err().map(|e| e.to_string());
        assert_eq!(partly.as_deref(), Some("CPU 1023 is not available to this process"));
    }

    use argon2::{AssociatedData, ParamsBuilder, PasswordHasher, PasswordVerifier};

    /// A PHC string for `password` with the given variant and parameters.
    fn phc(algorithm: Algorithm, version: Version, params: Params, password: &str) -> String {
        Argon2::new(algorithm, version, params)
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .unwrap_or_default()
    }

    fn params(m: u32, t: u32, p: u32, output_len: Option<usize>) -> Params {
        Params::new(m, t, p, output_len).unwrap_or_default()
    }

    /// The answer of argon2's own verification, which the reusing path must match.
    fn reference(phc: &str, password: &str) -> bool {
        PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    }

    #[test]
    fn reused_memory_agrees_with_verify_password() {
        let with_data = ParamsBuilder::new()
            .m_cost(64)
            .t_cost(1)
            .p_cost(1)
            .data(AssociatedData::new(b"ad").unwrap_or_default())
            .build()
            .unwrap_or_default();
        // Sizes go up and down, so one thread's block is reused by hashes both
        // smaller and larger than the one before.
        let hashes = [
            phc(Algorithm::Argon2id, Version::V0x13, params(256, 2, 1, None), "pw"),
            phc(Algorithm::Argon2id, Version::V0x13, params(64, 1, 1, None), "pw"),
            phc(Algorithm::Argon2id, Version::V0x13, params(512, 1, 4, None), "pw"),
            phc(Algorithm::Argon2id, Version::V0x13, params(96, 3, 2, Some(64)), "pw"),
            phc(Algorithm::Argon2id, Version::V0x13, params(128, 1, 1, Some(16)), "pw"),
            phc(Algorithm::Argon2i, Version::V0x13, params(128, 2, 1, None), "pw"),
            phc(Algorithm::Argon2d, Version::V0x10, params(64, 2, 1, None), "pw"),
            phc(Algorithm::Argon2id, Version::V0x13, with_data, "pw"),
        ];
        let mut memory = Memory::default();
        for round in 0..2 {
            for h in &hashes {
                for password in ["pw", "pW", "", "pw "] {
                    let expected = reference(h, password);
                    assert_eq!(expected, password == "pw", "reference, {h}");
                    assert_eq!(
                        memory.verify_reusing(h, password),
                        Some(expected),
                        "round {round}, {h}, {password:?}"
                    );
                    assert_eq!(memory.verify(h, password), expected);
                }
            }
        }
        // The block grew to the largest hash (512 KiB: 512 blocks) and stayed.
        assert_eq!(memory.blocks.len(), 512);
    }

    #[test]
    fn unsupported_hashes_fall_back_to_verify_password() {
        let mut memory = Memory::default();
        let small = phc(Algorithm::Argon2id, Version::V0x13, params(64, 1, 1, None), "pw");
        // More memory than a thread keeps: not hashed here (the string is
        // only rewritten, so its output would not match anyway).
        let huge = small.replace("m=64", "m=1048576");
        assert_ne!(huge, small);
        assert_eq!(memory.verify_reusing(&huge, "pw"), None);
        assert!(memory.blocks.is_empty());
        for odd in [
            "not a phc",
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ",
            "$argon2id$v=18$m=64,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(memory.verify_reusing(odd, "pw"), None, "{odd}");
            assert_eq!(memory.verify(odd, "pw"), reference(odd, "pw"), "{odd}");
        }
        assert!(memory.verify(&small, "pw"));
        assert!(!memory.verify(&small, "other"));
    }

    #[tokio::test]
    async fn hashing_threads_verify_several_parameter_sets() {
        let hasher = Hasher::new(1, &[]).expect("hashing threads");
        for h in [
            phc(Algorithm::Argon2id, Version::V0x13, params(256, 1, 1, None), "pw"),
            phc(Algorithm::Argon2id, Version::V0x13, params(64, 2, 2, None), "pw"),
        ] {
            assert!(hasher.verify(h.clone(), "pw".into(), None).await);
            assert!(!hasher.verify(h, "pw2".into(), None).await);
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_in_sched_idle() {
        let hasher = Hasher::new(1, &[]).expect("hashing threads");
        // Once a job has run, the thread has set its policy.
        assert!(!hasher.verify("not a phc".into(), String::new(), None).await);
        let policies = crate::priority::policies_of_threads_named("sg-argon2-0");
        assert!(policies.contains(&5), "policies of sg-argon2-0 threads: {policies:?}");
    }
}
