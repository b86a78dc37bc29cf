//! Issue "path intelligence": the scheduling modes (failover, aggregate, adaptive)
//! between two mpwg ends, and against wireguard-go, in the routed lab of
//! `common::emulator` (A, a router with the link emulator, B; two paths).
//!
//! Each test builds its own namespaces, needs root, and prints a skip message and passes
//! without it: `sudo cargo test --release --test modes`. Throughputs and loss counts are
//! printed (`--nocapture`); what is asserted is what the issue asks the modes to show
//! (packets lost, shares of packets, ratios of goodput), with margins for a busy
//! 2-core machine. The precise figures are in PERF.md, from `scripts/bench.sh --modes`.

mod common;

use common::emulator::{Dir, Link, RoutedLab};
use common::*;

/// The emulator delays, drops and forwards as set, per direction.
#[test]
fn emulator_delays_and_drops_per_direction() {
    let Some(_lab) = lab("emulator_delays_and_drops_per_direction") else {
        return;
    };
    let lab = RoutedLab::new(41, 2);
    let b1 = lab.b_addr(1);
    let b2 = lab.b_addr(2);
    // Transparent: every ping crosses each path.
    assert_eq!(ping(&lab.a, &b1, 5), 5);
    assert_eq!(ping(&lab.a, &b2, 5), 5);
    lab.emu().set(1, Dir::AtoB, Link::delay_ms(30));
    lab.emu().set(1, Dir::BtoA, Link::delay_ms(10));
    let out = lab.a.run(&["ping", "-c", "5", "-i", "0.2", "-W", "2", &b1]);
    let (_, avg) = parse_rtt(&out);
    println!("path 1 with 30 ms + 10 ms: ping rtt avg {avg:.1} ms");
    // A round trip cannot be shorter than the delays put in it.
    assert!(avg >= 40.0, "rtt {avg} ms through 40 ms of delay\n{out}");
    // Path 2 untouched.
    let (_, avg2) = parse_rtt(&lab.a.run(&["ping", "-c", "3", "-i", "0.2", &b2]));
    assert!(avg2 < 40.0, "path 2 delayed too: {avg2} ms");
    // Total loss one way only: pings die, and the emulator counts them.
    lab.emu().set(
        2,
        Dir::BtoA,
        Link {
            loss_pct: 100.0,
            ..Link::default()
        },
    );
    assert_eq!(ping(&lab.a, &b2, 3), 0);
    assert!(
        lab.emu()
            .counters(2, Dir::BtoA)
            .lost
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
    assert!(
        lab.emu()
            .counters(2, Dir::AtoB)
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
}

/// (min, avg) of a ping's rtt summary line, in ms.
fn parse_rtt(out: &str) -> (f64, f64) {
    let line = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .unwrap_or_else(|| panic!("no rtt line in ping output:\n{out}"));
    let nums: Vec<f64> = line
        .split('=')
        .nth(1)
        .unwrap()
        .trim()
        .split('/')
        .take(2)
        .map(|v| v.trim_end_matches(" ms").parse().unwrap())
        .collect();
    (nums[0], nums[1])
}
