//! TAI64N timestamps, the replay guard of handshake initiations.

use std::time::{SystemTime, UNIX_EPOCH};

/// A 12-byte TAI64N label: big-endian seconds since 1970 offset by 2^62 (plus the TAI-UTC
/// offset of 10 s), then big-endian nanoseconds. Byte order makes `Ord` the time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Tai64n(pub [u8; 12]);

impl Tai64n {
    /// The timestamp for a wall-clock time. The nanoseconds are rounded down to a multiple of
    /// 2^24 ns (about 16 ms), as other implementations do, so the exact clock does not leak.
    pub fn from_system_time(t: SystemTime) -> Tai64n {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = (1u64 << 62) + 10 + d.as_secs();
        let nanos = d.subsec_nanos() & !0x00ff_ffff;
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&secs.to_be_bytes());
        out[8..].copy_from_slice(&nanos.to_be_bytes());
        Tai64n(out)
    }

    /// The timestamp for now.
    pub fn now() -> Tai64n {
        Tai64n::from_system_time(SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn later_is_greater() {
        let t = SystemTime::now();
        let a = Tai64n::from_system_time(t);
        let b = Tai64n::from_system_time(t + Duration::from_millis(40));
        assert!(b > a);
        assert_eq!(
            a,
            Tai64n::from_system_time(t + Duration::from_nanos(1)).min(a)
        );
    }
}
