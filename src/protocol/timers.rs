//! Per-peer timers, as the WireGuard paper (section 6) and the kernel define them.
//!
//! Pure state: events from the data path (`on_*`) arm and disarm deadlines; the daemon
//! calls [`Timers::expired`] with the current time and acts on what it returns.

use std::time::{Duration, Instant};

/// A session is renegotiated after this many messages.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// The initiator of a session renegotiates after this long.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// No session is used after this long.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Handshakes are retried for this long before giving up.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Time between handshake attempts.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// A keepalive follows a received packet after this long if nothing else was sent.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// REKEY_ATTEMPT_TIME / REKEY_TIMEOUT, the kernel's MAX_TIMER_HANDSHAKES: the handshake
/// is given up once more retries than this were sent, so a peer gets this many plus two
/// initiations in all (the first and 19 retries, as the kernel sends).
pub const MAX_HANDSHAKE_ATTEMPTS: u32 = 18;
/// Up to this much random delay is added to handshake timers.
pub const MAX_JITTER: Duration = Duration::from_millis(333);

/// What a timer asks for when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expired {
    /// Send the handshake initiation again (the last one got no answer).
    pub retransmit_handshake: bool,
    /// Handshake attempts exhausted: drop queued packets and stop trying.
    pub give_up: bool,
    /// Send a keepalive: we received data and have sent nothing since.
    pub send_keepalive: bool,
    /// Start a handshake: we sent data and heard nothing back.
    pub new_handshake: bool,
    /// Erase every session key: no handshake for 3 × REJECT_AFTER_TIME.
    pub zero_keys: bool,
    /// Send the persistent keepalive.
    pub persistent_keepalive: bool,
}

/// The timer deadlines of one peer.
#[derive(Debug, Default)]
pub struct Timers {
    retransmit_handshake: Option<Instant>,
    send_keepalive: Option<Instant>,
    new_handshake: Option<Instant>,
    zero_key_material: Option<Instant>,
    persistent_keepalive: Option<Instant>,
    need_another_keepalive: bool,
    /// Handshake attempts since the last completed one.
    pub handshake_attempts: u32,
    /// Persistent keepalive interval in seconds (0 = off).
    pub persistent_interval: u16,
}

thread_local! {
    /// The jitter's generator: seeded once per thread from the operating system, then
    /// a few arithmetic operations per draw. Jitter only spreads timers apart, so it need
    /// not be unpredictable; drawing it from the OS cost one getrandom(2) per TX batch
    /// (every batch re-arms the timers).
    static JITTER: std::cell::RefCell<rand_xoshiro::Xoshiro256PlusPlus> = {
        use rand_core::SeedableRng;
        let mut seed = [0u8; 32];
        crate::protocol::noise::crypto::random_bytes(&mut seed);
        std::cell::RefCell::new(rand_xoshiro::Xoshiro256PlusPlus::from_seed(seed))
    };
}

fn jitter() -> Duration {
    use rand_core::RngCore;
    let r = JITTER.with(|g| g.borrow_mut().next_u32());
    Duration::from_millis(u64::from(r) % (MAX_JITTER.as_millis() as u64 + 1))
}

impl Timers {
    /// An initiation was sent.
    pub fn on_handshake_initiated(&mut self, now: Instant) {
        self.retransmit_handshake = Some(now + REKEY_TIMEOUT + jitter());
    }

    /// A handshake completed (we consumed a response, or a first data packet confirmed
    /// the session we answered).
    pub fn on_handshake_complete(&mut self) {
        self.retransmit_handshake = None;
        self.handshake_attempts = 0;
    }

    /// New session keys were derived.
    pub fn on_session_derived(&mut self, now: Instant) {
        self.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
    }

    /// A data packet (not a keepalive) was sent.
    pub fn on_data_sent(&mut self, now: Instant) {
        if self.new_handshake.is_none() {
            self.new_handshake = Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter());
        }
    }

    /// A data packet (not a keepalive) was received.
    pub fn on_data_received(&mut self, now: Instant) {
        if self.send_keepalive.is_none() {
            self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        } else {
            self.need_another_keepalive = true;
        }
    }

    /// Any authenticated packet (data, keepalive, handshake) was sent.
    pub fn on_authenticated_sent(&mut self, now: Instant) {
        self.send_keepalive = None;
        self.on_traversal(now);
    }

    /// Any authenticated packet was received.
    pub fn on_authenticated_received(&mut self, now: Instant) {
        self.new_handshake = None;
        self.on_traversal(now);
    }

    fn on_traversal(&mut self, now: Instant) {
        if self.persistent_interval > 0 {
            self.persistent_keepalive =
                Some(now + Duration::from_secs(u64::from(self.persistent_interval)));
        }
    }

    /// Sets the persistent keepalive interval. As the kernel does, a keepalive fires at
    /// once only when the interval goes from off to on (so a peer behind NAT is
    /// reachable right after configuration); a `set` that repeats or changes a nonzero
    /// interval re-arms the timer from now, and sends nothing.
    pub fn set_persistent_interval(&mut self, secs: u16, now: Instant) {
        let was = self.persistent_interval;
        self.persistent_interval = secs;
        self.persistent_keepalive = match (was, secs) {
            (_, 0) => None,
            (0, _) => Some(now),
            (_, s) if s == was => self.persistent_keepalive,
            (_, s) => Some(now + Duration::from_secs(u64::from(s))),
        };
    }

    /// Stops every timer (the peer is being removed or its keys erased).
    pub fn stop_all(&mut self) {
        let interval = self.persistent_interval;
        *self = Timers::default();
        self.persistent_interval = interval;
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every deadline at or before `now`, disarming it, and says what to do.
    pub fn expired(&mut self, now: Instant) -> Expired {
        let mut e = Expired::default();
        let due = |t: &mut Option<Instant>| {
            if t.is_some_and(|d| d <= now) {
                *t = None;
                true
            } else {
                false
            }
        };
        if due(&mut self.retransmit_handshake) {
            if self.handshake_attempts > MAX_HANDSHAKE_ATTEMPTS {
                e.give_up = true;
                self.send_keepalive = None;
                if self.zero_key_material.is_none() {
                    self.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
                }
            } else {
                self.handshake_attempts += 1;
                e.retransmit_handshake = true;
            }
        }
        if due(&mut self.send_keepalive) {
            e.send_keepalive = true;
            if self.need_another_keepalive {
                self.need_another_keepalive = false;
                self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
            }
        }
        if due(&mut self.new_handshake) {
            e.new_handshake = true;
        }
        if due(&mut self.zero_key_material) {
            e.zero_keys = true;
        }
        if due(&mut self.persistent_keepalive) && self.persistent_interval > 0 {
            e.persistent_keepalive = true;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmits_then_gives_up() {
        let mut t = Timers::default();
        let mut now = Instant::now();
        t.on_handshake_initiated(now);
        let mut retries = 0;
        loop {
            now += REKEY_TIMEOUT + MAX_JITTER;
            let e = t.expired(now);
            if e.give_up {
                break;
            }
            assert!(e.retransmit_handshake);
            retries += 1;
            t.on_handshake_initiated(now);
        }
        // The kernel's count: the first initiation and 19 retries, 20 in all.
        assert_eq!(retries, MAX_HANDSHAKE_ATTEMPTS + 1);
        assert_eq!(retries + 1, 20);
    }

    #[test]
    fn keepalive_after_receive_unless_something_was_sent() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.on_data_received(now);
        assert!(!t.expired(now + Duration::from_secs(9)).send_keepalive);
        assert!(t.expired(now + KEEPALIVE_TIMEOUT).send_keepalive);
        t.on_data_received(now);
        t.on_authenticated_sent(now + Duration::from_secs(1));
        assert_eq!(t.expired(now + KEEPALIVE_TIMEOUT), Expired::default());
    }

    #[test]
    fn unanswered_data_starts_a_handshake() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.on_data_sent(now);
        assert!(!t.expired(now + KEEPALIVE_TIMEOUT).new_handshake);
        assert!(
            t.expired(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + MAX_JITTER)
                .new_handshake
        );
        t.on_data_sent(now);
        t.on_authenticated_received(now + Duration::from_secs(1));
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn persistent_keepalive_fires_at_once_only_when_turned_on() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.set_persistent_interval(25, now);
        assert!(t.expired(now).persistent_keepalive, "off to on: at once");
        // A reload with the same interval (wg syncconf) sends nothing.
        let later = now + Duration::from_secs(3);
        t.set_persistent_interval(25, later);
        assert!(!t.expired(later).persistent_keepalive);
        // A new nonzero interval neither.
        t.set_persistent_interval(30, later);
        assert!(!t.expired(later).persistent_keepalive);
        assert!(
            t.expired(later + Duration::from_secs(30))
                .persistent_keepalive
        );
        // Off, then on again: at once.
        t.set_persistent_interval(0, later);
        assert_eq!(t.next_deadline(), None);
        t.set_persistent_interval(10, later);
        assert!(t.expired(later).persistent_keepalive);
    }

    #[test]
    fn persistent_keepalive_fires_on_interval() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.set_persistent_interval(25, now);
        assert!(t.expired(now).persistent_keepalive);
        t.on_authenticated_sent(now);
        assert!(
            !t.expired(now + Duration::from_secs(24))
                .persistent_keepalive
        );
        assert!(
            t.expired(now + Duration::from_secs(25))
                .persistent_keepalive
        );
    }
}
