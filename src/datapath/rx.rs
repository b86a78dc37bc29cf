//! The receive side: one receive thread over every path socket's ring splits GRO
//! batches by segment size, queues handshake messages for the handshake worker
//! ([`crate::datapath::handshake`]), and gathers
//! data messages into batches, in the order they arrived. A batch is opened
//! ([`Device::decrypt_batch`], then [`Device::commit_batch`]: copies the replay window
//! holds are dropped before decryption; those it held when they arrived are dropped
//! before they are copied out of the receive buffer, [`Device::known_copies`]) either by the receive thread itself, or by
//! decryption workers (`--decrypt-workers`, pinned like the TX workers) that write the
//! batches back in receive order ([`crate::datapath::queueing`]). Packets of one flow
//! reach the TUN in the order they arrived, coalesced per flow.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::datapath::handshake::HandshakeQueue;
use crate::datapath::monitor::Monitor;
use crate::datapath::paths::{Path, PathSocket, Paths};
use crate::datapath::queueing::{Dispatcher, Writer};
use crate::datapath::reordering::Reordering;
use crate::datapath::{guarded, pin_to, would_block, Io, Lifecycle, MAX_PACKET};
use crate::io::poll::PollSet;
use crate::io::tun::{GROTable, TunQueue};
use crate::io::uring::UringRx;
use crate::multipath::path::Source;
use crate::protocol::device::receive::{RxBatch, RxCache};
use crate::protocol::device::Device;
use crate::protocol::noise::messages::{classify, Kind};

/// How long the receive loop sleeps in poll(2) when nothing arrives; it also bounds how
/// soon a new or replaced socket (a path added, an interface back, a port change) is
/// read.
const RX_IDLE: Duration = Duration::from_millis(200);

/// Receives on every path socket in ONE thread, and opens and writes what arrives, or
/// has `decrypt_workers` threads (pinned like the TX workers) open it and write it back
/// in receive order (see [`crate::datapath::queueing`]).
///
/// One receive thread, so that the first copy of each packet is the one delivered and
/// packets reach the TUN in the order they arrived: each socket delivers in order, and a
/// copy on one path is never handled before an older packet's copy on the same path. Two
/// receive threads (one per path) would interleave their TUN writes and reorder flows
/// whose packets win on different paths. Runs until `life` says the tunnel stops; rebuilds its
/// socket set when a listen port change replaces the sockets.
#[allow(clippy::too_many_arguments)]
pub fn rx_worker(
    paths: &Paths,
    monitor: &Monitor,
    device: &Device,
    queue: &TunQueue,
    batch_size: usize,
    io: Io,
    primary_only: bool,
    decrypt_workers: usize,
    handshakes: &HandshakeQueue,
    life: &Lifecycle,
) {
    if decrypt_workers == 0 {
        let sink = Sink::inline(queue, batch_size);
        let mut rx = Receiver::new(device, paths, monitor, handshakes, sink);
        return receive_loop(&mut rx, paths, io, primary_only, life);
    }
    let (dispatcher, workers, writer) = crate::datapath::queueing::queues(
        decrypt_workers,
        decrypt_workers * 2 + 2,
        batch_size,
        (GROTable::default(), Reordering::default()),
    );
    let writer = &writer;
    std::thread::scope(|s| {
        for (i, work) in workers.into_iter().enumerate() {
            let name = format!("mpwg-decrypt-{i}");
            std::thread::Builder::new()
                .name(name.clone())
                .spawn_scoped(s, move || {
                    guarded(&name, life, || {
                        pin_to(i);
                        decrypt_worker(work, writer, device, paths, monitor, queue)
                    })
                })
                .expect("spawning a thread");
        }
        let mut rx = Receiver::new(
            device,
            paths,
            monitor,
            handshakes,
            Sink::workers(dispatcher, writer, queue),
        );
        receive_loop(&mut rx, paths, io, primary_only, life)
    })
}

/// The receive thread's loop over every path socket's ring (or socket). When the paths'
/// sockets change ([`Paths::generation`]: a path added or removed, an interface gone or
/// back, a port change) it rebuilds its set, keeping the rings of the sockets that stay,
/// so the other paths lose nothing. Returns once `life` says the tunnel stops (seen
/// within [`RX_IDLE`]).
fn receive_loop(rx: &mut Receiver, paths: &Paths, io: Io, primary_only: bool, life: &Lifecycle) {
    // The rings of the sockets read so far (the ring first: it goes before its socket).
    let mut kept: Vec<(UringRx, Arc<PathSocket>)> = Vec::new();
    if let Some(queue) = paths.user_queue() {
        return user::receive_loop(rx, queue, life);
    }
    let mut uring = io == Io::Uring;
    while !life.is_stopping() {
        let generation = paths.generation();
        let set: Vec<(Arc<Path>, Arc<PathSocket>)> = paths
            .all()
            .iter()
            .take(if primary_only { 1 } else { usize::MAX })
            .filter_map(|p| Some((p.clone(), p.socket()?)))
            .collect();
        let changed = || paths.generation() != generation || life.is_stopping();
        if uring {
            let mut rings = Vec::with_capacity(set.len());
            let mut failed = None;
            for (_, s) in &set {
                let ring = match kept.iter().position(|(_, k)| Arc::ptr_eq(k, s)) {
                    Some(i) => Ok(kept.swap_remove(i).0),
                    None => UringRx::new(s.raw_fd(), RX_RING_BUFFERS),
                };
                match ring {
                    Ok(r) => rings.push(r),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            // The rings of sockets no longer read.
            kept.clear();
            if let Some(e) = failed {
                tracing::error!("cannot set up the RX io_uring ({e}): using plain system calls");
                uring = false;
                continue;
            }
            let mut fds = PollSet::readable(rings.iter().map(UringRx::ring_fd));
            while !changed() {
                let mut handled = 0;
                for (ring, (path, _)) in rings.iter_mut().zip(&set) {
                    let r = ring.recv(Duration::ZERO, &mut |from, payload, segment, local| {
                        rx.handle(path, from, local, payload, segment)
                    });
                    match r {
                        Ok(n) => handled += n,
                        Err(e) => tracing::warn!(path = path.label(), "receive failed: {e}"),
                    }
                }
                rx.flush();
                if handled == 0 {
                    rx.idle();
                    fds.wait(rx.idle_wait());
                    rx.release_due();
                }
            }
            kept = rings
                .into_iter()
                .zip(set.into_iter().map(|(_, s)| s))
                .collect();
            continue;
        }
        let mut fds = PollSet::readable(set.iter().map(|(_, s)| s.raw_fd()));
        let mut buf = vec![0u8; MAX_PACKET + 1];
        while !changed() {
            let mut handled = 0;
            for (path, sock) in &set {
                match sock.try_recv_segments(&mut buf) {
                    Ok(r) => {
                        handled += 1;
                        rx.handle(path, r.from, r.local, &mut buf[..r.len], r.segment);
                    }
                    Err(e) if would_block(&e) => {}
                    Err(e) => tracing::warn!(path = path.label(), "receive failed: {e}"),
                }
            }
            rx.flush();
            if handled == 0 {
                rx.idle();
                fds.wait(rx.idle_wait());
                rx.release_due();
            }
        }
    }
}

mod user;

/// Provided buffers per path socket's receive ring (64 KiB each).
const RX_RING_BUFFERS: u16 = 64;

/// Adds a batch's wins and duplicates to the path counters (a few atomic adds per
/// batch), and hands its probes and hellos to the path monitor.
fn count_paths(paths: &Paths, monitor: &Monitor, batch: &RxBatch) {
    for t in &batch.tally {
        if let Some(p) = paths.all().iter().find(|p| p.id == t.path) {
            p.stats.wins.fetch_add(t.wins, Ordering::Relaxed);
            p.stats
                .duplicates
                .fetch_add(t.duplicates, Ordering::Relaxed);
        }
    }
    if !batch.mpwg.is_empty() || !batch.hellos.is_empty() {
        let now = Instant::now();
        for (src, peer, plain) in &batch.mpwg {
            monitor.on_probe(peer, *src, plain, now);
        }
        for peer in &batch.hellos {
            monitor.on_hello(peer, now);
        }
    }
}

/// A decryption worker: decrypts the batches the receive thread numbered, in any order;
/// then, in receive order (the writer's turn), commits their counters and writes them to
/// the TUN, its own batch and every later one already decrypted.
fn decrypt_worker(
    work: crossbeam_channel::Receiver<Box<RxBatch>>,
    writer: &Writer<(GROTable, Reordering)>,
    device: &Device,
    paths: &Paths,
    monitor: &Monitor,
    queue: &TunQueue,
) {
    let mut cache = RxCache::default();
    for mut batch in work.iter() {
        device.decrypt_batch(&mut batch, &mut cache, Instant::now());
        let written = writer.finish(batch, &mut |(gro, reorder), b| {
            let now = Instant::now();
            device.commit_batch(b, now, paths);
            count_paths(paths, monitor, b);
            let hold = paths.schedule.reorder_limits();
            reorder.write(queue, gro, b, hold.as_ref(), now);
            if hold.is_some() {
                reorder.publish(&paths.schedule.reorder_stats);
            }
        });
        if !written {
            return;
        }
    }
}

/// Where the receive thread's batches go.
enum Sink<'a> {
    /// Opened and written by the receive thread itself.
    Inline {
        batch: Box<RxBatch>,
        cache: RxCache,
        gro: Box<GROTable>,
        reorder: Box<Reordering>,
        queue: &'a TunQueue,
    },
    /// Numbered and handed to the decryption workers.
    Workers {
        dispatcher: Dispatcher,
        batch: Option<Box<RxBatch>>,
        /// The workers' writer, for releasing held packets when nothing arrives.
        writer: &'a Writer<(GROTable, Reordering)>,
        queue: &'a TunQueue,
    },
}

impl<'a> Sink<'a> {
    fn inline(queue: &'a TunQueue, batch_size: usize) -> Sink<'a> {
        Sink::Inline {
            batch: Box::new(RxBatch::new(batch_size)),
            cache: RxCache::default(),
            gro: Box::default(),
            reorder: Box::default(),
            queue,
        }
    }

    fn workers(
        dispatcher: Dispatcher,
        writer: &'a Writer<(GROTable, Reordering)>,
        queue: &'a TunQueue,
    ) -> Sink<'a> {
        let batch = dispatcher.take();
        Sink::Workers {
            dispatcher,
            batch,
            writer,
            queue,
        }
    }
}

/// The receive thread's state: the batch being filled.
struct Receiver<'a> {
    device: &'a Device,
    paths: &'a Paths,
    monitor: &'a Monitor,
    handshakes: &'a HandshakeQueue,
    sink: Sink<'a>,
    /// The receive thread's sessions by index, for [`Device::known_copies`].
    known_cache: RxCache,
    /// Which datagrams of the receive being handled are known copies.
    known: Vec<bool>,
}

impl<'a> Receiver<'a> {
    fn new(
        device: &'a Device,
        paths: &'a Paths,
        monitor: &'a Monitor,
        handshakes: &'a HandshakeQueue,
        sink: Sink<'a>,
    ) -> Receiver<'a> {
        Receiver {
            device,
            paths,
            monitor,
            handshakes,
            sink,
            known_cache: RxCache::default(),
            known: Vec::new(),
        }
    }

    /// Lets go of the sessions the duplicate check looked up (before the loop waits).
    fn idle(&mut self) {
        self.known_cache.end_batch();
    }

    fn batch(&mut self) -> Option<&mut RxBatch> {
        match &mut self.sink {
            Sink::Inline { batch, .. } => Some(&mut **batch),
            Sink::Workers { batch, .. } => batch.as_deref_mut(),
        }
    }

    /// Splits one receive (a GRO batch) from `from` to the local address `local` on `path`
    /// into datagrams: data messages join the batch, handshake messages go to the handshake
    /// worker's queue.
    fn handle(
        &mut self,
        path: &Path,
        from: SocketAddr,
        local: Option<IpAddr>,
        payload: &mut [u8],
        segment: usize,
    ) {
        let n = payload.len();
        let segment = segment.clamp(1, n.max(1));
        self.paths.count_rx(path, n, n.div_ceil(segment));
        let src = Source {
            addr: from,
            path: path.id,
            local: local.filter(|l| path.may_answer_from(*l)),
        };
        // Copies the committed replay window holds are dropped here, uncopied: the
        // provided buffer goes back to the ring as soon as this returns.
        let dups = self.device.known_copies(
            &mut self.known_cache,
            src,
            payload,
            segment,
            Instant::now(),
            &mut self.known,
        );
        if dups > 0 {
            path.stats.duplicates.fetch_add(dups, Ordering::Relaxed);
        }
        for (k, datagram) in payload.chunks_mut(segment).enumerate() {
            if classify(datagram) != Some(Kind::Data) {
                self.handshakes.submit(self.device, src, datagram);
                continue;
            }
            if self.known.get(k).copied().unwrap_or(false) {
                continue;
            }
            if self.batch().is_some_and(|b| b.is_full()) {
                self.flush();
            }
            if let Some(b) = self.batch() {
                b.push(src, datagram);
            }
        }
    }

    /// How long the loop may sleep when nothing arrives: [`RX_IDLE`], or until the reorder
    /// stage's next hold ends.
    pub(super) fn idle_wait(&self) -> Duration {
        let deadline = match &self.sink {
            Sink::Inline { reorder, .. } => reorder.next_deadline(),
            Sink::Workers { writer, .. } => writer.with_state(|(_, r)| r.next_deadline()),
        };
        deadline.map_or(RX_IDLE, |d| {
            d.saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), RX_IDLE)
        })
    }

    /// Writes what the reorder stage held long enough.
    pub(super) fn release_due(&mut self) {
        let now = Instant::now();
        match &mut self.sink {
            Sink::Inline {
                gro,
                reorder,
                queue,
                ..
            } => reorder.release_due(queue, gro, now),
            Sink::Workers { writer, queue, .. } => {
                writer.with_state(|(gro, r)| r.release_due(queue, gro, now))
            }
        }
    }

    /// Sends the batch on: opened and written here, or to the workers.
    fn flush(&mut self) {
        match &mut self.sink {
            Sink::Inline {
                batch,
                cache,
                gro,
                reorder,
                queue,
            } => {
                if batch.is_empty() {
                    return;
                }
                let now = Instant::now();
                self.device.open_batch(batch, cache, now, self.paths);
                count_paths(self.paths, self.monitor, batch);
                let hold = self.paths.schedule.reorder_limits();
                reorder.write(queue, gro, batch, hold.as_ref(), now);
                if hold.is_some() {
                    reorder.publish(&self.paths.schedule.reorder_stats);
                }
                batch.clear();
            }
            Sink::Workers {
                dispatcher, batch, ..
            } => {
                if batch.as_ref().is_none_or(|b| b.is_empty()) {
                    return;
                }
                if let Some(b) = batch.take() {
                    if dispatcher.dispatch(b) {
                        *batch = dispatcher.take();
                    }
                }
            }
        }
    }
}
