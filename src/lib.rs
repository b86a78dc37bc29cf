//! mpwg: a multi-path WireGuard device for Linux, as a library.
//!
//! A [`Builder`] says what to create: the TUN device (name, MTU), the paths (uplink
//! interfaces, by name or by index, mixed), the listen port. [`Builder::start`] creates
//! it and returns a [`Handle`], through which a program configures the device (the
//! UAPI's `set`, as text or typed), adds and removes paths, reads its status (what `mpwg
//! show --json` prints), changes its scheduling mode and stops it. [`interfaces`] lists the interfaces a path can
//! use. `mpwg up` is this same builder and handle, with signals around them.
//!
//! ```no_run
//! // Every packet leaves on eth0 and on wlan0; the far end keeps the first copy.
//! let tunnel = mpwg::Builder::new("wg0")
//!     .paths(["eth0", "wlan0"])
//!     .listen_port(51820)
//!     .start()?;
//! // Configure it as wg(8) would (or let wg(8) do it, on /var/run/wireguard/wg0.sock).
//! tunnel.set("private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a")?;
//! println!("{}", tunnel.status().to_json());
//! tunnel.stop();
//! # Ok::<(), mpwg::Error>(())
//! ```
//!
//! The modules below are the implementation, public for mpwg's own tests, benchmarks
//! and fuzzers, and hidden from this documentation: what is shown here is the API.
//! ARCHITECTURE.md has their map.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod control;
#[doc(hidden)]
pub mod daemon;
#[doc(hidden)]
pub mod datapath;
#[doc(hidden)]
pub mod io;
#[doc(hidden)]
pub mod multipath;
#[doc(hidden)]
pub mod protocol;

pub use control::status::{DropCounts, HandshakeCounts, PathStatus, PeerStatus, Status};
pub use daemon::DaemonError as Error;
pub use daemon::{interfaces, Builder, Handle, InterfaceInfo, StopReason, Stopper};
pub use datapath::paths::ReceiveMode;
pub use datapath::paths::{Inbound, Transport};
pub use datapath::Io;
pub use io::tun::TunDevice;
pub use multipath::scheduler::Mode;
pub use protocol::cidr::Cidr;
pub use protocol::key::Key;
pub use protocol::request::{PeerUpdate, SetRequest};
