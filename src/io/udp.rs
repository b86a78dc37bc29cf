//! UDP sockets of the tunnel: dual-stack, optionally bound to one interface, with fwmark;
//! each receive says which local address the datagram was sent to, and each send may name
//! the address to send from ([`crate::io::cmsg`]).

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

use crate::io::cmsg::{self, ControlBuf, SOL_UDP, UDP_GRO};

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

/// setsockopt(2) with an int value.
pub(crate) fn setsockopt_int(fd: RawFd, level: i32, opt: i32, val: i32) -> io::Result<()> {
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
    /// SO_MARK (0: none).
    pub fwmark: u32,
}

/// Opens a UDP socket: IPv6 dual-stack where the kernel has IPv6, IPv4 otherwise.
///
/// No `SO_REUSEPORT`: the path sockets of one tunnel share their port because each is
/// bound to its own interface (`SO_BINDTODEVICE` before `bind`), and Linux lets sockets
/// bound to different devices hold one port. A second daemon (or any other socket) on
/// that port and one of those interfaces, or unbound, then gets `EADDRINUSE`, "port in
/// use", instead of silently sharing the port and stealing half its datagrams.
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
    // Each receive then says the local address the datagram was sent to (IPv4, also
    // IPv4-mapped on a dual-stack socket; IPv6): replies leave from it.
    setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
        .map_err(|e| io_err("IP_PKTINFO", e))?;
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
            .map_err(|e| io_err("IPV6_RECVPKTINFO", e))?;
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

/// Bytes the socket has handed the kernel that have not left this machine yet
/// (SIOCOUTQ: the socket's send-buffer use, which counts a datagram until its interface
/// transmits it). Above a few datagrams, that is a queue on this machine in front of the
/// path, such as a local shaper's (tc tbf, cake): the path is full. None if the kernel
/// does not say.
pub fn unsent_bytes(sock: &UdpSocket) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which points at `n`, alive
    // and writable for the call; the descriptor is the socket's own, open while borrowed.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    (rc == 0).then_some(n.max(0) as usize)
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

/// The most segments one GSO send may carry (the kernel's UDP_MAX_SEGMENTS is 64 or
/// more, depending on the version).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// The most bytes one GSO send may carry.
pub const MAX_GSO_BYTES: usize = 65_000;

/// Asks the kernel to coalesce received datagrams of a flow (UDP_GRO).
pub fn enable_gro(sock: &UdpSocket) -> io::Result<()> {
    setsockopt_int(sock.as_raw_fd(), SOL_UDP, UDP_GRO, 1)
}

/// Sets SO_SNDBUFFORCE and SO_RCVBUFFORCE (root), falling back to the plain options.
pub fn set_buffers(sock: &UdpSocket, bytes: i32) {
    let fd = sock.as_raw_fd();
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, bytes).is_err() {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, bytes);
    }
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes).is_err() {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
    }
}

/// Datagrams to send together: one buffer cut into `segment`-byte datagrams (the last may
/// be shorter), or datagrams each in its own buffer, where it was sealed (`Each`: every
/// one but the last of the same length, the last no longer; they go out with that length
/// as the GSO segment, without being copied together first).
#[derive(Debug, Clone, Copy)]
pub enum Datagrams<'a> {
    /// One buffer, cut into datagrams of `segment` bytes.
    Segments {
        /// The datagrams, back to back.
        buf: &'a [u8],
        /// Their size (the last may be shorter).
        segment: usize,
    },
    /// One datagram per buffer.
    Each(&'a [&'a [u8]]),
}

impl<'a> Datagrams<'a> {
    /// How many datagrams.
    pub fn count(&self) -> usize {
        match self {
            Datagrams::Segments { buf, segment } => buf.len().div_ceil((*segment).max(1)),
            Datagrams::Each(parts) => parts.len(),
        }
    }

    /// Bytes in all.
    pub fn len(&self) -> usize {
        match self {
            Datagrams::Segments { buf, .. } => buf.len(),
            Datagrams::Each(parts) => parts.iter().map(|p| p.len()).sum(),
        }
    }

    /// True if there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GSO segment size: the size of every datagram but the last.
    pub fn segment(&self) -> usize {
        match self {
            Datagrams::Segments { segment, .. } => *segment,
            Datagrams::Each(parts) => parts.first().map_or(0, |p| p.len()),
        }
    }

    /// Each datagram, in order.
    pub fn each(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (buf, segment, parts): (&'a [u8], usize, &'a [&'a [u8]]) = match *self {
            Datagrams::Segments { buf, segment } => (buf, segment.max(1), &[]),
            Datagrams::Each(parts) => (&[], 1, parts),
        };
        buf.chunks(segment).chain(parts.iter().copied())
    }
}

/// Sends `buf` to `dst` as datagrams of `segment` bytes each (the last may be shorter),
/// in one `sendmsg` with a UDP_SEGMENT control message. With `segment >= buf.len()` it is
/// a plain send.
pub fn send_segments(
    sock: &UdpSocket,
    v6_socket: bool,
    dst: SocketAddr,
    buf: &[u8],
    segment: usize,
) -> io::Result<usize> {
    send_datagrams(
        sock,
        v6_socket,
        dst,
        None,
        Datagrams::Segments { buf, segment },
    )
}

/// Sends `d` to `dst` in one `sendmsg`, with a UDP_SEGMENT control message when there is
/// more than one datagram; [`Datagrams::Each`] is gathered from its buffers by the kernel
/// (at most [`MAX_GSO_SEGMENTS`] of them). `source`: the local address to send from
/// (`IP_PKTINFO`/`IPV6_PKTINFO`; None: the kernel's choice). A source that is no longer
/// one of the host's addresses fails the send ([`source_refused`]).
pub fn send_datagrams(
    sock: &UdpSocket,
    v6_socket: bool,
    dst: SocketAddr,
    source: Option<IpAddr>,
    d: Datagrams,
) -> io::Result<usize> {
    let (storage, addr_len) = sockaddr(destination(v6_socket, dst));
    let none = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iovs = [none; MAX_GSO_SEGMENTS];
    let n_iov = match d {
        Datagrams::Segments { buf, .. } => {
            iovs[0] = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            1
        }
        Datagrams::Each(parts) => {
            if parts.len() > MAX_GSO_SEGMENTS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} datagrams in one send: at most {MAX_GSO_SEGMENTS}",
                        parts.len()
                    ),
                ));
            }
            for (iov, p) in iovs.iter_mut().zip(parts) {
                *iov = libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                };
            }
            parts.len()
        }
    };
    let (total, segment) = (d.len(), d.segment());
    let gso = (segment > 0 && segment < total).then(|| {
        u16::try_from(segment).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("UDP GSO segment size {segment} exceeds 65535"),
            )
        })
    });
    let gso = gso.transpose()?;
    let mut control = ControlBuf::default();
    let control_len = cmsg::write_send(&mut control, gso, source, is_v4(dst));
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&storage as *const libc::sockaddr_storage) as *mut libc::c_void;
    msg.msg_namelen = addr_len;
    msg.msg_iov = iovs.as_mut_ptr();
    msg.msg_iovlen = n_iov;
    if control_len > 0 {
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control_len as _;
    }
    // SAFETY: msg points at live buffers (storage, the iovecs over the caller's buffers,
    // control) for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// True if a send that named its source failed the way a source the host no longer has
/// fails it (EINVAL over IPv6, ENETUNREACH or EINVAL over IPv4): sending again from the
/// kernel's choice may succeed.
pub fn source_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENETUNREACH) | Some(libc::EADDRNOTAVAIL)
    )
}

/// True if `dst` is an IPv4 address (also IPv4-mapped IPv6): what its packet info is.
pub fn is_v4(dst: SocketAddr) -> bool {
    match dst {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    }
}

/// What one receive got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes received.
    pub len: usize,
    /// The sender ([`canonical`]).
    pub from: SocketAddr,
    /// The size of the datagrams the kernel coalesced (UDP_GRO); the length when there
    /// was only one.
    pub segment: usize,
    /// The local address the datagram was sent to (None where the kernel did not say).
    pub local: Option<IpAddr>,
}

/// Receives into `buf`: the length, the sender, the GRO segment size and the local
/// address it was sent to ([`Received`]).
pub fn recv_segments(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    recv_segments_flags(sock, buf, 0)
}

/// [`recv_segments`] with `recvmsg` flags (MSG_DONTWAIT).
pub fn recv_segments_flags(
    sock: &UdpSocket,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<Received> {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = ControlBuf::default();
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: msg points at live buffers (storage, iov over buf, control) for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    #[allow(clippy::unnecessary_cast)] // `msg_controllen` is a u32 on musl
    let used = (msg.msg_controllen as usize).min(control.0.len());
    let c = cmsg::parse(&control.0[..used]);
    let segment = match c.gro {
        Some(v) if v > 0 => v as usize,
        _ => n,
    };
    let addr = from_sockaddr(&storage).ok_or_else(|| io::Error::other("unknown address family"))?;
    Ok(Received {
        len: n,
        from: canonical(addr),
        segment,
        local: c.local,
    })
}

fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::from((
                a.sin_addr.s_addr.to_ne_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sockets with the default options, and the first's port at `ip`.
    fn two_sockets(ip: [u8; 4]) -> (UdpSocket, UdpSocket, SocketAddr) {
        let first = open(&SocketOptions::default()).unwrap();
        let second = open(&SocketOptions::default()).unwrap();
        let port = first.local_addr().unwrap().port();
        (first, second, SocketAddr::from((ip, port)))
    }

    #[test]
    fn gso_send_arrives_as_separate_datagrams_and_gro_coalesces() {
        let (rx, tx, dst) = two_sockets([127, 0, 0, 1]);
        let mut buf = vec![0u8; 3 * 100 + 40];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i / 100) as u8;
        }
        let n = send_segments(&tx, true, dst, &buf, 100).unwrap();
        assert_eq!(n, buf.len());
        let mut got = vec![0u8; 2000];
        let mut sizes = Vec::new();
        for _ in 0..4 {
            let Received {
                len: n,
                segment: seg,
                ..
            } = recv_segments(&rx, &mut got).unwrap();
            assert_eq!(seg, n, "GRO is off: one datagram per read");
            assert!(got[..n].iter().all(|&b| b == got[0]));
            sizes.push(n);
        }
        assert_eq!(sizes, vec![100, 100, 100, 40]);

        enable_gro(&rx).unwrap();
        send_segments(&tx, true, dst, &buf, 100).unwrap();
        let mut total = 0;
        while total < buf.len() {
            let Received {
                len: n,
                from,
                segment: seg,
                local,
            } = recv_segments(&rx, &mut got).unwrap();
            assert_eq!(from.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
            assert_eq!(local, Some(std::net::IpAddr::from([127, 0, 0, 1])));
            assert!(seg == 100 || n == 40, "segment size {seg} for {n} bytes");
            total += n;
        }
        assert_eq!(total, buf.len());
    }

    /// A datagram sent to 127.0.0.5 is received with that local address, and a reply
    /// sent from it (IP_PKTINFO) arrives from it, though the kernel would pick 127.0.0.1;
    /// also through the GSO path. Over IPv6 (only ::1 on loopback) the packet info is
    /// read and a send naming ::1 leaves from it. An address the host does not have
    /// fails the send with EINVAL.
    #[test]
    fn replies_leave_from_the_address_the_datagram_was_sent_to() {
        let (server, client, to) = two_sockets([127, 0, 0, 5]);
        send_segments(&client, true, to, b"hello", 5).unwrap();
        let mut buf = [0u8; 100];
        let got = recv_segments(&server, &mut buf).unwrap();
        assert_eq!(got.local, Some(IpAddr::from([127, 0, 0, 5])));
        assert_eq!(got.from.ip(), IpAddr::from([127, 0, 0, 1]));

        send_datagrams(
            &server,
            true,
            got.from,
            got.local,
            Datagrams::Segments {
                buf: b"reply",
                segment: 5,
            },
        )
        .unwrap();
        let back = recv_segments(&client, &mut buf).unwrap();
        assert_eq!(back.from, to, "the reply came from the kernel's choice");
        // Without a source, the kernel picks 127.0.0.1.
        send_datagrams(
            &server,
            true,
            got.from,
            None,
            Datagrams::Segments {
                buf: b"reply",
                segment: 5,
            },
        )
        .unwrap();
        assert_eq!(
            recv_segments(&client, &mut buf).unwrap().from.ip(),
            IpAddr::from([127, 0, 0, 1])
        );
        // A GSO send with a source: every datagram comes from it.
        let parts: [&[u8]; 3] = [b"aaaa", b"bbbb", b"cc"];
        send_datagrams(&server, true, got.from, got.local, Datagrams::Each(&parts)).unwrap();
        for want in parts {
            let r = recv_segments(&client, &mut buf).unwrap();
            assert_eq!((&buf[..r.len], r.from), (want, to));
        }
        let gone = send_datagrams(
            &server,
            true,
            got.from,
            Some(IpAddr::from([192, 0, 2, 1])),
            Datagrams::Segments {
                buf: b"x",
                segment: 1,
            },
        );
        let e = gone.unwrap_err();
        assert!(source_refused(&e), "{e}");

        let to6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, to.port()));
        if send_segments(&client, true, to6, b"six", 3).is_ok() {
            let got = recv_segments(&server, &mut buf).unwrap();
            assert_eq!(got.local, Some("::1".parse().unwrap()));
            send_datagrams(
                &server,
                true,
                got.from,
                got.local,
                Datagrams::Segments {
                    buf: b"six",
                    segment: 3,
                },
            )
            .unwrap();
            assert_eq!(recv_segments(&client, &mut buf).unwrap().from, to6);
            let source = Some("2001:db8::1".parse().unwrap());
            let one = Datagrams::Segments {
                buf: b"x",
                segment: 1,
            };
            let e = send_datagrams(&server, true, got.from, source, one).unwrap_err();
            assert!(source_refused(&e), "{e}");
        }
    }
}
