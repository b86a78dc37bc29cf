//! mpwg's own messages between two mpwg ends, as pure encode/decode.
//!
//! Both travel inside the WireGuard session, so an on-path attacker can neither forge nor
//! read them, and neither ever reaches a stock peer as something it does not handle:
//!
//! - A **probe** is the whole plaintext of a transport-data message: [`PROBE_LEN`] bytes
//!   whose first byte has the high nibble 1, where an IP packet has 4 or 6. It is sent on
//!   one path, only to a peer that has shown it is mpwg, and carries the echo of the
//!   peer's latest probe on that path (sequence number, how long it waited, and which of
//!   the peer's probes arrived), so one message each way per interval measures the round
//!   trip and the loss of both ends' paths.
//! - A **hello** is how an mpwg end shows it is one: [`HELLO_LEN`] bytes appended to an
//!   ordinary IP packet, after its end (as given by the IP header's length field) and
//!   before WireGuard's zero padding. Every WireGuard receiver (the kernel, wireguard-go,
//!   boringtun) trims the plaintext to the IP header's length, so to a stock peer a hello
//!   is padding. An mpwg receiver that finds one starts probing the sender.
//!
//! Layout of a probe (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | `0x11`: type probe, version 1 |
//! | 1 | flags ([`FLAG_STRIPING`], [`FLAG_ACTIVE`], [`FLAG_DUPLICATE`]) |
//! | 2 | the sender's path id |
//! | 3 | the path id of the receiver's probe being echoed, or `0xff` for none |
//! | 4..8 | sequence number of this probe on the sender's path (from 1) |
//! | 8..12 | sequence number echoed (0: none) |
//! | 12..16 | microseconds between the echoed probe's arrival and this probe's sending |
//! | 16..20 | which of the 32 probes up to the echoed one arrived (bit i: seq − i) |
//! | 20..22 | the sender's probe interval, in milliseconds |
//! | 22..32 | zero |

use std::time::Duration;

/// Bytes of a probe plaintext (a multiple of 16: WireGuard pads it no further).
pub const PROBE_LEN: usize = 32;
/// First byte of a probe: high nibble 1 (not an IP version), low nibble the version.
pub const PROBE_TYPE: u8 = 0x11;
/// Flag: the sender stripes data over two paths or more; the receiver should reorder.
pub const FLAG_STRIPING: u8 = 1;
/// Flag: the sender is probing at its active (traffic flowing) rate.
pub const FLAG_ACTIVE: u8 = 2;
/// Flag: the sender sends every packet on every path (duplicate mode), so copies that
/// never arrive on a path are its loss.
pub const FLAG_DUPLICATE: u8 = 4;
/// The echoed-path byte when nothing is echoed.
pub const NO_PATH: u8 = 0xff;

/// Bytes of a hello trailer.
pub const HELLO_LEN: usize = 8;
/// A hello trailer: "mpwg", version 1, and three bytes that are not zero padding.
pub const HELLO: [u8; HELLO_LEN] = *b"mpwg\x01hi!";

/// The echo a probe carries of the receiver's own probes on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    /// The receiver's path id the echoed probe was sent on.
    pub path: u8,
    /// Its sequence number.
    pub seq: u32,
    /// Time between its arrival and the sending of the probe that echoes it.
    pub delay: Duration,
    /// Bit i set: the receiver's probe `seq - i` on that path arrived.
    pub received: u32,
}

/// A decoded probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// [`FLAG_STRIPING`], [`FLAG_ACTIVE`], [`FLAG_DUPLICATE`].
    pub flags: u8,
    /// The sender's path id.
    pub path: u8,
    /// Sequence number on the sender's path.
    pub seq: u32,
    /// The echo of the receiver's latest probe that the sender saw on this path.
    pub echo: Option<Echo>,
    /// How often the sender probes now.
    pub interval: Duration,
}

/// Why bytes are not a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Wrong length.
    #[error("an mpwg probe is {PROBE_LEN} bytes, not {0}")]
    Length(usize),
    /// Not a probe's type byte (another version, or not mpwg).
    #[error("not an mpwg probe (type byte {0:#04x})")]
    Type(u8),
    /// A field out of range.
    #[error("malformed mpwg probe: {0}")]
    Field(&'static str),
}

/// True if `plain` (a decrypted data message's plaintext) is an mpwg message rather than
/// an IP packet: its first byte's high nibble is 1.
pub fn is_mpwg(plain: &[u8]) -> bool {
    plain.first().is_some_and(|b| b >> 4 == 1)
}

impl Probe {
    /// Encodes the probe into its [`PROBE_LEN`] bytes.
    pub fn encode(&self) -> [u8; PROBE_LEN] {
        let mut b = [0u8; PROBE_LEN];
        b[0] = PROBE_TYPE;
        b[1] = self.flags;
        b[2] = self.path;
        b[4..8].copy_from_slice(&self.seq.to_le_bytes());
        match self.echo {
            Some(e) => {
                b[3] = e.path;
                b[8..12].copy_from_slice(&e.seq.to_le_bytes());
                let us = u32::try_from(e.delay.as_micros()).unwrap_or(u32::MAX);
                b[12..16].copy_from_slice(&us.to_le_bytes());
                b[16..20].copy_from_slice(&e.received.to_le_bytes());
            }
            None => b[3] = NO_PATH,
        }
        let ms = u16::try_from(self.interval.as_millis()).unwrap_or(u16::MAX);
        b[20..22].copy_from_slice(&ms.to_le_bytes());
        b
    }

    /// Decodes a probe; anything else is an error, never a panic.
    pub fn decode(b: &[u8]) -> Result<Probe, ProbeError> {
        if b.len() != PROBE_LEN {
            return Err(ProbeError::Length(b.len()));
        }
        if b[0] != PROBE_TYPE {
            return Err(ProbeError::Type(b[0]));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let seq = u32_at(4);
        if seq == 0 {
            return Err(ProbeError::Field("sequence number 0"));
        }
        let echo_seq = u32_at(8);
        let echo = match (b[3], echo_seq) {
            (NO_PATH, 0) => None,
            (NO_PATH, _) | (_, 0) => {
                return Err(ProbeError::Field(
                    "echo without a path or a sequence number",
                ))
            }
            (path, seq) => Some(Echo {
                path,
                seq,
                delay: Duration::from_micros(u64::from(u32_at(12))),
                received: u32_at(16),
            }),
        };
        let interval = Duration::from_millis(u64::from(u16::from_le_bytes([b[20], b[21]])));
        if interval.is_zero() {
            return Err(ProbeError::Field("probe interval 0"));
        }
        Ok(Probe {
            flags: b[1],
            path: b[2],
            seq,
            echo,
            interval,
        })
    }
}

/// True if the decrypted plaintext `plain`, holding an IP packet of `ip_len` bytes, has a
/// hello trailer after it.
pub fn has_hello(plain: &[u8], ip_len: usize) -> bool {
    plain
        .get(ip_len..ip_len.saturating_add(HELLO_LEN))
        .is_some_and(|t| t == HELLO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> Probe {
        Probe {
            flags: FLAG_STRIPING,
            path: 1,
            seq: 77,
            echo: Some(Echo {
                path: 0,
                seq: 12,
                delay: Duration::from_micros(1500),
                received: 0xffff_fffe,
            }),
            interval: Duration::from_millis(100),
        }
    }

    #[test]
    fn round_trips() {
        let p = probe();
        let b = p.encode();
        assert_eq!(b.len(), PROBE_LEN);
        assert!(is_mpwg(&b));
        assert_eq!(Probe::decode(&b), Ok(p));
        let q = Probe { echo: None, ..p };
        assert_eq!(Probe::decode(&q.encode()), Ok(q));
    }

    #[test]
    fn an_ip_packet_is_not_mpwg() {
        assert!(!is_mpwg(&[0x45, 0, 0, 20]));
        assert!(!is_mpwg(&[0x60, 0, 0, 0]));
        assert!(!is_mpwg(&[]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Probe::decode(&[]), Err(ProbeError::Length(0)));
        let mut b = probe().encode();
        b[0] = 0x12;
        assert_eq!(Probe::decode(&b), Err(ProbeError::Type(0x12)));
        let mut b = probe().encode();
        b[4..8].fill(0);
        assert!(matches!(Probe::decode(&b), Err(ProbeError::Field(_))));
        let mut b = probe().encode();
        b[3] = NO_PATH;
        assert!(matches!(Probe::decode(&b), Err(ProbeError::Field(_))));
        let mut b = probe().encode();
        b[20..22].fill(0);
        assert!(matches!(Probe::decode(&b), Err(ProbeError::Field(_))));
        // Every byte value in every position: decoded or refused, never a panic.
        let base = probe().encode();
        for i in 0..PROBE_LEN {
            for v in 0..=255u8 {
                let mut b = base;
                b[i] = v;
                let _ = Probe::decode(&b);
            }
        }
    }

    #[test]
    fn out_of_range_values_saturate() {
        let mut p = probe();
        p.interval = Duration::from_secs(3600);
        p.echo.as_mut().unwrap().delay = Duration::from_secs(1 << 20);
        let d = Probe::decode(&p.encode()).unwrap();
        assert_eq!(d.interval, Duration::from_millis(u64::from(u16::MAX)));
        assert_eq!(
            d.echo.unwrap().delay,
            Duration::from_micros(u64::from(u32::MAX))
        );
    }

    #[test]
    fn a_hello_is_found_only_right_after_the_ip_packet() {
        let mut plain = vec![0x45u8; 20];
        plain.extend_from_slice(&HELLO);
        plain.extend_from_slice(&[0; 4]);
        assert!(has_hello(&plain, 20));
        assert!(!has_hello(&plain, 19));
        assert!(!has_hello(&plain[..27], 20));
        // Zero padding is not a hello.
        assert!(!has_hello(
            &[0x45; 20]
                .iter()
                .chain(&[0; 12])
                .copied()
                .collect::<Vec<_>>(),
            20
        ));
    }
}
