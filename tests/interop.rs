//! Issue "foundation": mpwg is a WireGuard peer that wg(8) configures and that talks to
//! stock WireGuard (Debian's wireguard-go), survives bad input, and fails with errors a
//! user can act on.
//!
//! Each test builds its own lab of network namespaces (see `common`), needs root, and
//! prints a skip message and passes without it. Run them with `sudo scripts/test.sh`,
//! or just these: `sudo cargo test --release --test interop`.

mod common;

use common::*;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Size of each TCP transfer through a tunnel.
const TRANSFER: usize = 20 * 1024 * 1024;
/// Bytes one side may count that the other does not see: handshake messages and
/// keepalives counted differently by two implementations, or in flight between the
/// two `wg show dump` reads.
const COUNTER_SLACK: u64 = 16 * 1024;
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const UAPI_TIMEOUT: Duration = Duration::from_secs(5);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assert_recent_handshake(who: &str, p: &PeerDump) {
    assert!(
        p.latest_handshake > 0,
        "{who}: no handshake recorded: {p:?}"
    );
    let age = now().saturating_sub(p.latest_handshake);
    assert!(age < 120, "{who}: latest handshake is {age} s old: {p:?}");
}

/// A received-byte counter against the sender's transmitted-byte counter (the receiver
/// was read first): at least the payload got through, and no more arrived than was sent.
fn assert_counters(direction: &str, tx_sender: u64, rx_receiver: u64) {
    let payload = TRANSFER as u64;
    assert!(
        tx_sender >= payload,
        "{direction}: sender counted {tx_sender} bytes sent, below the {payload}-byte payload"
    );
    assert!(
        rx_receiver >= payload,
        "{direction}: receiver counted {rx_receiver} bytes received, below the {payload}-byte payload"
    );
    assert!(
        rx_receiver <= tx_sender + COUNTER_SLACK,
        "{direction}: receiver counted {rx_receiver} bytes received but the sender only {tx_sender} sent"
    );
}

/// Ping both ways, move 20 MiB each way over TCP (checked byte for byte), and check
/// what `wg show dump` says on both sides.
fn exercise(pair: &Pair) {
    let (a, b) = (&pair.a, &pair.b);
    assert!(
        ping_until(&a.ns, &b.tunnel, PING_TIMEOUT),
        "no ping reply A -> B through the tunnel"
    );
    assert_eq!(ping(&a.ns, &b.tunnel, 5), 5, "ping A -> B lost packets");
    assert_eq!(ping(&b.ns, &a.tunnel, 5), 5, "ping B -> A lost packets");

    let t = tcp_transfer(&a.ns, &b.ns, &b.tunnel, TRANSFER, 1);
    eprintln!("{TRANSFER} bytes A -> B in {t:?}");
    let t = tcp_transfer(&b.ns, &a.ns, &a.tunnel, TRANSFER, 2);
    eprintln!("{TRANSFER} bytes B -> A in {t:?}");

    thread::sleep(Duration::from_millis(300));
    let (b1, a_dump, b2) = pair.dumps();
    let pa = a_dump.peer(&b.public_key);
    let pb1 = b1.peer(&a.public_key);
    let pb2 = b2.peer(&a.public_key);
    assert_recent_handshake("A's view of B", pa);
    assert_recent_handshake("B's view of A", pb2);
    assert_eq!(
        pa.endpoint.as_deref(),
        Some(b.endpoint().as_str()),
        "A's endpoint for B"
    );
    assert_eq!(
        pb2.endpoint.as_deref(),
        Some(a.endpoint().as_str()),
        "B's endpoint for A"
    );
    eprintln!(
        "counters: A tx {} rx {}; B rx {} tx {}",
        pa.tx, pa.rx, pb1.rx, pb2.tx
    );
    assert_counters("A -> B", pa.tx, pb1.rx);
    assert_counters("B -> A", pb2.tx, pa.rx);
    assert_eq!(
        a_dump.public_key.as_deref(),
        Some(a.public_key.as_str()),
        "A's public key"
    );
    assert_eq!(a_dump.listen_port, a.port, "A's listen port");
}

#[test]
fn mpwg_interoperates_with_wireguard_go() {
    let Some(_lab) = lab("mpwg_interoperates_with_wireguard_go") else {
        return;
    };
    let pair = Pair::new(Impl::Mpwg, Impl::WireguardGo, Endpoints::Both);
    exercise(&pair);
    pair.a.daemon.stop();
}

#[test]
fn mpwg_interoperates_with_mpwg() {
    let Some(_lab) = lab("mpwg_interoperates_with_mpwg") else {
        return;
    };
    let pair = Pair::new(Impl::Mpwg, Impl::Mpwg, Endpoints::Both);
    exercise(&pair);
    pair.a.daemon.stop();
    pair.b.daemon.stop_with(libc::SIGINT);
}

/// Only the initiator knows an endpoint; the responder learns it from the handshake
/// and can then send on its own. Run with -vv, and check no key shows up in the log.
fn handshake_started_by(initiator_is_mpwg: bool) {
    let endpoints = if initiator_is_mpwg {
        Endpoints::OnlyA
    } else {
        Endpoints::OnlyB
    };
    let pair = Pair::with_args(Impl::Mpwg, Impl::WireguardGo, endpoints, &["-vv"]);
    let (init, resp) = if initiator_is_mpwg {
        (&pair.a, &pair.b)
    } else {
        (&pair.b, &pair.a)
    };

    assert_eq!(
        resp.dump().peer(&init.public_key).endpoint,
        None,
        "responder has no endpoint yet"
    );
    assert!(
        ping_until(&init.ns, &resp.tunnel, PING_TIMEOUT),
        "no ping reply from the responder to the initiator's first ping"
    );
    let learned = resp.dump().peer(&init.public_key).endpoint.clone();
    assert_eq!(
        learned.as_deref(),
        Some(init.endpoint().as_str()),
        "responder learned the initiator's endpoint"
    );
    assert_eq!(
        ping(&resp.ns, &init.tunnel, 3),
        3,
        "ping from the responder, which had no endpoint configured"
    );
    assert_eq!(
        ping(&init.ns, &resp.tunnel, 3),
        3,
        "ping from the initiator"
    );
    assert_recent_handshake("initiator", init.dump().peer(&resp.public_key));
    assert_recent_handshake("responder", resp.dump().peer(&init.public_key));

    let log = pair.a.daemon.log();
    assert_no_secrets(
        "mpwg -vv log",
        &log,
        &[&pair.a.private_key, &pair.b.private_key],
    );
    pair.a.daemon.stop();
}

#[test]
fn handshake_started_by_mpwg() {
    let Some(_lab) = lab("handshake_started_by_mpwg") else {
        return;
    };
    handshake_started_by(true);
}

#[test]
fn handshake_started_by_wireguard_go() {
    let Some(_lab) = lab("handshake_started_by_wireguard_go") else {
        return;
    };
    handshake_started_by(false);
}

/// Thousands of datagrams that are not WireGuard (or are, with random contents) at
/// mpwg's port, from the peer's own address and from localhost: nothing changes, the
/// peer's endpoint is not hijacked, and the tunnel still carries traffic.
#[test]
fn garbage_udp_changes_nothing() {
    let Some(_lab) = lab("garbage_udp_changes_nothing") else {
        return;
    };
    let pair = Pair::new(Impl::Mpwg, Impl::WireguardGo, Endpoints::Both);
    let (a, b) = (&pair.a, &pair.b);
    assert!(
        ping_until(&a.ns, &b.tunnel, PING_TIMEOUT),
        "no ping reply before the flood"
    );
    let before = a.dump().config();

    let garbage = udp_garbage(4000, 0x6a7b);
    let sent = udp_flood(&b.ns, &a.endpoint(), &garbage);
    let sent_lo = udp_flood(&a.ns, &format!("127.0.0.1:{}", a.port), &garbage[..1200]);
    eprintln!("sent {sent} garbage datagrams from B and {sent_lo} on A's loopback");
    assert!(sent > 3000, "the flood did not go out ({sent} sent)");
    thread::sleep(Duration::from_millis(500));

    assert!(
        is_running(&pair),
        "mpwg stopped answering wg(8) after the flood"
    );
    assert_eq!(
        a.dump().config(),
        before,
        "the flood changed mpwg's configuration or endpoint"
    );
    assert!(
        ping_until(&a.ns, &b.tunnel, PING_TIMEOUT),
        "no ping reply after the flood"
    );
    assert_eq!(ping(&a.ns, &b.tunnel, 5), 5, "ping A -> B after the flood");
    assert_eq!(ping(&b.ns, &a.tunnel, 5), 5, "ping B -> A after the flood");
    tcp_transfer(&b.ns, &a.ns, &a.tunnel, 1024 * 1024, 3);
    assert_eq!(
        a.dump().peer(&b.public_key).endpoint.as_deref(),
        Some(b.endpoint().as_str())
    );
    pair.a.daemon.stop();
}

fn is_running(pair: &Pair) -> bool {
    // `wg show` answering is the daemon's sign of life that needs no &mut.
    std::process::Command::new("wg")
        .args(["show", &pair.a.dev])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Malformed UAPI requests get an error (or a hang-up), change nothing, and crash
/// nothing; a client that stalls mid-request does not block other clients.
#[test]
fn malformed_uapi_requests_are_rejected() {
    let Some(_lab) = lab("malformed_uapi_requests_are_rejected") else {
        return;
    };
    let pair = Pair::new(Impl::Mpwg, Impl::WireguardGo, Endpoints::Both);
    let (a, b) = (&pair.a, &pair.b);
    assert!(
        ping_until(&a.ns, &b.tunnel, PING_TIMEOUT),
        "no ping reply before the bad requests"
    );
    let before = a.dump().config();
    let peer = key_hex(&b.public_key);

    // A set with a bad line: the reply must carry a nonzero errno.
    let must_reject: Vec<(&str, Vec<u8>)> = vec![
        (
            "listen_port not a number",
            b"set=1\nlisten_port=abc\n\n".to_vec(),
        ),
        (
            "listen_port out of range",
            b"set=1\nlisten_port=70000\n\n".to_vec(),
        ),
        (
            "public_key not a key",
            b"set=1\npublic_key=zzzz\n\n".to_vec(),
        ),
        (
            "private_key too short",
            b"set=1\nprivate_key=abcd\n\n".to_vec(),
        ),
        (
            "private_key not hex",
            format!("set=1\nprivate_key={}\n\n", "zz".repeat(32)).into_bytes(),
        ),
        (
            "allowed_ip before any public_key",
            b"set=1\nallowed_ip=10.0.0.0/8\n\n".to_vec(),
        ),
        (
            "allowed_ip prefix too long",
            format!("set=1\npublic_key={peer}\nallowed_ip=10.1.2.3/33\n\n").into_bytes(),
        ),
        (
            "endpoint not an address",
            format!("set=1\npublic_key={peer}\nendpoint=nonsense\n\n").into_bytes(),
        ),
        (
            "keepalive out of range",
            format!("set=1\npublic_key={peer}\npersistent_keepalive_interval=70000\n\n")
                .into_bytes(),
        ),
        ("unknown key", b"set=1\nfrobnicate=1\n\n".to_vec()),
        ("line without '='", b"set=1\nlisten_port\n\n".to_vec()),
    ];
    // Anything goes (an error reply or a hang-up) as long as the daemon lives on and
    // nothing changes; an errno in a reply must be nonzero.
    let mut huge = b"set=1\npublic_key=".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend_from_slice(b"\n\n");
    let mut junk = Rng::new(99).bytes(4096);
    junk.retain(|&c| c != b'\n');
    let must_survive: Vec<(&str, Vec<u8>)> = vec![
        ("raw garbage", b"\x00\xffgarbage\x01\x02\n\n".to_vec()),
        ("unknown operation", b"frobnicate=1\n\n".to_vec()),
        ("a 1 MiB line", huge),
        ("binary junk without a newline, then EOF", junk),
        ("empty line", b"\n".to_vec()),
        ("truncated set, then EOF", b"set=1\npublic_key=abc".to_vec()),
        ("set=0", b"set=0\n\n".to_vec()),
        ("get with a value other than 1", b"get=2\n\n".to_vec()),
    ];

    for (what, req) in &must_reject {
        let reply = uapi(&a.dev, req, UAPI_TIMEOUT);
        match reply.errno() {
            Some(e) if e != 0 => {}
            _ => panic!(
                "UAPI request with {what}: expected a reply with a nonzero errno, got {reply:?}"
            ),
        }
        assert_eq!(
            a.dump().config(),
            before,
            "UAPI request with {what} changed the configuration"
        );
    }
    for (what, req) in &must_survive {
        let reply = uapi(&a.dev, req, UAPI_TIMEOUT);
        assert_ne!(
            reply,
            UapiReply::Timeout,
            "UAPI request with {what}: no reply and no hang-up in {UAPI_TIMEOUT:?}"
        );
        if let Some(e) = reply.errno() {
            assert_ne!(e, 0, "UAPI request with {what} was accepted: {reply:?}");
        }
        assert!(
            is_running(&pair),
            "mpwg stopped answering after a UAPI request with {what}"
        );
        assert_eq!(
            a.dump().config(),
            before,
            "UAPI request with {what} changed the configuration"
        );
    }

    // Stalled clients: one that sent half a request, one that sent nothing.
    let mut half = std::os::unix::net::UnixStream::connect(uapi_socket(&a.dev)).unwrap();
    std::io::Write::write_all(&mut half, b"get=1\n").unwrap();
    let _silent = std::os::unix::net::UnixStream::connect(uapi_socket(&a.dev)).unwrap();
    let out = a.ns.exec(&["timeout", "5", "wg", "show", &a.dev, "dump"]);
    assert!(
        out.status.success(),
        "`wg show` blocked or failed while another UAPI client stalled"
    );
    drop(half);

    let good = uapi(&a.dev, b"get=1\n\n", UAPI_TIMEOUT);
    assert_eq!(
        good.errno(),
        Some(0),
        "a good get after the bad requests: {good:?}"
    );
    assert!(
        ping_until(&a.ns, &b.tunnel, PING_TIMEOUT),
        "no ping reply after the bad requests"
    );
    assert_eq!(
        ping(&b.ns, &a.tunnel, 3),
        3,
        "ping B -> A after the bad requests"
    );
    pair.a.daemon.stop();
}

/// The design's invariant, stricter than wireguard-go (which applies a set line by
/// line): a set request with a bad line anywhere changes nothing, not even the lines
/// before it.
#[test]
fn uapi_set_with_a_bad_line_is_all_or_nothing() {
    let Some(_lab) = lab("uapi_set_with_a_bad_line_is_all_or_nothing") else {
        return;
    };
    let ns = Netns::new();
    let dev = unique_dev();
    let d = Daemon::mpwg(&ns, &dev, &[]);
    let dir = TempDir::new();
    let key = dir.secret_file("k", &genkey());
    let peer = pubkey(&genkey());
    wg(
        &ns,
        &[
            "set",
            &dev,
            "listen-port",
            "51820",
            "private-key",
            key.to_str().unwrap(),
            "peer",
            &peer,
        ],
    );
    wg(
        &ns,
        &[
            "set",
            &dev,
            "peer",
            &peer,
            "allowed-ips",
            "10.100.0.2/32",
            "endpoint",
            "10.99.0.2:51821",
        ],
    );
    let before = dump(&ns, &dev).config();
    let peer_hex = key_hex(&peer);
    let new_hex = key_hex(&pubkey(&genkey()));
    let requests = [
        ("a good listen_port, then a bad one", "set=1\nlisten_port=5555\nlisten_port=abc\n\n".to_string()),
        (
            "a new peer, then a bad public_key",
            format!("set=1\npublic_key={new_hex}\nallowed_ip=10.7.0.0/16\npublic_key=zzzz\n\n"),
        ),
        (
            "replaced allowed IPs, then a bad one",
            format!("set=1\npublic_key={peer_hex}\nreplace_allowed_ips=true\nallowed_ip=10.8.0.0/16\nallowed_ip=bogus\n\n"),
        ),
        ("replace_peers, then a bad line", "set=1\nreplace_peers=true\nlisten_port=x\n\n".to_string()),
        (
            "a peer removed, then a bad line",
            format!("set=1\npublic_key={peer_hex}\nremove=true\nlisten_port=x\n\n"),
        ),
    ];
    for (what, req) in requests {
        let reply = uapi(&dev, req.as_bytes(), UAPI_TIMEOUT);
        assert!(
            matches!(reply.errno(), Some(e) if e != 0),
            "{what}: expected a nonzero errno, got {reply:?}"
        );
        assert_eq!(
            dump(&ns, &dev).config(),
            before,
            "{what}: the lines before the bad one were applied"
        );
    }
    d.stop();
}

/// `wg showconf` of one mpwg restored with `wg setconf` on another gives the same
/// configuration back; `wg syncconf` then moves it to a new one.
#[test]
fn showconf_round_trips_through_setconf_and_syncconf() {
    let Some(_lab) = lab("showconf_round_trips_through_setconf_and_syncconf") else {
        return;
    };
    // No veth: the namespaces hold nothing but lo, so the endpoints below lead nowhere.
    let (ns1, ns2) = (Netns::new(), Netns::new());
    let (dev1, dev2) = (unique_dev(), unique_dev());
    let d1 = Daemon::mpwg(&ns1, &dev1, &[]);
    let d2 = Daemon::mpwg(&ns2, &dev2, &[]);
    let dir = TempDir::new();
    let private = genkey();
    let key = dir.secret_file("key", &private);
    let psk = dir.secret_file("psk", &genpsk());
    let (p1, p2, p3) = (pubkey(&genkey()), pubkey(&genkey()), pubkey(&genkey()));
    wg(
        &ns1,
        &[
            "set",
            &dev1,
            "private-key",
            key.to_str().unwrap(),
            "listen-port",
            "51820",
        ],
    );
    wg(
        &ns1,
        &[
            "set",
            &dev1,
            "peer",
            &p1,
            "preshared-key",
            psk.to_str().unwrap(),
            "endpoint",
            "10.99.0.2:51821",
            "allowed-ips",
            "10.100.0.2/32,10.200.0.0/16,fd00:100::/64",
            "persistent-keepalive",
            "25",
        ],
    );
    wg(
        &ns1,
        &[
            "set",
            &dev1,
            "peer",
            &p2,
            "endpoint",
            "[fd00::2]:51000",
            "allowed-ips",
            "10.201.0.0/24",
        ],
    );

    let conf1 = wg(&ns1, &["showconf", &dev1]);
    let n1 = normalize_conf(&conf1);
    assert_eq!(
        n1.len(),
        3,
        "showconf of {dev1} has an interface and two peers:\n{conf1}"
    );
    assert_eq!(
        n1[0].get("privatekey"),
        Some(&private),
        "showconf private key:\n{conf1}"
    );
    assert_eq!(
        n1[0].get("listenport").map(String::as_str),
        Some("51820"),
        "showconf listen port:\n{conf1}"
    );
    let peer1 = n1
        .iter()
        .find(|s| s.get("publickey") == Some(&p1))
        .expect("peer 1 in showconf");
    assert!(
        peer1.contains_key("presharedkey"),
        "showconf lost the preshared key:\n{conf1}"
    );
    assert_eq!(
        peer1.get("persistentkeepalive").map(String::as_str),
        Some("25"),
        "keepalive:\n{conf1}"
    );
    assert_eq!(
        peer1["allowedips"].split(',').count(),
        3,
        "allowed IPs of peer 1:\n{conf1}"
    );

    let file = dir.file("dev1.conf", &conf1);
    wg(&ns2, &["setconf", &dev2, file.to_str().unwrap()]);
    let conf2 = wg(&ns2, &["showconf", &dev2]);
    assert_eq!(
        normalize_conf(&conf2),
        n1,
        "setconf(showconf) differs:\n--- {dev1}\n{conf1}\n--- {dev2}\n{conf2}"
    );
    assert_eq!(
        dump(&ns2, &dev2).public_key,
        dump(&ns1, &dev1).public_key,
        "same private key, same public key"
    );

    let psk_text = std::fs::read_to_string(&psk).unwrap();
    let conf3 = format!(
        "[Interface]\nPrivateKey = {private}\nListenPort = 51900\n\n\
         [Peer]\nPublicKey = {p1}\nPresharedKey = {}\nAllowedIPs = 10.100.0.2/32\n\
         Endpoint = 10.99.0.2:51821\nPersistentKeepalive = 25\n\n\
         [Peer]\nPublicKey = {p3}\nAllowedIPs = 10.202.0.0/24\n",
        psk_text.trim()
    );
    let file3 = dir.file("dev2-new.conf", &conf3);
    wg(&ns2, &["syncconf", &dev2, file3.to_str().unwrap()]);
    let conf2b = wg(&ns2, &["showconf", &dev2]);
    assert_eq!(
        normalize_conf(&conf2b),
        normalize_conf(&conf3),
        "after syncconf:\n--- wanted\n{conf3}\n--- got\n{conf2b}"
    );
    d1.stop();
    d2.stop();
}

// ---------------------------------------------------------------------------------
// The command line, and errors a user can act on
// ---------------------------------------------------------------------------------

fn assert_no_leftovers(ns: &Netns, dev: &str) {
    for sock in [uapi_socket(dev), control_socket(dev)] {
        assert!(
            !sock.exists(),
            "a failed mpwg left {} behind",
            sock.display()
        );
    }
    let out = ns.exec(&["ip", "link", "show", "dev", dev]);
    assert!(
        !out.status.success(),
        "a failed mpwg left device {dev} behind in {}",
        ns.name()
    );
}

/// `--listen-port`, `--mtu` and `--config` take effect; the device starts down.
#[test]
fn up_applies_its_options_and_config_file() {
    let Some(_lab) = lab("up_applies_its_options_and_config_file") else {
        return;
    };
    let ns = Netns::new();
    let dev = unique_dev();
    let d = Daemon::mpwg(&ns, &dev, &["--listen-port", "51999", "--mtu", "1380"]);
    assert_eq!(dump(&ns, &dev).listen_port, 51999, "--listen-port");
    let link = ns.ip(&["-o", "link", "show", "dev", &dev]);
    assert!(link.contains("mtu 1380"), "--mtu 1380: {link}");
    assert!(
        !link.contains(",UP"),
        "the device should start down: {link}"
    );
    d.stop();

    let dir = TempDir::new();
    let private = genkey();
    let (p1, p2) = (pubkey(&genkey()), pubkey(&genkey()));
    let psk = genpsk();
    let conf = format!(
        "# a comment\n[Interface]\nPrivateKey = {private}\nListenPort = 51821\n\n\
         [Peer]\n# peer one\nPublicKey = {p1}\nPresharedKey = {psk}\n\
         AllowedIPs = 10.100.0.2/32, 10.200.0.0/16\nEndpoint = 10.99.0.2:51820\nPersistentKeepalive = 25\n\n\
         [Peer]\nPublicKey = {p2}\nAllowedIPs = fd00:100::/64\n"
    );
    let file = dir.file("mpwg.conf", &conf);
    let dev = unique_dev();
    let d = Daemon::mpwg(&ns, &dev, &["--config", file.to_str().unwrap()]);
    let shown = wg(&ns, &["showconf", &dev]);
    assert_eq!(
        normalize_conf(&shown),
        normalize_conf(&conf),
        "--config {}:\n--- file\n{conf}\n--- wg showconf\n{shown}",
        file.display()
    );
    d.stop();
}

#[test]
fn error_device_name_taken() {
    let Some(_lab) = lab("error_device_name_taken") else {
        return;
    };
    let ns = Netns::new();
    let dev = unique_dev();
    let first = Daemon::mpwg(&ns, &dev, &[]);

    // The same name again, in the same namespace.
    let (status, out) = mpwg_must_fail(&ns, &[], MPWG, &["up", &dev]);
    assert_user_error(
        "second `mpwg up` with a taken name",
        status,
        &out,
        &expect::name_taken(&dev),
        &[],
    );
    // The same name in another namespace: the UAPI socket is shared, so it is taken too,
    // and the running daemon must keep its socket.
    let other = Netns::new();
    let (status, out) = mpwg_must_fail(&other, &[], MPWG, &["up", &dev]);
    assert_user_error(
        "`mpwg up` with a name served from another namespace",
        status,
        &out,
        &expect::name_taken(&dev),
        &[],
    );
    for sock in [uapi_socket(&dev), control_socket(&dev)] {
        assert!(
            sock.exists(),
            "the failed second daemon removed the first one's {}",
            sock.display()
        );
    }
    wg(&ns, &["set", &dev, "listen-port", "51999"]);
    assert_eq!(
        dump(&ns, &dev).listen_port,
        51999,
        "the first daemon still answers wg(8)"
    );
    first.stop();

    // A name held by a device that is not ours (a veth: this kernel has no dummy).
    let taken = unique_dev();
    let taken_peer = unique_dev();
    ns.ip(&[
        "link",
        "add",
        &taken,
        "type",
        "veth",
        "peer",
        "name",
        &taken_peer,
    ]);
    let (status, out) = mpwg_must_fail(&ns, &[], MPWG, &["up", &taken]);
    assert_user_error(
        "`mpwg up` over an existing veth device",
        status,
        &out,
        &expect::name_taken(&taken),
        &[],
    );
    ns.ip(&["link", "show", "dev", &taken]);
    assert!(
        !uapi_socket(&taken).exists(),
        "a failed mpwg left its socket behind"
    );
}

#[test]
fn error_listen_port_in_use() {
    let Some(_lab) = lab("error_listen_port_in_use") else {
        return;
    };
    let ns = Netns::new();
    let holder = ns.udp_bind("0.0.0.0:0").expect("bind a UDP port");
    let port = holder.local_addr().unwrap().port();
    let dev = unique_dev();
    let (status, out) = mpwg_must_fail(
        &ns,
        &[],
        MPWG,
        &["up", &dev, "--listen-port", &port.to_string()],
    );
    assert_user_error(
        "`mpwg up --listen-port` of a port in use",
        status,
        &out,
        &expect::port_in_use(port),
        &[],
    );
    assert_no_leftovers(&ns, &dev);
}

#[test]
fn error_bad_config_line() {
    let Some(_lab) = lab("error_bad_config_line") else {
        return;
    };
    let ns = Netns::new();
    let dir = TempDir::new();
    let key = genkey();
    let peer = pubkey(&genkey());
    let cases = [
        (3, format!("[Interface]\nPrivateKey = {key}\nListenPort = notaport\n")),
        (2, "[Interface]\nPrivateKey = not-a-key\n".to_string()),
        (4, format!("[Interface]\nPrivateKey = {key}\n\nthis line has no equals sign\n")),
        (5, format!("[Interface]\nPrivateKey = {key}\n[Peer]\nPublicKey = {peer}\nAllowedIPs = 10.0.0.0/33\n")),
        (5, format!("[Interface]\nPrivateKey = {key}\n[Peer]\nPublicKey = {peer}\nEndpoint = nowhere\n")),
        (3, format!("[Interface]\nPrivateKey = {key}\nNoSuchKey = 1\n")),
    ];
    for (i, (line, text)) in cases.iter().enumerate() {
        let file = dir.file(&format!("bad{i}.conf"), text);
        let path = file.to_str().unwrap();
        let dev = unique_dev();
        let (status, out) = mpwg_must_fail(&ns, &[], MPWG, &["up", &dev, "--config", path]);
        assert_user_error(
            &format!("`mpwg up --config` with a bad line {line}:\n{text}"),
            status,
            &out,
            &expect::bad_config_line(path, *line),
            &[],
        );
        assert_no_leftovers(&ns, &dev);
    }
}

#[test]
fn error_not_root() {
    let Some(_lab) = lab("error_not_root") else {
        return;
    };
    let ns = Netns::new();
    // A copy nobody can reach and run, wherever the build tree lives.
    let dir = TempDir::new();
    let bin = dir.join("mpwg");
    std::fs::copy(MPWG, &bin).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dev = unique_dev();
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let (status, out) = mpwg_must_fail(&ns, &nobody, bin.to_str().unwrap(), &["up", &dev]);
    assert_user_error(
        "`mpwg up` as nobody",
        status,
        &out,
        &[],
        expect::NOT_ROOT_ANY_OF,
    );
    assert_no_leftovers(&ns, &dev);
}
