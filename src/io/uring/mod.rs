//! The io_uring edge of the datapath: multishot receive over a provided buffer ring, and
//! batched `sendmsg` with UDP GSO. No WireGuard logic lives here.
//!
//! * [`probe()`] checks once, at start-up, that the running kernel has everything below, and
//!   names the missing piece and the kernel version that added it when it does not.
//! * [`UringRx`] keeps one multishot `recvmsg` armed on one UDP socket. The kernel picks a
//!   buffer from a provided buffer ring for every datagram (or UDP GRO batch) and posts one
//!   completion per message; [`UringRx::recv`] hands each message to a callback, in place,
//!   and gives the buffer back to the ring afterwards. The buffer-ring manager is private to
//!   this module.
//! * [`UringTx`] sends one buffer to many sockets with a single `io_uring_enter`: one
//!   `IORING_OP_SENDMSG` per destination, each with an optional `UDP_SEGMENT` cmsg, and no copy
//!   of the payload.
//!
//! # Memory the kernel writes to
//!
//! The buffers of a [`UringRx`] are written by the kernel at times of its choosing while the
//! multishot request is armed. They are only unmapped once the kernel is known to be done
//! with them: dropping a `UringRx` cancels the request and waits (boundedly) for its final
//! completion, unregisters the ring, then closes the io_uring (the `ring` field is declared,
//! hence dropped, before the buffer memory), and only then unmaps the buffers. If the final
//! completion does not arrive in time, the buffer memory is leaked rather than freed.
//!
//! # Threads
//!
//! io_uring runs the receive work of a multishot request on the thread that armed it (as
//! task work). `UringRx` arms lazily, in [`UringRx::recv`], so use one `UringRx` from one
//! thread, the thread that calls `recv`. It is `Send`, so it may be built elsewhere and moved
//! to that thread before the first `recv`.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

#[cfg(test)]
use crate::io::cmsg::{SOL_UDP, UDP_GRO};

/// Size of `struct io_uring_recvmsg_out`, which the kernel writes at the start of every buffer
/// used by a multishot `recvmsg` (four `u32`: namelen, controllen, payloadlen, flags).
const RECVMSG_OUT_LEN: usize = 16;
/// Space reserved for the source address: a `sockaddr_in6` (28 bytes), rounded up to 32 so
/// that the control data after it is 8-byte aligned within the buffer.
const NAME_LEN: usize = 32;
/// Space reserved for control messages: the `UDP_GRO` cmsg needs `CMSG_SPACE(4)` (24 bytes),
/// `IPV6_PKTINFO` 40 ([`crate::io::cmsg::CONTROL_SPACE`] both); the rest is spare.
const CONTROL_LEN: usize = 128;
/// Offset of the payload in every receive buffer.
const PAYLOAD_OFFSET: usize = RECVMSG_OUT_LEN + NAME_LEN + CONTROL_LEN;

/// The largest payload one receive buffer holds: a full UDP GRO batch (64 KiB).
pub const MAX_RX_PAYLOAD: usize = 64 * 1024;
/// Size of one receive buffer: the `io_uring_recvmsg_out` header, the source address, the
/// control messages and [`MAX_RX_PAYLOAD`] bytes of payload, rounded up to a cache line.
pub const RX_BUFFER_SIZE: usize = (PAYLOAD_OFFSET + MAX_RX_PAYLOAD + 63) & !63;

/// The largest buffer ring the kernel accepts (`ring_entries` must be a power of two, at most
/// 2^15).
pub const MAX_RX_BUFFERS: u16 = 1 << 15;

/// Buffer group id of the receive ring (one buffer ring per io_uring, so any id does).
const BGID: u16 = 0;
/// `user_data` of the multishot receive request.
const RECV_UD: u64 = 1;
/// `user_data` of cancel requests.
const CANCEL_UD: u64 = 2;
/// How long dropping a [`UringRx`] waits for the kernel to confirm its receive has stopped.
const DROP_CANCEL_WAIT: Duration = Duration::from_secs(2);

// SAFETY: CMSG_LEN and CMSG_SPACE are pure arithmetic on their argument (they are `unsafe`
// in libc only for historical reasons); nothing is dereferenced.
#[cfg(test)]
const CMSG_DATA_OFFSET: usize = unsafe { libc::CMSG_LEN(0) } as usize;
// SAFETY: as above, arithmetic only.
const GRO_CMSG_SPACE: usize =
    unsafe { libc::CMSG_SPACE(mem::size_of::<libc::c_int>() as u32) } as usize;

const _: () = assert!(NAME_LEN >= mem::size_of::<libc::sockaddr_in6>());
const _: () = assert!(CONTROL_LEN >= GRO_CMSG_SPACE);
const _: () = assert!(CONTROL_LEN >= crate::io::cmsg::CONTROL_SPACE);
const _: () = assert!(PAYLOAD_OFFSET.is_multiple_of(8));
const _: () = assert!(mem::size_of::<bufring::BufEntry>() == 16);

mod bufring;
mod probe;
mod recv;
mod send;

#[cfg(test)]
pub(crate) mod alloc_count;
#[cfg(test)]
mod tests;

pub use probe::{probe, UringFeature, UringUnsupported};
pub use recv::{OnMessage, RxStats, UringError, UringRx};
pub use send::{Send, TxBatch, UringTx};

use bufring::BufRing;
use probe::setup_hint;
use recv::context;
