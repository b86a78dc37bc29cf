//! Coalescing sealed messages into UDP GSO batches: runs of equal-size messages to the
//! same peer go out as one `sendmsg` per path socket (UDP_SEGMENT).
//!
//! The messages are not copied: a batch names the TX worker's buffers they were sealed in
//! (by index), and the send gathers them from there
//! ([`Datagrams::Each`](crate::io::udp::Datagrams::Each)).
//!
//! Pure logic: [`GsoBatch::fits`] says when the batch must be flushed first; the caller
//! sends. The rules are the kernel's: every segment but the last has the segment size,
//! the last may be shorter (and then ends the batch), at most
//! [`MAX_GSO_SEGMENTS`](crate::io::udp::MAX_GSO_SEGMENTS) segments and
//! [`MAX_GSO_BYTES`](crate::io::udp::MAX_GSO_BYTES) bytes.

use std::sync::Arc;

use crate::io::udp::{MAX_GSO_BYTES, MAX_GSO_SEGMENTS};
use crate::protocol::peer::Peer;

/// A batch of sealed messages to one peer.
pub struct GsoBatch {
    peer: Option<Arc<Peer>>,
    /// (buffer index, message length) of each message, in order.
    parts: Vec<(usize, usize)>,
    /// Bytes of all the messages.
    bytes: usize,
    segment: usize,
    count: usize,
    data_packets: usize,
    closed: bool,
}

impl Default for GsoBatch {
    fn default() -> Self {
        GsoBatch {
            peer: None,
            parts: Vec::with_capacity(MAX_GSO_SEGMENTS),
            bytes: 0,
            segment: 0,
            count: 0,
            data_packets: 0,
            closed: false,
        }
    }
}

/// A batch ready to send, borrowed from the [`GsoBatch`].
pub struct Ready<'a> {
    /// The peer.
    pub peer: &'a Arc<Peer>,
    /// Each message: the index of the buffer it was sealed in, and its length (at the
    /// start of that buffer).
    pub parts: &'a [(usize, usize)],
    /// Bytes in all.
    pub bytes: usize,
    /// Segment size.
    pub segment: usize,
    /// Segments in the batch.
    pub count: usize,
    /// Segments that carry data (not keepalives).
    pub data_packets: usize,
}

impl GsoBatch {
    /// True if `msg` for `peer` can join the batch as it stands.
    pub fn fits(&self, peer: &Arc<Peer>, len: usize) -> bool {
        match &self.peer {
            None => true,
            Some(p) => {
                Arc::ptr_eq(p, peer)
                    && !self.closed
                    && len <= self.segment
                    && self.count < MAX_GSO_SEGMENTS
                    && self.bytes + len <= MAX_GSO_BYTES
            }
        }
    }

    /// Appends the message of `len` bytes sealed in buffer `index`. The caller has checked
    /// [`GsoBatch::fits`] (or flushed).
    pub fn push(&mut self, peer: &Arc<Peer>, index: usize, len: usize, is_data: bool) {
        if self.peer.is_none() {
            self.peer = Some(peer.clone());
            self.segment = len;
        }
        if len < self.segment {
            self.closed = true;
        }
        self.parts.push((index, len));
        self.bytes += len;
        self.count += 1;
        self.data_packets += usize::from(is_data);
    }

    /// True if nothing is batched.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch to send, if any.
    pub fn ready(&self) -> Option<Ready<'_>> {
        Some(Ready {
            peer: self.peer.as_ref()?,
            parts: &self.parts,
            bytes: self.bytes,
            segment: self.segment,
            count: self.count,
            data_packets: self.data_packets,
        })
    }

    /// Empties the batch (after sending it).
    pub fn clear(&mut self) {
        self.peer = None;
        self.parts.clear();
        self.bytes = 0;
        self.segment = 0;
        self.count = 0;
        self.data_packets = 0;
        self.closed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::key::Key;

    fn peer(b: u8) -> Arc<Peer> {
        Arc::new(Peer::new(Key([b; 32]), None))
    }

    #[test]
    fn equal_sizes_join_a_shorter_one_closes() {
        let p = peer(1);
        let mut b = GsoBatch::default();
        assert!(b.fits(&p, 100));
        b.push(&p, 0, 100, true);
        assert!(b.fits(&p, 100));
        b.push(&p, 1, 100, true);
        assert!(!b.fits(&p, 120), "longer than the segment");
        assert!(b.fits(&p, 60));
        b.push(&p, 3, 60, false);
        assert!(!b.fits(&p, 60), "a short segment ends the batch");
        let r = b.ready().unwrap();
        assert_eq!(
            (r.segment, r.count, r.data_packets, r.bytes),
            (100, 3, 2, 260)
        );
        assert_eq!(r.parts, &[(0, 100), (1, 100), (3, 60)]);
        b.clear();
        assert!(b.is_empty() && b.ready().is_none());
    }

    #[test]
    fn another_peer_or_a_full_batch_needs_a_flush() {
        let (p, q) = (peer(1), peer(2));
        let mut b = GsoBatch::default();
        b.push(&p, 0, 1000, true);
        assert!(!b.fits(&q, 1000));
        for i in 1..MAX_GSO_SEGMENTS.min(MAX_GSO_BYTES / 1000) {
            assert!(b.fits(&p, 1000));
            b.push(&p, i, 1000, true);
        }
        assert!(!b.fits(&p, 1000));
    }
}
