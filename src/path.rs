//! The path layer as the protocol core sees it: where a datagram came from, and a trait
//! to send one. The core never knows how many sockets or interfaces stand behind it.

use std::net::SocketAddr;

use crate::peer::Peer;

/// Which local path (socket) a datagram arrived on or leaves by. Path 0 is the first.
pub type PathId = usize;

/// Where a received datagram came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The sender's address.
    pub addr: SocketAddr,
    /// The local path it arrived on.
    pub path: PathId,
}

/// How the core sends: the daemon's sockets, or a test's capture.
pub trait Transmit {
    /// Sends `datagram` to `peer` at the endpoint(s) the peer is known by. Returns true if
    /// at least one path took it.
    fn send_to_peer(&self, peer: &Peer, datagram: &[u8]) -> bool;

    /// Sends `datagram` back to where a datagram came from (a cookie reply, which must not
    /// go to a peer's endpoint, since the sender is not yet authenticated).
    fn send_to(&self, dst: Source, datagram: &[u8]) -> bool;
}
