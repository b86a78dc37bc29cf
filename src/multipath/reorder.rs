//! The reorder buffer, as pure logic: packets striped over paths of different delay are
//! released in counter order (WireGuard's per-session send counter), each held at most
//! a bounded time.
//!
//! Every counter the session commits comes in, including those that carry nothing for
//! the TUN (keepalives, probes): they advance the order without releasing anything. A
//! packet whose predecessors are all released goes out at once; one that arrives past a
//! gap waits until the gap fills or its hold time ends, and then everything up to it
//! goes out in order, the gap given up for lost. So a lost packet blocks the flow at
//! most one hold time, and the hold ([`hold_for`]) follows the measured delay
//! difference between the paths, capped ([`DEFAULT_CAP`] by default). A packet that
//! arrives after its place was given up is released at once (late): the receiver's TCP
//! sorts it out. Duplicate mode needs none of this (first copy wins) and does not use it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The default cap on a packet's hold.
pub const DEFAULT_CAP: Duration = Duration::from_millis(50);
/// The most packets held at once by default; past it, the oldest gap is given up.
pub const DEFAULT_MAX_HELD: usize = 2048;
/// Lanes followed at most.
const MAX_LANES: usize = 16;
/// A lane not heard from for this long does not count for giving gaps up early.
pub const LANE_IDLE: Duration = Duration::from_millis(500);

/// How long a packet that arrived past a gap waits: the spread of the paths' one-way
/// delays (`spread`: the difference between the slowest and the fastest path in use,
/// None if not known) plus four times their jitter, or twice the time gaps were seen to
/// take to fill, whichever is longer, plus 2 ms; at most `cap`. Unknown delays hold for
/// the cap.
pub fn hold_for(
    spread: Option<Duration>,
    jitter: Duration,
    observed_fill: Option<Duration>,
    cap: Duration,
) -> Duration {
    let Some(spread) = spread else {
        return cap;
    };
    let by_delay = spread + jitter * 4;
    let by_fill = observed_fill.map_or(Duration::ZERO, |f| f * 2);
    (by_delay.max(by_fill) + Duration::from_millis(2)).min(cap)
}

/// Per path, the delay that brings what arrives on it level with the slowest path:
/// half the difference between the slowest round trip of `rtts` (path, smoothed round
/// trip; the paths in use) and the path's own, at most `cap`. Used in aggregate mode
/// with [`Reorder::push_paced`].
pub fn equalizing_delays<P: Copy>(rtts: &[(P, Duration)], cap: Duration) -> Vec<(P, Duration)> {
    let Some(slowest) = rtts.iter().map(|r| r.1).max() else {
        return Vec::new();
    };
    rtts.iter()
        .map(|&(p, rtt)| (p, ((slowest - rtt) / 2).min(cap)))
        .collect()
}

/// What a reorder buffer has done, for `mpwg show`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// Packets that waited for a gap to fill.
    pub held: u64,
    /// Gaps given up for lost (hold time ended, or too many held).
    pub given_up: u64,
    /// Packets that arrived after their place was given up.
    pub late: u64,
}

/// A session's reorder buffer, holding items of type `T` (packet buffers).
#[derive(Debug)]
pub struct Reorder<T> {
    next: Option<u64>,
    /// Held past a gap: (arrival, release time if paced, item).
    held: BTreeMap<u64, (Instant, Option<Instant>, Option<T>)>,
    /// (deadline, counter), in the order they were held.
    deadlines: VecDeque<(Instant, u64)>,
    max_held: usize,
    fill: Option<Duration>,
    stats: ReorderStats,
    /// Per lane (one sender path, as the caller names it): the highest counter it
    /// delivered, and when.
    lanes: Vec<(u64, u64, Instant)>,
    /// Released in order, waiting for their time ([`Reorder::push_paced`]): each with
    /// the time it may go out, never earlier than the one before it.
    paced: VecDeque<(Instant, T)>,
    /// The latest release time given to a packet: the next one goes no earlier.
    last_ready: Option<Instant>,
    /// The release time of the packet being pushed (its arrival plus its delay), if it
    /// has a delay.
    ready: Option<Instant>,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Reorder::new(DEFAULT_MAX_HELD)
    }
}

impl<T> Reorder<T> {
    /// An empty buffer holding at most `max_held` packets.
    pub fn new(max_held: usize) -> Reorder<T> {
        Reorder {
            next: None,
            held: BTreeMap::new(),
            deadlines: VecDeque::new(),
            max_held: max_held.max(1),
            fill: None,
            stats: ReorderStats::default(),
            lanes: Vec::new(),
            paced: VecDeque::new(),
            last_ready: None,
            ready: None,
        }
    }

    /// Packets held now (waiting for a gap, or for their time).
    pub fn len(&self) -> usize {
        self.held.len() + self.paced.len()
    }

    /// True if nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.paced.is_empty()
    }

    /// What the buffer has done.
    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// How long gaps took to fill, smoothed (1/8).
    pub fn fill_time(&self) -> Option<Duration> {
        self.fill
    }

    /// When the next held packet's hold ends, or the next paced one may go.
    pub fn next_deadline(&self) -> Option<Instant> {
        let hold = self.deadlines.front().map(|d| d.0);
        let paced = self.paced.front().map(|p| p.0);
        hold.into_iter().chain(paced).min()
    }

    /// Takes the committed `counter` (with `item` for the TUN, or None for a keepalive
    /// or probe) at `now`; what may go out now is passed to `out`, in order. A packet past
    /// a gap waits at most `hold`.
    pub fn push(
        &mut self,
        counter: u64,
        item: Option<T>,
        now: Instant,
        hold: Duration,
        out: &mut impl FnMut(T),
    ) {
        self.push_on(None, counter, item, now, hold, out);
    }

    /// [`Reorder::push`] for a packet that came by `lane` (a sender path: the receiving
    /// path and the sender's address). A path delivers in the order it was given, so a
    /// gap that every lane heard from recently has passed can no longer fill: it is
    /// given up at once instead of after its hold. Lanes silent for [`LANE_IDLE`] do not
    /// count (a cut path must not hold the others back, nor hurry them).
    pub fn push_on(
        &mut self,
        lane: Option<u64>,
        counter: u64,
        item: Option<T>,
        now: Instant,
        hold: Duration,
        out: &mut impl FnMut(T),
    ) {
        self.push_paced(lane, counter, item, now, hold, Duration::ZERO, out);
    }

    /// [`Reorder::push_on`] for a packet that goes out no earlier than `delay` after
    /// its arrival (`now`), and no earlier than any packet before it in counter order:
    /// with `delay` the difference between the slowest path's one-way delay and its
    /// own path's, every packet then takes about the slowest path's delay, so that the
    /// receiver's TCP sees one round trip rather than the fast path's (which, taken
    /// for the flow's, keeps a delay-based sender such as BBR at a fraction of the sum
    /// of the paths). Call [`Reorder::poll`] to release packets whose time has come.
    #[allow(clippy::too_many_arguments)]
    pub fn push_paced(
        &mut self,
        lane: Option<u64>,
        counter: u64,
        item: Option<T>,
        now: Instant,
        hold: Duration,
        delay: Duration,
        out: &mut impl FnMut(T),
    ) {
        self.ready = (!delay.is_zero()).then(|| now + delay);
        if let Some(l) = lane {
            if let Some(x) = self.lanes.iter_mut().find(|x| x.0 == l) {
                x.1 = x.1.max(counter);
                x.2 = now;
            } else if self.lanes.len() < MAX_LANES {
                self.lanes.push((l, counter, now));
            }
        }
        self.insert(counter, item, now, hold, out);
        if lane.is_some() && !self.held.is_empty() {
            let passed = self
                .lanes
                .iter()
                .filter(|x| now.saturating_duration_since(x.2) < LANE_IDLE)
                .map(|x| x.1)
                .min();
            if let (Some(p), Some(n)) = (passed, self.next) {
                if p > n && self.lanes.len() >= 2 {
                    self.release_through(
                        p.min(self.held.last_key_value().map_or(p, |(k, _)| *k)),
                        now,
                        out,
                    );
                }
            }
        }
    }

    fn insert(
        &mut self,
        counter: u64,
        item: Option<T>,
        now: Instant,
        hold: Duration,
        out: &mut impl FnMut(T),
    ) {
        let next = *self.next.get_or_insert(counter);
        let ready = self.ready;
        if counter < next {
            if let Some(t) = item {
                self.stats.late += 1;
                out(t);
            }
            return;
        }
        if counter == next {
            if let Some((&first, _)) = self.held.first_key_value() {
                // The gap in front of the held packets filled.
                let oldest = self.held[&first].0;
                let waited = now.saturating_duration_since(oldest);
                self.fill = Some(self.fill.map_or(waited, |f| (f * 7 + waited) / 8));
            }
            self.release(ready, item, now, out);
            self.next = Some(counter + 1);
            self.drain(now, out);
            return;
        }
        if hold.is_zero() {
            // Nothing to wait for: give the gap up now.
            self.release_through(counter - 1, now, out);
            return self.insert(counter, item, now, hold, out);
        }
        if self.held.contains_key(&counter) {
            return;
        }
        if item.is_some() {
            self.stats.held += 1;
        }
        self.held.insert(counter, (now, ready, item));
        self.deadlines.push_back((now + hold, counter));
        if self.held.len() > self.max_held {
            if let Some((&first, _)) = self.held.first_key_value() {
                self.release_through(first, now, out);
            }
        }
    }

    /// Releases `item` (in counter order) at `ready` or after the packet before it,
    /// whichever is later: now if that has come and nothing waits, else into `paced`.
    fn release(
        &mut self,
        ready: Option<Instant>,
        item: Option<T>,
        now: Instant,
        out: &mut impl FnMut(T),
    ) {
        let Some(t) = item else { return };
        let at = self.last_ready.max(ready);
        self.last_ready = at;
        match at {
            Some(at) if at > now || !self.paced.is_empty() => self.paced.push_back((at, t)),
            _ => out(t),
        }
    }

    /// Passes to `out` the paced packets whose time has come as of `now`.
    fn release_paced(&mut self, now: Instant, out: &mut impl FnMut(T)) {
        while self.paced.front().is_some_and(|p| p.0 <= now) {
            if let Some((_, t)) = self.paced.pop_front() {
                out(t);
            }
        }
    }

    /// Releases what has waited its hold time as of `now` (and everything in front of
    /// it, gaps given up), and the paced packets whose time has come.
    pub fn poll(&mut self, now: Instant, out: &mut impl FnMut(T)) {
        let mut through = None;
        while let Some(&(deadline, counter)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            through = through.max(Some(counter));
        }
        if let Some(c) = through {
            if self.next.is_some_and(|n| c >= n) {
                self.release_through(c, now, out);
            }
        }
        self.release_paced(now, out);
    }

    /// Releases everything held, in order (the session ended).
    pub fn flush(&mut self, out: &mut impl FnMut(T)) {
        if let Some((&last, &(at, _, _))) = self.held.last_key_value() {
            self.release_through(last, at, out);
        }
        self.deadlines.clear();
        while let Some((_, t)) = self.paced.pop_front() {
            out(t);
        }
    }

    /// Gives up every gap up to `counter` and releases what is held up to it, then
    /// whatever follows in sequence.
    fn release_through(&mut self, counter: u64, now: Instant, out: &mut impl FnMut(T)) {
        let next = self.next.unwrap_or(0);
        if counter < next {
            return;
        }
        let expect = self.release_front(Some(counter), now, out);
        if expect <= counter {
            self.stats.given_up += 1;
        }
        self.next = Some(counter + 1);
        self.drain(now, out);
        self.deadlines.retain(|&(_, c)| c > counter);
    }

    /// Releases the held packets that follow `next` in sequence.
    fn drain(&mut self, now: Instant, out: &mut impl FnMut(T)) {
        if self.next.is_none() {
            return;
        }
        let next = self.release_front(None, now, out);
        self.next = Some(next);
        if self.deadlines.len() > self.held.len() * 2 + 16 {
            self.deadlines.retain(|&(_, c)| c >= next);
        }
    }

    /// Releases held packets from the front, in order: those up to `through`, gaps
    /// before them given up (counted); or with None, only those that follow `next`
    /// with no gap. Returns the counter after the last one released (`next` if none).
    fn release_front(
        &mut self,
        through: Option<u64>,
        now: Instant,
        out: &mut impl FnMut(T),
    ) -> u64 {
        let mut expect = self.next.unwrap_or(0);
        while let Some(entry) = self.held.first_entry() {
            let c = *entry.key();
            let take = match through {
                Some(t) => c <= t,
                None => c == expect,
            };
            if !take {
                break;
            }
            if c != expect {
                self.stats.given_up += 1;
            }
            let (_, ready, item) = entry.remove();
            self.release(ready, item, now, out);
            expect = c + 1;
        }
        expect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    struct Rig {
        r: Reorder<u64>,
        out: Vec<u64>,
        t0: Instant,
    }

    impl Rig {
        fn new() -> Rig {
            Rig {
                r: Reorder::default(),
                out: Vec::new(),
                t0: Instant::now(),
            }
        }
        fn push(&mut self, c: u64, at_ms: u64, hold_ms: u64) {
            let out = &mut self.out;
            self.r
                .push(c, Some(c), self.t0 + ms(at_ms), ms(hold_ms), &mut |x| {
                    out.push(x)
                });
        }
        fn skip(&mut self, c: u64, at_ms: u64) {
            let out = &mut self.out;
            self.r
                .push(c, None, self.t0 + ms(at_ms), ms(50), &mut |x| out.push(x));
        }
        fn poll(&mut self, at_ms: u64) {
            let out = &mut self.out;
            self.r.poll(self.t0 + ms(at_ms), &mut |x| out.push(x));
        }
        fn take(&mut self) -> Vec<u64> {
            std::mem::take(&mut self.out)
        }
    }

    #[test]
    fn in_order_passes_straight_through() {
        let mut g = Rig::new();
        for c in 10..20 {
            g.push(c, 0, 50);
        }
        assert_eq!(g.take(), (10..20).collect::<Vec<_>>());
        assert!(g.r.is_empty());
    }

    #[test]
    fn two_paths_of_different_delay_come_out_in_counter_order() {
        // Even counters on a 5 ms path, odd ones on a 25 ms path, one every ms.
        let mut g = Rig::new();
        let mut arrivals: Vec<(u64, u64)> = (0..200u64)
            .map(|c| (c + if c % 2 == 0 { 5 } else { 25 }, c))
            .collect();
        arrivals.sort();
        for &(t, c) in &arrivals {
            g.poll(t);
            g.push(c, t, 30);
        }
        g.poll(1000);
        assert_eq!(g.take(), (0..200).collect::<Vec<_>>());
        assert_eq!(g.r.stats().given_up, 0);
        let fill = g.r.fill_time().unwrap();
        assert!(fill >= ms(15) && fill <= ms(21), "{fill:?}");
    }

    #[test]
    fn a_lost_packet_blocks_at_most_the_hold() {
        let mut g = Rig::new();
        g.push(0, 0, 50);
        // 1 is lost; 2.. arrive one per ms.
        for c in 2..100u64 {
            g.poll(c);
            g.push(c, c, 50);
            if c < 52 {
                assert_eq!(
                    g.take(),
                    vec![0].into_iter().filter(|_| c == 2).collect::<Vec<_>>()
                );
            }
        }
        // At 52 ms the hold of counter 2 (arrived at 2 ms) ended: everything held went.
        let mut g = Rig::new();
        g.push(0, 0, 50);
        for c in 2..60u64 {
            g.push(c, c, 50);
        }
        g.take();
        g.poll(51);
        assert!(g.take().is_empty());
        g.poll(52);
        assert_eq!(g.take(), (2..60).collect::<Vec<_>>());
        assert_eq!(g.r.stats().given_up, 1);
        // The lost one turning up late goes straight out.
        g.push(1, 70, 50);
        assert_eq!(g.take(), vec![1]);
        assert_eq!(g.r.stats().late, 1);
    }

    #[test]
    fn a_gap_every_lane_has_passed_is_given_up_at_once() {
        let t = Instant::now();
        let mut r: Reorder<u64> = Reorder::default();
        let mut out = Vec::new();
        let hold = ms(50);
        let push = |r: &mut Reorder<u64>, out: &mut Vec<u64>, lane, c| {
            r.push_on(Some(lane), c, Some(c), t, hold, &mut |x| out.push(x))
        };
        push(&mut r, &mut out, 1, 0);
        push(&mut r, &mut out, 2, 1);
        // 2 was sent on lane 1 and lost; 3 comes on lane 2, 4 on lane 1.
        push(&mut r, &mut out, 2, 3);
        push(&mut r, &mut out, 1, 4);
        assert_eq!(out, vec![0, 1, 3, 4]);
        assert_eq!(r.stats().given_up, 1);
        // A gap only one lane has passed waits: 6 may still come on lane 1.
        push(&mut r, &mut out, 2, 7);
        assert_eq!(out, vec![0, 1, 3, 4]);
        // (5 came on lane 1: then 6 too, behind it.)
        push(&mut r, &mut out, 1, 5);
        push(&mut r, &mut out, 1, 6);
        assert_eq!(out, vec![0, 1, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn keepalives_and_probes_advance_the_order() {
        let mut g = Rig::new();
        g.push(0, 0, 50);
        g.push(2, 1, 50);
        assert_eq!(g.take(), vec![0]);
        g.skip(1, 2);
        assert_eq!(g.take(), vec![2]);
        assert!(g.r.is_empty());
    }

    #[test]
    fn zero_hold_never_waits() {
        let mut g = Rig::new();
        g.push(0, 0, 0);
        g.push(3, 0, 0);
        g.push(2, 0, 0);
        assert_eq!(g.take(), vec![0, 3, 2]);
    }

    #[test]
    fn memory_is_bounded() {
        let mut r: Reorder<u64> = Reorder::new(8);
        let mut out = Vec::new();
        let t = Instant::now();
        for c in 1..=20 {
            r.push(c, Some(c), t, ms(50), &mut |x| out.push(x));
            assert!(r.len() <= 8);
        }
        r.push(0, Some(0), t, ms(50), &mut |x| out.push(x));
        let mut expect: Vec<u64> = (1..=20).collect();
        expect.insert(12, 0);
        // The first counter seen (1) started the order: 0 is late, the rest in order.
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(sorted, (0..=20).collect::<Vec<_>>());
        let without_late: Vec<u64> = out.iter().copied().filter(|&c| c != 0).collect();
        assert_eq!(without_late, (1..=20).collect::<Vec<_>>());
        r.flush(&mut |x| out.push(x));
        assert!(r.is_empty());
    }

    /// Chunks of 4 packets alternate between a 10 ms path and a 40 ms one, one packet
    /// per ms; the 10 ms path's packets are delayed by the difference (30 ms): every
    /// packet goes out in order, 40 ms after it was sent (to the poll's millisecond),
    /// the fast path's first ones too, though nothing is in front of them.
    #[test]
    fn paced_packets_take_the_slowest_paths_delay() {
        let t0 = Instant::now();
        let mut r: Reorder<u64> = Reorder::default();
        let delays = equalizing_delays(&[(0u8, ms(20)), (1u8, ms(80))], DEFAULT_CAP);
        assert_eq!(delays, vec![(0, ms(30)), (1, ms(0))]);
        let owd = |c: u64| if (c / 4).is_multiple_of(2) { 10 } else { 40 };
        let mut arrivals: Vec<(u64, u64)> = (0..400u64).map(|c| (c + owd(c), c)).collect();
        arrivals.sort();
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut i = 0;
        for t in 0..500u64 {
            let now = t0 + ms(t);
            r.poll(now, &mut |c| out.push((t, c)));
            while i < arrivals.len() && arrivals[i].0 == t {
                let c = arrivals[i].1;
                let lane = u8::from(owd(c) == 40);
                let delay = delays[usize::from(lane)].1;
                r.push_paced(
                    Some(u64::from(lane)),
                    c,
                    Some(c),
                    now,
                    ms(50),
                    delay,
                    &mut |c| out.push((t, c)),
                );
                i += 1;
            }
        }
        let order: Vec<u64> = out.iter().map(|o| o.1).collect();
        assert_eq!(order, (0..400).collect::<Vec<_>>());
        for &(t, c) in &out {
            assert!(
                (40..=41).contains(&(t - c)),
                "counter {c} sent at {c} ms out at {t} ms"
            );
        }
        assert!(r.is_empty());
        assert_eq!(r.stats().given_up, 0);
        // Paced packets still go when the session ends.
        r.push_paced(
            None,
            400,
            Some(400),
            t0 + ms(600),
            ms(50),
            ms(30),
            &mut |_| {},
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r.next_deadline(), Some(t0 + ms(630)));
        let mut rest = Vec::new();
        r.flush(&mut |c| rest.push(c));
        assert_eq!(rest, vec![400]);
        assert!(equalizing_delays::<u8>(&[], DEFAULT_CAP).is_empty());
        assert_eq!(
            equalizing_delays(&[(0u8, ms(10)), (1, ms(400))], DEFAULT_CAP)[0].1,
            DEFAULT_CAP
        );
    }

    #[test]
    fn the_hold_follows_the_delay_spread_under_the_cap() {
        let cap = DEFAULT_CAP;
        assert_eq!(hold_for(None, Duration::ZERO, None, cap), cap);
        assert_eq!(hold_for(Some(ms(15)), ms(1), None, cap), ms(21));
        assert_eq!(hold_for(Some(ms(15)), ms(1), Some(ms(20)), cap), ms(42));
        assert_eq!(hold_for(Some(ms(200)), Duration::ZERO, None, cap), cap);
        assert_eq!(
            hold_for(Some(Duration::ZERO), Duration::ZERO, None, cap),
            ms(2)
        );
    }
}
