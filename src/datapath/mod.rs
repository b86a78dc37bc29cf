//! The data path's worker loops.
//!
//! * A TX worker per TUN queue (per core, pinned): reads a batch of packets (TSO
//!   super-packets split by the TUN layer, each with headroom for the WireGuard header),
//!   seals each in place, coalesces runs of equal-size messages to one peer, and hands each
//!   run to the paths as one UDP GSO send per path socket.
//! * One receive thread over every path socket's ring: splits GRO batches by segment size,
//!   queues handshake messages for the handshake worker ([`handshake`]: off the data's
//!   thread, in a bounded queue) and gathers data messages into batches, in the
//!   order they arrived. A batch is opened ([`Device::open_batch`]: copies the replay
//!   window holds are dropped before decryption) either by the receive thread itself, or
//!   by decryption workers (`--decrypt-workers`, pinned like the TX workers) that write
//!   the batches back in receive order ([`crate::datapath::queueing`]). Packets of one
//!   flow reach the TUN in the order they arrived, coalesced per flow.
//! * One monitor thread ([`monitor`]): probes, health, quality, and the plan of which
//!   paths data takes ([`schedule`]), which the TX workers read.
//!
//! [`Device::open_batch`]: crate::protocol::device::Device::open_batch

pub mod gso;
pub mod handshake;
pub mod monitor;
pub mod paths;
pub mod queueing;
pub mod reordering;
pub mod rx;
pub mod schedule;
pub mod tx;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The most bytes one packet (or super-packet) can have.
const MAX_PACKET: usize = 65535;
/// Packets one TUN read can split into (64 KiB at the smallest TCP MSS we expect).
const SPLIT_MAX: usize = 128;

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// How the workers reach the sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Io {
    /// io_uring: one submission sends a batch on every path; multishot receives over
    /// provided buffer rings.
    #[default]
    Uring,
    /// Plain `sendmsg`/`recvmsg` (still with GSO and GRO), for kernels before 6.0.
    Syscalls,
}

/// Pins the calling thread to `core` (of those the process may use), if it exists.
pub fn pin_to(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids() {
        if !ids.is_empty() {
            core_affinity::set_for_current(ids[core % ids.len()]);
        }
    }
}

/// The life of one tunnel's threads: the flag every loop checks to end ([`Lifecycle::stop`],
/// set by the daemon's shutdown), and the one a worker that panicked sets
/// ([`Lifecycle::failed`]), so the daemon (or the program embedding the tunnel) shuts
/// that tunnel down cleanly, and no other. Each tunnel has its own.
#[derive(Debug, Default)]
pub struct Lifecycle {
    stopping: AtomicBool,
    failed: AtomicBool,
}

impl Lifecycle {
    /// Asks every thread of the tunnel to end.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// True once the tunnel is shutting down: loops end.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// True if a worker thread of the tunnel panicked.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

/// Runs `f`; if it panics, logs it and marks the tunnel failed: its daemon then shuts it
/// down (cleanly, as on SIGTERM) rather than run on with a dead worker.
fn guarded(name: &str, life: &Lifecycle, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!("worker thread {name} failed: shutting down");
        life.failed.store(true, Ordering::SeqCst);
    }
}

/// Starts `f` on a named thread of the tunnel `life` belongs to. If it panics, the panic
/// is logged and the tunnel marked failed ([`Lifecycle::failed`]).
pub fn spawn(
    name: String,
    life: &Arc<Lifecycle>,
    f: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let thread_name = name.clone();
    let life = life.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || guarded(&thread_name, &life, f))
        .expect("spawning a thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_panics_fails_its_own_tunnel_and_no_other() {
        let (a, b) = (
            Arc::new(Lifecycle::default()),
            Arc::new(Lifecycle::default()),
        );
        let fine = spawn("mpwg-test-fine".into(), &b, || {});
        let bad = spawn("mpwg-test-bad".into(), &a, || panic!("a bug in a worker"));
        assert!(bad.join().is_ok(), "the panic is caught on its thread");
        assert!(fine.join().is_ok());
        assert!(a.failed(), "its tunnel is marked failed");
        assert!(!b.failed(), "another tunnel is not");
        assert!(
            !a.is_stopping() && !b.is_stopping(),
            "stopping is the daemon's call"
        );
        a.stop();
        assert!(a.is_stopping() && !b.is_stopping());
    }
}
