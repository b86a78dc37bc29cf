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

pub mod gso;
pub mod handshake;
pub mod paths;
pub mod queueing;
pub mod rx;
pub mod tx;

use std::io;
use std::sync::atomic::Ordering;

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

/// Set when a worker thread panicked: the daemon then shuts down (cleanly, through the
/// same path as SIGTERM) and exits nonzero, rather than run on with a dead worker.
pub static WORKER_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `f`; if it panics, logs it and asks the daemon to stop.
fn guarded(name: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!("worker thread {name} failed: shutting down");
        WORKER_FAILED.store(true, Ordering::SeqCst);
        // The main thread's signal loop then runs the normal shutdown.
        let _ = signal_hook::low_level::raise(libc::SIGTERM);
    }
}

/// Starts `f` on a named thread. If it panics, the panic is logged and the daemon is asked
/// to stop.
pub fn spawn(name: String, f: impl FnOnce() + Send + 'static) {
    let thread_name = name.clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || guarded(&thread_name, f))
        .expect("spawning a thread");
}
