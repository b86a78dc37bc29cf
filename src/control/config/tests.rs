//! Unit tests of the configuration file reader.

use super::*;

fn b64(b: u8) -> String {
    Key([b; 32]).to_base64()
}

fn p(text: &str) -> Result<ParsedConfig, ConfigError> {
    parse(text, Path::new("wg0.conf"))
}

fn e(text: &str) -> String {
    p(text).unwrap_err().to_string()
}

#[test]
fn parses_a_full_file() {
    let text = format!(
        "\u{feff}# a comment\n\
         [Interface]\n\
         PrivateKey = {}  # trailing comment\n\
         listenport=51820\n\
         Address = 10.0.0.1/24\n\
         DNS = 1.1.1.1\n\
         FwMark = 0x10\n\
         PostUp = iptables -A FORWARD -i %i -j ACCEPT\n\
         \n\
         [peer]\n\
         PublicKey = {}\n\
         PresharedKey = {}\n\
         AllowedIPs = 10.0.0.2/32 , fd00::2/128,10.9.0.5/16\n\
         AllowedIPs = 192.0.2.0/24\n\
         Endpoint = 192.0.2.1:51820\n\
         PersistentKeepalive = 25\n\
         \r\n\
         [Peer]\n\
         PublicKey = {}\n\
         Endpoint = [2001:db8::1]:4500\n\
         PersistentKeepalive = off\n\
         AllowedIPs =\n\
         [ PEER ]\n\
         Public Key = {}\n",
        b64(1),
        b64(2),
        b64(3),
        b64(4),
        b64(5)
    );
    let cfg = p(&text).unwrap();
    let mut p2 = PeerUpdate::new(Key([2; 32]));
    p2.preshared_key = Some(Key([3; 32]));
    p2.replace_allowed_ips = true;
    p2.allowed_ips = ["10.0.0.2/32", "fd00::2/128", "10.9.0.0/16", "192.0.2.0/24"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    p2.endpoint = Some("192.0.2.1:51820".parse().unwrap());
    p2.persistent_keepalive = Some(25);
    let mut p4 = PeerUpdate::new(Key([4; 32]));
    p4.replace_allowed_ips = true;
    p4.endpoint = Some("[2001:db8::1]:4500".parse().unwrap());
    p4.persistent_keepalive = Some(0);
    let mut p5 = PeerUpdate::new(Key([5; 32]));
    p5.replace_allowed_ips = true;
    assert_eq!(
        cfg.request,
        SetRequest {
            private_key: Some(Key([1; 32])),
            listen_port: Some(51820),
            fwmark: Some(16),
            replace_peers: true,
            peers: vec![p2, p4, p5],
        }
    );
    let nh: Vec<(usize, &str)> = cfg
        .not_handled
        .iter()
        .map(|n| (n.line, n.key.as_str()))
        .collect();
    assert_eq!(nh, vec![(5, "Address"), (6, "DNS"), (8, "PostUp")]);
}

#[test]
fn empty_file_removes_every_peer() {
    let cfg = p("# nothing\n\n").unwrap();
    assert_eq!(
        cfg.request,
        SetRequest {
            replace_peers: true,
            ..SetRequest::default()
        }
    );
    assert!(cfg.not_handled.is_empty());
}

#[test]
fn values() {
    for (v, want) in [
        ("off", 0),
        ("0", 0),
        ("1234", 1234),
        ("0xff", 255),
        ("0XFF", 255),
    ] {
        let cfg = p(&format!("[Interface]\nFwMark = {v}\n")).unwrap();
        assert_eq!(cfg.request.fwmark, Some(want), "{v}");
    }
    for v in ["-1", "0x", "0x1g", "4294967296", "0x100000000", "on", ""] {
        let msg = e(&format!("[Interface]\nFwMark = {v}\n"));
        assert!(msg.starts_with("wg0.conf:2: bad FwMark: "), "{msg}");
    }
    for v in ["65536", "-1", "x", ""] {
        let msg = e(&format!("[Interface]\nListenPort = {v}\n"));
        assert!(msg.starts_with("wg0.conf:2: bad ListenPort: "), "{msg}");
    }
    let peer = format!("[Peer]\nPublicKey = {}\n", b64(2));
    for v in ["65536", "-5", "never"] {
        let msg = e(&format!("{peer}PersistentKeepalive = {v}\n"));
        assert!(
            msg.starts_with("wg0.conf:3: bad PersistentKeepalive: "),
            "{msg}"
        );
    }
    for v in ["10.0.0.0/33", "10.0.0.0/8 10.1.0.0/16", "nonsense"] {
        let msg = e(&format!("{peer}AllowedIPs = {v}\n"));
        assert!(msg.starts_with("wg0.conf:3: bad AllowedIPs: "), "{msg}");
    }
}

#[test]
fn endpoints() {
    let peer = format!("[Peer]\nPublicKey = {}\n", b64(2));
    let ep = |v: &str| e(&format!("{peer}Endpoint = {v}\n"));
    let msg = ep("vpn.example.com:51820");
    assert!(msg.starts_with("wg0.conf:3: bad Endpoint: "), "{msg}");
    assert!(msg.contains("mpwg needs an IP address"), "{msg}");
    assert!(ep("fd00::1:51820").contains("in brackets"));
    assert!(ep("192.0.2.1").contains("no port"));
    assert!(ep("192.0.2.1:99999").contains("port \"99999\""));
    assert!(ep("[fd00::1]").contains("expected IP:PORT"));
    assert!(ep("[nothost]:1").contains("expected IP:PORT"));
    assert!(ep("1.2.3.4.5:1").contains("host name"));
    assert!(ep(":51820").contains("expected IP:PORT"));
}

#[test]
fn structural_errors() {
    assert_eq!(
        e("[Interface]\n[Wat]\n"),
        "wg0.conf:2: unknown section [Wat]; mpwg knows [Interface], [Peer] and [Path]"
    );
    assert_eq!(
        e("\n[Interface]\nFoo = 1\n"),
        "wg0.conf:3: unknown key \"Foo\" in [Interface]"
    );
    assert_eq!(
        e("[Peer]\nAddress = 10.0.0.1/24\n"),
        "wg0.conf:2: unknown key \"Address\" in [Peer]"
    );
    assert_eq!(
        e("ListenPort = 1\n[Interface]\n"),
        "wg0.conf:1: \"ListenPort\" comes before any section; put it under [Interface] or [Peer]"
    );
    assert!(e("[Interface]\njust words\n").starts_with("wg0.conf:2: expected `Key = Value`"));
    assert!(e("[Peer\n").starts_with("wg0.conf:1: a section header must end with ']'"));
    assert_eq!(
        e("[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\n[Peer]\n"),
        "wg0.conf:3: this [Peer] has no PublicKey"
    );
    assert_eq!(
        e(&format!("[Peer]\nPublicKey = {}\n[Peer]\n", b64(1))),
        "wg0.conf:3: this [Peer] has no PublicKey"
    );
    let dup = format!(
        "[Peer]\nPublicKey = {}\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\nPublicKey = {}\n",
        b64(1),
        b64(1)
    );
    assert_eq!(
        e(&dup),
        "wg0.conf:6: duplicate peer: the [Peer] at line 1 has the same PublicKey; \
         merge the two sections"
    );
    let twice = format!("[Peer]\nPublicKey = {}\nPublicKey = {}\n", b64(1), b64(2));
    assert!(e(&twice).contains("already has a PublicKey (line 2)"));
}

#[test]
fn key_errors_never_echo_the_value() {
    let secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0";
    for (section, key) in [
        ("Interface", "PrivateKey"),
        ("Peer", "PresharedKey"),
        ("Peer", "PublicKey"),
    ] {
        let pk = if key == "PresharedKey" {
            format!("PublicKey = {}\n", b64(1))
        } else {
            String::new()
        };
        let msg = e(&format!("[{section}]\n{pk}{key} = {secret}\n"));
        assert!(
            msg.contains(&format!("bad {key}: not a valid base64 key")),
            "{msg}"
        );
        assert!(!msg.contains(secret), "{msg}");
    }
}

#[test]
fn paths_and_mode_are_mpwg_keys() {
    let cfg = p(
        "[Interface]\nmode = Duplicate\n\n[Path]\nInterface = eth1\n\
                 [path]  # the second uplink\ninterface=wwan0\nPriority = 0\nweight = 0.5\n",
    )
    .unwrap();
    assert_eq!(cfg.mode, Some("duplicate"));
    assert_eq!(
        cfg.paths,
        vec![
            ConfigPath {
                interface: "eth1".into(),
                line: 5,
                priority: None,
                weight: None,
            },
            ConfigPath {
                interface: "wwan0".into(),
                line: 7,
                priority: Some(0),
                weight: Some(0.5),
            }
        ]
    );
    assert_eq!(cfg.request.peers, vec![]);
    let none = p("[Interface]\nListenPort = 1\n").unwrap();
    assert_eq!((none.mode, none.paths.len()), (None, 0));
}

#[test]
fn path_and_mode_errors_name_the_line() {
    assert_eq!(
        e("[Interface]\nMode = bond\n"),
        "wg0.conf:2: bad Mode: \"bond\" is not a mode this mpwg has: duplicate, failover, \
         aggregate or adaptive"
    );
    assert_eq!(
        e("[Path]\nInterface = eth1\nMetric = 1\n"),
        "wg0.conf:3: unknown key \"Metric\" in [Path]"
    );
    assert_eq!(
        e("[Path]\nInterface = eth1\nPriority = -1\n"),
        "wg0.conf:3: bad Priority: \"-1\" is not a whole number from 0 to 4294967295"
    );
    assert_eq!(
        e("[Path]\nInterface = eth1\nWeight = 0\n"),
        "wg0.conf:3: bad Weight: \"0\" is not a weight: a number above 0, as in 2 or 0.5"
    );
    assert_eq!(
        e("[Interface]\n[Path]\n# nothing\n[Peer]\n"),
        "wg0.conf:2: this [Path] has no Interface (as in `Interface = eth1`)"
    );
    assert_eq!(
        e("[Path]\nInterface = eth1\n[Path]\nInterface = eth1\n"),
        "wg0.conf:4: interface eth1 already has a [Path] (line 2): each path needs its \
         own interface"
    );
    assert!(e("[Path]\nInterface = eth1\nInterface = eth2\n")
        .starts_with("wg0.conf:3: bad Interface: this [Path] already has an Interface (line 2)"));
    assert!(e("[Path]\nInterface = a/b\n")
        .starts_with("wg0.conf:2: bad Interface: invalid interface name \"a/b\""));
    assert_eq!(
        e("[Peer]\nPublicKey = x\nMode = duplicate\n"
            .replace('x', &b64(1))
            .as_str()),
        "wg0.conf:3: unknown key \"Mode\" in [Peer]"
    );
}

#[test]
fn strip_leaves_what_wg_setconf_reads() {
    let text = format!(
        "[Interface]\nPrivateKey = {}\nMode = duplicate\nAddress = 10.0.0.1/24\n\
         ListenPort = 51820\n\n[Path]\nInterface = eth1\n# a comment in the path\n\
         [ Peer ]\nPublicKey = {}\nAllowedIPs = 10.0.0.2/32\n[Path]\nInterface = wwan0\n",
        b64(1),
        b64(2)
    );
    let stripped = strip(&text);
    assert_eq!(
        stripped,
        format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51820\n\n[ Peer ]\nPublicKey = {}\n\
             AllowedIPs = 10.0.0.2/32\n",
            b64(1),
            b64(2)
        )
    );
    // What is left parses to the same WireGuard configuration, with nothing of mpwg's.
    let (full, left) = (p(&text).unwrap(), p(&stripped).unwrap());
    assert_eq!(full.request, left.request);
    assert!(left.paths.is_empty() && left.mode.is_none() && left.not_handled.is_empty());
}

#[test]
fn load_names_the_file() {
    let missing = Path::new("/nonexistent/mpwg/wg9.conf");
    let msg = load(missing).unwrap_err().to_string();
    assert!(
        msg.starts_with("cannot read /nonexistent/mpwg/wg9.conf: "),
        "{msg}"
    );

    let file = std::env::temp_dir().join(format!("mpwg-config-test-{}.conf", std::process::id()));
    std::fs::write(&file, format!("[Interface]\nPrivateKey = {}\n", b64(7))).unwrap();
    let cfg = load(&file).unwrap();
    assert_eq!(cfg.request.private_key, Some(Key([7; 32])));
    std::fs::write(&file, "[Interface]\nListenPort = x\n").unwrap();
    let msg = load(&file).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}:2: bad ListenPort", file.display())),
        "{msg}"
    );
    std::fs::remove_file(&file).unwrap();
}
