//! The send side: one payload to many sockets in a single `io_uring_enter`, one
//! `IORING_OP_SENDMSG` per destination with an optional `UDP_SEGMENT` cmsg, and no copy
//! of the payload. A payload is one buffer, or a gather list of buffers sent back to back
//! as one message (each sealed datagram where it was sealed: the kernel reads them in
//! order and cuts them into `UDP_SEGMENT` datagrams whatever the buffers' boundaries).
//! Each destination may name the local address to send from (an `IP_PKTINFO` or
//! `IPV6_PKTINFO` cmsg, [`crate::io::cmsg`]).

#[allow(unused_imports)]
use super::*;
use crate::io::cmsg::{self, ControlBuf};
use crate::io::udp::{self, Datagrams};

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

/// Room for either socket address.
#[repr(C)]
#[derive(Clone, Copy)]
union SockAddrBuf {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

/// What one send carries: one buffer, or a gather list (iovecs the caller keeps valid
/// until the send completed) of `len` bytes in all.
#[derive(Clone, Copy)]
pub(super) enum Payload<'a> {
    /// One buffer.
    One(&'a [u8]),
    /// Buffers back to back.
    Gather { iovs: &'a [libc::iovec], len: usize },
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::One(b) => b.len(),
            Payload::Gather { len, .. } => *len,
        }
    }
}

/// One send as the ring makes it: [`Send`] with its payload one buffer or a gather list.
#[derive(Clone, Copy)]
pub(super) struct Out<'a> {
    fd: RawFd,
    dst: SocketAddr,
    /// The local address to send from (None: the kernel's choice).
    source: Option<IpAddr>,
    v6_socket: bool,
    payload: Payload<'a>,
    segment: usize,
}

impl<'a> From<Send<'a>> for Out<'a> {
    fn from(s: Send<'a>) -> Out<'a> {
        Out {
            fd: s.fd,
            dst: s.dst,
            source: None,
            v6_socket: s.v6_socket,
            payload: Payload::One(s.buf),
            segment: s.segment,
        }
    }
}

/// What one in-flight `sendmsg` points to.
#[repr(C)]
pub(super) struct TxSlot {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: SockAddrBuf,
    control: ControlBuf,
}

/// One destination of a [`TxBatch`]: which socket, where to, and the caller's tag.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    fd: RawFd,
    v6_socket: bool,
    dst: SocketAddr,
    source: Option<IpAddr>,
    tag: usize,
}

/// A socket kept open while a send on it is in flight (so that its descriptor cannot be closed
/// and reused for another file meanwhile).
pub(super) type KeepOpen = Arc<dyn AsRawFd + std::marker::Send + std::marker::Sync>;

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
    /// The gather list of the current batch's payload ([`TxBatch::send_gather`]).
    iovs: Vec<libc::iovec>,
}

/// The part of [`UringTx`] that talks to the kernel: the ring and the memory its requests
/// point to.
pub(super) struct TxRing {
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

// SAFETY: `iovs` holds pointers into a caller's buffers only during `TxBatch::send_gather`,
// which borrows them and empties `iovs` before it returns; between sends it is empty. The rest
// is `Send` on its own (`TxRing` above).
unsafe impl std::marker::Send for UringTx {}

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
            iovs: Vec::new(),
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
        self.io.send(n, |i| Out::from(sends[i]), &mut results[..n]);
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
    /// then go to `::ffff:a.b.c.d`) to `dst`, from the local address `source` (None: the
    /// kernel's choice). `tag` is the caller's, given back with the outcome. The batch holds
    /// a reference to `sock` until its sends have completed, so the socket stays open while
    /// the kernel uses it.
    pub fn push<S>(
        &mut self,
        sock: &Arc<S>,
        v6_socket: bool,
        dst: SocketAddr,
        source: Option<IpAddr>,
        tag: usize,
    ) where
        S: AsRawFd + std::marker::Send + std::marker::Sync + 'static,
    {
        let Some(tx) = self.tx.as_deref_mut() else {
            return;
        };
        tx.targets.push(Target {
            fd: sock.as_raw_fd(),
            v6_socket,
            dst,
            source,
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
        tx.send_payload(None, buf, segment)
    }

    /// [`TxBatch::send`] with the payload gathered from `parts`, back to back, as one message
    /// per target: `parts` is typically one sealed datagram each, left where it was sealed,
    /// so no byte of the payload is copied in user space. `segment` applies to the whole
    /// (with UDP GSO the kernel cuts datagrams of `segment` bytes from the parts in order).
    pub fn send_gather(
        mut self,
        parts: &[&[u8]],
        segment: usize,
    ) -> impl Iterator<Item = (usize, SocketAddr, io::Result<usize>)> + 'r {
        let tx = self.tx.take().expect("a batch is sent once");
        tx.iovs.clear();
        tx.iovs.extend(parts.iter().map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        }));
        let len = parts.iter().map(|p| p.len()).sum();
        tx.send_payload(Some(len), &[], segment)
    }
}

impl<'r> TxBatch<'r> {
    /// [`TxBatch::send`] or [`TxBatch::send_gather`], as `d` is one buffer or one per
    /// datagram.
    pub fn send_datagrams(
        self,
        d: Datagrams,
    ) -> impl Iterator<Item = (usize, SocketAddr, io::Result<usize>)> + 'r {
        let segment = d.segment();
        match d {
            Datagrams::Segments { buf, .. } => self.send_gather(&[buf], segment),
            Datagrams::Each(parts) => self.send_gather(parts, segment),
        }
    }
}

impl UringTx {
    /// Sends the batch's payload (`buf`, or when `gather` is the total length, the iovecs in
    /// `self.iovs`) to every target and hands back the outcomes.
    fn send_payload<'r>(
        &'r mut self,
        gather: Option<usize>,
        buf: &[u8],
        segment: usize,
    ) -> impl Iterator<Item = (usize, SocketAddr, io::Result<usize>)> + 'r {
        let UringTx {
            io,
            targets,
            keep,
            results,
            iovs,
        } = self;
        let payload = match gather {
            Some(len) => Payload::Gather { iovs, len },
            None => Payload::One(buf),
        };
        results.resize_with(targets.len(), || Ok(0));
        io.send(
            targets.len(),
            |i| {
                let t = &targets[i];
                Out {
                    fd: t.fd,
                    dst: t.dst,
                    source: t.source,
                    v6_socket: t.v6_socket,
                    payload,
                    segment,
                }
            },
            results,
        );
        // Every send has completed: the sockets may close now, and the iovecs' buffers go
        // back to the caller.
        keep.clear();
        iovs.clear();
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
    pub(super) fn send<'b>(
        &mut self,
        n: usize,
        send_at: impl Fn(usize) -> Out<'b>,
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
    pub(super) fn send_chunk<'b>(
        &mut self,
        send_at: impl Fn(usize) -> Out<'b>,
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
            // SAFETY: the msghdr and what it points to (this slot's iovec, address and cmsg, the
            // caller's buffer or gather list and the buffers it names) stay valid and unchanged
            // until this request completes: the slot is not touched again, and the send (which
            // borrows the payload for `'b`) does not return, until its completion has been
            // reaped below.
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
    pub(super) fn give_up(
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

/// Fills `slot` for send `s`: destination, iovec(s), optional `UDP_SEGMENT` and
/// packet-info cmsgs.
pub(super) fn fill_slot(slot: &mut TxSlot, s: &Out) -> io::Result<()> {
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
                    &Out {
                        dst: SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
                        ..*s
                    },
                )
            }
            None => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
        },
    };
    match s.payload {
        Payload::One(buf) => {
            slot.iov = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            slot.msg.msg_iov = &mut slot.iov;
            slot.msg.msg_iovlen = 1;
        }
        Payload::Gather { iovs, .. } => {
            // The kernel only reads the iovecs (sendmsg); `*mut` is the C type's.
            slot.msg.msg_iov = iovs.as_ptr() as *mut libc::iovec;
            slot.msg.msg_iovlen = iovs.len() as _;
        }
    }
    slot.msg.msg_name = ptr::addr_of_mut!(slot.addr).cast();
    slot.msg.msg_namelen = namelen as libc::socklen_t;
    slot.msg.msg_flags = 0;
    let total = s.payload.len();
    let segment = if s.segment > 0 && s.segment < total {
        Some(u16::try_from(s.segment).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("UDP GSO segment size {} exceeds 65535", s.segment),
            )
        })?)
    } else {
        None
    };
    let control_len = cmsg::write_send(&mut slot.control, segment, s.source, udp::is_v4(s.dst));
    if control_len > 0 {
        slot.msg.msg_control = ptr::addr_of_mut!(slot.control).cast();
        slot.msg.msg_controllen = control_len as _;
    } else {
        slot.msg.msg_control = ptr::null_mut();
        slot.msg.msg_controllen = 0;
    }
    Ok(())
}

pub(super) fn sockaddr_in6(
    ip: Ipv6Addr,
    port: u16,
    flowinfo: u32,
    scope_id: u32,
) -> libc::sockaddr_in6 {
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
