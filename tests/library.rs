//! Issue "mpwg as a library": `examples/multipath.rs`, the seed's example built on the
//! library's `Builder`, run in a namespace on two interfaces (veth0 and veth1), is
//! configured with `wg set` like any WireGuard device, and a ping crosses it to an mpwg
//! daemon on the other side, its packets on both paths. With no arguments, the example
//! lists the interfaces, as `mpwg interfaces` does. SIGTERM stops it cleanly: exit
//! status 0, no UAPI socket and no TUN device left.
//!
//! Needs root, and prints a skip message and passes without it: `sudo cargo test
//! --release --test library`. `cargo test` builds the example first.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The example's binary, built beside mpwg's by `cargo test`.
fn example() -> PathBuf {
    let bin = std::path::Path::new(MPWG)
        .parent()
        .expect("mpwg's binary is in a directory")
        .join("examples/multipath");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds the examples",
        bin.display()
    );
    bin
}

/// The example running in a namespace: stopped (SIGTERM, then SIGKILL) on drop.
struct Example {
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl Example {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit status within 5 s.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_timeout(&mut child, STOP_TIMEOUT);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn the_multipath_example_lists_interfaces_and_carries_a_ping_on_two_paths() {
    let Some(_lab) = lab("the_multipath_example_lists_interfaces_and_carries_a_ping_on_two_paths")
    else {
        return;
    };
    let (ns_a, ns_b) = two_path_namespaces();
    let bin = example();
    let bin = bin.to_str().unwrap();

    // No arguments: the interfaces, with their indexes and addresses.
    let listing = ns_a.run(&[bin]);
    let veth0 = ns_a.ip(&["-o", "link", "show", "veth0"]);
    let index = veth0.split(':').next().unwrap().trim();
    let row = listing
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("veth0"))
        .unwrap_or_else(|| panic!("no veth0 in the listing:\n{listing}"));
    assert!(row.starts_with(index), "{row}: its index is {index}");
    assert!(row.contains("10.99.0.1/24"), "{row}");

    // With two interfaces (one by index): a tunnel on both, configured by `wg set`.
    let dev_a = unique_dev();
    let dir = TempDir::new();
    let log = dir.join("example.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = ns_a.command("env", &[]);
    cmd.args([
        format!("MPWG_EXAMPLE_NAME={dev_a}"),
        "MPWG_EXAMPLE_PORT=51820".into(),
        bin.into(),
        "veth0".into(),
    ]);
    let veth1 = ns_a.ip(&["-o", "link", "show", "veth1"]);
    cmd.arg(veth1.split(':').next().unwrap().trim());
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("starting the example");
    let mut ex = Example {
        child: Some(child),
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    while !ex.log().contains("is up") {
        assert!(
            Instant::now() < deadline,
            "the example did not come up within {READY_TIMEOUT:?}:\n{}",
            ex.log()
        );
        if let Some(c) = ex.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("the example exited ({status}):\n{}", ex.log());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ex.log().contains("paths veth0, veth1"),
        "both paths, by name: {}",
        ex.log()
    );

    let dev_b = unique_dev();
    let b = Daemon::mpwg(
        &ns_b,
        &dev_b,
        &[
            "--path",
            "veth0",
            "--path",
            "veth1",
            "--listen-port",
            "51821",
        ],
    );
    let (key_a, key_b) = (genkey(), genkey());
    let keys = TempDir::new();
    for (ns, dev, key, peer, endpoint, allowed) in [
        (
            &ns_a,
            &dev_a,
            &key_a,
            &key_b,
            "10.99.0.2:51821",
            "10.100.0.2/32",
        ),
        (
            &ns_b,
            &dev_b,
            &key_b,
            &key_a,
            "10.99.0.1:51820",
            "10.100.0.1/32",
        ),
    ] {
        let file = keys.secret_file(&format!("{dev}.key"), key);
        wg(
            ns,
            &[
                "set",
                dev,
                "private-key",
                file.to_str().unwrap(),
                "peer",
                &pubkey(peer),
                "endpoint",
                endpoint,
                "allowed-ips",
                allowed,
            ],
        );
    }
    for (ns, dev, addr) in [
        (&ns_a, &dev_a, "10.100.0.1/24"),
        (&ns_b, &dev_b, "10.100.0.2/24"),
    ] {
        ns.ip(&["addr", "add", addr, "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    assert!(
        ping_until(&ns_a, "10.100.0.2", Duration::from_secs(10)),
        "no ping reply through the example's tunnel:\n{}",
        ex.log()
    );
    assert_eq!(ping(&ns_a, "10.100.0.2", 5), 5, "{}", ex.log());
    // B received A's packets on both paths (duplicate mode: every packet on each).
    let json = ns_b.run(&[MPWG, "show", &dev_b, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    for p in status["paths"].as_array().unwrap() {
        assert!(
            p["rx_packets"].as_u64().unwrap() >= 6,
            "every path carried the pings: {json}"
        );
    }
    let shown = wg(&ns_a, &["show", &dev_a, "latest-handshakes"]);
    assert!(shown.contains(&pubkey(&key_b)), "{shown}");

    // SIGTERM: exit 0, nothing left.
    let status = ex.stop().expect("the example stops within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", ex.log());
    assert!(ex.log().contains("stopped: Requested"), "{}", ex.log());
    assert!(!uapi_socket(&dev_a).exists(), "the UAPI socket is left");
    assert!(
        !control_socket(&dev_a).exists(),
        "the control socket is left"
    );
    let links = ns_a.ip(&["-o", "link", "show"]);
    assert!(!links.contains(&dev_a), "the TUN device is left: {links}");
    drop(b);
}
