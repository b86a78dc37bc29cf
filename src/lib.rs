//! mpwg: a multi-path WireGuard gateway for Linux.
//!
//! The crate is layered as the kernel's WireGuard is: one concern per module.
//!
//! * Protocol core, sans-IO (time is passed in, nothing here touches a socket):
//!   [`noise`] (handshake, cookies, messages), [`session`] (transport keys, in-place
//!   seal and open), [`replay`], [`allowedips`], [`timers`], [`peer`], [`device`].
//! * Configuration: [`key`], [`cidr`], [`uapi`] (the `wg(8)` socket protocol), [`config`]
//!   (wg-quick style files).
//! * I/O edges: [`tun`], [`udp`]; the daemon wiring in [`daemon`].

pub mod allowedips;
pub mod cidr;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod device;
pub mod endpoint;
pub mod gso;
pub mod ipc;
pub mod key;
pub mod netlink;
pub mod noise;
pub mod path;
pub mod peer;
pub mod queueing;
pub mod receive;
pub mod replay;
pub mod session;
pub mod socket;
pub mod timers;
pub mod tun;
pub mod uapi;
pub mod udp;
pub mod uring;
