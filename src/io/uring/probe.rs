//! The kernel probe: run once at start, it names the io_uring feature the running kernel
//! lacks, and the version that added it.

#[allow(unused_imports)]
use super::*;

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

pub(super) fn setup_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOMEM) => {
            " (before Linux 5.12 io_uring memory counts against RLIMIT_MEMLOCK: raise `ulimit -l`)"
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => " (out of file descriptors: raise `ulimit -n`)",
        _ => "",
    }
}

/// The running kernel's release string, e.g. `6.1.0-18-amd64`.
pub(super) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown version".to_string())
}

/// `(major, minor)` of a release string such as `6.1.0-18-amd64`.
pub(super) fn parse_release(release: &str) -> Option<(u32, u32)> {
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
pub(super) fn probe_multishot() -> Option<bool> {
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
