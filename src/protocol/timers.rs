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
/// Retries before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT.
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

fn jitter() -> Duration {
    let r = crate::protocol::noise::crypto::random_u32();
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

    /// Sets the persistent keepalive interval; a new nonzero interval fires at once, as
    /// the kernel does, so a peer behind NAT is reachable right after configuration.
    pub fn set_persistent_interval(&mut self, secs: u16, now: Instant) {
        self.persistent_interval = secs;
        self.persistent_keepalive = (secs > 0).then_some(now);
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
            if self.handshake_attempts >= MAX_HANDSHAKE_ATTEMPTS {
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
        assert_eq!(retries, MAX_HANDSHAKE_ATTEMPTS);
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
