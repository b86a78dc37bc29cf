//! Where a peer is reached, per path.
//!
//! For each path, the addresses the peer's authenticated packets arrived from on that path
//! are remembered with the time they were last seen. A packet to the peer leaves on a path
//! towards every address seen on that path within the window (15 s by default): a peer
//! that is itself multi-homed, behind two NATs, gets every packet at each of its addresses.
//! A path on which the peer has not been heard recently sends to the address the peer was
//! last heard from on any path, or else to the configured endpoint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::multipath::path::PathId;

/// How long an address seen on a path keeps receiving copies, by default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15);
/// Addresses remembered per peer, all paths together; the stalest is forgotten first.
pub const MAX_SEEN: usize = 16;
/// How often a known (path, address) pair is re-confirmed from duplicate copies.
const REFRESH: Duration = Duration::from_secs(1);
/// The most destinations one path sends a packet to.
pub const MAX_DESTINATIONS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    path: PathId,
    addr: SocketAddr,
    at: Instant,
}

/// A peer's endpoints.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    configured: Option<SocketAddr>,
    latest: Option<SocketAddr>,
    seen: Vec<Seen>,
}

/// Up to [`MAX_DESTINATIONS`] addresses, without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Destinations {
    addrs: [Option<SocketAddr>; MAX_DESTINATIONS],
}

impl Destinations {
    fn push(&mut self, a: SocketAddr) {
        if self.addrs.contains(&Some(a)) {
            return;
        }
        if let Some(slot) = self.addrs.iter_mut().find(|s| s.is_none()) {
            *slot = Some(a);
        }
    }

    /// The addresses.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs.iter().flatten().copied()
    }

    /// True if there is nowhere to send.
    pub fn is_empty(&self) -> bool {
        self.addrs[0].is_none()
    }
}

impl Endpoints {
    /// Sets the endpoint from configuration (`wg set ... endpoint`). It becomes the
    /// address to use until the peer is heard from.
    pub fn set_configured(&mut self, addr: SocketAddr) {
        self.configured = Some(addr);
        self.latest = Some(addr);
        self.seen.clear();
    }

    /// The address `wg show` reports: the last one the peer was heard from, or the
    /// configured one.
    pub fn current(&self) -> Option<SocketAddr> {
        self.latest.or(self.configured)
    }

    /// Records that an authenticated packet from `addr` arrived on `path`.
    pub fn record(&mut self, path: PathId, addr: SocketAddr, now: Instant) {
        self.latest = Some(addr);
        if let Some(s) = self
            .seen
            .iter_mut()
            .find(|s| s.path == path && s.addr == addr)
        {
            s.at = now;
            return;
        }
        if self.seen.len() >= MAX_SEEN {
            if let Some(oldest) = self
                .seen
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.at)
                .map(|(i, _)| i)
            {
                self.seen.swap_remove(oldest);
            }
        }
        self.seen.push(Seen {
            path,
            addr,
            at: now,
        });
    }

    /// True if a copy from `addr` on `path` is worth authenticating to learn from: the
    /// pair is not known, or was last confirmed over a second ago.
    pub fn wants_refresh(&self, path: PathId, addr: SocketAddr, now: Instant) -> bool {
        !self.seen.iter().any(|s| {
            s.path == path && s.addr == addr && now.saturating_duration_since(s.at) < REFRESH
        })
    }

    /// Where a packet leaving on `path` goes.
    pub fn destinations(&self, path: PathId, now: Instant, window: Duration) -> Destinations {
        let mut d = Destinations::default();
        for s in &self.seen {
            if s.path == path && now.saturating_duration_since(s.at) <= window {
                d.push(s.addr);
            }
        }
        if d.is_empty() {
            if let Some(a) = self.current() {
                d.push(a);
            }
        }
        d
    }

    /// Every (path, address, age) remembered, for `mpwg show`.
    pub fn seen(&self, now: Instant) -> Vec<(PathId, SocketAddr, Duration)> {
        self.seen
            .iter()
            .map(|s| (s.path, s.addr, now.saturating_duration_since(s.at)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn configured_until_heard_then_per_path() {
        let now = Instant::now();
        let mut e = Endpoints::default();
        assert!(e.destinations(0, now, DEFAULT_WINDOW).is_empty());
        e.set_configured(a("10.0.0.1:51820"));
        assert_eq!(
            e.destinations(1, now, DEFAULT_WINDOW)
                .iter()
                .collect::<Vec<_>>(),
            vec![a("10.0.0.1:51820")]
        );
        e.record(0, a("10.1.1.2:51820"), now);
        e.record(1, a("10.1.2.2:51820"), now);
        assert_eq!(
            e.destinations(0, now, DEFAULT_WINDOW)
                .iter()
                .collect::<Vec<_>>(),
            vec![a("10.1.1.2:51820")]
        );
        assert_eq!(
            e.destinations(1, now, DEFAULT_WINDOW)
                .iter()
                .collect::<Vec<_>>(),
            vec![a("10.1.2.2:51820")]
        );
        assert_eq!(e.current(), Some(a("10.1.2.2:51820")));
    }

    #[test]
    fn a_multihomed_peer_gets_every_recent_address_on_a_path() {
        let t0 = Instant::now();
        let mut e = Endpoints::default();
        e.record(0, a("192.0.2.1:1000"), t0);
        e.record(0, a("198.51.100.1:2000"), t0 + Duration::from_secs(1));
        let d: Vec<_> = e
            .destinations(0, t0 + Duration::from_secs(2), DEFAULT_WINDOW)
            .iter()
            .collect();
        assert_eq!(d, vec![a("192.0.2.1:1000"), a("198.51.100.1:2000")]);
        // After the window, only the address still heard from remains.
        e.record(0, a("198.51.100.1:2000"), t0 + Duration::from_secs(20));
        let d: Vec<_> = e
            .destinations(0, t0 + Duration::from_secs(20), DEFAULT_WINDOW)
            .iter()
            .collect();
        assert_eq!(d, vec![a("198.51.100.1:2000")]);
    }

    #[test]
    fn a_path_not_heard_on_falls_back_to_the_latest_address() {
        let now = Instant::now();
        let mut e = Endpoints::default();
        e.set_configured(a("10.9.9.9:1"));
        e.record(0, a("10.1.1.2:51820"), now);
        let d: Vec<_> = e.destinations(1, now, DEFAULT_WINDOW).iter().collect();
        assert_eq!(d, vec![a("10.1.1.2:51820")]);
    }

    #[test]
    fn memory_is_bounded() {
        let now = Instant::now();
        let mut e = Endpoints::default();
        for i in 0..100u16 {
            e.record(
                0,
                SocketAddr::from(([10, 0, 0, 1], i)),
                now + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(e.seen(now).len(), MAX_SEEN);
        assert_eq!(
            e.destinations(0, now, DEFAULT_WINDOW).iter().count(),
            MAX_DESTINATIONS
        );
    }
}
