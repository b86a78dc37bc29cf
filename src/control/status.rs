//! The status of a running device as one object: what `mpwg show NAME --json` prints,
//! what the metrics listener serves at `/status.json`, and what `/metrics` and the
//! status page are made from.
//!
//! A [`Status`] is a copy, taken by [`collect`]: it reads the paths' and peers'
//! counters (atomics), and holds a peer's endpoint or handshake lock only for the time
//! it takes to copy one value out. Nothing is held while it is encoded or sent, so a
//! scrape or a slow HTTP client never delays a packet.
//!
//! The field names are a public interface (README, "mpwg show --json"): add fields, do
//! not rename them. `rtt_ms`, `loss_pct` and `jitter_ms` come from the path monitor's
//! probes ([`crate::datapath::monitor`]): `null` until measured, and always against a
//! stock peer, which is never probed.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::datapath::monitor::Monitor;
use crate::datapath::paths::Paths;
use crate::protocol::device::Device;

/// The whole status of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The device (TUN interface) name.
    pub interface: String,
    /// The scheduling mode: `duplicate`, `failover`, `aggregate` or `adaptive`.
    pub mode: String,
    /// mpwg's version.
    pub version: String,
    /// The UDP listen port.
    pub listen_port: u16,
    /// When this status was taken, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// The paths, in their order (the first is the primary).
    pub paths: Vec<PathStatus>,
    /// The peers, in configuration order.
    pub peers: Vec<PeerStatus>,
    /// Handshake messages by result.
    pub handshakes: HandshakeCounts,
    /// Datagrams and packets the device dropped, by reason.
    pub drops: DropCounts,
}

/// One path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathStatus {
    /// The interface name (`*` for the single unbound socket of a device without paths).
    pub name: String,
    /// The interface's index now (`null` for the unbound socket).
    pub index: Option<u32>,
    /// `up`, `degraded` (it works, but loses or is slow), `down` (its link is down, or it
    /// failed its health checks) or `absent` (the interface is gone).
    pub state: String,
    /// Milliseconds since the state last changed; `null` if it never did (the single
    /// unbound socket).
    pub state_changed_ms_ago: Option<u64>,
    /// Smoothed round-trip time in milliseconds; `null` until measured.
    pub rtt_ms: Option<f64>,
    /// Loss in percent; `null` until measured.
    pub loss_pct: Option<f64>,
    /// Jitter in milliseconds; `null` until measured.
    pub jitter_ms: Option<f64>,
    /// Goodput in Mbit/s: the peer's data delivered through the path (first copies),
    /// over the last second or so; `null` without a path monitor's figure.
    pub goodput_mbps: Option<f64>,
    /// Failover priority in use (lower is preferred): the configured one, else the
    /// path's place in the list.
    pub priority: u32,
    /// Configured share of striped traffic; `null` when measured (balanced by queueing
    /// delay).
    pub weight: Option<f64>,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes sent (UDP payload).
    pub tx_bytes: u64,
    /// Bytes received (UDP payload).
    pub rx_bytes: u64,
    /// Data packets whose first copy arrived on this path.
    pub wins: u64,
    /// Copies that arrived after another path's and were dropped.
    pub duplicates_dropped: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Milliseconds since the path last received a datagram; `null` if never.
    pub last_rx_ms_ago: Option<u64>,
}

/// One peer. Nothing secret: the public key only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's public key, base64 as `wg(8)` prints it.
    pub public_key: String,
    /// The peer's current endpoint (`address:port`), `null` if none is known.
    pub endpoint: Option<String>,
    /// When the last handshake completed, in seconds since the Unix epoch; `null` if
    /// never.
    pub last_handshake_unix: Option<u64>,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
}

/// Handshake messages by what became of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandshakeCounts {
    /// Initiations answered and responses that completed a handshake.
    pub accepted: u64,
    /// Initiations and responses refused: a wrong mac1, or a message that did not
    /// decrypt or came from an unknown peer.
    pub rejected: u64,
    /// Cookie replies sent, under load, instead of an answer.
    pub cookie_sent: u64,
    /// Messages with a valid cookie refused under load: their source had used its
    /// share (the per-source token bucket).
    pub rate_limited: u64,
    /// Messages dropped because the handshake queue was full.
    pub queue_full: u64,
}

/// What the device dropped, by reason (the device's drop counters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DropCounts {
    /// Datagrams that are not WireGuard messages.
    pub malformed: u64,
    /// Data messages for an unknown receiver index.
    pub unknown_index: u64,
    /// Data messages the replay window already held (with duplicate paths, the copies).
    pub replayed: u64,
    /// Data messages whose tag did not verify.
    pub bad_data: u64,
    /// Inner packets whose source is not in the sending peer's allowed IPs.
    pub bad_source: u64,
    /// Outbound packets with no peer for their destination.
    pub no_route: u64,
    /// Cookie replies for no handshake of ours, or not awaited.
    pub unexpected_cookie: u64,
}

impl Status {
    /// One line for a service manager's status (`STATUS=`): how many paths are up and
    /// each path's state, e.g. `2/2 paths up: eth0 up, wwan0 up`.
    pub fn summary(&self) -> String {
        let up = self.paths.iter().filter(|p| p.state == "up").count();
        let each: Vec<String> = self
            .paths
            .iter()
            .map(|p| format!("{} {}", p.name, p.state))
            .collect();
        format!(
            "{up}/{} paths up: {}",
            self.paths.len(),
            if each.is_empty() {
                "-".to_string()
            } else {
                each.join(", ")
            }
        )
    }

    /// The status as pretty JSON, with a final newline.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and options cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

fn unix_secs(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Takes the status of device `interface` from its paths, their monitor (the mode,
/// health and quality) and its device.
pub fn collect(interface: &str, paths: &Paths, monitor: &Monitor, device: &Device) -> Status {
    let mode = monitor.schedule.mode().as_str();
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let paths_out = paths
        .all()
        .iter()
        .enumerate()
        .map(|(pos, p)| {
            let s = &p.stats;
            let q = monitor.report(p.id);
            let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
            let (state, since) = monitor.state_of(p);
            PathStatus {
                name: p.label().to_string(),
                index: p.index(),
                state: state.to_string(),
                state_changed_ms_ago: since.map(|t| millis(t.elapsed())),
                rtt_ms: ms(q.and_then(|q| q.srtt)),
                loss_pct: q.and_then(|q| q.loss_pct),
                jitter_ms: ms(q.and_then(|q| q.jitter)),
                goodput_mbps: q.map(|q| q.goodput * 8.0 / 1e6),
                priority: monitor.priority_of(p.label(), pos),
                weight: monitor.path_options(p.label()).weight,
                tx_packets: r(&s.tx_packets),
                rx_packets: r(&s.rx_packets),
                tx_bytes: r(&s.tx_bytes),
                rx_bytes: r(&s.rx_bytes),
                wins: r(&s.wins),
                duplicates_dropped: r(&s.duplicates),
                send_errors: r(&s.send_errors),
                last_rx_ms_ago: paths.since_last_rx(p).map(millis),
            }
        })
        .collect();
    let peers = device
        .peers()
        .iter()
        .map(|p| PeerStatus {
            public_key: p.public_key.to_base64(),
            endpoint: p.endpoint_addr().map(|a| a.to_string()),
            last_handshake_unix: (*p.last_handshake.lock()).and_then(unix_secs),
            tx_bytes: r(&p.tx_bytes),
            rx_bytes: r(&p.rx_bytes),
        })
        .collect();
    let d = &device.drops;
    Status {
        interface: interface.to_string(),
        mode: mode.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        listen_port: paths.port(),
        time_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX)),
        paths: paths_out,
        peers,
        handshakes: HandshakeCounts {
            accepted: r(&d.handshakes_accepted),
            rejected: r(&d.bad_mac1) + r(&d.bad_handshake),
            cookie_sent: r(&d.cookie_replies_sent),
            rate_limited: r(&d.rate_limited),
            queue_full: r(&d.handshake_queue_full),
        },
        drops: DropCounts {
            malformed: r(&d.malformed),
            unknown_index: r(&d.unknown_index),
            replayed: r(&d.replayed),
            bad_data: r(&d.bad_data),
            bad_source: r(&d.bad_source),
            no_route: r(&d.no_route),
            unexpected_cookie: r(&d.unexpected_cookie),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A two-path status, as a running device would report it.
    pub(crate) fn sample() -> Status {
        Status {
            interface: "mp0".into(),
            mode: "duplicate".into(),
            version: "0.1.0".into(),
            listen_port: 51820,
            time_unix_ms: 1_700_000_000_000,
            paths: vec![
                PathStatus {
                    name: "eth0".into(),
                    index: Some(2),
                    state: "up".into(),
                    state_changed_ms_ago: Some(60_000),
                    rtt_ms: Some(12.5),
                    goodput_mbps: Some(40.5),
                    tx_packets: 10,
                    rx_packets: 9,
                    tx_bytes: 1000,
                    rx_bytes: 900,
                    wins: 7,
                    duplicates_dropped: 2,
                    last_rx_ms_ago: Some(250),
                    ..Default::default()
                },
                PathStatus {
                    name: "wwan0".into(),
                    index: Some(5),
                    state: "down".into(),
                    send_errors: 3,
                    ..Default::default()
                },
            ],
            peers: vec![PeerStatus {
                public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
                endpoint: Some("192.0.2.1:51820".into()),
                last_handshake_unix: Some(1_700_000_000),
                tx_bytes: 1000,
                rx_bytes: 900,
            }],
            handshakes: HandshakeCounts {
                accepted: 2,
                rejected: 4,
                cookie_sent: 1,
                rate_limited: 5,
                queue_full: 6,
            },
            drops: DropCounts {
                replayed: 2,
                ..Default::default()
            },
        }
    }

    #[test]
    fn json_has_the_documented_fields_and_nulls_for_the_unknown() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["interface"], "mp0");
        assert_eq!(v["mode"], "duplicate");
        let p = &v["paths"][0];
        for k in [
            "name",
            "index",
            "state",
            "rtt_ms",
            "loss_pct",
            "jitter_ms",
            "goodput_mbps",
            "tx_packets",
            "rx_packets",
            "tx_bytes",
            "rx_bytes",
            "wins",
        ] {
            assert!(p.get(k).is_some(), "paths[0] lacks {k}: {p}");
        }
        assert_eq!(p["rtt_ms"], 12.5);
        assert!(p["loss_pct"].is_null());
        assert_eq!(p["goodput_mbps"], 40.5);
        assert!(v["paths"][1]["goodput_mbps"].is_null());
        assert!(v["paths"][1]["rtt_ms"].is_null());
        assert!(v["paths"][1]["last_rx_ms_ago"].is_null());
        let peer = &v["peers"][0];
        for k in [
            "public_key",
            "endpoint",
            "last_handshake_unix",
            "tx_bytes",
            "rx_bytes",
        ] {
            assert!(peer.get(k).is_some(), "peers[0] lacks {k}: {peer}");
        }
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn summary_names_every_path_and_its_state() {
        assert_eq!(sample().summary(), "1/2 paths up: eth0 up, wwan0 down");
        assert_eq!(Status::default().summary(), "0/0 paths up: -");
    }

    #[test]
    fn collect_reads_the_counters_of_a_device_without_paths() {
        let paths = Paths::open(&[], 0, 0).unwrap();
        paths.all()[0].stats.tx_packets.store(3, Ordering::Relaxed);
        let device = Device::new(1420);
        let monitor = Monitor::new(Default::default(), paths.schedule.clone());
        let s = collect("mp9", &paths, &monitor, &device);
        assert_eq!(s.interface, "mp9");
        assert_eq!(s.mode, "duplicate");
        assert_eq!(s.paths[0].rtt_ms, None);
        assert_eq!(s.paths.len(), 1);
        assert_eq!(s.paths[0].name, "*");
        assert_eq!(s.paths[0].index, None);
        assert_eq!(s.paths[0].state, "up");
        assert_eq!(s.paths[0].state_changed_ms_ago, None);
        assert_eq!(s.paths[0].tx_packets, 3);
        assert_eq!(s.paths[0].last_rx_ms_ago, None);
        assert_eq!(s.listen_port, paths.port());
        assert!(s.peers.is_empty());
    }
}
