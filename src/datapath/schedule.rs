//! What the senders read on every batch to know where it goes: the mode and the current
//! [`Plan`], published by the path monitor ([`crate::datapath::monitor`]) every tick.
//!
//! The plan is a short list, one entry per path: whether the path takes duplicated
//! traffic (everything in duplicate and failover mode, control and interactive packets
//! in aggregate and adaptive mode), whether it is a striping candidate, and its weight.
//! Weights move in place (atomics); a new plan is published only when membership
//! changes, so that the striping counters (bytes given to each path) keep their history
//! between ticks. A path the plan does not know (just added) is used if its link is up,
//! and an empty plan (before the first tick) means duplicate mode on link state, as
//! before health existed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};

use crate::multipath::path::PathId;
use crate::multipath::scheduler::{self, Mode, PathSet, Traffic};

/// One path's place in the plan.
#[derive(Debug)]
pub struct Entry {
    /// The path.
    pub id: PathId,
    /// Takes duplicated traffic.
    pub dup: bool,
    /// May be striped onto.
    pub stripe: bool,
    /// Its share of striped traffic (an `f64`'s bits).
    weight: AtomicU64,
    /// Bytes striped onto it since the plan was published or the weights last changed.
    striped: AtomicU64,
}

impl Entry {
    /// An entry.
    pub fn new(id: PathId, dup: bool, stripe: bool, weight: f64) -> Entry {
        Entry {
            id,
            dup,
            stripe,
            weight: AtomicU64::new(weight.to_bits()),
            striped: AtomicU64::new(0),
        }
    }

    /// Its weight.
    pub fn weight(&self) -> f64 {
        f64::from_bits(self.weight.load(Ordering::Relaxed))
    }
}

/// Where data goes, as of the last monitor tick.
#[derive(Debug, Default)]
pub struct Plan {
    /// The paths (at most [`scheduler::MAX_PATHS`]).
    pub entries: Vec<Entry>,
}

/// Which paths one batch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The duplicated set (see [`Plan::takes_dup`]).
    Dup,
    /// This one path.
    One(PathId),
}

impl Plan {
    /// True if the plan has the same membership and flags as `other`.
    pub fn same_shape(&self, other: &[(PathId, bool, bool)]) -> bool {
        self.entries.len() == other.len()
            && self
                .entries
                .iter()
                .zip(other)
                .all(|(e, &(id, dup, stripe))| e.id == id && e.dup == dup && e.stripe == stripe)
    }

    /// Sets the entries' weights, in order; if any changed, striping counts afresh from
    /// here. Counting on from the old totals would hand a path whose share grew all the
    /// traffic until it caught up: at 40+8 Mbit/s, a share moved by 1% after a few
    /// seconds meant a quarter of a megabyte in a row on the 8 Mbit/s path, overflowing
    /// its queue (measured: a 20-40 ms spike in its round trip, and tail drops, after
    /// every step up).
    pub fn set_weights(&self, weights: impl IntoIterator<Item = f64>) {
        let mut changed = false;
        for (e, w) in self.entries.iter().zip(weights) {
            if e.weight.swap(w.to_bits(), Ordering::Relaxed) != w.to_bits() {
                changed = true;
            }
        }
        if changed {
            for e in &self.entries {
                e.striped.store(0, Ordering::Relaxed);
            }
        }
    }

    /// The entry of path `id`.
    pub fn entry(&self, id: PathId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// True if path `id` takes duplicated traffic: as the plan says, or, for a path the
    /// plan does not know, if `link_up`.
    pub fn takes_dup(&self, id: PathId, link_up: bool) -> bool {
        self.entry(id).map_or(link_up, |e| e.dup)
    }

    /// Where `bytes` of `traffic` go in `mode`: bulk in a striping mode goes to the one
    /// striping candidate furthest behind its share (and is counted to it), or, while
    /// queues build on this machine (`queued(id)`: the bytes waiting here for path `id`),
    /// to the candidate whose queue is the shortest per share
    /// ([`scheduler::stripe_by_queue`]; not counted, so that the shares take up where
    /// they were once the queues are gone); everything else to the duplicated set.
    pub fn pick(
        &self,
        mode: Mode,
        traffic: Traffic,
        bytes: usize,
        queued: impl Fn(PathId) -> Option<u64>,
    ) -> Pick {
        if !(mode.stripes() && traffic == Traffic::Bulk) {
            return Pick::Dup;
        }
        let mut set = PathSet::default();
        for (i, e) in self.entries.iter().enumerate() {
            if e.stripe {
                set.insert(i);
            }
        }
        if let Some(i) = scheduler::stripe_by_queue(
            set,
            |i| queued(self.entries[i].id),
            |i| self.entries[i].weight(),
        ) {
            return Pick::One(self.entries[i].id);
        }
        let chosen = scheduler::stripe(
            set,
            bytes as u64,
            |i| self.entries[i].striped.load(Ordering::Relaxed),
            |i| self.entries[i].weight(),
        );
        match chosen {
            Some(i) => {
                let e = &self.entries[i];
                e.striped.fetch_add(bytes as u64, Ordering::Relaxed);
                Pick::One(e.id)
            }
            None => Pick::Dup,
        }
    }
}

/// What the receive side's reorder stage works with ([`Schedule::reorder_limits`]).
#[derive(Debug, Clone)]
pub struct ReorderLimits {
    /// How long a packet past a gap waits.
    pub hold: Duration,
    /// What the stage may stretch the hold to after late packets.
    pub cap: Duration,
    /// Per path, how long what arrives on it is delayed (none for a path not listed).
    pub delays: Arc<Vec<(PathId, Duration)>>,
}

impl ReorderLimits {
    /// The delay of path `id`.
    pub fn delay_of(&self, id: PathId) -> Duration {
        self.delays
            .iter()
            .find(|(p, _)| *p == id)
            .map_or(Duration::ZERO, |(_, d)| *d)
    }
}

/// The mode and plan, shared by the senders (read) and the monitor (written).
#[derive(Debug)]
pub struct Schedule {
    mode: AtomicU8,
    plan: ArcSwap<Plan>,
    small_udp: AtomicUsize,
    hello: AtomicBool,
    /// Reorder hold for striping peers, microseconds (0: no reordering).
    reorder_us: AtomicU64,
    reorder_cap_us: AtomicU64,
    /// Per path, how long the receive side delays what arrives on it (aggregate mode:
    /// the slowest path's one-way delay less this path's).
    path_delays: ArcSwap<Vec<(PathId, Duration)>>,
    /// What the receive side's reorder stage did: packets held, gaps given up, packets
    /// late (for `mpwg show`).
    pub reorder_stats: [AtomicU64; 3],
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            mode: AtomicU8::new(0),
            plan: ArcSwap::from_pointee(Plan::default()),
            small_udp: AtomicUsize::new(scheduler::DEFAULT_SMALL_UDP),
            hello: AtomicBool::new(false),
            reorder_us: AtomicU64::new(0),
            reorder_cap_us: AtomicU64::new(50_000),
            path_delays: ArcSwap::from_pointee(Vec::new()),
            reorder_stats: Default::default(),
        }
    }
}

impl Schedule {
    /// The mode.
    pub fn mode(&self) -> Mode {
        Mode::ALL
            .get(usize::from(self.mode.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or_default()
    }

    /// Changes the mode (`mpwg up --mode`, `mpwg mode`).
    pub fn set_mode(&self, mode: Mode) {
        let i = Mode::ALL.iter().position(|m| *m == mode).unwrap_or(0);
        self.mode.store(i as u8, Ordering::Relaxed);
    }

    /// Adaptive mode's size under which UDP is interactive.
    pub fn set_small_udp(&self, bytes: usize) {
        self.small_udp.store(bytes, Ordering::Relaxed);
    }

    /// How an outgoing IP packet is sent: classified in adaptive mode; in aggregate
    /// mode, TCP without payload (acknowledgements) is interactive, so that it takes
    /// the fastest path; bulk otherwise.
    pub fn traffic(&self, ip: &[u8]) -> Traffic {
        match self.mode() {
            Mode::Adaptive => scheduler::classify(ip, self.small_udp.load(Ordering::Relaxed)),
            Mode::Aggregate if scheduler::is_tcp_control(ip) => Traffic::Interactive,
            _ => Traffic::Bulk,
        }
    }

    /// The current plan, read without a lock (the senders read it on every batch).
    pub fn plan(&self) -> Guard<Arc<Plan>> {
        self.plan.load()
    }

    /// Publishes a plan.
    pub fn publish(&self, plan: Plan) {
        self.plan.store(Arc::new(plan));
    }

    /// True if a hello should ride on outgoing packets (some peer has not shown it is
    /// mpwg).
    pub fn wants_hello(&self) -> bool {
        self.hello.load(Ordering::Relaxed)
    }

    /// Sets [`Schedule::wants_hello`].
    pub fn set_hello(&self, on: bool) {
        self.hello.store(on, Ordering::Relaxed);
    }

    /// How long the receive side holds a striped packet past a gap, or None when no peer
    /// stripes.
    pub fn reorder_hold(&self) -> Option<Duration> {
        let us = self.reorder_us.load(Ordering::Relaxed);
        (us > 0).then(|| Duration::from_micros(us))
    }

    /// The hold, the cap the receive side's reorder stage may stretch it to, and the
    /// paths' delays ([`Schedule::set_path_delays`]), or None when no peer stripes.
    pub fn reorder_limits(&self) -> Option<ReorderLimits> {
        let cap = Duration::from_micros(self.reorder_cap_us.load(Ordering::Relaxed));
        self.reorder_hold().map(|hold| ReorderLimits {
            hold,
            cap: cap.max(hold),
            delays: self.path_delays.load_full(),
        })
    }

    /// Sets how long the receive side delays what arrives on each path, so that every
    /// striped packet takes about the slowest path's delay (empty: none).
    pub fn set_path_delays(&self, delays: Vec<(PathId, Duration)>) {
        if **self.path_delays.load() != delays {
            self.path_delays.store(Arc::new(delays));
        }
    }

    /// Sets the cap of [`Schedule::reorder_limits`] (`--reorder-cap`).
    pub fn set_reorder_cap(&self, cap: Duration) {
        let us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
        self.reorder_cap_us.store(us, Ordering::Relaxed);
    }

    /// Sets [`Schedule::reorder_hold`].
    pub fn set_reorder_hold(&self, hold: Option<Duration>) {
        let us = hold.map_or(0, |h| {
            u64::try_from(h.as_micros()).unwrap_or(u64::MAX).max(1)
        });
        self.reorder_us.store(us, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            entries: vec![
                Entry::new(3, true, true, 30.0),
                Entry::new(7, false, true, 10.0),
                Entry::new(9, true, false, 100.0),
            ],
        }
    }

    /// How many of `n` striped picks of 1000 bytes went to paths 3 and 7.
    fn striped(p: &Plan, n: usize) -> [usize; 2] {
        let mut got = [0usize; 2];
        for _ in 0..n {
            match p.pick(Mode::Aggregate, Traffic::Bulk, 1000, |_| None) {
                Pick::One(3) => got[0] += 1,
                Pick::One(7) => got[1] += 1,
                other => panic!("{other:?}"),
            }
        }
        got
    }

    #[test]
    fn bulk_is_striped_by_weight_in_striping_modes_only() {
        let p = plan();
        assert_eq!(striped(&p, 400), [300, 100]);
        assert_eq!(
            p.pick(Mode::Adaptive, Traffic::Interactive, 1, |_| None),
            Pick::Dup
        );
        assert_eq!(
            p.pick(Mode::Duplicate, Traffic::Bulk, 1, |_| None),
            Pick::Dup
        );
        assert_eq!(
            p.pick(Mode::Failover, Traffic::Bulk, 1, |_| None),
            Pick::Dup
        );
        // New weights: the count starts again, so the path whose share grew is not
        // given everything until it has caught up.
        p.set_weights([10.0, 10.0, 100.0]);
        assert_eq!(striped(&p, 10), [5, 5]);
        assert!(p.takes_dup(3, false) && !p.takes_dup(7, true));
        assert!(p.takes_dup(42, true) && !p.takes_dup(42, false));
        assert_eq!(
            Plan::default().pick(Mode::Aggregate, Traffic::Bulk, 1, |_| None),
            Pick::Dup
        );
    }

    #[test]
    fn the_schedule_holds_mode_and_classifies_only_in_adaptive() {
        let s = Schedule::default();
        assert_eq!(s.mode(), Mode::Duplicate);
        let icmp = [
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0,
        ];
        assert_eq!(s.traffic(&icmp), Traffic::Bulk);
        for m in Mode::ALL {
            s.set_mode(m);
            assert_eq!(s.mode(), m);
        }
        s.set_mode(Mode::Adaptive);
        assert_eq!(s.traffic(&icmp), Traffic::Interactive);
        // Aggregate mode: only TCP without payload is interactive.
        let mut ack = icmp.to_vec();
        ack[9] = 6;
        ack.truncate(20);
        ack.extend_from_slice(&[0, 80, 0, 81, 0, 0, 0, 1, 0, 0, 0, 1, 5 << 4, 0x10, 0, 0]);
        ack.extend_from_slice(&[0, 0, 0, 0]);
        ack[3] = 40;
        let mut data = ack.clone();
        data.extend_from_slice(&[7; 100]);
        data[3] = 140;
        s.set_mode(Mode::Aggregate);
        assert_eq!(s.traffic(&ack), Traffic::Interactive);
        assert_eq!(s.traffic(&data), Traffic::Bulk);
        assert_eq!(s.traffic(&icmp), Traffic::Bulk);
        s.set_mode(Mode::Duplicate);
        assert_eq!(s.traffic(&ack), Traffic::Bulk);
        s.set_mode(Mode::Adaptive);
        assert_eq!(s.reorder_hold(), None);
        s.set_reorder_hold(Some(Duration::from_millis(7)));
        assert_eq!(s.reorder_hold(), Some(Duration::from_millis(7)));
        assert!(plan().same_shape(&[(3, true, true), (7, false, true), (9, true, false)]));
        assert!(!plan().same_shape(&[(3, true, true), (7, true, true), (9, true, false)]));
    }
}
