//! The daemon: creates the TUN device, the socket and the UAPI socket, wires them to the
//! [`Device`], and runs until SIGINT or SIGTERM. Then it removes what it created.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::config::{self, ConfigError};
use crate::device::Device;
use crate::path::{Source, Transmit};
use crate::peer::Peer;
use crate::session::{HEADROOM, TAILROOM};
use crate::tun::{Tun, TunError};
use crate::uapi::{DeviceSnapshot, SetRequest, UapiBindError, UapiError, UapiHandler, UapiServer};
use crate::udp::{self, SocketOptions, UdpError};

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
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Neither root nor CAP_NET_ADMIN.
    #[error("mpwg up needs root or CAP_NET_ADMIN (to create TUN device {0}): run it with sudo")]
    NotPermitted(String),
    /// The TUN device.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// The UDP socket.
    #[error(transparent)]
    Udp(#[from] UdpError),
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The UAPI socket.
    #[error(transparent)]
    Uapi(#[from] UapiBindError),
    /// Signal handling could not be set up.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
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

/// One UDP socket of the tunnel.
struct PathSocket {
    sock: UdpSocket,
    v6: bool,
    port: u16,
    closed: AtomicBool,
    send_errors: AtomicU64,
}

impl PathSocket {
    fn open(opts: &SocketOptions) -> Result<PathSocket, UdpError> {
        let sock = udp::open(opts)?;
        let local = sock.local_addr().map_err(|e| UdpError::Io {
            port: opts.port,
            step: "getsockname()",
            source: e,
        })?;
        Ok(PathSocket {
            sock,
            v6: local.is_ipv6(),
            port: local.port(),
            closed: AtomicBool::new(false),
            send_errors: AtomicU64::new(0),
        })
    }

    fn send(&self, dst: SocketAddr, d: &[u8]) -> bool {
        match self.sock.send_to(d, udp::destination(self.v6, dst)) {
            Ok(_) => true,
            Err(e) => {
                let n = self.send_errors.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(%dst, errors = n + 1, "send failed: {e}");
                }
                false
            }
        }
    }
}

/// The network side: the tunnel's socket(s), as the device's [`Transmit`].
struct Net {
    socket: RwLock<Arc<PathSocket>>,
}

impl Transmit for Net {
    fn send_to_peer(&self, peer: &Peer, d: &[u8]) -> bool {
        match peer.endpoint_addr() {
            Some(ep) => self.socket.read().send(ep, d),
            None => false,
        }
    }

    fn send_to(&self, dst: Source, d: &[u8]) -> bool {
        self.socket.read().send(dst.addr, d)
    }
}

/// Everything a running tunnel shares between its threads.
struct Tunnel {
    device: Arc<Device>,
    net: Arc<Net>,
    tun: Arc<Tun>,
    /// Serialises `set` requests, so a port change and the rest apply together.
    set_lock: Mutex<()>,
}

impl Tunnel {
    fn spawn_receiver(self: &Arc<Self>, sock: Arc<PathSocket>) {
        let t = self.clone();
        thread::Builder::new()
            .name(format!("mpwg-rx-{}", sock.port))
            .spawn(move || t.receive_loop(&sock))
            .expect("spawning a thread");
    }

    fn receive_loop(&self, sock: &PathSocket) {
        let mut buf = vec![0u8; 65536];
        while !sock.closed.load(Ordering::Relaxed) {
            let (n, from) = match sock.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    tracing::warn!(port = sock.port, "receive failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let src = Source {
                addr: udp::canonical(from),
                path: 0,
            };
            if let crate::device::Received::Packet(r) =
                self.device.receive(src, &mut buf[..n], Instant::now(), &*self.net)
            {
                if let Err(e) = self.tun.write(&buf[r]) {
                    tracing::debug!("TUN write failed: {e}");
                }
            }
        }
    }

    fn tun_loop(&self) {
        let mut buf = vec![0u8; HEADROOM + 65535 + TAILROOM];
        loop {
            let n = match self.tun.read(&mut buf[HEADROOM..HEADROOM + 65535]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(tun = self.tun.name(), "TUN read failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            self.device.send_ip_packet(&mut buf, n, Instant::now(), &*self.net);
        }
    }

    fn timer_loop(&self) {
        loop {
            thread::sleep(Duration::from_millis(50));
            self.device.handle_timeout(Instant::now(), &*self.net);
        }
    }

    /// Opens a socket on `port` and swaps it in for the old one.
    fn rebind(self: &Arc<Self>, port: u16, fwmark: u32) -> Result<u16, UdpError> {
        let sock = Arc::new(PathSocket::open(&SocketOptions {
            port,
            fwmark,
            ..Default::default()
        })?);
        let actual = sock.port;
        let old = std::mem::replace(&mut *self.net.socket.write(), sock.clone());
        old.closed.store(true, Ordering::Relaxed);
        self.spawn_receiver(sock);
        tracing::info!(port = actual, "listening");
        Ok(actual)
    }
}

impl UapiHandler for Arc<Tunnel> {
    fn get(&self) -> DeviceSnapshot {
        self.device.snapshot()
    }

    fn set(&self, mut req: SetRequest) -> Result<(), UapiError> {
        let _guard = self.set_lock.lock();
        let current = self.net.socket.read().port;
        if let Some(port) = req.listen_port {
            if port != current || port == 0 {
                let fwmark = req.fwmark.unwrap_or_else(|| self.device.fwmark());
                let actual = self.rebind(port, fwmark).map_err(|e| UapiError {
                    errno: match e {
                        UdpError::PortInUse(_) => libc::EADDRINUSE,
                        _ => libc::EIO,
                    },
                    message: e.to_string(),
                })?;
                req.listen_port = Some(actual);
            }
        }
        if let Some(mark) = req.fwmark {
            let s = self.net.socket.read().clone();
            udp::set_fwmark(&s.sock, mark).map_err(|e| UapiError {
                errno: e.raw_os_error().unwrap_or(libc::EIO),
                message: format!("setting fwmark {mark}: {e}"),
            })?;
        }
        self.device.apply(&req, Instant::now());
        Ok(())
    }
}

/// Runs `mpwg up`: returns when a signal asked it to stop, after cleaning up.
pub fn run(opts: &Options) -> Result<(), DaemonError> {
    crate::tun::check_name(&opts.name)?;
    let mut initial = SetRequest::default();
    if let Some(path) = &opts.config {
        let parsed = config::load(path)?;
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
    if !has_net_admin() {
        return Err(DaemonError::NotPermitted(opts.name.clone()));
    }
    let port = opts.listen_port.or(initial.listen_port).unwrap_or(0);
    let fwmark = initial.fwmark.unwrap_or(0);
    let tun = Arc::new(Tun::create(&opts.name, opts.mtu)?);
    let sock = Arc::new(PathSocket::open(&SocketOptions {
        port,
        fwmark,
        ..Default::default()
    })?);
    initial.listen_port = Some(sock.port);
    let device = Arc::new(Device::new(opts.mtu as usize));
    device.apply(&initial, Instant::now());
    let tunnel = Arc::new(Tunnel {
        device,
        net: Arc::new(Net {
            socket: RwLock::new(sock.clone()),
        }),
        tun,
        set_lock: Mutex::new(()),
    });
    let uapi = UapiServer::bind(&opts.name)?;
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM]).map_err(DaemonError::Signals)?;

    tunnel.spawn_receiver(sock.clone());
    for (name, f) in [
        ("mpwg-tun", Tunnel::tun_loop as fn(&Tunnel)),
        ("mpwg-timers", Tunnel::timer_loop as fn(&Tunnel)),
    ] {
        let t = tunnel.clone();
        thread::Builder::new()
            .name(name.into())
            .spawn(move || f(&t))
            .expect("spawning a thread");
    }
    uapi.serve(Arc::new(tunnel.clone()));
    tracing::info!(
        device = %opts.name,
        port = sock.port,
        uapi = %uapi.path().display(),
        "ready"
    );

    let sig = signals.forever().next();
    tracing::info!(device = %opts.name, signal = ?sig, "shutting down");
    drop(uapi);
    Ok(())
}
