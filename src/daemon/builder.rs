//! A tunnel as a library: [`Builder`] says what to create, [`Builder::start`] creates it
//! and starts its threads, and the [`Handle`] it returns configures it, changes its
//! paths, reads its status and stops it. `mpwg up` ([`super::run`]) is this, with
//! signals around it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{
    has_net_admin, link_infos, resolve_config_paths, DaemonError, Options, Tunnel, WATCH_INTERVAL,
};
use crate::control::config;
use crate::control::http::{MetricsServer, StatusSource};
use crate::control::request::{ControlHandler, Request};
use crate::control::show::ControlServer;
use crate::control::status::Status;
use crate::control::uapi::{self, PeerUpdate, SetRequest, UapiHandler, UapiServer};
use crate::datapath::monitor::{Monitor, PathOptions, Scheduling};
use crate::datapath::paths::{Paths, ReceiveMode, Transport};
use crate::datapath::{self, Io, Lifecycle};
use crate::io::netlink::{self, NetlinkSocket};
use crate::io::tun::{Tun, TunDevice};
use crate::multipath::endpoint::DEFAULT_WINDOW;
use crate::multipath::path::{Interface, PathArg};
use crate::multipath::scheduler::Mode;
use crate::protocol::device::Device;

/// How long [`Handle::stop`] waits for the tunnel's threads to end before it leaves the
/// stragglers behind (with a warning) and returns.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

/// What to create: a tunnel's TUN device, its paths, and how it runs. Every setting has
/// a default but the name; [`Builder::start`] creates it.
///
/// ```no_run
/// let tunnel = mpwg::Builder::new("wg0")
///     .mtu(1420)
///     .path("eth0")
///     .path_index(3)
///     .listen_port(51820)
///     .start()?;
/// println!("{}", tunnel.status().to_json());
/// tunnel.stop();
/// # Ok::<(), mpwg::Error>(())
/// ```
#[derive(Clone)]
pub struct Builder {
    opts: Options,
    uapi_socket: bool,
    control_socket: bool,
    check_permissions: bool,
    tun: Option<Arc<dyn TunDevice>>,
    transport: Option<Arc<dyn Transport>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("opts", &self.opts)
            .field("uapi_socket", &self.uapi_socket)
            .field("control_socket", &self.control_socket)
            .field("check_permissions", &self.check_permissions)
            .field("tun_device", &self.tun.is_some())
            .field("transport", &self.transport.is_some())
            .finish()
    }
}

impl Builder {
    /// A tunnel named `name` (its TUN device's name, and its UAPI socket's,
    /// `/var/run/wireguard/NAME.sock`): MTU 1420, no path (one unbound socket, as stock
    /// WireGuard), a free listen port, one TX worker, the receive thread decrypting.
    pub fn new(name: impl Into<String>) -> Builder {
        Builder::from_options(Options {
            name: name.into(),
            listen_port: None,
            mtu: 1420,
            config: None,
            paths: Vec::new(),
            receive: ReceiveMode::All,
            endpoint_window: DEFAULT_WINDOW,
            cores: 1,
            decrypt_workers: 0,
            batch: 64,
            io: Io::Uring,
            metrics: None,
            scheduling: Scheduling::default(),
        })
    }

    /// The builder of `mpwg up`'s options.
    #[doc(hidden)]
    pub fn from_options(opts: Options) -> Builder {
        Builder {
            opts,
            uapi_socket: true,
            control_socket: true,
            check_permissions: true,
            tun: None,
            transport: None,
        }
    }

    /// The TUN device's MTU (default 1420).
    pub fn mtu(mut self, mtu: u32) -> Builder {
        self.opts.mtu = mtu;
        self
    }

    /// The UDP listen port of every path (default: the config file's, else a free one).
    pub fn listen_port(mut self, port: u16) -> Builder {
        self.opts.listen_port = Some(port);
        self
    }

    /// Adds a path on the interface named `iface` (after those added before).
    pub fn path(mut self, iface: impl Into<String>) -> Builder {
        self.opts.paths.push(PathArg::Name(iface.into()));
        self
    }

    /// Adds a path on the interface whose index is `index` now: the path follows that
    /// interface's name from then on.
    pub fn path_index(mut self, index: u32) -> Builder {
        self.opts.paths.push(PathArg::Index(index));
        self
    }

    /// Adds a path on each of `ifaces`, by name, in order.
    pub fn paths<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ifaces: I) -> Builder {
        for i in ifaces {
            self = self.path(i);
        }
        self
    }

    /// Reads a configuration file (the `wg setconf` format, with mpwg's `[Path]`
    /// sections) at start.
    pub fn config_file(mut self, file: impl Into<PathBuf>) -> Builder {
        self.opts.config = Some(file.into());
        self
    }

    /// Which path sockets are read (default: every one).
    pub fn receive(mut self, mode: ReceiveMode) -> Builder {
        self.opts.receive = mode;
        self
    }

    /// How long an address the peer was seen at on a path keeps getting copies
    /// (default 15 s).
    pub fn endpoint_window(mut self, window: Duration) -> Builder {
        self.opts.endpoint_window = window;
        self
    }

    /// TX workers, one TUN queue each, pinned to cores 0..N (default 1).
    pub fn cores(mut self, cores: usize) -> Builder {
        self.opts.cores = cores.max(1);
        self
    }

    /// Threads that decrypt received batches (default 0: the receive thread does).
    pub fn decrypt_workers(mut self, workers: usize) -> Builder {
        self.opts.decrypt_workers = workers;
        self
    }

    /// Packets per batch: TUN reads, GSO sends, TUN writes (default 64).
    pub fn batch(mut self, packets: usize) -> Builder {
        self.opts.batch = packets.max(1);
        self
    }

    /// io_uring (default; Linux 6.0 or later) or plain system calls at the sockets.
    pub fn io(mut self, io: Io) -> Builder {
        self.opts.io = io;
        self
    }

    /// The scheduling mode (default: the config file's `Mode`, else duplicate); a
    /// running tunnel changes it with `mpwg mode` over its control socket.
    pub fn mode(mut self, mode: Mode) -> Builder {
        self.opts.scheduling.mode = Some(mode);
        self
    }

    /// Serves Prometheus metrics, `/status.json` and the status page on `addr`.
    pub fn metrics(mut self, addr: SocketAddr) -> Builder {
        self.opts.metrics = Some(addr);
        self
    }

    /// Whether to serve the UAPI socket `wg(8)` talks to (default: yes). Without it,
    /// the program configures the tunnel through [`Handle::set`] alone.
    pub fn uapi_socket(mut self, serve: bool) -> Builder {
        self.uapi_socket = serve;
        self
    }

    /// Whether to serve mpwg's control socket, `mpwg show` and `mpwg path` (default: yes).
    pub fn control_socket(mut self, serve: bool) -> Builder {
        self.control_socket = serve;
        self
    }

    /// Whether to check for root or CAP_NET_ADMIN before anything is created (default:
    /// yes), for a clear error rather than the TUN device's.
    pub fn check_permissions(mut self, check: bool) -> Builder {
        self.check_permissions = check;
        self
    }

    /// Uses the program's `device` instead of a kernel TUN device: the tunnel reads the
    /// packets to send from it and writes those it receives to it. No root needed.
    pub fn tun_device(mut self, device: impl TunDevice) -> Builder {
        self.tun = Some(Arc::new(device));
        self
    }

    /// Sends and receives through the program's `transport` instead of UDP sockets:
    /// the paths ([`Builder::path`], by name) are names the transport knows. The
    /// datapath then uses plain calls (no io_uring), one per datagram.
    pub fn transport(mut self, transport: impl Transport) -> Builder {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Creates the TUN device, the path sockets, and the UAPI and control sockets, and
    /// starts the tunnel's threads. The error says what could not be created and why.
    pub fn start(self) -> Result<Handle, DaemonError> {
        let opts = &self.opts;
        crate::io::tun::check_name(&opts.name)?;
        let mut initial = SetRequest::default();
        let mut config_paths = Vec::new();
        let mut scheduling = opts.scheduling;
        if let Some(path) = &opts.config {
            let parsed = config::load(path)?;
            config_paths = parsed.paths.clone();
            if scheduling.mode.is_none() {
                scheduling.mode = parsed.mode.and_then(|m| m.parse().ok());
            }
            for nh in &parsed.not_handled {
                tracing::warn!(
                    "{}:{}: {} is a wg-quick setting, not handled by mpwg",
                    path.display(),
                    nh.line,
                    nh.key
                );
            }
            initial = parsed.request;
        }
        let mut io = opts.io;
        if self.transport.is_some() {
            io = Io::Syscalls;
        }
        if io == Io::Uring {
            crate::io::uring::probe()?;
        }
        // Over a program's transport, no interface is looked up.
        let interfaces = match self.transport {
            Some(_) => Vec::new(),
            None => netlink::interfaces().map_err(DaemonError::Netlink)?,
        };
        let names: Vec<Interface> = interfaces
            .iter()
            .map(|i| Interface {
                name: i.link.name.clone(),
                index: i.link.index,
            })
            .collect();
        let ifaces = match &opts.config {
            Some(file) if opts.paths.is_empty() && !config_paths.is_empty() => {
                resolve_config_paths(file, &config_paths, &names)?
            }
            _ if self.transport.is_some() => Vec::new(),
            file => {
                if let (Some(file), false) = (file, config_paths.is_empty()) {
                    tracing::info!(
                        "paths given on the command line: the [Path] sections of {} are not used",
                        file.display()
                    );
                }
                crate::multipath::path::resolve(&opts.paths, &names)?
            }
        };
        if self.check_permissions && self.tun.is_none() && !has_net_admin() {
            return Err(DaemonError::NotPermitted(opts.name.clone()));
        }
        let port = opts.listen_port.or(initial.listen_port).unwrap_or(0);
        let fwmark = initial.fwmark.unwrap_or(0);
        let tun = Arc::new(match &self.tun {
            Some(dev) => Tun::user(&opts.name, dev.clone()),
            None => Tun::create(&opts.name, opts.mtu, opts.cores)?,
        });
        // From here on, what fails leaves nothing behind: the TUN device goes with its
        // queues (it is not persistent), the sockets with their descriptors.
        let mut paths = match &self.transport {
            Some(t) => Paths::open_user(&self.user_path_names(&config_paths)?, port, t.clone()),
            None => Paths::open(&ifaces, port, fwmark)?,
        };
        paths.window = opts.endpoint_window;
        let monitor = Arc::new(Monitor::new(scheduling.settings, paths.schedule.clone()));
        monitor.configure(&scheduling);
        for p in &config_paths {
            let o = PathOptions {
                priority: p.priority,
                weight: p.weight,
            };
            monitor.set_path_options(&p.interface, o);
        }
        let paths = Arc::new(paths);
        paths.attach();
        initial.listen_port = Some(paths.port());
        let device = Arc::new(Device::new(opts.mtu as usize));
        device
            .apply(&initial, Instant::now())
            .map_err(DaemonError::Limits)?;
        let (stop_tx, stop_rx) = mpsc::channel();
        let (handshakes, handshake_worker) = datapath::handshake::queue();
        let life = Arc::new(Lifecycle::default());
        let tunnel = Arc::new(Tunnel {
            name: opts.name.clone(),
            device,
            paths,
            monitor,
            tun,
            receive: opts.receive,
            batch: opts.batch,
            decrypt_workers: opts.decrypt_workers,
            io,
            mtu: opts.mtu,
            set_lock: Mutex::new(()),
            stop: Mutex::new(stop_tx.clone()),
            handshakes,
            life: life.clone(),
        });
        let uapi = self
            .uapi_socket
            .then(|| UapiServer::bind(&opts.name))
            .transpose()?;
        let control = self
            .control_socket
            .then(|| ControlServer::bind(&opts.name))
            .transpose()?;
        let t = tunnel.clone();
        let status_source: StatusSource = Arc::new(move || t.status());
        let metrics = opts
            .metrics
            .map(|addr| MetricsServer::start(addr, status_source.clone(), &life))
            .transpose()?;
        // Link events concern the kernel's TUN device and the socket paths' interfaces.
        let events = match (&self.tun, &self.transport) {
            (Some(_), Some(_)) => None,
            _ => Some(NetlinkSocket::open(true).map_err(DaemonError::Netlink)?),
        };

        tunnel.log_changes(tunnel.paths.sync(&link_infos(&interfaces), Instant::now()));
        tunnel.warn_mtu(&tunnel.paths.all());
        let mut threads = Vec::new();
        let t = tunnel.clone();
        threads.push(datapath::spawn("mpwg-handshake".into(), &life, move || {
            handshake_worker.run(&t.device, &*t.paths, &t.life)
        }));
        threads.push(tunnel.spawn_receiver());
        if let Some(events) = events {
            let t = tunnel.clone();
            threads.push(datapath::spawn("mpwg-netlink".into(), &life, move || {
                t.netlink_loop(events)
            }));
        }
        threads.extend(tunnel.spawn_senders());
        let t = tunnel.clone();
        threads.push(datapath::spawn("mpwg-timers".into(), &life, move || {
            t.timer_loop()
        }));
        let t = tunnel.clone();
        threads.push(datapath::spawn("mpwg-monitor".into(), &life, move || {
            t.monitor.run(&t.paths, &t.device, &t.life)
        }));
        if let Some(u) = &uapi {
            u.serve(Arc::new(tunnel.clone()));
        }
        if let Some(c) = &control {
            c.serve(tunnel.clone());
        }
        let all = tunnel.paths.all();
        let labels: Vec<&str> = all.iter().map(|p| p.label()).collect();
        tracing::info!(
            device = %opts.name,
            port = tunnel.paths.port(),
            paths = ?labels,
            uapi = %uapi.as_ref().map_or("none".into(), |u| u.path().display().to_string()),
            "ready"
        );
        drop(all);
        Ok(Handle {
            tunnel,
            threads,
            stop_tx,
            stop_rx: Mutex::new(stop_rx),
            uapi,
            control,
            metrics,
            status_source,
            stopped: false,
        })
    }
}

impl Builder {
    /// The names of the paths over a program's transport: those given, else the
    /// config file's `[Path]` sections.
    fn user_path_names(
        &self,
        config_paths: &[config::ConfigPath],
    ) -> Result<Vec<String>, DaemonError> {
        if self.opts.paths.is_empty() {
            return Ok(config_paths.iter().map(|p| p.interface.clone()).collect());
        }
        self.opts
            .paths
            .iter()
            .map(|p| match p {
                PathArg::Name(n) => Ok(n.clone()),
                PathArg::Index(i) => Err(DaemonError::TransportPathIndex(*i)),
            })
            .collect()
    }
}

/// Why a tunnel stopped ([`Handle::wait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// [`Stopper::stop`] (or [`Handle::stop`]) asked for it.
    Requested,
    /// A signal (`mpwg up`: SIGINT or SIGTERM).
    Signal(i32),
    /// The TUN device was deleted (`ip link del`, as `wg-quick down` does).
    DeviceDeleted,
    /// The UAPI socket file was removed.
    SocketRemoved,
    /// A worker thread of the tunnel panicked (logged); the tunnel was shut down.
    WorkerFailed,
}

/// Asks a running tunnel to stop, from any thread ([`Handle::stopper`]); its
/// [`Handle::wait`] then shuts it down and returns.
#[derive(Debug, Clone)]
pub struct Stopper(mpsc::Sender<StopReason>);

impl Stopper {
    /// Asks the tunnel to stop. Does nothing if it has stopped already.
    pub fn stop(&self) {
        let _ = self.0.send(StopReason::Requested);
    }

    /// Asks the tunnel to stop because of signal `sig` (for the log).
    #[doc(hidden)]
    pub fn signal(&self, sig: i32) {
        let _ = self.0.send(StopReason::Signal(sig));
    }
}

/// A running tunnel. Dropping it stops it, as [`Handle::stop`] does. It is `Send` and
/// `Sync`: threads may share it (`Arc<Handle>`) to configure it and read its status.
pub struct Handle {
    tunnel: Arc<Tunnel>,
    threads: Vec<JoinHandle<()>>,
    stop_tx: mpsc::Sender<StopReason>,
    stop_rx: Mutex<mpsc::Receiver<StopReason>>,
    uapi: Option<UapiServer>,
    control: Option<ControlServer>,
    metrics: Option<MetricsServer>,
    status_source: StatusSource,
    stopped: bool,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.tunnel.name)
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// The tunnel's name (its TUN device's).
    pub fn name(&self) -> &str {
        &self.tunnel.name
    }

    /// The UDP port every path listens on.
    pub fn listen_port(&self) -> u16 {
        self.tunnel.paths.port()
    }

    /// Applies a UAPI `set` request, as `wg set` sends it: `key=value` lines (a first
    /// `set=1` line and the empty line that ends a request are optional). It goes
    /// through the same parser and the same code as the UAPI socket: parsed whole, then
    /// applied all or nothing.
    ///
    /// ```no_run
    /// # let tunnel = mpwg::Builder::new("wg0").start()?;
    /// tunnel.set(
    ///     "private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a\n\
    ///      listen_port=51820\n\
    ///      public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\n\
    ///      endpoint=192.0.2.1:51820\n\
    ///      allowed_ip=10.0.0.2/32\n",
    /// )?;
    /// # Ok::<(), mpwg::Error>(())
    /// ```
    pub fn set(&self, request: &str) -> Result<(), DaemonError> {
        let lines: Vec<&str> = request
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        let body = match lines.first() {
            Some(&"set=1") => &lines[1..],
            _ => &lines[..],
        };
        let req = uapi::parse_set(body).map_err(|e| DaemonError::Configure(e.message))?;
        self.configure(req)
    }

    /// Applies a typed `set` ([`SetRequest`]: the device's keys, port and peers), as
    /// [`Handle::set`] does once the text is parsed.
    pub fn configure(&self, request: SetRequest) -> Result<(), DaemonError> {
        UapiHandler::set(&self.tunnel, request).map_err(|e| DaemonError::Configure(e.message))
    }

    /// Adds or changes one peer (its key, endpoint, allowed IPs, keepalive...), as a
    /// `set` naming only that peer does: the other peers are not disturbed.
    ///
    /// ```no_run
    /// # let tunnel = mpwg::Builder::new("wg0").start()?;
    /// let peer = mpwg::Key::generate().public_key();
    /// tunnel.set_peer(mpwg::PeerUpdate {
    ///     endpoint: Some("192.0.2.1:51820".parse().unwrap()),
    ///     allowed_ips: vec!["10.0.0.2/32".parse().unwrap()],
    ///     ..mpwg::PeerUpdate::new(peer)
    /// })?;
    /// # Ok::<(), mpwg::Error>(())
    /// ```
    pub fn set_peer(&self, peer: PeerUpdate) -> Result<(), DaemonError> {
        self.configure(SetRequest {
            peers: vec![peer],
            ..SetRequest::default()
        })
    }

    /// The configuration and peer state, as the UAPI's `get=1` answers it (what `wg show
    /// NAME dump` is made from; private keys included, as there).
    pub fn get(&self) -> String {
        uapi::format_get(&self.tunnel.device.snapshot())
    }

    /// Adds a path on interface `iface`, as `mpwg path add` does: with no new handshake
    /// and no loss on the other paths. `iface` may not exist yet: the path is then
    /// absent, and joins when an interface of that name appears.
    pub fn add_path(&self, iface: &str) -> Result<(), DaemonError> {
        self.tunnel.path_add(iface).map_err(DaemonError::PathChange)
    }

    /// Removes the path on interface `iface`, as `mpwg path del` does.
    pub fn remove_path(&self, iface: &str) -> Result<(), DaemonError> {
        self.tunnel.path_del(iface).map_err(DaemonError::PathChange)
    }

    /// The scheduling mode now.
    pub fn mode(&self) -> Mode {
        self.tunnel.monitor.schedule.mode()
    }

    /// Changes the scheduling mode, as `mpwg mode NAME MODE` does: the paths, peers and
    /// sessions stay as they are.
    pub fn set_mode(&self, mode: Mode) {
        // The control socket's own handler: a mode change cannot fail.
        let _ = ControlHandler::handle(&*self.tunnel, Request::Mode { mode });
    }

    /// The whole status: paths, peers, handshake and drop counters; what `mpwg show
    /// --json` prints ([`Status::to_json`]).
    pub fn status(&self) -> Status {
        self.tunnel.status()
    }

    /// What `mpwg show NAME` prints.
    pub fn show(&self) -> String {
        self.tunnel.show()
    }

    /// The status, as a closure the metrics listener and the systemd notifier take.
    #[doc(hidden)]
    pub fn status_source(&self) -> StatusSource {
        self.status_source.clone()
    }

    /// The tunnel's thread lifecycle (stop and failure flags).
    #[doc(hidden)]
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.tunnel.life
    }

    /// A way to ask the tunnel to stop from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop_tx.clone())
    }

    /// Runs until asked to stop ([`Stopper::stop`]), or until the TUN device is deleted,
    /// the UAPI socket file removed, or a worker thread fails; then stops the tunnel as
    /// [`Handle::stop`] does and says why.
    pub fn wait(self) -> StopReason {
        self.wait_with(|| {})
    }

    /// [`Handle::wait`], calling `stopping` once the reason is known, before anything is
    /// torn down (`mpwg up` tells systemd `STOPPING=1` there).
    #[doc(hidden)]
    pub fn wait_with(mut self, stopping: impl FnOnce()) -> StopReason {
        let why = self.watch();
        stopping();
        let name = &self.tunnel.name;
        match why {
            StopReason::Requested => tracing::info!(device = %name, "shutting down"),
            StopReason::Signal(sig) => {
                tracing::info!(device = %name, signal = sig, "shutting down")
            }
            StopReason::DeviceDeleted => tracing::warn!(
                device = %name,
                "TUN device {name} was deleted: removing the sockets and exiting"
            ),
            StopReason::SocketRemoved => tracing::warn!(
                device = %name,
                "UAPI socket {} was removed: removing the device and exiting",
                self.uapi.as_ref().map_or(String::new(), |u| u.path().display().to_string())
            ),
            StopReason::WorkerFailed => tracing::error!(
                device = %name,
                "a worker thread of {name} failed: shutting it down"
            ),
        }
        self.shutdown(why);
        why
    }

    /// Stops the tunnel: closes the UAPI and control sockets (removing their files),
    /// ends every thread, deletes the TUN device, and closes the path sockets.
    pub fn stop(mut self) {
        self.shutdown(StopReason::Requested);
    }

    /// Waits until something says to stop, checking every [`WATCH_INTERVAL`] that the
    /// device and the UAPI socket file are still there and no worker failed.
    fn watch(&self) -> StopReason {
        let t = &self.tunnel;
        loop {
            match self.stop_rx.lock().recv_timeout(WATCH_INTERVAL) {
                Ok(why) => return why,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The handle holds a sender: this cannot happen; wait as for a timeout.
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(WATCH_INTERVAL),
            }
            if t.life.failed() {
                return StopReason::WorkerFailed;
            }
            if t.tun.is_gone() {
                return StopReason::DeviceDeleted;
            }
            if self.uapi.as_ref().is_some_and(|u| !u.socket_file_present()) {
                return StopReason::SocketRemoved;
            }
        }
    }

    /// Tears the tunnel down, once.
    fn shutdown(&mut self, why: StopReason) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        // No more requests; their socket files go.
        self.control.take();
        self.uapi.take();
        self.metrics.take();
        let t = &self.tunnel;
        t.life.stop();
        // The TX workers wait in TUN reads: deleting the device (ours, and still the
        // one of that name at that index) ends them; a program's device is closed.
        if t.tun.is_user() {
            t.tun.close();
        } else if why != StopReason::DeviceDeleted && !t.tun.is_gone() {
            let ours = netlink::interfaces().is_ok_and(|list| {
                list.iter()
                    .any(|i| i.link.index == t.tun.index() && i.link.name == t.name)
            });
            if ours {
                if let Err(e) = netlink::delete_link(t.tun.index()) {
                    tracing::warn!("cannot delete TUN device {}: {e}", t.name);
                }
            }
        }
        let deadline = Instant::now() + STOP_PATIENCE;
        while self.threads.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for h in self.threads.drain(..) {
            if h.is_finished() {
                let _ = h.join();
            } else {
                tracing::warn!(
                    "thread {} of {} did not stop within {STOP_PATIENCE:?}; leaving it",
                    h.thread().name().unwrap_or("?"),
                    t.name
                );
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown(StopReason::Requested);
    }
}

/// A network interface, as [`interfaces`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Its name (what [`Builder::path`] takes).
    pub name: String,
    /// Its index now (what [`Builder::path_index`] takes).
    pub index: u32,
    /// Its addresses, each with its prefix length.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up with carrier: usable for a path now.
    pub up: bool,
}

/// The network interfaces of this namespace, by index, with their addresses: what `mpwg
/// interfaces` prints.
///
/// ```no_run
/// for i in mpwg::interfaces()? {
///     println!("{} {} {:?} mtu {} {}", i.index, i.name, i.addresses, i.mtu,
///              if i.up { "up" } else { "down" });
/// }
/// # Ok::<(), mpwg::Error>(())
/// ```
pub fn interfaces() -> Result<Vec<InterfaceInfo>, DaemonError> {
    let list = netlink::interfaces().map_err(DaemonError::Netlink)?;
    Ok(list
        .into_iter()
        .map(|i| InterfaceInfo {
            up: i.link.is_up(),
            name: i.link.name,
            index: i.link.index,
            addresses: i.addresses.iter().map(|a| (a.addr, a.prefix)).collect(),
            mtu: i.link.mtu,
        })
        .collect())
}
