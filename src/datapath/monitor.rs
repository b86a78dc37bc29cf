//! The path monitor: one thread that, every [`TICK`], reads the paths' counters, sends
//! and answers mpwg probes, decides each path's health and quality, and publishes where
//! data goes ([`Schedule`]). The decisions are the pure logic of
//! [`crate::multipath`] (`health`, `quality`, `scheduler`); this file feeds them.
//!
//! - **What each path did** comes from its counters, compared tick to tick: datagrams
//!   sent (beyond the monitor's own probes: data went out), send errors with nothing
//!   sent (failing), wins and duplicates (something from the peer arrived on it: a win
//!   is authenticated, a duplicate is a copy of an authenticated packet), and the link
//!   state netlink gave it.
//! - **Probes** go only to peers that have shown they are mpwg: a hello trailer on their
//!   data, or a probe of theirs, within [`MPWG_TTL`]. Each (path, peer address) gets one
//!   probe per interval, carrying the echo of the latest probe the peer sent to that
//!   address on that path; the echo gives the round trip and the peer's report of which
//!   of our probes arrived (loss). Probes go at the active interval while the peer's
//!   byte counters moved in the last second, at the idle one otherwise, and always at
//!   the idle one on a path that carries no data (failover's backups).
//! - **The plan**: per mode, which paths take duplicated traffic and which are striping
//!   candidates, with their weights (a configured `weight`, else shares balanced every
//!   [`REBALANCE`] for equal queueing delay: [`scheduler::rebalance`]).
//!
//! With several mpwg peers, a path's health and quality mix what each says about it:
//! the figures are per path, as `mpwg show` prints them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::datapath::paths::{Path, Paths};
use crate::datapath::schedule::{Entry, Plan, Schedule};
use crate::datapath::Lifecycle;
use crate::multipath::health::{self, Health, Reason, State};
use crate::multipath::path::{PathId, Source};
use crate::multipath::probe::{self, Echo, Probe, PROBE_LEN};
use crate::multipath::quality::{self, Fates, Quality};
use crate::multipath::reorder;
use crate::multipath::scheduler::{self, Failover, Mode, PathView};
use crate::multipath::state::LinkState;
use crate::protocol::device::Device;
use crate::protocol::key::Key;
use crate::protocol::peer::Peer;
use crate::protocol::session::{HEADROOM, TAILROOM};
use crate::protocol::transmit::Transmit;

/// How often the monitor runs.
pub const TICK: Duration = Duration::from_millis(10);
/// How long a peer counts as mpwg after its last probe or hello.
pub const MPWG_TTL: Duration = Duration::from_secs(10);
/// How long after the peer's counters last moved the tunnel counts as active.
const ACTIVE_FOR: Duration = Duration::from_secs(1);
/// Probe send times remembered per (path, address), for the echoes.
const SENT_RING: usize = 64;
/// How often aggregate mode's shares are rebalanced, at most: no more often than a path
/// is probed either, so that each step sees a new sample.
pub const REBALANCE: Duration = Duration::from_millis(100);
/// The replay window a striped path's lag must stay within (the kernel's, and ours).
const REPLAY_WINDOW: u64 = 8128;

/// Per-path options: `--priority`, `--weight`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PathOptions {
    /// Lower is preferred in failover mode (default: the path's place in the list).
    pub priority: Option<u32>,
    /// Share of striped traffic (default: balanced by queueing delay).
    pub weight: Option<f64>,
}

/// The monitor's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Probe rates and health thresholds.
    pub health: health::Config,
    /// Failover's hold time before returning to a recovered path.
    pub hold: Duration,
    /// The most a striped packet waits at the receiver for a gap to fill.
    pub reorder_cap: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            health: health::Config::default(),
            hold: scheduler::DEFAULT_HOLD,
            reorder_cap: reorder::DEFAULT_CAP,
        }
    }
}

/// What `mpwg up` sets about scheduling (`--mode`, `--probe-interval`, `--hold`,
/// `--reorder-cap`, `--small-udp`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scheduling {
    /// The mode; None: the config file's, else [`Mode::Duplicate`].
    pub mode: Option<Mode>,
    /// Probes, health, failover's hold, the reorder cap.
    pub settings: Settings,
    /// Adaptive mode: UDP packets of this many bytes or fewer are duplicated.
    pub small_udp: usize,
}

/// What `mpwg show` and the status report of one path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathReport {
    /// Health.
    pub state: State,
    /// When it last changed.
    pub since: Instant,
    /// Why it is down.
    pub reason: Option<Reason>,
    /// Smoothed round trip.
    pub srtt: Option<Duration>,
    /// Minimum round trip.
    pub min_rtt: Option<Duration>,
    /// Median round trip.
    pub p50: Option<Duration>,
    /// 99th percentile round trip.
    pub p99: Option<Duration>,
    /// Jitter.
    pub jitter: Option<Duration>,
    /// Loss, percent.
    pub loss_pct: Option<f64>,
    /// Goodput: bytes/s of the peer's data delivered through it (first copies, over the
    /// last second or so; probes and dropped duplicates do not count).
    pub goodput: f64,
    /// Striping weight in use.
    pub weight: f64,
    /// Failover priority in use.
    pub priority: u32,
    /// True if data goes on it now (duplicated, or striped onto).
    pub carries_data: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    tx_packets: u64,
    wins: u64,
    duplicates: u64,
    send_errors: u64,
    rx_bytes: u64,
}

struct PathMon {
    health: Health,
    quality: Quality,
    /// Share of striped traffic, when no weight is configured.
    share: f64,
    last: Counters,
    /// Probes sent on it since the last tick.
    probes: u64,
    /// (expected, arrived) copies since the last passive-loss sample.
    copies: (u64, u64),
}

struct ProbeTx {
    seq: u32,
    /// Which of them arrived, from the peer's echoes.
    fates: Fates,
    next_at: Instant,
    sent: [(u32, Option<Instant>); SENT_RING],
}

impl ProbeTx {
    fn sent_at(&self, seq: u32) -> Option<Instant> {
        let (s, at) = self.sent[seq as usize % SENT_RING];
        if s == seq {
            at
        } else {
            None
        }
    }
}

/// What a peer's probes to one of our (path, address) said last.
struct EchoSlot {
    path: PathId,
    addr: SocketAddr,
    peer_path: u8,
    seq: u32,
    received: u32,
    at: Instant,
    /// Which of the peer's probes arrived: the path's loss in its direction.
    fates: Fates,
}

impl EchoSlot {
    fn new(src: Source, p: &Probe, now: Instant) -> EchoSlot {
        let mut fates = Fates::default();
        fates.arrived(p.seq);
        EchoSlot {
            path: src.path,
            addr: src.addr,
            peer_path: p.path,
            seq: p.seq,
            received: 1,
            at: now,
            fates,
        }
    }
}

struct PeerMon {
    mpwg_at: Option<Instant>,
    flags: u8,
    bytes: (u64, u64),
    moved_at: Option<Instant>,
    tx: HashMap<(PathId, SocketAddr), ProbeTx>,
    slots: Vec<EchoSlot>,
}

impl PeerMon {
    fn is_mpwg(&self, now: Instant) -> bool {
        self.mpwg_at
            .is_some_and(|t| now.saturating_duration_since(t) < MPWG_TTL)
    }
}

#[derive(Default)]
struct Inner {
    paths: HashMap<PathId, PathMon>,
    peers: HashMap<Key, PeerMon>,
    failover: Failover,
    options: HashMap<String, PathOptions>,
    pps: f64,
    last_tick: Option<Instant>,
    last_passive: Option<Instant>,
    last_rebalance: Option<Instant>,
}

/// The path monitor. See the module documentation.
pub struct Monitor {
    settings: Mutex<Settings>,
    inner: Mutex<Inner>,
    /// What the senders read.
    pub schedule: Arc<Schedule>,
}

fn path_byte(id: PathId) -> u8 {
    (id % 255) as u8
}

impl Monitor {
    /// A monitor publishing to `schedule`.
    pub fn new(settings: Settings, schedule: Arc<Schedule>) -> Monitor {
        let mut inner = Inner::default();
        inner.failover.hold = settings.hold;
        Monitor {
            settings: Mutex::new(settings),
            inner: Mutex::new(inner),
            schedule,
        }
    }

    /// The settings.
    pub fn settings(&self) -> Settings {
        *self.settings.lock()
    }

    /// Sets the options of the path on interface `name` (`--priority`, `--weight`).
    pub fn set_path_options(&self, name: &str, opts: PathOptions) {
        self.inner.lock().options.insert(name.to_string(), opts);
    }

    /// The options of the path on interface `name`.
    pub fn path_options(&self, name: &str) -> PathOptions {
        self.inner
            .lock()
            .options
            .get(name)
            .copied()
            .unwrap_or_default()
    }

    /// What the monitor knows of path `id`.
    pub fn report(&self, id: PathId) -> Option<PathReport> {
        let inner = self.inner.lock();
        let m = inner.paths.get(&id)?;
        let plan = self.schedule.plan();
        let entry = plan.entry(id);
        let now = Instant::now();
        Some(PathReport {
            state: m.health.state(),
            since: m.health.since(),
            reason: m.health.reason(),
            srtt: m.quality.srtt(),
            min_rtt: m.quality.min_rtt(),
            p50: m.quality.rtt_quantile(0.5),
            p99: m.quality.rtt_quantile(0.99),
            jitter: m.quality.jitter(),
            loss_pct: m.quality.loss_pct(),
            goodput: m.quality.goodput(now),
            weight: entry.map_or(0.0, Entry::weight),
            priority: 0,
            carries_data: entry
                .is_some_and(|e| e.dup || (e.stripe && self.schedule.mode().stripes())),
        })
    }

    /// The state `mpwg show` and the status give `path`, and when it last changed: its
    /// link's state (`absent`, `down`) unless the link is up, else its health (`up`,
    /// `degraded`, `down`); the time is the later of the two changes.
    pub fn state_of(&self, path: &Path) -> (&'static str, Option<Instant>) {
        let (link, link_since) = path.state();
        if link != LinkState::Up {
            return (link.as_str(), link_since);
        }
        let health = self
            .inner
            .lock()
            .paths
            .get(&path.id)
            .map(|m| (m.health.state(), m.health.since()));
        match (health, link_since) {
            (None, since) => ("up", since),
            (Some((State::Up, _)), None) => ("up", None),
            (Some((h, at)), since) => (h.as_str(), Some(since.map_or(at, |s| s.max(at)))),
        }
    }

    /// Applies `--mode`, the probe interval and the other settings.
    pub fn configure(&self, s: &Scheduling) {
        self.schedule.set_mode(s.mode.unwrap_or_default());
        self.schedule.set_small_udp(s.small_udp);
        self.schedule.set_reorder_cap(s.settings.reorder_cap);
        *self.settings.lock() = s.settings;
    }

    /// A probe (the plaintext `plain`) from `peer` arrived at `src` at `now`.
    pub fn on_probe(&self, peer: &Arc<Peer>, src: Source, plain: &[u8], now: Instant) {
        let Ok(p) = Probe::decode(plain) else {
            tracing::debug!(peer = %peer.public_key.short(), "malformed mpwg message dropped");
            return;
        };
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let pm = peer_mon(&mut inner.peers, peer);
        if !pm.is_mpwg(now) {
            tracing::info!(peer = %peer.public_key.short(), "peer is mpwg: probing its paths");
        }
        pm.mpwg_at = Some(now);
        pm.flags = p.flags;
        match pm
            .slots
            .iter_mut()
            .find(|s| s.path == src.path && s.addr == src.addr)
        {
            Some(s) if s.peer_path == p.path && p.seq > s.seq => {
                let shift = p.seq - s.seq;
                s.received = if shift >= 32 { 0 } else { s.received << shift } | 1;
                s.seq = p.seq;
                s.at = now;
                s.fates.arrived(p.seq);
            }
            Some(s) if s.peer_path == p.path => {
                // An older probe overtaken by a newer one: mark it if it fits.
                let back = s.seq - p.seq;
                if back < 32 {
                    s.received |= 1 << back;
                }
                s.fates.arrived(p.seq);
            }
            Some(s) => *s = EchoSlot::new(src, &p, now),
            None => pm.slots.push(EchoSlot::new(src, &p, now)),
        }
        let sent = p.echo.and_then(|e| {
            let (key, at) = pm
                .tx
                .iter()
                .filter(|((path, _), _)| path_byte(*path) == e.path)
                .filter_map(|(key, tx)| tx.sent_at(e.seq).map(|t| (*key, t)))
                .max_by_key(|(_, t)| *t)?;
            if let Some(tx) = pm.tx.get_mut(&key) {
                tx.fates.report(e.seq, e.received);
            }
            Some((key.0, at, e))
        });
        if let Some(m) = inner.paths.get_mut(&src.path) {
            m.health.probe_received(p.interval, now);
        }
        if let Some((path, at, e)) = sent {
            if let Some(m) = inner.paths.get_mut(&path) {
                let rtt = now.saturating_duration_since(at).saturating_sub(e.delay);
                m.quality.record_rtt(rtt);
                m.health.echoed(at);
            }
        }
    }

    /// A hello trailer from `peer` arrived: it is mpwg.
    pub fn on_hello(&self, peer: &Arc<Peer>, now: Instant) {
        let mut inner = self.inner.lock();
        let pm = peer_mon(&mut inner.peers, peer);
        if !pm.is_mpwg(now) {
            tracing::info!(peer = %peer.public_key.short(), "peer is mpwg (hello): probing its paths");
        }
        pm.mpwg_at = Some(now);
    }

    /// One tick: counters, probes, health, the plan.
    pub fn tick(&self, paths: &Paths, device: &Device, now: Instant) {
        let settings = self.settings();
        let list: Vec<_> = paths.all().to_vec();
        let peers = device.peers();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let elapsed = inner
            .last_tick
            .map_or(TICK, |t| now.saturating_duration_since(t));
        inner.last_tick = Some(now);
        inner.paths.retain(|id, _| list.iter().any(|p| p.id == *id));
        inner
            .peers
            .retain(|k, _| peers.iter().any(|p| p.public_key == *k));

        // Peers: mpwg or not, active or idle.
        let mut any_unknown = false;
        let mut striping_peer = false;
        let mut duplicating_peer = false;
        let mut active = false;
        for peer in &peers {
            let pm = peer_mon(&mut inner.peers, peer);
            let bytes = (
                peer.tx_bytes.load(Ordering::Relaxed),
                peer.rx_bytes.load(Ordering::Relaxed),
            );
            if bytes != pm.bytes {
                pm.bytes = bytes;
                pm.moved_at = Some(now);
            }
            if pm.is_mpwg(now) {
                striping_peer |= pm.flags & probe::FLAG_STRIPING != 0;
                duplicating_peer |= pm.flags & probe::FLAG_DUPLICATE != 0;
                active |= pm
                    .moved_at
                    .is_some_and(|t| now.saturating_duration_since(t) < ACTIVE_FOR);
            } else {
                any_unknown = true;
            }
        }
        self.schedule.set_hello(any_unknown);
        let interval = if active {
            settings.health.active_interval
        } else {
            settings.health.idle_interval
        };

        // Paths: what their counters say.
        let mut delivered = 0u64;
        let mut sent_packets = 0u64;
        for path in &list {
            let m = inner.paths.entry(path.id).or_insert_with(|| PathMon {
                health: Health::new(settings.health, now),
                quality: Quality::default(),
                share: 0.0,
                last: Counters::default(),
                probes: 0,
                copies: (0, 0),
            });
            m.health.set_config(settings.health);
            let st = &path.stats;
            let c = Counters {
                tx_packets: st.tx_packets.load(Ordering::Relaxed),
                wins: st.wins.load(Ordering::Relaxed),
                duplicates: st.duplicates.load(Ordering::Relaxed),
                send_errors: st.send_errors.load(Ordering::Relaxed),
                rx_bytes: st.rx_bytes.load(Ordering::Relaxed),
            };
            let d = |a: u64, b: u64| a.saturating_sub(b);
            let (tx, errs) = (
                d(c.tx_packets, m.last.tx_packets),
                d(c.send_errors, m.last.send_errors),
            );
            let (wins, dups) = (d(c.wins, m.last.wins), d(c.duplicates, m.last.duplicates));
            if tx > 0 {
                m.health.send_result(true);
            } else if errs > 0 {
                m.health.send_result(false);
            }
            if tx > m.probes {
                m.health.data_sent(now);
            }
            if wins + dups > 0 {
                m.health.heard(now);
            }
            m.health.link(path.is_up());
            // The bytes of first copies: the path's received bytes in the share of its
            // packets that won (probes are not wins, and are few bytes). Zero when none
            // won, so an idle path's rate falls to zero.
            let rx = d(c.rx_bytes, m.last.rx_bytes);
            let won = match wins + dups {
                0 => 0,
                n => (u128::from(rx) * u128::from(wins) / u128::from(n)) as u64,
            };
            m.quality.record_delivered(won, now);
            m.copies.1 += wins + dups;
            delivered += wins;
            sent_packets += tx;
            m.probes = 0;
            m.last = c;
        }
        let rate = sent_packets as f64 / elapsed.as_secs_f64().max(1e-3);
        inner.pps = inner.pps * 0.9 + rate * 0.1;
        for m in inner.paths.values_mut() {
            m.copies.0 += delivered;
        }
        if inner
            .last_passive
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            inner.last_passive = Some(now);
            for m in inner.paths.values_mut() {
                if duplicating_peer {
                    m.quality.record_copies(m.copies.0, m.copies.1);
                } else {
                    m.quality.clear_passive_loss();
                }
                m.copies = (0, 0);
            }
        }

        // Probes to mpwg peers.
        let mtu = device.mtu();
        for peer in &peers {
            let Some(pm) = inner.peers.get_mut(&peer.public_key) else {
                continue;
            };
            if !pm.is_mpwg(now) {
                continue;
            }
            let Some(session) = peer.send_session(now) else {
                continue;
            };
            let mode = self.schedule.mode();
            let plan = self.schedule.plan();
            let mut flags = 0;
            if active {
                flags |= probe::FLAG_ACTIVE;
            }
            // Striping over one path (the others lossy or too late) keeps order: the
            // far end need not hold anything back, and holding costs a flow the hold
            // whenever a probe on a left-out path is lost.
            if mode.stripes() && plan.entries.iter().filter(|e| e.stripe).count() >= 2 {
                flags |= probe::FLAG_STRIPING;
            }
            if mode == Mode::Duplicate {
                flags |= probe::FLAG_DUPLICATE;
            }
            for path in &list {
                if !path.is_up() {
                    continue;
                }
                // A path that carries no data (failover's backups) is probed at the idle
                // rate: it costs a metered backup little, and nothing waits on it.
                let carries = plan
                    .entry(path.id)
                    .is_none_or(|e| e.dup || (e.stripe && mode.stripes()));
                let interval = if carries {
                    interval
                } else {
                    settings.health.idle_interval
                };
                let dests = peer
                    .endpoints
                    .lock()
                    .destinations(path.id, now, paths.window);
                for (dst, local) in dests.each() {
                    let tx = pm.tx.entry((path.id, dst)).or_insert_with(|| ProbeTx {
                        seq: 0,
                        fates: Fates::default(),
                        next_at: now,
                        sent: [(0, None); SENT_RING],
                    });
                    if now < tx.next_at {
                        continue;
                    }
                    tx.seq += 1;
                    tx.next_at = now + interval;
                    let echo = pm
                        .slots
                        .iter()
                        .find(|s| s.path == path.id && s.addr == dst)
                        .map(|s| Echo {
                            path: s.peer_path,
                            seq: s.seq,
                            delay: now.saturating_duration_since(s.at),
                            received: s.received,
                        });
                    let p = Probe {
                        flags,
                        path: path_byte(path.id),
                        seq: tx.seq,
                        echo,
                        interval,
                    };
                    let mut buf = [0u8; HEADROOM + PROBE_LEN + TAILROOM];
                    buf[HEADROOM..HEADROOM + PROBE_LEN].copy_from_slice(&p.encode());
                    let Ok(n) = session.seal(&mut buf, PROBE_LEN, mtu) else {
                        continue;
                    };
                    tx.sent[tx.seq as usize % SENT_RING] = (tx.seq, Some(now));
                    let ok = paths.send_to(
                        Source {
                            addr: dst,
                            path: path.id,
                            local,
                        },
                        &buf[..n],
                    );
                    if ok {
                        peer.count_tx(n);
                    }
                    if let Some(m) = inner.paths.get_mut(&path.id) {
                        m.probes += 1;
                        m.health.expect_probes(interval, now);
                    }
                }
            }
        }
        let any_mpwg = inner.peers.values().any(|p| p.is_mpwg(now));

        // Health.
        let plan = self.schedule.plan();
        let mode = self.schedule.mode();
        for path in &list {
            let Some(m) = inner.paths.get_mut(&path.id) else {
                continue;
            };
            if any_mpwg {
                let streams = inner.peers.values().flat_map(|pm| {
                    let out = pm.tx.iter().filter(|((p, _), _)| *p == path.id);
                    let inbound = pm.slots.iter().filter(|s| s.path == path.id);
                    out.map(|(_, tx)| (true, tx.fates.counts()))
                        .chain(inbound.map(|s| (false, s.fates.counts())))
                });
                let (out, inbound): (Vec<_>, Vec<_>) = streams.partition(|(o, _)| *o);
                m.quality.set_probe_loss(
                    quality::pooled_loss(out.into_iter().map(|(_, c)| c)),
                    quality::pooled_loss(inbound.into_iter().map(|(_, c)| c)),
                );
            } else {
                m.health.forget_probes();
                m.quality.clear_probe_loss();
            }
            let exclusive = mode == Mode::Failover
                && inner.failover.active() == Some(path.id as u64)
                && plan.entries.iter().filter(|e| e.dup).count() == 1;
            let loss = m.quality.settled_loss_pct();
            let from_down = m.health.state() == State::Down;
            let was_suspect = m.health.suspect();
            let ours = if plan.entry(path.id).is_none_or(|e| e.dup || e.stripe) {
                interval
            } else {
                settings.health.idle_interval
            };
            let changed = m.health.evaluate(now, any_mpwg, ours, exclusive, loss);
            if m.health.suspect() != was_suspect {
                // Debug only: a pause in a flow looks the same, and it is no event.
                tracing::debug!(
                    path = path.label(),
                    suspect = m.health.suspect(),
                    silent_ms = m
                        .health
                        .last_heard()
                        .map(|h| now.saturating_duration_since(h).as_millis()),
                    "path suspicion"
                );
            }
            if let Some(s) = changed {
                // The run of probe losses around an outage is the outage's, not the
                // path's: marked when it goes down, forgotten when it is back.
                for pm in inner.peers.values_mut() {
                    let txs = pm.tx.iter_mut().filter(|((p, _), _)| *p == path.id);
                    for (_, tx) in txs {
                        if s == State::Down {
                            tx.fates.went_down(tx.seq);
                        } else if from_down {
                            tx.fates.came_back(tx.seq + 1);
                        }
                    }
                    for slot in pm.slots.iter_mut().filter(|s| s.path == path.id) {
                        let newest = slot.fates.newest();
                        if s == State::Down {
                            slot.fates.went_down(newest);
                        } else if from_down {
                            slot.fates.came_back(newest + 1);
                        }
                    }
                }
                match m.health.reason() {
                    Some(r) => tracing::warn!(
                        path = path.label(),
                        "path {} is {s}: {}",
                        path.label(),
                        r.as_str()
                    ),
                    None => tracing::info!(path = path.label(), "path {} is {s}", path.label()),
                }
            }
        }

        // Aggregate mode's shares, among the paths that were striping candidates.
        if inner.last_rebalance.is_none_or(|t| {
            now.saturating_duration_since(t) >= REBALANCE.max(settings.health.active_interval)
        }) {
            inner.last_rebalance = Some(now);
            let ids: Vec<PathId> = plan
                .entries
                .iter()
                .filter(|e| e.stripe)
                .map(|e| e.id)
                .filter(|id| inner.paths.contains_key(id))
                .collect();
            // A path that just became a candidate starts with an average share.
            let known: Vec<f64> = ids
                .iter()
                .map(|id| inner.paths[id].share)
                .filter(|&s| s > 0.0)
                .collect();
            let average = if known.is_empty() {
                1.0
            } else {
                known.iter().sum::<f64>() / known.len() as f64
            };
            let mut shares: Vec<f64> = ids
                .iter()
                .map(|id| match inner.paths[id].share {
                    s if s > 0.0 => s,
                    _ => average,
                })
                .collect();
            let queueing: Vec<Option<Duration>> = ids
                .iter()
                .map(|id| {
                    // Above the 5th percentile, not the minimum: one echo matched to the
                    // wrong probe (or crossing to another path) would set the minimum
                    // below the path's base for good, and starve it.
                    let q = &inner.paths[id].quality;
                    Some(q.recent_rtt()?.saturating_sub(q.rtt_quantile(0.05)?))
                })
                .collect();
            scheduler::rebalance(&mut shares, &queueing);
            tracing::trace!(?ids, ?queueing, ?shares, "striping shares");
            for m in inner.paths.values_mut() {
                m.share = 0.0;
            }
            for (id, sh) in ids.iter().zip(shares) {
                if let Some(m) = inner.paths.get_mut(id) {
                    m.share = sh;
                }
            }
        }

        // The plan.
        let views: Vec<PathView> = list
            .iter()
            .enumerate()
            .take(scheduler::MAX_PATHS)
            .map(|(pos, path)| {
                let opts = inner.options.get(path.label()).copied().unwrap_or_default();
                let m = inner.paths.get(&path.id);
                PathView {
                    id: pos,
                    key: path.id as u64,
                    present: path.state().0 != LinkState::Absent,
                    state: m.map_or(State::Up, |m| m.health.state()),
                    since: m.map_or(now, |m| m.health.since()),
                    priority: opts.priority.unwrap_or(pos as u32),
                    srtt: m.and_then(|m| m.quality.srtt()),
                    weight: opts.weight.unwrap_or_else(|| m.map_or(1.0, |m| m.share)),
                    trial: m.is_some_and(|m| m.health.on_trial()),
                    suspect: m.is_some_and(|m| m.health.suspect()),
                }
            })
            .collect();
        inner.failover.hold = settings.hold;
        let dup = match mode {
            // Every path whose link is up, whatever its health says: a copy on a dead
            // path costs only its bandwidth, and it is how a path against a stock peer
            // is heard again once it is back.
            Mode::Duplicate => {
                scheduler::duplicate(list.iter().take(scheduler::MAX_PATHS).map(|p| p.is_up()))
            }
            Mode::Failover => inner.failover.choose(&views, now),
            // Control and interactive packets: every working path, degraded ones too
            // (lossy is not dead: a copy there still covers a cut of the others).
            Mode::Aggregate | Mode::Adaptive => scheduler::duplicate_set(&views),
        };
        let stripe = if mode.stripes() {
            scheduler::aggregate_set(&views, settings.reorder_cap, inner.pps, REPLAY_WINDOW)
        } else {
            Default::default()
        };
        let shape: Vec<(PathId, bool, bool)> = views
            .iter()
            .map(|v| (list[v.id].id, dup.contains(v.id), stripe.contains(v.id)))
            .collect();
        if plan.same_shape(&shape) {
            plan.set_weights(views.iter().map(|v| v.weight));
        } else {
            tracing::debug!(?shape, "plan: (path, duplicated, striped)");
            self.schedule.publish(Plan {
                entries: shape
                    .iter()
                    .zip(&views)
                    .map(|(&(id, d, s), v)| Entry::new(id, d, s, v.weight))
                    .collect(),
            });
        }

        // The receive side's reorder hold, for peers that stripe.
        let hold = striping_peer.then(|| {
            let rtts: Vec<Duration> = views
                .iter()
                .filter(|v| v.state == State::Up)
                .filter_map(|v| v.srtt)
                .collect();
            let spread = match (rtts.iter().min(), rtts.iter().max()) {
                (Some(lo), Some(hi)) => Some((*hi - *lo) / 2),
                _ => None,
            };
            let jitter = inner
                .paths
                .values()
                .filter_map(|m| m.quality.jitter())
                .max()
                .unwrap_or_default();
            reorder::hold_for(spread, jitter, None, settings.reorder_cap)
        });
        self.schedule.set_reorder_hold(hold);
        // Aggregate mode evens out the paths' delays at the receive side too (see
        // `Reorder::push_paced`); adaptive mode does not, for its interactive copies.
        let delays = if striping_peer && mode == Mode::Aggregate {
            let rtts: Vec<(PathId, Duration)> = views
                .iter()
                .filter(|v| v.state == State::Up)
                .filter_map(|v| Some((list[v.id].id, v.srtt?)))
                .collect();
            reorder::equalizing_delays(&rtts, settings.reorder_cap)
        } else {
            Vec::new()
        };
        self.schedule.set_path_delays(delays);
    }

    /// The priority the plan gives path `name` at position `pos`.
    pub fn priority_of(&self, name: &str, pos: usize) -> u32 {
        self.path_options(name).priority.unwrap_or(pos as u32)
    }

    /// Runs the monitor until `life` says the tunnel stops.
    pub fn run(&self, paths: &Paths, device: &Device, life: &Lifecycle) {
        while !life.is_stopping() {
            self.tick(paths, device, Instant::now());
            std::thread::sleep(TICK);
        }
    }
}

fn peer_mon<'a>(peers: &'a mut HashMap<Key, PeerMon>, peer: &Arc<Peer>) -> &'a mut PeerMon {
    peers.entry(peer.public_key).or_insert_with(|| PeerMon {
        mpwg_at: None,
        flags: 0,
        bytes: (0, 0),
        moved_at: None,
        tx: HashMap::new(),
        slots: Vec::new(),
    })
}
