//! mpwg: a multi-path WireGuard gateway for Linux.
//!
//! The crate is layered; each folder is one layer, and imports point only downward
//! (ARCHITECTURE.md has the map, and `scripts/modgraph.py` checks it):
//!
//! * [`daemon`]: wiring, signals, clean shutdown (and `main.rs`, the command line).
//! * [`control`]: the `wg(8)` UAPI, mpwg's own control socket, configuration files.
//! * [`datapath`]: the threads that move batches between the I/O edge and the core, and
//!   the sockets of the paths.
//! * [`protocol`]: the WireGuard protocol core, sans-IO: bytes and `now` in, bytes and
//!   deadlines out.
//! * [`multipath`]: the path model (path ids, per-path endpoints) and the scheduler that
//!   decides which paths a packet takes. Pure logic.
//! * [`io`]: the edge: TUN, UDP, io_uring, netlink, Unix sockets. Every `unsafe` block
//!   lives here.

pub mod control;
pub mod daemon;
pub mod datapath;
pub mod io;
pub mod multipath;
pub mod protocol;
