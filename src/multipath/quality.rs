//! A path's quality, as pure bookkeeping: round-trip time (smoothed, minimum, and p50/p99
//! from an HdrHistogram), jitter, loss (from probes, or passively from duplicate copies
//! that never arrived), and goodput.
//!
//! Nothing here reads a clock: samples and `now` come in as arguments.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The largest round trip the histogram records (longer samples are clamped to it).
const MAX_RTT_US: u64 = 60_000_000;
/// Window over which goodput is measured before it is smoothed in.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// Probes (by sequence number) whose fate a stream's loss figure covers: 7 s at the
/// active probe rate. A window this wide gives a 10%-lossy path under 2% (the line a
/// degraded path must cross to be `up` again) about once in 64 intervals per
/// direction; taking the larger direction makes it rarer still.
const FATE_WINDOW: u32 = 64;
/// Probes whose fate must be known before a direction's loss figure counts for health
/// ([`Quality::settled_loss_pct`]): one loss in so few is 3%, under the 5% that makes a
/// path degraded (a clean path under load loses a probe now and then in its own queue).
const MIN_DECIDED: u32 = 32;
/// Bits of a probe's echo bitmap.
const ECHO_BITS: u32 = 32;

/// One path's quality.
#[derive(Debug, Clone)]
pub struct Quality {
    srtt: Option<Duration>,
    recent: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<Duration>,
    last_rtt: Option<Duration>,
    jitter: Duration,
    hist: Histogram<u64>,
    probe_loss: Option<ProbeLoss>,
    probe_loss_in: Option<ProbeLoss>,
    passive_loss: Option<f64>,
    goodput: Rate,
}

impl Default for Quality {
    fn default() -> Self {
        Quality {
            srtt: None,
            recent: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            last_rtt: None,
            jitter: Duration::ZERO,
            // Two significant digits: percentiles to within 1%, in about 10 KiB a path.
            hist: Histogram::new_with_bounds(1, MAX_RTT_US, 2)
                .expect("histogram bounds are constants"),
            probe_loss: None,
            probe_loss_in: None,
            passive_loss: None,
            goodput: Rate::default(),
        }
    }
}

impl Quality {
    /// Records one round-trip sample: RFC 6298 smoothing (1/8, 1/4), the minimum, the
    /// histogram, jitter as RFC 3550 computes it (the mean deviation between
    /// consecutive samples, smoothed by 1/16), and the recent round trip (smoothed by
    /// 1/2).
    pub fn record_rtt(&mut self, rtt: Duration) {
        self.recent = Some(self.recent.map_or(rtt, |r| (r + rtt) / 2));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                let dev = abs_diff(s, rtt);
                self.rttvar = (self.rttvar * 3 + dev) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
        if let Some(last) = self.last_rtt {
            let d = abs_diff(last, rtt);
            self.jitter = if d > self.jitter {
                self.jitter + (d - self.jitter) / 16
            } else {
                self.jitter - (self.jitter - d) / 16
            };
        }
        self.last_rtt = Some(rtt);
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        let us = u64::try_from(rtt.as_micros()).unwrap_or(MAX_RTT_US);
        self.hist.saturating_record(us.clamp(1, MAX_RTT_US));
    }

    /// The smoothed round trip, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The round trip smoothed over the last two or three samples only: what aggregate
    /// mode balances. The smoothed round trip takes about eight probes (a second at the
    /// default interval) to follow a queue that grows, and striping steered by it swings
    /// past its mark; one sample alone carries a packet's serialization jitter.
    pub fn recent_rtt(&self) -> Option<Duration> {
        self.recent
    }

    /// RFC 6298's round-trip variation.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// The smallest round trip seen.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The latest round-trip sample.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    /// The round trip at quantile `q` (0.5 for the median, 0.99 for p99) of every sample.
    pub fn rtt_quantile(&self, q: f64) -> Option<Duration> {
        (!self.hist.is_empty())
            .then(|| Duration::from_micros(self.hist.value_at_quantile(q.clamp(0.0, 1.0))))
    }

    /// Jitter: the smoothed difference between consecutive round trips.
    pub fn jitter(&self) -> Option<Duration> {
        self.srtt.map(|_| self.jitter)
    }

    /// Sets the loss the probes show, each direction pooled over the path's probe
    /// streams ([`pooled_loss`]): `out` of our probes (the peer's echoes say which
    /// arrived), `inbound` of the peer's. None: no probe's fate known yet.
    pub fn set_probe_loss(&mut self, out: Option<ProbeLoss>, inbound: Option<ProbeLoss>) {
        self.probe_loss = out;
        self.probe_loss_in = inbound;
    }

    /// Records, for duplicate mode, that `expected` packets were delivered by any path
    /// over an interval, of which copies of `arrived` came on this path: the rest never
    /// arrived here. Smoothed over intervals (1/4), ignoring intervals of under 10
    /// packets.
    pub fn record_copies(&mut self, expected: u64, arrived: u64) {
        if expected < 10 {
            return;
        }
        let lost = 100.0 * expected.saturating_sub(arrived) as f64 / expected as f64;
        self.passive_loss = Some(match self.passive_loss {
            None => lost,
            Some(l) => l + (lost - l) / 4.0,
        });
    }

    /// Loss in percent, the larger of the two directions': ours from our probes, the
    /// peer's from the copies of its data that never arrived here when it duplicates
    /// (thousands of samples a second), else from its probes. Both ends of a path thus
    /// see the same loss, whichever direction loses. This is what `mpwg show` prints,
    /// from the first probe whose fate is known.
    pub fn loss_pct(&self) -> Option<f64> {
        self.loss(false)
    }

    /// [`Quality::loss_pct`] from the figures with enough samples behind them to judge
    /// the path by ([`MIN_DECIDED`] probes a direction): what health uses.
    pub fn settled_loss_pct(&self) -> Option<f64> {
        self.loss(true)
    }

    fn loss(&self, settled: bool) -> Option<f64> {
        let probes = |l: Option<ProbeLoss>| {
            l.filter(|l| !settled || l.probes >= MIN_DECIDED)
                .map(|l| l.pct)
        };
        let inbound = self.passive_loss.or(probes(self.probe_loss_in));
        match (probes(self.probe_loss), inbound) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets the probe loss figures (the peer stopped probing).
    pub fn clear_probe_loss(&mut self) {
        self.probe_loss = None;
        self.probe_loss_in = None;
    }

    /// Forgets the passive loss figure (the peer stopped duplicating).
    pub fn clear_passive_loss(&mut self) {
        self.passive_loss = None;
    }

    /// Counts `bytes` delivered through this path.
    pub fn record_delivered(&mut self, bytes: u64, now: Instant) {
        self.goodput.add(bytes, now);
    }

    /// Goodput in bytes per second, smoothed.
    pub fn goodput(&self, now: Instant) -> f64 {
        self.goodput.rate(now)
    }
}

/// The fate of each of the last 64 probes (`FATE_WINDOW`) of one stream (one end's probes
/// to one address on one path): arrived, lost, or not known yet. Each probe counts once,
/// whatever number of reports tell of it, so the loss figure is the share of lost
/// probes among those decided, with no weight on the newest.
///
/// - Our own probes are decided by the peer's echoes ([`Fates::report`]): bit i of the
///   echo's bitmap is the probe `seq - i`; probes after the echoed one are not known
///   yet (in flight, or lost: the next echo says).
/// - The peer's probes are decided as they arrive ([`Fates::arrived`]): those numbered
///   between the newest so far and the one arriving are lost, unless they arrive late.
/// - A path that went down and came back: the run of losses around the moment it went
///   down (from the last probe that arrived before it to the first that arrived after)
///   was the outage's, not the path's, and is forgotten ([`Fates::went_down`],
///   [`Fates::came_back`]); what the path showed before the outage is kept, so a
///   lossy path that flaps down does not come back with a clean record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fates {
    /// The newest sequence number decided (0: none).
    top: u32,
    /// Bit i: probe `top - i` is decided.
    decided: u64,
    /// Bit i: probe `top - i` arrived.
    arrived: u64,
    /// The newest echo taken (older ones, overtaken, are ignored).
    reported: u32,
    /// Probes strictly between these two numbers are the outage's: ignored.
    skip: (u32, u32),
    /// The newest probe number when the path went down.
    down_at: Option<u32>,
}

impl Fates {
    fn set(&mut self, seq: u32, arrived: bool) {
        if seq == 0 || (seq > self.skip.0 && seq < self.skip.1) {
            return;
        }
        if seq > self.top {
            let shift = seq - self.top;
            if shift >= FATE_WINDOW {
                (self.decided, self.arrived) = (0, 0);
            } else {
                self.decided <<= shift;
                self.arrived <<= shift;
            }
            self.top = seq;
        }
        let i = self.top - seq;
        if i >= FATE_WINDOW {
            return;
        }
        self.decided |= 1 << i;
        if arrived {
            self.arrived |= 1 << i;
        } else {
            self.arrived &= !(1 << i);
        }
    }

    /// The peer's echo of our probe `seq`, with its bitmap `received` (bit i: probe
    /// `seq - i` arrived).
    pub fn report(&mut self, seq: u32, received: u32) {
        if seq < self.reported {
            return;
        }
        self.reported = seq;
        for i in 0..ECHO_BITS.min(seq) {
            self.set(seq - i, received >> i & 1 == 1);
        }
    }

    /// The peer's probe `seq` arrived.
    pub fn arrived(&mut self, seq: u32) {
        if self.top > 0 && seq > self.top {
            for s in (self.top + 1).max(seq.saturating_sub(FATE_WINDOW))..seq {
                self.set(s, false);
            }
        }
        self.set(seq, true);
    }

    /// The newest probe number decided (0: none).
    pub fn newest(&self) -> u32 {
        self.top
    }

    /// (lost, decided) probes in the window.
    pub fn counts(&self) -> (u32, u32) {
        (
            (self.decided & !self.arrived).count_ones(),
            self.decided.count_ones(),
        )
    }

    /// The path went down; `newest` is the newest probe number of the stream now (ours:
    /// the last sent; the peer's: the last arrived).
    pub fn went_down(&mut self, newest: u32) {
        self.down_at = Some(newest);
    }

    /// The path is back; `next` is the number the stream's next probe will have.
    /// Forgets the run of losses around the moment it went down.
    pub fn came_back(&mut self, next: u32) {
        let Some(mark) = self.down_at.take() else {
            return;
        };
        let arrived = |f: &Fates, s: u32| {
            let i = f.top.wrapping_sub(s);
            s <= f.top && i < FATE_WINDOW && f.arrived >> i & 1 == 1
        };
        let low = self.top.saturating_sub(FATE_WINDOW - 1);
        let last_before = (low..=mark.min(self.top))
            .rev()
            .find(|&s| arrived(self, s))
            .unwrap_or(low.saturating_sub(1));
        let first_after = (mark + 1..=self.top)
            .find(|&s| arrived(self, s))
            .unwrap_or(next);
        for s in last_before + 1..first_after {
            let i = self.top.wrapping_sub(s);
            if s <= self.top && i < FATE_WINDOW {
                self.decided &= !(1 << i);
                self.arrived &= !(1 << i);
            }
        }
        self.skip = (last_before, first_after);
    }
}

/// One direction's loss from probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeLoss {
    /// Percent of the probes decided that were lost.
    pub pct: f64,
    /// Probes decided.
    pub probes: u32,
}

/// The loss of probe streams pooled, from their [`Fates::counts`]: None until one
/// probe's fate is known.
pub fn pooled_loss(streams: impl IntoIterator<Item = (u32, u32)>) -> Option<ProbeLoss> {
    let (lost, decided) = streams
        .into_iter()
        .fold((0, 0), |(l, d), (sl, sd)| (l + sl, d + sd));
    (decided > 0).then(|| ProbeLoss {
        pct: 100.0 * f64::from(lost) / f64::from(decided),
        probes: decided,
    })
}

fn abs_diff(a: Duration, b: Duration) -> Duration {
    a.abs_diff(b)
}

/// A byte rate measured over windows of `RATE_WINDOW` and smoothed (1/2).
#[derive(Debug, Clone, Default)]
pub struct Rate {
    start: Option<Instant>,
    bytes: u64,
    rate: f64,
}

impl Rate {
    /// Adds `bytes` at `now`.
    pub fn add(&mut self, bytes: u64, now: Instant) {
        self.roll(now);
        self.bytes += bytes;
    }

    fn roll(&mut self, now: Instant) {
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let r = self.bytes as f64 / elapsed.as_secs_f64();
            // A window far longer than usual (idle) counts as a fresh measurement.
            self.rate = if elapsed > RATE_WINDOW * 4 {
                r
            } else {
                (self.rate + r) / 2.0
            };
            self.start = Some(now);
            self.bytes = 0;
        }
    }

    /// Bytes per second as of `now`.
    pub fn rate(&self, now: Instant) -> f64 {
        match self.start {
            Some(s) if now.saturating_duration_since(s) > RATE_WINDOW * 4 => 0.0,
            _ => self.rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multipath::health::{Config, Health, State};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn smoothed_minimum_and_percentiles() {
        let mut q = Quality::default();
        assert_eq!(q.srtt(), None);
        assert_eq!(q.rtt_quantile(0.5), None);
        assert_eq!(q.jitter(), None);
        q.record_rtt(ms(10));
        assert_eq!(q.srtt(), Some(ms(10)));
        assert_eq!(q.jitter(), Some(Duration::ZERO));
        for _ in 0..98 {
            q.record_rtt(ms(10));
        }
        q.record_rtt(ms(100));
        // 7/8 of 10 ms plus 1/8 of 100 ms.
        assert_eq!(q.srtt(), Some(Duration::from_micros(21_250)));
        // The recent round trip: half of 10 ms, half of 100 ms; two more samples of 10 ms
        // bring it back within 25 ms, where the smoothed one still says 18.
        assert_eq!(q.recent_rtt(), Some(ms(55)));
        q.record_rtt(ms(10));
        q.record_rtt(ms(10));
        assert_eq!(q.recent_rtt(), Some(Duration::from_micros(21_250)));
        assert!(q.srtt().unwrap() > ms(17), "{:?}", q.srtt());
        assert_eq!(q.min_rtt(), Some(ms(10)));
        let p50 = q.rtt_quantile(0.5).unwrap();
        let p99 = q.rtt_quantile(0.99).unwrap();
        assert!(
            p50.abs_diff(ms(10)) <= Duration::from_micros(100),
            "{p50:?}"
        );
        assert!(
            p99.abs_diff(ms(10)) <= Duration::from_micros(100),
            "{p99:?}"
        );
        assert!(q.rtt_quantile(1.0).unwrap() >= ms(99));
    }

    #[test]
    fn jitter_follows_the_variation_between_samples() {
        let mut steady = Quality::default();
        let mut jumpy = Quality::default();
        for i in 0..200 {
            steady.record_rtt(ms(20));
            jumpy.record_rtt(ms(if i % 2 == 0 { 15 } else { 25 }));
        }
        assert_eq!(steady.jitter(), Some(Duration::ZERO));
        let j = jumpy.jitter().unwrap();
        // Consecutive samples differ by 10 ms: the smoothed figure converges on it.
        assert!(j > ms(9) && j <= ms(10), "{j:?}");
    }

    #[test]
    fn our_probes_fates_from_the_echoes_each_counted_once() {
        let mut f = Fates::default();
        assert_eq!(pooled_loss([f.counts()]), None);
        // 4 of the 32 up to probe 100 missing: 100, 98, 87, 85.
        f.report(100, !0b1010_0000_0000_0101);
        assert_eq!(f.counts(), (4, 32));
        let l = pooled_loss([f.counts()]).unwrap();
        assert_eq!((l.pct, l.probes), (12.5, 32));
        // The same echo again (the peer probes faster than we do) changes nothing.
        f.report(100, !0b1010_0000_0000_0101);
        assert_eq!(f.counts(), (4, 32));
        // A later echo: 100 and 98 arrived late after all, 101..110 arrived.
        f.report(110, !(1 << 23 | 1 << 25));
        assert_eq!(f.counts(), (2, 42));
        // An older echo overtaken by that one is ignored.
        f.report(105, 0);
        assert_eq!(f.counts(), (2, 42));
        // Only the last 64 probes count.
        f.report(200, u32::MAX);
        assert_eq!(f.counts(), (0, 32));
        // Probe numbers start at 1: a bitmap's bits before probe 1 mean nothing.
        let mut f = Fates::default();
        f.report(4, 0xffff_fff7);
        assert_eq!(f.counts(), (1, 4));
    }

    #[test]
    fn the_peers_probes_fates_as_they_arrive() {
        let mut f = Fates::default();
        // The first one seen says nothing about the ones before it.
        for s in [7, 8, 10, 11, 14] {
            f.arrived(s);
        }
        assert_eq!(f.counts(), (3, 8));
        f.arrived(12);
        assert_eq!(f.counts(), (2, 8), "a late arrival is not lost");
        f.arrived(12);
        assert_eq!(f.counts(), (2, 8), "nor counted twice");
    }

    #[test]
    fn an_outage_is_not_the_paths_loss_but_what_came_before_stays() {
        let mut f = Fates::default();
        for s in (1..=40).filter(|&s| s != 20) {
            f.arrived(s);
        }
        f.went_down(40);
        // Nothing until 60: 41..59 were the outage's.
        f.arrived(60);
        f.arrived(61);
        f.came_back(62);
        assert_eq!(f.counts(), (1, 42));
        // Our own probes: the echoes resume with probe 80; the outage's stay forgotten.
        let mut f = Fates::default();
        f.report(30, u32::MAX);
        f.went_down(32);
        f.report(80, 0b11);
        f.came_back(81);
        // 17..30 (the window is 64 probes wide) and 79, 80.
        assert_eq!(f.counts(), (0, 16));
        // The next echo: 18..30 and 79..81; 31..78 stay forgotten.
        f.report(81, 0b111);
        assert_eq!(f.counts(), (0, 16));
        // A path that never came back is left alone.
        let mut f = Fates::default();
        f.report(30, !(1 << 5));
        f.came_back(31);
        assert_eq!(f.counts(), (1, 30));
    }

    /// A small deterministic generator: which probes a 10%-lossy link drops.
    struct Lossy(u64);

    impl Lossy {
        fn drops(&mut self, pct: u64) -> bool {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % 100 < pct
        }
    }

    /// Two ends probing each other every 110 ms over a path losing `pct` percent each
    /// way, with a cut of both directions from `cut.0` to `cut.1` (in intervals): one
    /// end's fates and health, driven with a fake clock as the monitor drives them.
    /// Returns the state after each interval.
    fn exchange(pct: u64, cut: (u64, u64), seed: u64) -> Vec<State> {
        let cfg = Config::default();
        let t0 = Instant::now();
        let mut h = Health::new(cfg, t0);
        let (mut ours, mut theirs) = (Fates::default(), Fates::default());
        let mut net = Lossy(seed);
        // The far end's record of our probes: (newest seq, bitmap).
        let (mut seq, mut far, mut bits) = (0u32, 0u32, 0u32);
        let mut states = Vec::new();
        let mut q = Quality::default();
        for k in 0..1000u64 {
            let t = t0 + cfg.active_interval * k as u32;
            let up = !(cut.0..cut.1).contains(&k);
            seq += 1;
            if up && !net.drops(pct) {
                let shift = seq - far;
                bits = if shift >= 32 { 0 } else { bits << shift } | 1;
                far = seq;
            }
            // The peer's probe k+1, echoing our newest.
            if up && !net.drops(pct) && far > 0 {
                h.probe_received(cfg.active_interval, t);
                h.echoed(t);
                theirs.arrived(k as u32 + 1);
                ours.report(far, bits);
            }
            q.set_probe_loss(pooled_loss([ours.counts()]), pooled_loss([theirs.counts()]));
            let loss = q.settled_loss_pct();
            let was_down = h.state() == State::Down;
            if let Some(s) = h.evaluate(t, true, cfg.active_interval, false, loss) {
                if s == State::Down {
                    ours.went_down(seq);
                    theirs.went_down(theirs.newest());
                } else if was_down {
                    ours.came_back(seq + 1);
                    theirs.came_back(k as u32 + 2);
                }
            }
            states.push(h.state());
        }
        states
    }

    #[test]
    fn a_lossy_path_stays_degraded_and_a_clean_one_comes_back_up() {
        // The issue-12 bug: with each echo's 32-probe window smoothed in, a 10%-lossy
        // path read under 2% (up again) in one interval of seven, and 0% right after
        // coming back from down.
        for seed in 1..=20 {
            let s = exchange(10, (400, 420), seed);
            let first = s.iter().position(|&s| s == State::Degraded).unwrap();
            assert!(
                first < 100,
                "seed {seed}: degraded only after {first} intervals"
            );
            let bad = (first..s.len())
                .filter(|&k| !(400..440).contains(&k) && s[k] != State::Degraded)
                .collect::<Vec<_>>();
            assert!(
                bad.len() < 10,
                "seed {seed}: {} intervals not degraded: {bad:?}",
                bad.len()
            );
            assert_eq!(s[400 + 60], State::Degraded, "seed {seed}: after the cut");
        }
        // A clean path cut for 2 s is up again as soon as it answers, with no loss.
        let s = exchange(0, (400, 420), 1);
        assert!(s[..400].iter().all(|&s| s == State::Up));
        assert_eq!(s[410], State::Down);
        assert!(
            s[430..].iter().all(|&s| s == State::Up),
            "{:?}",
            &s[420..440]
        );
    }

    #[test]
    fn passive_loss_from_copies_that_never_arrived() {
        let mut q = Quality::default();
        q.record_copies(5, 0);
        assert_eq!(q.loss_pct(), None, "too few packets to say");
        q.record_copies(1000, 900);
        assert_eq!(q.loss_pct(), Some(10.0));
        q.record_copies(1000, 1000);
        assert_eq!(q.loss_pct(), Some(7.5));
        // With probes too: the larger of the two directions.
        let probes = |pct, probes| Some(ProbeLoss { pct, probes });
        q.set_probe_loss(probes(0.0, 64), probes(1.0, 64));
        assert_eq!(q.loss_pct(), Some(7.5));
        q.set_probe_loss(probes(20.0, 64), None);
        assert_eq!(q.loss_pct(), Some(20.0));
        q.clear_passive_loss();
        q.clear_probe_loss();
        q.set_probe_loss(None, probes(3.0, 64));
        assert_eq!(q.loss_pct(), Some(3.0));
        // Shown from the first probes, judged by only with 32 of them.
        q.set_probe_loss(probes(25.0, 4), probes(0.0, 40));
        assert_eq!(q.loss_pct(), Some(25.0));
        assert_eq!(q.settled_loss_pct(), Some(0.0));
        q.set_probe_loss(probes(25.0, 4), None);
        assert_eq!(q.settled_loss_pct(), None);
    }

    #[test]
    fn goodput_over_windows() {
        let t0 = Instant::now();
        let mut q = Quality::default();
        for i in 0..=20u64 {
            q.record_delivered(125_000, t0 + ms(i * 100));
        }
        // 125 kB every 100 ms: 1.25 MB/s.
        let r = q.goodput(t0 + ms(2000));
        assert!((r - 1.25e6).abs() < 0.15e6, "{r}");
        assert_eq!(q.goodput(t0 + ms(10_000)), 0.0, "idle");
    }
}
