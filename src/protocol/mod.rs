//! The WireGuard protocol core, sans-IO: Noise IKpsk2 handshakes and cookies
//! ([`noise`]), transport sessions ([`session`]) with their replay window ([`replay`]),
//! timers ([`timers`]), allowed IPs ([`allowedips`]), peers ([`peer`]) and the device
//! that ties them together ([`device`]). Time is passed in; nothing here opens a socket,
//! and nothing here imports the layers above it or the I/O edge.

pub mod allowedips;
pub mod cidr;
pub mod device;
pub mod key;
pub mod noise;
pub mod peer;
pub mod ratelimit;
pub mod replay;
pub mod request;
pub mod session;
pub mod timers;
pub mod transmit;
