//! Attacks from the uplinks and reloads, in network namespaces: what an attacker on
//! another address of a path can do to a running tunnel, and what a reload costs.
//!
//! Counts (packets sent, cookies received, pings lost) are printed, and the assertions
//! are on what a user sees: ping loss, `wg show`, `mpwg show`, the daemon still up.
//! None of these exercise the datapath's `--cores`/`--batch` variants, so
//! `scripts/test.sh` runs this suite once, in its plain run.

mod common;

use common::*;

/// Listen port of the tunnels these tests build.
const PORT: u16 = 51830;

/// A second daemon on a port (and interfaces) a running one holds gets "port in use",
/// with paths as without: path sockets share their port by being bound to different
/// interfaces, not through SO_REUSEPORT, which would let the second one in silently.
#[test]
fn second_daemon_on_a_used_port_gets_port_in_use() {
    let Some(_lab) = lab("second_daemon_on_a_used_port_gets_port_in_use") else {
        return;
    };
    let ns = Netns::new();
    let other = Netns::new();
    veth(&ns, "up0", "10.98.0.1/24", &other, "up0", "10.98.0.2/24");
    veth(&ns, "up1", "10.98.1.1/24", &other, "up1", "10.98.1.2/24");
    let port = PORT.to_string();
    let first_dev = unique_dev();
    let mut first = Daemon::mpwg(
        &ns,
        &first_dev,
        &["--listen-port", &port, "--path", "up0", "--path", "up1"],
    );
    let attempts: [&[&str]; 3] = [&["--path", "up0", "--path", "up1"], &["--path", "up1"], &[]];
    for paths in attempts {
        let dev = unique_dev();
        let mut args = vec!["up", dev.as_str(), "--listen-port", &port];
        args.extend(paths);
        let (status, out) = mpwg_must_fail(&ns, &[], MPWG, &args);
        println!("mpwg {}: {status}: {}", args.join(" "), out.trim());
        assert_user_error(
            &format!("a second `mpwg {}` on a port in use", args.join(" ")),
            status,
            &out,
            &expect::port_in_use(PORT),
            &["in use"],
        );
        assert!(!uapi_socket(&dev).exists(), "a failed mpwg left its socket");
    }
    assert!(first.is_running(), "the first daemon stopped");
    let listening = wg(&ns, &["show", &first_dev, "listen-port"]);
    assert_eq!(listening.trim(), port);
}
