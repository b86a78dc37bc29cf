//! Issue "lifecycle": paths and devices that come and go, through the real daemon in
//! network namespaces.
//!
//! * The tunnel's own TUN device deleted (`ip link del`, what wg-quick down does), or its
//!   UAPI socket file removed: the daemon ends within 3 s, exit status 0, nothing left
//!   behind, a few log lines (no error retried in a loop).
//! * A TSO super-packet with more segments than a TUN read splits into: the kernel is
//!   told not to build one (gso_max_segs), and one that comes anyway is dropped and
//!   counted, not retried.
//! * Uplinks that come and go, in a routed lab (A and B each with two uplinks to a
//!   router R; B's service address reachable over both): an uplink deleted and
//!   re-created (new index) at both ends rejoins by itself, with no restart and no new
//!   handshake, and then carries the tunnel alone with no ping lost; the same for an
//!   uplink absent at start and added with `mpwg path add`; `mpwg path del` during a
//!   ping loses nothing, and `path add` brings the path back. Against mpwg and
//!   wireguard-go.
//! * A path with a 1400-byte MTU beside a 1500-byte one: reported, bulk intact, GSO on.
//! * A server with two addresses on one uplink answers from the one it was reached at
//!   (IP_PKTINFO, IPV6_PKTINFO), against mpwg and wireguard-go.
//!
//! Each test builds its own namespaces (see `common`), needs root, and prints a skip
//! message and passes without it: `sudo cargo test --release --test lifecycle`.

mod common;

use common::*;
use std::io::Read;
use std::io::Write as _;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

/// The issue: the daemon notices within 1 s and ends; the test allows 3 s.
const EXIT_LIMIT: Duration = Duration::from_secs(3);
/// The most lines a daemon may log between the device (or socket) going away and its
/// exit: what happened, once; not a line per failed read.
const MAX_EXIT_LOG_LINES: usize = 5;

/// The lines of `log` after its first `skip` bytes.
fn lines_after(log: &str, skip: usize) -> Vec<String> {
    log.get(skip..)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Pings both ways at 100 packets/s on a healthy tunnel, then `remove` takes away
/// something of A's (its device, its socket). A must end by itself within
/// [`EXIT_LIMIT`] with exit status 0, leave nothing behind, and log at most
/// [`MAX_EXIT_LOG_LINES`] lines meanwhile; B goes on.
fn a_ends_cleanly_when(what: &str, remove: impl FnOnce(&Pair)) {
    let mut pair = Pair::new(Impl::Mpwg, Impl::Mpwg, Endpoints::Both);
    assert!(
        ping_until(&pair.a.ns, &pair.b.tunnel, Duration::from_secs(10)),
        "no ping reply through the tunnel"
    );
    let _a_to_b = PingRun::start(&pair.a.ns, &pair.b.tunnel, 1000, "0.01");
    let _b_to_a = PingRun::start(&pair.b.ns, &pair.a.tunnel, 1000, "0.01");
    thread::sleep(Duration::from_millis(500));
    let log_before = pair.a.daemon.log().len();
    let at = Instant::now();
    remove(&pair);
    let status = pair.a.daemon.wait_exit(EXIT_LIMIT);
    let took = at.elapsed();
    let log = pair.a.daemon.log();
    let after = lines_after(&log, log_before);
    let Some(status) = status else {
        panic!(
            "{what}: mpwg still ran {} ms later; it logged meanwhile:\n{}",
            EXIT_LIMIT.as_millis(),
            after.join("\n")
        );
    };
    eprintln!(
        "{what}: mpwg exited ({status}) {} ms later, logging:\n{}",
        took.as_millis(),
        after.join("\n")
    );
    assert_eq!(
        status.code(),
        Some(expect::CLEAN_EXIT_CODE),
        "{what}: exit status {status}; log:\n{log}"
    );
    let left = pair.a.daemon.leftovers();
    assert!(left.is_empty(), "{what}: {}", left.join("; "));
    assert!(
        after.len() <= MAX_EXIT_LOG_LINES,
        "{what}: {} log lines between the removal and the exit (at most {MAX_EXIT_LOG_LINES}):\n{}",
        after.len(),
        after.join("\n")
    );
    for w in expect::NEVER_IN_ERRORS {
        assert!(!log.contains(w), "{what}: the log has {w:?}:\n{log}");
    }
    // B is unaffected: it still answers `wg show`.
    wg(&pair.b.ns, &["show", &pair.b.dev]);
}

#[test]
fn deleting_the_tun_device_ends_the_daemon_cleanly() {
    let Some(_lab) = lab("deleting_the_tun_device_ends_the_daemon_cleanly") else {
        return;
    };
    a_ends_cleanly_when("ip link del of the TUN device", |pair| {
        pair.a.ns.ip(&["link", "del", &pair.a.dev]);
    });
}

#[test]
fn removing_the_uapi_socket_ends_the_daemon_cleanly() {
    let Some(_lab) = lab("removing_the_uapi_socket_ends_the_daemon_cleanly") else {
        return;
    };
    a_ends_cleanly_when("rm of the UAPI socket", |pair| {
        std::fs::remove_file(uapi_socket(&pair.a.dev)).expect("rm the UAPI socket");
    });
}

/// The `N oversize super-packets dropped` counts of `mpwg show`, one per TUN queue.
fn oversize_drops(dev: &str) -> Vec<u64> {
    mpwg_show(dev)
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("tun queue "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words
                .iter()
                .position(|w| *w == "oversize")
                .unwrap_or_else(|| panic!("no oversize count in {l:?}"));
            words[i - 1].parse().expect("oversize count")
        })
        .collect()
}

/// `gso_max_segs` of `dev` in `ns`, as `ip -d link` prints it.
fn gso_max_segs(ns: &Netns, dev: &str) -> u32 {
    let out = ns.ip(&["-d", "link", "show", "dev", dev]);
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "gso_max_segs")
        .and_then(|i| words.get(i + 1)?.parse().ok())
        .unwrap_or_else(|| panic!("no gso_max_segs in:\n{out}"))
}

/// B advertises a TCP MSS of 200 bytes to A (route advmss), so A's kernel cuts its
/// TSO super-packets into 200-byte segments: up to 327 in 64 KiB, more than the 128 a
/// TUN read splits into. mpwg caps the device at 128 segments (gso_max_segs), so a
/// transfer goes through intact with nothing dropped. With the cap lifted, the kernel
/// hands mpwg super-packets it cannot split: each is dropped and counted (not retried,
/// not logged per packet), and the tunnel keeps working.
#[test]
fn super_packets_with_too_many_segments_are_capped_or_dropped_and_counted() {
    let Some(_lab) = lab("super_packets_with_too_many_segments_are_capped_or_dropped_and_counted")
    else {
        return;
    };
    let pair = Pair::new(Impl::Mpwg, Impl::Mpwg, Endpoints::Both);
    let (a, b) = (&pair.a, &pair.b);
    assert_eq!(gso_max_segs(&a.ns, &a.dev), 128, "mpwg caps its TUN device");
    b.ns.ip(&[
        "route",
        "replace",
        "10.100.0.0/24",
        "dev",
        &b.dev,
        "advmss",
        "200",
    ]);
    assert!(
        ping_until(&a.ns, &b.tunnel, Duration::from_secs(10)),
        "no ping reply through the tunnel"
    );
    tcp_transfer(&a.ns, &b.ns, &b.tunnel, 4 << 20, 7);
    assert!(
        oversize_drops(&a.dev).iter().all(|&n| n == 0),
        "super-packets dropped although the device is capped:\n{}",
        mpwg_show(&a.dev).text
    );

    a.ns.ip(&["link", "set", "dev", &a.dev, "gso_max_segs", "65535"]);
    let log_before = a.daemon.log().len();
    let listener = b.ns.tcp_listen("10.100.0.2:0".parse().unwrap());
    let addr: SocketAddr = listener.local_addr().unwrap();
    let sink = thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    let mut s =
        a.ns.tcp_connect(addr, Duration::from_secs(5))
            .expect("connect through the tunnel");
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && s.write_all(&chunk).is_ok() {}
    let drops: u64 = oversize_drops(&a.dev).iter().sum();
    drop(s);
    let _ = sink.join();
    let after = lines_after(&a.daemon.log(), log_before);
    eprintln!(
        "without the cap: {drops} super-packets dropped; log:\n{}",
        after.join("\n")
    );
    assert!(
        drops > 0,
        "no super-packet counted as dropped:\n{}",
        mpwg_show(&a.dev).text
    );
    // One line per power of two dropped, at most.
    let limit = 2 + (64 - drops.leading_zeros()) as usize;
    assert!(
        after.len() <= limit,
        "{} log lines for {drops} drops (at most {limit}):\n{}",
        after.len(),
        after.join("\n")
    );
    a.ns.ip(&["link", "set", "dev", &a.dev, "gso_max_segs", "128"]);
    assert!(
        ping_until(&a.ns, &b.tunnel, Duration::from_secs(5)),
        "the tunnel stopped working after the drops"
    );
}

// ---------------------------------------------------------------------------------
// The routed lab
// ---------------------------------------------------------------------------------

/// How often `mpwg show` is polled while waiting for a change.
const POLL: Duration = Duration::from_millis(100);
/// How long a path gets to be seen gone, or back, before the test gives up. The issue
/// asks for 1 s after the link is up; the time taken is printed, not asserted (the
/// machine may be busy), and this limit only ends a test that would wait forever.
const GIVE_UP: Duration = Duration::from_secs(10);

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// Three namespaces: A with uplinks `a1`, `a2` to the router R (`ra1`, `ra2`), and B
/// with uplinks `b1` (and `b2`) to R (`rb1`, `rb2`):
///
/// * `aP` 10.N.P.1/24, R's end 10.N.P.254; `bP` 10.N.(P+2).2/24, R's end 10.N.(P+2).254;
/// * on A and B a default route through each uplink (metric P), as on a multi-WAN box;
/// * B's service address 10.N.0.2 (on its loopback);
/// * R routes by the link a packet came from, as two providers would: what A sends on
///   `aP` to any of B's addresses reaches B on `bP` (on `b1` if B has one uplink), and
///   what B sends on `bP` to any of A's addresses reaches A on `aP`.
///
/// So the server is reachable at one address over every uplink, as DESIGN.md's lab asks,
/// and each uplink pair is a path of its own, whatever address a side sends to.
struct Routed {
    a: Netns,
    r: Netns,
    b: Netns,
    net: u8,
    b_uplinks: usize,
}

impl Routed {
    /// The lab with uplinks `a_up` of A and `b_up` of B made (others are left for the
    /// test to make with [`Routed::uplink_a`], [`Routed::uplink_b`]); B has `b_uplinks`.
    fn new(net: u8, b_uplinks: usize, a_up: &[usize], b_up: &[usize]) -> Routed {
        let lab = Routed {
            a: Netns::new(),
            r: Netns::new(),
            b: Netns::new(),
            net,
            b_uplinks,
        };
        for ns in [&lab.a, &lab.r, &lab.b] {
            for key in ["all", "default"] {
                ns.run(&["sysctl", "-qw", &format!("net.ipv4.conf.{key}.rp_filter=0")]);
            }
        }
        lab.r.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lab.b
            .ip(&["addr", "add", &format!("{}/32", lab.server()), "dev", "lo"]);
        for p in 1..=2 {
            for (side, table) in [("ra", 100 + p), ("rb", 200 + p)] {
                let (dev, table) = (format!("{side}{p}"), table.to_string());
                lab.r.ip(&["rule", "add", "iif", &dev, "table", &table]);
            }
        }
        for &p in a_up {
            lab.uplink_a(p);
        }
        for &p in b_up {
            lab.uplink_b(p);
        }
        lab
    }

    /// B's service address, where A's tunnel endpoint points.
    fn server(&self) -> String {
        format!("10.{}.0.2", self.net)
    }

    fn a_addr(&self, p: usize) -> String {
        format!("10.{}.{p}.1", self.net)
    }

    fn b_addr(&self, p: usize) -> String {
        format!("10.{}.{}.2", self.net, p + 2)
    }

    fn r_has(&self, dev: &str) -> bool {
        self.r
            .exec(&["ip", "link", "show", "dev", dev])
            .status
            .success()
    }

    /// Makes A's uplink `p` (again): the veth to R, addresses, A's default route, and
    /// R's routes for it.
    fn uplink_a(&self, p: usize) {
        let gw = format!("10.{}.{p}.254", self.net);
        veth(
            &self.a,
            &format!("a{p}"),
            &format!("{}/24", self.a_addr(p)),
            &self.r,
            &format!("ra{p}"),
            &format!("{gw}/24"),
        );
        let (dev, metric) = (format!("a{p}"), p.to_string());
        self.a.ip(&[
            "route", "replace", "default", "via", &gw, "dev", &dev, "metric", &metric,
        ]);
        self.r_routes();
    }

    /// Makes B's uplink `p` (again): the veth to R, addresses, B's default route, and
    /// R's routes for it.
    fn uplink_b(&self, p: usize) {
        let gw = format!("10.{}.{}.254", self.net, p + 2);
        veth(
            &self.b,
            &format!("b{p}"),
            &format!("{}/24", self.b_addr(p)),
            &self.r,
            &format!("rb{p}"),
            &format!("{gw}/24"),
        );
        let (dev, metric) = (format!("b{p}"), p.to_string());
        self.b.ip(&[
            "route", "replace", "default", "via", &gw, "dev", &dev, "metric", &metric,
        ]);
        self.r_routes();
    }

    /// R's policy tables, for the links that exist now: table 10P (what comes in on
    /// `raP`) sends B's addresses to `rbP` (to `rb1` if B has one uplink); table 20P
    /// (what comes in on `rbP`) sends A's addresses to `raP` (with one uplink at B, R's
    /// own routes to A's links do).
    fn r_routes(&self) {
        let b_nets = [
            format!("{}/32", self.server()),
            format!("10.{}.3.0/24", self.net),
            format!("10.{}.4.0/24", self.net),
        ];
        for p in 1..=2 {
            let q = if self.b_uplinks == 1 { 1 } else { p };
            let (ra, rb) = (format!("ra{p}"), format!("rb{q}"));
            if self.r_has(&ra) && self.r_has(&rb) {
                for net in &b_nets {
                    self.r_route(net, &self.b_addr(q), &rb, 100 + p);
                }
                if self.b_uplinks > 1 {
                    for n in 1..=2 {
                        let net = format!("10.{}.{n}.0/24", self.net);
                        self.r_route(&net, &self.a_addr(p), &ra, 200 + p);
                    }
                }
            }
        }
    }

    /// In R's table `table`: `net` via `via` on `dev`.
    fn r_route(&self, net: &str, via: &str, dev: &str, table: usize) {
        let table = table.to_string();
        self.r.ip(&[
            "route", "replace", net, "via", via, "dev", dev, "table", &table,
        ]);
    }

    /// Everything in and out of A's uplink `p` dropped (nft netdev hooks, one
    /// transaction); the link stays up, so mpwg cannot know.
    fn cut_a(&self, p: usize) {
        nft(
            &self.a,
            &format!(
                "table netdev cut_a{p} {{\n\
                 \x20 chain in {{ type filter hook ingress device \"a{p}\" priority 0; policy drop; }}\n\
                 \x20 chain out {{ type filter hook egress device \"a{p}\" priority 0; policy drop; }}\n\
                 }}\n"
            ),
        );
    }

    fn restore_a(&self, p: usize) {
        nft(&self.a, &format!("delete table netdev cut_a{p}\n"));
    }

    /// A tunnel from `mpwg up --listen-port 51820 A_ARGS...` in A to `far` in B
    /// (listen port 51821), configured with `wg set`: A's endpoint is B's service
    /// address; B learns A's. Tunnel addresses 10.N.100.1/24 and 10.N.100.2/24.
    fn tunnel(&self, a_args: &[&str], far: Far) -> Tunnel {
        self.tunnel_dialed(a_args, far, None)
    }

    /// [`Routed::tunnel`], or with `b_dials` the other way round: B's endpoint is
    /// `b_dials` (an address of A's, port 51820), and A has none (it learns B's).
    fn tunnel_dialed(&self, a_args: &[&str], far: Far, b_dials: Option<&str>) -> Tunnel {
        let (dev_a, dev_b) = (unique_dev(), unique_dev());
        let mut args = vec!["--listen-port", "51820"];
        args.extend(a_args);
        let a = Daemon::mpwg(&self.a, &dev_a, &args);
        let b = match far {
            Far::Mpwg(b_args) => {
                let mut args = vec!["--listen-port", "51821"];
                args.extend(b_args);
                Daemon::mpwg(&self.b, &dev_b, &args)
            }
            Far::WireguardGo => Daemon::wireguard_go(&self.b, &dev_b),
        };
        let tun_b = format!("10.{}.100.2", self.net);
        let service = format!("{}:51821", self.server());
        let (a_endpoint, b_endpoint) = match b_dials {
            None => (Some(service), None),
            Some(a) => (None, Some(format!("{a}:51820"))),
        };
        let end_a = TunnelEnd {
            ns: &self.a,
            dev: &dev_a,
            tunnel: format!("10.{}.100.1", self.net),
            listen_port: None,
            endpoint: a_endpoint,
        };
        let end_b = TunnelEnd {
            ns: &self.b,
            dev: &dev_b,
            tunnel: tun_b.clone(),
            listen_port: Some("51821"),
            endpoint: b_endpoint,
        };
        let (keys, _, pub_b) = join_tunnel(&end_a, &end_b);
        Tunnel {
            _a: a,
            _b: b,
            far_is_mpwg: matches!(far, Far::Mpwg(_)),
            dev_a,
            dev_b,
            tun_b,
            pub_b,
            _keys: keys,
        }
    }
}

/// What runs in B.
#[derive(Clone, Copy)]
enum Far<'a> {
    /// `mpwg up` with these arguments (paths).
    Mpwg(&'a [&'a str]),
    /// wireguard-go: one unbound socket, as stock WireGuard.
    WireguardGo,
}

/// Two daemons joined through a [`Routed`] lab; declared after it, so dropped first.
struct Tunnel {
    _a: Daemon,
    _b: Daemon,
    far_is_mpwg: bool,
    dev_a: String,
    dev_b: String,
    tun_b: String,
    pub_b: String,
    _keys: TempDir,
}

impl Tunnel {
    /// Handshake (A pings B until a reply comes), then 20 quick pings, none lost.
    fn establish(&self, lab: &Routed) {
        // As in tests/multipath.rs: wireguard-go may consume both copies of the first
        // initiation and keep the other session; let one copy through only.
        let cut = !self.far_is_mpwg && lab.a.ip(&["-o", "link", "show"]).contains(" a2");
        if cut {
            lab.cut_a(2);
        }
        let ok = ping_until(&lab.a, &self.tun_b, Duration::from_secs(10));
        if cut {
            lab.restore_a(2);
        }
        assert!(
            ok,
            "no ping reply A -> B ({} -> {})",
            self.dev_a, self.dev_b
        );
        let e = EchoStream::start(&lab.a, &self.tun_b, 20, "0.01").finish(&lab.a);
        assert_eq!(
            e.lost(),
            0,
            "pings lost on a healthy tunnel:\n{}",
            e.ping_output
        );
    }

    /// A's latest handshake with B, in seconds since the epoch (`wg show latest-handshakes`).
    fn handshake_a(&self, lab: &Routed) -> u64 {
        let out = wg(&lab.a, &["show", &self.dev_a, "latest-handshakes"]);
        out.lines()
            .find_map(|l| {
                let (k, v) = l.split_once('\t')?;
                (k == self.pub_b).then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no handshake time for B in:\n{out}"))
    }

    /// The `mpwg show` devices of the mpwg ends: A, and B if it is mpwg.
    fn mpwg_devs(&self) -> Vec<&str> {
        let mut v = vec![self.dev_a.as_str()];
        if self.far_is_mpwg {
            v.push(&self.dev_b);
        }
        v
    }
}

/// The row of `mpwg show DEV` for interface `iface`, if it lists one.
fn row(dev: &str, iface: &str) -> Option<ShowPath> {
    mpwg_show(dev).paths.into_iter().find(|p| p.iface == iface)
}

/// Polls `mpwg show DEV` until `ok` holds for the row of `iface` (None: not listed);
/// returns how long it took. Panics after [`GIVE_UP`].
fn wait_for(
    dev: &str,
    iface: &str,
    what: &str,
    ok: impl Fn(Option<&ShowPath>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let show = mpwg_show(dev);
        if ok(show.paths.iter().find(|p| p.iface == iface)) {
            return start.elapsed();
        }
        if start.elapsed() > GIVE_UP {
            panic!(
                "{dev}: path {iface} not {what} after {GIVE_UP:?}:\n{}",
                show.text
            );
        }
        thread::sleep(POLL);
    }
}

/// With A's uplink 1 cut (silently, both ways), a 100 packets/s ping A -> B for 3 s
/// must lose nothing: the tunnel then lives on uplink 2 alone.
fn uplink_2_alone_loses_nothing(lab: &Routed, t: &Tunnel, what: &str) {
    lab.cut_a(1);
    let e = EchoStream::start(&lab.a, &t.tun_b, 300, "0.01").finish(&lab.a);
    let shows: Vec<String> = t.mpwg_devs().iter().map(|d| mpwg_show(d).text).collect();
    lab.restore_a(1);
    eprintln!(
        "{what}: with uplink 1 cut, {}/{} pings answered",
        e.answered, e.sent
    );
    assert!(e.sent >= 290, "{what}: ping sent only {} requests", e.sent);
    assert_eq!(
        e.lost(),
        0,
        "{what}: {} of {} pings lost on uplink 2 alone:\n{}\n{}",
        e.lost(),
        e.sent,
        e.ping_output,
        shows.join("\n")
    );
}

/// Uplink 2 is deleted at both ends (B's too, when B is mpwg) and re-created with the
/// same names and addresses (new indices). Every mpwg end shows it `absent`, then `up`
/// again with the new index, by itself; 2 s after the re-creation, with uplink 1 cut, a
/// 100 packets/s ping loses nothing; and there was no new handshake. A names its path 2
/// by index (`--path-index`), which then follows the interface's name.
fn recreated_uplink_rejoins(far_mpwg: bool) {
    let b_paths = if far_mpwg { 2 } else { 1 };
    let lab = Routed::new(
        if far_mpwg { 81 } else { 82 },
        b_paths,
        &[1, 2],
        &[1, 2][..b_paths],
    );
    let far = if far_mpwg {
        Far::Mpwg(&["--path", "b1", "--path", "b2"])
    } else {
        Far::WireguardGo
    };
    let a2_index = link_index(&lab.a, "a2").to_string();
    let t = lab.tunnel(&["--path", "a1", "--path-index", &a2_index], far);
    assert_eq!(mpwg_show(&t.dev_a).path(1).iface, "a2");
    t.establish(&lab);
    let what = format!(
        "uplink 2 re-created, mpwg <-> {}",
        if far_mpwg { "mpwg" } else { "wireguard-go" }
    );
    let handshake = t.handshake_a(&lab);
    let mut ends = vec![(&lab.a, t.dev_a.as_str(), "a2")];
    if far_mpwg {
        ends.push((&lab.b, t.dev_b.as_str(), "b2"));
    }
    let old: Vec<u32> = ends.iter().map(|(ns, _, i)| link_index(ns, i)).collect();
    for (ns, _, iface) in &ends {
        ns.ip(&["link", "del", iface]);
    }
    for (_, dev, iface) in &ends {
        let took = wait_for(dev, iface, "absent", |r| {
            r.is_some_and(|r| r.state == "absent" && r.index == "-")
        });
        eprintln!(
            "{what}: {dev} shows {iface} absent after {} ms",
            took.as_millis()
        );
    }
    let recreated = Instant::now();
    lab.uplink_a(2);
    if far_mpwg {
        lab.uplink_b(2);
    }
    for ((ns, dev, iface), old) in ends.iter().zip(&old) {
        let new = link_index(ns, iface);
        assert_ne!(
            new, *old,
            "{iface} got its old index back: the test shows nothing"
        );
        let took = wait_for(dev, iface, "up again with its new index", |r| {
            r.is_some_and(|r| r.state == "up" && r.index == new.to_string())
        });
        eprintln!(
            "{what}: {dev} shows {iface} up with index {new} (was {old}) {} ms after the re-creation",
            took.as_millis()
        );
    }
    sleep_until(recreated + Duration::from_secs(2));
    let rx_before: Vec<u64> = ends
        .iter()
        .map(|(_, dev, iface)| row(dev, iface).unwrap().rx_packets)
        .collect();
    uplink_2_alone_loses_nothing(&lab, &t, &what);
    for ((_, dev, iface), before) in ends.iter().zip(rx_before) {
        let after = row(dev, iface).unwrap().rx_packets;
        assert!(
            after > before,
            "{what}: {dev} received nothing on the re-created {iface}:\n{}\n{}",
            mpwg_show(&t.dev_a).text,
            mpwg_show(dev).text
        );
    }
    assert_eq!(
        t.handshake_a(&lab),
        handshake,
        "{what}: a new handshake happened; none is needed"
    );
}

#[test]
fn recreated_uplinks_rejoin_by_themselves_mpwg_to_mpwg() {
    let Some(_lab) = lab("recreated_uplinks_rejoin_by_themselves_mpwg_to_mpwg") else {
        return;
    };
    recreated_uplink_rejoins(true);
}

#[test]
fn a_recreated_uplink_rejoins_by_itself_mpwg_to_wireguard_go() {
    let Some(_lab) = lab("a_recreated_uplink_rejoins_by_itself_mpwg_to_wireguard_go") else {
        return;
    };
    recreated_uplink_rejoins(false);
}

/// `mpwg path ARGS...` (in the test's namespace: the control socket is shared); its
/// exit status, stdout and stderr.
fn mpwg_path(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = std::process::Command::new(MPWG)
        .arg("path")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run mpwg path");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mpwg path ARGS...`, which must succeed and print nothing.
fn path_ok(args: &[&str]) {
    let (status, out, err) = mpwg_path(args);
    assert!(
        status.success() && out.is_empty() && err.is_empty(),
        "mpwg path {}: {status}, stdout {out:?}, stderr {err:?}",
        args.join(" ")
    );
}

/// Uplink 2 does not exist when the daemons start (`--path a1` only, and `--path b1`
/// when B is mpwg). `mpwg path add` then adds it: listed as `absent`; the uplink is
/// made; every mpwg end shows it `up`; 2 s later, with uplink 1 cut, a 100 packets/s
/// ping loses nothing.
fn absent_uplink_joins_after_path_add(far_mpwg: bool) {
    let b_paths = if far_mpwg { 2 } else { 1 };
    let lab = Routed::new(if far_mpwg { 83 } else { 84 }, b_paths, &[1], &[1]);
    let far = if far_mpwg {
        Far::Mpwg(&["--path", "b1"])
    } else {
        Far::WireguardGo
    };
    let t = lab.tunnel(&["--path", "a1"], far);
    t.establish(&lab);
    let what = format!(
        "uplink 2 added with mpwg path add, mpwg <-> {}",
        if far_mpwg { "mpwg" } else { "wireguard-go" }
    );
    let handshake = t.handshake_a(&lab);
    let mut ends = vec![(t.dev_a.as_str(), "a2")];
    if far_mpwg {
        ends.push((t.dev_b.as_str(), "b2"));
    }
    for (dev, iface) in &ends {
        path_ok(&["add", dev, iface]);
        let r = row(dev, iface).unwrap_or_else(|| {
            panic!(
                "{what}: `mpwg show` does not list {iface} at once:\n{}",
                mpwg_show(dev).text
            )
        });
        assert_eq!(
            (r.state.as_str(), r.index.as_str()),
            ("absent", "-"),
            "{what}: {r:?}"
        );
    }
    let made = Instant::now();
    lab.uplink_a(2);
    if far_mpwg {
        lab.uplink_b(2);
    }
    for (dev, iface) in &ends {
        let took = wait_for(dev, iface, "up", |r| r.is_some_and(|r| r.state == "up"));
        eprintln!(
            "{what}: {dev} shows {iface} up {} ms after it was made",
            took.as_millis()
        );
    }
    sleep_until(made + Duration::from_secs(2));
    uplink_2_alone_loses_nothing(&lab, &t, &what);
    assert_eq!(
        t.handshake_a(&lab),
        handshake,
        "{what}: a new handshake happened"
    );
}

#[test]
fn an_uplink_absent_at_start_joins_after_path_add_mpwg_to_mpwg() {
    let Some(_lab) = lab("an_uplink_absent_at_start_joins_after_path_add_mpwg_to_mpwg") else {
        return;
    };
    absent_uplink_joins_after_path_add(true);
}

#[test]
fn an_uplink_absent_at_start_joins_after_path_add_mpwg_to_wireguard_go() {
    let Some(_lab) = lab("an_uplink_absent_at_start_joins_after_path_add_mpwg_to_wireguard_go")
    else {
        return;
    };
    absent_uplink_joins_after_path_add(false);
}

/// Two uplinks at both ends. During a 100 packets/s ping, `mpwg path del` of uplink 2
/// (at every mpwg end): no ping lost, and `mpwg show` no longer lists it. `mpwg path
/// add` brings it back; 2 s later, with uplink 1 cut, no ping lost.
fn path_del_and_add(far_mpwg: bool) {
    let b_paths = if far_mpwg { 2 } else { 1 };
    let lab = Routed::new(
        if far_mpwg { 85 } else { 86 },
        b_paths,
        &[1, 2],
        &[1, 2][..b_paths],
    );
    let far = if far_mpwg {
        Far::Mpwg(&["--path", "b1", "--path", "b2"])
    } else {
        Far::WireguardGo
    };
    let t = lab.tunnel(&["--path", "a1", "--path", "a2"], far);
    t.establish(&lab);
    let what = format!(
        "mpwg path del, then add, mpwg <-> {}",
        if far_mpwg { "mpwg" } else { "wireguard-go" }
    );
    let handshake = t.handshake_a(&lab);
    let mut ends = vec![(t.dev_a.as_str(), "a2")];
    if far_mpwg {
        ends.push((t.dev_b.as_str(), "b2"));
    }
    let ping = EchoStream::start(&lab.a, &t.tun_b, 300, "0.01");
    sleep_until(ping.started() + Duration::from_secs(1));
    for (dev, iface) in &ends {
        path_ok(&["del", dev, iface]);
        let show = mpwg_show(dev);
        assert!(
            show.paths.iter().all(|p| p.iface != *iface),
            "{what}: `mpwg show` still lists {iface} after path del:\n{}",
            show.text
        );
    }
    let e = ping.finish(&lab.a);
    eprintln!(
        "{what}: {}/{} pings answered across the path del",
        e.answered, e.sent
    );
    assert_eq!(
        e.lost(),
        0,
        "{what}: pings lost across the path del:\n{}",
        e.ping_output
    );

    let added = Instant::now();
    for (dev, iface) in &ends {
        path_ok(&["add", dev, iface]);
        let r = row(dev, iface).expect("listed at once");
        assert_eq!(r.state, "up", "{what}: {r:?}");
    }
    sleep_until(added + Duration::from_secs(2));
    uplink_2_alone_loses_nothing(&lab, &t, &what);
    assert_eq!(
        t.handshake_a(&lab),
        handshake,
        "{what}: a new handshake happened"
    );
}

#[test]
fn path_del_loses_nothing_and_path_add_brings_it_back_mpwg_to_mpwg() {
    let Some(_lab) = lab("path_del_loses_nothing_and_path_add_brings_it_back_mpwg_to_mpwg") else {
        return;
    };
    path_del_and_add(true);
}

#[test]
fn path_del_loses_nothing_and_path_add_brings_it_back_mpwg_to_wireguard_go() {
    let Some(_lab) = lab("path_del_loses_nothing_and_path_add_brings_it_back_mpwg_to_wireguard_go")
    else {
        return;
    };
    path_del_and_add(false);
}

/// `mpwg path add|del` print nothing on success (exit 0) and a clear error otherwise
/// (exit 1): unknown device, a path that is already there, an unknown path, the
/// tunnel's own device, a name no interface can have. The first path added to a tunnel
/// without paths replaces its unbound socket, on the same port; deleting the last path
/// brings that socket back.
#[test]
fn path_commands_print_nothing_or_name_what_is_wrong() {
    let Some(_lab) = lab("path_commands_print_nothing_or_name_what_is_wrong") else {
        return;
    };
    let ns = Netns::new();
    let other = Netns::new();
    veth(&ns, "e1", "10.87.1.1/24", &other, "f1", "10.87.1.2/24");
    let dev = unique_dev();
    let d = Daemon::mpwg(&ns, &dev, &[]);
    assert_eq!(mpwg_show(&dev).path(0).iface, "*");
    let port = wg(&ns, &["show", &dev, "listen-port"]).trim().to_string();

    path_ok(&["add", &dev, "e1"]);
    let show = mpwg_show(&dev);
    assert_eq!(
        show.paths.len(),
        1,
        "the unbound socket is replaced:\n{}",
        show.text
    );
    assert_eq!(
        (show.path(0).iface.as_str(), show.path(0).state.as_str()),
        ("e1", "up")
    );
    assert_eq!(
        wg(&ns, &["show", &dev, "listen-port"]).trim(),
        port,
        "same port"
    );

    let missing = unique_dev();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["add", &missing, "e1"],
            format!("no mpwg daemon is running for {missing}"),
        ),
        (
            vec!["add", &dev, "e1"],
            format!("{dev} already has a path on e1"),
        ),
        (
            vec!["del", &dev, "eth9"],
            format!("{dev} has no path on eth9 (`mpwg show {dev}` lists its paths)"),
        ),
        (
            vec!["add", &dev, &dev],
            format!("{dev} is this tunnel's own device: a path needs an uplink interface"),
        ),
        (
            vec!["add", &dev, "a/b"],
            "invalid interface name \"a/b\"".to_string(),
        ),
    ];
    for (args, message) in cases {
        let (status, out, err) = mpwg_path(&args);
        let what = format!("mpwg path {}", args.join(" "));
        assert_eq!(status.code(), Some(1), "{what}: {status}\nstderr: {err}");
        assert!(out.is_empty(), "{what}: stdout {out:?}");
        assert_user_error(&what, status, &err, &[message], &[]);
    }
    path_ok(&["add", &dev, "wwan9"]);
    let r = row(&dev, "wwan9").expect("wwan9 listed");
    assert_eq!((r.state.as_str(), r.index.as_str()), ("absent", "-"));
    path_ok(&["del", &dev, "wwan9"]);
    path_ok(&["del", &dev, "e1"]);
    let show = mpwg_show(&dev);
    assert_eq!(show.paths.len(), 1, "{}", show.text);
    assert_eq!(
        show.path(0).iface,
        "*",
        "the unbound socket is back:\n{}",
        show.text
    );
    assert_eq!(wg(&ns, &["show", &dev, "listen-port"]).trim(), port);
    d.stop();
}

/// Paths and the mode in the configuration file (`[Path]` sections, `Mode =`): `mpwg up
/// --config` takes the paths in order; `--path` on the command line replaces them; a mode
/// other than duplicate, or a path whose interface does not exist at start, is an error
/// naming the file and line, and leaves nothing behind. `mpwg strip` gives what `wg(8)`
/// reads: `wg syncconf` takes it, where `wg setconf` refuses the file with mpwg's keys.
#[test]
fn config_file_paths_and_mode() {
    let Some(_lab) = lab("config_file_paths_and_mode") else {
        return;
    };
    let ns = Netns::new();
    let other = Netns::new();
    veth(&ns, "e1", "10.88.1.1/24", &other, "f1", "10.88.1.2/24");
    veth(&ns, "e2", "10.88.2.1/24", &other, "f2", "10.88.2.2/24");
    let dir = TempDir::new();
    let key = genkey();
    let conf = |mode: &str, second: &str| {
        format!(
            "[Interface]\nPrivateKey = {key}\nListenPort = 51890\nMode = {mode}\n\n\
             [Path]\nInterface = e2\n\n[Path]  # the other uplink\nInterface = {second}\n"
        )
    };
    let file = dir.secret_file("mp.conf", &conf("duplicate", "e1"));
    let file_s = file.to_str().unwrap();
    let dev = unique_dev();

    let d = Daemon::mpwg(&ns, &dev, &["--config", file_s]);
    let show = mpwg_show(&dev);
    let ifaces: Vec<&str> = show.paths.iter().map(|p| p.iface.as_str()).collect();
    assert_eq!(ifaces, ["e2", "e1"], "{}", show.text);
    assert!(show.header.contains("mode: duplicate"), "{}", show.header);
    assert_eq!(wg(&ns, &["show", &dev, "listen-port"]).trim(), "51890");

    // wg(8) does not know mpwg's keys; `mpwg strip` leaves them out.
    let refused = wg_output(&ns, &["setconf", &dev, file_s]);
    assert!(!refused.status.success(), "wg setconf took [Path] sections");
    let stripped = check(std::process::Command::new(MPWG).args(["strip", file_s]));
    assert!(
        !stripped.contains("[Path]") && !stripped.contains("Mode") && stripped.contains(&key),
        "mpwg strip:\n{stripped}"
    );
    let plain = dir.secret_file("plain.conf", &stripped);
    wg(&ns, &["syncconf", &dev, plain.to_str().unwrap()]);
    assert_eq!(
        mpwg_show(&dev).paths.len(),
        2,
        "syncconf left the paths alone"
    );
    d.stop();

    // --path replaces the file's paths.
    let d = Daemon::mpwg(&ns, &dev, &["--config", file_s, "--path", "e1"]);
    let show = mpwg_show(&dev);
    let ifaces: Vec<&str> = show.paths.iter().map(|p| p.iface.as_str()).collect();
    assert_eq!(ifaces, ["e1"], "{}", show.text);
    d.stop();

    for (text, line, words) in [
        (
            conf("bond", "e1"),
            4,
            "bad Mode: \"bond\" is not a mode this mpwg has: duplicate, failover",
        ),
        (conf("duplicate", "eth9"), 10, "no interface named \"eth9\""),
        (
            conf("duplicate", "e2"),
            10,
            "interface e2 already has a [Path] (line 7)",
        ),
    ] {
        std::fs::write(&file, &text).unwrap();
        let args = ["up", dev.as_str(), "--config", file_s];
        let what = format!("mpwg up with\n{text}");
        let (status, output) = mpwg_must_fail(&ns, &[], MPWG, &args);
        let mut all = expect::bad_config_line(file_s, line);
        all.push(words.to_string());
        assert_user_error(&what, status, &output, &all, &[]);
        for sock in [uapi_socket(&dev), control_socket(&dev)] {
            assert!(!sock.exists(), "{what}: {} left behind", sock.display());
        }
        let link = ns.exec(&["ip", "link", "show", "dev", &dev]);
        assert!(!link.status.success(), "{what}: device left behind");
    }
}

/// Path MTU: A's uplink 2 (and R's end of it) has a 1400-byte MTU, below what the
/// tunnel's 1420-byte packets need (1480 over IPv4); uplink 1 has 1500. On B, the route
/// back over uplink 2 has a 1400-byte MTU too, while B's interface has 1500: B's GSO
/// sends there fail with EINVAL, which mpwg cannot foresee. mpwg says so at start and in
/// `mpwg show` (MTU column, a note); 20 MiB each way arrive intact (the datagrams that do
/// not fit leave one per call, fragmented); and GSO stays on for every path: uplink 1
/// keeps sending many datagrams per call, and neither the EINVAL nor the small MTU
/// switched GSO off anywhere.
#[test]
fn a_small_mtu_path_beside_a_normal_one_carries_bulk_and_gso_stays_on() {
    let Some(_lab) = lab("a_small_mtu_path_beside_a_normal_one_carries_bulk_and_gso_stays_on")
    else {
        return;
    };
    let lab = Routed::new(89, 2, &[1, 2], &[1, 2]);
    lab.a.ip(&["link", "set", "dev", "a2", "mtu", "1400"]);
    lab.r.ip(&["link", "set", "dev", "ra2", "mtu", "1400"]);
    let (a_net, b_gw) = (
        format!("10.{}.2.0/24", lab.net),
        format!("10.{}.4.254", lab.net),
    );
    lab.b.ip(&[
        "route", "replace", &a_net, "via", &b_gw, "dev", "b2", "mtu", "1400",
    ]);
    let t = lab.tunnel(
        &["--path", "a1", "--path", "a2"],
        Far::Mpwg(&["--path", "b1", "--path", "b2"]),
    );
    t.establish(&lab);
    let show = mpwg_show(&t.dev_a);
    let note = show
        .text
        .lines()
        .find(|l| l.starts_with("note: path 1 (a2): interface MTU 1400 cannot carry"))
        .unwrap_or_else(|| panic!("no MTU note for a2:\n{}", show.text));
    eprintln!("{note}");
    let log = t._a.log();
    assert!(
        log.contains("path a2: interface MTU 1400 cannot carry the tunnel's 1420-byte packets"),
        "no MTU warning at start:\n{log}"
    );
    assert!(
        !show.text.contains("(a1)"),
        "a note about a1, whose MTU is enough:\n{}",
        show.text
    );

    let before = mpwg_show(&t.dev_a);
    let tun_a = format!("10.{}.100.1", lab.net);
    tcp_transfer(&lab.a, &lab.b, &t.tun_b, 20 << 20, 11);
    tcp_transfer(&lab.b, &lab.a, &tun_a, 20 << 20, 12);
    for dev in [&t.dev_a, &t.dev_b] {
        let s = mpwg_show(dev);
        let cells = |row: &str| table_cells(row);
        let header = cells(s.text.lines().nth(1).unwrap());
        let col = |name: &str| header.iter().position(|c| c == name).unwrap();
        for line in s.text.lines().skip(2).take(s.paths.len()) {
            let c = cells(line);
            assert_eq!(c[col("GSO")], "on", "{dev}: GSO switched off:\n{}", s.text);
        }
        eprintln!("{}", s.text);
    }
    let b_log = t._b.log();
    assert!(
        b_log.contains("path b2: a UDP GSO send was refused"),
        "B's GSO sends over the 1400-byte route were not refused (the test shows nothing):\n{b_log}"
    );
    let after = mpwg_show(&t.dev_a);
    let calls = |s: &Show, i: usize| {
        let header = table_cells(s.text.lines().nth(1).unwrap());
        let col = header.iter().position(|c| c == "TX CALLS").unwrap();
        let row = table_cells(s.text.lines().nth(2 + i).unwrap());
        row[col].parse::<u64>().unwrap()
    };
    let (pkts, calls_1) = (
        after.path(0).tx_packets - before.path(0).tx_packets,
        calls(&after, 0) - calls(&before, 0),
    );
    eprintln!("A's a1: {pkts} datagrams in {calls_1} send calls during the transfers");
    assert!(
        calls_1 * 2 < pkts,
        "A's a1 (MTU 1500) sent {pkts} datagrams in {calls_1} calls: GSO is not in use:\n{}",
        after.text
    );
}

/// Asserts that table `sources_b`'s input counter (in `listing`) saw at least 100 ping
/// replies from A. Bytes, not packets: under load A's TX worker sends several replies as
/// one GSO super-datagram, which crosses the veth and reaches B's input hook as one
/// packet. Each reply is at least 128 bytes of WireGuard message (an 84-byte ICMP packet,
/// or 104 over IPv6, padded to 16, plus 32).
fn assert_got_100_replies(listing: &str) {
    let received: u64 = listing
        .lines()
        .find(|l| l.contains("counter packets"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "bytes").nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in:\n{listing}"));
    assert!(
        received >= 100 * 128,
        "B got only {received} bytes from A, less than 100 ping replies:\n{listing}"
    );
}

/// The elements of nft set `set` of table `sources_b` in `ns` (`IFACE ADDRESS` for a
/// concatenation).
fn nft_set(ns: &Netns, set: &str) -> std::collections::BTreeSet<String> {
    let listing = ns.run(&["nft", "list", "set", "inet", "sources_b", set]);
    let Some((_, rest)) = listing.split_once("elements = {") else {
        return Default::default();
    };
    let body = rest.split('}').next().unwrap_or("");
    // `"b1" . 10.90.1.9, ...` or `fd00:92::9, ...`
    body.split(',')
        .map(|e| e.replace('"', "").replace(" . ", " ").trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

/// Source address: A's uplink `a1` has a second address, 10.N.1.9, and B's endpoint for A
/// points there (B dials A). A answers from the address B wrote to, not from 10.N.1.1,
/// which the kernel would pick. nft sets in B record, per B interface, every address B
/// sent to at A's port and every address A's datagrams came from: the second must be
/// within the first. And B keeps sending to 10.N.1.9 on `b1` (a peer roams to the source
/// of what it receives: `wg show` at wireguard-go, `mpwg show` at mpwg).
///
/// * Against wireguard-go (one path each), from the first datagram, the handshake
///   response included: A's datagrams all come from 10.N.1.9.
/// * mpwg to mpwg (two paths each), once the handshake is done, every ping reply on both
///   paths. Until B is heard on a path, A sends there from the kernel's choice (the
///   address B wrote to on another path may belong to another provider), so the
///   handshake response's copy on `a2` is not counted; B then writes to that address on
///   `b2`, and A answers from it.
fn replies_leave_from_the_address_the_peer_wrote_to(far_mpwg: bool) {
    let (net, a_paths): (u8, &[usize]) = if far_mpwg { (90, &[1, 2]) } else { (91, &[1]) };
    let b_paths = if far_mpwg { 2 } else { 1 };
    let lab = Routed::new(net, b_paths, a_paths, &[1, 2][..b_paths]);
    let second = format!("10.{net}.1.9");
    lab.a
        .ip(&["addr", "add", &format!("{second}/24"), "dev", "a1"]);
    let record = || {
        nft(
            &lab.b,
            "table inet sources_b {\n\
             \x20 set to_a { type ifname . ipv4_addr; flags dynamic; }\n\
             \x20 set from_a { type ifname . ipv4_addr; flags dynamic; }\n\
             \x20 chain out { type filter hook output priority 0; policy accept;\n\
             \x20   udp dport 51820 add @to_a { oifname . ip daddr }\n\
             \x20 }\n\
             \x20 chain in { type filter hook input priority 0; policy accept;\n\
             \x20   udp sport 51820 counter add @from_a { iifname . ip saddr }\n\
             \x20 }\n\
             }\n",
        )
    };
    if !far_mpwg {
        record();
    }
    let a_args: Vec<&str> = if far_mpwg {
        vec!["--path", "a1", "--path", "a2"]
    } else {
        vec!["--path", "a1"]
    };
    let far = if far_mpwg {
        Far::Mpwg(&["--path", "b1", "--path", "b2"])
    } else {
        Far::WireguardGo
    };
    let t = lab.tunnel_dialed(&a_args, far, Some(&second));
    let tun_a = format!("10.{net}.100.1");
    assert!(
        ping_until(&lab.b, &tun_a, Duration::from_secs(10)),
        "no ping reply B -> A ({} -> {})",
        t.dev_b,
        t.dev_a
    );
    if far_mpwg {
        record();
    }
    let e = EchoStream::start(&lab.b, &tun_a, 100, "0.01").finish(&lab.b);
    assert_eq!(e.lost(), 0, "pings lost:\n{}", e.ping_output);

    let (to_a, from_a) = (nft_set(&lab.b, "to_a"), nft_set(&lab.b, "from_a"));
    let listing = lab.b.run(&["nft", "list", "table", "inet", "sources_b"]);
    let show_a = mpwg_show(&t.dev_a).text;
    eprintln!("B wrote to A at {to_a:?}; A's datagrams came from {from_a:?}");
    let stray: Vec<&String> = from_a.difference(&to_a).collect();
    assert!(
        stray.is_empty(),
        "A sent from {stray:?}, where B never wrote to (B wrote to {to_a:?}):\n{listing}\n{show_a}"
    );
    let on_b1 = format!("b1 {second}");
    assert!(
        from_a.contains(&on_b1),
        "no datagram from {second} on b1: {from_a:?}\n{listing}"
    );
    assert_got_100_replies(&listing);
    if far_mpwg {
        let b = mpwg_show(&t.dev_b);
        assert!(
            from_a.iter().any(|e| e.starts_with("b2 ")),
            "nothing from A on b2: {from_a:?}\n{}",
            b.text
        );
        let b1 = &b.paths[0];
        assert_eq!(
            b1.endpoints,
            vec![format!("{second}:51820")],
            "B's path b1 no longer sends to {second}:\n{}",
            b.text
        );
    } else {
        let endpoints = wg(&lab.b, &["show", &t.dev_b, "endpoints"]);
        assert!(
            endpoints.contains(&format!("{second}:51820")),
            "B's endpoint for A moved off {second}:\n{endpoints}"
        );
    }
}

#[test]
fn replies_leave_from_the_address_the_peer_wrote_to_mpwg_to_mpwg() {
    let Some(_lab) = lab("replies_leave_from_the_address_the_peer_wrote_to_mpwg_to_mpwg") else {
        return;
    };
    replies_leave_from_the_address_the_peer_wrote_to(true);
}

#[test]
fn replies_leave_from_the_address_the_peer_wrote_to_mpwg_to_wireguard_go() {
    let Some(_lab) = lab("replies_leave_from_the_address_the_peer_wrote_to_mpwg_to_wireguard_go")
    else {
        return;
    };
    replies_leave_from_the_address_the_peer_wrote_to(false);
}

/// The same over IPv6 (IPV6_PKTINFO), on one link: A's `a1` has fd00:N::9 and then
/// fd00:N::1, and B dials [fd00:N::9]:51820. The kernel would answer from fd00:N::1;
/// every datagram A sends to B, the handshake response included, comes from fd00:N::9,
/// and B keeps it as A's endpoint.
fn replies_over_ipv6_leave_from_the_address_the_peer_wrote_to(far_mpwg: bool) {
    let net = if far_mpwg { 92 } else { 93 };
    let (a, b) = (Netns::new(), Netns::new());
    veth(
        &a,
        "a1",
        &format!("10.{net}.0.1/24"),
        &b,
        "b1",
        &format!("10.{net}.0.2/24"),
    );
    let (first, second, b_addr) = (
        format!("fd00:{net}::1"),
        format!("fd00:{net}::9"),
        format!("fd00:{net}::2"),
    );
    // fd00:N::1 added last: of two addresses that match B's equally (up to their /64),
    // Linux picks the newer one, so without IPV6_PKTINFO A would answer from it.
    for (ns, dev, addr) in [(&a, "a1", &second), (&a, "a1", &first), (&b, "b1", &b_addr)] {
        ns.ip(&["addr", "add", &format!("{addr}/64"), "dev", dev, "nodad"]);
    }
    nft(
        &b,
        "table inet sources_b {\n\
         \x20 set to_a { type ipv6_addr; flags dynamic; }\n\
         \x20 set from_a { type ipv6_addr; flags dynamic; }\n\
         \x20 chain out { type filter hook output priority 0; policy accept;\n\
         \x20   udp dport 51820 add @to_a { ip6 daddr }\n\
         \x20 }\n\
         \x20 chain in { type filter hook input priority 0; policy accept;\n\
         \x20   udp sport 51820 counter add @from_a { ip6 saddr }\n\
         \x20 }\n\
         }\n",
    );
    let (dev_a, dev_b) = (unique_dev(), unique_dev());
    let _da = Daemon::mpwg(&a, &dev_a, &["--listen-port", "51820", "--path", "a1"]);
    let _db = if far_mpwg {
        Daemon::mpwg(&b, &dev_b, &["--listen-port", "51821", "--path", "b1"])
    } else {
        Daemon::wireguard_go(&b, &dev_b)
    };
    let tun_a = format!("10.{net}.100.1");
    let endpoint = format!("[{second}]:51820");
    let end_a = TunnelEnd {
        ns: &a,
        dev: &dev_a,
        tunnel: tun_a.clone(),
        listen_port: None,
        endpoint: None,
    };
    let end_b = TunnelEnd {
        ns: &b,
        dev: &dev_b,
        tunnel: format!("10.{net}.100.2"),
        listen_port: Some("51821"),
        endpoint: Some(endpoint.clone()),
    };
    let _keys = join_tunnel(&end_a, &end_b);
    assert!(
        ping_until(&b, &tun_a, Duration::from_secs(10)),
        "no ping reply B -> A over IPv6 ({dev_b} -> {dev_a})"
    );
    let e = EchoStream::start(&b, &tun_a, 100, "0.01").finish(&b);
    assert_eq!(e.lost(), 0, "pings lost:\n{}", e.ping_output);

    let (to_a, from_a) = (nft_set(&b, "to_a"), nft_set(&b, "from_a"));
    let listing = b.run(&["nft", "list", "table", "inet", "sources_b"]);
    eprintln!("B wrote to A at {to_a:?}; A's datagrams came from {from_a:?}");
    let want: std::collections::BTreeSet<String> = [second.clone()].into();
    assert_eq!(
        from_a,
        want,
        "A's datagrams came from {from_a:?}, B wrote to {to_a:?}:\n{listing}\n{}",
        mpwg_show(&dev_a).text
    );
    assert_got_100_replies(&listing);
    let endpoints = wg(&b, &["show", &dev_b, "endpoints"]);
    assert!(
        endpoints.contains(&endpoint),
        "B's endpoint for A moved off {endpoint}:\n{endpoints}"
    );
}

#[test]
fn replies_over_ipv6_leave_from_the_address_the_peer_wrote_to_mpwg_to_mpwg() {
    let Some(_lab) = lab("replies_over_ipv6_leave_from_the_address_the_peer_wrote_to_mpwg_to_mpwg")
    else {
        return;
    };
    replies_over_ipv6_leave_from_the_address_the_peer_wrote_to(true);
}

#[test]
fn replies_over_ipv6_leave_from_the_address_the_peer_wrote_to_mpwg_to_wireguard_go() {
    let Some(_lab) =
        lab("replies_over_ipv6_leave_from_the_address_the_peer_wrote_to_mpwg_to_wireguard_go")
    else {
        return;
    };
    replies_over_ipv6_leave_from_the_address_the_peer_wrote_to(false);
}
