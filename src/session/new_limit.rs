//! `[session] new_per_ip_per_minute`: how fast one client address may make
//! anonymous sessions. Every cookie-less request to an `optional` or
//! `required` route creates one, written durably to the store; without a
//! bound, one client in a loop fills the store's disk and its commit queue,
//! which every login and logout waits in.
//!
//! A generic cell rate algorithm per address: the limit's worth at once,
//! then one every `60 s / limit`. An address is an IPv4 address or an IPv6
//! /64 (one host can hold a whole /64). The addresses live in a bounded
//! moka cache that forgets one idle for a minute; one forgotten early only
//! starts afresh.

use crate::config::IpBinding;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Addresses tracked at once.
const TRACKED: u64 = 100_000;
const WINDOW: Duration = Duration::from_secs(60);

pub struct NewSessionLimit {
    /// Time one session "costs", in µs: the window over the limit.
    cost_us: u64,
    /// How far ahead of now an address may have spent: the whole window.
    burst_us: u64,
    start: Instant,
    by_address: moka::sync::Cache<ipnet::IpNet, Arc<Cell>>,
}

/// One address: when its next session is due (µs since `start`), and
/// whether its passing the limit was logged already.
#[derive(Default)]
struct Cell {
    due_us: AtomicU64,
    reported: AtomicBool,
}

/// The answer for one new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the limit; the first refusal for this address since it was
    /// last tracked says so, for one log line per address.
    Refused {
        retry_after: Duration,
        first: bool,
    },
}

impl NewSessionLimit {
    pub fn new(per_minute: u32) -> NewSessionLimit {
        let window_us = u64::try_from(WINDOW.as_micros()).unwrap_or(u64::MAX);
        NewSessionLimit {
            cost_us: window_us / u64::from(per_minute.max(1)),
            burst_us: window_us,
            start: Instant::now(),
            by_address: moka::sync::Cache::builder()
                .max_capacity(TRACKED)
                .time_to_idle(WINDOW)
                .build(),
        }
    }

    /// Takes one new session from `ip`'s allowance, if there is one.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        let now = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.check_at(ip, now)
    }

    fn check_at(&self, ip: IpAddr, now_us: u64) -> Verdict {
        let Some(key) = crate::session::record::ip_prefix(IpBinding::Subnet { v4: 32, v6: 64 }, ip) else {
            return Verdict::Allowed;
        };
        let cell = self.by_address.get_with(key, Default::default);
        let mut due = cell.due_us.load(Ordering::Relaxed);
        loop {
            let next = due.max(now_us).saturating_add(self.cost_us);
            if next > now_us.saturating_add(self.burst_us) {
                let wait = next - now_us - self.burst_us;
                return Verdict::Refused {
                    retry_after: Duration::from_micros(wait),
                    first: !cell.reported.swap(true, Ordering::Relaxed),
                };
            }
            match cell
                .due_us
                .compare_exchange_weak(due, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Verdict::Allowed,
                Err(seen) => due = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(limit: &NewSessionLimit, ip: IpAddr, at_us: u64, n: usize) -> usize {
        (0..n).filter(|_| limit.check_at(ip, at_us) == Verdict::Allowed).count()
    }

    #[test]
    fn a_burst_of_the_limit_then_one_per_interval() {
        let limit = NewSessionLimit::new(60);
        let ip: IpAddr = [192, 0, 2, 1].into();
        assert_eq!(allowed(&limit, ip, 0, 100), 60, "the burst is the per-minute limit");
        let refused = limit.check_at(ip, 0);
        assert_eq!(
            refused,
            Verdict::Refused {
                retry_after: Duration::from_secs(1),
                first: false
            },
            "the first refusal was reported during the burst"
        );
        // One second later one more (60 per minute), not two.
        assert_eq!(allowed(&limit, ip, 1_000_000, 5), 1);
        // After a quiet minute, a whole burst again.
        assert_eq!(allowed(&limit, ip, 61_000_000, 100), 60);
    }

    #[test]
    fn addresses_count_apart_and_an_ipv6_host_is_its_slash_64() {
        let limit = NewSessionLimit::new(2);
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        assert_eq!(allowed(&limit, a, 0, 5), 2);
        assert_eq!(
            allowed(&limit, b, 0, 5),
            2,
            "another IPv4 address has its own allowance"
        );
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        assert_eq!(allowed(&limit, v6(1), 0, 1), 1);
        assert_eq!(allowed(&limit, v6(2), 0, 5), 1, "the same /64 shares one allowance");
        let other_64 = IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]);
        assert_eq!(allowed(&limit, other_64, 0, 5), 2);
    }

    #[test]
    fn the_first_refusal_of_an_address_is_flagged_once() {
        let limit = NewSessionLimit::new(1);
        let ip: IpAddr = [192, 0, 2, 9].into();
        assert_eq!(limit.check_at(ip, 0), Verdict::Allowed);
        let first = |v: Verdict| matches!(v, Verdict::Refused { first: true, .. });
        assert!(first(limit.check_at(ip, 0)));
        assert!(!first(limit.check_at(ip, 0)));
    }
}
