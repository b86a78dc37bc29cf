//! A path's state, followed by interface name. Pure: link observations and `now` in,
//! the new state and what the socket layer must do out.
//!
//! A path is an interface *name*. The index is only what that name resolves to now:
//! when the interface goes away the path is [`LinkState::Absent`] (it has no socket and sends
//! nothing); when an interface of that name appears again, whatever its index, the path
//! asks for a new socket bound to it ([`SocketChange::Open`]) and is [`LinkState::Up`] as
//! soon as its link is.
//!
//! This is the path's *link* lifecycle. Its health (`up`, `degraded`, `down` from
//! probes, send errors and silence) is [`crate::multipath::health`]'s; what a path shows
//! and the scheduler sees combines the two: an `absent` or `down` link wins over health.

use std::time::{Duration, Instant};

/// What a path can do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// The interface exists, is administratively up and has carrier: the path sends.
    Up,
    /// The interface exists but is down or has no carrier: the path sends nothing,
    /// unless no path is up (then every path with a socket is tried).
    Down,
    /// No interface has the path's name: the path has no socket and sends nothing.
    Absent,
}

impl LinkState {
    /// The word `mpwg show` prints: `up`, `down`, `absent`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Absent => "absent",
        }
    }

    /// True if the scheduler may pick the path in the normal case.
    pub fn is_up(self) -> bool {
        self == LinkState::Up
    }
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An interface as a link observation reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Its index.
    pub index: u32,
    /// Administratively up with carrier.
    pub up: bool,
}

/// What the socket layer must do after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketChange {
    /// Nothing: the socket (or its absence) stays as it is.
    Keep,
    /// The name now resolves to this index (a new interface, or the first one): close
    /// the old socket, if any, and open one bound to the interface.
    Open(u32),
    /// The interface is gone (deleted, or renamed away): close the socket.
    Close,
}

/// The outcome of one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The state before.
    pub from: LinkState,
    /// The state after.
    pub to: LinkState,
    /// What to do with the socket.
    pub socket: SocketChange,
}

impl Change {
    /// True if the state changed (a change of index alone is not one).
    pub fn state_changed(&self) -> bool {
        self.from != self.to
    }

    /// True if nothing at all changed.
    pub fn is_none(&self) -> bool {
        !self.state_changed() && self.socket == SocketChange::Keep
    }
}

/// One path's link: its interface name, what the name resolves to, its state, and when
/// the state last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathLink {
    name: String,
    index: Option<u32>,
    state: LinkState,
    since: Instant,
}

impl PathLink {
    /// A path on interface `name`, as `seen` now (None: no such interface yet).
    /// Returns it with the socket change its start needs (`Open` if the interface
    /// exists).
    pub fn new(name: impl Into<String>, seen: Option<Seen>, now: Instant) -> (PathLink, Change) {
        let mut link = PathLink {
            name: name.into(),
            index: None,
            state: LinkState::Absent,
            since: now,
        };
        let change = link.observe(seen, now);
        (link, change)
    }

    /// The interface name: what identifies the path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index the name resolves to now (None while absent).
    pub fn index(&self) -> Option<u32> {
        self.index
    }

    /// The state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// When the state last changed (or the path was made).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// How long the path has been in its state.
    pub fn for_how_long(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }

    /// The interface of the path's name is now as `seen` (None: there is none).
    pub fn observe(&mut self, seen: Option<Seen>, now: Instant) -> Change {
        let from = self.state;
        let (to, socket) = match seen {
            None => (
                LinkState::Absent,
                if self.index.is_some() {
                    SocketChange::Close
                } else {
                    SocketChange::Keep
                },
            ),
            Some(s) => (
                if s.up { LinkState::Up } else { LinkState::Down },
                if self.index == Some(s.index) {
                    SocketChange::Keep
                } else {
                    SocketChange::Open(s.index)
                },
            ),
        };
        self.index = seen.map(|s| s.index);
        if to != from {
            self.state = to;
            self.since = now;
        }
        Change { from, to, socket }
    }

    /// Netlink said interface `index` is named `name` and is (or is not) `up`.
    /// Concerns this path if the name is its own, or if the index was its interface's
    /// (which was then renamed away: the path follows the name, so it is absent).
    pub fn on_new_link(&mut self, index: u32, name: &str, up: bool, now: Instant) -> Change {
        if name == self.name {
            self.observe(Some(Seen { index, up }), now)
        } else if self.index == Some(index) {
            self.observe(None, now)
        } else {
            self.unchanged()
        }
    }

    /// Netlink said interface `index` was deleted.
    pub fn on_del_link(&mut self, index: u32, now: Instant) -> Change {
        if self.index == Some(index) {
            self.observe(None, now)
        } else {
            self.unchanged()
        }
    }

    fn unchanged(&self) -> Change {
        Change {
            from: self.state,
            to: self.state,
            socket: SocketChange::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(index: u32, up: bool) -> Option<Seen> {
        Some(Seen { index, up })
    }

    #[test]
    fn a_path_starts_as_its_interface_is() {
        let t0 = Instant::now();
        let (l, c) = PathLink::new("eth1", seen(4, true), t0);
        assert_eq!(
            (l.state(), l.index(), c.socket),
            (LinkState::Up, Some(4), SocketChange::Open(4))
        );
        let (l, c) = PathLink::new("eth1", seen(4, false), t0);
        assert_eq!(
            (l.state(), c.socket),
            (LinkState::Down, SocketChange::Open(4))
        );
        let (l, c) = PathLink::new("ppp0", None, t0);
        assert_eq!(
            (l.state(), l.index(), c.socket),
            (LinkState::Absent, None, SocketChange::Keep)
        );
        assert_eq!(l.since(), t0);
        assert_eq!(l.name(), "ppp0");
    }

    #[test]
    fn down_and_up_again_keeps_the_socket_and_records_the_time() {
        let t0 = Instant::now();
        let (mut l, _) = PathLink::new("eth1", seen(4, true), t0);
        let t1 = t0 + Duration::from_secs(3);
        let c = l.on_new_link(4, "eth1", false, t1);
        assert_eq!(
            c,
            Change {
                from: LinkState::Up,
                to: LinkState::Down,
                socket: SocketChange::Keep
            }
        );
        assert_eq!(l.since(), t1);
        assert_eq!(
            l.for_how_long(t1 + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        // The same news again changes nothing, not even the time.
        assert!(l
            .on_new_link(4, "eth1", false, t1 + Duration::from_secs(1))
            .is_none());
        assert_eq!(l.since(), t1);
        let t2 = t1 + Duration::from_secs(5);
        let c = l.on_new_link(4, "eth1", true, t2);
        assert_eq!(
            (c.from, c.to, c.socket),
            (LinkState::Down, LinkState::Up, SocketChange::Keep)
        );
        assert_eq!(l.since(), t2);
    }

    #[test]
    fn a_deleted_interface_makes_the_path_absent_and_a_new_one_rejoins() {
        let t0 = Instant::now();
        let (mut l, _) = PathLink::new("wwan0", seen(4, true), t0);
        // Other interfaces' news does not concern it.
        assert!(l.on_del_link(9, t0).is_none());
        assert!(l.on_new_link(9, "eth0", true, t0).is_none());

        let t1 = t0 + Duration::from_secs(1);
        let c = l.on_del_link(4, t1);
        assert_eq!(
            (c.from, c.to, c.socket),
            (LinkState::Up, LinkState::Absent, SocketChange::Close)
        );
        assert_eq!((l.index(), l.since()), (None, t1));
        // Deleted twice (a resync after lost events): nothing more to do.
        assert!(l.on_del_link(4, t1).is_none());

        // Re-created with a new index, link down at first: a socket can be bound already.
        let t2 = t1 + Duration::from_secs(1);
        let c = l.on_new_link(11, "wwan0", false, t2);
        assert_eq!(
            (c.from, c.to, c.socket),
            (LinkState::Absent, LinkState::Down, SocketChange::Open(11))
        );
        let t3 = t2 + Duration::from_millis(300);
        let c = l.on_new_link(11, "wwan0", true, t3);
        assert_eq!((c.to, c.socket), (LinkState::Up, SocketChange::Keep));
        assert_eq!((l.index(), l.since()), (Some(11), t3));
    }

    #[test]
    fn a_renamed_interface_leaves_the_path_and_the_name_follows() {
        let t0 = Instant::now();
        let (mut l, _) = PathLink::new("eth1", seen(4, true), t0);
        // eth1 renamed to old1: the path is eth1, not index 4.
        let c = l.on_new_link(4, "old1", true, t0);
        assert_eq!((c.to, c.socket), (LinkState::Absent, SocketChange::Close));
        // Another interface takes the name.
        let c = l.on_new_link(5, "eth1", true, t0);
        assert_eq!((c.to, c.socket), (LinkState::Up, SocketChange::Open(5)));
        // The name moves to a new index without a deletion seen (events were lost).
        let c = l.observe(seen(6, true), t0);
        assert_eq!(
            (c.from, c.to, c.socket),
            (LinkState::Up, LinkState::Up, SocketChange::Open(6))
        );
        assert!(!c.state_changed());
    }

    #[test]
    fn states_print_as_mpwg_show_does() {
        let words: Vec<String> = [LinkState::Up, LinkState::Down, LinkState::Absent]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(words, ["up", "down", "absent"]);
        assert!(LinkState::Up.is_up() && !LinkState::Down.is_up() && !LinkState::Absent.is_up());
    }
}
