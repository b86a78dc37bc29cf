//! Handshake load: whether the device is "under load", and the per-source token bucket
//! that limits handshake work while it is, as the kernel's WireGuard has them.
//!
//! * [`Load`]: the device is under load while the handshake queue is deep (at least
//!   [`UNDER_LOAD_BACKLOG`] messages waiting), and for [`UNDER_LOAD_HOLD`] after it last
//!   was: the hysteresis keeps a flood that comes in bursts from flipping the state.
//!   Under load, a handshake message without a valid mac2 gets a cookie reply and no
//!   further work.
//! * [`RateLimiter`]: under load, a message with a valid mac2 (its sender proved it
//!   receives at its address) is processed only if its source has a token: 20 per
//!   second, bursts of 5, per IPv4 address or IPv6 /64. Sources idle for a second are
//!   forgotten, and at most [`MAX_SOURCES`] are tracked at once (a new source past that
//!   is refused), so the table's memory is bounded whatever the flood.
//!
//! Written here rather than taken from a crate (`governor`): the core is sans-IO, so time
//! comes in as an argument, and the table must have a hard bound on its entries, which
//! the crate's keyed limiter leaves to periodic cleaning by the caller.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshake messages waiting in the queue at or above which the device is under load
/// (the kernel: an eighth of its 4096-message queue).
pub const UNDER_LOAD_BACKLOG: usize = 512;
/// How long the device stays under load after the queue was last that deep.
pub const UNDER_LOAD_HOLD: Duration = Duration::from_secs(1);
/// Handshake messages per second allowed per source while under load.
pub const PER_SOURCE_PER_SEC: u64 = 20;
/// How many of them may come at once.
pub const PER_SOURCE_BURST: u64 = 5;
/// Sources tracked at once.
pub const MAX_SOURCES: usize = 16384;

const NANOS: u64 = 1_000_000_000;
const COST: u64 = NANOS / PER_SOURCE_PER_SEC;
const TOKEN_MAX: u64 = COST * PER_SOURCE_BURST;
/// Sources unheard from for this long are forgotten (their bucket is full again anyway).
const IDLE: Duration = Duration::from_secs(1);

/// Whether the device is under load, from the depth of its handshake queue.
#[derive(Debug, Default)]
pub struct Load {
    until: Option<Instant>,
    forced: Option<bool>,
}

impl Load {
    /// Notes the queue's depth at `now`.
    pub fn note_backlog(&mut self, depth: usize, now: Instant) {
        if depth >= UNDER_LOAD_BACKLOG {
            self.until = Some(now + UNDER_LOAD_HOLD);
        }
    }

    /// True while under load.
    pub fn under_load(&self, now: Instant) -> bool {
        self.forced
            .unwrap_or_else(|| self.until.is_some_and(|u| now < u))
    }

    /// Forces the state on or off (None: measure it), for tests and operators.
    pub fn force(&mut self, on: Option<bool>) {
        self.forced = on;
    }
}

/// The bucket's key: an IPv4 address, or an IPv6 address's /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4(u32),
    V6(u64),
}

fn source_key(ip: IpAddr) -> SourceKey {
    match ip {
        IpAddr::V4(a) => SourceKey::V4(u32::from(a)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => SourceKey::V4(u32::from(v4)),
            None => SourceKey::V6((u128::from(a) >> 64) as u64),
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    last: Instant,
    tokens: u64,
}

/// Per-source token buckets (see the module documentation).
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<SourceKey, Bucket>,
    last_gc: Option<Instant>,
}

impl RateLimiter {
    /// True if a handshake message from `ip` may be processed at `now` (and takes its
    /// token).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self
            .last_gc
            .is_none_or(|t| now.saturating_duration_since(t) >= IDLE)
        {
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
            self.last_gc = Some(now);
        }
        let key = source_key(ip);
        if let Some(b) = self.buckets.get_mut(&key) {
            let elapsed = now.saturating_duration_since(b.last);
            let elapsed = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            b.tokens = b.tokens.saturating_add(elapsed).min(TOKEN_MAX);
            b.last = now;
            if b.tokens < COST {
                return false;
            }
            b.tokens -= COST;
            return true;
        }
        if self.buckets.len() >= MAX_SOURCES {
            return false;
        }
        self.buckets.insert(
            key,
            Bucket {
                last: now,
                tokens: TOKEN_MAX - COST,
            },
        );
        true
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_a_burst_of_5_then_20_per_second() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let burst = (0..100).filter(|_| r.allow(a, t0)).count();
        assert_eq!(burst, 5);
        // Over 10 s, one message every millisecond: 20 per second get through.
        let mut allowed = 0;
        for ms in 1..=10_000u64 {
            if r.allow(a, t0 + Duration::from_millis(ms)) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 200);
        // Another source has its own bucket.
        assert!(r.allow(ip("192.0.2.2"), t0 + Duration::from_secs(10)));
    }

    #[test]
    fn ipv6_sources_share_a_bucket_per_64() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        let n = (0..50u32)
            .filter(|i| r.allow(ip(&format!("2001:db8:1:2::{i:x}")), t0))
            .count();
        assert_eq!(n, 5, "one /64, one bucket");
        assert!(r.allow(ip("2001:db8:1:3::1"), t0), "another /64");
        // An IPv4-mapped address (a dual-stack socket's view of IPv4) is its IPv4 address.
        let mapped = (0..5)
            .filter(|_| r.allow(ip("::ffff:192.0.2.9"), t0))
            .count();
        assert_eq!(mapped, 5);
        assert!(!r.allow(ip("192.0.2.9"), t0), "one bucket for both forms");
    }

    #[test]
    fn memory_is_bounded_and_idle_sources_are_forgotten() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 1000) {
            r.allow(IpAddr::from((0x0a00_0000u32 + i).to_be_bytes()), t0);
        }
        assert_eq!(r.sources(), MAX_SOURCES);
        assert!(
            !r.allow(ip("198.51.100.1"), t0),
            "a new source past the bound"
        );
        let later = t0 + Duration::from_secs(2);
        assert!(r.allow(ip("198.51.100.1"), later));
        assert_eq!(r.sources(), 1);
    }

    #[test]
    fn load_holds_for_a_second_after_the_queue_was_deep() {
        let mut l = Load::default();
        let t0 = Instant::now();
        l.note_backlog(UNDER_LOAD_BACKLOG - 1, t0);
        assert!(!l.under_load(t0));
        l.note_backlog(UNDER_LOAD_BACKLOG, t0);
        assert!(l.under_load(t0));
        l.note_backlog(0, t0 + Duration::from_millis(500));
        assert!(l.under_load(t0 + Duration::from_millis(999)));
        assert!(!l.under_load(t0 + UNDER_LOAD_HOLD));
        l.force(Some(true));
        assert!(l.under_load(t0 + UNDER_LOAD_HOLD));
    }
}
