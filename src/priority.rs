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

/// Online CPUs that this process does not run on but whose threads may:
/// the ones an operator left free by pinning the gateway (`taskset -c 0`)
/// inside a larger cpuset. Each is tried on a short-lived thread, as
/// [`check_cpus`] does, since only the kernel knows the cpuset.
#[cfg(target_os = "linux")]
pub fn spare_cpus() -> Vec<usize> {
    use nix::sched::sched_getaffinity;
    use nix::unistd::Pid;
    let Ok(mine) = sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|list| parse_cpu_list(&list))
        .unwrap_or_default();
    online
        .into_iter()
        .filter(|&cpu| !mine.is_set(cpu).unwrap_or(true))
        .filter(|&cpu| check_cpus(&[cpu]).is_ok())
        .collect()
}

#[cfg(not(target_os = "linux"))]
pub fn spare_cpus() -> Vec<usize> {
    Vec::new()
}

/// A kernel CPU list (`0-3,6`), as in `/sys/devices/system/cpu/online`.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last): (usize, usize) = (first.parse().ok()?, last.parse().ok()?);
        if first > last {
            return None;
        }
        cpus.extend(first..=last);
    }
    Some(cpus)
}

/// What to tell an operator whose logins' password hashes would share the
/// workers' CPUs while `spare` CPUs are free to the process: on a 2-CPU
/// machine with the worker pinned, a burst of 20 logins/s raised other
/// requests' p99 by 40-70 % that way, and by about 10 % with both keys
/// (docs/deployment.md). `None` when there is nothing to advise.
pub fn placement_advice(
    hash_cpus: &[usize],
    background_cpus: &[usize],
    logins: bool,
    spare: &[usize],
) -> Option<String> {
    let &first = spare.first()?;
    if !logins || !hash_cpus.is_empty() {
        return None;
    }
    let background = if background_cpus.is_empty() {
        format!(" and [server] background_cpus = [{first}]")
    } else {
        String::new()
    };
    Some(format!(
        "password hashes (tens of ms of CPU per login) will run beside the workers although CPUs {spare:?} \
         are free to this process; [login] hash_cpus = [{first}]{background} keep them and the store's \
         work off the CPUs that serve requests (docs/deployment.md)"
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,6\n"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0-x"), None);
    }

    #[test]
    fn advice_only_when_logins_hash_beside_the_workers_and_a_cpu_is_free() {
        assert_eq!(placement_advice(&[], &[], true, &[]), None);
        assert_eq!(placement_advice(&[1], &[], true, &[1]), None);
        assert_eq!(placement_advice(&[], &[], false, &[1]), None);
        let both = placement_advice(&[], &[], true, &[1, 2]).unwrap_or_default();
        assert!(
            both.contains("hash_cpus = [1]") && both.contains("background_cpus = [1]"),
            "{both}"
        );
        let hash_only = placement_advice(&[], &[1], true, &[1]).unwrap_or_default();
        assert!(
            hash_only.contains("hash_cpus = [1]") && !hash_only.contains("background_cpus"),
            "{hash_only}"
        );
    }

    /// Pinned to one of its CPUs, a thread finds the process's other CPUs spare.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_pinned_to_one_cpu_sees_the_others_as_spare() {
        use nix::sched::{sched_getaffinity, CpuSet};
        use nix::unistd::Pid;
        let mine = sched_getaffinity(Pid::from_raw(0)).expect("affinity");
        let allowed: Vec<usize> = (0..CpuSet::count())
            .filter(|&c| mine.is_set(c).unwrap_or(false))
            .collect();
        let pinned = allowed[0];
        let spare = std::thread::spawn(move || {
            confine_to(&[pinned]).expect("pin to an allowed CPU");
            spare_cpus()
        })
        .join()
        .expect("the pinned thread");
        assert!(!spare.contains(&pinned), "{spare:?}");
        for cpu in &allowed[1..] {
            assert!(spare.contains(cpu), "CPU {cpu} is allowed but not spare: {spare:?}");
        }
    }
}
