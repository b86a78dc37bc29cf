//! The TUN device, through tun-rs: multi-queue (one queue per worker), with the kernel's
//! offloads (IFF_VNET_HDR, TSO4/TSO6, and USO where the kernel has it). A read returns a
//! super-packet that tun-rs splits into MTU-sized packets, each written after the
//! headroom the WireGuard header needs; a batch of decrypted packets is coalesced per
//! flow (GRO) before it is written.
//!
//! The device is not persistent: the kernel removes it when the last queue closes, so it
//! cannot outlive the daemon, whatever way the daemon exits.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

pub use tun_rs::{GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

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
}

/// One queue of the TUN device.
pub struct TunQueue {
    dev: tun_rs::SyncDevice,
    /// Counters.
    pub stats: QueueStats,
}

/// The TUN device: its name and its queues.
pub struct Tun {
    name: String,
    /// One queue per worker.
    pub queues: Vec<std::sync::Arc<TunQueue>>,
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
        let mut all = vec![TunQueue {
            dev: first,
            stats: QueueStats::default(),
        }];
        for _ in 1..queues.max(1) {
            let q = all[0]
                .dev
                .try_clone()
                .map_err(|e| classify(name, "opening another queue", e))?;
            all.push(TunQueue {
                dev: q,
                stats: QueueStats::default(),
            });
        }
        Ok(Tun {
            name: name.to_string(),
            queues: all.into_iter().map(std::sync::Arc::new).collect(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl TunQueue {
    /// Reads one packet or super-packet and splits it: packet `i` lands at
    /// `bufs[i][offset..offset + sizes[i]]`. `scratch` must hold VIRTIO_NET_HDR_LEN +
    /// 65535 bytes. Returns the number of packets.
    pub fn recv_batch(
        &self,
        scratch: &mut [u8],
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        offset: usize,
    ) -> io::Result<usize> {
        let n = self.dev.recv_multiple(scratch, bufs, sizes, offset)?;
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.stats
            .read_packets
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// True if a read would not block now (more packets are queued).
    pub fn readable_now(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.dev.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd; a zero timeout never blocks.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc > 0 && pfd.revents & libc::POLLIN != 0
    }

    /// Writes packets, each at `bufs[i][offset..]` (offset >= VIRTIO_NET_HDR_LEN),
    /// coalescing TCP (and UDP) flows first. The Vecs may grow.
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
        self.dev.send_multiple(gro, bufs, offset).map(|_| ())
    }
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
}
