//! mpwg's own control socket, `/var/run/wireguard/NAME.mpwg` (root only), and what it
//! serves: `mpwg show NAME`, a table per path, and the other requests of
//! [`crate::control::request`] (`mpwg path add|del NAME IFACE`).
//!
//! The name does not end in `.sock`, so `wg show all`, which lists `*.sock`, ignores it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::control::request::{ControlHandler, Request};
use crate::control::uapi::SOCKET_DIR;
use crate::io::ipc::{SocketBindError, SocketServer};

/// The control socket's file suffix.
pub const SUFFIX: &str = "mpwg";

/// The control socket of device `name`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{name}.{SUFFIX}"))
}

/// One path as `mpwg show` prints it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PathRow {
    /// Interface name ("*" for the unbound socket).
    pub iface: String,
    /// Interface index.
    pub index: Option<u32>,
    /// "up", "degraded", "down" or "absent".
    pub state: &'static str,
    /// How long ago the state last changed (None: never, as for the unbound socket).
    pub since: Option<Duration>,
    /// Smoothed round trip (mpwg peers only).
    pub rtt: Option<Duration>,
    /// Loss, percent.
    pub loss_pct: Option<f64>,
    /// Jitter.
    pub jitter: Option<Duration>,
    /// Goodput: bytes/s of the peer's data delivered through the path.
    pub goodput: Option<f64>,
    /// The interface's addresses.
    pub local: Vec<String>,
    /// Where this path sends to the peers.
    pub endpoints: Vec<SocketAddr>,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Failed sends.
    pub send_errors: u64,
    /// Time since the last datagram arrived.
    pub last_rx: Option<Duration>,
    /// Data packets whose first copy came on this path.
    pub wins: u64,
    /// Copies that came after another path's.
    pub duplicates: u64,
    /// Send system calls: fewer than TX PKTS when UDP GSO batches them.
    pub tx_calls: u64,
    /// Receive calls that returned data: fewer than RX PKTS when UDP GRO batches them.
    pub rx_calls: u64,
    /// The interface's MTU (None: unknown, or no interface).
    pub mtu: Option<u32>,
    /// False once the kernel refused UDP GSO on the path for good.
    pub gso: bool,
}

/// Counters of one TUN queue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueRow {
    /// read() calls that returned data.
    pub reads: u64,
    /// Packets they carried (more than reads with TSO super-packets).
    pub read_packets: u64,
    /// Write batches.
    pub write_batches: u64,
    /// Packets written.
    pub written_packets: u64,
    /// Super-packets dropped: they split into more packets than a read has buffers for.
    pub oversize_drops: u64,
}

/// Everything `mpwg show` prints.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Show {
    /// Device name.
    pub name: String,
    /// Listen port.
    pub listen_port: u16,
    /// Scheduling mode.
    pub mode: &'static str,
    /// Receive mode.
    pub receive: &'static str,
    /// Paths.
    pub paths: Vec<PathRow>,
    /// TUN queues, one per worker.
    pub queues: Vec<QueueRow>,
    /// Warnings about paths (an MTU too small for the tunnel's packets), one line each.
    pub notes: Vec<String>,
    /// The reorder stage: (hold now, packets held, gaps given up, packets late); None
    /// when no peer stripes.
    pub reorder: Option<(Duration, u64, u64, u64)>,
}

fn ago(d: Option<Duration>) -> String {
    match d {
        None => "never".into(),
        Some(d) if d < Duration::from_secs(1) => format!("{}ms ago", d.as_millis()),
        Some(d) => format!("{:.1}s ago", d.as_secs_f64()),
    }
}

fn join<T: ToString>(v: &[T]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Renders `mpwg show`.
pub fn format_show(s: &Show) -> String {
    let mut out = format!(
        "interface: {}  listening port: {}  mode: {}  receive: {}\n",
        s.name, s.listen_port, s.mode, s.receive
    );
    let header = [
        "PATH",
        "IFACE",
        "INDEX",
        "STATE",
        "SINCE",
        "MTU",
        "RTT",
        "LOSS",
        "JITTER",
        "GOODPUT",
        "LOCAL",
        "PEER ENDPOINTS",
        "TX PKTS",
        "TX BYTES",
        "RX PKTS",
        "RX BYTES",
        "SEND ERRS",
        "LAST RX",
        "WINS",
        "DUPS",
        "TX CALLS",
        "RX CALLS",
        "GSO",
    ];
    let rows: Vec<Vec<String>> = s
        .paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            vec![
                i.to_string(),
                p.iface.clone(),
                p.index.map_or("-".into(), |i| i.to_string()),
                p.state.to_string(),
                p.since.map_or("-".into(), |d| ago(Some(d))),
                p.mtu.map_or("-".into(), |m| m.to_string()),
                p.rtt
                    .map_or("-".into(), |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0)),
                p.loss_pct.map_or("-".into(), |l| format!("{l:.1}%")),
                p.jitter
                    .map_or("-".into(), |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0)),
                p.goodput
                    .map_or("-".into(), |b| format!("{:.2}Mbit/s", b * 8.0 / 1e6)),
                join(&p.local),
                join(&p.endpoints),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.send_errors.to_string(),
                ago(p.last_rx),
                p.wins.to_string(),
                p.duplicates.to_string(),
                p.tx_calls.to_string(),
                p.rx_calls.to_string(),
                if p.gso { "on" } else { "off" }.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c).map(String::len))
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            l.push_str(&format!("{cell:<w$}  "));
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(header.to_vec()));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    for n in &s.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    if let Some((hold, held, given_up, late)) = s.reorder {
        out.push_str(&format!(
            "reorder: hold {:.1}ms; {held} packets held, {given_up} gaps given up, {late} late\n",
            hold.as_secs_f64() * 1000.0
        ));
    }
    for (i, q) in s.queues.iter().enumerate() {
        out.push_str(&format!(
            "tun queue {i}: {} reads carried {} packets; {} write batches carried {} packets; \
             {} oversize super-packets dropped\n",
            q.reads, q.read_packets, q.write_batches, q.written_packets, q.oversize_drops
        ));
    }
    out
}

/// The listening control socket. Dropping it removes the file.
pub struct ControlServer(SocketServer);

impl ControlServer {
    /// Creates the control socket of device `name`.
    pub fn bind(name: &str) -> Result<ControlServer, SocketBindError> {
        SocketServer::bind_in(Path::new(SOCKET_DIR), name, SUFFIX, "control socket")
            .map(ControlServer)
    }

    /// Answers requests ([`Request`]) through `handler`.
    pub fn serve(&self, handler: Arc<dyn ControlHandler>) {
        self.0.serve(Arc::new(move |stream: UnixStream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(&stream).take(1024);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                return;
            }
            let reply = match Request::parse(&line).and_then(|r| handler.handle(r)) {
                Ok(text) => text,
                Err(e) => format!("{ERROR_PREFIX}{e}\n"),
            };
            let _ = (&stream).write_all(reply.as_bytes());
        }));
    }
}

/// How a reply that reports a failure starts.
const ERROR_PREFIX: &str = "error: ";

/// Why `mpwg show` could not ask the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon runs for that device.
    #[error("no mpwg daemon is running for {name} (no control socket at {path}); start one with `mpwg up {name}`")]
    NotRunning {
        /// Device name.
        name: String,
        /// Socket path.
        path: String,
    },
    /// Not allowed to connect.
    #[error("permission denied on {0}: mpwg needs root to talk to its daemon")]
    Permission(String),
    /// The daemon refused the request; its message.
    #[error("{0}")]
    Refused(String),
    /// Anything else.
    #[error("talking to the control socket {path}: {source}")]
    Io {
        /// Socket path.
        path: String,
        /// Error.
        source: std::io::Error,
    },
}

/// Sends `request` to the daemon of `name` and returns its reply, or the error it
/// answered with ([`ControlError::Refused`]).
pub fn query(name: &str, request: &Request) -> Result<String, ControlError> {
    let path = socket_path(name);
    let p = path.display().to_string();
    let mut stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning {
                name: name.to_string(),
                path: p.clone(),
            }
        }
        std::io::ErrorKind::PermissionDenied => ControlError::Permission(p.clone()),
        _ => ControlError::Io {
            path: p.clone(),
            source: e,
        },
    })?;
    let io = |source| ControlError::Io {
        path: p.clone(),
        source,
    };
    stream
        .write_all(format!("{}\n", request.to_line()).as_bytes())
        .map_err(io)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(io)?;
    match reply.strip_prefix(ERROR_PREFIX) {
        Some(e) => Err(ControlError::Refused(e.trim_end().to_string())),
        None => Ok(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_is_a_table_with_every_column() {
        let s = Show {
            name: "mp0".into(),
            listen_port: 51820,
            mode: "duplicate",
            receive: "all",
            paths: vec![
                PathRow {
                    iface: "eth1".into(),
                    index: Some(4),
                    state: "up",
                    since: Some(Duration::from_secs(12)),
                    rtt: Some(Duration::from_micros(12_345)),
                    loss_pct: Some(0.0),
                    jitter: Some(Duration::from_micros(400)),
                    goodput: Some(1.25e6),
                    local: vec!["10.1.1.1/24".into()],
                    endpoints: vec!["10.1.1.2:51820".parse().unwrap()],
                    tx_packets: 10,
                    tx_bytes: 1000,
                    rx_packets: 9,
                    rx_bytes: 900,
                    send_errors: 0,
                    last_rx: Some(Duration::from_millis(250)),
                    wins: 7,
                    duplicates: 2,
                    tx_calls: 1,
                    rx_calls: 9,
                    mtu: Some(1500),
                    gso: true,
                },
                PathRow {
                    iface: "wlan0".into(),
                    index: Some(5),
                    state: "down",
                    send_errors: 3,
                    ..Default::default()
                },
            ],
            queues: vec![QueueRow {
                reads: 2,
                read_packets: 90,
                write_batches: 3,
                written_packets: 100,
                oversize_drops: 1,
            }],
            notes: vec!["path 1 (wlan0): its MTU is small".into()],
            reorder: None,
        };
        let t = format_show(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "interface: mp0  listening port: 51820  mode: duplicate  receive: all"
        );
        assert!(lines[1].starts_with(
            "PATH  IFACE  INDEX  STATE  SINCE      MTU   RTT     LOSS  JITTER  GOODPUT      LOCAL"
        ));
        assert!(lines[1].ends_with("RX CALLS  GSO"), "{}", lines[1]);
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            vec![
                "0",
                "eth1",
                "4",
                "up",
                "12.0s",
                "ago",
                "1500",
                "12.3ms",
                "0.0%",
                "0.4ms",
                "10.00Mbit/s",
                "10.1.1.1/24",
                "10.1.1.2:51820",
                "10",
                "1000",
                "9",
                "900",
                "0",
                "250ms",
                "ago",
                "7",
                "2",
                "1",
                "9",
                "on",
            ]
        );
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            row[..10],
            ["1", "wlan0", "5", "down", "-", "-", "-", "-", "-", "-"]
        );
        assert_eq!(row[16], "3");
        assert_eq!(row[17], "never");
        assert_eq!(row.last(), Some(&"off"));
        assert_eq!(lines[4], "note: path 1 (wlan0): its MTU is small");
        assert_eq!(
            lines[5],
            "tun queue 0: 2 reads carried 90 packets; 3 write batches carried 100 packets; \
             1 oversize super-packets dropped"
        );
    }
}
