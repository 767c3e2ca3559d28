//! Login throttling by client address.
//!
//! Logins from one address take turns, and after a few wrong passwords each
//! turn starts with a growing pause. So a device guessing passwords (or just
//! flooding logins) slows only itself: logins from other addresses, and every
//! request that carries a host key, never wait for it. Names are never locked
//! out, so an attacker cannot keep the owner from logging in, and failures
//! are forgotten after a quiet spell. The state is bounded: a table of at
//! most [`MAX_ADDRESSES`] entries. [`Strangers`] caps how many such
//! requests are in flight at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::lock::{Mutex as AsyncMutex, MutexGuardArc};

/// Wrong passwords from one address before its logins start to pause.
const FREE_FAILURES: u32 = 3;
/// The first pause; each further failure doubles it, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at once.
const MAX_ADDRESSES: usize = 4096;

#[derive(Default)]
pub(crate) struct Throttle {
    table: Mutex<HashMap<IpAddr, Arc<Entry>>>,
}

#[derive(Default)]
struct Entry {
    /// Held for the whole of one login from this address.
    turn: Arc<AsyncMutex<()>>,
    failures: Mutex<Failures>,
}

#[derive(Default, Clone, Copy)]
struct Failures {
    count: u32,
    last: Option<Instant>,
}

impl Failures {
    fn current(self, now: Instant) -> u32 {
        match self.last {
            Some(last) if now.duration_since(last) < FORGET_AFTER => self.count,
            _ => 0,
        }
    }
}

/// The pause before a login from an address with `failures` recent failures.
pub(crate) fn pause(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES).min(16);
    FIRST_PAUSE.saturating_mul(1 << doublings).min(MAX_PAUSE)
}

/// The device an address belongs to: IPv4 as is; IPv6 by its /64, the block one
/// device (or one attacker) gets.
pub(crate) fn device_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// One login's turn: held until it is decided.
pub(crate) struct Turn {
    entry: Arc<Entry>,
    _turn: MutexGuardArc<()>,
}

impl Turn {
    pub(crate) fn failed(&self) {
        let mut failures = lock(&self.entry.failures);
        let now = Instant::now();
        failures.count = failures.current(now) + 1;
        failures.last = Some(now);
    }

    pub(crate) fn succeeded(&self) {
        *lock(&self.entry.failures) = Failures::default();
    }
}

impl Throttle {
    /// Waits for this address's earlier logins, then for its pause.
    pub(crate) async fn enter(&self, addr: IpAddr) -> Turn {
        let entry = self.entry(device_of(addr));
        let turn = entry.turn.lock_arc().await;
        let failures = lock(&entry.failures).current(Instant::now());
        let wait = pause(failures);
        if !wait.is_zero() {
            smol::Timer::after(wait).await;
        }
        Turn { entry, _turn: turn }
    }

    fn entry(&self, key: IpAddr) -> Arc<Entry> {
        let mut table = lock(&self.table);
        if let Some(entry) = table.get(&key) {
            return entry.clone();
        }
        if table.len() >= MAX_ADDRESSES {
            let now = Instant::now();
            // Addresses with nothing to remember go first; if every one has
            // recent failures, the one that failed longest ago.
            table.retain(|_, e| Arc::strong_count(e) > 1 || lock(&e.failures).current(now) > 0);
            if table.len() >= MAX_ADDRESSES {
                let oldest = table
                    .iter()
                    .filter(|(_, e)| Arc::strong_count(e) == 1)
                    .min_by_key(|(_, e)| lock(&e.failures).last)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    table.remove(&oldest);
                }
            }
        }
        table.entry(key).or_default().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.table).len()
    }
}

/// Requests not yet known to come from a user (logins) in flight at once,
/// from one address and from all: what a LAN device can hold open is
/// bounded, and it cannot crowd out the owner's devices.
pub(crate) struct Strangers {
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
    total: usize,
    per_address: usize,
}

/// One admitted request; admits another when dropped.
pub(crate) struct Admitted<'a> {
    strangers: &'a Strangers,
    key: IpAddr,
}

impl Strangers {
    pub(crate) fn new(total: usize, per_address: usize) -> Strangers {
        Strangers {
            counts: Mutex::new((0, HashMap::new())),
            total,
            per_address,
        }
    }

    pub(crate) fn admit(&self, addr: IpAddr) -> Option<Admitted<'_>> {
        let key = device_of(addr);
        let mut counts = lock(&self.counts);
        let (total, per) = &mut *counts;
        let mine = per.entry(key).or_default();
        if *total >= self.total || *mine >= self.per_address {
            if *mine == 0 {
                per.remove(&key);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Admitted {
            strangers: self,
            key,
        })
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut counts = lock(&self.strangers.counts);
        let (total, per) = &mut *counts;
        *total -= 1;
        if let Some(mine) = per.get_mut(&self.key) {
            *mine -= 1;
            if *mine == 0 {
                per.remove(&self.key);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_start_after_a_few_failures_and_stay_bounded() {
        assert_eq!(pause(0), Duration::ZERO);
        assert_eq!(pause(2), Duration::ZERO);
        assert_eq!(pause(3), Duration::from_millis(500));
        assert_eq!(pause(4), Duration::from_secs(1));
        assert_eq!(pause(9), MAX_PAUSE);
        assert_eq!(pause(u32::MAX), MAX_PAUSE);
    }

    #[test]
    fn ipv6_counts_by_its_64_block_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(device_of(a), device_of(b));
        assert_ne!(device_of(a), device_of(c));
        let mapped: IpAddr = "::ffff:192.168.1.7".parse().unwrap();
        assert_eq!(device_of(mapped), "192.168.1.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn failures_slow_their_address_only_and_success_forgives() {
        let throttle = Throttle::default();
        let bad: IpAddr = "10.0.0.66".parse().unwrap();
        let good: IpAddr = "10.0.0.7".parse().unwrap();
        smol::block_on(async {
            for _ in 0..5 {
                throttle.enter(bad).await.failed();
                // (the pause grows; not waited for here beyond the first ones)
                if lock(&throttle.entry(bad).failures).count >= FREE_FAILURES {
                    break;
                }
            }
            let started = Instant::now();
            throttle.enter(good).await.succeeded();
            assert!(started.elapsed() < Duration::from_millis(100));
            let started = Instant::now();
            let turn = throttle.enter(bad).await;
            assert!(started.elapsed() >= FIRST_PAUSE);
            turn.succeeded();
            drop(turn);
            let started = Instant::now();
            drop(throttle.enter(bad).await);
            assert!(started.elapsed() < Duration::from_millis(100));
        });
    }

    #[test]
    fn strangers_are_capped_per_address_and_in_all() {
        let strangers = Strangers::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let a1 = strangers.admit(a).unwrap();
        let _a2 = strangers.admit(a).unwrap();
        assert!(strangers.admit(a).is_none(), "per address");
        let _b1 = strangers.admit(b).unwrap();
        assert!(strangers.admit(c).is_none(), "in all");
        drop(a1);
        assert!(strangers.admit(c).is_some());
        assert_eq!(
            lock(&strangers.counts).1.len(),
            2,
            "no entry for an address with none"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let throttle = Throttle::default();
        smol::block_on(async {
            for i in 0..(MAX_ADDRESSES as u32 + 100) {
                let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                throttle.enter(addr).await.failed();
            }
        });
        assert!(throttle.len() <= MAX_ADDRESSES);
    }
}
