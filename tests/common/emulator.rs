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
//! # What a link does
//!
//! See [`link`]: the forwarder itself (one thread per path, [`Link`] settings per
//! direction, set at any time with [`Emulator::set`]), which `scripts/bench.sh --modes`
//! runs as a process (`examples/link_emulator.rs`) in a router namespace of its own.
//! Here it runs in the test process, so a test's CPU budget includes it: on this 2-core
//! machine it forwards about 100 Mbit/s per path comfortably.

#[path = "link.rs"]
pub mod link;

#[allow(unused_imports)] // the test binaries that include the lab but not the emulator
pub use link::{Dir, Emulator, Link};

use super::{veth, Impl, Netns, Pair};

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
        let mut lab = RoutedLab {
            a,
            b,
            router: Router {
                emu: Emulator::new(net, paths),
                ns: r,
            },
            net,
            paths,
        };
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
            let tun = r.enter(|| link::open_tun(&emu));
            for argv in link::router_plumbing(net, p, paths) {
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                r.run(&argv);
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
            lab.router.emu.start(p, tun);
        }
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
