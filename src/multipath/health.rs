//! A path's health, as pure logic: `up`, `degraded` or `down`, from what the datapath
//! reports (link events, send results, authenticated arrivals on the path, probes and
//! their echoes), evaluated at an explicit `now`. (`absent`, a path whose interface does
//! not exist, is the path lifecycle's and is not decided here.)
//!
//! **Against an mpwg peer** the two ends probe each other on every path (see
//! [`crate::multipath::probe`]): every [`Config::active_interval`] while traffic flows,
//! every [`Config::idle_interval`] otherwise, each probe telling the peer the sender's
//! interval. A path is `down` when nothing authenticated arrived on it for
//! [`Config::dead_intervals`] of the peer's interval (a cut in the peer's direction), or
//! when none of our probes sent on it was echoed for as long plus a round of both ends'
//! intervals (a cut in ours). With the defaults a silent cut is seen in 253 ms plus a
//! one-way delay while traffic flows (probes every 110 ms), and in 633 ms plus a one-way
//! delay when idle (every 275 ms). One probe each way per interval costs 9.5 kbit/s at
//! the active rate, over IPv6 and Ethernet: under 1% of a 1 Mbit/s link. A `down` path comes back `up` after
//! [`Config::rise`] probe round trips. A path whose probes show [`Config::degraded_loss`]
//! percent loss or more is `degraded` until its loss falls below
//! [`Config::recovered_loss`].
//!
//! **Suspicion** comes before `down`, and is not a state: a working path against an mpwg
//! peer that has been hearing traffic steadily (eight gaps between arrivals or more,
//! averaged) is [`Health::suspect`] once it has been
//! silent for three of its usual gaps between arrivals (at least 50 ms), when that is
//! shorter than the silence that puts it `down`. Failover copies data to the best backup
//! while its active path is suspect, so that a silent cut during a 100 packets/s flow
//! costs about 60 ms of it rather than the 250 ms or more until `down`; it ends as soon
//! as anything arrives on the path. A path that hears only probes (gaps of an interval or
//! more) is never suspect: three gaps are longer than `down`'s silence.
//!
//! **Against a stock peer** nothing is sent that it does not already handle, so health
//! comes from the link, send errors and silence. A stock peer answers only to the
//! address it last heard from, so silence means something only on a path that carries
//! all of our data to it (failover's active path): when data went out on such a path and
//! nothing came back for [`Config::stock_silence`] (or three times the peer's usual gap
//! between packets on it, if longer, up to 15 s) while data still goes out (some in the
//! last 300 ms), the path is `down`. After
//! [`Config::stock_retry`] it is put on trial (`degraded`, with [`Health::on_trial`]):
//! the scheduler sends copies on it again, and it is `up` as soon as the peer is heard
//! on it, or `down` again (with the retry time doubled, up to a minute) if not.

use std::time::{Duration, Instant};

/// A path's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Working.
    Up,
    /// Working, but lossy (or on trial against a stock peer): used only when no path is
    /// `up`, and in duplicate mode.
    Degraded,
    /// Not working: nothing is sent on it (unless no path works).
    Down,
}

impl State {
    /// The name `mpwg show` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a path is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its interface is down.
    Link,
    /// Sends on it fail.
    SendErrors,
    /// Nothing arrives on it.
    Silent,
    /// Our probes on it go unanswered.
    Unanswered,
}

impl Reason {
    /// A few words for logs and `mpwg show`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Link => "link down",
            Reason::SendErrors => "send errors",
            Reason::Silent => "nothing received",
            Reason::Unanswered => "probes unanswered",
        }
    }
}

/// Health settings (every path of a tunnel shares them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Probe interval while traffic flows.
    pub active_interval: Duration,
    /// Probe interval when idle.
    pub idle_interval: Duration,
    /// Silence, in the peer's probe intervals, after which a path is down.
    pub dead_intervals: f64,
    /// Probe round trips after which a down path is up again.
    pub rise: u32,
    /// Loss in percent from which a path is degraded.
    pub degraded_loss: f64,
    /// Loss in percent under which a degraded path is up again.
    pub recovered_loss: f64,
    /// Against a stock peer, the least silence on the active path that means it is cut.
    pub stock_silence: Duration,
    /// Against a stock peer, how long a path cut by silence waits before a trial.
    pub stock_retry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            active_interval: Duration::from_millis(110),
            idle_interval: Duration::from_millis(275),
            dead_intervals: 2.3,
            rise: 2,
            degraded_loss: 5.0,
            recovered_loss: 2.0,
            stock_silence: Duration::from_secs(1),
            stock_retry: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// The defaults with probes every `interval` while traffic flows, and every 2.5
    /// times it when idle (`--probe-interval`).
    pub fn with_active_interval(interval: Duration) -> Config {
        Config {
            active_interval: interval,
            idle_interval: interval.mul_f64(2.5),
            ..Config::default()
        }
    }
}

/// The longest silence a stock peer's usual gaps stretch the threshold to.
const STOCK_SILENCE_MAX: Duration = Duration::from_secs(15);
/// How recently data must have gone out for a stock peer's silence to count.
const STOCK_SENDING: Duration = Duration::from_millis(300);
/// The longest wait before a stock trial.
const STOCK_RETRY_MAX: Duration = Duration::from_secs(60);
/// The silence, in usual gaps between arrivals, after which a path is suspect.
const SUSPECT_GAPS: u32 = 3;
/// How many gaps between arrivals must have been seen before silence is suspect: a
/// steady flow, not its first packets.
const SUSPECT_AFTER: u8 = 8;
/// The least silence that makes a path suspect: a few of the monitor's 10 ms ticks, and
/// more than the scheduling hiccups of a busy machine.
const SUSPECT_MIN: Duration = Duration::from_millis(50);

/// One path's health.
#[derive(Debug, Clone)]
pub struct Health {
    cfg: Config,
    state: State,
    since: Instant,
    reason: Option<Reason>,
    link_up: bool,
    send_failing: bool,
    heard: Option<Instant>,
    /// EWMA of the gaps between arrivals (a stock peer's silence, and suspicion).
    gap: Option<Duration>,
    /// How many gaps `gap` has averaged (up to 255).
    gaps: u8,
    confirmed: Option<Instant>,
    peer_interval: Option<Duration>,
    rises: u32,
    data_sent: Option<Instant>,
    trial: bool,
    trial_since: Option<Instant>,
    retry: Duration,
    suspect: bool,
}

impl Health {
    /// A path that is `up` as of `now` (optimistic: sending is how a path shows it works).
    pub fn new(cfg: Config, now: Instant) -> Health {
        Health {
            cfg,
            state: State::Up,
            since: now,
            reason: None,
            link_up: true,
            send_failing: false,
            heard: None,
            gap: None,
            gaps: 0,
            confirmed: None,
            peer_interval: None,
            rises: 0,
            data_sent: None,
            trial: false,
            trial_since: None,
            retry: cfg.stock_retry,
            suspect: false,
        }
    }

    /// The state, as of the last [`Health::evaluate`].
    pub fn state(&self) -> State {
        self.state
    }

    /// When the state last changed.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Why the path is down (None unless it is).
    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// True while a stock peer's path cut by silence is being tried again.
    pub fn on_trial(&self) -> bool {
        self.trial
    }

    /// True while a working path against an mpwg peer has been silent for longer than its
    /// usual gaps between arrivals explain, but not yet for long enough to be `down`, as
    /// of the last [`Health::evaluate`] (see the module's documentation).
    pub fn suspect(&self) -> bool {
        self.suspect
    }

    /// When something authenticated last arrived on the path.
    pub fn last_heard(&self) -> Option<Instant> {
        self.heard
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Changes the settings.
    pub fn set_config(&mut self, cfg: Config) {
        self.cfg = cfg;
    }

    /// The interface went up (admin up with carrier) or down.
    pub fn link(&mut self, up: bool) {
        self.link_up = up;
    }

    /// A send on the path succeeded or failed.
    pub fn send_result(&mut self, ok: bool) {
        self.send_failing = !ok;
    }

    /// Data (not only probes) went out on the path.
    pub fn data_sent(&mut self, now: Instant) {
        self.data_sent = Some(now);
    }

    /// Something authenticated from the peer arrived on the path.
    pub fn heard(&mut self, now: Instant) {
        // Two reports at one instant (a probe and data seen in the same tick) are one
        // arrival, not a gap of zero.
        if let Some(g) = self.heard.map(|h| now.saturating_duration_since(h)) {
            if !g.is_zero() {
                self.gap = Some(match self.gap {
                    None => g,
                    Some(old) => (old * 7 + g) / 8,
                });
                self.gaps = self.gaps.saturating_add(1);
            }
        }
        self.heard = self.heard.max(Some(now));
    }

    /// A probe from the peer arrived on the path; the peer probes every `interval`.
    pub fn probe_received(&mut self, interval: Duration, now: Instant) {
        self.peer_interval = Some(interval);
        self.heard(now);
    }

    /// The peer echoed a probe we sent on the path at `sent_at`.
    pub fn echoed(&mut self, sent_at: Instant) {
        if self.confirmed.is_none_or(|c| sent_at > c) {
            self.confirmed = Some(sent_at);
            if self.state == State::Down {
                self.rises += 1;
            }
        }
    }

    /// We probe an mpwg peer on this path every `interval` from `now`: if none of its
    /// probes ever arrives here, the path goes down as if they had stopped at `now`.
    pub fn expect_probes(&mut self, interval: Duration, now: Instant) {
        if self.peer_interval.is_none() {
            self.peer_interval = Some(interval);
            self.heard = Some(self.heard.map_or(now, |h| h.max(now)));
        }
    }

    /// Forgets what probes said (the peer stopped being an mpwg peer).
    pub fn forget_probes(&mut self) {
        self.peer_interval = None;
        self.confirmed = None;
    }

    /// How long the path may be silent before it is down, against an mpwg peer.
    pub fn dead_after(&self) -> Duration {
        self.peer_interval
            .unwrap_or(self.cfg.idle_interval)
            .mul_f64(self.cfg.dead_intervals)
    }

    /// Decides the state as of `now`. `mpwg`: the peer probes (it is mpwg); `our_interval`:
    /// our own probe interval now; `exclusive`: this path carries all our data to a
    /// stock peer; `loss_pct`: the path's loss. Returns the new state if it changed.
    pub fn evaluate(
        &mut self,
        now: Instant,
        mpwg: bool,
        our_interval: Duration,
        exclusive: bool,
        loss_pct: Option<f64>,
    ) -> Option<State> {
        let (target, reason) = if !self.link_up {
            (State::Down, Some(Reason::Link))
        } else if self.send_failing {
            (State::Down, Some(Reason::SendErrors))
        } else if mpwg && self.peer_interval.is_some() {
            self.probed_target(now, our_interval, loss_pct)
        } else {
            self.stock_target(now, exclusive)
        };
        if target != State::Down {
            self.rises = 0;
        }
        self.suspect = mpwg && target != State::Down && self.silent_beyond_its_gaps(now);
        self.reason = reason;
        if target == self.state {
            return None;
        }
        self.state = target;
        self.since = now;
        Some(target)
    }

    /// Silent for [`SUSPECT_GAPS`] of the usual gaps between arrivals (at least
    /// [`SUSPECT_MIN`]), where that is less than the silence that means `down`.
    fn silent_beyond_its_gaps(&self, now: Instant) -> bool {
        let (Some(heard), Some(gap), Some(_)) = (self.heard, self.gap, self.peer_interval) else {
            return false;
        };
        let threshold = (gap * SUSPECT_GAPS).max(SUSPECT_MIN);
        self.gaps >= SUSPECT_AFTER
            && threshold < self.dead_after()
            && now.saturating_duration_since(heard) > threshold
    }

    fn probed_target(
        &mut self,
        now: Instant,
        our_interval: Duration,
        loss: Option<f64>,
    ) -> (State, Option<Reason>) {
        self.trial = false;
        let dead = self.dead_after();
        let peer = self.peer_interval.unwrap_or(self.cfg.idle_interval);
        let silent = self
            .heard
            .is_none_or(|h| now.saturating_duration_since(h) > dead);
        // The newest echo is normally up to one of our intervals plus one of the peer's
        // old (it rides on the peer's next probe).
        let unanswered = self
            .confirmed
            .is_some_and(|c| now.saturating_duration_since(c) > dead + our_interval + peer);
        if silent {
            return (State::Down, Some(Reason::Silent));
        }
        if unanswered {
            return (State::Down, Some(Reason::Unanswered));
        }
        if self.state == State::Down && self.rises < self.cfg.rise {
            return (State::Down, self.reason);
        }
        let loss = loss.unwrap_or(0.0);
        let lossy = loss >= self.cfg.degraded_loss
            || (self.state == State::Degraded && loss >= self.cfg.recovered_loss);
        (if lossy { State::Degraded } else { State::Up }, None)
    }

    fn stock_target(&mut self, now: Instant, exclusive: bool) -> (State, Option<Reason>) {
        let threshold = self
            .gap
            .map_or(self.cfg.stock_silence, |g| {
                (g * 3).max(self.cfg.stock_silence)
            })
            .min(STOCK_SILENCE_MAX);
        let silent_since = |since: Option<Instant>| {
            since.is_some_and(|s| now.saturating_duration_since(s) > threshold)
        };
        // Data going out now (within the last 300 ms), not one packet a while ago that
        // may simply have been lost.
        let sending = self
            .data_sent
            .is_some_and(|d| now.saturating_duration_since(d) < STOCK_SENDING);
        if self.trial {
            let started = self.trial_since.unwrap_or(now);
            if self.heard.is_some_and(|h| h > started) {
                self.trial = false;
                self.retry = self.cfg.stock_retry;
                return (State::Up, None);
            }
            if silent_since(Some(started)) {
                self.trial = false;
                self.retry = (self.retry * 2).min(STOCK_RETRY_MAX);
                return (State::Down, Some(Reason::Silent));
            }
            return (State::Degraded, None);
        }
        if self.state == State::Down && self.reason == Some(Reason::Silent) {
            if self.heard.is_some_and(|h| h > self.since) {
                return (State::Up, None);
            }
            if now.saturating_duration_since(self.since) >= self.retry {
                self.trial = true;
                self.trial_since = Some(now);
                return (State::Degraded, None);
            }
            return (State::Down, Some(Reason::Silent));
        }
        // Silence counts only where the peer must answer: on the one path carrying our
        // data, after it has been heard on it, while data goes out.
        if exclusive && sending && silent_since(self.heard) {
            return (State::Down, Some(Reason::Silent));
        }
        (State::Up, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drives a path against an mpwg peer probing every `interval`, heard and echoed
    /// until `cut`, and returns when it went down.
    fn time_to_down(interval: Duration, owd: Duration) -> Duration {
        let cfg = Config::default();
        let t0 = Instant::now();
        let mut h = Health::new(cfg, t0);
        let cut = t0 + ms(3000);
        let mut t = t0;
        let tick = ms(10);
        let mut next_probe = t0;
        loop {
            t += tick;
            if t >= next_probe && t < cut {
                // The peer's probe, sent at next_probe, arrives one way later.
                h.probe_received(interval, next_probe + owd);
                h.echoed(next_probe.checked_sub(owd * 2).unwrap_or(t0));
                next_probe += interval;
            }
            if let Some(State::Down) = h.evaluate(t, true, interval, false, Some(0.0)) {
                assert_eq!(h.reason(), Some(Reason::Silent));
                return t - cut;
            }
            assert!(t < cut + ms(5000), "never went down");
            if t < cut {
                assert_eq!(h.state(), State::Up, "went down before the cut at {t:?}");
            }
        }
    }

    #[test]
    fn a_silent_cut_is_seen_within_300_ms_active_and_1_s_idle() {
        let cfg = Config::default();
        let active = time_to_down(cfg.active_interval, ms(5));
        assert!(active <= ms(300), "active: {active:?}");
        let idle = time_to_down(cfg.idle_interval, ms(5));
        assert!(idle <= ms(1000), "idle: {idle:?}");
        assert!(idle > active);
    }

    /// Drives a path hearing the peer's probes every 110 ms, and data every `data` if
    /// any, evaluated every 10 ms, cut at 3 s: returns when it was first suspect and when
    /// it went down, both after the cut.
    fn suspicion_then_down(data: Option<Duration>) -> (Option<Duration>, Duration) {
        let cfg = Config::default();
        let t0 = Instant::now();
        let mut h = Health::new(cfg, t0);
        let cut = t0 + ms(3000);
        let (mut next_probe, mut next_data) = (t0, t0);
        let mut suspect = None;
        let mut t = t0;
        loop {
            t += ms(10);
            if t < cut && t >= next_probe {
                h.probe_received(cfg.active_interval, t);
                h.echoed(t - ms(10));
                next_probe += cfg.active_interval;
            }
            if let Some(every) = data.filter(|_| t < cut && t >= next_data) {
                h.heard(t);
                next_data += every;
            }
            let state = h.evaluate(t, true, cfg.active_interval, false, None);
            if t < cut {
                assert!(!h.suspect(), "suspect before the cut, at {:?}", t - t0);
            } else if h.suspect() && suspect.is_none() {
                suspect = Some(t - cut);
            }
            if state == Some(State::Down) {
                assert!(!h.suspect(), "a down path is not suspect");
                return (suspect, t - cut);
            }
        }
    }

    #[test]
    fn steady_traffic_makes_a_cut_suspect_long_before_it_is_down() {
        // 100 packets/s: suspect after 50 ms of silence, a tick later at most.
        let (suspect, down) = suspicion_then_down(Some(ms(10)));
        let suspect = suspect.expect("never suspect");
        assert!(suspect <= ms(70), "suspect after {suspect:?}");
        assert!(down >= ms(200), "down after {down:?}");
        // 10 packets/s between the probes: arrivals every 50 ms or so, so suspect after
        // three of those, still well before down.
        let (suspect, down) = suspicion_then_down(Some(ms(100)));
        let suspect = suspect.expect("never suspect at 10 packets/s");
        assert!(
            suspect > ms(100) && suspect + ms(50) < down,
            "{suspect:?}, {down:?}"
        );
        // Probes alone (every 110 ms) never make a path suspect: three gaps are longer
        // than down's silence.
        assert_eq!(suspicion_then_down(None).0, None);
    }

    #[test]
    fn suspicion_ends_with_the_next_arrival() {
        let t0 = Instant::now();
        let mut h = Health::new(Config::default(), t0);
        h.probe_received(ms(110), t0);
        let mut t = t0;
        for _ in 0..20 {
            t += ms(10);
            h.heard(t);
        }
        h.evaluate(t + ms(60), true, ms(110), false, None);
        assert!(h.suspect());
        h.heard(t + ms(70));
        h.evaluate(t + ms(70), true, ms(110), false, None);
        assert!(!h.suspect());
        // Against a stock peer (no probes), silence is never suspicion.
        h.forget_probes();
        h.evaluate(t + ms(200), false, ms(110), false, None);
        assert!(!h.suspect());
    }

    #[test]
    fn probes_cost_under_one_percent_of_a_megabit() {
        // One probe each way per interval and path: a 32-byte plaintext in a data
        // message (16 header, 16 tag), in UDP over IPv6 (48) with Ethernet (18).
        let wire = (super::super::probe::PROBE_LEN + 32 + 48 + 18) as f64;
        let per_s = 1.0 / Config::default().active_interval.as_secs_f64();
        let bits = wire * 8.0 * per_s;
        assert!(bits < 10_000.0, "{bits} bit/s");
    }

    #[test]
    fn down_then_up_after_rise_round_trips() {
        let cfg = Config::default();
        let t0 = Instant::now();
        let mut h = Health::new(cfg, t0);
        h.probe_received(ms(100), t0);
        h.echoed(t0);
        assert_eq!(
            h.evaluate(t0 + ms(300), true, ms(100), false, None),
            Some(State::Down)
        );
        // One round trip back is not enough.
        let t = t0 + ms(1000);
        h.probe_received(ms(100), t);
        h.echoed(t - ms(5));
        assert_eq!(h.evaluate(t, true, ms(100), false, None), None);
        h.probe_received(ms(100), t + ms(100));
        h.echoed(t + ms(95));
        assert_eq!(
            h.evaluate(t + ms(100), true, ms(100), false, None),
            Some(State::Up)
        );
        assert_eq!(h.since(), t + ms(100));
    }

    #[test]
    fn a_path_that_never_hears_an_mpwg_peer_goes_down() {
        let t0 = Instant::now();
        let mut h = Health::new(Config::default(), t0);
        h.expect_probes(ms(100), t0);
        assert_eq!(h.evaluate(t0 + ms(200), true, ms(100), false, None), None);
        assert_eq!(
            h.evaluate(t0 + ms(300), true, ms(100), false, None),
            Some(State::Down)
        );
        assert_eq!(h.reason(), Some(Reason::Silent));
    }

    #[test]
    fn unanswered_probes_mean_our_direction_is_cut() {
        let t0 = Instant::now();
        let mut h = Health::new(Config::default(), t0);
        h.echoed(t0);
        let mut t = t0;
        // The peer's probes keep arriving, but none of ours is echoed any more.
        let down = loop {
            t += ms(10);
            h.probe_received(ms(100), t);
            if h.evaluate(t, true, ms(100), false, None) == Some(State::Down) {
                break t - t0;
            }
        };
        assert_eq!(h.reason(), Some(Reason::Unanswered));
        assert!(down <= ms(500), "{down:?}");
    }

    #[test]
    fn loss_degrades_with_hysteresis() {
        let t0 = Instant::now();
        let mut h = Health::new(Config::default(), t0);
        let at = |h: &mut Health, i: u64, loss| {
            let t = t0 + ms(i * 10);
            h.probe_received(ms(100), t);
            h.echoed(t);
            h.evaluate(t, true, ms(100), false, Some(loss))
        };
        assert_eq!(at(&mut h, 1, 1.0), None);
        assert_eq!(at(&mut h, 2, 6.0), Some(State::Degraded));
        assert_eq!(at(&mut h, 3, 3.0), None, "still above the recovery line");
        assert_eq!(at(&mut h, 4, 1.0), Some(State::Up));
    }

    #[test]
    fn link_and_send_errors_win() {
        let t0 = Instant::now();
        let mut h = Health::new(Config::default(), t0);
        h.link(false);
        assert_eq!(
            h.evaluate(t0, false, ms(100), false, None),
            Some(State::Down)
        );
        assert_eq!(h.reason(), Some(Reason::Link));
        h.link(true);
        h.send_result(false);
        assert_eq!(h.evaluate(t0, false, ms(100), false, None), None);
        assert_eq!(h.reason(), Some(Reason::SendErrors));
        h.send_result(true);
        assert_eq!(h.evaluate(t0, false, ms(100), false, None), Some(State::Up));
    }

    #[test]
    fn a_stock_peer_silent_on_the_active_path_is_a_cut_then_a_trial() {
        let cfg = Config::default();
        let t0 = Instant::now();
        let mut h = Health::new(cfg, t0);
        // Two-way traffic: the peer answers every 10 ms.
        let mut t = t0;
        for _ in 0..100 {
            t += ms(10);
            h.data_sent(t);
            h.heard(t);
            assert_eq!(h.evaluate(t, false, ms(100), true, None), None);
        }
        let cut = t;
        let down = loop {
            t += ms(10);
            h.data_sent(t);
            if h.evaluate(t, false, ms(100), true, None) == Some(State::Down) {
                break t - cut;
            }
        };
        assert!(
            down > cfg.stock_silence && down <= cfg.stock_silence + ms(20),
            "{down:?}"
        );
        // After the retry time it is on trial (degraded), then up when the peer answers.
        let t1 = t + cfg.stock_retry;
        assert_eq!(
            h.evaluate(t1, false, ms(100), false, None),
            Some(State::Degraded)
        );
        assert!(h.on_trial());
        h.heard(t1 + ms(50));
        assert_eq!(
            h.evaluate(t1 + ms(50), false, ms(100), false, None),
            Some(State::Up)
        );
        assert!(!h.on_trial());
    }

    #[test]
    fn a_failed_stock_trial_backs_off() {
        let cfg = Config::default();
        let t0 = Instant::now();
        let mut h = Health::new(cfg, t0);
        h.heard(t0);
        h.data_sent(t0 + ms(1500));
        assert_eq!(
            h.evaluate(t0 + ms(1500), false, ms(100), true, None),
            Some(State::Down)
        );
        let t1 = t0 + ms(1500) + cfg.stock_retry;
        assert_eq!(
            h.evaluate(t1, false, ms(100), true, None),
            Some(State::Degraded)
        );
        let t2 = t1 + cfg.stock_silence + ms(10);
        assert_eq!(
            h.evaluate(t2, false, ms(100), true, None),
            Some(State::Down)
        );
        // The next trial waits twice as long.
        assert_eq!(
            h.evaluate(t2 + cfg.stock_retry, false, ms(100), true, None),
            None
        );
        assert_eq!(
            h.evaluate(t2 + cfg.stock_retry * 2, false, ms(100), true, None),
            Some(State::Degraded)
        );
    }

    #[test]
    fn stock_silence_is_ignored_off_the_active_path_and_stretches_with_the_peers_gaps() {
        let cfg = Config::default();
        let t0 = Instant::now();
        let mut h = Health::new(cfg, t0);
        h.heard(t0);
        h.data_sent(t0 + ms(5000));
        assert_eq!(h.evaluate(t0 + ms(5000), false, ms(100), false, None), None);
        // One-way traffic: the peer's keepalives come every 10 s; 20 s of silence is not
        // yet a cut (3 × 10 s), 31 s is (capped at 15 s beyond the last arrival... and
        // sending).
        let mut h = Health::new(cfg, t0);
        for i in 0..5 {
            h.heard(t0 + Duration::from_secs(10 * i));
        }
        let last = t0 + Duration::from_secs(40);
        h.data_sent(last + Duration::from_secs(12));
        assert_eq!(
            h.evaluate(last + Duration::from_secs(12), false, ms(100), true, None),
            None
        );
        h.data_sent(last + Duration::from_secs(16));
        assert_eq!(
            h.evaluate(last + Duration::from_secs(16), false, ms(100), true, None),
            Some(State::Down)
        );
    }
}
