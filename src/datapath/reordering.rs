//! The receive side's reorder stage, for peers that stripe (aggregate and adaptive
//! mode): between committing a batch and writing it to the TUN, its packets go through
//! one [`Reorder`] buffer per session ([`crate::multipath::reorder`]) and come out in
//! counter order, each held at most the monitor's hold time, and a gap given up at once
//! when every sender path has delivered past it (a path does not reorder).
//!
//! No packet is copied: a held packet's buffer is swapped out of the batch for an empty
//! one from a pool, and goes back to the pool once written. With no striping peer the
//! stage is skipped (and anything still held is released at once).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::datapath::schedule::ReorderLimits;
use crate::io::tun::{GROTable, TunQueue};
use crate::multipath::path::Source;
use crate::multipath::reorder::{Reorder, ReorderStats};
use crate::multipath::scheduler;
use crate::protocol::device::receive::{RxBatch, PACKET_OFFSET};
use crate::protocol::session::Session;

/// Sessions whose order is followed at once (a rekey makes a new one every two minutes;
/// the oldest is flushed and forgotten past this).
const SESSIONS: usize = 4;
/// Buffer capacity of pool buffers: room for a coalesced super-packet, as the batch's.
const BUFFER: usize = 2 * PACKET_OFFSET + 65535;

/// The reorder stage's state (the writer's, under its lock).
#[derive(Default)]
pub struct Reordering {
    sessions: Vec<(Arc<Session>, Reorder<Vec<u8>>)>,
    pool: Vec<Vec<u8>>,
    out: Vec<Vec<u8>>,
    done: ReorderStats,
    /// Added to the monitor's hold after packets arrived too late for it (see
    /// [`Reordering::adapt`]).
    extra: Duration,
    late_seen: u64,
    adapted_at: Option<Instant>,
    cap: Duration,
    /// The batch's committed counters, copied out (kept between batches: no allocation).
    entries: Vec<(Arc<Session>, u64, Source, Option<usize>)>,
}

/// How much the hold grows per batch in which a packet came after its gap was given up.
const GROW: Duration = Duration::from_millis(4);
/// How much the extra hold shrinks per second without a late packet.
const SHRINK: Duration = Duration::from_millis(1);

impl Reordering {
    /// Packets held now, in every session.
    pub fn held(&self) -> usize {
        self.sessions.iter().map(|(_, r)| r.len()).sum()
    }

    /// The soonest end of a hold.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sessions
            .iter()
            .filter_map(|(_, r)| r.next_deadline())
            .min()
    }

    /// What every session's buffer has done, those forgotten included.
    pub fn stats(&self) -> ReorderStats {
        let mut s = self.done;
        for (_, r) in &self.sessions {
            let t = r.stats();
            s.held += t.held;
            s.given_up += t.given_up;
            s.late += t.late;
        }
        s
    }

    fn spare(&mut self) -> Vec<u8> {
        self.pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUFFER))
    }

    /// Writes `batch`'s packets (committed, not yet written) to `queue` in counter
    /// order as of `now`, holding those past a gap at most `hold`; also releases what
    /// waited long enough from earlier batches. `limits`: the monitor's hold, the cap
    /// that late packets may stretch it to, and each path's delay (what arrives on it
    /// is written no earlier than that after its arrival, and after what precedes it);
    /// None releases everything held and writes the batch as it is.
    pub fn write(
        &mut self,
        queue: &TunQueue,
        gro: &mut GROTable,
        batch: &mut RxBatch,
        limits: Option<&ReorderLimits>,
        now: Instant,
    ) {
        let Some(limits) = limits else {
            self.flush_all();
            self.emit(queue, gro);
            write(queue, gro, batch.packets());
            return;
        };
        self.cap = limits.cap;
        let hold = self.adapt(limits.hold, now);
        let mut entries = std::mem::take(&mut self.entries);
        entries.extend(
            batch
                .committed()
                .map(|(s, c, src, slot)| (s.clone(), c, src, slot)),
        );
        for (session, counter, src, slot) in entries.drain(..) {
            // TCP acknowledgements without payload (duplicated by aggregate mode's
            // sender) are not delayed: a flow's acknowledgements keep the fastest path's
            // delay, and its round trip is the slow path's one way plus the fast one's.
            // A SYN or SYN-ACK is delayed like data: the handshake's round trip is then
            // that one too, and BBR, which takes it for the flow's least, sizes its
            // window for the round trip data sees, not the fast path's (measured on
            // 10 ms + 40 ms paths: the fast path's 21 ms against data's 52 ms left a
            // transfer window-limited at 1.4x the best single path in some runs).
            // The path's delay is looked up first, so that a packet is parsed only when
            // it would be delayed (not on the slowest path, nor outside aggregate mode).
            let mut delay = limits.delay_of(src.path);
            let control = !delay.is_zero()
                && slot.is_some_and(|i| {
                    batch.packets()[i]
                        .get(PACKET_OFFSET..)
                        .is_some_and(scheduler::is_tcp_ack_only)
                });
            if control {
                delay = Duration::ZERO;
            }
            let item = slot.map(|i| {
                let mut spare = self.spare();
                std::mem::swap(&mut batch.packets()[i], &mut spare);
                spare
            });
            let i = self.session(&session);
            let out = &mut self.out;
            self.sessions[i].1.push_paced(
                Some(lane(src)),
                counter,
                item,
                now,
                hold,
                delay,
                &mut |b| out.push(b),
            );
        }
        self.entries = entries;
        self.poll(now);
        self.emit(queue, gro);
    }

    /// The hold to use: the monitor's, which follows the paths' measured delays, plus
    /// what packets that still came too late showed was missing (the paths' queues
    /// vary faster than their smoothed round trips), at most the monitor's cap: it is
    /// `hold` as given when that is the cap already.
    fn adapt(&mut self, hold: Duration, now: Instant) -> Duration {
        let late = self.stats().late;
        if late > self.late_seen {
            self.late_seen = late;
            self.extra = (self.extra + GROW).min(Duration::from_millis(200));
            self.adapted_at = Some(now);
        } else if self
            .adapted_at
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.extra = self.extra.saturating_sub(SHRINK);
            self.adapted_at = Some(now);
        }
        (hold + self.extra).min(self.cap.max(hold))
    }

    /// Releases what has waited its hold as of `now`, and writes it.
    pub fn release_due(&mut self, queue: &TunQueue, gro: &mut GROTable, now: Instant) {
        self.poll(now);
        self.emit(queue, gro);
    }

    fn poll(&mut self, now: Instant) {
        let out = &mut self.out;
        for (_, r) in &mut self.sessions {
            r.poll(now, &mut |b| out.push(b));
        }
    }

    fn flush_all(&mut self) {
        let out = &mut self.out;
        for (_, r) in &mut self.sessions {
            r.flush(&mut |b| out.push(b));
        }
    }

    fn session(&mut self, s: &Arc<Session>) -> usize {
        if let Some(i) = self.sessions.iter().position(|(x, _)| Arc::ptr_eq(x, s)) {
            return i;
        }
        if self.sessions.len() >= SESSIONS {
            let (_, mut old) = self.sessions.remove(0);
            let out = &mut self.out;
            old.flush(&mut |b| out.push(b));
            let t = old.stats();
            self.done.held += t.held;
            self.done.given_up += t.given_up;
            self.done.late += t.late;
        }
        self.sessions.push((s.clone(), Reorder::default()));
        self.sessions.len() - 1
    }

    /// Publishes [`Reordering::stats`] into `to` (held, given up, late).
    pub fn publish(&self, to: &[AtomicU64; 3]) {
        let s = self.stats();
        for (a, v) in to.iter().zip([s.held, s.given_up, s.late]) {
            a.store(v, Ordering::Relaxed);
        }
    }

    fn emit(&mut self, queue: &TunQueue, gro: &mut GROTable) {
        if self.out.is_empty() {
            return;
        }
        write(queue, gro, &mut self.out);
        for mut b in self.out.drain(..) {
            b.clear();
            self.pool.push(b);
        }
    }
}

/// A sender path, as the receiver tells them apart: the path it came on and the
/// sender's address (several of the sender's paths may arrive on one of ours).
fn lane(src: Source) -> u64 {
    let mut h = DefaultHasher::new();
    src.path.hash(&mut h);
    src.addr.hash(&mut h);
    h.finish()
}

fn write(queue: &TunQueue, gro: &mut GROTable, packets: &mut [Vec<u8>]) {
    if packets.is_empty() {
        return;
    }
    if let Err(e) = queue.send_batch(gro, packets, PACKET_OFFSET) {
        tracing::debug!("TUN write failed: {e}");
    }
}
