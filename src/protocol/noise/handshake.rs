//! Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it: make and consume the
//! initiation and the response, and derive the transport keys.
//!
//! Macs are not written here (see [`super::cookie`]); the caller adds them after the
//! message body is built, and checks them before a message is consumed.

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::crypto::{aead_open, aead_seal, dh, hash, kdf1, kdf2, kdf3, Secret, TAG_LEN};
use super::messages::{
    bytes32, initiation as ini, le32, response as rsp, INITIATION_LEN, RESPONSE_LEN,
    TYPE_INITIATION, TYPE_RESPONSE,
};
use super::tai64::Tai64n;

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

/// Why a handshake message was refused. None of these reach the wire: the message is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// An AEAD field did not decrypt: wrong keys, or a forged or corrupted message.
    #[error("handshake message does not decrypt")]
    Decrypt,
    /// A Diffie-Hellman result was zero: a low-order public key.
    #[error("handshake uses a low-order public key")]
    LowOrderKey,
    /// The device has no private key yet.
    #[error("no private key is set")]
    NoPrivateKey,
}

/// The device's own static key pair (x25519-dalek wipes the secret half when dropped).
pub struct StaticKeys {
    secret: StaticSecret,
    /// The public half.
    pub public: [u8; 32],
}

impl StaticKeys {
    /// Key pair from a private key.
    pub fn new(private: [u8; 32]) -> StaticKeys {
        let secret = StaticSecret::from(private);
        let public = *PublicKey::from(&secret).as_bytes();
        StaticKeys { secret, public }
    }

    /// The private key's bytes (for `wg showconf`; never logged).
    pub fn private_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// DH(our static, their public).
    pub fn dh(&self, public: &[u8; 32]) -> Option<Secret> {
        dh(&self.secret, public)
    }
}

/// The running (chaining key, hash) pair of the Noise symmetric state, wiped when
/// dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct Symmetric {
    ck: [u8; 32],
    h: [u8; 32],
}

impl Symmetric {
    /// Initial state of a handshake whose responder has static key `responder`.
    fn new(responder: &[u8; 32]) -> Symmetric {
        let ck = hash(&[CONSTRUCTION]);
        let h = hash(&[&ck, IDENTIFIER]);
        Symmetric {
            ck,
            h: hash(&[&h, responder]),
        }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }

    fn mix_ephemeral(&mut self, e: &[u8; 32]) {
        self.ck = *kdf1(&self.ck, e);
        self.mix_hash(e);
    }

    /// ck = KDF1(ck, dh_result), for a DH whose key is not needed.
    fn mix_dh(&mut self, dh_result: Option<Secret>) -> Result<(), HandshakeError> {
        let dh_result = dh_result.ok_or(HandshakeError::LowOrderKey)?;
        self.ck = *kdf1(&self.ck, &dh_result[..]);
        Ok(())
    }

    fn mix_key(&mut self, dh_result: Option<Secret>) -> Result<Secret, HandshakeError> {
        let dh_result = dh_result.ok_or(HandshakeError::LowOrderKey)?;
        let (ck, k) = kdf2(&self.ck, &dh_result[..]);
        self.ck = *ck;
        Ok(k)
    }

    /// ck, temp, key = KDF3(ck, psk); mixes temp into the hash; returns the key.
    fn mix_psk(&mut self, psk: &[u8; 32]) -> Secret {
        let (ck, t, k) = kdf3(&self.ck, psk);
        self.ck = *ck;
        self.mix_hash(&t[..]);
        k
    }

    fn seal(&mut self, key: &[u8; 32], plain: &[u8], out: &mut [u8]) {
        aead_seal(key, 0, plain, &self.h, out);
        self.mix_hash(out);
    }

    fn open(
        &mut self,
        key: &[u8; 32],
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<(), HandshakeError> {
        if !aead_open(key, 0, sealed, &self.h, out) {
            return Err(HandshakeError::Decrypt);
        }
        self.mix_hash(sealed);
        Ok(())
    }

    /// (first, second) transport keys: the initiator sends with the first.
    fn split(&self) -> (Secret, Secret) {
        kdf2(&self.ck, &[])
    }
}

/// Transport keys from a finished handshake, wiped when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    /// Key for packets this side sends.
    pub send: [u8; 32],
    /// Key for packets this side receives.
    pub recv: [u8; 32],
    /// Our index: what the peer writes as receiver in its packets to us.
    pub local_index: u32,
    /// The peer's index: what we write as receiver.
    pub remote_index: u32,
    /// Whether this side sent the initiation.
    pub initiator: bool,
}

impl SessionKeys {
    /// The other side's keys for the same session: send and receive keys swapped, and
    /// the indexes and roles too. What a handshake gives the peer; benches and tests use
    /// it to make a matched pair of sessions without one.
    pub fn mirrored(&self) -> SessionKeys {
        SessionKeys {
            send: self.recv,
            recv: self.send,
            local_index: self.remote_index,
            remote_index: self.local_index,
            initiator: !self.initiator,
        }
    }
}

/// What the initiator keeps between sending an initiation and getting the response.
/// Its symmetric state and ephemeral secret are wiped when it is dropped.
pub struct InitiatorState {
    sym: Symmetric,
    ephemeral: StaticSecret,
    /// Index written as sender in the initiation.
    pub local_index: u32,
}

/// Builds an initiation to the peer `peer_public` (macs left zero).
///
/// `static_static` is DH(our static, peer static), precomputed per peer.
pub fn create_initiation(
    ours: &StaticKeys,
    peer_public: &[u8; 32],
    static_static: Option<&[u8; 32]>,
    local_index: u32,
    now: Tai64n,
) -> Result<([u8; INITIATION_LEN], InitiatorState), HandshakeError> {
    let mut msg = [0u8; INITIATION_LEN];
    msg[0] = TYPE_INITIATION;
    msg[ini::SENDER..ini::SENDER + 4].copy_from_slice(&local_index.to_le_bytes());
    let mut sym = Symmetric::new(peer_public);
    let ephemeral = StaticSecret::random_from_rng(rand_core::OsRng);
    let e_pub = *PublicKey::from(&ephemeral).as_bytes();
    msg[ini::EPHEMERAL..ini::EPHEMERAL + 32].copy_from_slice(&e_pub);
    sym.mix_ephemeral(&e_pub);
    let k = sym.mix_key(dh(&ephemeral, peer_public))?;
    sym.seal(&k, &ours.public, &mut msg[ini::STATIC..ini::TIMESTAMP]);
    let k = sym.mix_key(static_static.map(|ss| Secret::new(*ss)))?;
    sym.seal(&k, &now.0, &mut msg[ini::TIMESTAMP..ini::MAC1]);
    Ok((
        msg,
        InitiatorState {
            sym,
            ephemeral,
            local_index,
        },
    ))
}

/// An initiation that decrypted: who sent it, and the state needed to answer it.
pub struct ConsumedInitiation {
    /// The initiator's static public key.
    pub peer_public: [u8; 32],
    /// The initiator's index.
    pub sender_index: u32,
    /// The initiator's timestamp, to be checked against the last one from this peer.
    pub timestamp: Tai64n,
    sym: Symmetric,
    ephemeral: [u8; 32],
}

/// Decrypts an initiation sent to us. The caller then looks the sender up by
/// `peer_public`, checks the timestamp, and calls [`create_response`].
///
/// `static_static_for` gives the precomputed DH(our static, their static) of a known peer,
/// or None if the peer is not configured (the message is then refused).
pub fn consume_initiation(
    ours: &StaticKeys,
    msg: &[u8],
    static_static_for: impl FnOnce(&[u8; 32]) -> Option<Option<Secret>>,
) -> Result<ConsumedInitiation, HandshakeError> {
    let mut sym = Symmetric::new(&ours.public);
    let e_pub = bytes32(msg, ini::EPHEMERAL);
    sym.mix_ephemeral(&e_pub);
    let k = sym.mix_key(ours.dh(&e_pub))?;
    let mut peer_public = [0u8; 32];
    sym.open(&k, &msg[ini::STATIC..ini::TIMESTAMP], &mut peer_public)?;
    let ss = static_static_for(&peer_public).ok_or(HandshakeError::Decrypt)?;
    let k = sym.mix_key(ss)?;
    let mut ts = [0u8; 12];
    sym.open(&k, &msg[ini::TIMESTAMP..ini::MAC1], &mut ts)?;
    Ok(ConsumedInitiation {
        peer_public,
        sender_index: le32(msg, ini::SENDER),
        timestamp: Tai64n(ts),
        sym,
        ephemeral: e_pub,
    })
}

/// Builds the response to a consumed initiation (macs left zero), and the session keys.
pub fn create_response(
    init: ConsumedInitiation,
    psk: &[u8; 32],
    local_index: u32,
) -> Result<([u8; RESPONSE_LEN], SessionKeys), HandshakeError> {
    let mut sym = init.sym;
    let mut msg = [0u8; RESPONSE_LEN];
    msg[0] = TYPE_RESPONSE;
    msg[rsp::SENDER..rsp::SENDER + 4].copy_from_slice(&local_index.to_le_bytes());
    msg[rsp::RECEIVER..rsp::RECEIVER + 4].copy_from_slice(&init.sender_index.to_le_bytes());
    let ephemeral = StaticSecret::random_from_rng(rand_core::OsRng);
    let e_pub = *PublicKey::from(&ephemeral).as_bytes();
    msg[rsp::EPHEMERAL..rsp::EPHEMERAL + 32].copy_from_slice(&e_pub);
    sym.mix_ephemeral(&e_pub);
    sym.mix_dh(dh(&ephemeral, &init.ephemeral))?;
    sym.mix_dh(dh(&ephemeral, &init.peer_public))?;
    let k = sym.mix_psk(psk);
    sym.seal(&k, &[], &mut msg[rsp::EMPTY..rsp::EMPTY + TAG_LEN]);
    let (first, second) = sym.split();
    Ok((
        msg,
        SessionKeys {
            send: *second,
            recv: *first,
            local_index,
            remote_index: init.sender_index,
            initiator: false,
        },
    ))
}

/// The receiver index of a response: which of our pending initiations it answers.
pub fn response_receiver(msg: &[u8]) -> u32 {
    le32(msg, rsp::RECEIVER)
}

/// The sender index of a response: the responder's index for the session.
pub fn response_sender(msg: &[u8]) -> u32 {
    le32(msg, rsp::SENDER)
}

/// Consumes the response to our initiation and derives the session keys.
pub fn consume_response(
    ours: &StaticKeys,
    state: &InitiatorState,
    psk: &[u8; 32],
    msg: &[u8],
) -> Result<SessionKeys, HandshakeError> {
    let mut sym = state.sym.clone();
    let e_pub = bytes32(msg, rsp::EPHEMERAL);
    sym.mix_ephemeral(&e_pub);
    sym.mix_dh(dh(&state.ephemeral, &e_pub))?;
    sym.mix_dh(ours.dh(&e_pub))?;
    let k = sym.mix_psk(psk);
    sym.open(&k, &msg[rsp::EMPTY..rsp::EMPTY + TAG_LEN], &mut [])?;
    let (first, second) = sym.split();
    Ok(SessionKeys {
        send: *first,
        recv: *second,
        local_index: state.local_index,
        remote_index: le32(msg, rsp::SENDER),
        initiator: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sides_agree_on_keys() {
        let a = StaticKeys::new([1u8; 32]);
        let b = StaticKeys::new([2u8; 32]);
        let psk = [5u8; 32];
        let ss_a = a.dh(&b.public).unwrap();
        let (init, state) =
            create_initiation(&a, &b.public, Some(&ss_a), 11, Tai64n::now()).expect("initiation");
        let consumed = consume_initiation(&b, &init, |p| {
            assert_eq!(p, &a.public);
            Some(b.dh(p))
        })
        .expect("consume initiation");
        assert_eq!(consumed.sender_index, 11);
        let (resp, keys_b) = create_response(consumed, &psk, 22).expect("response");
        assert_eq!(response_receiver(&resp), 11);
        let keys_a = consume_response(&a, &state, &psk, &resp).expect("consume response");
        assert_eq!(keys_a.send, keys_b.recv);
        assert_eq!(keys_a.recv, keys_b.send);
        assert_eq!(keys_a.remote_index, 22);
        // A different psk fails.
        assert!(consume_response(&a, &state, &[0u8; 32], &resp).is_err());
    }

    #[test]
    fn unknown_initiator_is_refused() {
        let a = StaticKeys::new([1u8; 32]);
        let b = StaticKeys::new([2u8; 32]);
        let (init, _) =
            create_initiation(&a, &b.public, a.dh(&b.public).as_deref(), 1, Tai64n::now()).unwrap();
        assert!(consume_initiation(&b, &init, |_| None).is_err());
    }
}
