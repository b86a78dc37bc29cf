//! mac1, mac2 and cookie replies: WireGuard's defence against handshake floods.
//!
//! [`CookieChecker`] is the receiving side (one per device): it checks mac1 on every
//! handshake message, and under load demands a valid mac2, answering with a cookie reply
//! when it is missing. [`CookieState`] is the sending side (one per peer): it writes mac1
//! and, while it holds a fresh cookie, mac2.
//!
//! Macs are compared in constant time; the cookie secret is wiped when dropped; a cookie
//! reply is taken once (the mac1 it answers is forgotten then), so a replayed reply
//! changes nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::crypto::{
    ct_eq, hash, mac, mac_short_key, random_bytes, xaead_open, xaead_seal, TAG_LEN,
};
use super::messages::{cookie_reply, COOKIE_REPLY_LEN, TYPE_COOKIE_REPLY};

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";
/// How long a cookie secret, and a cookie, stays valid.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(120);

/// The key mac1 is computed with, for messages sent to the holder of `public`.
pub fn mac1_key(public: &[u8; 32]) -> [u8; 32] {
    hash(&[LABEL_MAC1, public])
}

/// The key cookie replies to the holder of `public` are encrypted with.
pub fn cookie_key(public: &[u8; 32]) -> [u8; 32] {
    hash(&[LABEL_COOKIE, public])
}

/// Offsets of mac1 and mac2 in a handshake message of length `len` (the last 32 bytes).
fn mac_offsets(len: usize) -> (usize, usize) {
    (len - 32, len - 16)
}

fn source_bytes(src: SocketAddr, out: &mut [u8; 18]) -> &[u8] {
    match src {
        SocketAddr::V4(a) => {
            out[..4].copy_from_slice(&a.ip().octets());
            out[4..6].copy_from_slice(&a.port().to_be_bytes());
            &out[..6]
        }
        SocketAddr::V6(a) => {
            out[..16].copy_from_slice(&a.ip().octets());
            out[16..18].copy_from_slice(&a.port().to_be_bytes());
            &out[..18]
        }
    }
}

/// The device's side: checks macs on incoming handshake messages and makes cookie replies.
/// mac1 needs no lock (the receive thread checks it on every handshake message); the
/// rotating cookie secret sits behind its own.
pub struct CookieChecker {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    secret: Mutex<(Zeroizing<[u8; 32]>, Option<Instant>)>,
}

/// The result of checking an incoming handshake message's macs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacCheck {
    /// mac1 is wrong: drop the message silently.
    BadMac1,
    /// mac1 is right, mac2 is missing or wrong.
    Mac1Only,
    /// Both are right: the sender has proven it owns its source address.
    Mac2Valid,
}

impl CookieChecker {
    /// A checker for a device whose static public key is `public`.
    pub fn new(public: &[u8; 32]) -> CookieChecker {
        CookieChecker {
            mac1_key: mac1_key(public),
            cookie_key: cookie_key(public),
            secret: Mutex::new((Zeroizing::new([0; 32]), None)),
        }
    }

    fn cookie_for(&self, src: SocketAddr, now: Instant) -> [u8; 16] {
        let mut secret = self.secret.lock();
        let fresh = secret
            .1
            .is_some_and(|born| now.saturating_duration_since(born) < COOKIE_LIFETIME);
        if !fresh {
            random_bytes(&mut secret.0[..]);
            secret.1 = Some(now);
        }
        let mut buf = [0u8; 18];
        mac(&secret.0, source_bytes(src, &mut buf))
    }

    /// True if `msg` (a handshake message of a valid length, at least 32 bytes) carries
    /// a valid mac1: it was made by someone who knows our public key. Needs no lock.
    pub fn mac1_ok(&self, msg: &[u8]) -> bool {
        let (m1, m2) = mac_offsets(msg.len());
        ct_eq(&mac(&self.mac1_key, &msg[..m1]), &msg[m1..m2])
    }

    /// Checks mac1 and mac2 of a handshake message (initiation or response).
    pub fn check(&self, msg: &[u8], src: SocketAddr, now: Instant) -> MacCheck {
        if !self.mac1_ok(msg) {
            return MacCheck::BadMac1;
        }
        let (_, m2) = mac_offsets(msg.len());
        let cookie = self.cookie_for(src, now);
        if ct_eq(&mac_short_key(&cookie, &msg[..m2]), &msg[m2..]) {
            MacCheck::Mac2Valid
        } else {
            MacCheck::Mac1Only
        }
    }

    /// A cookie reply to `msg` (whose mac1 was valid), sent from `src`.
    pub fn reply(&self, msg: &[u8], src: SocketAddr, now: Instant) -> [u8; COOKIE_REPLY_LEN] {
        let (m1, m2) = mac_offsets(msg.len());
        let cookie = self.cookie_for(src, now);
        let mut out = [0u8; COOKIE_REPLY_LEN];
        out[0] = TYPE_COOKIE_REPLY;
        // The receiver of the reply is the sender of the message: bytes 4..8 in both
        // handshake message types.
        out[cookie_reply::RECEIVER..cookie_reply::RECEIVER + 4].copy_from_slice(&msg[4..8]);
        let mut nonce = [0u8; 24];
        random_bytes(&mut nonce);
        out[cookie_reply::NONCE..cookie_reply::NONCE + 24].copy_from_slice(&nonce);
        xaead_seal(
            &self.cookie_key,
            &nonce,
            &cookie,
            &msg[m1..m2],
            &mut out[cookie_reply::COOKIE..cookie_reply::COOKIE + 16 + TAG_LEN],
        );
        out
    }
}

/// A peer's side: writes macs on outgoing handshake messages, keeps the last cookie.
pub struct CookieState {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    last_mac1: Option<[u8; 16]>,
    cookie: Option<([u8; 16], Instant)>,
}

impl CookieState {
    /// The state for messages sent to the peer whose static public key is `peer_public`.
    pub fn new(peer_public: &[u8; 32]) -> CookieState {
        CookieState {
            mac1_key: mac1_key(peer_public),
            cookie_key: cookie_key(peer_public),
            last_mac1: None,
            cookie: None,
        }
    }

    /// Writes mac1, and mac2 if a cookie younger than its lifetime is held, into `msg`.
    pub fn add_macs(&mut self, msg: &mut [u8], now: Instant) {
        let (m1, m2) = mac_offsets(msg.len());
        let mac1 = mac(&self.mac1_key, &msg[..m1]);
        msg[m1..m2].copy_from_slice(&mac1);
        self.last_mac1 = Some(mac1);
        let mac2 = match self.cookie {
            Some((cookie, got)) if now.saturating_duration_since(got) < COOKIE_LIFETIME => {
                mac_short_key(&cookie, &msg[..m2])
            }
            _ => [0u8; 16],
        };
        msg[m2..].copy_from_slice(&mac2);
    }

    /// True while a cookie reply would be taken: a mac1 was sent and no reply to it
    /// consumed yet.
    pub fn awaits_reply(&self) -> bool {
        self.last_mac1.is_some()
    }

    /// Takes a cookie reply. Returns false (and keeps nothing) if it does not decrypt
    /// against the mac1 this side last sent, or if a reply to that mac1 was already
    /// taken (as the kernel does: a reply is good once, so a replayed one cannot reset
    /// the cookie's age).
    pub fn consume_reply(&mut self, reply: &[u8], now: Instant) -> bool {
        let Some(last_mac1) = self.last_mac1 else {
            return false;
        };
        if reply.len() != COOKIE_REPLY_LEN {
            return false;
        }
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&reply[cookie_reply::NONCE..cookie_reply::NONCE + 24]);
        let mut cookie = [0u8; 16];
        if !xaead_open(
            &self.cookie_key,
            &nonce,
            &reply[cookie_reply::COOKIE..],
            &last_mac1,
            &mut cookie,
        ) {
            return false;
        }
        self.cookie = Some((cookie, now));
        self.last_mac1 = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trip_makes_mac2_valid() {
        let responder_pub = [9u8; 32];
        let checker = CookieChecker::new(&responder_pub);
        let mut state = CookieState::new(&responder_pub);
        let now = Instant::now();
        let src: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut msg = [0u8; 148];
        msg[0] = 1;
        state.add_macs(&mut msg, now);
        assert_eq!(checker.check(&msg, src, now), MacCheck::Mac1Only);
        let reply = checker.reply(&msg, src, now);
        assert!(state.consume_reply(&reply, now));
        assert!(
            !state.consume_reply(&reply, now),
            "a reply is taken once: a replay changes nothing"
        );
        state.add_macs(&mut msg, now);
        assert_eq!(checker.check(&msg, src, now), MacCheck::Mac2Valid);
        // From another address the cookie is worthless.
        let other: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert_eq!(checker.check(&msg, other, now), MacCheck::Mac1Only);
        // A changed byte breaks mac1.
        msg[10] ^= 1;
        assert_eq!(checker.check(&msg, src, now), MacCheck::BadMac1);
    }

    #[test]
    fn a_cookie_is_worthless_once_the_secret_rotates() {
        let responder_pub = [5u8; 32];
        let checker = CookieChecker::new(&responder_pub);
        let mut state = CookieState::new(&responder_pub);
        let t0 = Instant::now();
        let src: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut msg = [0u8; 148];
        msg[0] = 1;
        state.add_macs(&mut msg, t0);
        assert!(state.consume_reply(&checker.reply(&msg, src, t0), t0));
        let just_before = t0 + COOKIE_LIFETIME - Duration::from_secs(1);
        state.add_macs(&mut msg, just_before);
        assert_eq!(checker.check(&msg, src, just_before), MacCheck::Mac2Valid);
        // The same mac2 once the checker's secret is older than its lifetime.
        let after = t0 + COOKIE_LIFETIME + Duration::from_secs(1);
        assert_eq!(checker.check(&msg, src, after), MacCheck::Mac1Only);
        // And the initiator no longer writes a mac2 with a cookie that old.
        state.add_macs(&mut msg, after);
        assert_eq!(msg[148 - 16..], [0; 16]);
    }

    #[test]
    fn forged_cookie_reply_is_refused() {
        let mut state = CookieState::new(&[1u8; 32]);
        let mut msg = [0u8; 92];
        state.add_macs(&mut msg, Instant::now());
        let mut reply = [0u8; 64];
        reply[0] = 3;
        assert!(!state.consume_reply(&reply, Instant::now()));
    }
}
