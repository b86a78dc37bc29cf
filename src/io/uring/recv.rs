//! The receive side: one multishot `recvmsg` armed on one UDP socket over a provided
//! buffer ring, with UDP GRO; each message is handed to a callback in place.

use super::bufring::BufRing;
#[allow(unused_imports)]
use super::*;

/// What [`UringRx::recv`] calls for each message: `(source, payload, segment, local)`.
pub type OnMessage<'a> = dyn FnMut(SocketAddr, &mut [u8], usize, Option<IpAddr>) + 'a;

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
    /// Set up with `COOP_TASKRUN` and `TASKRUN_FLAG`: completions wait for this thread to
    /// enter the kernel, and the submission queue's `IORING_SQ_TASKRUN` flag says when
    /// there is work for it. Without them, completions are posted on their own.
    coop: bool,
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
        let (ring, coop): (IoUring, bool) = match IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(cq)
            .build(8)
        {
            Ok(r) => (r, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                IoUring::builder()
                    .setup_cqsize(cq)
                    .build(8)
                    .map_err(|e| context("io_uring setup", e))?,
                false,
            ),
            Err(e) => return Err(context("io_uring setup", e)),
        };
        let mut rx = UringRx {
            ring,
            coop,
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

    /// Waits up to `timeout` for messages, then calls `f(source, payload, segment, local)` for
    /// each: `source` with IPv4-mapped IPv6 addresses turned into IPv4; `payload`, mutable, to
    /// be decrypted in place; `segment`, the `UDP_GRO` segment size of a coalesced batch, or
    /// the payload length (always at least 1, at most the payload length unless that is 0);
    /// `local`, the local address the message was sent to, where the socket asked for packet
    /// info (`IP_PKTINFO`, `IPV6_RECVPKTINFO`; see [`crate::io::cmsg`]).
    ///
    /// Each buffer returns to the ring after `f` returns. If the multishot request ended (the
    /// ring ran dry, or anything else), it is armed again. Returns the number of messages
    /// handled: 0 on timeout or when a signal interrupted the wait.
    ///
    /// With a zero `timeout` nothing waits, and the kernel is entered only when it has
    /// something for this ring (work to run for it, an overflowed completion queue, or a
    /// request to submit): an idle ring costs no system call, so one thread can look at many
    /// rings in turn and sleep in poll(2) when none had anything.
    ///
    /// An error is returned when the request fails with anything but a transient error (e.g.
    /// the fd is not a UDP socket); the next call arms it again.
    pub fn recv(&mut self, timeout: Duration, f: &mut OnMessage) -> io::Result<usize> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        if timeout.is_zero() {
            return self.recv_now(f);
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

    /// [`UringRx::recv`] without waiting: what is there now, with a system call only if the
    /// kernel has work for this ring.
    fn recv_now(&mut self, f: &mut OnMessage) -> io::Result<usize> {
        if !self.armed {
            self.arm()?;
        }
        let needs_enter = {
            let sq = self.ring.submission();
            !sq.is_empty() || sq.cq_overflow() || (self.coop && sq.taskrun())
        };
        if needs_enter {
            // Submits what is queued and runs the ring's pending work, which posts its
            // completions; it does not wait.
            match self.ring.submit() {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
                    ) => {}
                Err(e) => return Err(context("io_uring submit", e)),
            }
        }
        let handled = self.harvest(f);
        self.flush()?;
        match self.pending_error.take() {
            Some(e) if handled == 0 => Err(e),
            Some(e) => {
                self.pending_error = Some(e);
                Ok(handled)
            }
            None => Ok(handled),
        }
    }

    /// Queues the multishot receive request (submitted by the next enter).
    pub(super) fn arm(&mut self) -> io::Result<()> {
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
    pub(super) fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
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
    pub(super) fn flush(&mut self) -> io::Result<()> {
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
    pub(super) fn harvest(&mut self, f: &mut OnMessage) -> usize {
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
    pub(super) fn on_recv(&mut self, res: i32, flags: u32, f: &mut OnMessage) -> usize {
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
    pub(super) fn first_completion(&mut self, timeout: Duration) -> io::Result<Option<(i32, u32)>> {
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
pub(super) fn deliver(
    buf: &mut [u8],
    msghdr: &libc::msghdr,
    stats: &mut RxStats,
    f: &mut OnMessage,
) -> bool {
    let (src, len, control) = {
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
        let control = crate::io::cmsg::parse(out.control_data());
        if control.gro.is_none() && out.is_control_data_truncated() {
            // A GRO batch whose segment size was lost would be taken for one datagram.
            stats.truncated += 1;
            return false;
        }
        (src, out.payload_data().len(), control)
    };
    let Some(payload) = buf.get_mut(PAYLOAD_OFFSET..PAYLOAD_OFFSET + len) else {
        stats.malformed += 1;
        return false;
    };
    let segment = match control.gro {
        Some(s) if s > 0 => (s as usize).min(len),
        _ => len,
    }
    .max(1);
    stats.messages += 1;
    f(src, payload, segment, control.local);
    true
}

/// A `sockaddr_in` or `sockaddr_in6` as the kernel wrote it; IPv4-mapped IPv6 becomes IPv4.
pub(super) fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
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
#[cfg(test)]
pub(super) fn parse_gro(control: &[u8]) -> Option<i32> {
    crate::io::cmsg::parse(control).gro
}

pub(super) fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a C struct of integers and pointers, for which all-zero (null
    // pointers, zero lengths) is a valid value.
    unsafe { mem::zeroed() }
}

/// An `io::Error` of the same kind that says which step failed.
pub(super) fn context(step: &'static str, source: io::Error) -> io::Error {
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
