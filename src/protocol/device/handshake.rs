//! Handshakes: initiations we send, handshake messages and cookie replies we receive,
//! and the sessions they install.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::multipath::path::Source;
use crate::protocol::device::{
    Config, Device, IndexEntry, INITIATION_MIN_INTERVAL, UNDER_LOAD_HANDSHAKES_PER_SEC,
};
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
        if let Some(forced) = *self.forced_load.lock() {
            return forced;
        }
        let mut l = self.load.lock();
        if now.saturating_duration_since(l.0) >= Duration::from_secs(1) {
            *l = (now, 0);
        }
        l.1 = l.1.saturating_add(1);
        l.1 > UNDER_LOAD_HANDSHAKES_PER_SEC
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
            hs.static_static,
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
            None => return,
        };
        if peer.handshake.lock().cookie.consume_reply(msg, now) {
            tracing::debug!(peer = %peer.public_key.short(), "got a cookie: the peer is under load");
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
        let mut config = self.config.write();
        let Some(checker) = config.cookie.as_mut() else {
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
            _ => {}
        }
        let config = parking_lot::RwLockWriteGuard::downgrade(config);
        let Some(keys) = config.keys.as_ref() else {
            return;
        };
        let outcome = match kind {
            Kind::Initiation => self.consume_initiation(&config, keys, src, msg, now),
            _ => self.consume_response(keys, src, msg, now),
        };
        drop(config);
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
            Some(peer.handshake.lock().static_static)
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
        let psk = hs.psk;
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

    /// Puts a new session in its slot and forgets the index of the one it pushes out.
    pub(super) fn install_session(&self, peer: &Arc<Peer>, session: Arc<Session>, _now: Instant) {
        let mut idx = self.index.write();
        idx.insert(
            session.local_index,
            IndexEntry::Session(peer.clone(), session.clone()),
        );
        let mut s = peer.sessions.write();
        let dropped = if session.initiator {
            let old_prev = s.previous.take();
            let old_next = s.next.take();
            s.previous = s.current.take();
            s.current = Some(session);
            [old_prev, old_next]
        } else {
            // Unconfirmed until the initiator's first data packet arrives.
            [s.next.replace(session), None]
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
