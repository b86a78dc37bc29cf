//! The data path's worker loops.
//!
//! * A TX worker per TUN queue (per core, pinned): reads a batch of packets (TSO
//!   super-packets split by the TUN layer, each with headroom for the WireGuard header),
//!   seals each in place, coalesces runs of equal-size messages to one peer, and hands each
//!   run to the paths as one UDP GSO send per path socket.
//! * An RX worker per path socket: receives GRO batches, splits them by segment size,
//!   lets the device drop copies the replay window already holds before decrypting, opens
//!   the rest in place, and writes the batch of decrypted packets to the TUN, coalesced per
//!   flow. Packets of one flow keep the order they arrived in.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::device::{Device, Received, Sealed};
use crate::gso::GsoBatch;
use crate::path::{Source, Transmit};
use crate::peer::Peer;
use crate::session::{HEADROOM, TAILROOM};
use crate::socket::{Path, PathSocket, Paths};
use crate::tun::{GROTable, TunQueue, VIRTIO_NET_HDR_LEN};
use crate::uring::{UringRx, UringTx};

/// The most bytes one packet (or super-packet) can have.
const MAX_PACKET: usize = 65535;
/// Where a decrypted packet starts in a TUN write buffer: room for the vnet header.
const TUN_WRITE_OFFSET: usize = VIRTIO_NET_HDR_LEN;
/// Packets one TUN read can split into (64 KiB at the smallest TCP MSS we expect).
const SPLIT_MAX: usize = 128;

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// How the workers reach the sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Io {
    /// io_uring: one submission sends a batch on every path; multishot receives over
    /// provided buffer rings.
    #[default]
    Uring,
    /// Plain `sendmsg`/`recvmsg` (still with GSO and GRO), for kernels before 6.0.
    Syscalls,
}

/// A TX worker's way to send: its own io_uring, over the tunnel's paths.
struct UringTransmit<'a> {
    paths: &'a Paths,
    ring: RefCell<UringTx>,
}

impl Transmit for UringTransmit<'_> {
    fn send_to_peer(&self, peer: &Peer, d: &[u8]) -> bool {
        self.send_segments_to_peer(peer, d, d.len())
    }

    fn send_segments_to_peer(&self, peer: &Peer, segments: &[u8], segment: usize) -> bool {
        self.paths
            .send_segments_via(&mut self.ring.borrow_mut(), peer, segments, segment)
    }

    fn send_to(&self, dst: Source, d: &[u8]) -> bool {
        self.paths.send_to(dst, d)
    }
}

/// Sends the batch, reports it to the device, and empties it.
fn flush(batch: &mut GsoBatch, device: &Device, tx: &dyn Transmit, now: Instant) {
    if let Some(r) = batch.ready() {
        let ok = tx.send_segments_to_peer(r.peer, r.bytes, r.segment);
        device.note_sent(r.peer, r.bytes.len(), r.data_packets, ok, now, tx);
    }
    batch.clear();
}

/// Reads the TUN queue, seals, sends. Runs until the process ends.
pub fn tx_worker(queue: &TunQueue, device: &Device, paths: &Paths, batch_size: usize, io: Io) {
    match io {
        Io::Syscalls => tx_loop(queue, device, paths, batch_size),
        Io::Uring => match UringTx::new(256) {
            Ok(ring) => {
                let tx = UringTransmit {
                    paths,
                    ring: RefCell::new(ring),
                };
                tx_loop(queue, device, &tx, batch_size)
            }
            Err(e) => {
                tracing::error!("cannot set up the TX io_uring ({e}): using plain system calls");
                tx_loop(queue, device, paths, batch_size)
            }
        },
    }
}

fn tx_loop(queue: &TunQueue, device: &Device, tx: &dyn Transmit, batch_size: usize) {
    let batch_size = batch_size.max(1);
    let slots = batch_size.max(SPLIT_MAX);
    let mut scratch = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
    let mut bufs: Vec<Vec<u8>> = (0..slots)
        .map(|_| vec![0u8; HEADROOM + MAX_PACKET + TAILROOM])
        .collect();
    let mut sizes = vec![0usize; slots];
    let mut batch = GsoBatch::default();
    loop {
        let mut total = 0;
        loop {
            match queue.recv_batch(
                &mut scratch,
                &mut bufs[total..],
                &mut sizes[total..],
                HEADROOM,
            ) {
                Ok(n) => total += n,
                Err(e) if would_block(&e) => {}
                Err(e) => {
                    tracing::warn!("TUN read failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // Keep reading while packets wait, up to the batch size, leaving room for a
            // whole super-packet's split.
            if total >= batch_size || slots - total < SPLIT_MAX || !queue.readable_now() {
                break;
            }
        }
        let now = Instant::now();
        for (buf, &len) in bufs[..total].iter_mut().zip(&sizes[..total]) {
            if let Sealed::Ready(peer, n) = device.seal_ip_packet(buf, len, now, tx) {
                if !batch.fits(&peer, n) {
                    flush(&mut batch, device, tx, now);
                }
                batch.push(&peer, &buf[..n], len > 0);
            }
            if batch_size == 1 {
                flush(&mut batch, device, tx, now);
            }
        }
        flush(&mut batch, device, tx, now);
    }
}

/// pollfd entries waiting for input on `fds`, built once per socket set.
fn pollfds(fds: impl Iterator<Item = std::os::fd::RawFd>) -> Vec<libc::pollfd> {
    fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    })
    .collect()
}

/// Waits up to `timeout` until one of `pfds` is readable.
fn wait_readable(pfds: &mut [libc::pollfd], timeout: Duration) {
    // SAFETY: pfds is a live array of pfds.len() pollfd structs for the whole call.
    unsafe {
        libc::poll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            timeout.as_millis() as libc::c_int,
        );
    }
}

/// How long the receive loop sleeps in poll(2) when nothing arrives; it also bounds how
/// soon a replaced socket (listen port change) is noticed.
const RX_IDLE: Duration = Duration::from_millis(200);

/// Receives on every path socket in ONE thread, opens, writes to the TUN.
///
/// One thread, so that the first copy of each packet is the one delivered and packets
/// reach the TUN in the order they arrived: each socket delivers in order, and a copy on
/// one path is never handled before an older packet's copy on the same path. Two threads
/// (one per path) would interleave their TUN writes and reorder flows whose packets win
/// on different paths. Runs until the process ends; rebuilds its socket set when a
/// listen port change replaces the sockets.
pub fn rx_worker(
    paths: &Paths,
    device: &Device,
    queue: &TunQueue,
    batch_size: usize,
    io: Io,
    primary_only: bool,
) {
    let mut rx = Receiver::new(device, paths, queue, batch_size);
    loop {
        let set: Vec<(Arc<Path>, Arc<PathSocket>)> = paths
            .all()
            .iter()
            .filter(|p| !primary_only || p.id == 0)
            .map(|p| (p.clone(), p.socket()))
            .collect();
        let replaced = || set.iter().any(|(_, s)| s.closed.load(Ordering::Relaxed));
        let rings = match io {
            Io::Uring => set
                .iter()
                .map(|(_, s)| UringRx::new(s.raw_fd(), RX_RING_BUFFERS))
                .collect::<io::Result<Vec<UringRx>>>()
                .map_err(|e| {
                    tracing::error!("cannot set up the RX io_uring ({e}): using plain system calls")
                })
                .ok(),
            Io::Syscalls => None,
        };
        if let Some(mut rings) = rings {
            let mut fds = pollfds(rings.iter().map(UringRx::ring_fd));
            while !replaced() {
                let mut handled = 0;
                for (ring, (path, _)) in rings.iter_mut().zip(&set) {
                    let r = ring.recv(Duration::ZERO, &mut |from, payload, segment| {
                        rx.handle(path, from, payload, segment)
                    });
                    match r {
                        Ok(n) => handled += n,
                        Err(e) => tracing::warn!(path = path.label(), "receive failed: {e}"),
                    }
                }
                rx.write();
                if handled == 0 {
                    wait_readable(&mut fds, RX_IDLE);
                }
            }
            continue;
        }
        let mut fds = pollfds(set.iter().map(|(_, s)| s.raw_fd()));
        let mut buf = vec![0u8; MAX_PACKET + 1];
        while !replaced() {
            let mut handled = 0;
            for (path, sock) in &set {
                match sock.try_recv_segments(&mut buf) {
                    Ok((n, from, segment)) => {
                        handled += 1;
                        rx.handle(path, from, &mut buf[..n], segment);
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => tracing::warn!(path = path.label(), "receive failed: {e}"),
                }
            }
            rx.write();
            if handled == 0 {
                wait_readable(&mut fds, RX_IDLE);
            }
        }
    }
}

/// Provided buffers per path socket's receive ring (64 KiB each).
const RX_RING_BUFFERS: u16 = 64;

/// What the RX worker holds between receives: the decrypted packets waiting for the TUN.
struct Receiver<'a> {
    device: &'a Device,
    paths: &'a Paths,
    queue: &'a TunQueue,
    out: Vec<Vec<u8>>,
    ready: usize,
    gro: GROTable,
}

impl<'a> Receiver<'a> {
    fn new(
        device: &'a Device,
        paths: &'a Paths,
        queue: &'a TunQueue,
        batch_size: usize,
    ) -> Receiver<'a> {
        Receiver {
            device,
            paths,
            queue,
            out: (0..batch_size.max(1))
                .map(|_| Vec::with_capacity(TUN_WRITE_OFFSET + MAX_PACKET))
                .collect(),
            ready: 0,
            gro: GROTable::default(),
        }
    }

    /// Splits one receive (a GRO batch) on `path` into datagrams and opens each in place.
    fn handle(&mut self, path: &Path, from: SocketAddr, payload: &mut [u8], segment: usize) {
        let n = payload.len();
        let segment = segment.clamp(1, n.max(1));
        self.paths.count_rx(path, n, n.div_ceil(segment));
        let src = Source {
            addr: from,
            path: path.id,
        };
        let now = Instant::now();
        for datagram in payload.chunks_mut(segment) {
            match self.device.receive(src, datagram, now, self.paths) {
                Received::Packet(r) => {
                    path.stats.wins.fetch_add(1, Ordering::Relaxed);
                    let o = &mut self.out[self.ready];
                    o.clear();
                    o.resize(TUN_WRITE_OFFSET, 0);
                    o.extend_from_slice(&datagram[r]);
                    self.ready += 1;
                    if self.ready == self.out.len() {
                        self.write();
                    }
                }
                Received::Duplicate => {
                    path.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Received::Nothing => {}
            }
        }
    }

    /// Writes the packets waiting, coalesced per flow.
    fn write(&mut self) {
        let n = std::mem::take(&mut self.ready);
        write_batch(self.queue, &mut self.gro, &mut self.out[..n]);
    }
}

fn write_batch(queue: &TunQueue, gro: &mut GROTable, bufs: &mut [Vec<u8>]) {
    if let Err(e) = queue.send_batch(gro, bufs, TUN_WRITE_OFFSET) {
        tracing::debug!("TUN write failed: {e}");
    }
}

/// Pins the calling thread to `core` (of those the process may use), if it exists.
pub fn pin_to(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids() {
        if !ids.is_empty() {
            core_affinity::set_for_current(ids[core % ids.len()]);
        }
    }
}

/// Set when a worker thread panicked: the daemon then shuts down (cleanly, through the
/// same path as SIGTERM) and exits nonzero, rather than run on with a dead worker.
pub static WORKER_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts `f` on a named thread. If it panics, the panic is logged and the daemon is asked
/// to stop.
pub fn spawn(name: String, f: impl FnOnce() + Send + 'static) {
    let thread_name = name.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
                tracing::error!("worker thread {thread_name} failed: shutting down");
                WORKER_FAILED.store(true, Ordering::SeqCst);
                // The main thread's signal loop then runs the normal shutdown.
                let _ = signal_hook::low_level::raise(libc::SIGTERM);
            }
        })
        .expect("spawning a thread");
}
