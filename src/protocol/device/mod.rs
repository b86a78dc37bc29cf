//! The device: the sans-IO heart of the tunnel. It owns the private key, the peers, the
//! allowed-IPs table and the index table. Its halves, one file each:
//!
//! * [`send`]: an IP packet from the TUN into a sealed datagram ([`Device::seal_cached`]);
//! * [`receive`]: a batch of data messages into IP packets for the TUN
//!   ([`Device::decrypt_batch`], then [`Device::commit_batch`]);
//! * [`handshake`]: handshake messages and cookie replies ([`Device::receive_handshake`]),
//!   and initiations;
//! * [`timers`]: the passage of time into retransmissions, keepalives, rekeys and key
//!   erasure ([`Device::handle_timeout`]);
//! * here: configuration ([`Device::apply`]) and what `wg show` reports
//!   ([`Device::snapshot`]).
//!
//! Time is always passed in. Nothing here opens a socket.

pub mod handshake;
pub mod receive;
pub mod send;
pub mod timers;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::protocol::allowedips::AllowedIps;
use crate::protocol::key::Key;
use crate::protocol::noise::cookie::CookieChecker;
use crate::protocol::noise::handshake::StaticKeys;
use crate::protocol::peer::Peer;
use crate::protocol::request::{DeviceSnapshot, PeerSnapshot, SetRequest};
use crate::protocol::session::Session;

pub use receive::{PathTally, RxBatch, RxCache, PACKET_OFFSET};
pub use send::{SealedFor, SendCache};

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

/// A WireGuard device.
pub struct Device {
    config: RwLock<Config>,
    index: RwLock<HashMap<u32, IndexEntry>>,
    load: Mutex<(Instant, u32)>,
    forced_load: Mutex<Option<bool>>,
    mtu: AtomicUsize,
    /// Bumped after every change to the peers, allowed IPs, index table or sessions: the
    /// workers' caches ([`RxCache`], [`SendCache`]) are valid while it
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
