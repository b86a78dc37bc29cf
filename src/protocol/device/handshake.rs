//! Handshakes: initiations we send, handshake messages and cookie replies we receive,
//! and the sessions they install.
//!
//! Received handshake messages are the handshake worker's (`src/datapath/handshake.rs`):
//! the receive thread only checks mac1 ([`Device::precheck_handshake`], so junk never
//! reaches the queue nor counts towards its depth) and queues them; the worker tells the
//! device how deep the queue is ([`Device::note_handshake_backlog`]) and hands each to
//! [`Device::receive_handshake`]. Under load, a message without a valid mac2 gets a
//! cookie reply, and one with a valid mac2 needs a token of its source's bucket.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::multipath::path::Source;
use crate::protocol::device::{Config, Device, IndexEntry, INITIATION_MIN_INTERVAL};
use crate::protocol::key::Key;
use crate::protocol::noise::cookie::MacCheck;
use crate::protocol::noise::handshake::{self, StaticKeys};
use crate::protocol::noise::messages::{classify, le32, Kind};
use crate::protocol::noise::tai64::Tai64n;
use crate::protocol::peer::Peer;
use crate::protocol::session::Session;
use crate::protocol::timers::REKEY_TIMEOUT;
use crate::protocol::transmit::Transmit;

impl Device {
    pub(super) fn under_load(&self, now: Instant) -> bool {
        self.load.lock().under_load(now)
    }

    /// The receive thread's check before it queues a handshake message or cookie reply
    /// for the handshake worker: true for an initiation or response with a valid mac1,
    /// and for a cookie reply that answers a handshake message of ours still awaiting
    /// one. Anything else is counted and dropped here, so it never takes a place in the
    /// queue nor counts towards being under load. Takes no write lock.
    pub fn precheck_handshake(&self, msg: &[u8]) -> bool {
        match classify(msg) {
            Some(Kind::Initiation | Kind::Response) => {
                let ok = self
                    .config
                    .read()
                    .cookie
                    .as_ref()
                    .is_some_and(|c| c.mac1_ok(msg));
                if !ok {
                    self.drops.bad_mac1.fetch_add(1, Ordering::Relaxed);
                }
                ok
            }
            Some(Kind::CookieReply) => {
                let awaited = match self.index.read().get(&le32(msg, 4)) {
                    // Never waits on the worker (which may hold the lock through a DH):
                    // if it is busy, the worker checks the reply itself.
                    Some(IndexEntry::Handshake(p)) | Some(IndexEntry::Session(p, _)) => p
                        .handshake
                        .try_lock()
                        .is_none_or(|hs| hs.cookie.awaits_reply()),
                    None => false,
                };
                if !awaited {
                    self.drops.unexpected_cookie.fetch_add(1, Ordering::Relaxed);
                }
                awaited
            }
            Some(Kind::Data) | None => {
                self.drops.malformed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub(super) fn new_index(&self, entry: IndexEntry) -> u32 {
        let mut idx = self.index.write();
        loop {
            let i = crate::protocol::noise::crypto::random_u32();
            if let std::collections::hash_map::Entry::Vacant(v) = idx.entry(i) {
                v.insert(entry);
                drop(idx);
                self.changed();
                return i;
            }
        }
    }

    /// Sends a handshake initiation to `peer`, at most once per REKEY_TIMEOUT.
    pub(super) fn initiate(&self, peer: &Arc<Peer>, now: Instant, tx: &dyn Transmit, retry: bool) {
        let config = self.config.read();
        let Some(keys) = config.keys.as_ref() else {
            return;
        };
        let mut hs = peer.handshake.lock();
        if let Some(last) = hs.last_initiation_sent {
            if now.saturating_duration_since(last) < REKEY_TIMEOUT {
                return;
            }
        }
        if !retry {
            hs.timers.handshake_attempts = 0;
        }
        hs.answered = None;
        if let Some(old) = hs.pending.take() {
            self.index.write().remove(&old.local_index);
            self.changed();
        }
        let index = self.new_index(IndexEntry::Handshake(peer.clone()));
        let (mut msg, state) = match handshake::create_initiation(
            keys,
            &peer.public_key.0,
            hs.static_static.as_deref(),
            index,
            Tai64n::now(),
        ) {
            Ok(x) => x,
            Err(e) => {
                self.index.write().remove(&index);
                self.changed();
                tracing::debug!(peer = %peer.public_key.short(), "cannot initiate: {e}");
                return;
            }
        };
        hs.cookie.add_macs(&mut msg, now);
        hs.pending = Some(state);
        hs.last_initiation_sent = Some(now);
        hs.timers.on_handshake_initiated(now);
        hs.timers.on_authenticated_sent(now);
        drop(hs);
        drop(config);
        tracing::debug!(peer = %peer.public_key.short(), retry, "sending handshake initiation");
        if tx.send_to_peer(peer, &msg) {
            peer.count_tx(msg.len());
        }
    }

    /// Handles one datagram received from `src`. The buffer is decrypted in place; an IP
    /// packet for the TUN is returned as a range of it.
    pub fn receive_handshake(&self, src: Source, msg: &[u8], now: Instant, tx: &dyn Transmit) {
        match classify(msg) {
            None => {
                self.drops.malformed.fetch_add(1, Ordering::Relaxed);
            }
            Some(Kind::Data) => {
                // Data messages go through batches (`RxBatch`); one here is a caller's
                // mistake, and it is dropped as malformed rather than half-handled.
                self.drops.malformed.fetch_add(1, Ordering::Relaxed);
            }
            Some(Kind::CookieReply) => self.receive_cookie_reply(msg, now),
            Some(kind) => self.handshake_message(kind, src, msg, now, tx),
        }
    }

    pub(super) fn receive_cookie_reply(&self, msg: &[u8], now: Instant) {
        let entry = self.index.read().get(&le32(msg, 4)).cloned();
        let peer = match entry {
            Some(IndexEntry::Handshake(p)) | Some(IndexEntry::Session(p, _)) => p,
            None => {
                self.drops.unexpected_cookie.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if peer.handshake.lock().cookie.consume_reply(msg, now) {
            tracing::debug!(peer = %peer.public_key.short(), "got a cookie: the peer is under load");
        } else {
            self.drops.unexpected_cookie.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn handshake_message(
        &self,
        kind: Kind,
        src: Source,
        msg: &[u8],
        now: Instant,
        tx: &dyn Transmit,
    ) {
        let under_load = self.under_load(now);
        let config = self.config.read();
        let Some(checker) = config.cookie.as_ref() else {
            return;
        };
        match checker.check(msg, src.addr, now) {
            MacCheck::BadMac1 => {
                self.drops.bad_mac1.fetch_add(1, Ordering::Relaxed);
                return;
            }
            MacCheck::Mac1Only if under_load => {
                let reply = checker.reply(msg, src.addr, now);
                drop(config);
                self.drops
                    .cookie_replies_sent
                    .fetch_add(1, Ordering::Relaxed);
                tx.send_to(src, &reply);
                return;
            }
            MacCheck::Mac2Valid if under_load && !self.limiter.lock().allow(src.addr.ip(), now) => {
                self.drops.rate_limited.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
        let Some(keys) = config.keys.as_ref() else {
            return;
        };
        let outcome = match kind {
            Kind::Initiation => self.consume_initiation(&config, keys, src, msg, now),
            _ => self.consume_response(keys, src, msg, now),
        };
        drop(config);
        if outcome.is_some() {
            self.drops
                .handshakes_accepted
                .fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            None => {
                self.drops.bad_handshake.fetch_add(1, Ordering::Relaxed);
            }
            Some((peer, Some(resp))) => {
                if tx.send_to_peer(&peer, &resp) {
                    peer.count_tx(resp.len());
                }
            }
            Some((peer, None)) => {
                if self.flush_staged(&peer, now, tx) == 0 {
                    self.send_keepalive(&peer, now, tx);
                }
            }
        }
    }

    pub(super) fn consume_initiation(
        &self,
        config: &Config,
        keys: &StaticKeys,
        src: Source,
        msg: &[u8],
        now: Instant,
    ) -> Option<(
        Arc<Peer>,
        Option<[u8; crate::protocol::noise::messages::RESPONSE_LEN]>,
    )> {
        let mut found: Option<Arc<Peer>> = None;
        let consumed = handshake::consume_initiation(keys, msg, |pk| {
            let peer = config.peers.get(&Key(*pk))?;
            found = Some(peer.clone());
            Some(peer.handshake.lock().static_static.clone())
        });
        let (Ok(init), Some(peer)) = (consumed, found) else {
            return None;
        };
        let mut hs = peer.handshake.lock();
        if init.timestamp <= hs.last_timestamp {
            tracing::debug!(peer = %peer.public_key.short(), "initiation replayed (old timestamp)");
            return None;
        }
        if hs
            .last_initiation_consumed
            .is_some_and(|t| now.saturating_duration_since(t) < INITIATION_MIN_INTERVAL)
        {
            return None;
        }
        let timestamp = init.timestamp;
        let psk = hs.psk.clone();
        let index = self.new_index(IndexEntry::Handshake(peer.clone()));
        let (mut resp, keys) = match handshake::create_response(init, &psk, index) {
            Ok(x) => x,
            Err(_) => {
                self.index.write().remove(&index);
                self.changed();
                return None;
            }
        };
        hs.last_timestamp = timestamp;
        hs.last_initiation_consumed = Some(now);
        hs.cookie.add_macs(&mut resp, now);
        let session = Arc::new(Session::new(&keys, now));
        self.install_session(&peer, session, now);
        hs.timers.on_session_derived(now);
        hs.timers.on_authenticated_received(now);
        hs.timers.on_authenticated_sent(now);
        drop(hs);
        peer.saw_source(src, now);
        peer.count_rx(msg.len());
        tracing::debug!(peer = %peer.public_key.short(), from = %src.addr, "handshake initiation received, responding");
        Some((peer, Some(resp)))
    }

    pub(super) fn consume_response(
        &self,
        keys: &StaticKeys,
        src: Source,
        msg: &[u8],
        now: Instant,
    ) -> Option<(
        Arc<Peer>,
        Option<[u8; crate::protocol::noise::messages::RESPONSE_LEN]>,
    )> {
        let receiver = handshake::response_receiver(msg);
        let sender = handshake::response_sender(msg);
        let peer = match self.index.read().get(&receiver) {
            Some(IndexEntry::Handshake(p)) | Some(IndexEntry::Session(p, _)) => p.clone(),
            None => return None,
        };
        let mut hs = peer.handshake.lock();
        let first = hs
            .pending
            .as_ref()
            .is_some_and(|st| st.local_index == receiver);
        let again = !first
            && hs.answered.as_ref().is_some_and(|a| {
                a.state.local_index == receiver
                    && !a.responders.contains(&sender)
                    && a.responders.len() < 4
                    && now.saturating_duration_since(a.at) < REKEY_TIMEOUT
            });
        let state = match (first, again, &hs.pending, &hs.answered) {
            (true, _, Some(st), _) => st,
            (_, true, _, Some(a)) => &a.state,
            _ => return None,
        };
        let session_keys = handshake::consume_response(keys, state, &hs.psk, msg).ok()?;
        let session = Arc::new(Session::new(&session_keys, now));
        if again {
            if let Some(a) = hs.answered.as_mut() {
                a.responders.push(sender);
            }
            self.replace_current(&peer, session);
            drop(hs);
            peer.saw_source(src, now);
            peer.count_rx(msg.len());
            tracing::debug!(peer = %peer.public_key.short(), "the peer answered our initiation again (it got a copy on another path): using its latest session");
            return Some((peer, None));
        }
        if let Some(st) = hs.pending.take() {
            hs.answered = Some(crate::protocol::peer::Answered {
                state: st,
                at: now,
                responders: vec![sender],
            });
        }
        self.install_session(&peer, session, now);
        hs.timers.on_handshake_complete();
        hs.timers.on_session_derived(now);
        hs.timers.on_authenticated_received(now);
        hs.sent_lastminute_handshake = false;
        drop(hs);
        *peer.last_handshake.lock() = Some(SystemTime::now());
        peer.saw_source(src, now);
        peer.count_rx(msg.len());
        tracing::info!(peer = %peer.public_key.short(), endpoint = %src.addr, "handshake complete (we initiated)");
        Some((peer, None))
    }

    /// Replaces the current session by one with the same local index (a second response
    /// to the same initiation): nothing rotates, the index points at the new keys.
    pub(super) fn replace_current(&self, peer: &Arc<Peer>, session: Arc<Session>) {
        let mut idx = self.index.write();
        idx.insert(
            session.local_index,
            IndexEntry::Session(peer.clone(), session.clone()),
        );
        peer.sessions.write().current = Some(session);
        drop(idx);
        self.changed();
    }

    /// Puts a new session in its slot and forgets the index of those it pushes out, as
    /// the kernel does. As initiator, the new session becomes current at once; the one
    /// before it stays as previous (still accepted on receive), and if a session we
    /// answered is still unconfirmed (a simultaneous handshake), that one becomes
    /// previous instead of the current, so the peer's packets under it still open. As
    /// responder, the new session waits as next, unconfirmed until the initiator's first
    /// data packet; previous goes (next's confirmation would push it out anyway).
    pub(super) fn install_session(&self, peer: &Arc<Peer>, session: Arc<Session>, _now: Instant) {
        let mut idx = self.index.write();
        idx.insert(
            session.local_index,
            IndexEntry::Session(peer.clone(), session.clone()),
        );
        let mut s = peer.sessions.write();
        let dropped = if session.initiator {
            let old_prev = s.previous.take();
            let pushed_out = match s.next.take() {
                Some(next) => {
                    s.previous = Some(next);
                    s.current.take()
                }
                None => {
                    s.previous = s.current.take();
                    None
                }
            };
            s.current = Some(session);
            [old_prev, pushed_out]
        } else {
            [s.next.replace(session), s.previous.take()]
        };
        for d in dropped.into_iter().flatten() {
            idx.remove(&d.local_index);
        }
        drop((idx, s));
        self.changed();
    }

    /// If `session` is the peer's unconfirmed `next`, it becomes current.
    pub(super) fn confirm_if_next(&self, peer: &Arc<Peer>, session: &Arc<Session>) -> bool {
        {
            let s = peer.sessions.read();
            if !s.next.as_ref().is_some_and(|n| Arc::ptr_eq(n, session)) {
                return false;
            }
        }
        let mut idx = self.index.write();
        let mut s = peer.sessions.write();
        if !s.next.as_ref().is_some_and(|n| Arc::ptr_eq(n, session)) {
            return false;
        }
        if let Some(old) = s.previous.take() {
            idx.remove(&old.local_index);
        }
        s.previous = s.current.take();
        s.current = s.next.take();
        drop((idx, s));
        self.changed();
        true
    }
}
