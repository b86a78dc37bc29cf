//! The device's clock: every peer's due timers (handshake retransmits and giving up,
//! keepalives, rekeys) and the erasure of expired keys.

use std::sync::Arc;
use std::time::Instant;

use crate::protocol::device::Device;
use crate::protocol::peer::Peer;
use crate::protocol::transmit::Transmit;

impl Device {
    /// Fires every peer's due timers.
    pub fn handle_timeout(&self, now: Instant, tx: &dyn Transmit) {
        for peer in self.peers() {
            let e = peer.handshake.lock().timers.expired(now);
            if e.give_up {
                let dropped = peer.staged.lock().drain(..).count();
                tracing::info!(peer = %peer.public_key.short(), dropped, "handshake did not complete after {} attempts: giving up", crate::protocol::timers::MAX_HANDSHAKE_ATTEMPTS + 2);
                // The pending initiation's index goes with it: left in the table, it
                // would keep the peer alive (an `Arc`) and grow the table by one per
                // unreachable peer every 95 s.
                let pending = peer.handshake.lock().pending.take();
                if let Some(p) = pending {
                    self.index.write().remove(&p.local_index);
                    self.changed();
                }
            }
            if e.retransmit_handshake {
                let attempts = peer.handshake.lock().timers.handshake_attempts;
                tracing::debug!(peer = %peer.public_key.short(), attempts, "handshake unanswered, retrying");
                self.initiate(&peer, now, tx, true);
            }
            if e.new_handshake {
                tracing::debug!(peer = %peer.public_key.short(), "sent data but heard nothing: new handshake");
                self.initiate(&peer, now, tx, false);
            }
            if e.send_keepalive || e.persistent_keepalive {
                self.send_keepalive(&peer, now, tx);
            }
            if e.zero_keys {
                self.zero_keys(&peer);
            }
        }
    }

    /// The earliest timer deadline of any peer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers()
            .iter()
            .filter_map(|p| p.handshake.lock().timers.next_deadline())
            .min()
    }

    /// Lock order everywhere: config, then a peer's handshake, then the index table, then
    /// the peer's sessions.
    pub(super) fn zero_keys(&self, peer: &Arc<Peer>) {
        let mut hs = peer.handshake.lock();
        hs.answered = None;
        let mut idx = self.index.write();
        if let Some(p) = hs.pending.take() {
            idx.remove(&p.local_index);
        }
        let mut s = peer.sessions.write();
        for sess in s.all() {
            idx.remove(&sess.local_index);
        }
        *s = Default::default();
        drop((idx, s));
        self.changed();
        tracing::debug!(peer = %peer.public_key.short(), "session keys erased");
    }
}
