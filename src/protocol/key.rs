//! Keys as WireGuard writes them: 32 bytes, base64 in config files, hex on the UAPI socket.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Base64 text that does not decode to exactly 32 bytes.
    #[error("not a valid base64 key (a WireGuard key is 44 characters of base64, as `wg genkey` prints)")]
    Base64,
    /// Hex text that is not exactly 64 hex digits.
    #[error("not a valid hex key (the UAPI expects 64 hex digits)")]
    Hex,
}

/// A 32-byte key: a public key, a private key or a preshared key.
///
/// `Debug` never prints the bytes, so a key can sit in a struct that is logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// Reads the base64 form (`wg genkey`, config files).
    pub fn from_base64(s: &str) -> Result<Key, KeyError> {
        let bytes = B64.decode(s.trim()).map_err(|_| KeyError::Base64)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Base64)?;
        Ok(Key(arr))
    }

    /// Reads the hex form used on the UAPI socket.
    pub fn from_hex(s: &str) -> Result<Key, KeyError> {
        let s = s.trim().as_bytes();
        if s.len() != 64 {
            return Err(KeyError::Hex);
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(KeyError::Hex)?;
            let lo = hex_val(pair[1]).ok_or(KeyError::Hex)?;
            out[i] = hi << 4 | lo;
        }
        Ok(Key(out))
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// The lower-case hex form.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }

    /// True for the all-zero key, which the UAPI uses to mean "no key".
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    /// The public key that belongs to this key read as a private key.
    pub fn public_key(&self) -> Key {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        Key(*x25519_dalek::PublicKey::from(&secret).as_bytes())
    }

    /// A new random private key.
    pub fn generate() -> Key {
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
        Key(secret.to_bytes())
    }

    /// A short, non-secret label for logs: the first 8 characters of the base64 form.
    /// Use it only for public keys.
    pub fn short(&self) -> String {
        let mut s = self.to_base64();
        s.truncate(8);
        s
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex_round_trip() {
        let k = Key::generate();
        assert_eq!(Key::from_base64(&k.to_base64()).unwrap(), k);
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap(), k);
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(Key::from_base64("abc"), Err(KeyError::Base64));
        assert_eq!(Key::from_hex("zz"), Err(KeyError::Hex));
        assert_eq!(Key::from_hex(&"g".repeat(64)), Err(KeyError::Hex));
    }

    #[test]
    fn debug_hides_the_bytes() {
        let k = Key([7u8; 32]);
        assert_eq!(format!("{k:?}"), "Key(..)");
    }
}
