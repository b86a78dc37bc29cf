//! Which paths a packet leaves by. Pure: it sees each path's health, priority, round
//! trip and weight, never a socket.
//!
//! - **duplicate** (the default): every packet on every working path (`up` or
//!   `degraded`); the far end keeps the first copy.
//! - **failover**: every packet on one path, the best working one: lowest priority
//!   number, then lowest round trip. A path that stops working is left at once; a better
//!   one that recovers is taken back only once it has been `up` for the hold time, so a
//!   flapping primary does not drag traffic back and forth ([`Failover`]).
//! - **aggregate**: packets striped over the `up` paths in proportion to their weights
//!   (configured, or shares balanced for equal queueing delay, which under load is
//!   their capacity: [`rebalance`]), chunk by chunk ([`stripe`]); a path
//!   whose one-way delay exceeds the fastest one's by more than the receiver's reorder
//!   cap, or whose lag would overrun the replay window, is left out ([`aggregate_set`]).
//! - **adaptive**: small and latency-sensitive packets ([`classify`]) duplicated as in
//!   duplicate mode, bulk striped as in aggregate mode.
//!
//! If no path works (netlink may be stale, or every link flapped at once), every present
//! path is tried, so that a wrong state never silences the tunnel.

use std::time::{Duration, Instant};

use crate::multipath::health::State;
use crate::multipath::path::PathId;

/// The most paths a tunnel can have (the width of [`PathSet`]).
pub const MAX_PATHS: usize = 64;

/// A set of paths, by id, without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathSet(u64);

impl PathSet {
    /// Adds path `id` (ids from [`MAX_PATHS`] on are ignored).
    pub fn insert(&mut self, id: PathId) {
        if id < MAX_PATHS {
            self.0 |= 1 << id;
        }
    }

    /// True if path `id` is in the set.
    pub fn contains(&self, id: PathId) -> bool {
        id < MAX_PATHS && self.0 & (1 << id) != 0
    }

    /// True if the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The ids in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = PathId> {
        let bits = self.0;
        (0..MAX_PATHS).filter(move |i| bits & (1 << i) != 0)
    }
}

/// The paths a packet goes out on in duplicate mode, given whether each path (by id, in
/// order) is up: every path that is up; if none is, every path.
pub fn duplicate(up: impl IntoIterator<Item = bool>) -> PathSet {
    let (mut live, mut all) = (PathSet::default(), PathSet::default());
    for (id, is_up) in up.into_iter().enumerate() {
        all.insert(id);
        if is_up {
            live.insert(id);
        }
    }
    if live.is_empty() {
        all
    } else {
        live
    }
}

/// How a tunnel spreads packets over its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Mode {
    /// Every packet on every working path.
    #[default]
    Duplicate,
    /// Every packet on the best working path.
    Failover,
    /// Packets striped over the working paths by capacity or weight.
    Aggregate,
    /// Small and latency-sensitive packets duplicated, bulk striped.
    Adaptive,
}

impl Mode {
    /// Every mode, in the order the help lists them.
    pub const ALL: [Mode; 4] = [
        Mode::Duplicate,
        Mode::Failover,
        Mode::Aggregate,
        Mode::Adaptive,
    ];

    /// The mode's name on the command line and in `mpwg show`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Duplicate => "duplicate",
            Mode::Failover => "failover",
            Mode::Aggregate => "aggregate",
            Mode::Adaptive => "adaptive",
        }
    }

    /// True if the mode stripes data, so that the receiver should reorder.
    pub fn stripes(self) -> bool {
        matches!(self, Mode::Aggregate | Mode::Adaptive)
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?}: use duplicate, failover, aggregate or adaptive")]
pub struct UnknownMode(pub String);

impl std::str::FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

/// What the scheduler knows of one path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathView {
    /// The path's place in the list now: what the [`PathSet`]s returned name.
    pub id: PathId,
    /// The path's identity, which stays when other paths are added or removed and is
    /// never given to another path (the tunnel's own path id): what failover follows.
    pub key: u64,
    /// False if its interface does not exist now (`absent`): never used.
    pub present: bool,
    /// Its health.
    pub state: State,
    /// When its health last changed.
    pub since: Instant,
    /// Lower is preferred in failover mode (by default, the path's place in the list).
    pub priority: u32,
    /// Smoothed round trip, if measured.
    pub srtt: Option<Duration>,
    /// Share of striped traffic (bytes/s of capacity, or a configured weight).
    pub weight: f64,
    /// On trial against a stock peer: gets copies in failover mode.
    pub trial: bool,
    /// Silent for longer than its usual gaps (see [`crate::multipath::health::Health::suspect`]):
    /// in failover mode, while the active path is suspect the best other path gets copies.
    pub suspect: bool,
}

fn set_of<'a>(paths: impl IntoIterator<Item = &'a PathView>) -> PathSet {
    let mut s = PathSet::default();
    for p in paths {
        s.insert(p.id);
    }
    s
}

/// Every present path (the last resort).
pub fn present(paths: &[PathView]) -> PathSet {
    set_of(paths.iter().filter(|p| p.present))
}

/// The paths that work: the `up` ones, else the `degraded` ones; empty if none.
pub fn healthy(paths: &[PathView]) -> PathSet {
    let up = set_of(paths.iter().filter(|p| p.present && p.state == State::Up));
    if up.is_empty() {
        set_of(
            paths
                .iter()
                .filter(|p| p.present && p.state == State::Degraded),
        )
    } else {
        up
    }
}

/// Duplicate mode: every present path that is `up` or `degraded`; if none, every present
/// path.
pub fn duplicate_set(paths: &[PathView]) -> PathSet {
    let working = set_of(paths.iter().filter(|p| p.present && p.state != State::Down));
    if working.is_empty() {
        present(paths)
    } else {
        working
    }
}

fn rank(p: &PathView) -> (u32, Duration) {
    (p.priority, p.srtt.unwrap_or(Duration::MAX))
}

/// Failover mode's memory: the path in use (by [`PathView::key`], so that adding or
/// removing another path, which moves the places in the list, never moves the data),
/// and the hold time against flapping.
#[derive(Debug, Clone)]
pub struct Failover {
    active: Option<u64>,
    /// How long a better path must have been `up` before traffic returns to it.
    pub hold: Duration,
}

/// Failover's default hold time.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(3);

impl Default for Failover {
    fn default() -> Self {
        Failover {
            active: None,
            hold: DEFAULT_HOLD,
        }
    }
}

impl Failover {
    /// The path in use (its [`PathView::key`]), as of the last [`Failover::choose`].
    pub fn active(&self) -> Option<u64> {
        self.active
    }

    /// Where data goes as of `now`: the active path, and paths on trial, and while the
    /// active path is suspect the best other working path; every present path if none
    /// works.
    pub fn choose(&mut self, paths: &[PathView], now: Instant) -> PathSet {
        let good = healthy(paths);
        let best = paths
            .iter()
            .filter(|p| good.contains(p.id))
            .min_by_key(|p| rank(p));
        let current = self
            .active
            .and_then(|a| paths.iter().find(|p| p.key == a && good.contains(p.id)));
        let chosen = match (current, best) {
            (_, None) => None,
            (None, Some(b)) => Some(b),
            (Some(c), Some(b)) => {
                let better = b.priority < c.priority;
                let settled =
                    b.state == State::Up && now.saturating_duration_since(b.since) >= self.hold;
                Some(if better && settled { b } else { c })
            }
        };
        self.active = chosen.map(|p| p.key);
        let Some(a) = chosen else {
            return present(paths);
        };
        let mut s = set_of(paths.iter().filter(|p| p.present && p.trial));
        s.insert(a.id);
        if a.suspect {
            // A lossy backup covers a cut too: `up` ones first, then `degraded`.
            let cover = paths
                .iter()
                .filter(|p| p.id != a.id && p.present && p.state != State::Down)
                .min_by_key(|p| (p.state != State::Up, rank(p)));
            if let Some(c) = cover {
                s.insert(c.id);
            }
        }
        s
    }
}

/// Aggregate mode's paths: the working ones (see [`healthy`]) less those that would
/// arrive too late to be put back in order: a one-way delay (half the round trip) more
/// than `reorder_cap` beyond the fastest path's, or a lag that at `pps` packets per
/// second would span more than half of a replay window of `window` packets. Every
/// present path if none works.
pub fn aggregate_set(paths: &[PathView], reorder_cap: Duration, pps: f64, window: u64) -> PathSet {
    let good = healthy(paths);
    if good.is_empty() {
        return present(paths);
    }
    let fastest = paths
        .iter()
        .filter(|p| good.contains(p.id))
        .filter_map(|p| p.srtt)
        .min();
    let Some(fastest) = fastest else {
        return good;
    };
    let max_lag = Duration::from_secs_f64((window as f64 / 2.0) / pps.max(1.0)).min(reorder_cap);
    set_of(paths.iter().filter(|p| {
        good.contains(p.id)
            && p.srtt
                .is_none_or(|s| s.saturating_sub(fastest) / 2 <= max_lag)
    }))
}

/// Striping: the path of `set` that the next `bytes` should take, the one furthest
/// behind its share: the least `(sent + bytes) / weight`, where `sent(id)` is what the
/// path was given since the set last changed and `weight(id)` its share. None if the set
/// is empty.
pub fn stripe(
    set: PathSet,
    bytes: u64,
    sent: impl Fn(PathId) -> u64,
    weight: impl Fn(PathId) -> f64,
) -> Option<PathId> {
    set.iter()
        .map(|id| (id, (sent(id) + bytes) as f64 / usable_weight(weight(id))))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(id, _)| id)
}

/// Bytes waiting on this machine for a path's interface (its socket's unsent bytes,
/// which the kernel counts at their buffers' size, a little over a datagram's length)
/// above which the path counts as queueing here: about two striped chunks. Under it,
/// what waits is the send in progress, and striping follows the shares.
pub const LOCAL_QUEUE: u64 = 32 * 1024;

/// Striping when a queue on this machine is in front of some path (a local shaper, or
/// an uplink slower than what is offered): the path of `set` with the least `queued(id)`
/// (bytes waiting here, None if not known) per unit of `weight(id)` (its share), so
/// that the local queues stay level in time, and one path's queue does not overflow
/// while another's is empty. None (stripe by the shares, [`stripe`]) while no candidate
/// has more than [`LOCAL_QUEUE`] waiting, or if a candidate's queue is not known: the
/// shares are made for queues that are elsewhere, which only probes can see.
///
/// A queue that overflows drops the whole datagram batch that arrives at it (a GSO
/// send is one unit to the queue): measured on 40+40 Mbit/s tbf paths of 10 ms and
/// 40 ms, the drops of both paths' queues while striping by the shares alone were
/// almost all of TCP's retransmits.
pub fn stripe_by_queue(
    set: PathSet,
    queued: impl Fn(PathId) -> Option<u64>,
    weight: impl Fn(PathId) -> f64,
) -> Option<PathId> {
    let mut best: Option<(PathId, f64)> = None;
    let mut full = false;
    for id in set.iter() {
        let q = queued(id)?;
        full |= q > LOCAL_QUEUE;
        let t = q as f64 / usable_weight(weight(id));
        if best.is_none_or(|(_, b)| t < b) {
            best = Some((id, t));
        }
    }
    best.filter(|_| full).map(|(id, _)| id)
}

/// A share fit to divide by: a zero, negative or broken one counts as almost nothing.
fn usable_weight(w: f64) -> f64 {
    if w.is_finite() && w > 0.0 {
        w
    } else {
        1e-9
    }
}

/// The least share of striped traffic a path keeps while it is a candidate: enough to
/// keep measuring it.
pub const MIN_SHARE: f64 = 0.03;

/// Aggregate mode's shares without configured weights: moves `shares` (one per
/// candidate path, summing to 1) towards equal queueing delay on every path, the
/// `queueing` (recent round trip less the path's base) each path shows. A path whose
/// queue is longer than the average gets less, one that is shorter more: by 5% per call
/// for a difference of up to [`STEP_QUEUE`], by up to 20% for four times that (a path
/// overflowing while another idles, as when a transfer starts on a 40+8 Mbit/s pair at
/// even shares: left at 5%, it took 2.5 s and about 1200 drops to settle). Differences
/// under 2 ms, or under 40% of the average, change nothing: a lightly loaded slow link
/// shows a few milliseconds of serialization behind each burst it is given, and acting
/// on that starved it (measured: 19% of a 40+8 pair's traffic drifting down to 6%,
/// goodput from 1.05 to 0.92 times the fast path's). When the paths are full, equal
/// queues means shares in proportion to their capacities; when none is, the shares stay
/// put. A path with no measurement keeps its share.
///
/// Why not an estimate of each path's capacity: striping decides what each path is
/// offered, so a sender-side estimate sees its own decision; feedback loops of that kind
/// starve one path (measured: a 40+40 Mbit/s pair settled at 36/64). Queues are what
/// overflows, so queues are what is balanced.
pub fn rebalance(shares: &mut [f64], queueing: &[Option<Duration>]) {
    let n = shares.len().min(queueing.len());
    if n == 0 {
        return;
    }
    let known: Vec<f64> = queueing[..n]
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64())
        .collect();
    if known.len() >= 2 {
        let mean = known.iter().sum::<f64>() / known.len() as f64;
        let deadband = (0.4 * mean).max(0.002);
        let unit = STEP_QUEUE.as_secs_f64();
        for i in 0..n {
            let Some(q) = queueing[i] else { continue };
            let d = mean - q.as_secs_f64();
            if d.abs() < deadband {
                continue;
            }
            shares[i] *= 1.0 + 0.05 * d.signum() * (d.abs() / unit).clamp(1.0, 4.0);
        }
    }
    for s in shares[..n].iter_mut() {
        if !s.is_finite() || *s < MIN_SHARE {
            *s = MIN_SHARE;
        }
    }
    let total: f64 = shares[..n].iter().sum();
    for s in shares[..n].iter_mut() {
        *s /= total;
    }
}

/// [`rebalance`]'s unit: a path this far from the average queue moves by 5%.
pub const STEP_QUEUE: Duration = Duration::from_millis(4);

/// What kind of packet this is, for adaptive mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Small or latency-sensitive: duplicated.
    Interactive,
    /// Striped.
    Bulk,
}

/// Adaptive mode's default: UDP packets of this many bytes or fewer (IP header
/// included) are interactive (VoIP frames, games, QUIC acknowledgements).
pub const DEFAULT_SMALL_UDP: usize = 200;

/// Classifies an IP packet: TCP without payload (acknowledgements, SYN, FIN), DNS (UDP
/// port 53 either way), ICMP and ICMPv6, and UDP of `small_udp` bytes or fewer are
/// interactive; the rest, and anything that cannot be parsed, is bulk unless it is too
/// short to be anything else.
pub fn classify(ip: &[u8], small_udp: usize) -> Traffic {
    let Some((proto, l4, total)) = transport(ip) else {
        return Traffic::Interactive;
    };
    match proto {
        1 | 58 => Traffic::Interactive,
        6 if tcp_without_payload(l4) => Traffic::Interactive,
        6 => Traffic::Bulk,
        17 => {
            let port = |i: usize| l4.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
            if port(0) == Some(53) || port(2) == Some(53) || total <= small_udp {
                Traffic::Interactive
            } else {
                Traffic::Bulk
            }
        }
        _ => Traffic::Bulk,
    }
}

/// True for a TCP packet without payload (an acknowledgement, SYN, FIN or RST): what
/// aggregate mode duplicates rather than stripes, so that a flow's acknowledgements
/// take the fastest path.
pub fn is_tcp_control(ip: &[u8]) -> bool {
    matches!(transport(ip), Some((6, l4, _)) if tcp_without_payload(l4))
}

/// True for a TCP acknowledgement that carries nothing else: no payload, and no SYN
/// (a FIN or RST counts). The receive side does not delay these to the slowest path's
/// delay in aggregate mode, so that a flow's acknowledgements keep the fastest path's
/// delay; a SYN or SYN-ACK is delayed like data, so that the handshake's round trip,
/// which a delay-based sender (BBR) takes as the flow's least, is the round trip that
/// data will see (see [`crate::multipath::reorder::Reorder::push_paced`]).
pub fn is_tcp_ack_only(ip: &[u8]) -> bool {
    matches!(transport(ip), Some((6, l4, _))
        if tcp_without_payload(l4) && l4.get(13).is_none_or(|flags| flags & TCP_SYN == 0))
}

/// The SYN bit of a TCP header's flags byte.
const TCP_SYN: u8 = 0x02;

/// True if the TCP segment `l4` (header and payload) carries no payload: nothing past
/// its data offset (20 bytes when the header is too short to say).
fn tcp_without_payload(l4: &[u8]) -> bool {
    let doff = l4.get(12).map_or(20, |b| usize::from(b >> 4) * 4);
    l4.len() <= doff
}

/// (protocol, transport header and payload, IP length) of an IPv4 or IPv6 packet; for
/// IPv6, only when the next header is the transport (no extension headers).
fn transport(ip: &[u8]) -> Option<(u8, &[u8], usize)> {
    match ip.first()? >> 4 {
        4 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
            // A later fragment has no transport header.
            let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            if ihl < 20 || total < ihl || frag_offset != 0 {
                return Some((0, &[], total));
            }
            Some((ip[9], &ip[ihl..total], total))
        }
        6 if ip.len() >= 40 => {
            let total = (40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))).min(ip.len());
            Some((ip[6], &ip[40..total], total))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
