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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use zeroize::{Zeroize, Zeroizing};

use crate::protocol::allowedips::AllowedIps;
use crate::protocol::cidr::Cidr;
use crate::protocol::key::Key;
use crate::protocol::noise::cookie::CookieChecker;
use crate::protocol::noise::crypto::ct_eq;
use crate::protocol::noise::handshake::StaticKeys;
use crate::protocol::peer::Peer;
use crate::protocol::ratelimit::{Load, RateLimiter};
use crate::protocol::request::{DeviceSnapshot, PeerSnapshot, SetRequest};
use crate::protocol::session::Session;

pub use receive::{PathTally, RxBatch, RxCache, PACKET_OFFSET};
pub use send::{SealedFor, SendCache};

/// Initiations from one peer closer together than this are a flood and are dropped.
const INITIATION_MIN_INTERVAL: Duration = Duration::from_millis(20);

/// The most peers a device holds. With [`MAX_ALLOWED_IPS`], this bounds what any
/// sequence of `set` requests can make the device allocate (see README, "Limits").
pub const MAX_PEERS: usize = 65_536;
/// The most allowed-IPs prefixes a device holds, all peers together.
pub const MAX_ALLOWED_IPS: usize = 1 << 20;

/// Why a `set` was refused; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The request would leave the device with too many peers.
    #[error("the request would leave {would} peers on the device, more than the limit of {limit}")]
    TooManyPeers {
        /// Peers after the request.
        would: usize,
        /// [`MAX_PEERS`].
        limit: usize,
    },
    /// The request would leave the device with too many allowed IPs.
    #[error(
        "the request would leave {would} allowed IPs on the device, more than the limit of {limit}"
    )]
    TooManyAllowedIps {
        /// Prefixes after the request (counted before duplicates are merged).
        would: usize,
        /// [`MAX_ALLOWED_IPS`].
        limit: usize,
    },
}

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
    /// Configuration order: a rank per peer, and the peers by rank.
    rank: HashMap<Key, u64>,
    order: BTreeMap<u64, Key>,
    next_rank: u64,
    /// Shared with the workers' caches as a snapshot; a change copies only the trie
    /// nodes on its path ([`AllowedIps`]).
    allowed: Arc<AllowedIps<Arc<Peer>>>,
    /// Each peer's prefixes, so that replacing or removing them costs what they are.
    owned: HashMap<Key, HashSet<Cidr>>,
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
    /// Handshake messages with a valid mac2 refused under load: their source had no
    /// token left.
    pub rate_limited: AtomicU64,
    /// Handshake messages dropped because the handshake queue was full.
    pub handshake_queue_full: AtomicU64,
    /// Cookie replies for no handshake of ours, or not awaited.
    pub unexpected_cookie: AtomicU64,
    /// Not a drop: handshake messages accepted (initiations answered, responses that
    /// gave a session), counted here beside the ones refused so that their sum is
    /// every handshake message that reached the device.
    pub handshakes_accepted: AtomicU64,
}

/// What a worker thread keeps so that its packets take no device lock: a snapshot of the
/// allowed IPs and the sessions it has looked up (entries of type `E`), valid while the
/// device's epoch stays the same.
///
/// What it holds is kept for one batch only ([`EpochCache::end_batch`]): a worker that
/// goes idle must not keep a session alive (and its keys in memory), nor a removed peer,
/// after the device dropped them. Filling it again costs a lock per batch and one per
/// peer the batch sends to.
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

    /// Lets go of what was looked up for the batch just done (call it after each batch,
    /// before the worker may wait for the next).
    pub fn end_batch(&mut self) {
        self.sessions.clear();
        self.allowed = Arc::default();
        self.epoch = None;
    }

    /// Sessions held now.
    pub fn held(&self) -> usize {
        self.sessions.len()
    }
}

/// A WireGuard device.
pub struct Device {
    config: RwLock<Config>,
    index: RwLock<HashMap<u32, IndexEntry>>,
    /// Whether handshakes are under load ([`Device::note_handshake_backlog`]).
    load: Mutex<Load>,
    /// Per-source handshake tokens, used under load.
    limiter: Mutex<RateLimiter>,
    mtu: AtomicUsize,
    /// Bumped after every change to the peers, allowed IPs, index table or sessions: the
    /// workers' caches ([`RxCache`], [`SendCache`]) are valid while it
    /// stays the same, so the hot path takes no lock per packet.
    epoch: AtomicU64,
    /// Drop counters.
    pub drops: DropCounters,
}

/// The destination (outbound) or source (inbound) address of an IP packet, and its
/// length from the header. None if it is not a plausible IPv4 or IPv6 packet: too short
/// for its header, or (IPv4) a total length shorter than the header.
fn ip_info(pkt: &[u8], want_dst: bool) -> Option<(IpAddr, usize)> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => {
            let off = if want_dst { 16 } else { 12 };
            let a: [u8; 4] = pkt[off..off + 4].try_into().ok()?;
            let len = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            (len >= 20).then_some((IpAddr::from(a), len))
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
            load: Mutex::new(Load::default()),
            limiter: Mutex::new(RateLimiter::default()),
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

    /// Entries in the index table (pending handshakes and sessions), for tests and
    /// `mpwg show`.
    pub fn index_entries(&self) -> usize {
        self.index.read().len()
    }

    /// The TUN MTU used to bound padding.
    pub fn mtu(&self) -> usize {
        self.mtu.load(Ordering::Relaxed)
    }

    /// Forces the under-load state on or off (None: measure it). For tests and operators.
    pub fn force_under_load(&self, on: Option<bool>) {
        self.load.lock().force(on);
    }

    /// Tells the device how many handshake messages wait in its queue at `now`: a deep
    /// queue puts it under load, for a second (see [`crate::protocol::ratelimit`]).
    pub fn note_handshake_backlog(&self, depth: usize, now: Instant) {
        self.load.lock().note_backlog(depth, now);
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
            .values()
            .filter_map(|k| c.peers.get(k).cloned())
            .collect()
    }

    // ----- configuration -----

    /// Checks a `set` request against the device's limits, without applying it. The
    /// daemon calls it before it rebinds sockets, so that a refused request changes
    /// nothing at all.
    pub fn check(&self, req: &SetRequest) -> Result<(), ApplyError> {
        let c = self.config.read();
        Self::check_limits(&c, req)
    }

    fn check_limits(c: &Config, req: &SetRequest) -> Result<(), ApplyError> {
        let mut present: HashMap<Key, bool> = HashMap::new();
        let mut replaced: HashSet<Key> = HashSet::new();
        let (mut peers, mut allowed) = if req.replace_peers {
            (0usize, 0usize)
        } else {
            (c.peers.len(), c.allowed.len())
        };
        let exists = |present: &HashMap<Key, bool>, k: &Key| {
            present
                .get(k)
                .copied()
                .unwrap_or(!req.replace_peers && c.peers.contains_key(k))
        };
        for u in &req.peers {
            let k = u.public_key;
            let was = exists(&present, &k);
            let owned = || c.owned.get(&k).map_or(0, HashSet::len);
            if u.remove {
                if was {
                    peers -= 1;
                    if !req.replace_peers && replaced.insert(k) {
                        allowed = allowed.saturating_sub(owned());
                    }
                }
                present.insert(k, false);
                continue;
            }
            if u.update_only && !was {
                continue;
            }
            if !was {
                peers += 1;
                present.insert(k, true);
            }
            if u.replace_allowed_ips && !req.replace_peers && replaced.insert(k) {
                allowed = allowed.saturating_sub(owned());
            }
            allowed += u.allowed_ips.len();
        }
        if peers > MAX_PEERS {
            return Err(ApplyError::TooManyPeers {
                would: peers,
                limit: MAX_PEERS,
            });
        }
        if allowed > MAX_ALLOWED_IPS {
            return Err(ApplyError::TooManyAllowedIps {
                would: allowed,
                limit: MAX_ALLOWED_IPS,
            });
        }
        Ok(())
    }

    /// Applies a `set` request: all of it, or (if it would pass the device's limits)
    /// none of it. Parsing has validated it. The listen port is only recorded: binding
    /// is the daemon's job and happens before this is called.
    ///
    /// A request disturbs only what it changes, as in the kernel: the same private key
    /// again keeps every session; an unchanged endpoint, preshared key, keepalive or
    /// set of allowed IPs changes nothing (so `wg syncconf` of an unchanged file costs
    /// no handshake and no packet).
    pub fn apply(&self, req: &SetRequest, now: Instant) -> Result<(), ApplyError> {
        let mut c = self.config.write();
        Self::check_limits(&c, req)?;
        let mut dirty = false;
        if let Some(k) = req.private_key {
            dirty |= self.set_private_key(&mut c, k);
        }
        if let Some(p) = req.listen_port {
            c.listen_port = p;
        }
        if let Some(m) = req.fwmark {
            c.fwmark = m;
        }
        let mut named: HashSet<Key> = HashSet::new();
        if req.replace_peers {
            // Peers the request names again keep their sessions; their configuration is
            // replaced by the request's below.
            named.extend(req.peers.iter().filter(|u| !u.remove).map(|u| u.public_key));
            let gone: Vec<Key> = c
                .order
                .values()
                .filter(|k| !named.contains(*k))
                .copied()
                .collect();
            for k in gone {
                dirty |= self.remove_peer(&mut c, &k);
            }
        }
        for u in &req.peers {
            if u.remove {
                dirty |= self.remove_peer(&mut c, &u.public_key);
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
                    let rank = c.next_rank;
                    c.next_rank += 1;
                    c.rank.insert(u.public_key, rank);
                    c.order.insert(rank, u.public_key);
                    tracing::info!(peer = %u.public_key.short(), "peer added");
                    dirty = true;
                    p
                }
            };
            // A peer named again under replace_peers gets the request's configuration:
            // what it leaves out is reset.
            let reset = named.contains(&u.public_key);
            {
                let mut hs = peer.handshake.lock();
                let psk = u.preshared_key.or(reset.then_some(Key([0; 32])));
                if let Some(psk) = psk {
                    if !ct_eq(&hs.psk[..], &psk.0) {
                        hs.psk = Zeroizing::new(psk.0);
                    }
                }
                let ka = u.persistent_keepalive.or(reset.then_some(0));
                if let Some(ka) = ka {
                    if ka != hs.timers.persistent_interval {
                        hs.timers.set_persistent_interval(ka, now);
                    }
                }
            }
            if let Some(ep) = u.endpoint {
                peer.endpoints.lock().set_configured(ep);
            }
            dirty |= Self::set_allowed_ips(
                &mut c,
                &peer,
                &u.allowed_ips,
                u.replace_allowed_ips || reset,
            );
        }
        drop(c);
        if dirty {
            self.changed();
        }
        Ok(())
    }

    /// Gives `peer` the prefixes `cidrs` (after removing those it has that are not among
    /// them, if `replace`). Touches only the prefixes that change. Returns whether any did.
    fn set_allowed_ips(c: &mut Config, peer: &Arc<Peer>, cidrs: &[Cidr], replace: bool) -> bool {
        let key = peer.public_key;
        let mut dirty = false;
        if replace {
            let wanted: HashSet<Cidr> = cidrs.iter().copied().collect();
            let gone: Vec<Cidr> = c
                .owned
                .get(&key)
                .map(|set| set.difference(&wanted).copied().collect())
                .unwrap_or_default();
            for cidr in gone {
                Arc::make_mut(&mut c.allowed).remove(cidr);
                if let Some(set) = c.owned.get_mut(&key) {
                    set.remove(&cidr);
                }
                dirty = true;
            }
        }
        for &cidr in cidrs {
            if c.allowed.get(cidr).is_some_and(|p| Arc::ptr_eq(p, peer)) {
                continue;
            }
            let old = Arc::make_mut(&mut c.allowed).insert(cidr, peer.clone());
            if let Some(old) = old {
                if let Some(set) = c.owned.get_mut(&old.public_key) {
                    set.remove(&cidr);
                }
            }
            c.owned.entry(key).or_default().insert(cidr);
            dirty = true;
        }
        dirty
    }

    /// Sets the private key; the same key again changes nothing (returns false).
    fn set_private_key(&self, c: &mut Config, k: Key) -> bool {
        let same = match &c.keys {
            Some(keys) => ct_eq(&Zeroizing::new(keys.private_bytes())[..], &k.0),
            None => k.is_zero(),
        };
        if same {
            return false;
        }
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
        true
    }

    /// Removes a peer; returns false if there was none. Its sessions, handshake state and
    /// preshared key are wiped now, whoever still holds an `Arc` of it.
    fn remove_peer(&self, c: &mut Config, key: &Key) -> bool {
        let Some(peer) = c.peers.remove(key) else {
            return false;
        };
        if let Some(rank) = c.rank.remove(key) {
            c.order.remove(&rank);
        }
        for cidr in c.owned.remove(key).unwrap_or_default() {
            Arc::make_mut(&mut c.allowed).remove(cidr);
        }
        self.zero_keys(&peer);
        {
            let mut hs = peer.handshake.lock();
            hs.timers.stop_all();
            hs.psk.zeroize();
            hs.static_static = None;
        }
        peer.staged.lock().clear();
        tracing::info!(peer = %key.short(), "peer removed");
        true
    }

    /// The state `wg show` reports. One walk of the allowed IPs, whatever the number of
    /// peers.
    pub fn snapshot(&self) -> DeviceSnapshot {
        let c = self.config.read();
        let mut prefixes: HashMap<*const Peer, Vec<Cidr>> = HashMap::new();
        for (cidr, p) in c.allowed.all() {
            prefixes.entry(Arc::as_ptr(p)).or_default().push(cidr);
        }
        let peers = c
            .order
            .values()
            .filter_map(|k| c.peers.get(k))
            .map(|p| {
                let hs = p.handshake.lock();
                PeerSnapshot {
                    public_key: p.public_key,
                    preshared_key: (*hs.psk != [0; 32]).then_some(Key(*hs.psk)),
                    endpoint: p.endpoint_addr(),
                    last_handshake: *p.last_handshake.lock(),
                    rx_bytes: p.rx_bytes.load(Ordering::Relaxed),
                    tx_bytes: p.tx_bytes.load(Ordering::Relaxed),
                    persistent_keepalive: hs.timers.persistent_interval,
                    allowed_ips: prefixes.remove(&Arc::as_ptr(p)).unwrap_or_default(),
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

#[cfg(test)]
mod tests;
