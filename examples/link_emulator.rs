//! The lab's link emulator as a process, for `scripts/bench.sh --modes`: the forwarder
//! of the tests (`tests/common/link.rs`, included here by its path, so there is one
//! implementation) on a TUN device per path, in the router namespace it is started in.
//!
//! ```sh
//! cargo build --release --example link_emulator
//! ip netns exec ROUTER target/release/examples/link_emulator NET PATHS [P:DIR:KEY=VALUE...]
//! ```
//!
//! The router namespace must already have, for each path P of PATHS, `raP`
//! (10.NET.P.254/24, towards A) and `rbP` (10.NET.(10+P).254/24, towards B), and IPv4
//! forwarding on; the emulator creates `emuP`, plumbs it (`link::router_plumbing`:
//! policy routes by input interface), prints `ready` on a line of its own and forwards
//! until it is ended by a signal (its TUNs, and the routes through them, go with it).
//!
//! Each `P:DIR:KEY=VALUE` sets one property of path P's link, in the direction DIR
//! (`ab`: from A to B, `ba`, or `both`): `delay=MS`, `jitter=MS`, `loss=PCT`,
//! `rate=MBIT` (tail drop after `queue=MS`, default 50). Example: 10 ms one way on path
//! 1 and 40 ms on path 2, both ways: `link_emulator 79 2 1:both:delay=10 2:both:delay=40`.

use std::io::Write;
use std::process::{Command, ExitCode};
use std::time::Duration;

#[allow(dead_code)] // the tests use more of it than this process does
#[path = "../tests/common/link.rs"]
mod link;

use link::{Dir, Emulator, Link};

fn usage() -> String {
    "usage: link_emulator NET PATHS [P:DIR:KEY=VALUE...]  (DIR: ab, ba, both; \
     KEY: delay, jitter (ms), loss (%), rate (Mbit/s), queue (ms))"
        .to_string()
}

/// Applies one `P:DIR:KEY=VALUE` to `links` (indexed by path - 1, then direction).
fn apply(spec: &str, links: &mut [[Link; 2]]) -> Result<(), String> {
    let bad = |why: &str| format!("{spec:?}: {why}; {}", usage());
    let mut parts = spec.splitn(3, ':');
    let (p, dir, kv) = match (parts.next(), parts.next(), parts.next()) {
        (Some(p), Some(d), Some(kv)) => (p, d, kv),
        _ => return Err(bad("not P:DIR:KEY=VALUE")),
    };
    let p: usize = p.parse().map_err(|_| bad("P is not a path number"))?;
    if p == 0 || p > links.len() {
        return Err(bad(&format!("there is no path {p} of {}", links.len())));
    }
    let dirs: &[usize] = match dir {
        "ab" => &[0],
        "ba" => &[1],
        "both" => &[0, 1],
        _ => return Err(bad("DIR is ab, ba or both")),
    };
    let (key, value) = kv.split_once('=').ok_or_else(|| bad("no KEY=VALUE"))?;
    let v: f64 = value
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| bad("VALUE is not a number of 0 or more"))?;
    let ms = Duration::from_secs_f64(v / 1000.0);
    for &d in dirs {
        let link = &mut links[p - 1][d];
        match key {
            "delay" => link.delay = ms,
            "jitter" => link.jitter = ms,
            "loss" if v <= 100.0 => link.loss_pct = v,
            "rate" if v > 0.0 => link.rate_mbit = Some(v),
            "queue" => link.queue = ms,
            "loss" | "rate" => return Err(bad("loss is 0 to 100, rate above 0")),
            _ => return Err(bad(&format!("unknown KEY {key}"))),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("link_emulator: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err(usage());
    }
    let net: u8 = args[0]
        .parse()
        .map_err(|_| format!("NET {:?} is not 0..255; {}", args[0], usage()))?;
    let paths: usize = args[1]
        .parse()
        .ok()
        .filter(|p| (1..10).contains(p))
        .ok_or_else(|| format!("PATHS {:?} is not 1..9; {}", args[1], usage()))?;
    let mut links = vec![[Link::default(); 2]; paths];
    for spec in &args[2..] {
        apply(spec, &mut links)?;
    }
    let mut emu = Emulator::new(net, paths);
    for (i, [ab, ba]) in links.iter().enumerate() {
        emu.set(i + 1, Dir::AtoB, *ab);
        emu.set(i + 1, Dir::BtoA, *ba);
    }
    for p in 1..=paths {
        let tun = link::open_tun(&format!("emu{p}"));
        for argv in link::router_plumbing(net, p, paths) {
            let out = Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
            if !out.status.success() {
                return Err(format!(
                    "`{}` failed: {}",
                    argv.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        emu.start(p, tun);
        eprintln!(
            "link_emulator: path {p}: A to B {:?}, B to A {:?}",
            links[p - 1][0],
            links[p - 1][1]
        );
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    // Forward until a signal ends the process (the threads never return on their own).
    loop {
        std::thread::park();
    }
}
