//! How the core sends: the trait behind which the datapath's sockets (or a test's
//! capture) stand. The core never knows how many sockets or interfaces there are.

use crate::multipath::path::Source;
use crate::multipath::scheduler::Traffic;
use crate::protocol::peer::Peer;

/// How the core sends: the daemon's sockets, or a test's capture.
pub trait Transmit {
    /// Sends `datagram` to `peer` at the endpoint(s) the peer is known by. Returns true if
    /// at least one path took it.
    fn send_to_peer(&self, peer: &Peer, datagram: &[u8]) -> bool;

    /// Sends `segments`: datagrams of `segment` bytes each, back to back (the last may be
    /// shorter), to `peer`, in as few system calls as the paths allow (UDP GSO). Returns
    /// true if at least one path took them.
    fn send_segments_to_peer(&self, peer: &Peer, segments: &[u8], segment: usize) -> bool {
        let mut ok = false;
        for d in segments.chunks(segment.max(1)) {
            ok |= self.send_to_peer(peer, d);
        }
        ok
    }

    /// Sends `datagrams`, each in its own buffer (all of one size but the last, which may be
    /// shorter), to `peer`, in as few system calls as the paths allow (UDP GSO, gathered by
    /// the kernel from the buffers, so they need not be copied together). Returns true if at
    /// least one path took them.
    fn send_each_to_peer(&self, peer: &Peer, datagrams: &[&[u8]]) -> bool {
        let mut ok = false;
        for d in datagrams {
            ok |= self.send_to_peer(peer, d);
        }
        ok
    }

    /// [`Transmit::send_each_to_peer`] for data packets of kind `traffic`, which the
    /// scheduler may stripe instead of duplicating.
    fn send_data_to_peer(&self, peer: &Peer, datagrams: &[&[u8]], traffic: Traffic) -> bool {
        let _ = traffic;
        self.send_each_to_peer(peer, datagrams)
    }

    /// Sends `datagram` back to where a datagram came from (a cookie reply, which must not
    /// go to a peer's endpoint, since the sender is not yet authenticated).
    fn send_to(&self, dst: Source, datagram: &[u8]) -> bool;
}
