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

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::device::{Device, Received, Sealed};
use crate::gso::GsoBatch;
use crate::path::{Source, Transmit};
use crate::session::{HEADROOM, TAILROOM};
use crate::socket::{Path, PathSocket, Paths};
use crate::tun::{GROTable, TunQueue, VIRTIO_NET_HDR_LEN};

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

/// Sends the batch, reports it to the device, and empties it.
fn flush(batch: &mut GsoBatch, device: &Device, paths: &Paths, now: Instant) {
    if let Some(r) = batch.ready() {
        let ok = paths.send_segments_to_peer(r.peer, r.bytes, r.segment);
        device.note_sent(r.peer, r.bytes.len(), r.data_packets, ok, now, paths);
    }
    batch.clear();
}

/// Reads the TUN queue, seals, sends. Runs until the process ends.
pub fn tx_worker(queue: &TunQueue, device: &Device, paths: &Paths, batch_size: usize) {
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
            if let Sealed::Ready(peer, n) = device.seal_ip_packet(buf, len, now, paths) {
                if !batch.fits(&peer, n) {
                    flush(&mut batch, device, paths, now);
                }
                batch.push(&peer, &buf[..n], len > 0);
            }
            if batch_size == 1 {
                flush(&mut batch, device, paths, now);
            }
        }
        flush(&mut batch, device, paths, now);
    }
}

/// Receives on one path socket, opens, writes to the TUN. Returns when the socket is
/// replaced (listen port change).
pub fn rx_worker(
    path: &Path,
    sock: &PathSocket,
    device: &Device,
    paths: &Paths,
    queue: &TunQueue,
    batch_size: usize,
) {
    let batch_size = batch_size.max(1);
    let mut buf = vec![0u8; MAX_PACKET + 1];
    let mut out: Vec<Vec<u8>> = (0..batch_size)
        .map(|_| Vec::with_capacity(TUN_WRITE_OFFSET + MAX_PACKET))
        .collect();
    let mut gro = GROTable::default();
    while !sock.closed.load(Ordering::Relaxed) {
        let (n, from, segment) = match sock.recv_segments(&mut buf) {
            Ok(x) => x,
            Err(e) if would_block(&e) => continue,
            Err(e) => {
                tracing::warn!(path = path.label(), "receive failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let segment = segment.clamp(1, n.max(1));
        paths.count_rx(path, n, n.div_ceil(segment));
        let src = Source {
            addr: from,
            path: path.id,
        };
        let now = Instant::now();
        let mut k = 0;
        for datagram in buf[..n].chunks_mut(segment) {
            match device.receive(src, datagram, now, paths) {
                Received::Packet(r) => {
                    path.stats.wins.fetch_add(1, Ordering::Relaxed);
                    let o = &mut out[k];
                    o.clear();
                    o.resize(TUN_WRITE_OFFSET, 0);
                    o.extend_from_slice(&datagram[r]);
                    k += 1;
                    if k == batch_size {
                        write_batch(queue, &mut gro, &mut out[..k]);
                        k = 0;
                    }
                }
                Received::Duplicate => {
                    path.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Received::Nothing => {}
            }
        }
        write_batch(queue, &mut gro, &mut out[..k]);
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

/// Starts `f` on a named thread.
pub fn spawn(name: String, f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("spawning a thread");
}

/// The queue an RX worker for path `id` writes to.
pub fn queue_for(queues: &[Arc<TunQueue>], id: usize) -> Arc<TunQueue> {
    queues[id % queues.len()].clone()
}
