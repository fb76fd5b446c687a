//! Scheduling class of the gateway's background threads.
//!
//! Password hashes and TLS handshakes are CPU work that can wait a little;
//! requests on established connections should not wait behind them. Threads
//! that do such work put themselves in `SCHED_IDLE`: the kernel runs them on
//! CPU time that normal threads leave over, and a normal thread that wakes
//! preempts them at once. A nice value does not do that: with nice 19 the
//! woken worker still waited out the background thread's time slice
//! (`auth::hasher`, and "Login burst" in docs/benchmarks.md).
//!
//! The hashing threads can also be kept off the CPUs that serve requests
//! (`[login] hash_cpus`): `SCHED_IDLE` decides who runs first, but a hash
//! that shares a core with the proxy still evicts its caches.

/// A single-threaded tokio runtime (a worker's, a handshake thread's, the
/// main thread's) whose blocking pool runs on `background` (`[server]
/// background_cpus`; empty: wherever the process may). That pool does the
/// embedded store's reads: a login's two, and any lookup the session cache
/// misses. Beside a pinned worker they took its CPU for tens of
/// microseconds each; they stay at normal priority, as requests wait for
/// them.
pub fn current_thread_runtime(background: &[usize]) -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = background.to_vec();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().thread_name("sg-blocking");
    if !cpus.is_empty() {
        builder.on_thread_start(move || confine_or_warn(&cpus, "blocking pool"));
    }
    builder.build()
}

/// Moves the calling thread to `SCHED_IDLE` (allowed without privileges);
/// `what` names the thread's work in the warning if the kernel refuses.
#[cfg(target_os = "linux")]
pub(crate) fn become_idle(what: &str) {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
        ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(error = ?e, thread = what, "could not lower the priority of a background thread");
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn become_idle(_what: &str) {}

/// Confines the calling thread to `cpus`; an empty list leaves it where the
/// process may run. Fails if any of them is not available: the kernel
/// refuses a set with none it can use, and silently drops the ones it
/// cannot from a set that has some, so the result is read back.
#[cfg(target_os = "linux")]
pub(crate) fn confine_to(cpus: &[usize]) -> std::io::Result<()> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)?;
    }
    // Pid 0 is the calling thread.
    sched_setaffinity(Pid::from_raw(0), &set)?;
    let got = sched_getaffinity(Pid::from_raw(0))?;
    match cpus.iter().find(|&&cpu| !got.is_set(cpu).unwrap_or(false)) {
        Some(cpu) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is not available to this process"),
        )),
        None => Ok(()),
    }
}

/// Confines the calling thread to `cpus` (`[server] background_cpus`,
/// checked at start with [`check_cpus`]), or warns: the thread still works
/// where it is.
pub(crate) fn confine_or_warn(cpus: &[usize], what: &str) {
    if let Err(e) = confine_to(cpus) {
        tracing::warn!(error = %e, thread = what, ?cpus, "could not move a background thread to its CPUs");
    }
}

/// Whether the kernel lets a thread run on `cpus` (`[login] hash_cpus`,
/// `[server] background_cpus`), found out on a short-lived thread of its
/// own: what `sessiongate check` asks, so that it refuses what the start
/// would refuse.
pub fn check_cpus(cpus: &[usize]) -> std::io::Result<()> {
    let cpus = cpus.to_vec();
    std::thread::Builder::new()
        .name("sg-cpu-check".into())
        .spawn(move || confine_to(&cpus))?
        .join()
        .map_err(|_| std::io::Error::other("the CPU check panicked"))?
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn confine_to(cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "CPU affinity needs Linux",
    ))
}

/// The scheduling policy of the calling process's threads named `name`
/// (`/proc/self/task/*/stat` field 41; 5 is `SCHED_IDLE`), for tests.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn policies_of_threads_named(name: &str) -> Vec<i32> {
    let marker = format!("({name})");
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| stat.contains(&marker))
        .filter_map(|stat| {
            let rest = stat.rsplit(") ").next()?.to_string();
            rest.split_whitespace().nth(41 - 3)?.parse().ok()
        })
        .collect()
}
