//! Two tunnels in one process, through the library alone: their TUN devices are the
//! program's ([`mpwg::TunDevice`]) and so are their paths ([`mpwg::Transport`], two
//! in-memory paths between them). No root, no socket, no namespace: this runs in a plain
//! `cargo test`. They complete a handshake, exchange packets both ways (each sent on
//! both paths, the first copy delivered), add and remove paths while running, and stop,
//! every thread joined. The errors of the builder and of `set` say what is wrong.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

/// A TUN device made of two queues: what the test writes to `outbound` goes into the
/// tunnel; what comes out of it lands in `inbound`.
struct ChannelTun {
    outbound: Receiver<Vec<u8>>,
    inbound: Sender<Vec<u8>>,
}

impl mpwg::TunDevice for ChannelTun {
    fn read(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        match self.outbound.recv_timeout(timeout) {
            Ok(p) => {
                buf[..p.len()].copy_from_slice(&p);
                Ok(Some(p.len()))
            }
            Err(_) => Ok(None),
        }
    }

    fn write(&self, packet: &[u8]) -> std::io::Result<()> {
        let _ = self.inbound.send(packet.to_vec());
        Ok(())
    }
}

/// The test's end of a [`ChannelTun`].
struct Host {
    send: Sender<Vec<u8>>,
    recv: Receiver<Vec<u8>>,
}

fn channel_tun() -> (ChannelTun, Host) {
    let (to_tunnel, outbound) = unbounded();
    let (inbound, from_tunnel) = unbounded();
    (
        ChannelTun { outbound, inbound },
        Host {
            send: to_tunnel,
            recv: from_tunnel,
        },
    )
}

/// Two in-memory wires between two ends; what end `i` sends on a path arrives at the
/// other end, on the path of the same name, from end `i`'s address. Counts datagrams.
#[derive(Default)]
struct Wire {
    ends: [OnceLock<mpwg::Inbound>; 2],
    carried: Mutex<usize>,
}

/// One end of a [`Wire`], the transport of one tunnel.
struct End {
    wire: Arc<Wire>,
    side: usize,
}

fn address(side: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1 + side as u8], 51820))
}

impl mpwg::Transport for End {
    fn attach(&self, inbound: mpwg::Inbound) {
        let _ = self.wire.ends[self.side].set(inbound);
    }

    fn send(&self, path: &str, dst: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        assert_eq!(dst, address(1 - self.side), "sent to the peer's address");
        *self.wire.carried.lock().unwrap() += 1;
        if let Some(other) = self.wire.ends[1 - self.side].get() {
            other.deliver(path, address(self.side), datagram);
        }
        Ok(())
    }
}

/// An IPv4 UDP packet from `src` to `dst` carrying `payload`.
fn ipv4_udp(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let sum: u32 = p[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    p[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

fn hex(k: &mpwg::Key) -> String {
    k.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn start(name: &str, wire: &Arc<Wire>, side: usize) -> (mpwg::Handle, Host) {
    let (tun, host) = channel_tun();
    let handle = mpwg::Builder::new(name)
        .tun_device(tun)
        .transport(End {
            wire: wire.clone(),
            side,
        })
        .paths(["mem0", "mem1"])
        .uapi_socket(false)
        .control_socket(false)
        .start()
        .expect("an in-memory tunnel starts without root");
    (handle, host)
}

/// Waits up to 10 s for `n` packets on `host`.
fn receive(host: &Host, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match host.recv.recv_timeout(left) {
            Ok(p) => got.push(p),
            Err(_) => break,
        }
    }
    got
}

#[test]
fn two_devices_over_an_in_memory_path_handshake_and_exchange_packets() {
    let wire = Arc::new(Wire::default());
    let (a, host_a) = start("mem-a", &wire, 0);
    let (b, host_b) = start("mem-b", &wire, 1);
    let (key_a, key_b) = (mpwg::Key::generate(), mpwg::Key::generate());

    // A knows B's address; B learns A's from A's first handshake.
    a.set(&format!(
        "private_key={}\nlisten_port=51820\npublic_key={}\nendpoint={}\nallowed_ip=10.0.0.2/32\n",
        hex(&key_a),
        hex(&key_b.public_key()),
        address(1)
    ))
    .unwrap();
    b.configure(mpwg::SetRequest {
        private_key: Some(key_b),
        listen_port: Some(51820),
        ..mpwg::SetRequest::default()
    })
    .unwrap();
    b.set_peer(mpwg::PeerUpdate {
        allowed_ips: vec!["10.0.0.1/32".parse().unwrap()],
        ..mpwg::PeerUpdate::new(key_a.public_key())
    })
    .unwrap();
    assert_eq!(a.listen_port(), 51820);

    // A to B: the first packet waits for the handshake, then all arrive, as sent.
    let sent: Vec<Vec<u8>> = (0..10u8)
        .map(|i| ipv4_udp([10, 0, 0, 1], [10, 0, 0, 2], &[i; 100]))
        .collect();
    for p in &sent {
        host_a.send.send(p.clone()).unwrap();
    }
    let got = receive(&host_b, sent.len());
    assert_eq!(got, sent, "B's TUN gets A's packets, in order, once each");

    // B to A, on the session the handshake made.
    let back: Vec<Vec<u8>> = (0..10u8)
        .map(|i| ipv4_udp([10, 0, 0, 2], [10, 0, 0, 1], &[0x80 | i; 200]))
        .collect();
    for p in &back {
        host_b.send.send(p.clone()).unwrap();
    }
    assert_eq!(receive(&host_a, back.len()), back);
    // What `wg show` and `mpwg show --json` would say.
    assert!(a
        .get()
        .contains(&format!("public_key={}", hex(&key_b.public_key()))));
    let status = b.status();
    assert_eq!(status.peers.len(), 1);
    let peer = &status.peers[0];
    assert!(peer.last_handshake_unix.is_some(), "{}", status.to_json());
    assert!(
        peer.rx_bytes > 0 && peer.tx_bytes > 0,
        "{}",
        status.to_json()
    );
    assert_eq!(status.paths.len(), 2);
    let (wins, dups): (u64, u64) = status
        .paths
        .iter()
        .fold((0, 0), |(w, d), p| (w + p.wins, d + p.duplicates_dropped));
    assert_eq!(
        wins,
        10,
        "each of A's 10 packets delivered once: {}",
        status.to_json()
    );
    assert_eq!(
        dups,
        10,
        "and its copy on the other path dropped: {}",
        status.to_json()
    );
    assert!(*wire.carried.lock().unwrap() >= 2 * (10 + 10 + 2));

    // The mode changes as with `mpwg mode`, and the status says so.
    assert_eq!(a.mode(), mpwg::Mode::Duplicate);
    a.set_mode(mpwg::Mode::Failover);
    assert_eq!(a.mode(), mpwg::Mode::Failover);
    assert_eq!(a.status().mode, "failover");
    a.set_mode(mpwg::Mode::Duplicate);

    // Paths come and go as with `mpwg path add` and `mpwg path del`.
    a.add_path("mem2").unwrap();
    let names: Vec<String> = a.status().paths.into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["mem0", "mem1", "mem2"]);
    let e = a.add_path("mem2").unwrap_err().to_string();
    assert_eq!(e, "mem-a already has a path on mem2");
    a.remove_path("mem0").unwrap();
    let e = a.remove_path("mem0").unwrap_err().to_string();
    assert!(e.contains("mem-a has no path on mem0"), "{e}");
    let p = ipv4_udp([10, 0, 0, 1], [10, 0, 0, 2], b"after the path changes");
    host_a.send.send(p.clone()).unwrap();
    assert_eq!(receive(&host_b, 1), [p], "the tunnel carries on");

    // Stopping ends every thread (stop returns once they are joined).
    a.stop();
    b.stop();
    assert!(!wire.ends[0]
        .get()
        .unwrap()
        .deliver("mem0", address(1), &[1, 0, 0, 0]));
}

#[test]
fn handles_and_builders_go_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<mpwg::Handle>();
    shared::<mpwg::Builder>();
    shared::<mpwg::Stopper>();
    shared::<mpwg::Inbound>();
}

#[test]
fn errors_say_what_is_wrong() {
    let e = mpwg::Builder::new("no/slash")
        .start()
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid interface name \"no/slash\""), "{e}");
    let (tun, _host) = channel_tun();
    let e = mpwg::Builder::new("mem-c")
        .tun_device(tun)
        .transport(End {
            wire: Arc::new(Wire::default()),
            side: 0,
        })
        .path_index(3)
        .uapi_socket(false)
        .control_socket(false)
        .start()
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("path index 3: the paths of a tunnel over a program's transport are names"),
        "{e}"
    );
    let (tun, _host) = channel_tun();
    let t = mpwg::Builder::new("mem-d")
        .tun_device(tun)
        .transport(End {
            wire: Arc::new(Wire::default()),
            side: 0,
        })
        .path("mem0")
        .uapi_socket(false)
        .control_socket(false)
        .start()
        .unwrap();
    let e = t.set("private_key=zz\n").unwrap_err().to_string();
    assert_eq!(
        e, "bad UAPI line \"private_key=…\": not a valid hex key (the UAPI expects 64 hex digits)",
        "names the line, not the key"
    );
    let e = t
        .set("listen_port=51820\nbogus=1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bogus"), "{e}");
    assert_eq!(t.listen_port(), 0, "a set that fails changes nothing");
    t.stop();
}
