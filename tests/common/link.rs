//! The link emulator's forwarder: per-path, per-direction delay, jitter, loss and rate
//! for a kernel that has no netem (nor fq), on a TUN device per path in a router
//! namespace.
//!
//! One implementation, two users: the lab of the tests (`super::emulator::RoutedLab`,
//! which builds the namespaces around it) and `examples/link_emulator.rs`, the same
//! forwarder as a process for `scripts/bench.sh --modes` (which includes this file by
//! its path). So this file needs nothing but std and libc.
//!
//! # What a link does ([`Link`])
//!
//! Per path and direction, set at any time with [`Emulator::set`]:
//! - `loss_pct`: each packet dropped with that probability;
//! - `rate_mbit`: a serialisation rate; a packet departs when the link has sent the
//!   ones before it, and is dropped (tail drop) if that is more than `queue` away, as
//!   `tc tbf ... latency` would;
//! - `delay` and `jitter`: after departure, each packet is held `delay` plus a uniform
//!   random amount in `[0, jitter]`; releases never overtake each other (no reordering
//!   within a link, unlike netem's jitter), which is what a real queueing link does.
//!
//! Timing granularity is ppoll(2)'s (tens of microseconds). Packets are IPv4 only.
//!
//! # The router's plumbing ([`router_plumbing`])
//!
//! In the router, the interfaces of path P are `raP` (towards A, 10.N.P.254/24) and
//! `rbP` (towards B, 10.N.(10+P).254/24); A is 10.N.P.1 and B 10.N.(10+P).2 on it.
//! Policy routing by input interface sends everything that arrives on `raP` or `rbP`
//! into the TUN `emuP`; what the forwarder writes back into `emuP` is routed out of
//! `raP` (to A's ranges) or `rbP` (to B's), so paths stay disjoint.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest a forwarder waits for a packet before it looks at its stop flag again.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// One direction of one emulated link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Propagation delay.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Random loss, percent.
    pub loss_pct: f64,
    /// Rate limit, Mbit/s (None: unlimited).
    pub rate_mbit: Option<f64>,
    /// Longest queue before tail drop, with a rate limit.
    pub queue: Duration,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss_pct: 0.0,
            rate_mbit: None,
            queue: Duration::from_millis(50),
        }
    }
}

impl Link {
    /// A link with a delay and nothing else.
    pub fn delay_ms(ms: u64) -> Link {
        Link {
            delay: Duration::from_millis(ms),
            ..Link::default()
        }
    }
}

/// A direction across the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From A to B.
    AtoB,
    /// From B to A.
    BtoA,
}

impl Dir {
    /// The direction of an IPv4 packet in lab `net`: towards A if its destination is one
    /// of A's path subnets (10.N.P.0/24 with P below 10).
    fn of(packet: &[u8], net: u8) -> Dir {
        match packet.get(16..20) {
            Some(&[10, n, p, _]) if n == net && p < 10 => Dir::BtoA,
            _ => Dir::AtoB,
        }
    }

    fn index(self) -> usize {
        match self {
            Dir::AtoB => 0,
            Dir::BtoA => 1,
        }
    }
}

/// What one direction of a link did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets written back (delivered onwards).
    pub forwarded: AtomicU64,
    /// Dropped by random loss.
    pub lost: AtomicU64,
    /// Dropped because the rate limit's queue was full.
    pub overflow: AtomicU64,
}

struct Shared {
    net: u8,
    links: Mutex<Vec<[Link; 2]>>,
    counters: Vec<[Counters; 2]>,
    stop: AtomicBool,
}

/// The emulator's threads, one per path; stopped (and their TUNs closed) on drop.
pub struct Emulator {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Emulator {
    /// An emulator for `paths` paths of lab `net` (which decides the directions, see
    /// [`Dir`]), every link transparent, no path forwarding yet.
    pub fn new(net: u8, paths: usize) -> Emulator {
        Emulator {
            shared: Arc::new(Shared {
                net,
                links: Mutex::new(vec![[Link::default(); 2]; paths]),
                counters: (0..paths).map(|_| Default::default()).collect(),
                stop: AtomicBool::new(false),
            }),
            threads: Vec::new(),
        }
    }

    /// Starts forwarding path `p` (from 1) through `tun` (its `emuP`, from
    /// [`open_tun`]), on a thread of its own.
    pub fn start(&mut self, p: usize, tun: File) {
        let shared = self.shared.clone();
        self.threads.push(
            thread::Builder::new()
                .name(format!("emulator-{p}"))
                .spawn(move || run(shared, p, tun))
                .expect("spawning the emulator"),
        );
    }

    /// Sets path `p`'s (from 1) link in direction `dir`.
    pub fn set(&self, p: usize, dir: Dir, link: Link) {
        self.shared.links.lock().unwrap()[p - 1][dir.index()] = link;
    }

    /// Sets path `p`'s link in both directions.
    pub fn set_both(&self, p: usize, link: Link) {
        self.set(p, Dir::AtoB, link);
        self.set(p, Dir::BtoA, link);
    }

    /// Path `p`'s counters in direction `dir`.
    pub fn counters(&self, p: usize, dir: Dir) -> &Counters {
        &self.shared.counters[p - 1][dir.index()]
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags, padded to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Opens a TUN device `name` (no packet information header) in the calling thread's
/// namespace.
pub fn open_tun(name: &str) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .unwrap_or_else(|e| panic!("open /dev/net/tun: {e}"));
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads a `struct ifreq` (40 bytes, name then flags), which `req`
    // is laid out as, and which lives across the call; the descriptor is ours.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    assert_eq!(
        rc,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    file
}

/// Packets of one direction waiting for their release.
#[derive(Default)]
struct Queue {
    packets: VecDeque<(Instant, Vec<u8>)>,
    /// When the rate-limited link finishes sending what it has.
    busy_until: Option<Instant>,
    last_release: Option<Instant>,
}

fn run(shared: Arc<Shared>, p: usize, mut tun: File) {
    let mut rng = Rng::new(0x5eed_0000 + p as u64);
    let mut queues = [Queue::default(), Queue::default()];
    let mut buf = vec![0u8; 65536];
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let next = queues
            .iter()
            .filter_map(|q| q.packets.front().map(|(t, _)| *t))
            .min();
        // To the microsecond (ppoll), not poll(2)'s millisecond: with a release due in
        // under a millisecond, poll(2) would be given 0 and the thread would spin
        // (measured over `aggregate_over_paths_of_different_delay`, test process and
        // its children: 1.09 CPU seconds per second with poll(2), 0.49-0.55 with ppoll;
        // on a 2-core machine that spin was taken from the tunnel's ends).
        let wait = next.map_or(IDLE_WAIT, |t| {
            t.saturating_duration_since(now).min(IDLE_WAIT)
        });
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: ppoll(2) on one pollfd and a timespec that live across the call, with
        // no signal mask.
        unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        loop {
            match tun.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let now = Instant::now();
                    let dir = Dir::of(&buf[..n], shared.net);
                    let link = shared.links.lock().unwrap()[p - 1][dir.index()];
                    let counters = &shared.counters[p - 1][dir.index()];
                    let q = &mut queues[dir.index()];
                    if link.loss_pct > 0.0
                        && (rng.next_u64() % 1_000_000) as f64 / 10_000.0 < link.loss_pct
                    {
                        counters.lost.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let departs = match link.rate_mbit {
                        Some(rate) => {
                            let start = q.busy_until.map_or(now, |b| b.max(now));
                            if start.saturating_duration_since(now) > link.queue {
                                counters.overflow.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            let send = Duration::from_secs_f64(n as f64 * 8.0 / (rate * 1e6));
                            q.busy_until = Some(start + send);
                            start + send
                        }
                        None => now,
                    };
                    let jitter = if link.jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        let us = link.jitter.as_micros() as u64;
                        Duration::from_micros(rng.next_u64() % (us + 1))
                    };
                    let mut release = departs + link.delay + jitter;
                    if let Some(last) = q.last_release {
                        release = release.max(last);
                    }
                    q.last_release = Some(release);
                    q.packets.push_back((release, buf[..n].to_vec()));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        let now = Instant::now();
        for (d, q) in queues.iter_mut().enumerate() {
            while q.packets.front().is_some_and(|(t, _)| *t <= now) {
                let (_, pkt) = q.packets.pop_front().unwrap();
                // A full TUN queue drops, as a full link would.
                if tun.write(&pkt).is_ok() {
                    shared.counters[p - 1][d]
                        .forwarded
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A deterministic pseudo-random generator (xorshift64*): the loss and jitter draws
/// (seeded per path, so a run is repeatable), and the tests' payloads and garbage
/// (`tests/common` adds its helpers to it). It lives here so that this file, which
/// `examples/link_emulator.rs` includes by its path, stands alone.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is made odd).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The commands (argv, to run in the router's namespace) that plumb path `p` (from 1)
/// of `paths` in lab `net` through its TUN `emuP`, once `emuP`, `raP` and `rbP` exist
/// (see the module documentation): the TUN up, no reverse-path filter nor redirects,
/// the policy rules and routes.
pub fn router_plumbing(net: u8, p: usize, paths: usize) -> Vec<Vec<String>> {
    let argv = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let (emu, ra, rb) = (format!("emu{p}"), format!("ra{p}"), format!("rb{p}"));
    let (a_addr, b_addr) = (format!("10.{net}.{p}.1"), format!("10.{net}.{}.2", 10 + p));
    let mut cmds = vec![argv(&["ip", "link", "set", &emu, "mtu", "1500", "up"])];
    for scope in [&emu, &ra, &rb] {
        for (key, value) in [("rp_filter", "0"), ("send_redirects", "0")] {
            let kv = format!("net.ipv4.conf.{scope}.{key}={value}");
            cmds.push(argv(&["sysctl", "-q", "-w", &kv]));
        }
    }
    let (into, out) = ((10 + p).to_string(), (20 + p).to_string());
    cmds.push(argv(&[
        "ip", "route", "add", "default", "dev", &emu, "table", &into,
    ]));
    for iif in [&ra, &rb] {
        cmds.push(argv(&[
            "ip", "rule", "add", "iif", iif, "table", &into, "pref", &into,
        ]));
    }
    cmds.push(argv(&[
        "ip", "rule", "add", "iif", &emu, "table", &out, "pref", &out,
    ]));
    for sub in 1..=paths {
        let (to_a, to_b) = (
            format!("10.{net}.{sub}.0/24"),
            format!("10.{net}.{}.0/24", 10 + sub),
        );
        for (dst, gw, dev) in [(&to_a, &a_addr, &ra), (&to_b, &b_addr, &rb)] {
            cmds.push(argv(&[
                "ip", "route", "add", dst, "via", gw, "dev", dev, "onlink", "table", &out,
            ]));
        }
    }
    cmds
}
