//! Interface discovery and link events through rtnetlink (NETLINK_ROUTE).
//!
//! The parsing is pure ([`parse`]) and unit-tested on byte strings; the socket calls
//! live in [`NetlinkSocket`].

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_GSO_MAX_SEGS: u16 = 40;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x1_0000;
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
const IFADDRMSG: usize = 8;

/// An address on an interface, with its prefix length (host bits kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length of its subnet.
    pub prefix: u8,
}

impl std::fmt::Display for IfAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A link as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (`ip link set up`).
    pub admin_up: bool,
    /// Lower layer up: carrier present.
    pub carrier: bool,
}

impl Link {
    /// Usable for sending: admin up with carrier.
    pub fn is_up(&self) -> bool {
        self.admin_up && self.carrier
    }
}

/// One interface with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The link.
    pub link: Link,
    /// Addresses with prefix length.
    pub addresses: Vec<IfAddr>,
}

/// One parsed rtnetlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A link exists or changed.
    NewLink(Link),
    /// A link was removed.
    DelLink(Link),
    /// An address was added to interface `index`.
    NewAddr(u32, IfAddr),
    /// An address was removed from interface `index`.
    DelAddr(u32, IfAddr),
    /// End of a dump.
    Done,
    /// The kernel refused a request (negative errno).
    Error(i32),
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterates the (type, payload) attributes in `b`.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)? & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

fn parse_link(body: &[u8]) -> Option<Link> {
    let index = u32_at(body, 4)?;
    let flags = u32_at(body, 8)?;
    let mut link = Link {
        index,
        name: String::new(),
        mtu: 0,
        admin_up: flags & IFF_UP != 0,
        carrier: flags & IFF_LOWER_UP != 0,
    };
    for (kind, payload) in attrs(body.get(IFINFOMSG..)?) {
        match kind {
            IFLA_IFNAME => {
                let end = payload
                    .iter()
                    .position(|&c| c == 0)
                    .unwrap_or(payload.len());
                link.name = String::from_utf8_lossy(&payload[..end]).into_owned();
            }
            IFLA_MTU => link.mtu = u32_at(payload, 0).unwrap_or(0),
            _ => {}
        }
    }
    Some(link)
}

fn parse_addr(body: &[u8]) -> Option<(u32, IfAddr)> {
    let family = *body.first()?;
    let prefix = *body.get(1)?;
    let index = u32_at(body, 4)?;
    let mut local = None;
    let mut address = None;
    for (kind, payload) in attrs(body.get(IFADDRMSG..)?) {
        let ip = match (family as i32, payload.len()) {
            (libc::AF_INET, 4) => IpAddr::from(<[u8; 4]>::try_from(payload).ok()?),
            (libc::AF_INET6, 16) => IpAddr::from(<[u8; 16]>::try_from(payload).ok()?),
            _ => continue,
        };
        match kind {
            IFA_LOCAL => local = Some(ip),
            IFA_ADDRESS => address = Some(ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    Some((index, IfAddr { addr: ip, prefix }))
}

/// Parses every message in one datagram from a netlink socket. Unknown or truncated
/// messages are skipped.
pub fn parse(mut buf: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR {
        let Some(len) = u32_at(buf, 0).map(|l| l as usize) else {
            break;
        };
        let kind = u16_at(buf, 4).unwrap_or(0);
        if len < NLMSG_HDR || len > buf.len() {
            break;
        }
        let body = &buf[NLMSG_HDR..len];
        let msg = match kind {
            NLMSG_DONE => Some(Message::Done),
            NLMSG_ERROR => u32_at(body, 0).map(|e| Message::Error(e as i32)),
            RTM_NEWLINK => parse_link(body).map(Message::NewLink),
            RTM_DELLINK => parse_link(body).map(Message::DelLink),
            RTM_NEWADDR => parse_addr(body).map(|(i, c)| Message::NewAddr(i, c)),
            RTM_DELADDR => parse_addr(body).map(|(i, c)| Message::DelAddr(i, c)),
            _ => None,
        };
        out.extend(msg);
        buf = buf.get(align4(len)..).unwrap_or(&[]);
    }
    out
}

/// An rtnetlink socket.
pub struct NetlinkSocket {
    fd: OwnedFd,
}

impl NetlinkSocket {
    /// A socket for requests; with `events`, also subscribed to link and address changes.
    pub fn open(events: bool) -> io::Result<NetlinkSocket> {
        // SAFETY: socket() takes no pointers; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is valid.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        if events {
            sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
        }
        // SAFETY: sa is a valid sockaddr_nl and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NetlinkSocket { fd })
    }

    /// Sets how long [`NetlinkSocket::recv`] waits.
    pub fn set_timeout(&self, t: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: tv is a live timeval and its exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn send_dump(&self, kind: u16, family: u8, body_len: usize) -> io::Result<()> {
        let mut req = vec![0u8; NLMSG_HDR + body_len];
        let len = req.len() as u32;
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&kind.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&1u32.to_ne_bytes());
        req[NLMSG_HDR] = family;
        // SAFETY: req is a valid buffer of req.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one datagram and parses it.
    pub fn recv(&self) -> io::Result<Vec<Message>> {
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(parse(&buf[..n as usize]))
    }

    /// Sets one 32-bit attribute of link `index` (RTM_SETLINK) and waits for the ack.
    fn set_link_u32(&self, index: u32, attr: u16, value: u32) -> io::Result<()> {
        let mut req = [0u8; NLMSG_HDR + IFINFOMSG + 8];
        let a = NLMSG_HDR + IFINFOMSG;
        req[a..a + 2].copy_from_slice(&8u16.to_ne_bytes());
        req[a + 2..a + 4].copy_from_slice(&attr.to_ne_bytes());
        req[a + 4..a + 8].copy_from_slice(&value.to_ne_bytes());
        self.link_request(RTM_SETLINK, index, &mut req)
    }

    /// Sends `req` (room for the header, an ifinfomsg and the attributes after them,
    /// already written) as a `kind` request about link `index`, and waits for the ack.
    fn link_request(&self, kind: u16, index: u32, req: &mut [u8]) -> io::Result<()> {
        let len = req.len() as u32;
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&kind.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        req[8..12].copy_from_slice(&2u32.to_ne_bytes());
        req[NLMSG_HDR] = libc::AF_UNSPEC as u8;
        req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&index.to_ne_bytes());
        // SAFETY: req is a valid buffer of req.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            for m in self.recv()? {
                if let Message::Error(e) = m {
                    return if e == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-e))
                    };
                }
            }
        }
    }

    fn dump(&self, kind: u16, body_len: usize) -> io::Result<Vec<Message>> {
        self.send_dump(kind, libc::AF_UNSPEC as u8, body_len)?;
        let mut all = Vec::new();
        loop {
            let msgs = self.recv()?;
            if msgs.is_empty() {
                continue;
            }
            for m in msgs {
                match m {
                    Message::Done => return Ok(all),
                    Message::Error(e) if e != 0 => return Err(io::Error::from_raw_os_error(-e)),
                    other => all.push(other),
                }
            }
        }
    }
}

/// Every interface of this network namespace, by index.
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let sock = NetlinkSocket::open(false)?;
    sock.set_timeout(Duration::from_secs(2))?;
    let mut out: Vec<Interface> = sock
        .dump(RTM_GETLINK, IFINFOMSG)?
        .into_iter()
        .filter_map(|m| match m {
            Message::NewLink(link) => Some(Interface {
                link,
                addresses: Vec::new(),
            }),
            _ => None,
        })
        .collect();
    for m in sock.dump(RTM_GETADDR, IFADDRMSG)? {
        if let Message::NewAddr(index, cidr) = m {
            if let Some(i) = out.iter_mut().find(|i| i.link.index == index) {
                i.addresses.push(cidr);
            }
        }
    }
    out.sort_by_key(|i| i.link.index);
    Ok(out)
}

/// Caps the segments of one GSO super-packet the kernel hands interface `index`
/// (`ip link set dev X gso_max_segs N`): the TUN layer splits a super-packet into at most
/// as many packets as it has buffers.
pub fn set_gso_max_segs(index: u32, segments: u32) -> io::Result<()> {
    let sock = NetlinkSocket::open(false)?;
    sock.set_timeout(Duration::from_secs(2))?;
    sock.set_link_u32(index, IFLA_GSO_MAX_SEGS, segments)
}

/// Deletes link `index` (`ip link del`), as a daemon stopping a tunnel does to the TUN
/// device it created.
pub fn delete_link(index: u32) -> io::Result<()> {
    let sock = NetlinkSocket::open(false)?;
    sock.set_timeout(Duration::from_secs(2))?;
    let mut req = [0u8; NLMSG_HDR + IFINFOMSG];
    sock.link_request(RTM_DELLINK, index, &mut req)
}

/// `mpwg interfaces`: one line per interface.
pub fn format_interfaces(list: &[Interface]) -> String {
    let mut s = format!(
        "{:<6} {:<16} {:<6} {:<6} {:<8} {}\n",
        "INDEX", "NAME", "MTU", "ADMIN", "CARRIER", "ADDRESSES"
    );
    for i in list {
        let addrs: Vec<String> = i.addresses.iter().map(|c| c.to_string()).collect();
        s.push_str(&format!(
            "{:<6} {:<16} {:<6} {:<6} {:<8} {}\n",
            i.link.index,
            i.link.name,
            i.link.mtu,
            if i.link.admin_up { "up" } else { "down" },
            if i.link.carrier { "yes" } else { "no" },
            if addrs.is_empty() {
                "-".to_string()
            } else {
                addrs.join(" ")
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn msg(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn parses_links_and_addresses() {
        let mut link = vec![0u8; IFINFOMSG];
        link[4..8].copy_from_slice(&7u32.to_ne_bytes());
        link[8..12].copy_from_slice(&(IFF_UP | IFF_LOWER_UP).to_ne_bytes());
        link.extend(attr(IFLA_IFNAME, b"eth1\0"));
        link.extend(attr(IFLA_MTU, &1500u32.to_ne_bytes()));
        let mut addr = vec![0u8; IFADDRMSG];
        addr[0] = libc::AF_INET as u8;
        addr[1] = 24;
        addr[4..8].copy_from_slice(&7u32.to_ne_bytes());
        addr.extend(attr(IFA_LOCAL, &[10, 1, 1, 5]));
        let mut buf = msg(RTM_NEWLINK, &link);
        buf.extend(msg(RTM_NEWADDR, &addr));
        buf.extend(msg(NLMSG_DONE, &[0; 4]));
        let parsed = parse(&buf);
        assert_eq!(
            parsed[0],
            Message::NewLink(Link {
                index: 7,
                name: "eth1".into(),
                mtu: 1500,
                admin_up: true,
                carrier: true
            })
        );
        assert_eq!(
            parsed[1],
            Message::NewAddr(
                7,
                IfAddr {
                    addr: "10.1.1.5".parse().unwrap(),
                    prefix: 24
                }
            )
        );
        assert_eq!(parsed[2], Message::Done);
    }

    #[test]
    fn truncated_input_is_skipped_without_panic() {
        for n in 0..40 {
            let _ = parse(&vec![0xffu8; n]);
            let _ = parse(&msg(RTM_NEWLINK, &vec![0u8; n]));
            let _ = parse(&msg(RTM_NEWADDR, &vec![0xff; n]));
        }
    }

    #[test]
    fn lists_loopback() {
        // Every network namespace has lo at index 1.
        let list = interfaces().expect("netlink dump");
        let lo = list
            .iter()
            .find(|i| i.link.name == "lo")
            .expect("lo listed");
        assert_eq!(lo.link.index, 1);
        assert!(format_interfaces(&list).contains("lo"));
    }
}
