//! The daemon: creates the TUN device, the path sockets, the UAPI and control sockets,
//! wires them to the [`Device`], follows link changes through netlink, and runs until
//! SIGINT or SIGTERM, or until its TUN device is deleted or its UAPI socket file removed
//! (what `wg-quick down` does to a userspace implementation). Then it removes what is
//! left of what it created.
//!
//! [`run`] is `mpwg up`: signals around the same [`Builder`] and [`Handle`] a program
//! embedding a tunnel uses (`builder.rs`).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::control::config::{self, ConfigError};
use crate::control::http::HttpError;
use crate::control::notify::Notifier;
use crate::control::request::{ControlHandler, Request};
use crate::control::show::{self, PathRow, QueueRow, Show};
use crate::control::status::{self, Status};
use crate::control::uapi::{DeviceSnapshot, SetRequest, UapiError, UapiHandler};
use crate::datapath;
use crate::datapath::monitor::{Monitor, PathOptions, Scheduling};
use crate::datapath::paths::{LinkEvent, LinkInfo, Path, PathChangeError, Paths, ReceiveMode};
use crate::io::ipc::SocketBindError;
use crate::io::netlink::{self, Message, NetlinkSocket};
use crate::io::tun::{Tun, TunError};
use crate::io::udp::UdpError;
use crate::multipath::path::{Interface, PathArg, PathError};
use crate::multipath::state::{Change, LinkState, SocketChange};
use crate::protocol::device::Device;

mod builder;
pub use builder::{interfaces, Builder, Handle, InterfaceInfo, StopReason, Stopper};

/// What `mpwg up` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// TUN device name; also names the UAPI socket.
    pub name: String,
    /// UDP listen port (overrides the config file's ListenPort).
    pub listen_port: Option<u16>,
    /// TUN MTU.
    pub mtu: u32,
    /// wg-quick style configuration file.
    pub config: Option<PathBuf>,
    /// Paths, in the order given. Empty: one unbound socket, as stock WireGuard.
    pub paths: Vec<PathArg>,
    /// Which path sockets are read.
    pub receive: ReceiveMode,
    /// How long an address seen on a path keeps getting copies.
    pub endpoint_window: Duration,
    /// Worker threads, one TUN queue each, pinned to cores 0..N.
    pub cores: usize,
    /// Threads that decrypt received batches (0: the receive thread does).
    pub decrypt_workers: usize,
    /// Packets per batch.
    pub batch: usize,
    /// io_uring or plain system calls at the socket edge.
    pub io: datapath::Io,
    /// Where to serve metrics, /status.json and the status page (None: nowhere).
    pub metrics: Option<SocketAddr>,
    /// The mode, probes, failover's hold, the reorder cap.
    pub scheduling: Scheduling,
}

/// What can go wrong, each with a message that says what and what to do: starting a
/// tunnel ([`Builder::start`]), configuring it ([`Handle::set`]), changing its paths
/// ([`Handle::add_path`]), listing interfaces ([`interfaces`]). `mpwg::Error`.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Neither root nor CAP_NET_ADMIN.
    #[error("mpwg up needs root or CAP_NET_ADMIN (to create TUN device {0}): run it with sudo")]
    NotPermitted(String),
    /// The TUN device.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// A path socket.
    #[error(transparent)]
    Udp(#[from] UdpError),
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A path argument.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A `[Path]` of the config file names no interface that exists.
    #[error(
        "{}:{line}: no interface named {interface:?} (`mpwg interfaces` lists them; \
         `mpwg path add` adds a path whose interface comes later)",
        file.display()
    )]
    ConfigPath {
        /// The config file.
        file: PathBuf,
        /// The line of its `Interface =`.
        line: usize,
        /// The interface.
        interface: String,
    },
    /// Interfaces could not be listed.
    #[error("cannot list interfaces through netlink: {0}")]
    Netlink(io::Error),
    /// The UAPI or control socket.
    #[error(transparent)]
    Socket(#[from] SocketBindError),
    /// The kernel lacks an io_uring feature the datapath needs.
    #[error("{0} (or run with --io syscalls)")]
    Uring(#[from] crate::io::uring::UringUnsupported),
    /// A worker thread panicked; the daemon shut down.
    #[error("a worker thread failed (see the log above); mpwg shut down")]
    WorkerFailed,
    /// The metrics listener.
    #[error(transparent)]
    Metrics(#[from] HttpError),
    /// The configuration file asks for more than the device holds.
    #[error("the configuration is too large: {0}")]
    Limits(crate::protocol::device::ApplyError),
    /// Signal handling could not be set up.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// The device refused a configuration ([`Handle::set`]), with why.
    #[error("{0}")]
    Configure(String),
    /// A path could not be added or removed ([`Handle::add_path`]), with why.
    #[error("{0}")]
    PathChange(String),
    /// A path over a program's transport given by interface index.
    #[error(
        "path index {0}: the paths of a tunnel over a program's transport are names          the transport knows (Builder::path), not interface indexes"
    )]
    TransportPathIndex(u32),
}

/// True if the process has CAP_NET_ADMIN in its effective set.
fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true; // cannot tell: let the TUN creation say
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// How often the main thread checks that the TUN device and the UAPI socket file are
/// still there (netlink reports a deleted device at once; this also catches a queue
/// that found it gone, and the socket file, which nothing reports).
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How often sockets that could not be opened for a present interface are retried.
const SOCKET_RETRY: Duration = Duration::from_secs(1);

/// The interfaces of a netlink dump, as the paths take them.
fn link_infos(list: &[netlink::Interface]) -> Vec<LinkInfo> {
    list.iter()
        .map(|i| LinkInfo {
            index: i.link.index,
            name: i.link.name.clone(),
            up: i.link.is_up(),
            mtu: i.link.mtu,
            addresses: i.addresses.iter().map(|a| a.addr).collect(),
        })
        .collect()
}

/// Everything a running tunnel shares between its threads.
struct Tunnel {
    name: String,
    device: Arc<Device>,
    paths: Arc<Paths>,
    /// Probes, health, quality and the plan the paths' sends follow.
    monitor: Arc<Monitor>,
    tun: Arc<Tun>,
    receive: ReceiveMode,
    batch: usize,
    decrypt_workers: usize,
    io: datapath::Io,
    /// The TUN device's MTU.
    mtu: u32,
    /// Serialises `set` requests, so a port change and the rest apply together.
    set_lock: Mutex<()>,
    /// Tells the main thread to stop.
    stop: Mutex<mpsc::Sender<StopReason>>,
    /// The flag the tunnel's threads stop on, and the one a failed worker sets.
    life: Arc<datapath::Lifecycle>,
    /// The receive thread's end of the handshake worker's queue.
    handshakes: datapath::handshake::HandshakeQueue,
}

impl Tunnel {
    fn spawn_receiver(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let t = self.clone();
        let queue = self.tun.queues[0].clone();
        datapath::spawn("mpwg-rx".into(), &self.life, move || {
            datapath::rx::rx_worker(
                &t.paths,
                &t.monitor,
                &t.device,
                &queue,
                t.batch,
                t.io,
                t.receive == ReceiveMode::Primary,
                t.decrypt_workers,
                &t.handshakes,
                &t.life,
            )
        })
    }

    /// The TX workers. Each ends when its TUN queue says the device is gone (the
    /// shutdown deletes it).
    fn spawn_senders(self: &Arc<Self>) -> Vec<std::thread::JoinHandle<()>> {
        let mut threads = Vec::new();
        for (i, queue) in self.tun.queues.iter().enumerate() {
            let t = self.clone();
            let queue = queue.clone();
            threads.push(datapath::spawn(
                format!("mpwg-tx-{i}"),
                &self.life,
                move || {
                    datapath::pin_to(i);
                    datapath::tx::tx_worker(&queue, &t.device, &t.paths, t.batch, t.io)
                },
            ));
        }
        threads
    }

    fn timer_loop(&self) {
        while !self.life.is_stopping() {
            std::thread::sleep(Duration::from_millis(50));
            self.device.handle_timeout(Instant::now(), &*self.paths);
        }
    }

    /// Follows link and address changes of the path interfaces, and the TUN device's
    /// deletion. Each second without news, retries the sockets that could not be opened.
    fn netlink_loop(&self, sock: NetlinkSocket) {
        // Woken every WATCH_INTERVAL, so a stopping tunnel's loop ends soon.
        if let Err(e) = sock.set_timeout(WATCH_INTERVAL) {
            tracing::debug!("netlink: cannot set a receive timeout ({e})");
        }
        let mut retried = Instant::now();
        while !self.life.is_stopping() {
            let msgs = match sock.recv() {
                Ok(m) => m,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if retried.elapsed() < SOCKET_RETRY {
                        continue;
                    }
                    retried = Instant::now();
                    for p in self.paths.retry_sockets() {
                        tracing::info!(
                            path = p.label(),
                            "path {}: its socket is open now: sending on it",
                            p.label()
                        );
                    }
                    continue;
                }
                Err(e) => {
                    // ENOBUFS: events were lost; resynchronise from a fresh dump.
                    tracing::debug!("netlink: {e}; re-reading link states");
                    self.sync_link_states();
                    continue;
                }
            };
            let now = Instant::now();
            for m in msgs {
                match m {
                    Message::DelLink(link) if link.index == self.tun.index() => {
                        let _ = self.stop.lock().send(StopReason::DeviceDeleted);
                    }
                    Message::NewLink(link) => {
                        let ev = LinkEvent::New {
                            index: link.index,
                            name: &link.name,
                            up: link.is_up(),
                            mtu: link.mtu,
                        };
                        self.log_changes(self.paths.link_event(ev, now));
                    }
                    Message::DelLink(link) => {
                        let ev = LinkEvent::Del { index: link.index };
                        self.log_changes(self.paths.link_event(ev, now));
                    }
                    Message::NewAddr(index, addr) | Message::DelAddr(index, addr) => {
                        if let Some(p) = self.paths.all().iter().find(|p| p.index() == Some(index))
                        {
                            tracing::info!(path = p.label(), %addr, "address change on path {}: the socket follows it", p.label());
                            // The path's own addresses: which ones its replies may
                            // leave from.
                            self.sync_link_states();
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Logs what happened to each path, once per change.
    fn log_changes(&self, changes: Vec<(Arc<Path>, Change)>) {
        for (p, c) in changes {
            let name = p.label();
            let reopened = matches!(c.socket, SocketChange::Open(_));
            match (c.to, reopened) {
                (LinkState::Absent, _) => tracing::warn!(
                    path = name,
                    "path interface {name} is gone: path absent, not sending on it"
                ),
                (_, true) => tracing::info!(
                    path = name,
                    index = p.index(),
                    state = %c.to,
                    "path interface {name} appeared (index {}): new socket on port {}{}",
                    p.index().unwrap_or(0),
                    self.paths.port(),
                    if c.to.is_up() { ", sending on it" } else { "; its link is down" }
                ),
                (LinkState::Up, false) => tracing::info!(
                    path = name,
                    "path interface {name} is up: sending on it again"
                ),
                (_, false) => tracing::warn!(
                    path = name,
                    "path interface {name} is down: not sending on it"
                ),
            }
            if reopened {
                self.warn_mtu(std::slice::from_ref(&p));
            }
        }
    }

    /// Sets every path's state from a fresh list of interfaces.
    fn sync_link_states(&self) {
        if self.paths.is_user() {
            return;
        }
        if let Ok(list) = netlink::interfaces() {
            self.log_changes(self.paths.sync(&link_infos(&list), Instant::now()));
        }
    }

    /// The status: `mpwg show --json`, /status.json, /metrics.
    fn status(&self) -> Status {
        status::collect(&self.name, &self.paths, &self.monitor, &self.device)
    }

    /// What `mpwg show` prints.
    fn show(&self) -> String {
        let now = Instant::now();
        let ifaces = netlink::interfaces().unwrap_or_default();
        let peers = self.device.peers();
        let list = self.paths.all();
        let paths = list
            .iter()
            .map(|p| {
                let s = &p.stats;
                let mut endpoints = Vec::new();
                for peer in &peers {
                    for a in peer
                        .endpoints
                        .lock()
                        .destinations(p.id, now, self.paths.window)
                        .iter()
                    {
                        if !endpoints.contains(&a) {
                            endpoints.push(a);
                        }
                    }
                }
                let index = p.index();
                let local = index
                    .and_then(|i| ifaces.iter().find(|x| x.link.index == i))
                    .map(|x| x.addresses.iter().map(|a| a.to_string()).collect())
                    .unwrap_or_default();
                let (state, since) = self.monitor.state_of(p);
                let q = self.monitor.report(p.id);
                PathRow {
                    iface: p.label().to_string(),
                    index,
                    state,
                    since: since.map(|t| now.saturating_duration_since(t)),
                    rtt: q.and_then(|q| q.srtt),
                    loss_pct: q.and_then(|q| q.loss_pct),
                    jitter: q.and_then(|q| q.jitter),
                    goodput: q.map(|q| q.goodput),
                    local,
                    endpoints,
                    tx_packets: s.tx_packets.load(Ordering::Relaxed),
                    tx_bytes: s.tx_bytes.load(Ordering::Relaxed),
                    rx_packets: s.rx_packets.load(Ordering::Relaxed),
                    rx_bytes: s.rx_bytes.load(Ordering::Relaxed),
                    send_errors: s.send_errors.load(Ordering::Relaxed),
                    last_rx: self.paths.since_last_rx(p),
                    wins: s.wins.load(Ordering::Relaxed),
                    duplicates: s.duplicates.load(Ordering::Relaxed),
                    tx_calls: s.tx_calls.load(Ordering::Relaxed),
                    rx_calls: s.rx_calls.load(Ordering::Relaxed),
                    mtu: Some(p.mtu()).filter(|&m| m > 0),
                    gso: p.gso_enabled(),
                }
            })
            .collect();
        let notes = list
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some(format!("path {i} ({}): {}", p.label(), self.mtu_note(p)?)))
            .collect();
        show::format_show(&Show {
            name: self.name.clone(),
            listen_port: self.paths.port(),
            mode: self.monitor.schedule.mode().as_str(),
            receive: match self.receive {
                ReceiveMode::All => "all",
                ReceiveMode::Primary => "primary",
            },
            paths,
            queues: self
                .tun
                .queues
                .iter()
                .map(|q| QueueRow {
                    reads: q.stats.reads.load(Ordering::Relaxed),
                    read_packets: q.stats.read_packets.load(Ordering::Relaxed),
                    write_batches: q.stats.write_batches.load(Ordering::Relaxed),
                    written_packets: q.stats.written_packets.load(Ordering::Relaxed),
                    oversize_drops: q.stats.oversize_drops.load(Ordering::Relaxed),
                })
                .collect(),
            notes,
            reorder: self.monitor.schedule.reorder_hold().map(|h| {
                let [a, b, c] = &self.monitor.schedule.reorder_stats;
                (
                    h,
                    a.load(Ordering::Relaxed),
                    b.load(Ordering::Relaxed),
                    c.load(Ordering::Relaxed),
                )
            }),
        })
    }

    /// What to say about a path whose interface MTU cannot carry the tunnel's packets
    /// with WireGuard's overhead (60 bytes over IPv4, 80 over IPv6); None if it can.
    /// Its datagrams still leave: the kernel fragments them (without GSO, for that send).
    fn mtu_note(&self, p: &Path) -> Option<String> {
        let mtu = p.mtu();
        let (v4, v6) = (self.mtu + 60, self.mtu + 80);
        if mtu == 0 || mtu >= v6 {
            return None;
        }
        let over = if mtu < v4 {
            format!("IPv4 or IPv6 ({v4} needed over IPv4, {v6} over IPv6)")
        } else {
            format!("IPv6 ({v6} needed)")
        };
        Some(format!(
            "interface MTU {mtu} cannot carry the tunnel's {}-byte packets over {over}: \
             they leave fragmented",
            self.mtu
        ))
    }

    /// Logs the paths whose MTU is too small ([`Tunnel::mtu_note`]), once each.
    fn warn_mtu(&self, paths: &[Arc<Path>]) {
        for p in paths {
            if let Some(note) = self.mtu_note(p) {
                tracing::warn!(path = p.label(), "path {}: {note}", p.label());
            }
        }
    }
}

impl Tunnel {
    /// `mpwg path add NAME IFACE`.
    fn path_add(&self, iface: &str) -> Result<(), String> {
        crate::io::tun::check_name(iface).map_err(|e| e.to_string())?;
        if iface == self.name {
            return Err(format!(
                "{iface} is this tunnel's own device: a path needs an uplink interface"
            ));
        }
        // A program's transport has no interfaces to look up.
        let list = match self.paths.is_user() {
            true => Vec::new(),
            false => netlink::interfaces()
                .map_err(|e| format!("cannot list interfaces through netlink: {e}"))?,
        };
        let infos = link_infos(&list);
        let seen = infos.iter().find(|l| l.name == iface);
        let path = self
            .paths
            .add(iface, seen, Instant::now())
            .map_err(|e| self.path_error(e))?;
        match path.index() {
            Some(index) => tracing::info!(
                path = iface,
                index,
                "path {iface} added (index {index}): socket on port {}{}",
                self.paths.port(),
                if path.is_up() {
                    ""
                } else {
                    "; its link is down"
                }
            ),
            None => tracing::info!(
                path = iface,
                "path {iface} added: no such interface yet, absent until one appears"
            ),
        }
        self.warn_mtu(std::slice::from_ref(&path));
        // An event between the dump above and the path's arrival in the list was not
        // seen by it: look again.
        self.sync_link_states();
        Ok(())
    }

    /// `mpwg path del NAME IFACE`.
    fn path_del(&self, iface: &str) -> Result<(), String> {
        self.paths.remove(iface).map_err(|e| self.path_error(e))?;
        tracing::info!(path = iface, "path {iface} removed: its socket is closed");
        Ok(())
    }

    fn path_error(&self, e: PathChangeError) -> String {
        let name = &self.name;
        match e {
            PathChangeError::Exists(i) => format!("{name} already has a path on {i}"),
            PathChangeError::NotFound(i) => {
                format!("{name} has no path on {i} (`mpwg show {name}` lists its paths)")
            }
            PathChangeError::TooMany => format!("{name}: {e}"),
            PathChangeError::Socket(e) => format!("{name}: {e}"),
        }
    }
}

/// Logs a path's options (`path add`/`path set` with `--priority`, `--weight`).
fn log_options(iface: &str, o: PathOptions) {
    tracing::info!(
        path = %iface,
        "path {iface}: priority {}, weight {}",
        o.priority.map_or("by order".into(), |p| p.to_string()),
        o.weight.map_or("measured".into(), |w| w.to_string())
    );
}

impl ControlHandler for Tunnel {
    fn handle(&self, request: Request) -> Result<String, String> {
        match request {
            Request::Show => Ok(self.show()),
            Request::Status => Ok(self.status().to_json()),
            Request::PathAdd {
                iface,
                priority,
                weight,
            } => {
                if self
                    .paths
                    .all()
                    .iter()
                    .any(|p| p.name() == Some(iface.as_str()))
                {
                    return Err(self.path_error(PathChangeError::Exists(iface)));
                }
                // The options first, so that the monitor's first plan with the path
                // already has them; put back if the path cannot be added.
                let before = self.monitor.path_options(&iface);
                let mut o = before;
                o.priority = priority.or(o.priority);
                o.weight = weight.or(o.weight);
                self.monitor.set_path_options(&iface, o);
                self.path_add(&iface)
                    .inspect_err(|_| self.monitor.set_path_options(&iface, before))?;
                if priority.is_some() || weight.is_some() {
                    log_options(&iface, o);
                }
                Ok(String::new())
            }
            Request::PathDel { iface } => self.path_del(&iface).map(|()| String::new()),
            Request::PathSet {
                iface,
                priority,
                weight,
            } => {
                if !self
                    .paths
                    .all()
                    .iter()
                    .any(|p| p.name() == Some(iface.as_str()))
                {
                    let name = &self.name;
                    return Err(format!(
                        "{name} has no path on {iface} (`mpwg show {name}` lists its paths)"
                    ));
                }
                let mut o = self.monitor.path_options(&iface);
                o.priority = priority.or(o.priority);
                o.weight = weight.or(o.weight);
                self.monitor.set_path_options(&iface, o);
                log_options(&iface, o);
                Ok(String::new())
            }
            Request::Mode { mode } => {
                let old = self.monitor.schedule.mode();
                self.monitor.schedule.set_mode(mode);
                if old != mode {
                    tracing::info!(device = %self.name, "mode changed from {old} to {mode}");
                }
                Ok(String::new())
            }
        }
    }
}

impl UapiHandler for Arc<Tunnel> {
    fn get(&self) -> DeviceSnapshot {
        self.device.snapshot()
    }

    fn set(&self, mut req: SetRequest) -> Result<(), UapiError> {
        let _guard = self.set_lock.lock();
        // All or nothing: the device's limits are checked before any socket changes.
        self.device.check(&req).map_err(|e| UapiError {
            errno: libc::E2BIG,
            message: e.to_string(),
        })?;
        let current = self.paths.port();
        let mut rebound = false;
        if let Some(port) = req.listen_port {
            if port != current || port == 0 {
                let fwmark = req.fwmark.unwrap_or_else(|| self.device.fwmark());
                self.paths.rebind(port, fwmark).map_err(|e| UapiError {
                    errno: match e {
                        UdpError::PortInUse(_) => libc::EADDRINUSE,
                        _ => libc::EIO,
                    },
                    message: e.to_string(),
                })?;
                // The receive loop notices the replaced sockets and takes the new ones.
                req.listen_port = Some(self.paths.port());
                rebound = true;
                tracing::info!(port = self.paths.port(), "listen port changed");
            }
        }
        // A rebind opened the new sockets with the new mark already.
        if let Some(mark) = req.fwmark.filter(|_| !rebound) {
            if let Err(e) = self.paths.set_fwmark(mark) {
                let _ = self.paths.set_fwmark(self.device.fwmark());
                return Err(UapiError {
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                    message: format!("setting fwmark {mark}: {e}"),
                });
            }
        }
        self.device
            .apply(&req, Instant::now())
            .map_err(|e| UapiError {
                errno: libc::E2BIG,
                message: e.to_string(),
            })
    }
}

/// The interfaces of the config file's `[Path]` sections: each must exist at start (a
/// typo must not bring up a tunnel with no uplink; `mpwg path add` takes one that comes
/// later). The parser already refused an interface named twice.
fn resolve_config_paths(
    file: &std::path::Path,
    paths: &[config::ConfigPath],
    interfaces: &[Interface],
) -> Result<Vec<Interface>, DaemonError> {
    paths
        .iter()
        .map(|p| {
            interfaces
                .iter()
                .find(|i| i.name == p.interface)
                .cloned()
                .ok_or_else(|| DaemonError::ConfigPath {
                    file: file.to_path_buf(),
                    line: p.line,
                    interface: p.interface.clone(),
                })
        })
        .collect()
}

/// Runs `mpwg up`: returns when a signal asked it to stop, or the TUN device or the UAPI
/// socket file went away, after cleaning up. `ready` is called once the device, its
/// sockets and its configuration are up (after systemd was told `READY=1`).
pub fn run(opts: &Options, ready: impl FnOnce()) -> Result<(), DaemonError> {
    // Before any thread starts: a signal in between must not kill the process unclean.
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
        .map_err(DaemonError::Signals)?;
    let handle = Builder::from_options(opts.clone()).start()?;
    let notifier = Notifier::ready(handle.status_source(), handle.lifecycle());
    ready();
    let stopper = handle.stopper();
    let signals_handle = signals.handle();
    std::thread::Builder::new()
        .name("mpwg-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                stopper.signal(sig);
            }
        })
        .map_err(DaemonError::Signals)?;
    let why = handle.wait_with(|| notifier.stopping());
    signals_handle.close();
    match why {
        StopReason::WorkerFailed => Err(DaemonError::WorkerFailed),
        _ => Ok(()),
    }
}
