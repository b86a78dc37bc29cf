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
/// Probes whose fate a loss figure covers at most (the width of a probe's echo bitmap).
const PROBE_WINDOW: u32 = 32;

/// One path's quality.
#[derive(Debug, Clone)]
pub struct Quality {
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<Duration>,
    last_rtt: Option<Duration>,
    jitter: Duration,
    hist: Histogram<u64>,
    probe_loss: Option<f64>,
    passive_loss: Option<f64>,
    goodput: Rate,
}

impl Default for Quality {
    fn default() -> Self {
        Quality {
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            last_rtt: None,
            jitter: Duration::ZERO,
            // Two significant digits: percentiles to within 1%, in about 10 KiB a path.
            hist: Histogram::new_with_bounds(1, MAX_RTT_US, 2)
                .expect("histogram bounds are constants"),
            probe_loss: None,
            passive_loss: None,
            goodput: Rate::default(),
        }
    }
}

impl Quality {
    /// Records one round-trip sample: RFC 6298 smoothing (1/8, 1/4), the minimum, the
    /// histogram, and jitter as RFC 3550 computes it (the mean deviation between
    /// consecutive samples, smoothed by 1/16).
    pub fn record_rtt(&mut self, rtt: Duration) {
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

    /// Records the peer's report of which of our last probes arrived: bit i of
    /// `received` is the probe `seq - i`; only the last `seq` probes count (those sent
    /// since the count started: probe numbers start at 1, and the monitor restarts the
    /// count when a path comes back from down). Each report's figure (over up to 32
    /// probes) is smoothed in by 1/4, so one lucky or unlucky window does not flip a
    /// path between up and degraded.
    pub fn record_probe_report(&mut self, seq: u32, received: u32) {
        let n = seq.min(PROBE_WINDOW);
        if n == 0 {
            return;
        }
        let mask = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
        let got = (received & mask).count_ones();
        let loss = 100.0 * f64::from(n - got) / f64::from(n);
        self.probe_loss = Some(match self.probe_loss {
            None => loss,
            Some(l) => l + (loss - l) / 4.0,
        });
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

    /// Loss in percent: from probes where the peer is mpwg, else from duplicate copies.
    pub fn loss_pct(&self) -> Option<f64> {
        self.probe_loss.or(self.passive_loss)
    }

    /// Forgets the probe loss figure (the peer stopped probing).
    pub fn clear_probe_loss(&mut self) {
        self.probe_loss = None;
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
    fn loss_from_the_probe_report() {
        let mut q = Quality::default();
        assert_eq!(q.loss_pct(), None);
        // 4 of the last 32 missing.
        q.record_probe_report(100, !0b1010_0000_0000_0101);
        assert_eq!(q.loss_pct(), Some(12.5));
        // Smoothed: a clean report brings it down by a quarter.
        q.record_probe_report(32, u32::MAX);
        assert_eq!(q.loss_pct(), Some(12.5 * 0.75));
        // Only 4 probes counted, one of them lost; the bits above them mean nothing.
        let mut q = Quality::default();
        q.record_probe_report(4, 0xffff_fff7);
        assert_eq!(q.loss_pct(), Some(25.0));
        q.clear_probe_loss();
        assert_eq!(q.loss_pct(), None);
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
        // Probe figures win when there are both.
        q.record_probe_report(32, u32::MAX);
        assert_eq!(q.loss_pct(), Some(0.0));
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
