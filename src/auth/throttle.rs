//! Failed-login throttling per client IP and per username. Counters live in
//! bounded moka caches whose entries expire `failure_window` after the first
//! failure, so memory stays bounded under a spray of usernames.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Throttle {
    max_failures: u32,
    window: Duration,
    by_ip: moka::sync::Cache<IpAddr, Arc<AtomicU32>>,
    by_user: moka::sync::Cache<String, Arc<AtomicU32>>,
}

impl Throttle {
    pub fn new(max_failures: u32, window: Duration) -> Throttle {
        Throttle {
            max_failures,
            window,
            by_ip: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
            by_user: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
        }
    }

    /// `Some(retry_after)` when either key has used up its failures.
    pub fn blocked(&self, ip: IpAddr, user: &str) -> Option<Duration> {
        let over = |c: Option<Arc<AtomicU32>>| c.is_some_and(|c| c.load(Ordering::Relaxed) >= self.max_failures);
        (over(self.by_ip.get(&ip)) || over(self.by_user.get(user))).then_some(self.window)
    }

    pub fn failed(&self, ip: IpAddr, user: &str) {
        self.by_ip
            .get_with(ip, Default::default)
            .fetch_add(1, Ordering::Relaxed);
        self.by_user
            .get_with(user.to_string(), Default::default)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// `Some(retry_after)` when the address has used up its failures (a
    /// sign-in through the provider has no user name to count yet).
    pub fn blocked_ip(&self, ip: IpAddr) -> Option<Duration> {
        self.by_ip
            .get(&ip)
            .is_some_and(|c| c.load(Ordering::Relaxed) >= self.max_failures)
            .then_some(self.window)
    }

    pub fn failed_ip(&self, ip: IpAddr) {
        self.by_ip
            .get_with(ip, Default::default)
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn succeeded(&self, user: &str) {
        self.by_user.invalidate(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_per_user_and_ip() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        assert!(t.blocked(ip, "a").is_none());
        t.failed(ip, "a");
        t.failed(ip, "a");
        assert!(t.blocked(ip, "b").is_some(), "ip is blocked for any user");
        assert!(t.blocked(other, "a").is_some(), "user is blocked from any ip");
        assert!(t.blocked(other, "b").is_none());
    }
}
