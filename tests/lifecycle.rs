//! Issue "lifecycle": paths and devices that come and go, through the real daemon in
//! network namespaces.
//!
//! * The tunnel's own TUN device deleted (`ip link del`, what wg-quick down does), or its
//!   UAPI socket file removed: the daemon ends within 3 s, exit status 0, nothing left
//!   behind, a few log lines (no error retried in a loop).
//! * A TSO super-packet with more segments than a TUN read splits into: the kernel is
//!   told not to build one (gso_max_segs), and one that comes anyway is dropped and
//!   counted, not retried.
//!
//! Each test builds its own namespaces (see `common`), needs root, and prints a skip
//! message and passes without it: `sudo cargo test --release --test lifecycle`.

mod common;

use common::*;
use std::io::{Read, Write};
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
