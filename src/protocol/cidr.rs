//! IP prefixes (`10.0.0.0/24`, `fd00::/64`), as allowed IPs are written.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a prefix could not be read or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before the `/` is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address (expected e.g. 10.0.0.0/24 or fd00::/64)")]
    Address(String),
    /// The part after the `/` is not a decimal number.
    #[error("{0:?} is not a prefix length (expected a number after the '/', e.g. 10.0.0.0/24)")]
    Prefix(String),
    /// The prefix length is longer than the address.
    #[error("prefix length /{prefix} is too long for an {family} address (at most /{max})")]
    PrefixTooLong {
        /// The prefix length that was given.
        prefix: u8,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// 32 or 128.
        max: u8,
    },
}

/// An IP prefix: an address and a prefix length, with the host bits cleared.
///
/// `10.0.0.5/24` is stored (and shown) as `10.0.0.0/24`, as `wg` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address (host bits are zero).
    pub addr: IpAddr,
    /// The prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

impl Cidr {
    /// Builds a prefix, clearing the host bits of `addr`.
    ///
    /// Fails if `prefix` is longer than 32 (IPv4) or 128 (IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError::PrefixTooLong {
                prefix,
                family: if addr.is_ipv4() { "IPv4" } else { "IPv6" },
                max,
            });
        }
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// True if `ip` is inside this prefix. An IPv4 address is never inside an IPv6
    /// prefix, nor the other way round.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() || self.prefix > max_prefix(ip) {
            return false;
        }
        mask(ip, self.prefix) == self.addr
    }
}

/// 32 for IPv4, 128 for IPv6.
fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Clears every bit of `addr` after the first `prefix` bits (`prefix` is at most the
/// address length; longer values keep every bit).
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX
                .checked_shl(32u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX
                .checked_shl(128u32.saturating_sub(u32::from(prefix)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Reads `ADDR/LEN`, or a bare address meaning `/32` (IPv4) or `/128` (IPv6).
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::Address(addr_text.to_string()))?;
        let prefix = match prefix_text {
            None => max_prefix(addr),
            Some(p) => {
                // Only plain decimal digits: `u8::from_str` would also take a `+`.
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CidrError::Prefix(p.to_string()));
                }
                // All digits, so the only failure left is overflow: too long anyway.
                p.parse::<u8>().unwrap_or(u8::MAX)
            }
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(c("10.0.0.0/24").to_string(), "10.0.0.0/24");
        assert_eq!(c("fd00::/64").to_string(), "fd00::/64");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(c("::/0").to_string(), "::/0");
        assert_eq!(c("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(c("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(c("10.0.0.1/032").prefix, 32);
    }

    #[test]
    fn masks_host_bits() {
        assert_eq!(c("10.0.0.5/24").to_string(), "10.0.0.0/24");
        assert_eq!(c("10.255.1.2/9").to_string(), "10.128.0.0/9");
        assert_eq!(c("1.2.3.4/0").to_string(), "0.0.0.0/0");
        assert_eq!(c("fd00::1:2:3/64").to_string(), "fd00::/64");
        assert_eq!(c("ffff::1/1").to_string(), "8000::/1");
        assert_eq!(c("fd00::1/0").to_string(), "::/0");
        let n = Cidr::new("10.1.2.3".parse().unwrap(), 16).unwrap();
        assert_eq!(n, c("10.1.0.0/16"));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong {
                prefix: 33,
                family: "IPv4",
                max: 32
            })
        );
        assert!(matches!(
            "fd00::/129".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { max: 128, .. })
        ));
        assert!(matches!(
            "10.0.0.0/999".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { .. })
        ));
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "1.2.3.4/ 8",
        ] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::Prefix(_))),
                "{bad}"
            );
        }
        for bad in [
            "",
            "/8",
            "10.0.0/8",
            "host.example/8",
            "10.0.0.256",
            " 10.0.0.1",
        ] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::Address(_))),
                "{bad}"
            );
        }
        assert!(Cidr::new("::".parse().unwrap(), 200).is_err());
        let msg = "10.0.0.0/33".parse::<Cidr>().unwrap_err().to_string();
        assert_eq!(
            msg,
            "prefix length /33 is too long for an IPv4 address (at most /32)"
        );
    }

    #[test]
    fn contains() {
        let n = c("10.0.0.0/24");
        assert!(n.contains("10.0.0.0".parse().unwrap()));
        assert!(n.contains("10.0.0.255".parse().unwrap()));
        assert!(!n.contains("10.0.1.0".parse().unwrap()));
        assert!(!n.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("255.255.255.255".parse().unwrap()));
        assert!(!c("0.0.0.0/0").contains("::1".parse().unwrap()));
        let h = c("192.0.2.7");
        assert!(h.contains("192.0.2.7".parse().unwrap()));
        assert!(!h.contains("192.0.2.6".parse().unwrap()));
        let v6 = c("fd00::/64");
        assert!(v6.contains("fd00::abcd".parse().unwrap()));
        assert!(!v6.contains("fd00:0:0:1::".parse().unwrap()));
        assert!(c("::/0").contains("2001:db8::1".parse().unwrap()));
    }
}
