//! A peer: its configuration, handshake state, sessions, timers, endpoint and counters.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::{Mutex, RwLock};

use zeroize::Zeroizing;

use crate::multipath::endpoint::{Endpoints, Learned};
use crate::multipath::path::Source;
use crate::protocol::key::Key;
use crate::protocol::noise::cookie::CookieState;
use crate::protocol::noise::crypto::Secret;
use crate::protocol::noise::handshake::InitiatorState;
use crate::protocol::noise::tai64::Tai64n;
use crate::protocol::session::Session;
use crate::protocol::timers::Timers;

/// Packets kept while a handshake is under way, as the kernel's MAX_STAGED_PACKETS.
pub const MAX_STAGED: usize = 128;

/// The three session slots of a peer.
#[derive(Default)]
pub struct Sessions {
    /// The session used to send.
    pub current: Option<Arc<Session>>,
    /// The session before it, still accepted on receive.
    pub previous: Option<Arc<Session>>,
    /// A session we answered a handshake for, not yet confirmed by a data packet.
    pub next: Option<Arc<Session>>,
}

impl Sessions {
    /// Every session held.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Session>> {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
    }
}

/// An initiation that was answered. With duplicate paths the initiation reaches the peer
/// more than once; a stock peer that processes the copies in parallel (wireguard-go) may
/// accept two of them, answer both, and keep the session of the last. So for a few
/// seconds a further response with a new responder index replaces the session, and
/// both ends agree on the one the peer kept. A copy of a response already consumed (a
/// duplicate of the same message) changes nothing.
pub struct Answered {
    /// The initiator state, to consume further responses.
    pub state: InitiatorState,
    /// When the first response was consumed.
    pub at: Instant,
    /// Responder indices already consumed.
    pub responders: Vec<u32>,
}

/// Handshake and timer state, behind one lock.
pub struct HandshakeState {
    /// The preshared key (zero if none), wiped when dropped or replaced.
    pub psk: Zeroizing<[u8; 32]>,
    /// DH(our static, peer static), recomputed when the private key changes; wiped when
    /// dropped or replaced.
    pub static_static: Option<Secret>,
    /// mac1/mac2 writer and the last cookie.
    pub cookie: CookieState,
    /// Timer deadlines.
    pub timers: Timers,
    /// Our initiation awaiting a response.
    pub pending: Option<InitiatorState>,
    /// Our last initiation after its first response was consumed (see [`Answered`]).
    pub answered: Option<Answered>,
    /// When we last sent an initiation (rate limit: one per REKEY_TIMEOUT).
    pub last_initiation_sent: Option<Instant>,
    /// When we last consumed an initiation (flood limit).
    pub last_initiation_consumed: Option<Instant>,
    /// The greatest timestamp of a consumed initiation.
    pub last_timestamp: Tai64n,
    /// The one late-rekey handshake on receive has been sent.
    pub sent_lastminute_handshake: bool,
}

/// A configured peer.
pub struct Peer {
    /// The peer's static public key.
    pub public_key: Key,
    /// Handshake, cookie and timer state.
    pub handshake: Mutex<HandshakeState>,
    /// Session slots.
    pub sessions: RwLock<Sessions>,
    /// Where the peer is reached, per path.
    pub endpoints: Mutex<Endpoints>,
    /// Packets waiting for a session: whole buffers with headroom, and the packet length.
    pub staged: Mutex<VecDeque<(Vec<u8>, usize)>>,
    /// Bytes received from this peer (whole datagrams, as wg counts them).
    pub rx_bytes: AtomicU64,
    /// Bytes sent to this peer.
    pub tx_bytes: AtomicU64,
    /// Wall-clock time of the last completed handshake.
    pub last_handshake: Mutex<Option<SystemTime>>,
}

impl PartialEq for Peer {
    fn eq(&self, other: &Peer) -> bool {
        self.public_key == other.public_key
    }
}

impl Peer {
    /// A new peer with no sessions.
    pub fn new(public_key: Key, static_static: Option<Secret>) -> Peer {
        Peer {
            public_key,
            handshake: Mutex::new(HandshakeState {
                psk: Zeroizing::new([0; 32]),
                static_static,
                cookie: CookieState::new(&public_key.0),
                timers: Timers::default(),
                pending: None,
                answered: None,
                last_initiation_sent: None,
                last_initiation_consumed: None,
                last_timestamp: Tai64n::default(),
                sent_lastminute_handshake: false,
            }),
            sessions: RwLock::new(Sessions::default()),
            endpoints: Mutex::new(Endpoints::default()),
            staged: Mutex::new(VecDeque::new()),
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            last_handshake: Mutex::new(None),
        }
    }

    /// The address `wg show` reports as the endpoint.
    pub fn endpoint_addr(&self) -> Option<SocketAddr> {
        self.endpoints.lock().current()
    }

    /// Records where an authenticated first copy (or handshake message) came from: the
    /// peer roams there.
    pub fn saw_source(&self, src: Source, now: Instant) {
        self.endpoints
            .lock()
            .record_source(src, now, Learned::First);
    }

    /// Records where a fresh, authentic copy of a packet already committed came from:
    /// its path sends there too, but `wg show`'s endpoint stays (see
    /// [`crate::multipath::endpoint::Learned`]).
    pub fn saw_copy(&self, src: Source, now: Instant) {
        self.endpoints.lock().record_source(src, now, Learned::Copy);
    }

    /// The session to send with, if one is usable at `now`.
    pub fn send_session(&self, now: Instant) -> Option<Arc<Session>> {
        let s = self.sessions.read().current.clone()?;
        let usable = now.saturating_duration_since(s.created)
            < crate::protocol::timers::REJECT_AFTER_TIME
            && s.sent() < crate::protocol::session::REJECT_AFTER_MESSAGES;
        usable.then_some(s)
    }

    /// Adds to the byte counters.
    pub fn count_tx(&self, n: usize) {
        self.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Adds to the byte counters.
    pub fn count_rx(&self, n: usize) {
        self.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Queues a packet until a session exists, dropping the oldest past [`MAX_STAGED`].
    pub fn stage(&self, buf: &[u8], len: usize) {
        let mut q = self.staged.lock();
        if q.len() >= MAX_STAGED {
            q.pop_front();
        }
        q.push_back((buf.to_vec(), len));
    }
}
