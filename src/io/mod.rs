//! The I/O edge: the TUN device ([`tun`]), UDP sockets ([`udp`]) and their control
//! messages ([`cmsg`]), io_uring ([`uring`]),
//! netlink ([`netlink`]) and the Unix sockets the UAPI and control socket are served on
//! ([`ipc`]). Every `unsafe` block of the crate is here, each with a `// SAFETY:` line.
//! Nothing here knows WireGuard.

pub mod cmsg;
pub mod ipc;
pub mod netlink;
pub mod poll;
pub mod tun;
pub mod udp;
pub mod uring;
