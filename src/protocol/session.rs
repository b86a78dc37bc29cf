//! A transport session: the keys from one handshake, sealing and opening data in place.
//!
//! A [`Session`] is shared by every worker thread through an `Arc`: keys are read-only,
//! the send counter is atomic, and the replay window's lock is held only to test or set
//! one bit. Packets are sealed in the buffer they were read into, which has
//! [`HEADROOM`] bytes in front for the header and room behind for padding and the tag.
//!
//! Key erasure: the raw key bytes come in a zeroizing holder ([`SessionKeys`], wiped
//! when dropped); ring's [`LessSafeKey`] keeps its own copy and does not wipe it, so a
//! session overwrites both of its keys in place with a zero key when it is dropped (see
//! `wipe`).

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

/// How long after a packet was committed a copy of it (from another path) may still
/// teach that path the peer's address: about one round trip of a slow uplink. An old
/// packet replayed later, from anywhere, teaches nothing.
pub const COPY_LEARN_WINDOW: std::time::Duration = std::time::Duration::from_millis(500);

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

/// Overwrites a ring key in place with the all-zero key. A ChaCha20-Poly1305
/// `LessSafeKey` holds its key words inline (no heap), so the assignment writes over the
/// very bytes of the old key; `black_box` keeps the compiler from dropping the store as
/// dead when the memory is freed right after. (ring offers no way to wipe its keys, and
/// `unsafe` volatile writes are not allowed outside `src/io/`.)
fn wipe(key: &mut LessSafeKey) {
    *key = aead_key(&[0; 32]);
    std::hint::black_box(&*key);
}

impl Drop for Session {
    fn drop(&mut self) {
        wipe(&mut self.send_key);
        wipe(&mut self.recv_key);
    }
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

    /// True if a copy the replay window refused may teach its path the peer's address:
    /// the packet it copies was committed at most [`COPY_LEARN_WINDOW`] before `now`, and
    /// the copy itself is authentic (decrypted in place, without touching the window;
    /// `authentic` when the caller already decrypted it). A fresh duplicate is proof that
    /// the peer sends there; an old packet replayed from elsewhere is not.
    pub fn copy_teaches(&self, msg: &mut [u8], authentic: bool, now: Instant) -> bool {
        let counter = Self::counter_of(msg);
        if !self
            .replay
            .lock()
            .committed_within(counter, now, COPY_LEARN_WINDOW)
        {
            return false;
        }
        authentic
            || self
                .recv_key
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
        if plain.is_ok() && !s.replay_window().commit_at(counter, s.created) {
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
        (Session::new(&a, now), Session::new(&a.mirrored(), now))
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
    fn only_fresh_authentic_copies_teach() {
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
        let t = b.created;
        assert!(b.copy_teaches(&mut msgs[199].clone(), false, t));
        assert!(b.copy_teaches(&mut msgs[10].clone(), false, t));
        assert!(b.copy_teaches(&mut msgs[10].clone(), true, t + COPY_LEARN_WINDOW));
        let late = t + COPY_LEARN_WINDOW + std::time::Duration::from_millis(1);
        assert!(
            !b.copy_teaches(&mut msgs[199].clone(), false, late),
            "a replay, later"
        );
        assert!(!b.copy_teaches(&mut msgs[199].clone(), true, late));
        let mut forged = msgs[199].clone();
        forged[20] ^= 1;
        assert!(!b.copy_teaches(&mut forged, false, t), "not authentic");
        let mut unseen = vec![0u8; 64];
        let n = a.seal(&mut unseen, 0, 1420).unwrap();
        assert!(
            !b.copy_teaches(&mut unseen[..n], false, t),
            "not a copy of anything"
        );
    }

    #[test]
    fn a_wiped_key_is_the_zero_key() {
        let real = [7u8; 32];
        let mut key = aead_key(&real);
        wipe(&mut key);
        let seal = |k: &LessSafeKey| {
            let mut body = *b"sixteen bytes!!!";
            let tag = k
                .seal_in_place_separate_tag(nonce(1), Aad::empty(), &mut body)
                .unwrap();
            (body, tag.as_ref().to_vec())
        };
        assert_eq!(seal(&key), seal(&aead_key(&[0; 32])));
        assert_ne!(seal(&key), seal(&aead_key(&real)));
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
