//! The io_uring edge of the datapath: multishot receive over a provided buffer ring, and
//! batched `sendmsg` with UDP GSO. No WireGuard logic lives here.
//!
//! * [`probe`] checks once, at start-up, that the running kernel has everything below, and
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
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

/// `SOL_UDP` (`IPPROTO_UDP`), the level of the UDP socket options and cmsgs.
const SOL_UDP: libc::c_int = 17;
/// `UDP_SEGMENT`: GSO segment size of a send (a `u16` cmsg).
const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO`: segment size of a coalesced receive (an `int` cmsg).
const UDP_GRO: libc::c_int = 104;

/// Size of `struct io_uring_recvmsg_out`, which the kernel writes at the start of every buffer
/// used by a multishot `recvmsg` (four `u32`: namelen, controllen, payloadlen, flags).
const RECVMSG_OUT_LEN: usize = 16;
/// Space reserved for the source address: a `sockaddr_in6` (28 bytes), rounded up to 32 so
/// that the control data after it is 8-byte aligned within the buffer.
const NAME_LEN: usize = 32;
/// Space reserved for control messages: the `UDP_GRO` cmsg needs `CMSG_SPACE(4)` (24 bytes);
/// the rest leaves room for packet-info cmsgs should a caller enable them on the socket.
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
const CMSG_DATA_OFFSET: usize = unsafe { libc::CMSG_LEN(0) } as usize;
// SAFETY: as above, arithmetic only.
const SEGMENT_CMSG_SPACE: usize =
    unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
// SAFETY: as above, arithmetic only.
const SEGMENT_CMSG_LEN: usize = unsafe { libc::CMSG_LEN(mem::size_of::<u16>() as u32) } as usize;
// SAFETY: as above, arithmetic only.
const GRO_CMSG_SPACE: usize =
    unsafe { libc::CMSG_SPACE(mem::size_of::<libc::c_int>() as u32) } as usize;

const _: () = assert!(NAME_LEN >= mem::size_of::<libc::sockaddr_in6>());
const _: () = assert!(CONTROL_LEN >= GRO_CMSG_SPACE);
const _: () = assert!(PAYLOAD_OFFSET.is_multiple_of(8));
const _: () = assert!(mem::size_of::<BufEntry>() == 16);

// ---------------------------------------------------------------------------------------------
// Probe
// ---------------------------------------------------------------------------------------------

/// A kernel feature the datapath needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UringFeature {
    /// io_uring itself (`io_uring_setup`), Linux 5.1.
    IoUring,
    /// Opcode probing (`IORING_REGISTER_PROBE`), Linux 5.6.
    OpcodeProbe,
    /// `IORING_OP_SENDMSG` and `IORING_OP_RECVMSG`, Linux 5.3.
    SendRecvMsg,
    /// Request cancellation (`IORING_OP_ASYNC_CANCEL`), Linux 5.5.
    AsyncCancel,
    /// Provided buffer rings (`IORING_REGISTER_PBUF_RING`), Linux 5.19.
    BufferRing,
    /// Multishot `recvmsg` (`IORING_RECV_MULTISHOT`), Linux 6.0.
    MultishotRecvMsg,
}

impl UringFeature {
    /// What the feature is, as said in error messages.
    pub fn name(self) -> &'static str {
        match self {
            UringFeature::IoUring => "io_uring",
            UringFeature::OpcodeProbe => "io_uring opcode probing",
            UringFeature::SendRecvMsg => "io_uring sendmsg/recvmsg",
            UringFeature::AsyncCancel => "io_uring request cancellation",
            UringFeature::BufferRing => "io_uring provided buffer rings",
            UringFeature::MultishotRecvMsg => "io_uring multishot recvmsg",
        }
    }

    /// The first Linux version that has the feature.
    pub fn since(self) -> &'static str {
        match self {
            UringFeature::IoUring => "5.1",
            UringFeature::OpcodeProbe => "5.6",
            UringFeature::SendRecvMsg => "5.3",
            UringFeature::AsyncCancel => "5.5",
            UringFeature::BufferRing => "5.19",
            UringFeature::MultishotRecvMsg => "6.0",
        }
    }
}

impl std::fmt::Display for UringFeature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the io_uring datapath cannot run on this kernel.
#[derive(Debug, thiserror::Error)]
pub enum UringUnsupported {
    /// `io_uring_setup` failed with `EPERM`.
    #[error(
        "io_uring is disabled on this system (Linux {kernel}, sysctl kernel.io_uring_disabled = \
         {setting}): set kernel.io_uring_disabled=0, or set it to 1 and run mpwg in the group \
         named by kernel.io_uring_group; a seccomp policy (e.g. a container runtime's) can also \
         forbid io_uring"
    )]
    Disabled {
        /// The running kernel's release.
        kernel: String,
        /// The value of `/proc/sys/kernel/io_uring_disabled`, or why it could not be read.
        setting: String,
    },
    /// The kernel lacks a feature.
    #[error(
        "{feature} is not supported by this kernel (Linux {kernel}); mpwg needs Linux {since} or later",
        since = feature.since()
    )]
    Missing {
        /// The missing feature.
        feature: UringFeature,
        /// The running kernel's release.
        kernel: String,
    },
    /// A step of the check failed for another reason.
    #[error("io_uring {step} failed on Linux {kernel}: {source}{hint}", hint = setup_hint(source))]
    Setup {
        /// What was being done.
        step: &'static str,
        /// The running kernel's release.
        kernel: String,
        /// The OS error.
        source: io::Error,
    },
}

fn setup_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOMEM) => {
            " (before Linux 5.12 io_uring memory counts against RLIMIT_MEMLOCK: raise `ulimit -l`)"
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => " (out of file descriptors: raise `ulimit -n`)",
        _ => "",
    }
}

/// The running kernel's release string, e.g. `6.1.0-18-amd64`.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown version".to_string())
}

/// `(major, minor)` of a release string such as `6.1.0-18-amd64`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Checks that the running kernel supports everything the io_uring datapath needs: io_uring
/// itself, `IORING_OP_SENDMSG`/`IORING_OP_RECVMSG`, request cancellation, provided buffer rings
/// and multishot `recvmsg`.
///
/// The buffer ring is checked by registering a small one; multishot `recvmsg` by arming one on
/// a loopback UDP socket and receiving a datagram with it (or, where no loopback socket can be
/// had, from the kernel version).
pub fn probe() -> Result<(), UringUnsupported> {
    let kernel = kernel_release();
    let missing = |feature| UringUnsupported::Missing {
        feature,
        kernel: kernel.clone(),
    };
    let setup = |step, source| UringUnsupported::Setup {
        step,
        kernel: kernel.clone(),
        source,
    };

    let ring: IoUring = match IoUring::new(4) {
        Ok(ring) => ring,
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) => UringUnsupported::Disabled {
                    kernel: kernel.clone(),
                    setting: std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|_| "absent: not the cause".to_string()),
                },
                Some(libc::ENOSYS) => missing(UringFeature::IoUring),
                _ => setup("setup", e),
            })
        }
    };

    let mut p = Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut p) {
        return Err(match e.raw_os_error() {
            Some(libc::EINVAL) => missing(UringFeature::OpcodeProbe),
            _ => setup("opcode probe", e),
        });
    }
    if !p.is_supported(opcode::SendMsg::CODE) || !p.is_supported(opcode::RecvMsg::CODE) {
        return Err(missing(UringFeature::SendRecvMsg));
    }
    if !p.is_supported(opcode::AsyncCancel::CODE) {
        return Err(missing(UringFeature::AsyncCancel));
    }

    // Provided buffer ring: register a one-entry ring, then unregister it.
    let bufs = BufRing::new(1, 64).map_err(|e| setup("buffer ring allocation", e))?;
    // SAFETY: the ring memory is a live mapping of at least one page, and it outlives its
    // registration: it is unregistered just below, and `ring` is dropped before `bufs`.
    let reg = unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring_addr(), 1, BGID, 0)
    };
    match reg {
        Ok(()) => {
            let _ = ring.submitter().unregister_buf_ring(BGID);
        }
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => missing(UringFeature::BufferRing),
                _ => setup("buffer ring registration", e),
            })
        }
    }
    drop(ring);
    drop(bufs);

    match probe_multishot() {
        Some(true) => Ok(()),
        Some(false) => Err(missing(UringFeature::MultishotRecvMsg)),
        None => match parse_release(&kernel) {
            Some(v) if v >= (6, 0) => Ok(()),
            _ => Err(missing(UringFeature::MultishotRecvMsg)),
        },
    }
}

/// Arms a multishot `recvmsg` on a loopback socket holding one datagram. `Some(true)`: it
/// worked; `Some(false)`: the kernel refused it; `None`: the test could not be run.
fn probe_multishot() -> Option<bool> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    let addr = sock.local_addr().ok()?;
    sock.send_to(b"mpwg probe", addr).ok()?;
    let mut rx = UringRx::new(sock.as_raw_fd(), 2).ok()?;
    let (res, flags) = rx.first_completion(Duration::from_secs(1)).ok()??;
    if res == -libc::EINVAL {
        Some(false)
    } else if res >= 0 {
        Some(cqueue::more(flags))
    } else {
        None
    }
    // `rx` (cancelled, then unmapped) drops before `sock`.
}

// ---------------------------------------------------------------------------------------------
// Provided buffer ring
// ---------------------------------------------------------------------------------------------

/// One entry of a provided buffer ring: `struct io_uring_buf`. The `resv` field of entry 0 is
/// the ring's tail.
#[repr(C)]
struct BufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// A provided buffer ring and its buffers, in one anonymous mapping: the ring entries first
/// (page-aligned, as the kernel requires), the buffers after them.
///
/// The kernel consumes entries from `head` (which it keeps to itself) to `tail` (which we
/// publish); we add a buffer by writing the entry at `tail` and then storing the new tail with
/// release ordering, so the kernel (which loads the tail with acquire ordering) sees complete
/// entries.
///
/// Whoever registers the ring must make sure the kernel is done with it before it drops: the
/// mapping is unmapped on drop unless [`BufRing::leak`] was called.
struct BufRing {
    /// Start of the mapping (the ring entries).
    base: NonNull<u8>,
    /// Length of the mapping.
    map_len: usize,
    /// Offset of the first buffer in the mapping.
    bufs_offset: usize,
    /// Number of entries and of buffers (a power of two).
    entries: u16,
    /// Size of each buffer.
    buf_size: usize,
    /// Our copy of the tail: entries written but maybe not yet published.
    tail: u16,
    /// Never unmap (the kernel might still write).
    leaked: bool,
}

impl BufRing {
    /// Maps a ring of `entries` (a power of two, at most 2^15) buffers of `buf_size` bytes. The
    /// ring starts empty.
    fn new(entries: u16, buf_size: usize) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > MAX_RX_BUFFERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "io_uring buffer ring of {entries} buffers: the count must be a power of two \
                     between 1 and {MAX_RX_BUFFERS}"
                ),
            ));
        }
        // SAFETY: sysconf only reads a system constant.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            p if p > 0 => p as usize,
            _ => 4096,
        };
        let ring_len = usize::from(entries) * mem::size_of::<BufEntry>();
        let bufs_offset = ring_len.div_ceil(page) * page;
        let map_len = usize::from(entries)
            .checked_mul(buf_size)
            .and_then(|b| b.checked_add(bufs_offset))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring too large"))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choice: no existing
        // memory is affected. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        // The mapping is zero-filled: every entry, and the tail, start at 0.
        Ok(BufRing {
            base,
            map_len,
            bufs_offset,
            entries,
            buf_size,
            tail: 0,
            leaked: false,
        })
    }

    /// Address of the ring entries, for `IORING_REGISTER_PBUF_RING`.
    fn ring_addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Writes buffer `bid` into the next free entry. Not visible to the kernel until
    /// [`BufRing::publish`]. The caller owns `bid` (the kernel gave it back, or it was never
    /// handed out), so the ring has room for it.
    fn add(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let idx = usize::from(self.tail & (self.entries - 1));
        let addr = self.buf_ptr(bid) as u64;
        // SAFETY: `idx < entries`, so the entry lies inside the mapping. The kernel reads only
        // entries between its head and the published tail; this one is at our unpublished tail
        // and, since at most `entries - 1` other buffers are on the ring, it is not one of
        // them. Only `addr`, `len` and `bid` are written, never `resv`, which in entry 0 is
        // the tail the kernel reads.
        unsafe {
            let e = self.base.as_ptr().cast::<BufEntry>().add(idx);
            ptr::addr_of_mut!((*e).addr).write(addr);
            ptr::addr_of_mut!((*e).len).write(self.buf_size as u32);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every entry added so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is the `resv` field of entry 0, inside the live mapping and 2-byte
        // aligned (offset 14 of a page-aligned mapping). The kernel only reads it (with
        // acquire ordering) and every access of ours is atomic, so there is no data race. The
        // release store orders the entry writes in `add` before the new tail.
        unsafe {
            let tail = ptr::addr_of_mut!((*self.base.as_ptr().cast::<BufEntry>()).resv);
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // In bounds for `bid < entries`: the mapping holds `entries` buffers after the ring.
        self.base
            .as_ptr()
            .wrapping_add(self.bufs_offset + usize::from(bid) * self.buf_size)
    }

    /// Buffer `bid`, which the kernel handed back in a completion and which is not on the ring.
    fn buffer_mut(&mut self, bid: u16) -> Option<&mut [u8]> {
        if bid >= self.entries {
            return None;
        }
        // SAFETY: buffer `bid` lies inside the live mapping (`bid < entries`). The caller holds
        // it between a completion and `add`, while the kernel neither reads nor writes it, and
        // `&mut self` makes this the only reference to it.
        Some(unsafe { std::slice::from_raw_parts_mut(self.buf_ptr(bid), self.buf_size) })
    }

    /// Never unmap the memory: for when the kernel may still write to it.
    fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: `base`/`map_len` are the mapping made in `new`; no reference into it outlives
        // `&mut self`, and the owner has made sure the kernel no longer uses it (else `leaked`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Receive
// ---------------------------------------------------------------------------------------------

/// Counters of a [`UringRx`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxStats {
    /// Completions of the receive request (messages, and ends of the multishot).
    pub completions: u64,
    /// Messages handed to the callback.
    pub messages: u64,
    /// Messages dropped because they did not fit a buffer (`MSG_TRUNC`), or their control data
    /// was cut before the `UDP_GRO` cmsg (`MSG_CTRUNC`).
    pub truncated: u64,
    /// Times the multishot request ended and was armed again.
    pub rearms: u64,
    /// Times the multishot ended because the buffer ring ran dry (`ENOBUFS`).
    pub nobufs: u64,
    /// Completions dropped as malformed (no buffer id, unparsable header or address).
    pub malformed: u64,
}

/// Multishot `recvmsg` on one UDP socket, over a provided buffer ring of its own.
///
/// The socket is not owned: it must outlive the `UringRx`.
pub struct UringRx {
    // Drop order matters: fields drop in declaration order, so the io_uring (whose fd is
    // closed, ending every request) goes before the buffer memory the kernel writes to. `Drop`
    // also cancels the request and waits for its end first; see the module documentation.
    /// The ring. Must stay the first field.
    ring: IoUring,
    /// The receive buffers. Must drop after `ring`.
    bufs: BufRing,
    /// The msghdr template of the request (only `msg_namelen` and `msg_controllen` matter). Boxed
    /// so that its address is stable until the kernel has read it.
    msghdr: Box<libc::msghdr>,
    /// The socket.
    fd: RawFd,
    /// A receive request is queued or in flight.
    armed: bool,
    /// The request was armed at least once (so the next arming is a re-arm).
    ever_armed: bool,
    /// A hard error of the request, reported by the next `recv`.
    pending_error: Option<io::Error>,
    /// Completions copied out of the completion queue: (user_data, result, flags).
    cqes: Vec<(u64, i32, u32)>,
    stats: RxStats,
}

// SAFETY: the raw pointers inside (`msghdr`, the buffer mapping) point only to memory owned by
// this value, and are used only through `&mut self`; nothing is tied to the creating thread.
unsafe impl std::marker::Send for UringRx {}

impl UringRx {
    /// The ring's descriptor: readable (POLLIN) when completions wait, so one thread can
    /// wait on several rings with poll(2).
    pub fn ring_fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.ring)
    }

    /// Sets up a ring with `buffers` receive buffers of [`RX_BUFFER_SIZE`] bytes for socket `fd`.
    /// `buffers` must be a power of two, at most [`MAX_RX_BUFFERS`] (32 to 256 is typical).
    ///
    /// Nothing is received until the first [`UringRx::recv`] arms the request.
    pub fn new(fd: RawFd, buffers: u16) -> io::Result<UringRx> {
        let bufs = BufRing::new(buffers, RX_BUFFER_SIZE)?;
        // One completion per buffer at most is outstanding, plus the end of the multishot
        // and a cancel: size the completion queue so it never overflows.
        let cq = (u32::from(buffers) * 2).max(16);
        let ring: IoUring = match IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(cq)
            .build(8)
        {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
                .setup_cqsize(cq)
                .build(8)
                .map_err(|e| context("io_uring setup", e))?,
            Err(e) => return Err(context("io_uring setup", e)),
        };
        let mut rx = UringRx {
            ring,
            bufs,
            msghdr: Box::new(empty_msghdr()),
            fd,
            armed: false,
            ever_armed: false,
            pending_error: None,
            cqes: Vec::with_capacity(cq as usize),
            stats: RxStats::default(),
        };
        rx.msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        rx.msghdr.msg_controllen = CONTROL_LEN as _;
        // SAFETY: the ring memory is a live mapping that outlives its registration: `Drop`
        // unregisters it (or leaks the memory), and `ring` drops before `bufs`.
        unsafe {
            rx.ring
                .submitter()
                .register_buf_ring_with_flags(rx.bufs.ring_addr(), buffers, BGID, 0)
        }
        .map_err(|e| context("buffer ring registration", e))?;
        for bid in 0..buffers {
            rx.bufs.add(bid);
        }
        rx.bufs.publish();
        Ok(rx)
    }

    /// Counters since creation.
    pub fn stats(&self) -> RxStats {
        self.stats
    }

    /// Number of receive buffers.
    pub fn buffers(&self) -> u16 {
        self.bufs.entries
    }

    /// Waits up to `timeout` for messages, then calls `f(source, payload, segment)` for each:
    /// `source` with IPv4-mapped IPv6 addresses turned into IPv4; `payload`, mutable, to be
    /// decrypted in place; `segment`, the `UDP_GRO` segment size of a coalesced batch, or the
    /// payload length (always at least 1, at most the payload length unless that is 0).
    ///
    /// Each buffer returns to the ring after `f` returns. If the multishot request ended (the
    /// ring ran dry, or anything else), it is armed again. Returns the number of messages
    /// handled: 0 on timeout or when a signal interrupted the wait.
    ///
    /// An error is returned when the request fails with anything but a transient error (e.g.
    /// the fd is not a UDP socket); the next call arms it again.
    pub fn recv(
        &mut self,
        timeout: Duration,
        f: &mut dyn FnMut(SocketAddr, &mut [u8], usize),
    ) -> io::Result<usize> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let deadline = Instant::now().checked_add(timeout);
        let mut handled = 0;
        let mut waited = false;
        loop {
            if !self.armed {
                self.arm()?;
            }
            handled += self.harvest(f);
            if handled > 0 {
                self.flush()?;
                return Ok(handled);
            }
            if let Some(e) = self.pending_error.take() {
                self.flush()?;
                return Err(e);
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) => d.saturating_duration_since(now),
                None => Duration::from_secs(3600),
            };
            if waited && left.is_zero() {
                self.flush()?;
                return Ok(0);
            }
            waited = true;
            let ts = types::Timespec::from(left);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::ETIME) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                    Some(libc::EINTR) => {
                        handled += self.harvest(f);
                        self.flush()?;
                        return Ok(handled);
                    }
                    _ => return Err(context("io_uring wait", e)),
                },
            }
        }
    }

    /// Queues the multishot receive request (submitted by the next enter).
    fn arm(&mut self) -> io::Result<()> {
        let sqe = opcode::RecvMsgMulti::new(types::Fd(self.fd), &*self.msghdr, BGID)
            .build()
            .user_data(RECV_UD);
        self.push(&sqe)?;
        self.armed = true;
        if self.ever_armed {
            self.stats.rearms += 1;
        }
        self.ever_armed = true;
        Ok(())
    }

    /// Pushes one SQE, submitting first if the submission queue is full.
    fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        for _ in 0..2 {
            // SAFETY: the SQEs pushed here are the receive request, whose msghdr is boxed in
            // `self` and whose buffer group is registered with memory that outlives any request
            // (see `Drop`), and cancel requests, which reference no memory.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.ring
                .submit()
                .map_err(|e| context("io_uring submit", e))?;
        }
        Err(io::Error::other("io_uring submission queue stays full"))
    }

    /// Submits queued SQEs, if any, without waiting. Transient errors leave them queued for the
    /// next enter.
    fn flush(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(context("io_uring submit", e)),
        }
    }

    /// Copies out and handles every completion posted so far, returning buffers to the ring.
    fn harvest(&mut self, f: &mut dyn FnMut(SocketAddr, &mut [u8], usize)) -> usize {
        let mut handled = 0;
        loop {
            self.cqes.clear();
            let cap = self.cqes.capacity();
            self.cqes.extend(
                self.ring
                    .completion()
                    .take(cap)
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if self.cqes.is_empty() {
                break;
            }
            for i in 0..self.cqes.len() {
                let (ud, res, flags) = self.cqes[i];
                if ud == RECV_UD {
                    handled += self.on_recv(res, flags, f);
                }
            }
            self.bufs.publish();
        }
        handled
    }

    /// Handles one completion of the receive request; returns 1 if `f` was called.
    fn on_recv(
        &mut self,
        res: i32,
        flags: u32,
        f: &mut dyn FnMut(SocketAddr, &mut [u8], usize),
    ) -> usize {
        self.stats.completions += 1;
        let more = cqueue::more(flags);
        if !more {
            self.armed = false;
        }
        let bid = cqueue::buffer_select(flags);
        if res < 0 {
            if let Some(bid) = bid {
                self.bufs.add(bid);
            }
            match -res {
                libc::ENOBUFS => self.stats.nobufs += 1,
                libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
                errno => {
                    self.pending_error = Some(context(
                        "multishot recvmsg",
                        io::Error::from_raw_os_error(errno),
                    ))
                }
            }
            return 0;
        }
        let Some(bid) = bid else {
            self.stats.malformed += 1;
            return 0;
        };
        let len = res as usize;
        let called = match self.bufs.buffer_mut(bid) {
            Some(buf) => {
                let len = len.min(buf.len());
                deliver(&mut buf[..len], &self.msghdr, &mut self.stats, f)
            }
            None => {
                self.stats.malformed += 1;
                false
            }
        };
        self.bufs.add(bid);
        usize::from(called)
    }

    /// For [`probe`]: arms the request and returns the first completion's result and flags.
    fn first_completion(&mut self, timeout: Duration) -> io::Result<Option<(i32, u32)>> {
        if !self.armed {
            self.arm()?;
        }
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) => return Err(e),
        }
        let first = self
            .ring
            .completion()
            .find(|c| c.user_data() == RECV_UD)
            .map(|c| (c.result(), c.flags()));
        if let Some((_, flags)) = first {
            self.stats.completions += 1;
            if !cqueue::more(flags) {
                self.armed = false;
            }
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.bufs.add(bid);
                self.bufs.publish();
            }
        }
        Ok(first)
    }
}

impl Drop for UringRx {
    fn drop(&mut self) {
        if self.armed {
            let cancel = opcode::AsyncCancel::new(RECV_UD)
                .build()
                .user_data(CANCEL_UD);
            if self.push(&cancel).is_ok() {
                let deadline = Instant::now() + DROP_CANCEL_WAIT;
                while self.armed {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let ts = types::Timespec::from(left);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    if let Err(e) = self.ring.submitter().submit_with_args(1, &args) {
                        if !matches!(
                            e.raw_os_error(),
                            Some(libc::ETIME)
                                | Some(libc::EINTR)
                                | Some(libc::EBUSY)
                                | Some(libc::EAGAIN)
                        ) {
                            break;
                        }
                    }
                    for cqe in self.ring.completion() {
                        if cqe.user_data() == RECV_UD && !cqueue::more(cqe.flags()) {
                            self.armed = false;
                        }
                    }
                }
            }
        }
        if self.armed {
            // The kernel did not confirm that the receive stopped: it may still write into
            // the buffers, so they are never unmapped.
            self.bufs.leak();
            tracing::warn!(
                fd = self.fd,
                "io_uring receive did not stop in time: leaking its buffers"
            );
        } else {
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
        }
        // Then `ring` drops (its fd closes), then `bufs` (unmapped unless leaked).
    }
}

/// Parses one received message in `buf` (the used part of a buffer) and hands it to `f`.
/// Returns whether `f` was called.
fn deliver(
    buf: &mut [u8],
    msghdr: &libc::msghdr,
    stats: &mut RxStats,
    f: &mut dyn FnMut(SocketAddr, &mut [u8], usize),
) -> bool {
    let (src, len, gro) = {
        let Ok(out) = types::RecvMsgOut::parse(buf, msghdr) else {
            stats.malformed += 1;
            return false;
        };
        if out.is_payload_truncated() {
            stats.truncated += 1;
            return false;
        }
        if out.is_name_data_truncated() {
            stats.malformed += 1;
            return false;
        }
        let Some(src) = parse_sockaddr(out.name_data()) else {
            stats.malformed += 1;
            return false;
        };
        let gro = parse_gro(out.control_data());
        if gro.is_none() && out.is_control_data_truncated() {
            // A GRO batch whose segment size was lost would be taken for one datagram.
            stats.truncated += 1;
            return false;
        }
        (src, out.payload_data().len(), gro)
    };
    let Some(payload) = buf.get_mut(PAYLOAD_OFFSET..PAYLOAD_OFFSET + len) else {
        stats.malformed += 1;
        return false;
    };
    let segment = match gro {
        Some(s) if s > 0 => (s as usize).min(len),
        _ => len,
    }
    .max(1);
    stats.messages += 1;
    f(src, payload, segment);
    true
}

/// A `sockaddr_in` or `sockaddr_in6` as the kernel wrote it; IPv4-mapped IPv6 becomes IPv4.
fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(b.get(8..24)?).ok()?);
            let scope = b
                .get(24..28)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_ne_bytes)
                .unwrap_or(0);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope)),
            })
        }
        _ => None,
    }
}

/// The `UDP_GRO` segment size among the control messages, if there is one.
fn parse_gro(control: &[u8]) -> Option<i32> {
    let hdr_len = mem::size_of::<libc::cmsghdr>();
    let align = mem::size_of::<usize>();
    let mut off = 0usize;
    while control.len().saturating_sub(off) >= hdr_len {
        // SAFETY: `off + size_of::<cmsghdr>() <= control.len()` (checked above), so the read
        // stays inside the slice; `read_unaligned` needs no alignment, and every bit pattern
        // is a valid `cmsghdr` (integers only).
        let h = unsafe {
            control
                .as_ptr()
                .add(off)
                .cast::<libc::cmsghdr>()
                .read_unaligned()
        };
        #[allow(clippy::unnecessary_cast)] // `cmsg_len` is a u32 on musl
        let clen = h.cmsg_len as usize;
        if clen < CMSG_DATA_OFFSET || clen > control.len() - off {
            return None;
        }
        if h.cmsg_level == SOL_UDP && h.cmsg_type == UDP_GRO {
            let data = control.get(off + CMSG_DATA_OFFSET..off + clen)?;
            return Some(i32::from_ne_bytes(data.get(..4)?.try_into().ok()?));
        }
        off = off.checked_add(clen.checked_add(align - 1)? & !(align - 1))?;
    }
    None
}

fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a C struct of integers and pointers, for which all-zero (null
    // pointers, zero lengths) is a valid value.
    unsafe { mem::zeroed() }
}

/// An `io::Error` of the same kind that says which step failed.
fn context(step: &'static str, source: io::Error) -> io::Error {
    io::Error::new(source.kind(), UringError { step, source })
}

/// An io_uring operation that failed, carried inside an [`io::Error`].
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {source}{hint}", hint = setup_hint(source))]
pub struct UringError {
    /// What was being done.
    pub step: &'static str,
    /// The OS error.
    pub source: io::Error,
}

// ---------------------------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------------------------

/// One send of [`UringTx::send_all`]: `buf` to `dst` through socket `fd`.
#[derive(Debug, Clone, Copy)]
pub struct Send<'a> {
    /// The socket.
    pub fd: RawFd,
    /// The destination.
    pub dst: SocketAddr,
    /// `fd` is an `AF_INET6` socket: IPv4 destinations are sent to `::ffff:a.b.c.d`.
    pub v6_socket: bool,
    /// The payload (one datagram, or several of `segment` bytes each).
    pub buf: &'a [u8],
    /// GSO segment size: when `0 < segment < buf.len()`, `buf` goes out as datagrams of
    /// `segment` bytes (the last one shorter) with a `UDP_SEGMENT` cmsg. At most 65535.
    pub segment: usize,
}

/// `UDP_SEGMENT` control message.
#[repr(C)]
#[derive(Clone, Copy)]
struct SegmentCmsg {
    hdr: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

const _: () = assert!(mem::offset_of!(SegmentCmsg, segment) == CMSG_DATA_OFFSET);
const _: () = assert!(mem::size_of::<SegmentCmsg>() >= SEGMENT_CMSG_SPACE);

/// Room for either socket address.
#[repr(C)]
#[derive(Clone, Copy)]
union SockAddrBuf {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

/// What one in-flight `sendmsg` points to.
#[repr(C)]
struct TxSlot {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: SockAddrBuf,
    control: SegmentCmsg,
}

/// One destination of a [`TxBatch`]: which socket, where to, and the caller's tag.
#[derive(Debug, Clone, Copy)]
struct Target {
    fd: RawFd,
    v6_socket: bool,
    dst: SocketAddr,
    tag: usize,
}

/// A socket kept open while a send on it is in flight (so that its descriptor cannot be closed
/// and reused for another file meanwhile).
type KeepOpen = Arc<dyn AsRawFd + std::marker::Send + std::marker::Sync>;

/// One io_uring for batched sends, for one sending thread.
///
/// Besides the ring, it keeps the storage a [`TxBatch`] is built in: those vectors are
/// cleared, never shrunk, so once they have grown to the largest batch seen, sending a batch
/// allocates nothing.
pub struct UringTx {
    io: TxRing,
    /// The destinations of the current batch.
    targets: Vec<Target>,
    /// The sockets of the current batch, one per target; emptied once its sends completed.
    keep: Vec<KeepOpen>,
    /// The outcome of each target's send.
    results: Vec<io::Result<usize>>,
}

/// The part of [`UringTx`] that talks to the kernel: the ring and the memory its requests
/// point to.
struct TxRing {
    // Drops before `slots`: no request can outlive the memory it points to.
    ring: IoUring,
    /// One slot per submission queue entry; boxed, so addresses are stable.
    slots: Box<[TxSlot]>,
    /// Which slots of the current chunk have completed.
    done: Box<[bool]>,
    /// Set when the ring failed in a way that may have left requests queued: no further
    /// submissions are made.
    broken: Option<i32>,
}

// SAFETY: the raw pointers in `slots` point into `slots` itself or, during a send only, into
// the caller's buffers; they are written and used only through `&mut self`, and nothing is tied
// to the creating thread.
unsafe impl std::marker::Send for TxRing {}

impl UringTx {
    /// Sets up a ring of `entries` submission queue entries (rounded up to a power of two by the
    /// kernel): that many sends go in one system call.
    pub fn new(entries: u32) -> io::Result<UringTx> {
        // SUBMIT_ALL: one bad request (e.g. a closed fd) must not stop the rest of the batch.
        let ring: IoUring = IoUring::builder()
            .setup_submit_all()
            .setup_clamp()
            .build(entries.max(1))
            .map_err(|e| context("io_uring setup", e))?;
        let n = ring.params().sq_entries() as usize;
        let slots = (0..n)
            .map(|_| {
                // SAFETY: TxSlot is made of C structs of integers and pointers (and a union of
                // two such), for which all-zero is a valid value.
                unsafe { mem::zeroed::<TxSlot>() }
            })
            .collect();
        Ok(UringTx {
            io: TxRing {
                ring,
                slots,
                done: vec![false; n].into_boxed_slice(),
                broken: None,
            },
            targets: Vec::new(),
            keep: Vec::new(),
            results: Vec::new(),
        })
    }

    /// How many sends go in one system call.
    pub fn capacity(&self) -> usize {
        self.io.slots.len()
    }

    /// Sends every element of `sends`, storing each outcome in the same index of `results`:
    /// `Ok(bytes)` or the `sendmsg` error (`EAGAIN` when the socket buffer is full: sends never
    /// wait). All sends go in one `io_uring_enter` (in chunks of [`UringTx::capacity`] when
    /// there are more); the call returns once every one has completed.
    ///
    /// Only the first `min(sends.len(), results.len())` elements are considered. Each `fd`
    /// must stay open until the call returns.
    pub fn send_all(&mut self, sends: &[Send], results: &mut [io::Result<usize>]) {
        let n = sends.len().min(results.len());
        self.io.send(n, |i| sends[i], &mut results[..n]);
    }

    /// Starts a batch: one payload sent to many sockets, built with [`TxBatch::push`] and sent
    /// with [`TxBatch::send`]. The batch lives in storage this ring keeps from one batch to the
    /// next, so that a steady stream of batches allocates nothing.
    pub fn batch(&mut self) -> TxBatch<'_> {
        self.targets.clear();
        self.keep.clear();
        self.results.clear();
        TxBatch { tx: Some(self) }
    }
}

/// A batch of sends of one payload, each to its own socket and destination, built in the
/// storage of a [`UringTx`] ([`UringTx::batch`]). Dropping it unsent releases its sockets.
pub struct TxBatch<'r> {
    /// Always `Some` until [`TxBatch::send`] takes it.
    tx: Option<&'r mut UringTx>,
}

impl<'r> TxBatch<'r> {
    /// Adds a send through `sock` (an `AF_INET6` socket when `v6_socket`: IPv4 destinations
    /// then go to `::ffff:a.b.c.d`) to `dst`. `tag` is the caller's, given back with the
    /// outcome. The batch holds a reference to `sock` until its sends have completed, so the
    /// socket stays open while the kernel uses it.
    pub fn push<S>(&mut self, sock: &Arc<S>, v6_socket: bool, dst: SocketAddr, tag: usize)
    where
        S: AsRawFd + std::marker::Send + std::marker::Sync + 'static,
    {
        let Some(tx) = self.tx.as_deref_mut() else {
            return;
        };
        tx.targets.push(Target {
            fd: sock.as_raw_fd(),
            v6_socket,
            dst,
            tag,
        });
        tx.keep.push(sock.clone());
    }

    /// Sends `buf` to every target, as datagrams of `segment` bytes with UDP GSO when
    /// `0 < segment < buf.len()` (see [`Send::segment`]), all in one `io_uring_enter` (in chunks
    /// of [`UringTx::capacity`] when there are more), and returns once every send completed.
    /// Yields, in the order of [`TxBatch::push`], each target's tag, destination and outcome:
    /// `Ok(bytes)` or the `sendmsg` error, as [`UringTx::send_all`] says.
    pub fn send(
        mut self,
        buf: &[u8],
        segment: usize,
    ) -> impl Iterator<Item = (usize, SocketAddr, io::Result<usize>)> + 'r {
        let tx = self.tx.take().expect("a batch is sent once");
        let UringTx {
            io,
            targets,
            keep,
            results,
        } = tx;
        results.resize_with(targets.len(), || Ok(0));
        io.send(
            targets.len(),
            |i| {
                let t = &targets[i];
                Send {
                    fd: t.fd,
                    dst: t.dst,
                    v6_socket: t.v6_socket,
                    buf,
                    segment,
                }
            },
            results,
        );
        // Every send has completed: the sockets may close now.
        keep.clear();
        targets
            .iter()
            .zip(results.drain(..))
            .map(|(t, r)| (t.tag, t.dst, r))
    }
}

impl Drop for TxBatch<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            tx.keep.clear();
        }
    }
}

impl TxRing {
    /// Sends `send_at(i)` for every `i < n`, storing each outcome in `results[i]`, in chunks
    /// of at most one submission queue.
    fn send<'b>(
        &mut self,
        n: usize,
        send_at: impl Fn(usize) -> Send<'b>,
        results: &mut [io::Result<usize>],
    ) {
        let cap = self.slots.len();
        let mut start = 0;
        while start < n {
            let len = (n - start).min(cap);
            self.send_chunk(|i| send_at(start + i), &mut results[start..start + len]);
            start += len;
        }
    }

    /// Sends `send_at(i)` for every index of `results` (at most one submission queue) and
    /// stores each outcome there.
    fn send_chunk<'b>(
        &mut self,
        send_at: impl Fn(usize) -> Send<'b>,
        results: &mut [io::Result<usize>],
    ) {
        let n = results.len();
        if let Some(errno) = self.broken {
            for r in results.iter_mut() {
                *r = Err(io::Error::from_raw_os_error(errno));
            }
            return;
        }
        let mut pushed = 0usize;
        for (i, r) in results.iter_mut().enumerate() {
            let s = send_at(i);
            self.done[i] = true;
            let slot = &mut self.slots[i];
            if let Err(e) = fill_slot(slot, &s) {
                *r = Err(e);
                continue;
            }
            let sqe = opcode::SendMsg::new(types::Fd(s.fd), &slot.msg)
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(i as u64);
            // SAFETY: the msghdr and what it points to (this slot's iovec, address and cmsg, and
            // the caller's `s.buf`) stay valid and unchanged until this request completes: the
            // slot is not touched again, and the send (which borrows `s.buf` for `'b`) does not
            // return, until its completion has been reaped below.
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                // Cannot happen: the chunk is no larger than the queue, which is empty here.
                *r = Err(io::Error::other("io_uring submission queue full"));
                continue;
            }
            self.done[i] = false;
            pushed += 1;
        }

        let mut completed = 0usize;
        let mut tries = 0u32;
        while completed < pushed {
            match self.ring.submit_and_wait(pushed - completed) {
                Ok(_) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) if tries < 1000 => {
                        tries += 1;
                        if tries > 10 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    errno => {
                        let errno = errno.unwrap_or(libc::EIO);
                        self.give_up(errno, n, results, &mut completed);
                        return;
                    }
                },
            }
            for cqe in self.ring.completion() {
                let i = cqe.user_data() as usize;
                if i < n && !self.done[i] {
                    self.done[i] = true;
                    completed += 1;
                    let res = cqe.result();
                    results[i] = if res >= 0 {
                        Ok(res as usize)
                    } else {
                        Err(io::Error::from_raw_os_error(-res))
                    };
                }
            }
        }
    }

    /// The ring failed hard while sends were pending: stop using it, make sure nothing the
    /// kernel already took is still in flight, and fail the rest.
    fn give_up(
        &mut self,
        errno: i32,
        n: usize,
        results: &mut [io::Result<usize>],
        completed: &mut usize,
    ) {
        tracing::error!(errno, "io_uring send ring failed: no further sends on it");
        self.broken = Some(errno);
        // Requests still in the submission queue are never submitted (no further enter, and
        // the ring closes on drop). Those the kernel took complete inline (MSG_DONTWAIT); reap
        // them, giving task work a chance to run.
        let taken = (0..n)
            .filter(|&i| !self.done[i])
            .count()
            .saturating_sub(self.ring.submission().len());
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut reaped = 0;
        while reaped < taken && Instant::now() < deadline {
            for cqe in self.ring.completion() {
                let i = cqe.user_data() as usize;
                if i < n && !self.done[i] {
                    self.done[i] = true;
                    *completed += 1;
                    reaped += 1;
                    let res = cqe.result();
                    results[i] = if res >= 0 {
                        Ok(res as usize)
                    } else {
                        Err(io::Error::from_raw_os_error(-res))
                    };
                }
            }
            if reaped < taken {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for (done, r) in self.done.iter_mut().zip(results.iter_mut()).take(n) {
            if !*done {
                *done = true;
                *r = Err(io::Error::from_raw_os_error(errno));
            }
        }
    }
}

/// Fills `slot` for send `s`: destination, iovec, optional `UDP_SEGMENT` cmsg.
fn fill_slot(slot: &mut TxSlot, s: &Send) -> io::Result<()> {
    let namelen = match (s.dst, s.v6_socket) {
        (SocketAddr::V4(a), false) => {
            slot.addr.v4 = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            mem::size_of::<libc::sockaddr_in>()
        }
        (SocketAddr::V4(a), true) => {
            slot.addr.v6 = sockaddr_in6(a.ip().to_ipv6_mapped(), a.port(), 0, 0);
            mem::size_of::<libc::sockaddr_in6>()
        }
        (SocketAddr::V6(a), true) => {
            slot.addr.v6 = sockaddr_in6(*a.ip(), a.port(), a.flowinfo(), a.scope_id());
            mem::size_of::<libc::sockaddr_in6>()
        }
        (SocketAddr::V6(a), false) => match a.ip().to_ipv4_mapped() {
            Some(v4) => {
                return fill_slot(
                    slot,
                    &Send {
                        dst: SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
                        ..*s
                    },
                )
            }
            None => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
        },
    };
    slot.iov = libc::iovec {
        iov_base: s.buf.as_ptr() as *mut libc::c_void,
        iov_len: s.buf.len(),
    };
    slot.msg.msg_name = ptr::addr_of_mut!(slot.addr).cast();
    slot.msg.msg_namelen = namelen as libc::socklen_t;
    slot.msg.msg_iov = &mut slot.iov;
    slot.msg.msg_iovlen = 1;
    slot.msg.msg_flags = 0;
    if s.segment > 0 && s.segment < s.buf.len() {
        let segment = u16::try_from(s.segment).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("UDP GSO segment size {} exceeds 65535", s.segment),
            )
        })?;
        slot.control.hdr.cmsg_len = SEGMENT_CMSG_LEN as _;
        slot.control.hdr.cmsg_level = SOL_UDP;
        slot.control.hdr.cmsg_type = UDP_SEGMENT;
        slot.control.segment = segment;
        slot.msg.msg_control = ptr::addr_of_mut!(slot.control).cast();
        slot.msg.msg_controllen = SEGMENT_CMSG_SPACE as _;
    } else {
        slot.msg.msg_control = ptr::null_mut();
        slot.msg.msg_controllen = 0;
    }
    Ok(())
}

fn sockaddr_in6(ip: Ipv6Addr, port: u16, flowinfo: u32, scope_id: u32) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: port.to_be(),
        sin6_flowinfo: flowinfo.to_be(),
        sin6_addr: libc::in6_addr {
            s6_addr: ip.octets(),
        },
        sin6_scope_id: scope_id,
    }
}

/// A counting global allocator for the unit tests, to check that hot paths allocate nothing:
/// it forwards to the system allocator and counts, per thread, every allocation.
#[cfg(test)]
pub(crate) mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        // `const`, of a type without drop glue: no lazy initialisation and no destructor to
        // register, so touching it from inside the allocator never allocates.
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    fn count() {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    }

    // SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
    // `System`'s guarantees hold; the counting beside it touches no memory it hands out.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: forwarded as is (see above).
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count();
            // SAFETY: forwarded as is (see above).
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count();
            // SAFETY: forwarded as is (see above).
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded as is (see above).
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// How many allocations (and reallocations) `f` made on this thread.
    pub(crate) fn allocations_in<R>(f: impl FnOnce() -> R) -> (u64, R) {
        let before = ALLOCATIONS.with(Cell::get);
        let r = f();
        (ALLOCATIONS.with(Cell::get) - before, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn set_int_opt(fd: RawFd, level: i32, opt: i32, val: i32) {
        crate::udp::setsockopt_int(fd, level, opt, val).expect("setsockopt");
    }

    fn udp4() -> UdpSocket {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
    }

    /// A 340-byte buffer of 3 segments of 100 and one of 40, each segment filled with its index.
    fn gso_buf() -> Vec<u8> {
        let mut v = Vec::new();
        for (i, len) in [100usize, 100, 100, 40].into_iter().enumerate() {
            v.extend(std::iter::repeat_n(i as u8 + 1, len));
        }
        v
    }

    /// Receives until `want` messages arrived or `within` passed.
    fn collect(
        rx: &mut UringRx,
        want: usize,
        within: Duration,
    ) -> Vec<(SocketAddr, Vec<u8>, usize)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + within;
        while got.len() < want && Instant::now() < deadline {
            rx.recv(Duration::from_millis(100), &mut |src, p, seg| {
                got.push((src, p.to_vec(), seg))
            })
            .unwrap();
        }
        got
    }

    #[test]
    fn probe_ok_on_this_kernel() {
        probe().unwrap();
    }

    #[test]
    fn unsupported_message_names_feature_and_version() {
        let e = UringUnsupported::Missing {
            feature: UringFeature::MultishotRecvMsg,
            kernel: "5.15.0".into(),
        };
        assert_eq!(
            e.to_string(),
            "io_uring multishot recvmsg is not supported by this kernel (Linux 5.15.0); \
             mpwg needs Linux 6.0 or later"
        );
        assert_eq!(parse_release("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn send_all_gso_to_two_sockets() {
        let tx_sock = udp4();
        let r1 = udp4();
        let r2 = udp4();
        for r in [&r1, &r2] {
            r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let buf = gso_buf();
        let sends: Vec<Send> = [&r1, &r2]
            .iter()
            .map(|r| Send {
                fd: tx_sock.as_raw_fd(),
                dst: r.local_addr().unwrap(),
                v6_socket: false,
                buf: &buf,
                segment: 100,
            })
            .collect();
        let mut results: Vec<io::Result<usize>> = (0..2).map(|_| Ok(0)).collect();
        let mut tx = UringTx::new(8).unwrap();
        tx.send_all(&sends, &mut results);
        for r in &results {
            assert_eq!(*r.as_ref().unwrap(), 340);
        }
        for r in [&r1, &r2] {
            let mut b = [0u8; 2048];
            for (i, len) in [100usize, 100, 100, 40].into_iter().enumerate() {
                let (n, from) = r.recv_from(&mut b).unwrap();
                assert_eq!(n, len);
                assert_eq!(from, tx_sock.local_addr().unwrap());
                assert!(b[..n].iter().all(|&x| x == i as u8 + 1));
            }
        }
    }

    #[test]
    fn send_all_chunks_and_reports_errors_per_send() {
        let tx_sock = udp4();
        let r = udp4();
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let dst = r.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let mut sends: Vec<Send> = payloads
            .iter()
            .map(|p| Send {
                fd: tx_sock.as_raw_fd(),
                dst,
                v6_socket: false,
                buf: p,
                segment: 0,
            })
            .collect();
        // A bad fd and an IPv6 destination on an IPv4 socket fail alone.
        sends.insert(1, Send { fd: -1, ..sends[0] });
        sends.insert(
            3,
            Send {
                dst: "[2001:db8::1]:51820".parse().unwrap(),
                ..sends[0]
            },
        );
        let mut results: Vec<io::Result<usize>> = (0..sends.len()).map(|_| Ok(0)).collect();
        let mut tx = UringTx::new(2).unwrap();
        assert_eq!(tx.capacity(), 2);
        tx.send_all(&sends, &mut results);
        assert_eq!(
            results[1].as_ref().unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        assert_eq!(
            results[3].as_ref().unwrap_err().raw_os_error(),
            Some(libc::EAFNOSUPPORT)
        );
        let oks: Vec<usize> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(oks, vec![10, 11, 12, 13, 14]);
        let mut b = [0u8; 64];
        for i in 0..5u8 {
            let n = r.recv(&mut b).unwrap();
            assert_eq!(&b[..n], &payloads[usize::from(i)][..]);
        }
    }

    #[test]
    fn batch_tags_results_and_releases_sockets() {
        let tx_sock = Arc::new(udp4());
        let v6_only = "[2001:db8::1]:51820".parse().unwrap();
        let r1 = udp4();
        let r2 = udp4();
        for r in [&r1, &r2] {
            r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let buf = gso_buf();
        let mut tx = UringTx::new(2).unwrap();
        for round in 0..3 {
            let mut batch = tx.batch();
            batch.push(&tx_sock, false, r1.local_addr().unwrap(), 7);
            // An IPv6 destination on an IPv4 socket fails alone.
            batch.push(&tx_sock, false, v6_only, 8);
            batch.push(&tx_sock, false, r2.local_addr().unwrap(), 9);
            assert_eq!(Arc::strong_count(&tx_sock), 4);
            let got: Vec<(usize, SocketAddr, Result<usize, Option<i32>>)> = batch
                .send(&buf, 100)
                .map(|(tag, dst, r)| (tag, dst, r.map_err(|e| e.raw_os_error())))
                .collect();
            assert_eq!(
                got,
                vec![
                    (7, r1.local_addr().unwrap(), Ok(340)),
                    (8, v6_only, Err(Some(libc::EAFNOSUPPORT))),
                    (9, r2.local_addr().unwrap(), Ok(340)),
                ],
                "round {round}"
            );
            // Once sent, the ring no longer holds the socket.
            assert_eq!(Arc::strong_count(&tx_sock), 1);
            for r in [&r1, &r2] {
                let mut b = [0u8; 2048];
                for (i, len) in [100usize, 100, 100, 40].into_iter().enumerate() {
                    let n = r.recv(&mut b).unwrap();
                    assert_eq!(n, len);
                    assert!(b[..n].iter().all(|&x| x == i as u8 + 1));
                }
            }
        }
        // A batch dropped unsent releases its sockets too, and sends nothing.
        let mut batch = tx.batch();
        batch.push(&tx_sock, false, r1.local_addr().unwrap(), 0);
        drop(batch);
        assert_eq!(Arc::strong_count(&tx_sock), 1);
        assert_eq!(tx.batch().send(&buf, 100).count(), 0);
        r1.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(r1.recv(&mut [0u8; 16]).is_err());
    }

    #[test]
    fn batch_steady_state_allocates_nothing() {
        let tx_sock = Arc::new(udp4());
        let receivers: Vec<UdpSocket> = (0..5).map(|_| udp4()).collect();
        let dsts: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
        let buf = gso_buf();
        // A ring smaller than the batch: chunking must not allocate either.
        let mut tx = UringTx::new(2).unwrap();
        let round = |tx: &mut UringTx| {
            let mut batch = tx.batch();
            for (i, &dst) in dsts.iter().enumerate() {
                batch.push(&tx_sock, false, dst, i);
            }
            batch
                .send(&buf, 100)
                .filter(|(_, _, r)| matches!(r, Ok(340)))
                .count()
        };
        assert_eq!(round(&mut tx), 5);
        // The counter works: a real allocation is seen.
        let (allocs, v) = alloc_count::allocations_in(|| std::hint::black_box(vec![0u8; 64]));
        assert!(allocs >= 1 && v.len() == 64);
        let (allocs, sent) =
            alloc_count::allocations_in(|| (0..100).map(|_| round(&mut tx)).sum::<usize>());
        assert_eq!(allocs, 0);
        assert_eq!(sent, 500);
        // And the existing API, given its slices, allocates nothing.
        let sends: Vec<Send> = dsts
            .iter()
            .map(|&dst| Send {
                fd: tx_sock.as_raw_fd(),
                dst,
                v6_socket: false,
                buf: &buf,
                segment: 100,
            })
            .collect();
        let mut results: Vec<io::Result<usize>> = sends.iter().map(|_| Ok(0)).collect();
        let (allocs, ()) = alloc_count::allocations_in(|| tx.send_all(&sends, &mut results));
        assert_eq!(allocs, 0);
        assert!(results.iter().all(|r| matches!(r, Ok(340))));
    }

    #[test]
    fn send_all_v4_mapped_on_v6_socket() {
        let Ok(tx_sock) = UdpSocket::bind("[::]:0") else {
            eprintln!("no IPv6: skipped");
            return;
        };
        let r = udp4();
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let sends = [Send {
            fd: tx_sock.as_raw_fd(),
            dst: r.local_addr().unwrap(),
            v6_socket: true,
            buf: b"mapped",
            segment: 0,
        }];
        let mut results = [Ok(0)];
        UringTx::new(4).unwrap().send_all(&sends, &mut results);
        assert_eq!(*results[0].as_ref().unwrap(), 6);
        let mut b = [0u8; 16];
        let n = r.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"mapped");
    }

    #[test]
    fn rx_plain_datagrams_with_sources() {
        let r = udp4();
        let a = udp4();
        let b = udp4();
        let mut rx = UringRx::new(r.as_raw_fd(), 32).unwrap();
        a.send_to(b"from a", r.local_addr().unwrap()).unwrap();
        b.send_to(b"from b, longer", r.local_addr().unwrap())
            .unwrap();
        let got = collect(&mut rx, 2, Duration::from_secs(5));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (a.local_addr().unwrap(), b"from a".to_vec(), 6));
        assert_eq!(
            got[1],
            (b.local_addr().unwrap(), b"from b, longer".to_vec(), 14)
        );
        let st = rx.stats();
        assert_eq!(st.messages, 2);
        assert_eq!(st.truncated, 0);
        assert_eq!(st.rearms, 0);
    }

    #[test]
    fn rx_payload_is_mutable_in_place() {
        let r = udp4();
        let a = udp4();
        let mut rx = UringRx::new(r.as_raw_fd(), 2).unwrap();
        for _ in 0..4 {
            a.send_to(b"abc", r.local_addr().unwrap()).unwrap();
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            while seen.is_empty() && Instant::now() < deadline {
                rx.recv(Duration::from_millis(100), &mut |_, p, _| {
                    // Buffers are reused: what the last message left must not show.
                    seen.push(p.to_vec());
                    p.copy_from_slice(b"XYZ");
                })
                .unwrap();
            }
            assert_eq!(seen, vec![b"abc".to_vec()]);
        }
    }

    #[test]
    fn rx_mapped_source_on_v6_socket() {
        let Ok(r) = UdpSocket::bind("[::]:0") else {
            eprintln!("no IPv6: skipped");
            return;
        };
        let port = r.local_addr().unwrap().port();
        let a = udp4();
        let mut rx = UringRx::new(r.as_raw_fd(), 4).unwrap();
        a.send_to(b"v4 to v6", (Ipv4Addr::LOCALHOST, port)).unwrap();
        let got = collect(&mut rx, 1, Duration::from_secs(5));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, a.local_addr().unwrap());
        assert!(got[0].0.is_ipv4());
    }

    #[test]
    fn rx_reports_gro_segment_size() {
        let r = udp4();
        set_int_opt(r.as_raw_fd(), SOL_UDP, UDP_GRO, 1);
        let tx_sock = udp4();
        let mut rx = UringRx::new(r.as_raw_fd(), 8).unwrap();
        let buf = gso_buf();
        let mut results = [Ok(0)];
        UringTx::new(4).unwrap().send_all(
            &[Send {
                fd: tx_sock.as_raw_fd(),
                dst: r.local_addr().unwrap(),
                v6_socket: false,
                buf: &buf,
                segment: 100,
            }],
            &mut results,
        );
        assert_eq!(*results[0].as_ref().unwrap(), 340);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got
            .iter()
            .map(|(_, p, _): &(_, Vec<u8>, _)| p.len())
            .sum::<usize>()
            < 340
            && Instant::now() < deadline
        {
            got.extend(collect(&mut rx, 1, Duration::from_millis(500)));
        }
        assert_eq!(got.iter().map(|(_, p, _)| p.len()).sum::<usize>(), 340);
        // Loopback keeps the GSO packet whole for a GRO socket: one message, segment 100.
        assert_eq!(
            got.len(),
            1,
            "{:?}",
            got.iter().map(|g| (g.1.len(), g.2)).collect::<Vec<_>>()
        );
        assert_eq!(got[0].1, buf);
        assert_eq!(got[0].2, 100);
        assert_eq!(got[0].0, tx_sock.local_addr().unwrap());
    }

    #[test]
    fn rx_rearms_after_buffer_ring_runs_dry() {
        let r = udp4();
        // Room in the socket for the whole burst (SO_RCVBUFFORCE: we are root in tests).
        let _ = {
            // SAFETY: as in `set_int_opt`; the result is ignored (unprivileged runs keep the
            // default buffer and merely drop more of the burst).
            let val: i32 = 8 << 20;
            unsafe {
                libc::setsockopt(
                    r.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&val as *const i32).cast(),
                    mem::size_of::<i32>() as libc::socklen_t,
                )
            }
        };
        let a = udp4();
        let dst = r.local_addr().unwrap();
        let mut rx = UringRx::new(r.as_raw_fd(), 32).unwrap();
        // Arm, then stop polling while 1000 datagrams arrive.
        assert_eq!(
            rx.recv(Duration::from_millis(10), &mut |_, _, _| {})
                .unwrap(),
            0
        );
        for i in 0u32..1000 {
            a.send_to(&i.to_be_bytes(), dst).unwrap();
        }
        let mut seen = std::collections::BTreeSet::new();
        fn record(seen: &mut std::collections::BTreeSet<u32>, p: &[u8]) {
            if let Ok(b) = <[u8; 4]>::try_from(p) {
                seen.insert(u32::from_be_bytes(b));
            }
        }
        // Drain the burst.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if rx
                .recv(Duration::from_millis(200), &mut |_, p, _| {
                    record(&mut seen, p)
                })
                .unwrap()
                == 0
            {
                break;
            }
        }
        // Later datagrams still arrive: the multishot was re-armed.
        for i in 1000u32..1010 {
            a.send_to(&i.to_be_bytes(), dst).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while (1000..1010).any(|i| !seen.contains(&i)) && Instant::now() < deadline {
            rx.recv(Duration::from_millis(100), &mut |_, p, _| {
                record(&mut seen, p)
            })
            .unwrap();
        }
        let st = rx.stats();
        eprintln!("received {} of 1010; {st:?}", seen.len());
        assert!((1000..1010).all(|i| seen.contains(&i)), "{st:?}");
        assert!(st.nobufs >= 1, "the ring never ran dry: {st:?}");
        assert!(st.rearms >= 1, "{st:?}");
        assert!(seen.len() > 32, "{st:?}");
    }

    #[test]
    fn rx_drop_cancels_so_a_new_rx_gets_later_datagrams() {
        let r = udp4();
        let a = udp4();
        let dst = r.local_addr().unwrap();
        {
            let mut rx = UringRx::new(r.as_raw_fd(), 4).unwrap();
            a.send_to(b"one", dst).unwrap();
            assert_eq!(collect(&mut rx, 1, Duration::from_secs(5)).len(), 1);
            // Dropped while armed.
        }
        a.send_to(b"two", dst).unwrap();
        let mut rx = UringRx::new(r.as_raw_fd(), 4).unwrap();
        let got = collect(&mut rx, 1, Duration::from_secs(5));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"two");
    }

    #[test]
    fn rx_timeout_returns_zero() {
        let r = udp4();
        let mut rx = UringRx::new(r.as_raw_fd(), 4).unwrap();
        let t = Instant::now();
        assert_eq!(
            rx.recv(Duration::from_millis(50), &mut |_, _, _| {})
                .unwrap(),
            0
        );
        assert!(t.elapsed() >= Duration::from_millis(45));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(rx.recv(Duration::ZERO, &mut |_, _, _| {}).unwrap(), 0);
    }

    #[test]
    fn rx_rejects_bad_buffer_counts() {
        let r = udp4();
        for n in [0u16, 3, 100] {
            let e = UringRx::new(r.as_raw_fd(), n).err().unwrap();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn rx_on_a_non_socket_errors_without_spinning() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut rx = UringRx::new(f.as_raw_fd(), 2).unwrap();
        let t = Instant::now();
        let e = rx
            .recv(Duration::from_secs(5), &mut |_, _, _| {})
            .unwrap_err();
        eprintln!("{e}");
        assert_eq!(
            e.kind(),
            io::Error::from_raw_os_error(libc::ENOTSOCK).kind()
        );
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn parsers_reject_garbage() {
        assert_eq!(parse_sockaddr(&[]), None);
        assert_eq!(parse_sockaddr(&[2, 0, 0]), None);
        assert_eq!(parse_sockaddr(&[0xff; 32]), None);
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&51820u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[192, 0, 2, 1]);
        assert_eq!(
            parse_sockaddr(&v4),
            Some("192.0.2.1:51820".parse().unwrap())
        );
        let mut v6 = [0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&7u16.to_be_bytes());
        v6[8..24].copy_from_slice(&"::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(parse_sockaddr(&v6), Some("10.0.0.1:7".parse().unwrap()));

        assert_eq!(parse_gro(&[]), None);
        assert_eq!(parse_gro(&[0xff; 40]), None);
        assert_eq!(parse_gro(&[0; 40]), None);
    }

    #[test]
    #[cfg(all(target_pointer_width = "64", target_env = "gnu"))]
    fn parse_gro_finds_the_cmsg() {
        // A well-formed UDP_GRO cmsg after an unrelated one.
        let mut c = Vec::new();
        for (level, ty, val) in [(libc::SOL_IP, libc::IP_TOS, 0i32), (SOL_UDP, UDP_GRO, 1200)] {
            let mut h = [0u8; 24];
            let len = CMSG_DATA_OFFSET + 4;
            h[..mem::size_of::<usize>()].copy_from_slice(&len.to_ne_bytes());
            h[8..12].copy_from_slice(&level.to_ne_bytes());
            h[12..16].copy_from_slice(&ty.to_ne_bytes());
            h[16..20].copy_from_slice(&val.to_ne_bytes());
            c.extend_from_slice(&h);
        }
        assert_eq!(parse_gro(&c), Some(1200));
        // Cut anywhere: never a panic.
        for n in 0..c.len() {
            let _ = parse_gro(&c[..n]);
        }
    }
}
