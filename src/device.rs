//! The device: the sans-IO heart of the tunnel. It owns the private key, the peers, the
//! allowed-IPs table and the index table, and turns
//!
//! * an IP packet from the TUN into a sealed datagram for the path layer ([`Device::send_ip_packet`]),
//! * a datagram from a path into an IP packet for the TUN, or a handshake answer
//!   ([`Device::receive`]),
//! * the passage of time into retransmissions, keepalives and rekeys ([`Device::handle_timeout`]).
//!
//! Time is always passed in. Nothing here opens a socket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};

use crate::allowedips::AllowedIps;
use crate::key::Key;
use crate::noise::cookie::{CookieChecker, MacCheck};
use crate::noise::handshake::{self, StaticKeys};
use crate::noise::messages::{classify, le32, Kind, DATA_HEADER_LEN};
use crate::noise::tai64::Tai64n;
use crate::path::{Source, Transmit};
use crate::peer::Peer;
use crate::session::{Session, HEADROOM, TAILROOM};
use crate::timers::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME, REKEY_TIMEOUT,
};
use crate::uapi::{DeviceSnapshot, PeerSnapshot, SetRequest};

/// Handshake messages per second above which the device is "under load" and demands mac2.
pub const UNDER_LOAD_HANDSHAKES_PER_SEC: u32 = 256;
/// Initiations from one peer closer together than this are a flood and are dropped.
const INITIATION_MIN_INTERVAL: Duration = Duration::from_millis(20);

/// What an index in a received message points at.
#[derive(Clone)]
enum IndexEntry {
    /// Our pending initiation to this peer.
    Handshake(Arc<Peer>),
    /// A session with this peer.
    Session(Arc<Peer>, Arc<Session>),
}

/// Configuration-time state, behind one read-write lock.
#[derive(Default)]
struct Config {
    keys: Option<StaticKeys>,
    cookie: Option<CookieChecker>,
    listen_port: u16,
    fwmark: u32,
    peers: HashMap<Key, Arc<Peer>>,
    order: Vec<Key>,
    /// Shared with the workers' caches as a snapshot; copied on write.
    allowed: Arc<AllowedIps<Arc<Peer>>>,
}

/// Counters of what the device dropped, and why.
#[derive(Debug, Default)]
pub struct DropCounters {
    /// Datagrams that are not WireGuard messages.
    pub malformed: AtomicU64,
    /// Handshake messages whose mac1 was wrong.
    pub bad_mac1: AtomicU64,
    /// Handshake messages that did not decrypt, or came from an unknown peer.
    pub bad_handshake: AtomicU64,
    /// Data messages for an unknown index.
    pub unknown_index: AtomicU64,
    /// Data messages the replay window already held: with duplicate paths, the copies.
    pub replayed: AtomicU64,
    /// Data messages whose tag did not verify.
    pub bad_data: AtomicU64,
    /// Inner packets whose source is not in the sending peer's allowed IPs.
    pub bad_source: AtomicU64,
    /// Outbound packets with no peer for their destination.
    pub no_route: AtomicU64,
    /// Cookie replies sent because we were under load.
    pub cookie_replies_sent: AtomicU64,
}

/// What [`Device::receive`] found in a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// An IP packet at this range of the buffer: write it to the TUN.
    Packet(Range<usize>),
    /// A copy of a data packet already received (on another path, typically).
    Duplicate,
    /// Handled (handshake, keepalive, cookie) or dropped: nothing for the TUN.
    Nothing,
}

/// What happened to an outbound packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// Sealed and handed to at least one path.
    Sent,
    /// Sealed, but no path took it (no endpoint, or every path failed).
    NotDelivered,
    /// Kept until a handshake completes.
    Staged,
    /// No peer's allowed IPs hold the destination, or the packet is not IP.
    NoRoute,
}

/// A packet sealed by [`Device::seal_ip_packet`].
pub enum Sealed {
    /// Sealed for this peer: the message is `buf[..len]`.
    Ready(Arc<Peer>, usize),
    /// Kept until a handshake completes.
    Staged,
    /// No peer's allowed IPs hold the destination, or the packet is not IP.
    NoRoute,
}

/// A packet sealed by [`Device::seal_cached`]; the peer is the cache's.
pub enum SealedFor<'c> {
    /// Sealed for this peer: the message is `buf[..len]`.
    Ready(&'c Arc<Peer>, usize),
    /// Kept until a handshake completes.
    Staged,
    /// No peer's allowed IPs hold the destination, or the packet is not IP.
    NoRoute,
}

/// What a worker thread keeps so that its packets take no device lock: a snapshot of the
/// allowed IPs and the sessions it has looked up (entries of type `E`), valid while the
/// device's epoch stays the same.
pub struct EpochCache<E> {
    epoch: Option<u64>,
    pub(crate) allowed: Arc<AllowedIps<Arc<Peer>>>,
    pub(crate) sessions: Vec<E>,
}

impl<E> Default for EpochCache<E> {
    fn default() -> Self {
        EpochCache {
            epoch: None,
            allowed: Arc::default(),
            sessions: Vec::new(),
        }
    }
}

impl<E> EpochCache<E> {
    /// Forgets everything if the device changed since the cache was filled. The epoch is
    /// read before what it guards: a change made after this read bumps it again, and the
    /// next refresh sees it.
    pub(crate) fn refresh(&mut self, device: &Device) {
        let epoch = device.epoch();
        if self.epoch != Some(epoch) {
            self.sessions.clear();
            self.allowed = device.allowed();
            self.epoch = Some(epoch);
        }
    }
}

/// A TX worker's cache: the current session of each peer it sends to.
pub type SendCache = EpochCache<(Arc<Peer>, Option<Arc<Session>>)>;

/// A WireGuard device.
pub struct Device {
    config: RwLock<Config>,
    index: RwLock<HashMap<u32, IndexEntry>>,
    load: Mutex<(Instant, u32)>,
    forced_load: Mutex<Option<bool>>,
    mtu: AtomicUsize,
    /// Bumped after every change to the peers, allowed IPs, index table or sessions: the
    /// workers' caches ([`crate::receive::RxCache`], [`SendCache`]) are valid while it
    /// stays the same, so the hot path takes no lock per packet.
    epoch: AtomicU64,
    /// Drop counters.
    pub drops: DropCounters,
}

/// The destination (outbound) or source (inbound) address of an IP packet, and its
/// length from the header. None if it is not a plausible IPv4 or IPv6 packet.
fn ip_info(pkt: &[u8], want_dst: bool) -> Option<(IpAddr, usize)> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => {
            let off = if want_dst { 16 } else { 12 };
            let a: [u8; 4] = pkt[off..off + 4].try_into().ok()?;
            let len = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            Some((IpAddr::from(a), len))
        }
        6 if pkt.len() >= 40 => {
            let off = if want_dst { 24 } else { 8 };
            let a: [u8; 16] = pkt[off..off + 16].try_into().ok()?;
            let len = 40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            Some((IpAddr::from(a), len))
        }
        _ => None,
    }
}

impl Device {
    /// A device with no key and no peers, for a TUN of `mtu` bytes.
    pub fn new(mtu: usize) -> Device {
        Device {
            config: RwLock::new(Config::default()),
            index: RwLock::new(HashMap::new()),
            load: Mutex::new((Instant::now(), 0)),
            forced_load: Mutex::new(None),
            mtu: AtomicUsize::new(mtu),
            epoch: AtomicU64::new(0),
            drops: DropCounters::default(),
        }
    }

    /// The current epoch: read it before reading what a cache keeps.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Marks a change the workers' caches must see. Called after the change is made.
    fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// A snapshot of the allowed-IPs table.
    pub(crate) fn allowed(&self) -> Arc<AllowedIps<Arc<Peer>>> {
        self.config.read().allowed.clone()
    }

    /// The peer and session a data message's receiver index names.
    pub(crate) fn session_for_index(&self, index: u32) -> Option<(Arc<Peer>, Arc<Session>)> {
        match self.index.read().get(&index) {
            Some(IndexEntry::Session(p, s)) => Some((p.clone(), s.clone())),
            _ => None,
        }
    }

    /// The TUN MTU used to bound padding.
    pub fn mtu(&self) -> usize {
        self.mtu.load(Ordering::Relaxed)
    }

    /// Forces the under-load state on or off (None: measure it). For tests and operators.
    pub fn force_under_load(&self, on: Option<bool>) {
        *self.forced_load.lock() = on;
    }

    /// The configured listen port.
    pub fn listen_port(&self) -> u16 {
        self.config.read().listen_port
    }

    /// The configured fwmark.
    pub fn fwmark(&self) -> u32 {
        self.config.read().fwmark
    }

    /// Every peer, in configuration order.
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        let c = self.config.read();
        c.order
            .iter()
            .filter_map(|k| c.peers.get(k).cloned())
            .collect()
    }

    fn under_load(&self, now: Instant) -> bool {
        if let Some(forced) = *self.forced_load.lock() {
            return forced;
        }
        let mut l = self.load.lock();
        if now.saturating_duration_since(l.0) >= Duration::from_secs(1) {
            *l = (now, 0);
        }
        l.1 = l.1.saturating_add(1);
        l.1 > UNDER_LOAD_HANDSHAKES_PER_SEC
    }

    fn new_index(&self, entry: IndexEntry) -> u32 {
        let mut idx = self.index.write();
        loop {
            let i = crate::noise::crypto::random_u32();
            if let std::collections::hash_map::Entry::Vacant(v) = idx.entry(i) {
                v.insert(entry);
                drop(idx);
                self.changed();
                return i;
            }
        }
    }

    // ----- outbound -----

    /// Seals the IP packet at `buf[HEADROOM..HEADROOM + len]` in place and sends it to the
    /// peer whose allowed IPs hold its destination. `buf` must have [`TAILROOM`] bytes
    /// after the packet.
    pub fn send_ip_packet(
        &self,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        tx: &dyn Transmit,
    ) -> Sent {
        match self.seal_ip_packet(buf, len, now, tx) {
            Sealed::Ready(peer, n) => {
                let ok = tx.send_to_peer(&peer, &buf[..n]);
                self.note_sent(&peer, n, usize::from(len > 0), ok, now, tx);
                if ok {
                    Sent::Sent
                } else {
                    Sent::NotDelivered
                }
            }
            Sealed::Staged => Sent::Staged,
            Sealed::NoRoute => Sent::NoRoute,
        }
    }

    /// Seals the IP packet at `buf[HEADROOM..HEADROOM + len]` in place, for the caller to
    /// send (in a batch) and then report with [`Device::note_sent`]. With no usable
    /// session, the packet is staged and a handshake started through `tx`.
    pub fn seal_ip_packet(
        &self,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        tx: &dyn Transmit,
    ) -> Sealed {
        let Some(pkt) = buf.get(HEADROOM..HEADROOM + len) else {
            return Sealed::NoRoute;
        };
        let Some((dst, _)) = ip_info(pkt, true) else {
            self.drops.no_route.fetch_add(1, Ordering::Relaxed);
            return Sealed::NoRoute;
        };
        let peer = match self.config.read().allowed.lookup(dst) {
            Some(p) => p.clone(),
            None => {
                self.drops.no_route.fetch_add(1, Ordering::Relaxed);
                return Sealed::NoRoute;
            }
        };
        self.seal_for(peer, buf, len, now, tx)
    }

    /// [`Device::seal_ip_packet`] for a TX worker's batch loop: routes and seals with
    /// what `cache` holds, so a packet takes no lock and clones no `Arc`. The peer of a
    /// sealed packet is borrowed from the cache.
    pub fn seal_cached<'c>(
        &self,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        tx: &dyn Transmit,
        cache: &'c mut SendCache,
    ) -> SealedFor<'c> {
        cache.refresh(self);
        let Some((dst, _)) = buf
            .get(HEADROOM..HEADROOM + len)
            .and_then(|p| ip_info(p, true))
        else {
            self.drops.no_route.fetch_add(1, Ordering::Relaxed);
            return SealedFor::NoRoute;
        };
        let Some(peer) = cache.allowed.lookup(dst) else {
            self.drops.no_route.fetch_add(1, Ordering::Relaxed);
            return SealedFor::NoRoute;
        };
        let slot = match cache
            .sessions
            .iter()
            .position(|(p, _)| Arc::ptr_eq(p, peer))
        {
            Some(i) => i,
            None => {
                let current = peer.sessions.read().current.clone();
                cache.sessions.push((peer.clone(), current));
                cache.sessions.len() - 1
            }
        };
        let (peer, session) = &cache.sessions[slot];
        let usable = session.as_ref().filter(|s| {
            now.saturating_duration_since(s.created) < REJECT_AFTER_TIME
                && s.sent() < crate::session::REJECT_AFTER_MESSAGES
        });
        if let Some(n) = usable.and_then(|s| s.seal(buf, len, self.mtu()).ok()) {
            return SealedFor::Ready(peer, n);
        }
        match self.seal_for(peer.clone(), buf, len, now, tx) {
            Sealed::Ready(_, n) => SealedFor::Ready(peer, n),
            Sealed::Staged => SealedFor::Staged,
            Sealed::NoRoute => SealedFor::NoRoute,
        }
    }

    fn seal_for(
        &self,
        peer: Arc<Peer>,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        tx: &dyn Transmit,
    ) -> Sealed {
        let sealed = peer
            .send_session(now)
            .and_then(|session| session.seal(buf, len, self.mtu()).ok());
        match sealed {
            Some(n) => Sealed::Ready(peer, n),
            None => {
                if len > 0 {
                    peer.stage(&buf[..(HEADROOM + len + TAILROOM).min(buf.len())], len);
                }
                self.initiate(&peer, now, tx, false);
                Sealed::Staged
            }
        }
    }

    /// Reports that sealed messages of `bytes` in all, `data_packets` of them carrying
    /// data (not keepalives), were handed to the paths (`delivered`: at least one took
    /// them). Runs the timers and starts a rekey when the session is due for one.
    pub fn note_sent(
        &self,
        peer: &Arc<Peer>,
        bytes: usize,
        data_packets: usize,
        delivered: bool,
        now: Instant,
        tx: &dyn Transmit,
    ) {
        if delivered {
            peer.count_tx(bytes);
        }
        let rekey = {
            let mut hs = peer.handshake.lock();
            if data_packets > 0 {
                hs.timers.on_data_sent(now);
            }
            hs.timers.on_authenticated_sent(now);
            peer.sessions.read().current.as_ref().is_some_and(|s| {
                s.sent() > REKEY_AFTER_MESSAGES
                    || (s.initiator && now.saturating_duration_since(s.created) > REKEY_AFTER_TIME)
            })
        };
        if rekey {
            self.initiate(peer, now, tx, false);
        }
    }

    fn send_keepalive(&self, peer: &Arc<Peer>, now: Instant, tx: &dyn Transmit) {
        let mut buf = [0u8; DATA_HEADER_LEN + 16];
        if let Sealed::Ready(peer, n) = self.seal_for(peer.clone(), &mut buf, 0, now, tx) {
            let ok = tx.send_to_peer(&peer, &buf[..n]);
            self.note_sent(&peer, n, 0, ok, now, tx);
        }
    }

    fn flush_staged(&self, peer: &Arc<Peer>, now: Instant, tx: &dyn Transmit) -> usize {
        let staged: Vec<_> = peer.staged.lock().drain(..).collect();
        let n = staged.len();
        for (mut buf, len) in staged {
            self.send_ip_packet(&mut buf, len, now, tx);
        }
        n
    }

    /// Sends a handshake initiation to `peer`, at most once per REKEY_TIMEOUT.
    fn initiate(&self, peer: &Arc<Peer>, now: Instant, tx: &dyn Transmit, retry: bool) {
        let config = self.config.read();
        let Some(keys) = config.keys.as_ref() else {
            return;
        };
        let mut hs = peer.handshake.lock();
        if let Some(last) = hs.last_initiation_sent {
            if now.saturating_duration_since(last) < REKEY_TIMEOUT {
                return;
            }
        }
        if !retry {
            hs.timers.handshake_attempts = 0;
        }
        hs.answered = None;
        if let Some(old) = hs.pending.take() {
            self.index.write().remove(&old.local_index);
            self.changed();
        }
        let index = self.new_index(IndexEntry::Handshake(peer.clone()));
        let (mut msg, state) = match handshake::create_initiation(
            keys,
            &peer.public_key.0,
            hs.static_static,
            index,
            Tai64n::now(),
        ) {
            Ok(x) => x,
            Err(e) => {
                self.index.write().remove(&index);
                self.changed();
                tracing::debug!(peer = %peer.public_key.short(), "cannot initiate: {e}");
                return;
            }
        };
        hs.cookie.add_macs(&mut msg, now);
        hs.pending = Some(state);
        hs.last_initiation_sent = Some(now);
        hs.timers.on_handshake_initiated(now);
        hs.timers.on_authenticated_sent(now);
        drop(hs);
        drop(config);
        tracing::debug!(peer = %peer.public_key.short(), retry, "sending handshake initiation");
        if tx.send_to_peer(peer, &msg) {
            peer.count_tx(msg.len());
        }
    }

    // ----- inbound -----

    /// Handles one datagram received from `src`. The buffer is decrypted in place; an IP
    /// packet for the TUN is returned as a range of it.
    pub fn receive(
        &self,
        src: Source,
        buf: &mut [u8],
        now: Instant,
        tx: &dyn Transmit,
    ) -> Received {
        match classify(buf) {
            None => {
                self.drops.malformed.fetch_add(1, Ordering::Relaxed);
                Received::Nothing
            }
            Some(Kind::Data) => self.receive_data(src, buf, now, tx),
            Some(Kind::CookieReply) => {
                self.receive_cookie_reply(buf, now);
                Received::Nothing
            }
            Some(kind) => {
                self.receive_handshake(kind, src, buf, now, tx);
                Received::Nothing
            }
        }
    }

    fn receive_cookie_reply(&self, msg: &[u8], now: Instant) {
        let entry = self.index.read().get(&le32(msg, 4)).cloned();
        let peer = match entry {
            Some(IndexEntry::Handshake(p)) | Some(IndexEntry::Session(p, _)) => p,
            None => return,
        };
        if peer.handshake.lock().cookie.consume_reply(msg, now) {
            tracing::debug!(peer = %peer.public_key.short(), "got a cookie: the peer is under load");
        }
    }

    fn receive_handshake(
        &self,
        kind: Kind,
        src: Source,
        msg: &[u8],
        now: Instant,
        tx: &dyn Transmit,
    ) {
        let under_load = self.under_load(now);
        let mut config = self.config.write();
        let Some(checker) = config.cookie.as_mut() else {
            return;
        };
        match checker.check(msg, src.addr, now) {
            MacCheck::BadMac1 => {
                self.drops.bad_mac1.fetch_add(1, Ordering::Relaxed);
                return;
            }
            MacCheck::Mac1Only if under_load => {
                let reply = checker.reply(msg, src.addr, now);
                drop(config);
                self.drops
                    .cookie_replies_sent
                    .fetch_add(1, Ordering::Relaxed);
                tx.send_to(src, &reply);
                return;
            }
            _ => {}
        }
        let config = parking_lot::RwLockWriteGuard::downgrade(config);
        let Some(keys) = config.keys.as_ref() else {
            return;
        };
        let outcome = match kind {
            Kind::Initiation => self.consume_initiation(&config, keys, src, msg, now),
            _ => self.consume_response(keys, src, msg, now),
        };
        drop(config);
        match outcome {
            None => {
                self.drops.bad_handshake.fetch_add(1, Ordering::Relaxed);
            }
            Some((peer, Some(resp))) => {
                if tx.send_to_peer(&peer, &resp) {
                    peer.count_tx(resp.len());
                }
            }
            Some((peer, None)) => {
                if self.flush_staged(&peer, now, tx) == 0 {
                    self.send_keepalive(&peer, now, tx);
                }
            }
        }
    }

    fn consume_initiation(
        &self,
        config: &Config,
        keys: &StaticKeys,
        src: Source,
        msg: &[u8],
        now: Instant,
    ) -> Option<(
        Arc<Peer>,
        Option<[u8; crate::noise::messages::RESPONSE_LEN]>,
    )> {
        let mut found: Option<Arc<Peer>> = None;
        let consumed = handshake::consume_initiation(keys, msg, |pk| {
            let peer = config.peers.get(&Key(*pk))?;
            found = Some(peer.clone());
            Some(peer.handshake.lock().static_static)
        });
        let (Ok(init), Some(peer)) = (consumed, found) else {
            return None;
        };
        let mut hs = peer.handshake.lock();
        if init.timestamp <= hs.last_timestamp {
            tracing::debug!(peer = %peer.public_key.short(), "initiation replayed (old timestamp)");
            return None;
        }
        if hs
            .last_initiation_consumed
            .is_some_and(|t| now.saturating_duration_since(t) < INITIATION_MIN_INTERVAL)
        {
            return None;
        }
        let timestamp = init.timestamp;
        let psk = hs.psk;
        let index = self.new_index(IndexEntry::Handshake(peer.clone()));
        let (mut resp, keys) = match handshake::create_response(init, &psk, index) {
            Ok(x) => x,
            Err(_) => {
                self.index.write().remove(&index);
                self.changed();
                return None;
            }
        };
        hs.last_timestamp = timestamp;
        hs.last_initiation_consumed = Some(now);
        hs.cookie.add_macs(&mut resp, now);
        let session = Arc::new(Session::new(&keys, now));
        self.install_session(&peer, session, now);
        hs.timers.on_session_derived(now);
        hs.timers.on_authenticated_received(now);
        hs.timers.on_authenticated_sent(now);
        drop(hs);
        peer.saw_source(src, now);
        peer.count_rx(msg.len());
        tracing::debug!(peer = %peer.public_key.short(), from = %src.addr, "handshake initiation received, responding");
        Some((peer, Some(resp)))
    }

    fn consume_response(
        &self,
        keys: &StaticKeys,
        src: Source,
        msg: &[u8],
        now: Instant,
    ) -> Option<(
        Arc<Peer>,
        Option<[u8; crate::noise::messages::RESPONSE_LEN]>,
    )> {
        let receiver = handshake::response_receiver(msg);
        let sender = handshake::response_sender(msg);
        let peer = match self.index.read().get(&receiver) {
            Some(IndexEntry::Handshake(p)) | Some(IndexEntry::Session(p, _)) => p.clone(),
            None => return None,
        };
        let mut hs = peer.handshake.lock();
        let first = hs
            .pending
            .as_ref()
            .is_some_and(|st| st.local_index == receiver);
        let again = !first
            && hs.answered.as_ref().is_some_and(|a| {
                a.state.local_index == receiver
                    && !a.responders.contains(&sender)
                    && a.responders.len() < 4
                    && now.saturating_duration_since(a.at) < REKEY_TIMEOUT
            });
        let state = match (first, again, &hs.pending, &hs.answered) {
            (true, _, Some(st), _) => st,
            (_, true, _, Some(a)) => &a.state,
            _ => return None,
        };
        let session_keys = handshake::consume_response(keys, state, &hs.psk, msg).ok()?;
        let session = Arc::new(Session::new(&session_keys, now));
        if again {
            if let Some(a) = hs.answered.as_mut() {
                a.responders.push(sender);
            }
            self.replace_current(&peer, session);
            drop(hs);
            peer.saw_source(src, now);
            peer.count_rx(msg.len());
            tracing::debug!(peer = %peer.public_key.short(), "the peer answered our initiation again (it got a copy on another path): using its latest session");
            return Some((peer, None));
        }
        if let Some(st) = hs.pending.take() {
            hs.answered = Some(crate::peer::Answered {
                state: st,
                at: now,
                responders: vec![sender],
            });
        }
        self.install_session(&peer, session, now);
        hs.timers.on_handshake_complete();
        hs.timers.on_session_derived(now);
        hs.timers.on_authenticated_received(now);
        hs.sent_lastminute_handshake = false;
        drop(hs);
        *peer.last_handshake.lock() = Some(SystemTime::now());
        peer.saw_source(src, now);
        peer.count_rx(msg.len());
        tracing::info!(peer = %peer.public_key.short(), endpoint = %src.addr, "handshake complete (we initiated)");
        Some((peer, None))
    }

    /// Replaces the current session by one with the same local index (a second response
    /// to the same initiation): nothing rotates, the index points at the new keys.
    fn replace_current(&self, peer: &Arc<Peer>, session: Arc<Session>) {
        let mut idx = self.index.write();
        idx.insert(
            session.local_index,
            IndexEntry::Session(peer.clone(), session.clone()),
        );
        peer.sessions.write().current = Some(session);
        drop(idx);
        self.changed();
    }

    /// Puts a new session in its slot and forgets the index of the one it pushes out.
    fn install_session(&self, peer: &Arc<Peer>, session: Arc<Session>, _now: Instant) {
        let mut idx = self.index.write();
        idx.insert(
            session.local_index,
            IndexEntry::Session(peer.clone(), session.clone()),
        );
        let mut s = peer.sessions.write();
        let dropped = if session.initiator {
            let old_prev = s.previous.take();
            let old_next = s.next.take();
            s.previous = s.current.take();
            s.current = Some(session);
            [old_prev, old_next]
        } else {
            // Unconfirmed until the initiator's first data packet arrives.
            [s.next.replace(session), None]
        };
        for d in dropped.into_iter().flatten() {
            idx.remove(&d.local_index);
        }
        drop((idx, s));
        self.changed();
    }

    fn receive_data(
        &self,
        src: Source,
        buf: &mut [u8],
        now: Instant,
        tx: &dyn Transmit,
    ) -> Received {
        let entry = self.index.read().get(&le32(buf, 4)).cloned();
        let Some(IndexEntry::Session(peer, session)) = entry else {
            self.drops.unknown_index.fetch_add(1, Ordering::Relaxed);
            return Received::Nothing;
        };
        if now.saturating_duration_since(session.created) >= REJECT_AFTER_TIME {
            return Received::Nothing;
        }
        let datagram_len = buf.len();
        let range = match session.open(buf) {
            Ok(r) => r,
            Err(crate::session::OpenError::Replay) => {
                self.drops.replayed.fetch_add(1, Ordering::Relaxed);
                // A path whose copies always lose the race still learns where the peer
                // sends from; at most one decryption per path and second.
                let learn = peer.endpoints.lock().wants_refresh(src.path, src.addr, now);
                if learn && session.authenticate_recent_copy(buf) {
                    peer.saw_source(src, now);
                }
                return Received::Duplicate;
            }
            Err(_) => {
                self.drops.bad_data.fetch_add(1, Ordering::Relaxed);
                return Received::Nothing;
            }
        };
        self.on_authenticated(
            &peer,
            &session,
            &[src],
            datagram_len,
            !range.is_empty(),
            now,
            tx,
        );
        if range.is_empty() {
            return Received::Nothing;
        }
        let allowed = self.config.read().allowed.clone();
        match self.inner_packet(&allowed, &peer, &buf[range.clone()]) {
            Some(ip_len) => Received::Packet(range.start..range.start + ip_len),
            None => Received::Nothing,
        }
    }

    /// What follows authenticated data from `peer` on `session`: the byte counter, the
    /// peer's sources (where it roams), confirming a `next` session, the timers, and the
    /// one late rekey. Called once per datagram by [`Device::receive`], and once per run
    /// of one session's datagrams by [`Device::open_batch`]: `bytes` is the datagrams'
    /// total, `data` whether any carried a packet (not a keepalive).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_authenticated(
        &self,
        peer: &Arc<Peer>,
        session: &Arc<Session>,
        sources: &[Source],
        bytes: usize,
        data: bool,
        now: Instant,
        tx: &dyn Transmit,
    ) {
        peer.count_rx(bytes);
        for src in sources {
            peer.saw_source(*src, now);
        }
        let confirmed = self.confirm_if_next(peer, session);
        let late_rekey = {
            let mut hs = peer.handshake.lock();
            if confirmed {
                hs.timers.on_handshake_complete();
            }
            hs.timers.on_authenticated_received(now);
            if data {
                hs.timers.on_data_received(now);
            }
            let late = session.initiator
                && now.saturating_duration_since(session.created)
                    > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
                && !hs.sent_lastminute_handshake;
            if late {
                hs.sent_lastminute_handshake = true;
            }
            late
        };
        if confirmed {
            *peer.last_handshake.lock() = Some(SystemTime::now());
            if let Some(src) = sources.first() {
                tracing::info!(peer = %peer.public_key.short(), endpoint = %src.addr, "handshake complete (peer initiated)");
            }
            self.flush_staged(peer, now, tx);
        }
        if late_rekey {
            self.initiate(peer, now, tx, false);
        }
    }

    /// Checks a decrypted packet (`plain`, with its padding) from `peer`: it must be IP,
    /// no longer than what arrived, and its source in the peer's allowed IPs. Returns the
    /// packet's length without padding; counts a drop otherwise.
    pub(crate) fn inner_packet(
        &self,
        allowed: &AllowedIps<Arc<Peer>>,
        peer: &Arc<Peer>,
        plain: &[u8],
    ) -> Option<usize> {
        let Some((src_ip, ip_len)) = ip_info(plain, false) else {
            self.drops.bad_source.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let ok = allowed.lookup(src_ip).is_some_and(|p| Arc::ptr_eq(p, peer));
        if !ok || ip_len > plain.len() || ip_len == 0 {
            self.drops.bad_source.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(peer = %peer.public_key.short(), %src_ip, "inner source not in the peer's allowed IPs");
            return None;
        }
        Some(ip_len)
    }

    /// If `session` is the peer's unconfirmed `next`, it becomes current.
    fn confirm_if_next(&self, peer: &Arc<Peer>, session: &Arc<Session>) -> bool {
        {
            let s = peer.sessions.read();
            if !s.next.as_ref().is_some_and(|n| Arc::ptr_eq(n, session)) {
                return false;
            }
        }
        let mut idx = self.index.write();
        let mut s = peer.sessions.write();
        if !s.next.as_ref().is_some_and(|n| Arc::ptr_eq(n, session)) {
            return false;
        }
        if let Some(old) = s.previous.take() {
            idx.remove(&old.local_index);
        }
        s.previous = s.current.take();
        s.current = s.next.take();
        drop((idx, s));
        self.changed();
        true
    }

    // ----- timers -----

    /// Fires every peer's due timers.
    pub fn handle_timeout(&self, now: Instant, tx: &dyn Transmit) {
        for peer in self.peers() {
            let e = peer.handshake.lock().timers.expired(now);
            if e.give_up {
                let dropped = peer.staged.lock().drain(..).count();
                tracing::info!(peer = %peer.public_key.short(), dropped, "handshake did not complete after {} attempts: giving up", crate::timers::MAX_HANDSHAKE_ATTEMPTS + 1);
                peer.handshake.lock().pending = None;
            }
            if e.retransmit_handshake {
                let attempts = peer.handshake.lock().timers.handshake_attempts;
                tracing::debug!(peer = %peer.public_key.short(), attempts, "handshake unanswered, retrying");
                self.initiate(&peer, now, tx, true);
            }
            if e.new_handshake {
                tracing::debug!(peer = %peer.public_key.short(), "sent data but heard nothing: new handshake");
                self.initiate(&peer, now, tx, false);
            }
            if e.send_keepalive || e.persistent_keepalive {
                self.send_keepalive(&peer, now, tx);
            }
            if e.zero_keys {
                self.zero_keys(&peer);
            }
        }
    }

    /// The earliest timer deadline of any peer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers()
            .iter()
            .filter_map(|p| p.handshake.lock().timers.next_deadline())
            .min()
    }

    /// Lock order everywhere: config, then a peer's handshake, then the index table, then
    /// the peer's sessions.
    fn zero_keys(&self, peer: &Arc<Peer>) {
        let mut hs = peer.handshake.lock();
        hs.answered = None;
        let mut idx = self.index.write();
        if let Some(p) = hs.pending.take() {
            idx.remove(&p.local_index);
        }
        let mut s = peer.sessions.write();
        for sess in s.all() {
            idx.remove(&sess.local_index);
        }
        *s = Default::default();
        drop((idx, s));
        self.changed();
        tracing::debug!(peer = %peer.public_key.short(), "session keys erased");
    }

    // ----- configuration -----

    /// Applies a `set` request. Parsing has validated it; nothing here fails, so the
    /// request is applied whole. The listen port is only recorded: binding is the
    /// daemon's job and happens before this is called.
    pub fn apply(&self, req: &SetRequest, now: Instant) {
        let mut c = self.config.write();
        if let Some(k) = req.private_key {
            self.set_private_key(&mut c, k);
        }
        if let Some(p) = req.listen_port {
            c.listen_port = p;
        }
        if let Some(m) = req.fwmark {
            c.fwmark = m;
        }
        if req.replace_peers {
            for k in c.order.clone() {
                self.remove_peer(&mut c, &k);
            }
        }
        for u in &req.peers {
            if u.remove {
                self.remove_peer(&mut c, &u.public_key);
                continue;
            }
            let exists = c.peers.contains_key(&u.public_key);
            if u.update_only && !exists {
                continue;
            }
            if c.keys.as_ref().is_some_and(|k| k.public == u.public_key.0) {
                tracing::warn!("ignoring a peer whose public key is the device's own");
                continue;
            }
            let peer = match c.peers.get(&u.public_key) {
                Some(p) => p.clone(),
                None => {
                    let ss = c.keys.as_ref().and_then(|k| k.dh(&u.public_key.0));
                    let p = Arc::new(Peer::new(u.public_key, ss));
                    c.peers.insert(u.public_key, p.clone());
                    c.order.push(u.public_key);
                    tracing::info!(peer = %u.public_key.short(), "peer added");
                    p
                }
            };
            {
                let mut hs = peer.handshake.lock();
                if let Some(psk) = u.preshared_key {
                    hs.psk = psk.0;
                }
                if let Some(ka) = u.persistent_keepalive {
                    hs.timers.set_persistent_interval(ka, now);
                }
            }
            if let Some(ep) = u.endpoint {
                peer.endpoints.lock().set_configured(ep);
            }
            if u.replace_allowed_ips {
                Arc::make_mut(&mut c.allowed).remove_where(|p| Arc::ptr_eq(p, &peer));
            }
            for cidr in &u.allowed_ips {
                Arc::make_mut(&mut c.allowed).insert(*cidr, peer.clone());
            }
        }
        drop(c);
        self.changed();
    }

    fn set_private_key(&self, c: &mut Config, k: Key) {
        if k.is_zero() {
            c.keys = None;
            c.cookie = None;
        } else {
            let keys = StaticKeys::new(k.0);
            c.cookie = Some(CookieChecker::new(&keys.public));
            let own = Key(keys.public);
            c.keys = Some(keys);
            if c.peers.contains_key(&own) {
                self.remove_peer(c, &own);
            }
        }
        for peer in c.peers.values() {
            let ss = c.keys.as_ref().and_then(|k| k.dh(&peer.public_key.0));
            peer.handshake.lock().static_static = ss;
            self.zero_keys(peer);
        }
    }

    fn remove_peer(&self, c: &mut Config, key: &Key) {
        let Some(peer) = c.peers.remove(key) else {
            return;
        };
        c.order.retain(|k| k != key);
        Arc::make_mut(&mut c.allowed).remove_where(|p| Arc::ptr_eq(p, &peer));
        self.zero_keys(&peer);
        peer.handshake.lock().timers.stop_all();
        peer.staged.lock().clear();
        tracing::info!(peer = %key.short(), "peer removed");
    }

    /// The state `wg show` reports.
    pub fn snapshot(&self) -> DeviceSnapshot {
        let c = self.config.read();
        let peers = c
            .order
            .iter()
            .filter_map(|k| c.peers.get(k))
            .map(|p| {
                let hs = p.handshake.lock();
                PeerSnapshot {
                    public_key: p.public_key,
                    preshared_key: (hs.psk != [0; 32]).then_some(Key(hs.psk)),
                    endpoint: p.endpoint_addr(),
                    last_handshake: *p.last_handshake.lock(),
                    rx_bytes: p.rx_bytes.load(Ordering::Relaxed),
                    tx_bytes: p.tx_bytes.load(Ordering::Relaxed),
                    persistent_keepalive: hs.timers.persistent_interval,
                    allowed_ips: c.allowed.prefixes_of(p),
                }
            })
            .collect();
        DeviceSnapshot {
            private_key: c.keys.as_ref().map(|k| Key(k.private_bytes())),
            listen_port: c.listen_port,
            fwmark: c.fwmark,
            peers,
        }
    }
}
