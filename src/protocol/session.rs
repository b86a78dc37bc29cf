//! A transport session: the keys from one handshake, sealing and opening data in place.
//!
//! A [`Session`] is shared by every worker thread through an `Arc`: keys are read-only,
//! the send counter is atomic, and the replay window's lock is held only to test or set
//! one bit. Packets are sealed in the buffer they were read into, which has
//! [`HEADROOM`] bytes in front for the header and room behind for padding and the tag.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use crate::protocol::noise::handshake::SessionKeys;
use crate::protocol::noise::messages::{data, le64, DATA_HEADER_LEN, TYPE_DATA};
use crate::protocol::replay::ReplayWindow;

/// Bytes in front of a packet that sealing writes the header into.
pub const HEADROOM: usize = DATA_HEADER_LEN;
/// Bytes a sealed packet can grow by at the end: up to 15 of padding and a 16-byte tag.
pub const TAILROOM: usize = 15 + 16;
/// After this many messages a session is no longer used to send.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13) - 1;

/// How far behind the newest counter a duplicate may be and still teach a path the
/// peer's address.
pub const RECENT_COPY: u64 = 64;

/// Why a packet could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The session has sent REJECT_AFTER_MESSAGES packets: a new handshake is needed.
    #[error("session has used up its counters")]
    Exhausted,
    /// The buffer has no room for the padding and the tag.
    #[error("buffer too small to seal the packet in place")]
    NoRoom,
}

/// Why a data message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The tag did not verify.
    #[error("does not decrypt")]
    Decrypt,
    /// The counter is past REJECT_AFTER_MESSAGES.
    #[error("counter past the limit")]
    Exhausted,
}

/// Keys, counters and replay state of one session.
pub struct Session {
    /// The index the peer puts in packets to us.
    pub local_index: u32,
    /// The index we put in packets to the peer.
    pub remote_index: u32,
    /// Whether we sent the initiation of the handshake that made this session.
    pub initiator: bool,
    /// When the handshake finished.
    pub created: Instant,
    send_key: LessSafeKey,
    recv_key: LessSafeKey,
    send_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aead_key(k: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k).expect("32 bytes is a ChaCha20 key"))
}

/// The length a payload of `len` bytes is padded to: a multiple of 16, but never past
/// `mtu` when the payload itself fits in it.
pub fn padded_len(len: usize, mtu: usize) -> usize {
    let padded = len.div_ceil(16) * 16;
    if mtu > 0 && len <= mtu && padded > mtu {
        mtu
    } else {
        padded
    }
}

impl Session {
    /// A session from a finished handshake.
    pub fn new(keys: &SessionKeys, now: Instant) -> Session {
        Session {
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            initiator: keys.initiator,
            created: now,
            send_key: aead_key(&keys.send),
            recv_key: aead_key(&keys.recv),
            send_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::default()),
        }
    }

    /// How many messages have been sealed.
    pub fn sent(&self) -> u64 {
        self.send_counter.load(Ordering::Relaxed)
    }

    /// Seals in place. `buf[HEADROOM..HEADROOM + len]` holds the plaintext; the header is
    /// written in front, padding and tag behind. Returns the length of the message,
    /// which starts at `buf[0]`.
    pub fn seal(&self, buf: &mut [u8], len: usize, mtu: usize) -> Result<usize, SealError> {
        let padded = padded_len(len, mtu);
        let total = HEADROOM + padded + 16;
        if buf.len() < total {
            return Err(SealError::NoRoom);
        }
        let counter = self.send_counter.fetch_add(1, Ordering::Relaxed);
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(SealError::Exhausted);
        }
        buf[HEADROOM + len..HEADROOM + padded].fill(0);
        buf[..4].copy_from_slice(&[TYPE_DATA, 0, 0, 0]);
        buf[data::RECEIVER..data::RECEIVER + 4].copy_from_slice(&self.remote_index.to_le_bytes());
        buf[data::COUNTER..data::COUNTER + 8].copy_from_slice(&counter.to_le_bytes());
        let (body, tag) = buf[HEADROOM..total].split_at_mut(padded);
        let t = self
            .send_key
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), body)
            .map_err(|_| SealError::NoRoom)?;
        tag.copy_from_slice(t.as_ref());
        Ok(total)
    }

    /// The counter of a data message (the caller has classified it).
    pub fn counter_of(msg: &[u8]) -> u64 {
        le64(msg, data::COUNTER)
    }

    /// Checks that a copy the replay window refused is authentic and recent (among the
    /// last [`RECENT_COPY`] counters), by decrypting it in place without touching the
    /// window. A path learns the peer's address from such a copy: a fresh duplicate is
    /// proof that the peer sends there, while an old packet replayed from elsewhere is not.
    pub fn authenticate_recent_copy(&self, msg: &mut [u8]) -> bool {
        let counter = Self::counter_of(msg);
        if counter.saturating_add(RECENT_COPY) < self.replay.lock().next() {
            return false;
        }
        self.recv_key
            .open_in_place(nonce(counter), Aad::empty(), &mut msg[HEADROOM..])
            .is_ok()
    }

    /// Decrypts a data message in place without consulting the replay window: the caller
    /// checks it before and commits the counter after (in batches, one lock for many
    /// packets, through [`Session::replay_window`]). Returns the plaintext's range.
    pub fn decrypt(&self, msg: &mut [u8]) -> Result<Range<usize>, OpenError> {
        let counter = Self::counter_of(msg);
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(OpenError::Exhausted);
        }
        let plain_len = self
            .recv_key
            .open_in_place(nonce(counter), Aad::empty(), &mut msg[HEADROOM..])
            .map_err(|_| OpenError::Decrypt)?
            .len();
        Ok(HEADROOM..HEADROOM + plain_len)
    }

    /// The replay window, locked: hold it for one pass over a batch, never across a
    /// decryption.
    pub fn replay_window(&self) -> parking_lot::MutexGuard<'_, ReplayWindow> {
        self.replay.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the receive path does for one message: the window is checked, the message
    /// decrypted, the counter committed. None if the window refuses it.
    fn open(s: &Session, msg: &mut [u8]) -> Option<Result<Range<usize>, OpenError>> {
        let counter = Session::counter_of(msg);
        if s.replay_window().seen(counter) {
            return None;
        }
        let plain = s.decrypt(msg);
        if plain.is_ok() && !s.replay_window().commit(counter) {
            return None;
        }
        Some(plain)
    }

    fn pair() -> (Session, Session) {
        let now = Instant::now();
        let a = SessionKeys {
            send: [1; 32],
            recv: [2; 32],
            local_index: 10,
            remote_index: 20,
            initiator: true,
        };
        let b = SessionKeys {
            send: [2; 32],
            recv: [1; 32],
            local_index: 20,
            remote_index: 10,
            initiator: false,
        };
        (Session::new(&a, now), Session::new(&b, now))
    }

    #[test]
    fn seal_open_in_place_with_padding() {
        let (a, b) = pair();
        let mut buf = vec![0u8; HEADROOM + 100 + TAILROOM];
        buf[HEADROOM..HEADROOM + 100].copy_from_slice(&[0xab; 100]);
        let n = a.seal(&mut buf, 100, 1420).unwrap();
        assert_eq!(n, 16 + 112 + 16);
        let r = open(&b, &mut buf[..n]).unwrap().unwrap();
        assert_eq!(r.len(), 112);
        assert_eq!(&buf[r.start..r.start + 100], &[0xab; 100][..]);
        assert!(buf[r.start + 100..r.end].iter().all(|&x| x == 0));
    }

    #[test]
    fn replayed_message_is_refused() {
        let (a, b) = pair();
        let mut buf = vec![0u8; 64];
        let n = a.seal(&mut buf, 0, 1420).unwrap();
        let copy = buf[..n].to_vec();
        assert!(open(&b, &mut buf[..n]).unwrap().is_ok());
        let mut again = copy.clone();
        assert_eq!(open(&b, &mut again), None);
        assert!(b.replay_window().seen(0));
    }

    #[test]
    fn only_recent_authentic_copies_are_authenticated() {
        let (a, b) = pair();
        let mut msgs = Vec::new();
        for _ in 0..200 {
            let mut buf = vec![0u8; 64];
            let n = a.seal(&mut buf, 0, 1420).unwrap();
            buf.truncate(n);
            msgs.push(buf);
        }
        for m in &msgs {
            assert!(open(&b, &mut m.clone()).unwrap().is_ok());
        }
        assert!(b.authenticate_recent_copy(&mut msgs[199].clone()));
        assert!(b.authenticate_recent_copy(&mut msgs[150].clone()));
        assert!(
            !b.authenticate_recent_copy(&mut msgs[10].clone()),
            "too old"
        );
        let mut forged = msgs[199].clone();
        forged[20] ^= 1;
        assert!(!b.authenticate_recent_copy(&mut forged));
    }

    #[test]
    fn tampered_message_is_refused_and_not_committed() {
        let (a, b) = pair();
        let mut buf = vec![0u8; 64];
        let n = a.seal(&mut buf, 10, 1420).unwrap();
        let good = buf[..n].to_vec();
        buf[20] ^= 1;
        assert_eq!(open(&b, &mut buf[..n]), Some(Err(OpenError::Decrypt)));
        let mut good = good;
        assert!(
            open(&b, &mut good).is_some_and(|r| r.is_ok()),
            "a forgery must not burn the counter"
        );
    }

    #[test]
    fn padding_stops_at_the_mtu() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1420, 1420), 1424 - 4);
        assert_eq!(padded_len(1421, 1420), 1424);
    }

    #[test]
    fn no_room_is_an_error_not_a_panic() {
        let (a, _) = pair();
        let mut buf = vec![0u8; 20];
        assert_eq!(a.seal(&mut buf, 4, 1420), Err(SealError::NoRoom));
    }
}
