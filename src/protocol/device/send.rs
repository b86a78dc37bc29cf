//! The outbound half of the device: an IP packet from the TUN, sealed in place for the
//! peer whose allowed IPs hold its destination; staged, with a handshake started, when
//! the peer has no usable session.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::device::{ip_info, Device, EpochCache};
use crate::protocol::noise::messages::DATA_HEADER_LEN;
use crate::protocol::peer::Peer;
use crate::protocol::session::{Session, HEADROOM, TAILROOM};
use crate::protocol::timers::{REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME};
use crate::protocol::transmit::Transmit;

/// A TX worker's cache: the current session of each peer it sends to.
pub type SendCache = EpochCache<(Arc<Peer>, Option<Arc<Session>>)>;

/// A packet sealed by [`Device::seal_cached`]; the peer is the cache's.
pub enum SealedFor<'c> {
    /// Sealed for this peer: the message is `buf[..len]`.
    Ready(&'c Arc<Peer>, usize),
    /// Kept until a handshake completes.
    Staged,
    /// No peer's allowed IPs hold the destination, or the packet is not IP.
    NoRoute,
}

/// A packet sealed by [`Device::seal_for`].
pub(super) enum Sealed {
    /// Sealed for this peer: the message is `buf[..len]`.
    Ready(Arc<Peer>, usize),
    /// Kept until a handshake completes.
    Staged,
}

impl Device {
    /// [`Device::seal_ip_packet`] for a TX worker's batch loop: routes and seals with
    /// what `cache` holds, so a packet takes no lock and clones no `Arc`. The peer of a
    /// sealed packet is borrowed from the cache.
    pub fn seal_cached<'c>(
        &self,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        tx: &dyn Transmit,
        cache: &'c mut SendCache,
    ) -> SealedFor<'c> {
        cache.refresh(self);
        let Some((dst, _)) = buf
            .get(HEADROOM..HEADROOM + len)
            .and_then(|p| ip_info(p, true))
        else {
            self.drops.no_route.fetch_add(1, Ordering::Relaxed);
            return SealedFor::NoRoute;
        };
        let Some(peer) = cache.allowed.lookup(dst) else {
            self.drops.no_route.fetch_add(1, Ordering::Relaxed);
            return SealedFor::NoRoute;
        };
        let slot = match cache
            .sessions
            .iter()
            .position(|(p, _)| Arc::ptr_eq(p, peer))
        {
            Some(i) => i,
            None => {
                let current = peer.sessions.read().current.clone();
                cache.sessions.push((peer.clone(), current));
                cache.sessions.len() - 1
            }
        };
        let (peer, session) = &cache.sessions[slot];
        let usable = session.as_ref().filter(|s| {
            now.saturating_duration_since(s.created) < REJECT_AFTER_TIME
                && s.sent() < crate::protocol::session::REJECT_AFTER_MESSAGES
        });
        if let Some(n) = usable.and_then(|s| s.seal(buf, len, self.mtu()).ok()) {
            return SealedFor::Ready(peer, n);
        }
        match self.seal_for(peer.clone(), buf, len, now, tx) {
            Sealed::Ready(_, n) => SealedFor::Ready(peer, n),
            Sealed::Staged => SealedFor::Staged,
        }
    }

    pub(super) fn seal_for(
        &self,
        peer: Arc<Peer>,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        tx: &dyn Transmit,
    ) -> Sealed {
        let sealed = peer
            .send_session(now)
            .and_then(|session| session.seal(buf, len, self.mtu()).ok());
        match sealed {
            Some(n) => Sealed::Ready(peer, n),
            None => {
                if len > 0 {
                    peer.stage(&buf[..(HEADROOM + len + TAILROOM).min(buf.len())], len);
                }
                self.initiate(&peer, now, tx, false);
                Sealed::Staged
            }
        }
    }

    /// Reports that sealed messages of `bytes` in all, `data_packets` of them carrying
    /// data (not keepalives), were handed to the paths (`delivered`: at least one took
    /// them). Runs the timers and starts a rekey when the session is due for one.
    pub fn note_sent(
        &self,
        peer: &Arc<Peer>,
        bytes: usize,
        data_packets: usize,
        delivered: bool,
        now: Instant,
        tx: &dyn Transmit,
    ) {
        if delivered {
            peer.count_tx(bytes);
        }
        let rekey = {
            let mut hs = peer.handshake.lock();
            if data_packets > 0 {
                hs.timers.on_data_sent(now);
            }
            hs.timers.on_authenticated_sent(now);
            peer.sessions.read().current.as_ref().is_some_and(|s| {
                s.sent() > REKEY_AFTER_MESSAGES
                    || (s.initiator && now.saturating_duration_since(s.created) > REKEY_AFTER_TIME)
            })
        };
        if rekey {
            self.initiate(peer, now, tx, false);
        }
    }

    pub(super) fn send_keepalive(&self, peer: &Arc<Peer>, now: Instant, tx: &dyn Transmit) {
        let mut buf = [0u8; DATA_HEADER_LEN + 16];
        if let Sealed::Ready(peer, n) = self.seal_for(peer.clone(), &mut buf, 0, now, tx) {
            let ok = tx.send_to_peer(&peer, &buf[..n]);
            self.note_sent(&peer, n, 0, ok, now, tx);
        }
    }

    pub(super) fn flush_staged(&self, peer: &Arc<Peer>, now: Instant, tx: &dyn Transmit) -> usize {
        let staged: Vec<_> = peer.staged.lock().drain(..).collect();
        let n = staged.len();
        for (mut buf, len) in staged {
            if let Sealed::Ready(peer, n) = self.seal_for(peer.clone(), &mut buf, len, now, tx) {
                let ok = tx.send_to_peer(&peer, &buf[..n]);
                self.note_sent(&peer, n, 1, ok, now, tx);
            }
        }
        n
    }
}
