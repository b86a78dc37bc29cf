//! The tunnel's paths at the I/O edge: one UDP socket per path, each bound to its
//! interface, all on the listen port; and the [`Transmit`] that sends every datagram on
//! every live path (duplicate mode).
//!
//! Paths are interfaces by name and come and go ([`Paths::add`], [`Paths::remove`]), as
//! do their interfaces: a path whose interface is deleted has no socket until one of
//! that name appears again ([`Paths::link_event`], driven by the state model in
//! [`crate::multipath::state`]). The list is swapped whole ([`ArcSwap`]), so a sender
//! reads it without taking a lock.
//!
//! A send never blocks on another path and holds no shared lock while it runs: the
//! destinations are copied out of the peer first, and each path socket is sent on in turn
//! with a non-blocking `sendto` whose failure is counted and logged for that path only.
//!
//! Each destination goes with the local address the peer last wrote to from there
//! ([`crate::multipath::endpoint`]): datagrams to it leave from that address
//! (`IP_PKTINFO`), so a path with several addresses answers from the one it was reached at.
//! If the host no longer has that address (the send fails, [`udp::source_refused`]), the
//! datagram goes again from the kernel's choice; the peer's next packet teaches the
//! address to use.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use parking_lot::{Mutex, RwLock};

use crate::datapath::schedule::{Pick, Schedule};
use crate::io::udp::{self, Datagrams, Received, SocketOptions, UdpError};
use crate::io::uring::UringTx;
use crate::multipath::endpoint::{Destinations, DEFAULT_WINDOW};
use crate::multipath::path::{Interface, PathId, Source};
use crate::multipath::scheduler::{self, PathSet, Traffic, MAX_PATHS};
use crate::multipath::state::{LinkState, PathLink, Seen};
use crate::protocol::peer::Peer;
use crate::protocol::transmit::Transmit;

/// The most datagrams striped onto one path at a time (about 4.5 ms at 40 Mbit/s).
const STRIPE_CHUNK: usize = 8;

/// Send and receive buffer size of a path socket, in bytes.
const SOCKET_BUFFER: i32 = 8 << 20;

/// Counters of one path.
#[derive(Debug, Default)]
pub struct PathStats {
    /// Send system calls (one per GSO batch, or per datagram without GSO).
    pub tx_calls: AtomicU64,
    /// Datagrams sent.
    pub tx_packets: AtomicU64,
    /// Bytes sent.
    pub tx_bytes: AtomicU64,
    /// Receive system calls that returned data (one per GRO batch).
    pub rx_calls: AtomicU64,
    /// Datagrams received.
    pub rx_packets: AtomicU64,
    /// Bytes received.
    pub rx_bytes: AtomicU64,
    /// Sends that failed.
    pub send_errors: AtomicU64,
    /// Data packets whose first copy arrived on this path.
    pub wins: AtomicU64,
    /// Copies that arrived after another path had delivered the packet.
    pub duplicates: AtomicU64,
    /// When the last datagram arrived, in nanoseconds since the paths were opened (0: never).
    pub last_rx_nanos: AtomicU64,
}

/// One open socket of a path.
pub struct PathSocket {
    sock: UdpSocket,
    v6: bool,
    /// The bound port.
    pub port: u16,
    /// Set when the socket was replaced; its receive loop then ends.
    pub closed: AtomicBool,
}

impl PathSocket {
    fn open(opts: &SocketOptions) -> Result<PathSocket, UdpError> {
        let sock = udp::open(opts)?;
        udp::set_buffers(&sock, SOCKET_BUFFER);
        if let Err(e) = udp::enable_gro(&sock) {
            tracing::warn!("UDP GRO is not available ({e}): one datagram per receive call");
        }
        let local = sock.local_addr().map_err(|e| UdpError::Io {
            port: opts.port,
            step: "getsockname()",
            source: e,
        })?;
        Ok(PathSocket {
            sock,
            v6: local.is_ipv6(),
            port: local.port(),
            closed: AtomicBool::new(false),
        })
    }

    /// The descriptor, for io_uring submissions (the socket outlives them).
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Receives a GRO batch without waiting: WouldBlock when nothing is queued.
    pub fn try_recv_segments(&self, buf: &mut [u8]) -> io::Result<Received> {
        udp::recv_segments_flags(&self.sock, buf, libc::MSG_DONTWAIT)
    }
}

impl AsRawFd for PathSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// One path: an interface, by name (or none, for the single unbound socket of stock
/// WireGuard), its socket while the interface exists, its state and its counters.
pub struct Path {
    /// The path's id: what [`Source::path`] and the peers' endpoints refer to. Never
    /// reused by another path of the tunnel.
    pub id: PathId,
    /// The interface name; None for the unbound socket.
    name: Option<String>,
    /// The state model (None for the unbound socket, which is always up).
    link: Mutex<Option<PathLink>>,
    up: AtomicBool,
    gso: AtomicBool,
    /// Set once a GSO send was refused for a segment too large (logged once).
    gso_einval: AtomicBool,
    /// The interface's MTU as netlink last said (0: unknown).
    mtu: AtomicU32,
    /// The interface's addresses as netlink last said (empty: not known yet).
    addresses: RwLock<Vec<IpAddr>>,
    socket: RwLock<Option<Arc<PathSocket>>>,
    /// A program's transport, for a path that has no socket but that
    /// (`paths/user.rs`).
    transport: Option<Arc<dyn Transport>>,
    /// Counters.
    pub stats: PathStats,
}

impl Path {
    fn new(id: PathId, name: Option<String>, link: Option<PathLink>, mtu: u32) -> Path {
        let up = link.as_ref().is_none_or(|l| l.state().is_up());
        Path {
            id,
            name,
            link: Mutex::new(link),
            up: AtomicBool::new(up),
            gso: AtomicBool::new(true),
            gso_einval: AtomicBool::new(false),
            mtu: AtomicU32::new(mtu),
            addresses: RwLock::new(Vec::new()),
            socket: RwLock::new(None),
            transport: None,
            stats: PathStats::default(),
        }
    }

    /// The interface name, or "*" for an unbound socket.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("*")
    }

    /// The interface name (None for the unbound socket).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether the path is up (its interface exists, admin up with carrier), as netlink
    /// last said.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The state, and when it last changed (None for the unbound socket, always up).
    pub fn state(&self) -> (LinkState, Option<Instant>) {
        match &*self.link.lock() {
            Some(l) => (l.state(), Some(l.since())),
            None => (LinkState::Up, None),
        }
    }

    /// The index the interface name resolves to now (None: absent, or unbound).
    pub fn index(&self) -> Option<u32> {
        self.link.lock().as_ref().and_then(|l| l.index())
    }

    /// The interface's MTU as netlink last reported it (0: unknown, or unbound).
    pub fn mtu(&self) -> u32 {
        self.mtu.load(Ordering::Relaxed)
    }

    /// Whether `local`, the address a datagram received on this path was sent to, may be
    /// the source of this path's replies: one of the path interface's own addresses
    /// (or any, for the unbound socket and before the addresses are known). A peer that
    /// wrote to another uplink's address over this one (the routes allow it) must not
    /// make this path send from that address: the uplink's provider would drop it, and
    /// the peer would learn the other uplink's address for this path.
    pub fn may_answer_from(&self, local: IpAddr) -> bool {
        let a = self.addresses.read();
        self.name.is_none() || a.is_empty() || a.contains(&local)
    }

    /// Records the interface's addresses (a netlink dump).
    pub(crate) fn set_addresses(&self, addresses: &[IpAddr]) {
        let mut a = self.addresses.write();
        if a.as_slice() != addresses {
            *a = addresses.to_vec();
        }
    }

    /// False once the kernel refused UDP GSO on this path's socket for good.
    pub fn gso_enabled(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// The current socket (None while the interface is absent).
    pub fn socket(&self) -> Option<Arc<PathSocket>> {
        self.socket.read().clone()
    }

    /// Takes the socket away and marks it closed.
    fn close_socket(&self) -> bool {
        match self.socket.write().take() {
            Some(old) => {
                old.closed.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Sends one datagram to `dst` from `local` (None: the kernel's choice).
    fn send(&self, dst: SocketAddr, local: Option<IpAddr>, d: &[u8]) -> bool {
        let Some(sock) = self.socket() else {
            return self.send_user(dst, d);
        };
        let one = Datagrams::Segments {
            buf: d,
            segment: d.len(),
        };
        let r = match udp::send_datagrams(&sock.sock, sock.v6, dst, local, one) {
            Err(e) if local.is_some() && udp::source_refused(&e) => {
                udp::send_datagrams(&sock.sock, sock.v6, dst, None, one)
            }
            r => r,
        };
        self.sent(dst, r.map(|_| ()), d.len(), 1)
    }

    /// Counts a send of `count` datagrams, `bytes` in all, or its failure.
    fn sent(&self, dst: SocketAddr, r: io::Result<()>, bytes: usize, count: usize) -> bool {
        self.stats.tx_calls.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(()) => {
                self.stats
                    .tx_packets
                    .fetch_add(count as u64, Ordering::Relaxed);
                self.stats
                    .tx_bytes
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                let n = self.stats.send_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        path = self.label(),
                        %dst,
                        errors = n,
                        "send on path {} failed: {e}",
                        self.label()
                    );
                }
                false
            }
        }
    }

    /// True if datagrams of `segment` bytes to `dst` fit the interface's MTU (or it is
    /// not known): a UDP GSO send whose segments do not fit is refused by the kernel
    /// (EINVAL), while one datagram per call leaves fragmented.
    fn fits(&self, dst: SocketAddr, segment: usize) -> bool {
        let mtu = self.mtu() as usize;
        let v4 = match dst {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
        };
        mtu == 0
            || segment
                + if v4 {
                    IPV4_UDP_HEADERS
                } else {
                    IPV6_UDP_HEADERS
                }
                <= mtu
    }

    /// True if `d` to `dst` goes as one UDP GSO send: several datagrams, GSO not refused
    /// on this socket, and segments that fit the interface's MTU.
    fn uses_gso(&self, dst: SocketAddr, d: &Datagrams) -> bool {
        d.count() > 1 && self.gso.load(Ordering::Relaxed) && self.fits(dst, d.segment())
    }

    /// A GSO send failed with `e`: true if the datagrams should go one per call instead.
    /// EIO is the kernel refusing GSO on this socket (no checksum offload on the way):
    /// GSO is off for the path from now on. EINVAL or EMSGSIZE is a segment the route
    /// cannot carry (its MTU, learned or configured, is below the interface's): this send
    /// goes one datagram per call (the kernel fragments those), and GSO stays on for the
    /// datagrams that fit.
    fn gso_refused(&self, e: &io::Error) -> bool {
        match e.raw_os_error() {
            Some(libc::EIO) => {
                self.gso.store(false, Ordering::Relaxed);
                tracing::warn!(
                    path = self.label(),
                    "path {}: the kernel refused UDP GSO ({e}); sending one datagram per call from now on",
                    self.label()
                );
                true
            }
            Some(libc::EINVAL) | Some(libc::EMSGSIZE) => {
                if !self.gso_einval.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        path = self.label(),
                        "path {}: a UDP GSO send was refused ({e}): its datagrams are larger \
                         than the route's MTU; such sends go one datagram per call, fragmented",
                        self.label()
                    );
                }
                true
            }
            _ => false,
        }
    }

    /// Sends datagrams (of one size, the last may be shorter) in one `sendmsg` with
    /// UDP_SEGMENT, or one per call where GSO cannot be used ([`Path::uses_gso`],
    /// [`Path::gso_refused`]).
    fn send_datagrams(&self, dst: SocketAddr, local: Option<IpAddr>, d: Datagrams) -> bool {
        if self.uses_gso(dst, &d) {
            let Some(sock) = self.socket() else {
                return self.send_each(dst, local, d);
            };
            // An EINVAL here may be the segment size or a stale source: the datagrams then
            // go one per call, where [`Path::send`] tells the two apart.
            match udp::send_datagrams(&sock.sock, sock.v6, dst, local, d) {
                Err(e) if self.gso_refused(&e) => {}
                Err(e) if local.is_some() && udp::source_refused(&e) => {
                    return self.send_datagrams(dst, None, d)
                }
                r => return self.sent(dst, r.map(|_| ()), d.len(), d.count()),
            }
        }
        self.send_each(dst, local, d)
    }

    /// Sends the datagrams one per call.
    fn send_each(&self, dst: SocketAddr, local: Option<IpAddr>, d: Datagrams) -> bool {
        let mut ok = false;
        for datagram in d.each() {
            ok |= self.send(dst, local, datagram);
        }
        ok
    }
}

/// IPv4 and UDP headers: what a datagram adds to the packet the interface carries.
const IPV4_UDP_HEADERS: usize = 28;
/// IPv6 and UDP headers.
const IPV6_UDP_HEADERS: usize = 48;

/// How a tunnel receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiveMode {
    /// Read every path's socket: a stock peer answers wherever its first copy came from.
    #[default]
    All,
    /// Read only the first path's socket (what a single-socket design would do).
    Primary,
}

/// Why a path cannot be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum PathChangeError {
    /// A path on that interface exists already.
    #[error("there is already a path on interface {0}")]
    Exists(String),
    /// No path on that interface.
    #[error("there is no path on interface {0}")]
    NotFound(String),
    /// The tunnel has as many paths as it can.
    #[error("a tunnel has at most {MAX_PATHS} paths")]
    TooMany,
    /// The socket could not be opened (nothing was changed).
    #[error(transparent)]
    Socket(#[from] UdpError),
}

/// A link event, as netlink reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent<'a> {
    /// Interface `index`, named `name`, exists (new, or changed).
    New {
        /// Index.
        index: u32,
        /// Name.
        name: &'a str,
        /// Admin up with carrier.
        up: bool,
        /// MTU.
        mtu: u32,
    },
    /// Interface `index` was deleted.
    Del {
        /// Index.
        index: u32,
    },
}

/// An interface as a dump lists it, for [`Paths::sync`] and [`Paths::add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Admin up with carrier.
    pub up: bool,
    /// MTU.
    pub mtu: u32,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
}

/// How long a socket bound to a port that a closed socket of ours held is retried:
/// the receive thread lets go of a replaced socket within its idle poll (200 ms), and
/// the kernel releases a socket an io_uring held a little after the ring is gone.
const REBIND_PATIENCE: Duration = Duration::from_millis(1500);

/// Every path of a tunnel. Paths come and go ([`Paths::add`], [`Paths::remove`]) and so
/// do their sockets (as interfaces come and go, [`Paths::link_event`]); the list is
/// swapped whole, so a sender reads it without a lock.
pub struct Paths {
    list: ArcSwap<Vec<Arc<Path>>>,
    /// Serialises changes to the list and to the sockets.
    change: Mutex<()>,
    /// Bumped whenever the set of sockets changes; the receive thread then rebuilds.
    generation: AtomicU64,
    next_id: AtomicUsize,
    port: AtomicU16,
    fwmark: AtomicU32,
    /// How long an address seen on a path keeps getting copies.
    pub window: Duration,
    epoch: Instant,
    /// A program's transport, in place of sockets ([`Paths::open_user`]).
    user: Option<UserTransport>,
    /// The mode and the plan the sends follow, published by the path monitor
    /// ([`crate::datapath::monitor`]).
    pub schedule: Arc<Schedule>,
}

fn options(name: Option<&str>, port: u16, fwmark: u32) -> SocketOptions {
    SocketOptions {
        port,
        device: name.map(str::to_string),
        fwmark,
    }
}

/// Opens a socket, retrying for [`REBIND_PATIENCE`] while the port is still held (by a
/// socket of ours that was just closed).
fn open_patiently(opts: &SocketOptions) -> Result<PathSocket, UdpError> {
    let deadline = Instant::now() + REBIND_PATIENCE;
    loop {
        match PathSocket::open(opts) {
            Err(UdpError::PortInUse(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

impl Paths {
    /// Opens one socket per interface (or one unbound socket if `ifaces` is empty), all
    /// on `port` (0: a free port, chosen by the first socket). The paths start up; the
    /// daemon then tells them their links' states ([`Paths::sync`]).
    pub fn open(ifaces: &[Interface], port: u16, fwmark: u32) -> Result<Paths, UdpError> {
        let now = Instant::now();
        let paths: Vec<Arc<Path>> = if ifaces.is_empty() {
            vec![Arc::new(Path::new(0, None, None, 0))]
        } else {
            ifaces
                .iter()
                .enumerate()
                .map(|(id, i)| {
                    let seen = Some(Seen {
                        index: i.index,
                        up: true,
                    });
                    let (link, _) = PathLink::new(i.name.clone(), seen, now);
                    Arc::new(Path::new(id, Some(i.name.clone()), Some(link), 0))
                })
                .collect()
        };
        let mut port = port;
        for p in &paths {
            let s = PathSocket::open(&options(p.name(), port, fwmark))?;
            port = s.port;
            *p.socket.write() = Some(Arc::new(s));
        }
        Ok(Paths {
            next_id: AtomicUsize::new(paths.len()),
            list: ArcSwap::from_pointee(paths),
            change: Mutex::new(()),
            generation: AtomicU64::new(0),
            port: AtomicU16::new(port),
            fwmark: AtomicU32::new(fwmark),
            window: DEFAULT_WINDOW,
            epoch: now,
            user: None,
            schedule: Arc::default(),
        })
    }

    /// Every path, in order (a snapshot: a path added or removed meanwhile is not in it,
    /// or still is).
    pub fn all(&self) -> Guard<Arc<Vec<Arc<Path>>>> {
        self.list.load()
    }

    /// The path with id `id`, if the tunnel still has it.
    pub fn get(&self, id: PathId) -> Option<Arc<Path>> {
        self.list.load().iter().find(|p| p.id == id).cloned()
    }

    /// Changes whenever a socket is opened, replaced or closed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The listen port.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    fn opts(&self, name: Option<&str>) -> SocketOptions {
        options(
            name,
            self.port.load(Ordering::Relaxed),
            self.fwmark.load(Ordering::Relaxed),
        )
    }

    /// Opens new sockets on `port` for every path that has one and swaps them in, all or
    /// none. The old sockets are marked closed; the receive loop then takes the new ones.
    /// Paths without a socket (absent interfaces) get the new port when they rejoin.
    pub fn rebind(&self, port: u16, fwmark: u32) -> Result<(), UdpError> {
        let _g = self.change.lock();
        if self.user.is_some() {
            // A program's transport: the port is only what the tunnel reports.
            self.port.store(port, Ordering::Relaxed);
            return Ok(());
        }
        let list = self.list.load_full();
        let mut port = port;
        let mut fresh = Vec::new();
        for p in list.iter().filter(|p| p.socket.read().is_some()) {
            let s = PathSocket::open(&options(p.name(), port, fwmark))?;
            port = s.port;
            fresh.push((p, s));
        }
        if fresh.is_empty() && port == 0 {
            // No socket to pick a port: pick one now, so the port is known.
            port = PathSocket::open(&options(None, 0, fwmark))?.port;
        }
        for (p, s) in fresh {
            if let Some(old) = p.socket.write().replace(Arc::new(s)) {
                old.closed.store(true, Ordering::Relaxed);
            }
        }
        self.port.store(port, Ordering::Relaxed);
        self.fwmark.store(fwmark, Ordering::Relaxed);
        self.changed();
        Ok(())
    }

    /// Sets SO_MARK on every path socket, and on those opened later.
    pub fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        let _g = self.change.lock();
        for p in self.list.load().iter() {
            if let Some(s) = p.socket() {
                udp::set_fwmark(&s.sock, mark)?;
            }
        }
        self.fwmark.store(mark, Ordering::Relaxed);
        Ok(())
    }

    /// Counts a receive call on `path` that returned `count` datagrams, `len` bytes.
    pub fn count_rx(&self, path: &Path, len: usize, count: usize) {
        path.stats.rx_calls.fetch_add(1, Ordering::Relaxed);
        path.stats
            .rx_packets
            .fetch_add(count as u64, Ordering::Relaxed);
        path.stats.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
        let nanos = self.epoch.elapsed().as_nanos().max(1) as u64;
        path.stats.last_rx_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Time since `path` last received anything.
    pub fn since_last_rx(&self, path: &Path) -> Option<Duration> {
        let n = path.stats.last_rx_nanos.load(Ordering::Relaxed);
        (n > 0).then(|| self.epoch.elapsed().saturating_sub(Duration::from_nanos(n)))
    }
}

impl Paths {
    /// The positions in `list` of the paths `bytes` of `traffic` go out on now, as the
    /// monitor's plan says ([`crate::datapath::schedule`]); if it names none, every path
    /// that is up (or every path, if none is). Reads the plan without a lock.
    fn live(&self, list: &[Arc<Path>], traffic: Traffic, bytes: usize) -> PathSet {
        let schedule = &self.schedule;
        let plan = schedule.plan();
        let queued = |id: PathId| {
            let sock = list.iter().find(|p| p.id == id)?.socket()?;
            udp::unsent_bytes(&sock.sock).map(|n| n as u64)
        };
        let pick = plan.pick(schedule.mode(), traffic, bytes, queued);
        let mut set = PathSet::default();
        for (i, p) in list.iter().enumerate() {
            let chosen = match pick {
                Pick::One(id) => p.id == id,
                Pick::Dup => plan.takes_dup(p.id, p.is_up()),
            };
            if chosen {
                set.insert(i);
            }
        }
        if set.is_empty() {
            set = scheduler::duplicate(list.iter().map(|p| p.is_up()));
        }
        set
    }

    /// Calls `f` for every path of `list` that `bytes` of `traffic` go out on
    /// ([`Paths::live`]) and every address the peer gets copies at on it. The peer's
    /// endpoint lock is held only to copy the addresses out, never during `f`.
    fn each_destination(
        &self,
        list: &[Arc<Path>],
        peer: &Peer,
        traffic: Traffic,
        bytes: usize,
        mut f: impl FnMut(&Arc<Path>, SocketAddr, Option<IpAddr>),
    ) {
        let now = Instant::now();
        let set = self.live(list, traffic, bytes);
        for (i, path) in list.iter().enumerate() {
            if !set.contains(i) {
                continue;
            }
            let dests: Destinations = peer
                .endpoints
                .lock()
                .destinations(path.id, now, self.window);
            for (dst, local) in dests.each() {
                f(path, dst, local);
            }
        }
    }

    /// Sends `buf` (datagrams of `segment` bytes) to `peer` on every live path through
    /// `ring`: one `sendmsg` per path socket and destination, all in one submission, so a
    /// slow or dead path never delays another, and the one ciphertext buffer is shared by
    /// every path. Paths where GSO was refused send one datagram per call instead.
    ///
    /// The batch is built in `ring`'s reusable storage ([`UringTx::batch`]): in the steady
    /// state this allocates nothing.
    pub fn send_segments_via(
        &self,
        ring: &mut UringTx,
        peer: &Peer,
        buf: &[u8],
        segment: usize,
    ) -> bool {
        self.send_datagrams_via(ring, peer, Datagrams::Segments { buf, segment })
    }

    /// Splits striped bulk of more than [`STRIPE_CHUNK`] datagrams into a first chunk
    /// and the rest; None when `d` goes whole.
    fn stripe_split<'a>(
        &self,
        d: Datagrams<'a>,
        traffic: Traffic,
    ) -> Option<(Datagrams<'a>, Datagrams<'a>)> {
        if traffic != Traffic::Bulk || !self.schedule.mode().stripes() || d.count() <= STRIPE_CHUNK
        {
            return None;
        }
        Some(match d {
            Datagrams::Segments { buf, segment } => {
                let (a, b) = buf.split_at(segment * STRIPE_CHUNK);
                (
                    Datagrams::Segments { buf: a, segment },
                    Datagrams::Segments { buf: b, segment },
                )
            }
            Datagrams::Each(parts) => {
                let (a, b) = parts.split_at(STRIPE_CHUNK);
                (Datagrams::Each(a), Datagrams::Each(b))
            }
        })
    }

    /// Sends `d` to `peer` on every path the scheduler picks, one `sendmsg` per path and
    /// destination (the syscall datapath's [`Paths::send_data_via`]).
    fn send_datagrams_plain(&self, peer: &Peer, d: Datagrams, traffic: Traffic) -> bool {
        if let Some((first, rest)) = self.stripe_split(d, traffic) {
            let ok = self.send_datagrams_plain(peer, first, traffic);
            return self.send_datagrams_plain(peer, rest, traffic) | ok;
        }
        let mut ok = false;
        let list = self.list.load();
        self.each_destination(&list, peer, traffic, d.len(), |path, dst, local| {
            ok |= path.send_datagrams(dst, local, d);
        });
        ok
    }

    /// [`Paths::send_segments_via`] for datagrams in one buffer or one buffer each (sent
    /// where they were sealed, gathered by the kernel), as control traffic (duplicated).
    pub fn send_datagrams_via(&self, ring: &mut UringTx, peer: &Peer, d: Datagrams) -> bool {
        self.send_data_via(ring, peer, d, Traffic::Interactive)
    }

    /// [`Paths::send_datagrams_via`] for data of kind `traffic`: striped or duplicated as
    /// the mode says.
    pub fn send_data_via(
        &self,
        ring: &mut UringTx,
        peer: &Peer,
        d: Datagrams,
        traffic: Traffic,
    ) -> bool {
        // Striped bulk goes in chunks, each to the path furthest behind its share: a
        // whole 64-datagram batch on one path would take 18 ms to drain at 40 Mbit/s,
        // and the paths would deliver that far out of order.
        if let Some((first, rest)) = self.stripe_split(d, traffic) {
            let ok = self.send_data_via(ring, peer, first, traffic);
            return self.send_data_via(ring, peer, rest, traffic) | ok;
        }
        let count = d.count();
        let mut ok = false;
        let list = self.list.load();
        let mut batch = ring.batch();
        self.each_destination(&list, peer, traffic, d.len(), |path, dst, local| {
            if count > 1 && !path.uses_gso(dst, &d) {
                ok |= path.send_each(dst, local, d);
            } else if let Some(sock) = &*path.socket.read() {
                // Tagged with the path's id. The batch holds the socket (an `Arc` clone)
                // until the send completed, so a rebind meanwhile cannot close it under
                // the kernel.
                batch.push(sock, sock.v6, dst, local, path.id);
            } else if path.transport.is_some() {
                ok |= path.send_each(dst, local, d);
            }
        });
        for (id, dst, r) in batch.send_datagrams(d) {
            let Some(path) = list.iter().find(|p| p.id == id) else {
                continue;
            };
            ok |= match r {
                // Failures are rare: the local address the send used is looked up again.
                Err(e) if count > 1 && path.gso_refused(&e) => {
                    path.send_each(dst, self.local_for(peer, id, dst), d)
                }
                Err(e) if udp::source_refused(&e) => match self.local_for(peer, id, dst) {
                    Some(_) => path.send_datagrams(dst, None, d),
                    None => path.sent(dst, Err(e), d.len(), count),
                },
                r => path.sent(dst, r.map(|_| ()), d.len(), count),
            };
        }
        ok
    }

    /// The local address that datagrams to `dst` on path `id` leave from (as
    /// [`Paths::each_destination`] gives it).
    fn local_for(&self, peer: &Peer, id: PathId, dst: SocketAddr) -> Option<IpAddr> {
        let dests = peer
            .endpoints
            .lock()
            .destinations(id, Instant::now(), self.window);
        let local = dests.each().find(|(a, _)| *a == dst).and_then(|(_, l)| l);
        local
    }
}

impl Transmit for Paths {
    fn send_to_peer(&self, peer: &Peer, d: &[u8]) -> bool {
        self.send_segments_to_peer(peer, d, d.len())
    }

    fn send_segments_to_peer(&self, peer: &Peer, segments: &[u8], segment: usize) -> bool {
        self.send_datagrams_plain(
            peer,
            Datagrams::Segments {
                buf: segments,
                segment,
            },
            Traffic::Interactive,
        )
    }

    fn send_each_to_peer(&self, peer: &Peer, datagrams: &[&[u8]]) -> bool {
        self.send_datagrams_plain(peer, Datagrams::Each(datagrams), Traffic::Interactive)
    }

    fn send_data_to_peer(&self, peer: &Peer, datagrams: &[&[u8]], traffic: Traffic) -> bool {
        self.send_datagrams_plain(peer, Datagrams::Each(datagrams), traffic)
    }

    fn send_to(&self, dst: Source, d: &[u8]) -> bool {
        match self.list.load().iter().find(|p| p.id == dst.path) {
            Some(p) => p.send(dst.addr, dst.local, d),
            None => false,
        }
    }
}

mod membership;
#[cfg(test)]
mod tests;
mod user;
pub(crate) use user::{Delivered, UserTransport};
pub use user::{Inbound, Transport, INBOUND_DEPTH};
