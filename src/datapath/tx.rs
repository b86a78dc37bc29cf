//! The TX workers: one per TUN queue (per core, pinned). Each reads a batch of packets
//! (TSO super-packets split by the TUN layer, each with headroom for the WireGuard
//! header), seals each in place ([`Device::seal_cached`]), coalesces runs of equal-size
//! messages to one peer ([`GsoBatch`]), and hands each run to the paths as one UDP GSO
//! send per path socket ([`Paths::send_datagrams_via`]), gathered by the kernel from the
//! buffers the messages were sealed in: after the TUN layer's split, no byte is copied in
//! user space.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::datapath::gso::GsoBatch;
use crate::datapath::paths::Paths;
use crate::datapath::schedule::Schedule;
use crate::datapath::{would_block, Io, MAX_PACKET, SPLIT_MAX};
use crate::io::tun::{TunQueue, VIRTIO_NET_HDR_LEN};
use crate::io::udp::{Datagrams, MAX_GSO_SEGMENTS};
use crate::io::uring::UringTx;
use crate::multipath::path::Source;
use crate::multipath::probe::{HELLO, HELLO_LEN};
use crate::multipath::scheduler::Traffic;
use crate::protocol::device::{Device, SealedFor, SendCache};
use crate::protocol::peer::Peer;
use crate::protocol::session::{HEADROOM, TAILROOM};
use crate::protocol::transmit::Transmit;

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

    fn send_each_to_peer(&self, peer: &Peer, datagrams: &[&[u8]]) -> bool {
        self.paths.send_datagrams_via(
            &mut self.ring.borrow_mut(),
            peer,
            Datagrams::Each(datagrams),
        )
    }

    fn send_data_to_peer(&self, peer: &Peer, datagrams: &[&[u8]], traffic: Traffic) -> bool {
        self.paths.send_data_via(
            &mut self.ring.borrow_mut(),
            peer,
            Datagrams::Each(datagrams),
            traffic,
        )
    }

    fn send_to(&self, dst: Source, d: &[u8]) -> bool {
        self.paths.send_to(dst, d)
    }
}

/// Sends the batch (its messages where they were sealed, in `bufs`), reports it to the
/// device, and empties it.
fn flush(
    batch: &mut GsoBatch,
    traffic: Traffic,
    bufs: &[Vec<u8>],
    device: &Device,
    tx: &dyn Transmit,
    now: Instant,
) {
    if let Some(r) = batch.ready() {
        let mut parts: [&[u8]; MAX_GSO_SEGMENTS] = [&[]; MAX_GSO_SEGMENTS];
        for (part, &(i, len)) in parts.iter_mut().zip(r.parts) {
            *part = &bufs[i][..len];
        }
        let n = r.parts.len().min(MAX_GSO_SEGMENTS);
        let ok = tx.send_data_to_peer(r.peer, &parts[..n], traffic);
        device.note_sent(r.peer, r.bytes, r.data_packets, ok, now, tx);
    }
    batch.clear();
}

/// Reads the TUN queue, seals, sends. Runs until the process ends or the device is
/// deleted.
pub fn tx_worker(queue: &TunQueue, device: &Device, paths: &Paths, batch_size: usize, io: Io) {
    match io {
        Io::Syscalls => tx_loop(queue, device, paths, &paths.schedule, batch_size),
        Io::Uring => match UringTx::new(256) {
            Ok(ring) => {
                let tx = UringTransmit {
                    paths,
                    ring: RefCell::new(ring),
                };
                tx_loop(queue, device, &tx, &paths.schedule, batch_size)
            }
            Err(e) => {
                tracing::error!("cannot set up the TX io_uring ({e}): using plain system calls");
                tx_loop(queue, device, paths, &paths.schedule, batch_size)
            }
        },
    }
}

/// How often a TX worker lets a hello ride on a packet, while some peer has not shown
/// it is mpwg ([`crate::multipath::probe`]).
const HELLO_EVERY: Duration = Duration::from_secs(1);

/// Appends a hello after the IP packet of `len` bytes in `buf` (at [`HEADROOM`]) if it
/// fits under `mtu`; returns the new length.
fn with_hello(buf: &mut [u8], len: usize, mtu: usize) -> usize {
    let end = HEADROOM + len;
    if len == 0 || len + HELLO_LEN > mtu || buf.len() < end + HELLO_LEN + TAILROOM {
        return len;
    }
    buf[end..end + HELLO_LEN].copy_from_slice(&HELLO);
    len + HELLO_LEN
}

fn tx_loop(
    queue: &TunQueue,
    device: &Device,
    tx: &dyn Transmit,
    schedule: &Schedule,
    batch_size: usize,
) {
    let batch_size = batch_size.max(1);
    // Room for a whole super-packet's split after the last read that may start below the
    // batch size.
    let slots = batch_size + SPLIT_MAX;
    let mut scratch = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET];
    let mut bufs: Vec<Vec<u8>> = (0..slots)
        .map(|_| vec![0u8; HEADROOM + MAX_PACKET + TAILROOM])
        .collect();
    let mut sizes = vec![0usize; slots];
    let mut batch = GsoBatch::default();
    let mut cache = SendCache::default();
    let mut read_errors = 0u64;
    let mut traffic = Traffic::Bulk;
    let mut last_hello: Option<Instant> = None;
    loop {
        let mut total = 0;
        loop {
            let mut split = false;
            match queue.recv_batch(
                &mut scratch,
                &mut bufs[total..],
                &mut sizes[total..],
                HEADROOM,
            ) {
                Ok(n) => {
                    total += n;
                    split = n > 1;
                }
                Err(e) if would_block(&e) => {}
                // The device was deleted: the daemon sees it too, and shuts down.
                Err(_) if queue.is_gone() => return,
                Err(e) => {
                    read_errors += 1;
                    if read_errors.is_power_of_two() {
                        tracing::warn!(errors = read_errors, "TUN read failed: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // Keep reading single packets while more wait, up to the batch size, so that
            // they go out in GSO batches too (`slots` leaves room for the split of one
            // more super-packet). A super-packet is a batch already: it goes at once.
            if split || total >= batch_size || !queue.readable_now() {
                break;
            }
        }
        let now = Instant::now();
        for i in 0..total {
            let mut len = sizes[i];
            // Adaptive mode duplicates small and latency-sensitive packets and stripes
            // the rest: a batch holds one kind only.
            let kind = schedule.traffic(&bufs[i][HEADROOM..HEADROOM + len]);
            if kind != traffic && !batch.is_empty() {
                flush(&mut batch, traffic, &bufs, device, tx, now);
            }
            traffic = kind;
            let before = last_hello;
            if schedule.wants_hello()
                && last_hello.is_none_or(|t| now.saturating_duration_since(t) >= HELLO_EVERY)
            {
                let with = with_hello(&mut bufs[i], len, device.mtu());
                if with != len {
                    last_hello = Some(now);
                    len = with;
                }
            }
            match device.seal_cached(&mut bufs[i], len, now, tx, &mut cache) {
                SealedFor::Ready(peer, n) => {
                    if !batch.fits(peer, n) {
                        flush(&mut batch, traffic, &bufs, device, tx, now);
                    }
                    batch.push(peer, i, n, len > 0);
                }
                SealedFor::Staged => {}
                // A packet for no peer (the kernel's own IPv6 chatter on the device) took
                // no hello anywhere.
                SealedFor::NoRoute => last_hello = before,
            }
            if batch_size == 1 {
                flush(&mut batch, traffic, &bufs, device, tx, now);
            }
        }
        flush(&mut batch, traffic, &bufs, device, tx, now);
        // Let go of the batch's sessions before waiting on the TUN: an idle worker must
        // not keep an expired session (and its keys) alive.
        cache.end_batch();
    }
}
