//! The receive loop of a tunnel whose paths are a program's [`Transport`]: the datagrams
//! its [`Inbound`] queued go through the same [`Receiver`] as a socket's.
//!
//! [`Transport`]: crate::datapath::paths::Transport
//! [`Inbound`]: crate::datapath::paths::Inbound

use crossbeam_channel::{Receiver as Queue, RecvTimeoutError};

use super::Receiver;
use crate::datapath::paths::Delivered;
use crate::datapath::Lifecycle;

/// Datagrams handled before the batch is flushed, when they keep coming.
const ROUND: usize = 256;

/// Hands what the transport delivered to the receiver until `life` says the tunnel
/// stops (seen within [`super::RX_IDLE`]).
pub(super) fn receive_loop(rx: &mut Receiver, queue: &Queue<Delivered>, life: &Lifecycle) {
    while !life.is_stopping() {
        let mut next = match queue.recv_timeout(rx.idle_wait()) {
            Ok(d) => Some(d),
            Err(RecvTimeoutError::Timeout) => {
                // Striped packets held past a gap go when their hold ends.
                rx.release_due();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut handled = 0;
        while let Some(mut d) = next.take() {
            let len = d.datagram.len();
            rx.handle(&d.path, d.from, None, &mut d.datagram, len);
            handled += 1;
            if handled < ROUND {
                next = queue.try_recv().ok();
            }
        }
        rx.flush();
        rx.idle();
    }
}
