//! The primitives the WireGuard paper names: HASH, MAC, HMAC, KDF1..3, AEAD, XAEAD, DH.
//!
//! What a KDF or a DH returns is key material: it comes in a [`Secret`], wiped when
//! dropped. MAC comparisons take constant time ([`ct_eq`]).

use blake2::digest::{FixedOutput, Mac as _, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use hmac::SimpleHmac;
use zeroize::Zeroizing;

/// Length of a Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// 32 bytes of key material (a chaining key, a KDF output, a DH result), wiped when
/// dropped.
pub type Secret = Zeroizing<[u8; 32]>;

/// True if `a` and `b` are equal, in time that depends only on their lengths (mac1 and
/// mac2 checks: a comparison that stops at the first difference tells a forger how many
/// leading bytes were right).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// HASH(a || b || ...): BLAKE2s-256 over the concatenation of the parts.
pub fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// MAC(key, input): keyed BLAKE2s with a 16-byte output.
pub fn mac(key: &[u8; 32], input: &[u8]) -> [u8; 16] {
    let mut m =
        <Blake2sMac<blake2::digest::consts::U16> as blake2::digest::KeyInit>::new_from_slice(key)
            .expect("a 32-byte key is valid for BLAKE2s");
    Update::update(&mut m, input);
    m.finalize_fixed().into()
}

/// MAC over a key of any length up to 32 bytes (a cookie is 16 bytes).
pub fn mac_short_key(key: &[u8], input: &[u8]) -> [u8; 16] {
    let mut m =
        <Blake2sMac<blake2::digest::consts::U16> as blake2::digest::KeyInit>::new_from_slice(key)
            .expect("a key of at most 32 bytes is valid for BLAKE2s");
    Update::update(&mut m, input);
    m.finalize_fixed().into()
}

/// HMAC(key, input) with BLAKE2s.
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> Secret {
    let mut m = <SimpleHmac<Blake2s256> as hmac::Mac>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    for p in parts {
        hmac::Mac::update(&mut m, p);
    }
    let mut out = Secret::default();
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

/// KDF1(key, input).
pub fn kdf1(key: &[u8; 32], input: &[u8]) -> Secret {
    let t0 = hmac(key, &[input]);
    hmac(&t0, &[&[1]])
}

/// KDF2(key, input).
pub fn kdf2(key: &[u8; 32], input: &[u8]) -> (Secret, Secret) {
    let t0 = hmac(key, &[input]);
    let t1 = hmac(&t0, &[&[1]]);
    let t2 = hmac(&t0, &[&t1[..], &[2]]);
    (t1, t2)
}

/// KDF3(key, input).
pub fn kdf3(key: &[u8; 32], input: &[u8]) -> (Secret, Secret, Secret) {
    let t0 = hmac(key, &[input]);
    let t1 = hmac(&t0, &[&[1]]);
    let t2 = hmac(&t0, &[&t1[..], &[2]]);
    let t3 = hmac(&t0, &[&t2[..], &[3]]);
    (t1, t2, t3)
}

fn nonce96(counter: u64) -> chacha20poly1305::Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// AEAD(key, counter, plain, aad) written into `out` (plain.len() + 16 bytes).
pub fn aead_seal(key: &[u8; 32], counter: u64, plain: &[u8], aad: &[u8], out: &mut [u8]) {
    let (body, tag_out) = out.split_at_mut(plain.len());
    body.copy_from_slice(plain);
    let tag = ChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(&nonce96(counter), aad, body)
        .expect("handshake messages are far below the AEAD length limit");
    tag_out[..TAG_LEN].copy_from_slice(&tag);
}

/// Opens AEAD(key, counter, ·, aad) from `sealed` into `out` (sealed.len() - 16 bytes).
/// Returns false if the tag does not verify.
pub fn aead_open(key: &[u8; 32], counter: u64, sealed: &[u8], aad: &[u8], out: &mut [u8]) -> bool {
    if sealed.len() < TAG_LEN || out.len() != sealed.len() - TAG_LEN {
        return false;
    }
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    out.copy_from_slice(body);
    ChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(&nonce96(counter), aad, out, tag.into())
        .is_ok()
}

/// XAEAD seal with a 24-byte nonce (cookie replies).
pub fn xaead_seal(key: &[u8; 32], nonce: &[u8; 24], plain: &[u8], aad: &[u8], out: &mut [u8]) {
    let (body, tag_out) = out.split_at_mut(plain.len());
    body.copy_from_slice(plain);
    let tag = XChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(nonce.into(), aad, body)
        .expect("a cookie is far below the AEAD length limit");
    tag_out[..TAG_LEN].copy_from_slice(&tag);
}

/// XAEAD open with a 24-byte nonce. Returns false if the tag does not verify.
pub fn xaead_open(
    key: &[u8; 32],
    nonce: &[u8; 24],
    sealed: &[u8],
    aad: &[u8],
    out: &mut [u8],
) -> bool {
    if sealed.len() < TAG_LEN || out.len() != sealed.len() - TAG_LEN {
        return false;
    }
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    out.copy_from_slice(body);
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(nonce.into(), aad, out, tag.into())
        .is_ok()
}

/// DH(private, public): X25519. Returns None for an all-zero result (a low-order point).
pub fn dh(private: &x25519_dalek::StaticSecret, public: &[u8; 32]) -> Option<Secret> {
    // x25519-dalek wipes its SharedSecret when dropped.
    let shared = private.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if !shared.was_contributory() {
        return None;
    }
    Some(Zeroizing::new(*shared.as_bytes()))
}

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) {
    use rand_core::RngCore;
    rand_core::OsRng.fill_bytes(buf);
}

/// A random u32 (session indices).
pub fn random_u32() -> u32 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aead_round_trip_and_tamper() {
        let key = [3u8; 32];
        let mut sealed = [0u8; 5 + TAG_LEN];
        aead_seal(&key, 7, b"hello", b"ad", &mut sealed);
        let mut out = [0u8; 5];
        assert!(aead_open(&key, 7, &sealed, b"ad", &mut out));
        assert_eq!(&out, b"hello");
        assert!(!aead_open(&key, 8, &sealed, b"ad", &mut out));
        sealed[0] ^= 1;
        assert!(!aead_open(&key, 7, &sealed, b"ad", &mut out));
    }

    #[test]
    fn kdf_outputs_chain() {
        let (a, b) = kdf2(&[0u8; 32], b"x");
        let (c, d, _) = kdf3(&[0u8; 32], b"x");
        assert_eq!((a.clone(), b), (c, d));
        assert_eq!(kdf1(&[0u8; 32], b"x"), a);
    }

    #[test]
    fn ct_eq_compares_whole_slices() {
        assert!(ct_eq(b"abcd", b"abcd"));
        assert!(!ct_eq(b"abcd", b"abce"));
        assert!(!ct_eq(b"abcd", b"abc"));
        assert!(ct_eq(b"", b""));
    }
}
