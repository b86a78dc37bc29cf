//! The tunnel's paths at the I/O edge: one UDP socket per path, each bound to its
//! interface, all on the listen port; and the [`Transmit`] that sends every datagram on
//! every live path (duplicate mode).
//!
//! A send never blocks on another path and holds no shared lock while it runs: the
//! destinations are copied out of the peer first, and each path socket is sent on in turn
//! with a non-blocking `sendto` whose failure is counted and logged for that path only.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::io::udp::{self, Datagrams, SocketOptions, UdpError};
use crate::io::uring::UringTx;
use crate::multipath::endpoint::{Destinations, DEFAULT_WINDOW};
use crate::multipath::path::{Interface, PathId, Source};
use crate::multipath::scheduler;
use crate::protocol::peer::Peer;
use crate::protocol::transmit::Transmit;

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
    pub fn try_recv_segments(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
        udp::recv_segments_flags(&self.sock, buf, libc::MSG_DONTWAIT)
    }
}

impl AsRawFd for PathSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// One path: an interface (or none, for the single unbound socket of stock WireGuard),
/// its socket, its state and its counters.
pub struct Path {
    /// Position in the path list; what [`Source::path`] refers to.
    pub id: PathId,
    /// The interface, or None for an unbound socket.
    pub iface: Option<Interface>,
    up: AtomicBool,
    gso: AtomicBool,
    socket: RwLock<Arc<PathSocket>>,
    /// Counters.
    pub stats: PathStats,
}

impl Path {
    /// The interface name, or "*" for an unbound socket.
    pub fn label(&self) -> &str {
        self.iface.as_ref().map_or("*", |i| i.name.as_str())
    }

    /// Whether the interface is up (admin up with carrier), as netlink last said.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The current socket.
    pub fn socket(&self) -> Arc<PathSocket> {
        self.socket.read().clone()
    }

    fn send(&self, dst: SocketAddr, d: &[u8]) -> bool {
        let sock = self.socket.read().clone();
        let r = sock.sock.send_to(d, udp::destination(sock.v6, dst));
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

    /// Sends datagrams (of one size, the last may be shorter) in one `sendmsg` with
    /// UDP_SEGMENT. A socket that refuses GSO (EIO, EINVAL) is switched to one send per
    /// datagram, with a log line, and the batch is resent that way.
    fn send_datagrams(&self, dst: SocketAddr, d: Datagrams) -> bool {
        let count = d.count();
        if count > 1 && self.gso.load(Ordering::Relaxed) {
            let sock = self.socket.read().clone();
            match udp::send_datagrams(&sock.sock, sock.v6, dst, d) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) => {
                    self.gso.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        path = self.label(),
                        "path {}: the kernel refused UDP GSO ({e}); sending one datagram per call from now on",
                        self.label()
                    );
                }
                r => return self.sent(dst, r.map(|_| ()), d.len(), count),
            }
        }
        let mut ok = false;
        for datagram in d.each() {
            ok |= self.send(dst, datagram);
        }
        ok
    }
}

/// How a tunnel receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiveMode {
    /// Read every path's socket: a stock peer answers wherever its first copy came from.
    #[default]
    All,
    /// Read only the first path's socket (what a single-socket design would do).
    Primary,
}

/// Every path of a tunnel.
pub struct Paths {
    paths: Vec<Arc<Path>>,
    /// How long an address seen on a path keeps getting copies.
    pub window: Duration,
    epoch: Instant,
}

fn options(iface: Option<&Interface>, port: u16, fwmark: u32) -> SocketOptions {
    SocketOptions {
        port,
        device: iface.map(|i| i.name.clone()),
        fwmark,
    }
}

impl Paths {
    /// Opens one socket per interface (or one unbound socket if `ifaces` is empty), all
    /// on `port` (0: a free port, chosen by the first socket).
    pub fn open(ifaces: &[Interface], port: u16, fwmark: u32) -> Result<Paths, UdpError> {
        let sockets = Self::open_sockets(ifaces, port, fwmark)?;
        let list: Vec<Option<Interface>> = if ifaces.is_empty() {
            vec![None]
        } else {
            ifaces.iter().cloned().map(Some).collect()
        };
        let paths = list
            .into_iter()
            .zip(sockets)
            .enumerate()
            .map(|(id, (iface, sock))| {
                Arc::new(Path {
                    id,
                    iface,
                    up: AtomicBool::new(true),
                    gso: AtomicBool::new(true),
                    socket: RwLock::new(Arc::new(sock)),
                    stats: PathStats::default(),
                })
            })
            .collect();
        Ok(Paths {
            paths,
            window: DEFAULT_WINDOW,
            epoch: Instant::now(),
        })
    }

    fn open_sockets(
        ifaces: &[Interface],
        port: u16,
        fwmark: u32,
    ) -> Result<Vec<PathSocket>, UdpError> {
        if ifaces.is_empty() {
            return Ok(vec![PathSocket::open(&options(None, port, fwmark))?]);
        }
        let mut out = Vec::with_capacity(ifaces.len());
        let mut port = port;
        for i in ifaces {
            let s = PathSocket::open(&options(Some(i), port, fwmark))?;
            port = s.port;
            out.push(s);
        }
        Ok(out)
    }

    /// Every path.
    pub fn all(&self) -> &[Arc<Path>] {
        &self.paths
    }

    /// The listen port.
    pub fn port(&self) -> u16 {
        self.paths[0].socket().port
    }

    /// Opens new sockets on `port` for every path and swaps them in, all or none. The old
    /// sockets are marked closed; the receive loop then takes the new ones.
    pub fn rebind(&self, port: u16, fwmark: u32) -> Result<(), UdpError> {
        let ifaces: Vec<Interface> = self.paths.iter().filter_map(|p| p.iface.clone()).collect();
        let sockets = Self::open_sockets(&ifaces, port, fwmark)?;
        for (path, sock) in self.paths.iter().zip(sockets) {
            let old = std::mem::replace(&mut *path.socket.write(), Arc::new(sock));
            old.closed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sets SO_MARK on every path socket.
    pub fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        for p in &self.paths {
            udp::set_fwmark(&p.socket().sock, mark)?;
        }
        Ok(())
    }

    /// Marks the path on interface `index` up or down; returns it if that changed.
    pub fn set_link_state(&self, index: u32, up: bool) -> Option<Arc<Path>> {
        let p = self
            .paths
            .iter()
            .find(|p| p.iface.as_ref().is_some_and(|i| i.index == index))?;
        (p.up.swap(up, Ordering::Relaxed) != up).then(|| p.clone())
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

    /// The paths a packet goes out on now, as the scheduler decides from their states.
    fn live(&self) -> impl Iterator<Item = &Arc<Path>> {
        let set = scheduler::duplicate(self.paths.iter().map(|p| p.is_up()));
        self.paths.iter().filter(move |p| set.contains(p.id))
    }
}

impl Paths {
    /// Calls `f` for every live path and every address the peer gets copies at on it.
    /// The peer's endpoint lock is held only to copy the addresses out, never during `f`.
    fn each_destination(&self, peer: &Peer, mut f: impl FnMut(&Arc<Path>, SocketAddr)) {
        let now = Instant::now();
        for path in self.live() {
            let dests: Destinations = peer
                .endpoints
                .lock()
                .destinations(path.id, now, self.window);
            for dst in dests.iter() {
                f(path, dst);
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

    /// Sends `d` to `peer` on every path the scheduler picks, one `sendmsg` per path and
    /// destination (the syscall datapath's [`Paths::send_datagrams_via`]).
    fn send_datagrams_plain(&self, peer: &Peer, d: Datagrams) -> bool {
        let mut ok = false;
        self.each_destination(peer, |path, dst| {
            ok |= path.send_datagrams(dst, d);
        });
        ok
    }

    /// [`Paths::send_segments_via`] for datagrams in one buffer or one buffer each (sent
    /// where they were sealed, gathered by the kernel).
    pub fn send_datagrams_via(&self, ring: &mut UringTx, peer: &Peer, d: Datagrams) -> bool {
        let count = d.count();
        let mut ok = false;
        let mut batch = ring.batch();
        self.each_destination(peer, |path, dst| {
            if count > 1 && !path.gso.load(Ordering::Relaxed) {
                ok |= path.send_datagrams(dst, d);
            } else {
                // Tagged with the path's id, its index in `self.paths`. The batch holds the
                // socket (an `Arc` clone) until the send completed, so a rebind meanwhile
                // cannot close it under the kernel.
                let sock = path.socket.read();
                batch.push(&sock, sock.v6, dst, path.id);
            }
        });
        for (id, dst, r) in batch.send_datagrams(d) {
            let Some(path) = self.paths.get(id) else {
                continue;
            };
            ok |= match r {
                Err(e)
                    if count > 1
                        && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) =>
                {
                    path.gso.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        path = path.label(),
                        "path {}: the kernel refused UDP GSO ({e}); sending one datagram per call from now on",
                        path.label()
                    );
                    path.send_datagrams(dst, d)
                }
                r => path.sent(dst, r.map(|_| ()), d.len(), count),
            };
        }
        ok
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
        )
    }

    fn send_each_to_peer(&self, peer: &Peer, datagrams: &[&[u8]]) -> bool {
        self.send_datagrams_plain(peer, Datagrams::Each(datagrams))
    }

    fn send_to(&self, dst: Source, d: &[u8]) -> bool {
        match self.paths.get(dst.path) {
            Some(p) => p.send(dst.addr, d),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::uring::alloc_count::allocations_in;
    use crate::protocol::key::Key;

    fn receiver() -> UdpSocket {
        let r = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Room for every datagram a test sends before reading them.
        udp::set_buffers(&r, SOCKET_BUFFER);
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        r
    }

    /// Takes `sizes.len()` datagrams from `r`, checking their sizes.
    fn expect_datagrams(r: &UdpSocket, sizes: &[usize]) {
        let mut b = [0u8; 2048];
        for &len in sizes {
            assert_eq!(r.recv(&mut b).unwrap(), len);
        }
    }

    /// One unbound path, a receiver the peer's endpoint points at, and a TX ring.
    fn uring_sender() -> (Paths, UdpSocket, Peer, UringTx) {
        let paths = Paths::open(&[], 0, 0).unwrap();
        let r = receiver();
        let peer = Peer::new(Key([7; 32]), None);
        peer.endpoints
            .lock()
            .set_configured(r.local_addr().unwrap());
        (paths, r, peer, UringTx::new(8).unwrap())
    }

    #[test]
    fn send_segments_via_steady_state_allocates_nothing() {
        let (paths, r, peer, mut ring) = uring_sender();
        let buf = vec![0x5a; 340];

        // GSO batch and single datagram, once each to size the scratch storage.
        assert!(paths.send_segments_via(&mut ring, &peer, &buf, 100));
        expect_datagrams(&r, &[100, 100, 100, 40]);
        assert!(paths.send_segments_via(&mut ring, &peer, &buf[..60], 60));
        expect_datagrams(&r, &[60]);

        let (allocs, ok) = allocations_in(|| {
            (0..50).all(|_| {
                paths.send_segments_via(&mut ring, &peer, &buf, 100)
                    & paths.send_segments_via(&mut ring, &peer, &buf[..60], 60)
            })
        });
        assert_eq!(allocs, 0, "allocations in 100 sends");
        assert!(ok);
        for _ in 0..50 {
            expect_datagrams(&r, &[100, 100, 100, 40, 60]);
        }
        let st = &paths.all()[0].stats;
        assert_eq!(st.tx_calls.load(Ordering::Relaxed), 102);
        assert_eq!(st.tx_packets.load(Ordering::Relaxed), 51 * 5);
        assert_eq!(st.tx_bytes.load(Ordering::Relaxed), 51 * 400);
        assert_eq!(st.send_errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn datagrams_in_their_own_buffers_go_out_gathered_through_either_datapath() {
        let (paths, r, peer, mut ring) = uring_sender();
        let bufs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 200]).collect();
        let parts: Vec<&[u8]> = vec![
            &bufs[0][..100],
            &bufs[1][..100],
            &bufs[2][..100],
            &bufs[3][..40],
        ];
        let check = |r: &UdpSocket| {
            let mut b = [0u8; 2048];
            for (i, len) in [100usize, 100, 100, 40].into_iter().enumerate() {
                let n = r.recv(&mut b).unwrap();
                assert_eq!(n, len);
                assert!(b[..n].iter().all(|&x| x == i as u8));
            }
        };
        // io_uring: one GSO send, sized once, then allocation-free.
        assert!(paths.send_datagrams_via(&mut ring, &peer, Datagrams::Each(&parts)));
        check(&r);
        let (allocs, ok) = allocations_in(|| {
            (0..20).all(|_| paths.send_datagrams_via(&mut ring, &peer, Datagrams::Each(&parts)))
        });
        assert_eq!(allocs, 0, "allocations in 20 gathered sends");
        assert!(ok);
        for _ in 0..20 {
            check(&r);
        }
        // Plain system calls (the Transmit implementation of Paths).
        assert!(paths.send_each_to_peer(&peer, &parts));
        check(&r);
        let st = &paths.all()[0].stats;
        assert_eq!(st.tx_calls.load(Ordering::Relaxed), 22);
        assert_eq!(st.tx_packets.load(Ordering::Relaxed), 22 * 4);
        assert_eq!(st.tx_bytes.load(Ordering::Relaxed), 22 * 340);
    }

    #[test]
    fn send_segments_via_follows_a_rebind_and_lets_the_old_socket_go() {
        let (paths, r, peer, mut ring) = uring_sender();
        let old = paths.all()[0].socket();
        assert!(paths.send_segments_via(&mut ring, &peer, b"one", 3));
        let mut b = [0u8; 64];
        let (_, from) = r.recv_from(&mut b).unwrap();
        assert_eq!(from.port(), old.port);
        // The ring keeps no reference to the socket between sends.
        assert_eq!(Arc::strong_count(&old), 2);

        paths.rebind(0, 0).unwrap();
        assert!(old.closed.load(Ordering::Relaxed));
        let new = paths.all()[0].socket();
        assert_ne!(new.port, old.port);
        assert!(paths.send_segments_via(&mut ring, &peer, b"two", 3));
        let (n, from) = r.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"two");
        assert_eq!(from.port(), new.port);
        assert_eq!(Arc::strong_count(&old), 1);
    }

    #[test]
    fn send_segments_via_fails_one_destination_alone_and_falls_back_from_gso() {
        let paths = Paths::open(&[], 0, 0).unwrap();
        let path = &paths.all()[0];
        let st = &path.stats;
        let r = receiver();
        let peer = Peer::new(Key([7; 32]), None);
        // Two destinations on the one path: port 0 is refused (EINVAL), the other works.
        let bad: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let now = Instant::now();
        peer.endpoints.lock().record(path.id, bad, now);
        peer.endpoints
            .lock()
            .record(path.id, r.local_addr().unwrap(), now);
        let mut ring = UringTx::new(8).unwrap();

        assert!(paths.send_segments_via(&mut ring, &peer, b"kept", 4));
        expect_datagrams(&r, &[4]);
        assert_eq!(st.send_errors.load(Ordering::Relaxed), 1);
        assert_eq!(st.tx_calls.load(Ordering::Relaxed), 2);
        assert_eq!(st.tx_packets.load(Ordering::Relaxed), 1);
        assert!(path.gso.load(Ordering::Relaxed));

        // EINVAL on a GSO send switches GSO off for the path; that destination is retried one
        // datagram per call (failing 4 times), the other went out as one GSO send.
        let buf = vec![1u8; 340];
        assert!(paths.send_segments_via(&mut ring, &peer, &buf, 100));
        expect_datagrams(&r, &[100, 100, 100, 40]);
        assert!(!path.gso.load(Ordering::Relaxed));
        assert_eq!(st.send_errors.load(Ordering::Relaxed), 1 + 4);
        assert_eq!(st.tx_calls.load(Ordering::Relaxed), 2 + 4 + 1);
        assert_eq!(st.tx_packets.load(Ordering::Relaxed), 1 + 4);

        // From now on both destinations get one send per datagram, outside the ring.
        assert!(paths.send_segments_via(&mut ring, &peer, &buf, 100));
        expect_datagrams(&r, &[100, 100, 100, 40]);
        assert_eq!(st.send_errors.load(Ordering::Relaxed), 5 + 4);
        assert_eq!(st.tx_calls.load(Ordering::Relaxed), 7 + 8);
        assert_eq!(st.tx_packets.load(Ordering::Relaxed), 5 + 4);
        assert_eq!(st.tx_bytes.load(Ordering::Relaxed), 4 + 340 + 340);
    }
}
