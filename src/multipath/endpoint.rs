//! Where a peer is reached, per path.
//!
//! For each path, the addresses the peer's authenticated packets arrived from on that path
//! are remembered with the time they were last seen. A packet to the peer leaves on a path
//! towards every address seen on that path within the window (15 s by default): a peer
//! that is itself multi-homed, behind two NATs, gets every packet at each of its addresses.
//! A path on which the peer has not been heard recently sends to the address the peer was
//! last heard from on any path, or else to the configured endpoint.
//!
//! An address is learned in one of two ways ([`Learned`]): from a first copy, a packet
//! whose counter passed the replay window (the peer sent it, from there), or from a
//! duplicate, a copy of a packet committed moments before (how a path whose copies always
//! lose the race learns where the peer sends on it). A duplicate can be replayed by
//! anyone who saw the packet, so what it teaches counts for less: it never becomes the
//! `latest` address (`wg show`'s endpoint), and it never evicts an address learned from
//! a first copy.
//!
//! With each address goes the local address the peer sent to from there (when the socket
//! said, [`Source::local`]): packets to that address leave from it, so a host with several
//! addresses on one uplink answers from the one it was reached at. The latest first copy
//! sets it; a duplicate only teaches it with a new address.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::multipath::path::{PathId, Source};

/// How long an address seen on a path keeps receiving copies, by default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15);
/// Addresses remembered per peer, all paths together; the stalest is forgotten first.
pub const MAX_SEEN: usize = 16;
/// How often a known (path, address) pair is re-confirmed from duplicate copies.
const REFRESH: Duration = Duration::from_secs(1);
/// The most destinations one path sends a packet to.
pub const MAX_DESTINATIONS: usize = 4;

/// How an address was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// From a packet whose counter passed the replay window, or a handshake message.
    First,
    /// From a copy of a packet just committed (on another path, or earlier in a batch).
    Copy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    path: PathId,
    addr: SocketAddr,
    /// The local address the peer sent to, from `addr` on `path`.
    local: Option<IpAddr>,
    at: Instant,
    /// A first copy came from here (not only duplicates).
    first: bool,
}

/// A peer's endpoints.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    configured: Option<SocketAddr>,
    latest: Option<SocketAddr>,
    seen: Vec<Seen>,
}

/// Up to [`MAX_DESTINATIONS`] addresses, each with the local address to send from,
/// without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Destinations {
    addrs: [Option<(SocketAddr, Option<IpAddr>)>; MAX_DESTINATIONS],
}

impl Destinations {
    fn push(&mut self, a: SocketAddr, local: Option<IpAddr>) {
        if self.iter().any(|x| x == a) {
            return;
        }
        if let Some(slot) = self.addrs.iter_mut().find(|s| s.is_none()) {
            *slot = Some((a, local));
        }
    }

    /// The addresses.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs.iter().flatten().map(|(a, _)| *a)
    }

    /// The addresses, each with the local address to send to it from (None: the
    /// kernel's choice).
    pub fn each(&self) -> impl Iterator<Item = (SocketAddr, Option<IpAddr>)> + '_ {
        self.addrs.iter().flatten().copied()
    }

    /// True if there is nowhere to send.
    pub fn is_empty(&self) -> bool {
        self.addrs[0].is_none()
    }
}

impl Endpoints {
    /// Sets the endpoint from configuration (`wg set ... endpoint`). It becomes the
    /// address to use until the peer is heard from. Setting the endpoint already
    /// configured changes nothing (a reload of an unchanged configuration, `wg
    /// syncconf`, must not forget where the peer was heard on each path).
    pub fn set_configured(&mut self, addr: SocketAddr) {
        if self.configured == Some(addr) {
            return;
        }
        self.configured = Some(addr);
        self.latest = Some(addr);
        self.seen.clear();
    }

    /// The configured endpoint.
    pub fn configured(&self) -> Option<SocketAddr> {
        self.configured
    }

    /// The address `wg show` reports: the last one the peer was heard from, or the
    /// configured one.
    pub fn current(&self) -> Option<SocketAddr> {
        self.latest.or(self.configured)
    }

    /// Records that an authenticated first copy (or handshake message) from `addr`
    /// arrived on `path`: the peer roams there.
    pub fn record(&mut self, path: PathId, addr: SocketAddr, now: Instant) {
        self.record_as(path, addr, now, Learned::First);
    }

    /// Records that a fresh, authentic copy of a packet already committed came from
    /// `addr` on `path` (see [`Learned`] for what a copy may and may not change).
    pub fn record_copy(&mut self, path: PathId, addr: SocketAddr, now: Instant) {
        self.record_as(path, addr, now, Learned::Copy);
    }

    /// Records an address learned as `how` says.
    pub fn record_as(&mut self, path: PathId, addr: SocketAddr, now: Instant, how: Learned) {
        self.record_source(
            Source {
                addr,
                path,
                local: None,
            },
            now,
            how,
        );
    }

    /// Records where a packet came from (its address, path and the local address it was
    /// sent to), learned as `how` says.
    pub fn record_source(&mut self, src: Source, now: Instant, how: Learned) {
        let Source { addr, path, local } = src;
        let first = how == Learned::First;
        if first {
            self.latest = Some(addr);
        }
        if let Some(s) = self
            .seen
            .iter_mut()
            .find(|s| s.path == path && s.addr == addr)
        {
            s.at = now;
            s.first |= first;
            if first && local.is_some() {
                s.local = local;
            }
            return;
        }
        if self.seen.len() >= MAX_SEEN {
            // The stalest address learned from copies only goes first; an address learned
            // from a first copy goes only to make room for another such.
            let stalest = |copies_only: bool| {
                self.seen
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !copies_only || !s.first)
                    .min_by_key(|(_, s)| s.at)
                    .map(|(i, _)| i)
            };
            let Some(evict) = stalest(true).or_else(|| stalest(false).filter(|_| first)) else {
                return;
            };
            self.seen.swap_remove(evict);
        }
        self.seen.push(Seen {
            path,
            addr,
            local,
            at: now,
            first,
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
                d.push(s.addr, s.local);
            }
        }
        if d.is_empty() {
            // Not heard on this path lately: the kernel picks the source (a local address
            // learned on another path belongs to another uplink).
            if let Some(a) = self.current() {
                d.push(a, None);
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

    #[test]
    fn copies_never_set_latest_nor_evict_first_copies() {
        let t0 = Instant::now();
        let mut e = Endpoints::default();
        e.set_configured(a("10.0.0.2:51820"));
        e.record(0, a("10.0.0.2:51820"), t0);
        e.record_copy(1, a("10.0.1.2:51820"), t0);
        assert_eq!(
            e.current(),
            Some(a("10.0.0.2:51820")),
            "a copy is not latest"
        );
        let d: Vec<_> = e.destinations(1, t0, DEFAULT_WINDOW).iter().collect();
        assert_eq!(d, vec![a("10.0.1.2:51820")], "but its path sends there");
        // Fill the table with first copies, then flood it with copies from new places.
        for i in 0..(MAX_SEEN as u16 - 2) {
            let at = t0 + Duration::from_millis(u64::from(i) + 1);
            e.record(0, SocketAddr::from(([10, 0, 0, 3], i)), at);
        }
        assert_eq!(e.seen(t0).len(), MAX_SEEN);
        for i in 0..100u16 {
            let at = t0 + Duration::from_secs(1) + Duration::from_millis(u64::from(i));
            e.record_copy(1, SocketAddr::from(([192, 0, 2, 66], i)), at);
        }
        let seen = e.seen(t0);
        assert!(
            seen.iter().any(|(_, ad, _)| *ad == a("10.0.0.2:51820")),
            "first copies stay: {seen:?}"
        );
        assert_eq!(
            seen.iter()
                .filter(|(_, ad, _)| ad.ip() == a("192.0.2.66:1").ip())
                .count(),
            1,
            "copies only take the one slot a copy held"
        );
        assert_eq!(e.current(), Some(a("10.0.0.3:13")));
        // A first copy from a new place may evict: a copy-only entry first.
        e.record(1, a("10.0.1.9:1"), t0 + Duration::from_secs(3));
        assert!(!e
            .seen(t0)
            .iter()
            .any(|(_, ad, _)| ad.ip() == a("192.0.2.66:1").ip()));
        assert_eq!(e.current(), Some(a("10.0.1.9:1")));
    }

    #[test]
    fn setting_the_same_endpoint_again_changes_nothing() {
        let t0 = Instant::now();
        let mut e = Endpoints::default();
        e.set_configured(a("10.0.0.2:51820"));
        e.record(1, a("10.0.1.2:51820"), t0);
        e.set_configured(a("10.0.0.2:51820"));
        assert_eq!(e.current(), Some(a("10.0.1.2:51820")));
        assert_eq!(e.seen(t0).len(), 1);
        e.set_configured(a("10.0.0.7:51820"));
        assert_eq!(e.current(), Some(a("10.0.0.7:51820")));
        assert!(e.seen(t0).is_empty());
    }

    #[test]
    fn each_address_goes_with_the_local_address_the_peer_sent_to() {
        let t0 = Instant::now();
        let window = Duration::from_secs(15);
        let mut e = Endpoints::default();
        e.set_configured(a("192.0.2.1:51820"));
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let src = |path, addr: &str, local: &str| Source {
            addr: a(addr),
            path,
            local: ip(local),
        };
        let each = |e: &Endpoints, path, now| -> Vec<(SocketAddr, Option<IpAddr>)> {
            e.destinations(path, now, window).each().collect()
        };
        // Not heard yet: the configured endpoint, from the kernel's choice.
        assert_eq!(each(&e, 0, t0), vec![(a("192.0.2.1:51820"), None)]);

        e.record_source(src(0, "192.0.2.1:51820", "10.0.0.9"), t0, Learned::First);
        assert_eq!(
            each(&e, 0, t0),
            vec![(a("192.0.2.1:51820"), ip("10.0.0.9"))]
        );
        // The peer writes to another of our addresses: the latest first copy says which.
        e.record_source(src(0, "192.0.2.1:51820", "10.0.0.1"), t0, Learned::First);
        assert_eq!(
            each(&e, 0, t0),
            vec![(a("192.0.2.1:51820"), ip("10.0.0.1"))]
        );
        // A duplicate (replayable by anyone) does not move it, nor does a receive that
        // did not say.
        e.record_source(src(0, "192.0.2.1:51820", "10.0.0.7"), t0, Learned::Copy);
        e.record(0, a("192.0.2.1:51820"), t0);
        assert_eq!(
            each(&e, 0, t0),
            vec![(a("192.0.2.1:51820"), ip("10.0.0.1"))]
        );
        // A path the peer was not heard on sends to the latest address, from the
        // kernel's choice: that local address is another path's.
        assert_eq!(each(&e, 1, t0), vec![(a("192.0.2.1:51820"), None)]);
        // A new address learned from a copy brings its local address.
        e.record_source(src(1, "198.51.100.4:4000", "10.1.0.1"), t0, Learned::Copy);
        assert_eq!(
            each(&e, 1, t0),
            vec![(a("198.51.100.4:4000"), ip("10.1.0.1"))]
        );
    }
}
