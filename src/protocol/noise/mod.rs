//! The Noise_IKpsk2 handshake of WireGuard, its messages and its cookies.
//!
//! Everything here is pure: bytes in, bytes out, time passed in by the caller.

pub mod cookie;
pub mod crypto;
pub mod handshake;
pub mod messages;
pub mod tai64;
