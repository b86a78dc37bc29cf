//! A TUN device a program implements ([`TunDevice`]): the tunnel reads the packets to
//! send from it and writes the packets it received to it, one call per packet, with no
//! offloads. Reached through `dyn TunDevice`; the kernel TUN device never is.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::TunQueue;

/// How long a TX worker waits in [`TunDevice::read`] before it looks whether its tunnel
/// stops.
pub const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// Packets one read call takes at most: after the first, those already waiting.
const READ_BATCH: usize = 64;

/// A program's TUN device: where the tunnel's plaintext IP packets come from and go to.
///
/// ```
/// use std::time::Duration;
/// use crossbeam_channel::{Receiver, Sender};
///
/// /// IP packets to send come in on `outbound`; received ones go out on `inbound`.
/// struct Channels {
///     outbound: Receiver<Vec<u8>>,
///     inbound: Sender<Vec<u8>>,
/// }
///
/// impl mpwg::TunDevice for Channels {
///     fn read(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
///         match self.outbound.recv_timeout(timeout) {
///             Ok(p) if p.len() <= buf.len() => {
///                 buf[..p.len()].copy_from_slice(&p);
///                 Ok(Some(p.len()))
///             }
///             Ok(_) => Ok(Some(0)),
///             Err(_) => Ok(None),
///         }
///     }
///     fn write(&self, packet: &[u8]) -> std::io::Result<()> {
///         let _ = self.inbound.send(packet.to_vec());
///         Ok(())
///     }
/// }
/// ```
pub trait TunDevice: Send + Sync + 'static {
    /// Waits up to `timeout` for the next IP packet to send through the tunnel, and
    /// copies it into `buf` (65535 bytes: room for any packet). Returns its length, or
    /// None if none came in time. A length of 0 is skipped.
    fn read(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>>;

    /// Takes an IP packet that came out of the tunnel (decrypted, its source checked
    /// against the peer's allowed IPs).
    fn write(&self, packet: &[u8]) -> io::Result<()>;
}

impl TunQueue {
    /// [`TunQueue::recv_batch`] on a program's device: the first packet waits up to
    /// [`READ_TIMEOUT`], the others only if already there. TimedOut when none came; an
    /// error once the tunnel stops.
    pub(super) fn user_recv_batch(
        &self,
        dev: &dyn TunDevice,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        offset: usize,
    ) -> io::Result<usize> {
        let mut n = 0;
        while n < bufs.len().min(READ_BATCH) {
            if self.is_gone() {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "tunnel stopped"));
            }
            let wait = if n == 0 { READ_TIMEOUT } else { Duration::ZERO };
            let buf = &mut bufs[n];
            if buf.len() < offset + u16::MAX as usize {
                buf.resize(offset + u16::MAX as usize, 0);
            }
            match dev.read(&mut buf[offset..], wait)? {
                Some(0) => continue,
                Some(len) => {
                    sizes[n] = len;
                    n += 1;
                }
                None => break,
            }
        }
        if n == 0 {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.stats
            .read_packets
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// [`TunQueue::send_batch`] on a program's device: each packet, one call each.
pub(super) fn send_batch(dev: &dyn TunDevice, bufs: &[Vec<u8>], offset: usize) -> io::Result<()> {
    let mut result = Ok(());
    for b in bufs {
        if let Some(p) = b.get(offset..) {
            if let Err(e) = dev.write(p) {
                result = Err(e);
            }
        }
    }
    result
}
