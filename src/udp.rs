//! UDP sockets of the tunnel: dual-stack, optionally bound to one interface, with fwmark.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// Another socket holds the port.
    #[error("UDP port {0} is already in use: choose another listen port")]
    PortInUse(u16),
    /// The interface to bind to does not exist.
    #[error("cannot bind a socket to interface {0}: no such interface")]
    NoSuchInterface(String),
    /// Any other failure.
    #[error("UDP socket on port {port}: {step} failed: {source}")]
    Io {
        /// Port.
        port: u16,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

fn setsockopt_int(fd: RawFd, level: i32, opt: i32, val: i32) -> io::Result<()> {
    // SAFETY: the option value is a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Options of one tunnel socket.
#[derive(Debug, Clone, Default)]
pub struct SocketOptions {
    /// Port to bind (0: any free port).
    pub port: u16,
    /// Interface to bind to (SO_BINDTODEVICE).
    pub device: Option<String>,
    /// SO_REUSEPORT, so several path sockets share the port.
    pub reuse_port: bool,
    /// SO_MARK (0: none).
    pub fwmark: u32,
}

/// Opens a UDP socket: IPv6 dual-stack where the kernel has IPv6, IPv4 otherwise.
pub fn open(opts: &SocketOptions) -> Result<UdpSocket, UdpError> {
    let port = opts.port;
    let io_err = |step, source| UdpError::Io { port, step, source };
    // SAFETY: socket() takes no pointers; the result is checked.
    let mut fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    let v6 = fd >= 0;
    if !v6 {
        // SAFETY: as above.
        fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    }
    if fd < 0 {
        return Err(io_err("socket()", io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh socket owned by nothing else; UdpSocket closes it on drop.
    let sock = unsafe { UdpSocket::from_raw_fd(fd) };
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)
            .map_err(|e| io_err("IPV6_V6ONLY", e))?;
    }
    if opts.reuse_port {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)
            .map_err(|e| io_err("SO_REUSEPORT", e))?;
    }
    if let Some(dev) = &opts.device {
        // SAFETY: the option value is the device name's bytes and their exact length.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                dev.as_ptr().cast(),
                dev.len() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::ENODEV) {
                UdpError::NoSuchInterface(dev.clone())
            } else {
                io_err("SO_BINDTODEVICE", e)
            });
        }
    }
    if opts.fwmark != 0 {
        set_fwmark(&sock, opts.fwmark).map_err(|e| io_err("SO_MARK", e))?;
    }
    let addr: SocketAddr = if v6 {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], port))
    };
    bind(&sock, addr).map_err(|e| {
        if e.raw_os_error() == Some(libc::EADDRINUSE) {
            UdpError::PortInUse(port)
        } else {
            io_err("bind()", e)
        }
    })?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| io_err("SO_RCVTIMEO", e))?;
    Ok(sock)
}

fn bind(sock: &UdpSocket, addr: SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of `len` bytes.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// Sets SO_MARK (0 clears it).
pub fn set_fwmark(sock: &UdpSocket, mark: u32) -> io::Result<()> {
    setsockopt_int(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_MARK,
        mark as i32,
    )
}

/// The address to pass to `send_to` on a socket: IPv4 endpoints are mapped on a v6 one.
pub fn destination(v6_socket: bool, dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V4(a) if v6_socket => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        other => other,
    }
}

/// A received address as a user thinks of it: IPv4-mapped IPv6 turned back into IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, a.port())),
            None => addr,
        },
        v4 => v4,
    }
}
