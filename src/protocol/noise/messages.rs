//! The four WireGuard message types on the wire, their sizes and field offsets.
//!
//! Parsing never panics: every accessor is reached only through [`classify`], which checks
//! the type byte and the exact length first.

/// Handshake initiation.
pub const TYPE_INITIATION: u8 = 1;
/// Handshake response.
pub const TYPE_RESPONSE: u8 = 2;
/// Cookie reply.
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Transport data.
pub const TYPE_DATA: u8 = 4;

/// Size of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Size of a handshake response.
pub const RESPONSE_LEN: usize = 92;
/// Size of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Size of the transport data header (type, reserved, receiver index, counter).
pub const DATA_HEADER_LEN: usize = 16;
/// Size of a transport message with an empty payload (a keepalive).
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + 16;

/// What a received datagram is, by its type byte and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A 148-byte handshake initiation.
    Initiation,
    /// A 92-byte handshake response.
    Response,
    /// A 64-byte cookie reply.
    CookieReply,
    /// A transport data message of at least 32 bytes.
    Data,
}

/// Classifies a datagram; `None` for anything that is not a well-formed WireGuard message.
pub fn classify(d: &[u8]) -> Option<Kind> {
    if d.len() < 4 || d[1..4] != [0, 0, 0] {
        return None;
    }
    match (d[0], d.len()) {
        (TYPE_INITIATION, INITIATION_LEN) => Some(Kind::Initiation),
        (TYPE_RESPONSE, RESPONSE_LEN) => Some(Kind::Response),
        (TYPE_COOKIE_REPLY, COOKIE_REPLY_LEN) => Some(Kind::CookieReply),
        (TYPE_DATA, n) if n >= DATA_MIN_LEN => Some(Kind::Data),
        _ => None,
    }
}

/// Reads a little-endian u32 at `off` (the caller has checked the length).
pub fn le32(d: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&d[off..off + 4]);
    u32::from_le_bytes(b)
}

/// Reads a little-endian u64 at `off` (the caller has checked the length).
pub fn le64(d: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[off..off + 8]);
    u64::from_le_bytes(b)
}

/// Copies 32 bytes at `off`.
pub fn bytes32(d: &[u8], off: usize) -> [u8; 32] {
    let mut b = [0u8; 32];
    b.copy_from_slice(&d[off..off + 32]);
    b
}

/// Field offsets of the initiation.
pub mod initiation {
    /// Sender index.
    pub const SENDER: usize = 4;
    /// Unencrypted ephemeral public key.
    pub const EPHEMERAL: usize = 8;
    /// Encrypted static public key (32 + 16).
    pub const STATIC: usize = 40;
    /// Encrypted TAI64N timestamp (12 + 16).
    pub const TIMESTAMP: usize = 88;
    /// mac1.
    pub const MAC1: usize = 116;
    /// mac2.
    pub const MAC2: usize = 132;
}

/// Field offsets of the response.
pub mod response {
    /// Sender index.
    pub const SENDER: usize = 4;
    /// Receiver index.
    pub const RECEIVER: usize = 8;
    /// Unencrypted ephemeral public key.
    pub const EPHEMERAL: usize = 12;
    /// Encrypted nothing (a 16-byte tag).
    pub const EMPTY: usize = 44;
    /// mac1.
    pub const MAC1: usize = 60;
    /// mac2.
    pub const MAC2: usize = 76;
}

/// Field offsets of the cookie reply.
pub mod cookie_reply {
    /// Receiver index.
    pub const RECEIVER: usize = 4;
    /// XChaCha20 nonce.
    pub const NONCE: usize = 8;
    /// Encrypted cookie (16 + 16).
    pub const COOKIE: usize = 32;
}

/// Field offsets of transport data.
pub mod data {
    /// Receiver index.
    pub const RECEIVER: usize = 4;
    /// Counter (the nonce).
    pub const COUNTER: usize = 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_checks_type_length_and_reserved() {
        assert_eq!(classify(&[1; 148]), None, "reserved bytes must be zero");
        let mut init = [0u8; 148];
        init[0] = 1;
        assert_eq!(classify(&init), Some(Kind::Initiation));
        assert_eq!(classify(&init[..147]), None);
        let mut data = [0u8; 32];
        data[0] = 4;
        assert_eq!(classify(&data), Some(Kind::Data));
        assert_eq!(classify(&data[..31]), None);
        assert_eq!(classify(&[]), None);
        assert_eq!(classify(&[9, 0, 0, 0]), None);
    }
}
