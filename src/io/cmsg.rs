//! Control messages of the tunnel's UDP sends and receives, built and parsed as bytes,
//! for the plain system calls ([`crate::io::udp`]) and io_uring ([`crate::io::uring`]):
//!
//! * `UDP_SEGMENT`: the GSO segment size of a send;
//! * `UDP_GRO`: the segment size of a coalesced receive;
//! * `IP_PKTINFO` / `IPV6_PKTINFO`: on a receive, the local address the datagram was sent
//!   to; on a send, the source address to send it from. A reply then leaves from the
//!   address the peer wrote to, even on an interface with several addresses (the kernel
//!   would otherwise pick the route's preferred source), as WireGuard's "sticky sockets"
//!   do.
//!
//! Written by hand rather than with a crate: the three messages are a few bytes each, and
//! io_uring needs them in memory it owns (a slot per in-flight send, a provided buffer per
//! receive), which the libc `CMSG_*` macros can only walk through a `msghdr`.

use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `SOL_UDP` (`IPPROTO_UDP`), the level of the UDP socket options and cmsgs.
pub const SOL_UDP: libc::c_int = 17;
/// `UDP_SEGMENT`: GSO segment size of a send (a `u16` cmsg).
pub const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO`: segment size of a coalesced receive (an `int` cmsg).
pub const UDP_GRO: libc::c_int = 104;

// SAFETY: CMSG_LEN and CMSG_SPACE are pure arithmetic on their argument (they are `unsafe`
// in libc only for historical reasons); nothing is dereferenced.
const DATA_OFFSET: usize = unsafe { libc::CMSG_LEN(0) } as usize;

const fn space(data: usize) -> usize {
    // SAFETY: as above, arithmetic only.
    unsafe { libc::CMSG_SPACE(data as u32) as usize }
}

const fn len(data: usize) -> usize {
    // SAFETY: as above, arithmetic only.
    unsafe { libc::CMSG_LEN(data as u32) as usize }
}

const PKTINFO4_LEN: usize = mem::size_of::<libc::in_pktinfo>();
const PKTINFO6_LEN: usize = mem::size_of::<libc::in6_pktinfo>();

/// Room for the control messages of one send or receive: a segment size (`UDP_SEGMENT`
/// or `UDP_GRO`) and the larger packet-info message (`IPV6_PKTINFO`).
pub const CONTROL_SPACE: usize = space(mem::size_of::<libc::c_int>()) + space(PKTINFO6_LEN);

const _: () = assert!(PKTINFO4_LEN == 12 && PKTINFO6_LEN == 20);
const _: () = assert!(space(PKTINFO4_LEN) <= space(PKTINFO6_LEN));

/// A buffer for control messages, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct ControlBuf(pub [u8; CONTROL_SPACE]);

impl Default for ControlBuf {
    fn default() -> ControlBuf {
        ControlBuf([0; CONTROL_SPACE])
    }
}

/// What the control messages of a receive say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    /// The `UDP_GRO` segment size, if the datagrams were coalesced.
    pub gro: Option<i32>,
    /// The local address the datagram was sent to (`IP_PKTINFO`'s `ipi_spec_dst`, the
    /// address to reply from; `IPV6_PKTINFO`'s address), IPv4-mapped IPv6 as IPv4.
    pub local: Option<IpAddr>,
}

/// Parses the control messages the kernel wrote (`control`: the used part of the control
/// buffer). Unknown messages are skipped; a malformed one ends the walk.
pub fn parse(control: &[u8]) -> Control {
    let mut out = Control::default();
    let hdr_len = mem::size_of::<libc::cmsghdr>();
    let align = mem::size_of::<usize>();
    let mut off = 0usize;
    while control.len().saturating_sub(off) >= hdr_len {
        // SAFETY: `off + size_of::<cmsghdr>() <= control.len()` (checked above), so the read
        // stays inside the slice; `read_unaligned` needs no alignment, and every bit pattern
        // is a valid `cmsghdr` (integers only).
        let h = unsafe {
            control
                .as_ptr()
                .add(off)
                .cast::<libc::cmsghdr>()
                .read_unaligned()
        };
        #[allow(clippy::unnecessary_cast)] // `cmsg_len` is a u32 on musl
        let clen = h.cmsg_len as usize;
        if clen < DATA_OFFSET || clen > control.len() - off {
            break;
        }
        let data = &control[off + DATA_OFFSET..off + clen];
        match (h.cmsg_level, h.cmsg_type) {
            (SOL_UDP, UDP_GRO) => {
                if let Some(b) = data.get(..4) {
                    out.gro = Some(i32::from_ne_bytes(b.try_into().unwrap_or_default()));
                }
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
                if let Some(b) = data.get(4..8) {
                    let a = Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap_or_default());
                    out.local = usable(IpAddr::V4(a));
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // struct in6_pktinfo { in6_addr ipi6_addr; unsigned ipi6_ifindex; }
                if let Some(b) = data.get(..16) {
                    let a = Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or_default());
                    out.local = usable(match a.to_ipv4_mapped() {
                        Some(v4) => IpAddr::V4(v4),
                        None => IpAddr::V6(a),
                    });
                }
            }
            _ => {}
        }
        let Some(next) = clen
            .checked_add(align - 1)
            .map(|n| n & !(align - 1))
            .and_then(|n| off.checked_add(n))
        else {
            break;
        };
        off = next;
    }
    out
}

/// An address a reply can be sent from by naming it alone: not unspecified, multicast or
/// broadcast, and not IPv6 link-local (which needs an interface index with it; the
/// kernel's own choice is as good there).
fn usable(a: IpAddr) -> Option<IpAddr> {
    let ok = match a {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_multicast() && !v4.is_broadcast(),
        IpAddr::V6(v6) => {
            !v6.is_unspecified() && !v6.is_multicast() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    };
    ok.then_some(a)
}

/// Writes one control message at `off` in `buf`; returns the offset after it.
fn put(
    buf: &mut ControlBuf,
    off: usize,
    level: libc::c_int,
    kind: libc::c_int,
    data: &[u8],
) -> usize {
    // SAFETY: cmsghdr is a C struct of integers (and padding on musl), for which all-zero is
    // a valid value.
    let mut h: libc::cmsghdr = unsafe { mem::zeroed() };
    h.cmsg_len = len(data.len()) as _;
    h.cmsg_level = level;
    h.cmsg_type = kind;
    let end = off + space(data.len());
    assert!(
        end <= CONTROL_SPACE,
        "control messages overflow their buffer"
    );
    // SAFETY: `off + size_of::<cmsghdr>() <= off + space(data) <= CONTROL_SPACE` (asserted
    // above), so the write stays inside `buf`; `write_unaligned` needs no alignment.
    unsafe {
        buf.0
            .as_mut_ptr()
            .add(off)
            .cast::<libc::cmsghdr>()
            .write_unaligned(h)
    };
    buf.0[off + DATA_OFFSET..off + DATA_OFFSET + data.len()].copy_from_slice(data);
    buf.0[off + DATA_OFFSET + data.len()..end].fill(0);
    end
}

/// Writes the control messages of a send into `buf` and returns their length
/// (`msg_controllen`; 0: none). `segment`: the `UDP_SEGMENT` size, for a GSO send.
/// `source`: the address to send from (`IP_PKTINFO` to an IPv4 destination, `dst_v4`,
/// which an `AF_INET6` socket accepts too for IPv4-mapped ones; `IPV6_PKTINFO` to an
/// IPv6 one), with no interface index (the socket's own device applies); a source of the
/// other family than the destination is left out.
pub fn write_send(
    buf: &mut ControlBuf,
    segment: Option<u16>,
    source: Option<IpAddr>,
    dst_v4: bool,
) -> usize {
    let mut off = 0;
    if let Some(s) = segment {
        off = put(buf, off, SOL_UDP, UDP_SEGMENT, &s.to_ne_bytes());
    }
    match source {
        Some(IpAddr::V4(a)) if dst_v4 => {
            let mut info = [0u8; PKTINFO4_LEN];
            info[4..8].copy_from_slice(&a.octets());
            off = put(buf, off, libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
        }
        Some(IpAddr::V6(a)) if !dst_v4 => {
            let mut info = [0u8; PKTINFO6_LEN];
            info[..16].copy_from_slice(&a.octets());
            off = put(buf, off, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info);
        }
        _ => {}
    }
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_parses_back() {
        let mut buf = ControlBuf::default();
        // A send's UDP_SEGMENT parses as nothing a receive reports; the packet info does.
        let a4: IpAddr = "192.0.2.7".parse().unwrap();
        let n = write_send(&mut buf, Some(1400), Some(a4), true);
        assert_eq!(n, space(2) + space(PKTINFO4_LEN));
        let c = parse(&buf.0[..n]);
        assert_eq!(
            c,
            Control {
                gro: None,
                local: Some(a4)
            }
        );

        let a6: IpAddr = "2001:db8::7".parse().unwrap();
        let n = write_send(&mut buf, None, Some(a6), false);
        assert_eq!(n, space(PKTINFO6_LEN));
        assert_eq!(parse(&buf.0[..n]).local, Some(a6));

        // The other family than the destination's, or nothing at all: no message.
        assert_eq!(write_send(&mut buf, None, Some(a6), true), 0);
        assert_eq!(write_send(&mut buf, None, Some(a4), false), 0);
        assert_eq!(write_send(&mut buf, None, None, true), 0);
        // The fullest send fits.
        assert!(space(2) + space(PKTINFO6_LEN) <= CONTROL_SPACE);
    }

    #[test]
    fn received_messages_parse_and_junk_does_not_panic() {
        let mut buf = ControlBuf::default();
        let mut off = put(&mut buf, 0, SOL_UDP, UDP_GRO, &1372i32.to_ne_bytes());
        let mut mapped = [0u8; PKTINFO6_LEN];
        mapped[..16].copy_from_slice(&"::ffff:10.1.2.3".parse::<Ipv6Addr>().unwrap().octets());
        off = put(
            &mut buf,
            off,
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            &mapped,
        );
        let c = parse(&buf.0[..off]);
        assert_eq!(c.gro, Some(1372));
        assert_eq!(c.local, Some("10.1.2.3".parse().unwrap()));

        // Addresses a reply cannot name alone are not reported.
        for bad in ["fe80::1", "ff02::1", "::"] {
            let mut info = [0u8; PKTINFO6_LEN];
            info[..16].copy_from_slice(&bad.parse::<Ipv6Addr>().unwrap().octets());
            let n = put(&mut buf, 0, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info);
            assert_eq!(parse(&buf.0[..n]).local, None, "{bad}");
        }

        // Truncated and nonsense lengths end the walk.
        for cut in 0..off {
            let _ = parse(&buf.0[..cut]);
        }
        let mut junk = ControlBuf([0xff; CONTROL_SPACE]);
        assert_eq!(parse(&junk.0), Control::default());
        junk.0[..8].copy_from_slice(&(1usize << 40).to_ne_bytes());
        assert_eq!(parse(&junk.0), Control::default());
    }
}
