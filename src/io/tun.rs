//! The TUN device, through tun-rs: multi-queue (one queue per worker), with the kernel's
//! offloads (IFF_VNET_HDR, TSO4/TSO6, and USO where the kernel has it). A read returns a
//! super-packet that tun-rs splits into MTU-sized packets, each written after the
//! headroom the WireGuard header needs; a batch of decrypted packets is coalesced per
//! flow (GRO) before it is written.
//!
//! The device is not persistent: the kernel removes it when the last queue closes, so it
//! cannot outlive the daemon, whatever way the daemon exits. If it is deleted under the
//! daemon (`ip link del`, as wg-quick down does), every queue's reads and writes fail;
//! the queues then say [`TunQueue::is_gone`], so the daemon can stop instead of retrying.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub use tun_rs::{IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

pub mod gro;
mod user;
pub use user::{TunDevice, READ_TIMEOUT};

/// Why the TUN device could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The name is empty, too long or has characters an interface name cannot have.
    #[error("invalid interface name {0:?}: it must be 1 to 15 characters, without '/', ':' or whitespace")]
    BadName(String),
    /// /dev/net/tun does not exist.
    #[error("/dev/net/tun is missing: load the tun module (modprobe tun) or, in a container, pass the device in")]
    NoTunDevice,
    /// Permission denied.
    #[error("creating TUN device {0} needs root or CAP_NET_ADMIN")]
    NotPermitted(String),
    /// Another interface has this name.
    #[error("a network interface named {0} already exists: pick another name or remove it (ip link del {0})")]
    NameTaken(String),
    /// Any other failure, with the step that failed.
    #[error("TUN device {name}: {step} failed: {source}")]
    Io {
        /// Interface name.
        name: String,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Checks an interface name as the kernel would, before it is used anywhere.
pub fn check_name(name: &str) -> Result<(), TunError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(TunError::BadName(name.to_string()))
    }
}

/// The coalescing state of a queue's writes, kept from batch to batch: mpwg's own for
/// TCP ([`gro::Coalescer`]: super-packets gathered from the packets' buffers, nothing
/// copied), tun-rs's for the rest (UDP, which it coalesces where the kernel has USO).
#[derive(Default)]
pub struct GROTable {
    tcp: gro::Coalescer,
    other: tun_rs::GROTable,
}

/// Counters of one queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// read() calls that returned data.
    pub reads: AtomicU64,
    /// Packets those reads carried, after splitting.
    pub read_packets: AtomicU64,
    /// Batches written (one or more write() calls each).
    pub write_batches: AtomicU64,
    /// Packets written, before coalescing.
    pub written_packets: AtomicU64,
    /// Super-packets dropped because they split into more packets than a read has
    /// buffers for.
    pub oversize_drops: AtomicU64,
}

/// What a queue reads and writes: the kernel's TUN device (no dynamic dispatch), or a
/// program's ([`TunDevice`]).
enum Queue {
    Kernel(tun_rs::SyncDevice),
    User(Arc<dyn TunDevice>),
}

/// One queue of the TUN device.
pub struct TunQueue {
    dev: Queue,
    /// Set (for every queue of the device) once a read or write said the device is gone.
    gone: Arc<AtomicBool>,
    /// Counters.
    pub stats: QueueStats,
}

/// The TUN device: its name and its queues.
pub struct Tun {
    name: String,
    index: u32,
    gone: Arc<AtomicBool>,
    /// One queue per worker.
    pub queues: Vec<Arc<TunQueue>>,
}

/// The segments the kernel may put in one super-packet it hands the TUN device: every
/// read has at least this many buffers to split into (`ip link set gso_max_segs`).
pub const MAX_SEGMENTS: u32 = 128;

/// True if `e`, from a read or write, means the device no longer exists: EBADFD once it
/// was deleted, and EFAULT for a read that was waiting when it went (the kernel shuts
/// the queue's socket down; our buffers are always valid, so EFAULT means nothing else).
fn device_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADFD) | Some(libc::EFAULT))
}

/// True if `e` is tun-rs's refusal to split a super-packet into more segments than the
/// buffers given. tun-rs keeps the error's type private; its message is matched, and
/// `splitting_into_too_few_buffers_is_recognised` checks it against tun-rs itself.
fn too_many_segments(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput
        && e.get_ref()
            .is_some_and(|inner| inner.to_string() == "too many GSO segments")
}

fn classify(name: &str, step: &'static str, e: io::Error) -> TunError {
    match e.raw_os_error() {
        Some(libc::ENOENT) if step == "creating the device" => TunError::NoTunDevice,
        Some(libc::EPERM) | Some(libc::EACCES) => TunError::NotPermitted(name.to_string()),
        Some(libc::EBUSY) | Some(libc::EEXIST) => TunError::NameTaken(name.to_string()),
        _ => TunError::Io {
            name: name.to_string(),
            step,
            source: e,
        },
    }
}

impl Tun {
    /// Creates TUN device `name` with `queues` queues, offloads on, and sets its MTU and
    /// transmit queue length. The device is left down, without an address.
    pub fn create(name: &str, mtu: u32, queues: usize) -> Result<Tun, TunError> {
        check_name(name)?;
        if std::path::Path::new("/sys/class/net").join(name).exists() {
            return Err(TunError::NameTaken(name.to_string()));
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Err(TunError::NoTunDevice);
        }
        let first = tun_rs::DeviceBuilder::new()
            .name(name)
            .mtu(u16::try_from(mtu).unwrap_or(u16::MAX))
            .offload(true)
            .multi_queue(true)
            .tx_queue_len(1000)
            .enable(false)
            .build_sync()
            .map_err(|e| classify(name, "creating the device", e))?;
        let index = first
            .if_index()
            .map_err(|e| classify(name, "reading the interface index", e))?;
        if let Err(e) = crate::io::netlink::set_gso_max_segs(index, MAX_SEGMENTS) {
            tracing::warn!(
                "TUN device {name}: cannot cap GSO super-packets at {MAX_SEGMENTS} segments \
                 ({e}); larger ones are dropped (and counted in `mpwg show`)"
            );
        }
        let gone = Arc::new(AtomicBool::new(false));
        let mut devs = Vec::with_capacity(queues.max(1));
        for _ in 1..queues.max(1) {
            let q = first
                .try_clone()
                .map_err(|e| classify(name, "opening another queue", e))?;
            devs.push(q);
        }
        devs.insert(0, first);
        let all: Vec<TunQueue> = devs
            .into_iter()
            .map(|dev| TunQueue {
                dev: Queue::Kernel(dev),
                gone: gone.clone(),
                stats: QueueStats::default(),
            })
            .collect();
        Ok(Tun {
            name: name.to_string(),
            index,
            gone,
            queues: all.into_iter().map(Arc::new).collect(),
        })
    }

    /// A device that is a program's ([`TunDevice`]), named `name` (for the logs and
    /// the status), with one queue. Index 0: no interface of the system is it.
    pub fn user(name: &str, dev: Arc<dyn TunDevice>) -> Tun {
        let gone = Arc::new(AtomicBool::new(false));
        Tun {
            name: name.to_string(),
            index: 0,
            gone: gone.clone(),
            queues: vec![Arc::new(TunQueue {
                dev: Queue::User(dev),
                gone,
                stats: QueueStats::default(),
            })],
        }
    }

    /// True if the device is a program's, not the kernel's.
    pub fn is_user(&self) -> bool {
        self.queues
            .first()
            .is_some_and(|q| matches!(q.dev, Queue::User(_)))
    }

    /// Marks every queue gone, as a deleted device would: their reads of a program's
    /// device then fail, so the TX workers end.
    pub fn close(&self) {
        self.gone.store(true, Ordering::Relaxed);
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index the device had when it was created.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// True once a queue found the device deleted.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

impl TunQueue {
    /// Reads one packet or super-packet and splits it: packet `i` lands at
    /// `bufs[i][offset..offset + sizes[i]]`. `scratch` must hold VIRTIO_NET_HDR_LEN +
    /// 65535 bytes. Returns the number of packets: 0 if a super-packet split into more
    /// packets than `bufs` holds, which is dropped and counted
    /// ([`QueueStats::oversize_drops`]), not retried. After an error, see
    /// [`TunQueue::is_gone`].
    pub fn recv_batch(
        &self,
        scratch: &mut [u8],
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        offset: usize,
    ) -> io::Result<usize> {
        let dev = match &self.dev {
            Queue::Kernel(dev) => dev,
            Queue::User(dev) => return self.user_recv_batch(&**dev, bufs, sizes, offset),
        };
        let n = match dev.recv_multiple(scratch, bufs, sizes, offset) {
            Ok(n) => n,
            Err(e) if too_many_segments(&e) => {
                let n = self.stats.oversize_drops.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "a TSO super-packet from the TUN device split into more than {} \
                         packets: dropped",
                        bufs.len()
                    );
                }
                return Ok(0);
            }
            Err(e) => {
                if device_gone(&e) {
                    self.gone.store(true, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.stats
            .read_packets
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// True once a read or write on any queue of the device found it deleted: every
    /// later call fails too, so the caller should stop, not retry.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// True if a read would not block now (more packets are queued).
    pub fn readable_now(&self) -> bool {
        let Queue::Kernel(dev) = &self.dev else {
            // A program's device: its reads take what waits already.
            return false;
        };
        let mut pfd = libc::pollfd {
            fd: dev.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd; a zero timeout never blocks.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Writes packets, each at `bufs[i][offset..]` (offset >= VIRTIO_NET_HDR_LEN),
    /// coalescing TCP (and UDP) flows first. The Vecs may grow, and their order in
    /// `bufs` may change (each flow's packets are written in their order).
    pub fn send_batch(
        &self,
        gro: &mut GROTable,
        bufs: &mut [Vec<u8>],
        offset: usize,
    ) -> io::Result<()> {
        if bufs.is_empty() {
            return Ok(());
        }
        self.stats.write_batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .written_packets
            .fetch_add(bufs.len() as u64, Ordering::Relaxed);
        let dev = match &self.dev {
            Queue::Kernel(dev) => dev,
            Queue::User(dev) => return user::send_batch(&**dev, bufs, offset),
        };
        let r = if dev.tcp_gso() && offset >= VIRTIO_NET_HDR_LEN {
            send_coalesced(dev, gro, bufs, offset)
        } else {
            dev.send_multiple(&mut gro.other, bufs, offset).map(|_| ())
        };
        if let Err(e) = &r {
            if device_gone(e) {
                self.gone.store(true, Ordering::Relaxed);
            }
        }
        r
    }
}

/// Writes a batch to a device with virtio headers: the TCP packets through mpwg's
/// coalescer, the others through tun-rs's. A batch of both is first put in two parts
/// (a stable sort: each flow's packets keep their order).
fn send_coalesced(
    dev: &tun_rs::SyncDevice,
    gro: &mut GROTable,
    bufs: &mut [Vec<u8>],
    offset: usize,
) -> io::Result<()> {
    let is_tcp = |b: &Vec<u8>| gro::kind(b.get(offset..).unwrap_or(&[])) == gro::Kind::Tcp;
    let tcp = bufs.iter().filter(|b| is_tcp(b)).count();
    if tcp > 0 && tcp < bufs.len() {
        bufs.sort_by_key(|b| !is_tcp(b));
    }
    let (tcp_bufs, other) = bufs.split_at_mut(tcp);
    let mut result = Ok(());
    if !other.is_empty() {
        if let Err(e) = dev.send_multiple(&mut gro.other, other, offset) {
            if device_gone(&e) {
                return Err(e);
            }
            result = Err(e);
        }
    }
    if !tcp_bufs.is_empty() {
        gro.tcp.plan(tcp_bufs, offset);
        gro.tcp.write(
            tcp_bufs,
            offset,
            &mut |iov| dev.send_vectored(iov),
            &device_gone,
        )?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("wg0").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a-very-long-interface").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a b").is_err());
    }

    /// A TCP super-packet of `segments` segments of 100 bytes behind a virtio header.
    fn super_packet(segments: usize) -> (tun_rs::VirtioNetHdr, Vec<u8>) {
        let payload = 100 * segments;
        let mut p = vec![0u8; 40 + payload];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload).min(65535) as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[32] = 5 << 4; // TCP data offset: 20 bytes
        let hdr = tun_rs::VirtioNetHdr {
            flags: 1,    // VIRTIO_NET_HDR_F_NEEDS_CSUM
            gso_type: 1, // VIRTIO_NET_HDR_GSO_TCPV4
            hdr_len: 40,
            gso_size: 100,
            csum_start: 20,
            csum_offset: 16,
        };
        (hdr, p)
    }

    #[test]
    fn splitting_into_too_few_buffers_is_recognised() {
        let (hdr, mut p) = super_packet(8);
        let mut bufs = vec![vec![0u8; 200]; 4];
        let mut sizes = vec![0usize; 4];
        let e = tun_rs::gso_split(&mut p, hdr, &mut bufs, &mut sizes, 0, false).unwrap_err();
        assert!(too_many_segments(&e), "{e:?}");
        assert!(!device_gone(&e));
        let mut bufs = vec![vec![0u8; 200]; 8];
        let mut sizes = vec![0usize; 8];
        assert_eq!(
            tun_rs::gso_split(&mut p, hdr, &mut bufs, &mut sizes, 0, false).unwrap(),
            8
        );
        assert!(!too_many_segments(&io::Error::from_raw_os_error(
            libc::EINVAL
        )));
        assert!(device_gone(&io::Error::from_raw_os_error(libc::EBADFD)));
    }
}
