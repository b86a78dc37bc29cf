//! The link emulator: per-path, per-direction delay, jitter, loss and rate, for a
//! kernel that has no netem (nor fq).
//!
//! # Topology ([`RoutedLab`])
//!
//! ```text
//!   A                      R (router)                         B
//!   aP 10.N.P.1/24 --- raP 10.N.P.254   rbP 10.N.(10+P).254 --- bP 10.N.(10+P).2/24
//!                            \              /
//!                             emuP (a TUN, read and written by the test process)
//! ```
//!
//! One veth from A to the router and one from the router to B per path P (1, 2, ...).
//! In R, policy routing by input interface sends everything that arrives on `raP` or
//! `rbP` into the TUN `emuP`; the emulator thread of path P reads it, decides its fate
//! under the link settings of its direction (towards A if its destination is in one of
//! A's path subnets, else towards B: see [`Dir::of`]), and writes
//! it back into `emuP` at its release time; what comes out of `emuP` is routed out of
//! `raP` (to A's ranges) or `rbP` (to B's). Paths stay disjoint whatever the
//! addresses: what A sends on path P reaches B on path P, and back. A and B each have a
//! default route per path (metric P, as on a multi-WAN box, for SO_BINDTODEVICE
//! lookups) and a route to each of the far end's path subnets through the same path.
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
//! Timing granularity is poll(2)'s millisecond. Packets are IPv4 only. The emulator
//! runs in the test process (one thread per path), so a test's CPU budget includes it:
//! on this 2-core machine it forwards about 100 Mbit/s per path comfortably.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{veth, Impl, Netns, Pair, Rng};

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
fn open_tun(name: &str) -> File {
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
        let wait_ms = match next {
            Some(t) => t.saturating_duration_since(now).as_millis().min(20) as i32,
            None => 20,
        };
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd that lives across the call.
        unsafe { libc::poll(&mut pfd, 1, wait_ms) };
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

/// A with `paths` uplinks to a router R, R with as many links to B, an emulator on every
/// path (see the module documentation). Starts with every link transparent.
pub struct RoutedLab {
    pub a: Netns,
    pub b: Netns,
    pub router: Router,
    pub net: u8,
    pub paths: usize,
}

/// The router namespace and its emulator. Field order: the emulator's threads stop
/// before the namespace goes.
pub struct Router {
    pub emu: Emulator,
    pub ns: Netns,
}

impl Router {
    /// Cuts path `p` silently: everything in and out of the router's A-side interface
    /// `raP` dropped by nft (one transaction, both directions at once). Every link
    /// stays up, so neither end can know but by what stops arriving.
    pub fn cut(&self, p: usize) {
        super::nft(
            &self.ns,
            &format!(
                "table netdev cut_{p} {{\n\
                 \x20 chain in {{ type filter hook ingress device \"ra{p}\" priority 0; policy drop; }}\n\
                 \x20 chain out {{ type filter hook egress device \"ra{p}\" priority 0; policy drop; }}\n\
                 }}\n"
            ),
        );
    }

    /// Undoes [`Router::cut`].
    pub fn restore(&self, p: usize) {
        super::nft(&self.ns, &format!("delete table netdev cut_{p}\n"));
    }
}

/// `tc qdisc replace dev DEV root tbf` in `ns`: `rate_mbit`, a 32 KiB burst and a 20 ms
/// queue. On both ends of a path (A's `aP`, B's `bP`), it limits the path both ways.
pub fn tbf(ns: &Netns, dev: &str, rate_mbit: u32) {
    ns.run(&[
        "tc",
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        &format!("{rate_mbit}mbit"),
        "burst",
        "32kb",
        "latency",
        "20ms",
    ]);
}

fn sysctl(ns: &Netns, key: &str, value: &str) {
    ns.run(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
}

impl RoutedLab {
    /// Builds the lab; `net` (N) must be unique among the labs of one test binary.
    pub fn new(net: u8, paths: usize) -> RoutedLab {
        assert!((1..10).contains(&paths));
        let a = Netns::new();
        let b = Netns::new();
        let r = Netns::new();
        for ns in [&a, &b, &r] {
            for scope in ["all", "default"] {
                sysctl(ns, &format!("net.ipv4.conf.{scope}.rp_filter"), "0");
            }
        }
        sysctl(&r, "net.ipv4.ip_forward", "1");
        let lab = RoutedLab {
            a,
            b,
            router: Router {
                emu: Emulator {
                    shared: Arc::new(Shared {
                        net,
                        links: Mutex::new(vec![[Link::default(); 2]; paths]),
                        counters: (0..paths).map(|_| Default::default()).collect(),
                        stop: AtomicBool::new(false),
                    }),
                    threads: Vec::new(),
                },
                ns: r,
            },
            net,
            paths,
        };
        let mut threads = Vec::new();
        for p in 1..=paths {
            let r = &lab.router.ns;
            veth(
                &lab.a,
                &format!("a{p}"),
                &format!("{}/24", lab.a_addr(p)),
                r,
                &format!("ra{p}"),
                &format!("10.{net}.{p}.254/24"),
            );
            veth(
                r,
                &format!("rb{p}"),
                &format!("10.{net}.{}.254/24", 10 + p),
                &lab.b,
                &format!("b{p}"),
                &format!("{}/24", lab.b_addr(p)),
            );
            let emu = format!("emu{p}");
            let tun = r.enter(|| open_tun(&emu));
            r.ip(&["link", "set", &emu, "mtu", "1500", "up"]);
            for scope in [emu.as_str(), &format!("ra{p}"), &format!("rb{p}")] {
                sysctl(r, &format!("net.ipv4.conf.{scope}.rp_filter"), "0");
                sysctl(r, &format!("net.ipv4.conf.{scope}.send_redirects"), "0");
            }
            let (into, out) = ((10 + p).to_string(), (20 + p).to_string());
            r.ip(&["route", "add", "default", "dev", &emu, "table", &into]);
            for iif in [format!("ra{p}"), format!("rb{p}")] {
                r.ip(&["rule", "add", "iif", &iif, "table", &into, "pref", &into]);
            }
            r.ip(&["rule", "add", "iif", &emu, "table", &out, "pref", &out]);
            for sub in 1..=paths {
                r.ip(&[
                    "route",
                    "add",
                    &format!("10.{net}.{sub}.0/24"),
                    "via",
                    &lab.a_addr(p),
                    "dev",
                    &format!("ra{p}"),
                    "onlink",
                    "table",
                    &out,
                ]);
                r.ip(&[
                    "route",
                    "add",
                    &format!("10.{net}.{}.0/24", 10 + sub),
                    "via",
                    &lab.b_addr(p),
                    "dev",
                    &format!("rb{p}"),
                    "onlink",
                    "table",
                    &out,
                ]);
            }
            let metric = p.to_string();
            for (ns, dev, gw) in [
                (&lab.a, format!("a{p}"), format!("10.{net}.{p}.254")),
                (&lab.b, format!("b{p}"), format!("10.{net}.{}.254", 10 + p)),
            ] {
                ns.ip(&[
                    "route", "replace", "default", "via", &gw, "dev", &dev, "metric", &metric,
                ]);
            }
            // The far end's path-P subnet through path P, for a single unbound socket (a
            // stock peer): B answers A's path-P address on path P, and A likewise.
            lab.b.ip(&[
                "route",
                "replace",
                &format!("10.{net}.{p}.0/24"),
                "via",
                &format!("10.{net}.{}.254", 10 + p),
                "dev",
                &format!("b{p}"),
            ]);
            lab.a.ip(&[
                "route",
                "replace",
                &format!("10.{net}.{}.0/24", 10 + p),
                "via",
                &format!("10.{net}.{p}.254"),
                "dev",
                &format!("a{p}"),
            ]);
            let shared = lab.router.emu.shared.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("emulator-{p}"))
                    .spawn(move || run(shared, p, tun))
                    .expect("spawning the emulator"),
            );
        }
        let mut lab = lab;
        lab.router.emu.threads = threads;
        lab
    }

    /// A's address on path `p` (from 1).
    pub fn a_addr(&self, p: usize) -> String {
        format!("10.{}.{p}.1", self.net)
    }

    /// B's address on path `p`.
    pub fn b_addr(&self, p: usize) -> String {
        format!("10.{}.{}.2", self.net, 10 + p)
    }

    /// The emulator.
    pub fn emu(&self) -> &Emulator {
        &self.router.emu
    }

    /// Two daemons over the lab: mpwg on A (`mpwg up --path a1 ... A_ARGS`), and on B
    /// `b` (mpwg with `--path b1 ... B_ARGS`, or wireguard-go with one socket),
    /// configured as [`Pair`] does (tunnel 10.100.0.1 and .2, endpoints known both
    /// ways: B's path-1 address, A's path-1 address). Returns the pair and the router.
    pub fn pair(self, a_args: &[&str], b: Impl, b_args: &[&str]) -> (Pair, Router) {
        let paths_a: Vec<String> = (1..=self.paths).map(|p| format!("a{p}")).collect();
        let paths_b: Vec<String> = (1..=self.paths).map(|p| format!("b{p}")).collect();
        let mut args_a: Vec<&str> = paths_a.iter().flat_map(|p| ["--path", p]).collect();
        args_a.extend(a_args);
        let mut args_b: Vec<&str> = paths_b.iter().flat_map(|p| ["--path", p]).collect();
        args_b.extend(b_args);
        let (ua, ub) = (self.a_addr(1), self.b_addr(1));
        let RoutedLab {
            a, b: b_ns, router, ..
        } = self;
        let side_a = Pair::side(a, Impl::Mpwg, &ua, "10.100.0.1", 51820, &args_a);
        let side_b = Pair::side(b_ns, b, &ub, "10.100.0.2", 51821, &args_b);
        Pair::configure(&side_a, &side_b, true);
        Pair::configure(&side_b, &side_a, true);
        for s in [&side_a, &side_b] {
            s.ns.ip(&["addr", "add", &format!("{}/24", s.tunnel), "dev", &s.dev]);
            s.ns.ip(&["link", "set", &s.dev, "up"]);
        }
        (
            Pair {
                a: side_a,
                b: side_b,
            },
            router,
        )
    }
}
