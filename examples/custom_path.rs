//! A custom path layer, through [`mpwg::Transport`]: two tunnels in one process, joined
//! by an in-memory path that logs every datagram it carries, with TUN devices of the
//! program's own ([`mpwg::TunDevice`]). No root, no socket: run it anywhere.
//!
//! ```sh
//! cargo run --example custom_path
//! ```
//!
//! It starts both tunnels, configures them with the UAPI's `set`, sends an IPv4 packet
//! into one, prints what comes out of the other, and the path's log: the handshake
//! (148 and 92 bytes), then the data.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};

/// An in-memory path between two tunnels that logs what it carries.
#[derive(Default)]
struct LoggingWire {
    ends: [OnceLock<mpwg::Inbound>; 2],
    log: Mutex<Vec<String>>,
}

/// Side `side` of the wire: the transport of one tunnel.
struct WireEnd {
    wire: Arc<LoggingWire>,
    side: usize,
}

fn address(side: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1 + side as u8], 51820))
}

impl mpwg::Transport for WireEnd {
    fn attach(&self, inbound: mpwg::Inbound) {
        let _ = self.wire.ends[self.side].set(inbound);
    }

    fn send(&self, path: &str, dst: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        self.wire.log.lock().unwrap().push(format!(
            "{path}: {} -> {dst}: {} bytes, message type {}",
            address(self.side),
            datagram.len(),
            datagram.first().copied().unwrap_or(0)
        ));
        if let Some(other) = self.wire.ends[1 - self.side].get() {
            other.deliver(path, address(self.side), datagram);
        }
        Ok(())
    }
}

/// A TUN device that is two channels: packets to send in, packets received out.
struct ChannelTun {
    to_send: Receiver<Vec<u8>>,
    received: Sender<Vec<u8>>,
}

impl mpwg::TunDevice for ChannelTun {
    fn read(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        Ok(self.to_send.recv_timeout(timeout).ok().map(|p| {
            buf[..p.len()].copy_from_slice(&p);
            p.len()
        }))
    }

    fn write(&self, packet: &[u8]) -> std::io::Result<()> {
        let _ = self.received.send(packet.to_vec());
        Ok(())
    }
}

fn hex(k: &mpwg::Key) -> String {
    k.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// An IPv4 packet (protocol 253, for experiments) from `src` to `dst`.
fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

fn main() -> Result<(), mpwg::Error> {
    let wire = Arc::new(LoggingWire::default());
    let keys = [mpwg::Key::generate(), mpwg::Key::generate()];
    let mut tunnels = Vec::new();
    let mut hosts = Vec::new();
    for side in 0..2 {
        let (to_send_tx, to_send) = unbounded();
        let (received, received_rx) = unbounded();
        let tunnel = mpwg::Builder::new(format!("custom{side}"))
            .tun_device(ChannelTun { to_send, received })
            .transport(WireEnd {
                wire: wire.clone(),
                side,
            })
            .path("memory")
            .uapi_socket(false)
            .control_socket(false)
            .start()?;
        let other = 1 - side;
        tunnel.set(&format!(
            "private_key={}\npublic_key={}\nendpoint={}\nallowed_ip=10.0.0.{}/32\n",
            hex(&keys[side]),
            hex(&keys[other].public_key()),
            address(other),
            other + 1
        ))?;
        tunnels.push(tunnel);
        hosts.push((to_send_tx, received_rx));
    }
    let packet = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello through a custom path");
    let _ = hosts[0].0.send(packet.clone());
    match hosts[1].1.recv_timeout(Duration::from_secs(5)) {
        Ok(p) => println!(
            "custom1 received {} bytes: {:?}",
            p.len(),
            String::from_utf8_lossy(&p[20..])
        ),
        Err(_) => println!("nothing came through within 5 s"),
    }
    for line in wire.log.lock().unwrap().iter() {
        println!("  {line}");
    }
    for t in tunnels {
        println!("{}", t.status().summary());
        t.stop();
    }
    Ok(())
}
