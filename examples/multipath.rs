//! The seed's example, through mpwg's library: with no arguments, lists the network
//! interfaces; with interface names (or indexes, mixed), builds a multi-path tunnel on
//! them and waits, to be configured with `wg(8)`, until Ctrl-C, SIGTERM, or its device
//! is deleted.
//!
//! ```sh
//! cargo run --example multipath                 # the interfaces
//! sudo target/debug/examples/multipath eth0 3   # a tunnel on eth0 and interface 3
//! sudo wg set mpwg0 private-key KEYFILE peer PEER endpoint HOST:PORT allowed-ips 10.0.0.2/32
//! ```
//!
//! The tunnel is named by `MPWG_EXAMPLE_NAME` (default `mpwg0`); `MPWG_EXAMPLE_PORT`
//! sets its listen port; `MPWG_LOG` filters its log (a `tracing` filter).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        return list();
    }
    // The library logs through `tracing`: here to stderr, filtered by MPWG_LOG
    // (default: what happens to the tunnel and its paths).
    let filter = tracing_subscriber::EnvFilter::try_from_env("MPWG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("mpwg=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let name = std::env::var("MPWG_EXAMPLE_NAME").unwrap_or_else(|_| "mpwg0".into());
    let mut builder = mpwg::Builder::new(&name);
    for a in &args {
        builder = match a.parse::<u32>() {
            Ok(index) => builder.path_index(index),
            Err(_) => builder.path(a),
        };
    }
    if let Some(port) = std::env::var("MPWG_EXAMPLE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        builder = builder.listen_port(port);
    }
    // Before the tunnel's threads start, so no signal comes unhandled.
    let mut signals = match signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM]) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot handle signals: {e}")),
    };
    let tunnel = match builder.start() {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let paths: Vec<String> = tunnel.status().paths.into_iter().map(|p| p.name).collect();
    println!(
        "{name} is up, listening on port {}, paths {}: configure it with `wg set {name} ...`",
        tunnel.listen_port(),
        paths.join(", ")
    );
    let stopper = tunnel.stopper();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            stopper.stop();
        }
    });
    let why = tunnel.wait();
    println!("{name} stopped: {why:?}");
    ExitCode::SUCCESS
}

/// What `mpwg interfaces` prints, from [`mpwg::interfaces`].
fn list() -> ExitCode {
    let list = match mpwg::interfaces() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    println!(
        "{:<6} {:<16} {:<6} {:<5} ADDRESSES",
        "INDEX", "NAME", "MTU", "UP"
    );
    for i in list {
        let addrs: Vec<String> = i
            .addresses
            .iter()
            .map(|(a, prefix)| format!("{a}/{prefix}"))
            .collect();
        println!(
            "{:<6} {:<16} {:<6} {:<5} {}",
            i.index,
            i.name,
            i.mtu,
            if i.up { "yes" } else { "no" },
            addrs.join(" ")
        );
    }
    ExitCode::SUCCESS
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("multipath: error: {e}");
    ExitCode::FAILURE
}
