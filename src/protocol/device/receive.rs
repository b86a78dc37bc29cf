//! Data messages received in batches: the protocol half of the receive path, with its
//! locks taken once per batch, not once per packet.
//!
//! The receive thread first drops, uncopied, the copies the committed replay window
//! already holds ([`Device::known_copies`]: a header and counter check on the receive
//! buffer), and copies each other data message into an [`RxBatch`], in the order the
//! datagrams arrived (every path's copies together). The batch is then worked through
//! one run of datagrams of one session at a time, in two halves.
//! [`Device::decrypt_batch`] may run on any decryption worker, several batches at once:
//!
//! 1. drops what the replay window already holds (one lock for the run),
//! 2. pairs the copies inside the batch: a copy is decrypted only if the first one failed
//!    to (so a forged first copy cannot suppress the genuine one),
//! 3. opens the rest in place (no lock).
//!
//! [`Device::commit_batch`] must run on the batches in the order they were received
//! (the writer's turn, [`crate::datapath::queueing`]):
//!
//! 4. commits their counters (one lock): a copy that an earlier batch committed loses
//!    here, after authentication, as a duplicate. Because batches commit in receive
//!    order, the copy that arrived first is the one delivered, and a flow's packets keep
//!    their order even when both copies of a packet were opened by two workers at once;
//! 5. runs the peer's counters, endpoints and timers once for the run,
//!
//! and last checks each packet's inner source against a snapshot of the allowed IPs. The
//! packets for the TUN are the batch's first [`RxBatch::packets`] buffers, in the order
//! they arrived, each at [`PACKET_OFFSET`]. [`Device::open_batch`] does both halves at
//! once, for a receive thread that decrypts itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::multipath::path::{PathId, Source};
use crate::multipath::probe::{self, PROBE_LEN};
use crate::protocol::allowedips::AllowedIps;
use crate::protocol::device::{ip_info, Device, EpochCache};
use crate::protocol::noise::messages::{classify, le32, Kind, DATA_HEADER_LEN};
use crate::protocol::peer::Peer;
use crate::protocol::session::Session;
use crate::protocol::timers::{KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_TIMEOUT};
use crate::protocol::transmit::Transmit;

/// Where a decrypted packet starts in its buffer (after the data header it was opened
/// behind). The TUN layer writes its vnet header in front of it.
pub const PACKET_OFFSET: usize = DATA_HEADER_LEN;

/// Bytes reserved per buffer when a batch is made: room for a whole coalesced
/// super-packet, because the TUN layer coalesces a flow's packets into the first one's
/// buffer only where its capacity allows (without the room, every packet is written
/// alone and the kernel's stack runs once per packet). Pages never written stay
/// virtual.
const BUFFER_CAPACITY: usize = 2 * PACKET_OFFSET + 65535;

/// What became of one datagram of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not looked at yet.
    Fresh,
    /// A copy of the datagram at this position of the batch, decrypted only if that one
    /// failed.
    CopyOf(usize),
    /// Opened: the plaintext (with padding) is this long.
    Opened(usize),
    /// A copy of a packet already received; `authentic` if it was decrypted (it lost
    /// the commit to a copy opened elsewhere) and so proves its source.
    Duplicate { authentic: bool },
    /// Dropped (unknown index, expired session, bad tag, bad inner packet).
    Dropped,
}

/// One datagram's bookkeeping.
#[derive(Debug, Clone, Copy)]
struct Meta {
    src: Source,
    len: usize,
    counter: u64,
    /// Which of the batch's runs it belongs to.
    run: usize,
    state: State,
}

/// Per path, how many packets of a batch it delivered first, and how many copies it
/// brought that were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathTally {
    /// The path.
    pub path: PathId,
    /// Packets this path's copy was the one delivered.
    pub wins: u64,
    /// Copies dropped because another path's copy came first.
    pub duplicates: u64,
}

/// Datagrams of one session, next to each other in a batch.
struct Run {
    range: std::ops::Range<usize>,
    peer: Arc<Peer>,
    session: Arc<Session>,
}

/// A batch of received data messages, with buffers that are reused from batch to batch.
pub struct RxBatch {
    bufs: Vec<Vec<u8>>,
    meta: Vec<Meta>,
    ready: usize,
    /// Wins and duplicates per path, filled by [`Device::open_batch`].
    pub tally: Vec<PathTally>,
    /// The batch's place in the receive order, for the ordered writer.
    pub seq: u64,
    /// (counter, position) pairs, for pairing copies.
    pairs: Vec<(u64, usize)>,
    /// A run's distinct sources.
    sources: Vec<Source>,
    /// Paths whose duplicates were considered for endpoint learning in this run.
    learned: Vec<PathId>,
    /// The runs [`Device::decrypt_batch`] found, for [`Device::commit_batch`].
    runs: Vec<Run>,
    /// The allowed IPs the batch was decrypted under, for the inner source checks.
    allowed: Option<Arc<AllowedIps<Arc<Peer>>>>,
    /// mpwg messages (probes) the batch held instead of IP packets, for the path
    /// monitor: where each came from, its peer, and its plaintext.
    pub mpwg: Vec<(Source, Arc<Peer>, [u8; PROBE_LEN])>,
    /// Peers whose packets in the batch carried a hello (they are mpwg).
    pub hellos: Vec<Arc<Peer>>,
    /// Every counter the batch committed, in arrival order: (run, counter, where it
    /// came from, the packet's place in [`RxBatch::packets`] if it carried one for the
    /// TUN).
    order: Vec<(usize, u64, Source, Option<usize>)>,
}

impl RxBatch {
    /// An empty batch for up to `capacity` datagrams.
    pub fn new(capacity: usize) -> RxBatch {
        let capacity = capacity.max(1);
        RxBatch {
            bufs: (0..capacity)
                .map(|_| Vec::with_capacity(BUFFER_CAPACITY))
                .collect(),
            meta: Vec::with_capacity(capacity),
            ready: 0,
            tally: Vec::new(),
            seq: 0,
            pairs: Vec::with_capacity(capacity),
            sources: Vec::new(),
            learned: Vec::new(),
            runs: Vec::new(),
            allowed: None,
            mpwg: Vec::new(),
            hellos: Vec::new(),
            order: Vec::with_capacity(capacity),
        }
    }

    /// Datagrams in the batch.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// True if no datagram was added since the last [`RxBatch::clear`].
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// True if no more datagrams fit.
    pub fn is_full(&self) -> bool {
        self.meta.len() == self.bufs.len()
    }

    /// Copies a data message from `src` into the batch. Returns false, adding nothing,
    /// if the batch is full or the datagram is not a data message.
    pub fn push(&mut self, src: Source, datagram: &[u8]) -> bool {
        if classify(datagram) != Some(Kind::Data) {
            return false;
        }
        let i = self.meta.len();
        let Some(buf) = self.bufs.get_mut(i) else {
            return false;
        };
        buf.clear();
        buf.extend_from_slice(datagram);
        self.meta.push(Meta {
            src,
            len: datagram.len(),
            counter: 0,
            run: 0,
            state: State::Fresh,
        });
        true
    }

    /// The decrypted packets to write to the TUN, in the order they arrived: each at
    /// [`PACKET_OFFSET`] in its buffer, the buffer ending where the packet ends. The
    /// buffers may grow (the TUN layer coalesces into them); they stay the batch's.
    pub fn packets(&mut self) -> &mut [Vec<u8>] {
        &mut self.bufs[..self.ready]
    }

    /// Empties the batch for reuse, keeping its buffers.
    pub fn clear(&mut self) {
        self.meta.clear();
        self.ready = 0;
        self.tally.clear();
        self.runs.clear();
        self.allowed = None;
        self.mpwg.clear();
        self.hellos.clear();
        self.order.clear();
    }

    /// Every counter the batch committed, in arrival order, with its session, where it
    /// came from, and the packet's place in [`RxBatch::packets`] if it carried one for the TUN (not a
    /// keepalive, a probe, or an inner packet that was refused): what the receive side's
    /// reorder buffer needs to release striped packets in counter order.
    pub fn committed(&self) -> impl Iterator<Item = (&Arc<Session>, u64, Source, Option<usize>)> {
        self.order.iter().filter_map(|&(run, c, src, slot)| {
            self.runs.get(run).map(|r| (&r.session, c, src, slot))
        })
    }

    fn tally(&mut self, path: PathId, win: bool) {
        let i = match self.tally.iter().position(|t| t.path == path) {
            Some(i) => i,
            None => {
                self.tally.push(PathTally {
                    path,
                    wins: 0,
                    duplicates: 0,
                });
                self.tally.len() - 1
            }
        };
        if win {
            self.tally[i].wins += 1;
        } else {
            self.tally[i].duplicates += 1;
        }
    }
}

/// A receive worker's cache between batches: the sessions it has looked up, by
/// receiver index.
pub type RxCache = EpochCache<(u32, Arc<Peer>, Arc<Session>)>;

impl RxCache {
    /// The cache slot of the session named by `index`, looked up once per epoch.
    fn session(&mut self, device: &Device, index: u32) -> Option<usize> {
        if let Some(i) = self.sessions.iter().position(|s| s.0 == index) {
            return Some(i);
        }
        let (peer, session) = device.session_for_index(index)?;
        self.sessions.push((index, peer, session));
        Some(self.sessions.len() - 1)
    }
}

impl Device {
    /// What the receive thread checks before it copies anything out of the receive
    /// buffer: which datagrams of one receive (`payload`, `segment` bytes each, from
    /// `src`) are copies of a packet the session's committed replay window already
    /// holds. Those are marked in `known` (one entry per datagram) and counted as
    /// duplicates here ([`DropCounters::replayed`](crate::protocol::device::DropCounters::replayed));
    /// the caller drops them uncopied and adds the returned count to the path's
    /// duplicates. One cache lookup and one window lock per run of one session's
    /// datagrams, none per datagram.
    ///
    /// Only the committed window vouches, and it holds only counters of packets that
    /// were authenticated: a forged datagram with a fresh counter commits nothing, so it
    /// can never make the genuine one be dropped here (copies of packets not committed
    /// yet go into the batch, where step 2 pairs them). Not marked, so the batch handles
    /// them as before: datagrams of an unknown index or an expired session, and the
    /// copies of a run whose path and address want an endpoint refresh (step 5 may learn
    /// from one of them, after decrypting it).
    pub fn known_copies(
        &self,
        cache: &mut RxCache,
        src: Source,
        payload: &[u8],
        segment: usize,
        now: Instant,
        known: &mut Vec<bool>,
    ) -> u64 {
        let segment = segment.max(1);
        let n = payload.len().div_ceil(segment);
        known.clear();
        known.resize(n, false);
        let at = |k: usize| &payload[k * segment..payload.len().min((k + 1) * segment)];
        let data_index = |k: usize| {
            let d = at(k);
            (classify(d) == Some(Kind::Data)).then(|| le32(d, 4))
        };
        cache.refresh(self);
        let mut dups = 0;
        let mut k = 0;
        while k < n {
            let Some(index) = data_index(k) else {
                k += 1;
                continue;
            };
            let mut end = k + 1;
            while end < n && data_index(end) == Some(index) {
                end += 1;
            }
            let run = k..end;
            k = end;
            let Some(slot) = cache.session(self, index) else {
                continue;
            };
            let (_, peer, session) = &cache.sessions[slot];
            if now.saturating_duration_since(session.created) >= REJECT_AFTER_TIME {
                continue;
            }
            let mut found = 0;
            {
                let window = session.replay_window();
                for j in run.clone() {
                    if window.seen(Session::counter_of(at(j))) {
                        known[j] = true;
                        found += 1;
                    }
                }
            }
            if found > 0 && peer.endpoints.lock().wants_refresh(src.path, src.addr, now) {
                // The path may learn from a copy: the batch decides, as before.
                known[run].iter_mut().for_each(|m| *m = false);
                continue;
            }
            dups += found;
        }
        if dups > 0 {
            self.drops.replayed.fetch_add(dups, Ordering::Relaxed);
        }
        dups
    }

    /// Opens a batch of data messages in place: [`Device::decrypt_batch`] then
    /// [`Device::commit_batch`]. Afterwards [`RxBatch::packets`] holds what goes to the
    /// TUN and [`RxBatch::tally`] what each path contributed.
    pub fn open_batch(
        &self,
        batch: &mut RxBatch,
        cache: &mut RxCache,
        now: Instant,
        tx: &dyn Transmit,
    ) {
        self.decrypt_batch(batch, cache, now);
        self.commit_batch(batch, now, tx);
    }

    /// Steps 1 to 3 (see the module documentation): drops known copies and decrypts the
    /// rest in place. Batches may be decrypted in any order and at the same time.
    pub fn decrypt_batch(&self, batch: &mut RxBatch, cache: &mut RxCache, now: Instant) {
        cache.refresh(self);
        batch.runs.clear();
        batch.allowed = Some(cache.allowed.clone());
        let n = batch.meta.len();
        let mut start = 0;
        while start < n {
            let index = le32(&batch.bufs[start], 4);
            let mut end = start + 1;
            while end < n && le32(&batch.bufs[end], 4) == index {
                end += 1;
            }
            match cache.session(self, index) {
                Some(slot) => {
                    let (_, peer, session) = &cache.sessions[slot];
                    let r = batch.runs.len();
                    self.decrypt_run(batch, r, start..end, session, now);
                    batch.runs.push(Run {
                        range: start..end,
                        peer: peer.clone(),
                        session: session.clone(),
                    });
                }
                None => {
                    self.drops
                        .unknown_index
                        .fetch_add((end - start) as u64, Ordering::Relaxed);
                    for m in &mut batch.meta[start..end] {
                        m.state = State::Dropped;
                    }
                }
            }
            start = end;
        }
        // The runs hold what they need; an idle worker must not keep sessions alive.
        cache.end_batch();
    }

    /// Steps 4 and 5 and the inner checks, on a batch [`Device::decrypt_batch`] has
    /// opened. Must be called on batches in the order they were received. Handshake
    /// traffic this causes (a confirmed session's staged packets, a late rekey) goes out
    /// through `tx`.
    pub fn commit_batch(&self, batch: &mut RxBatch, now: Instant, tx: &dyn Transmit) {
        let runs = std::mem::take(&mut batch.runs);
        for run in &runs {
            self.commit_run(batch, run, now, tx);
        }
        batch.runs = runs;
        self.deliver(batch);
    }

    /// Steps 1 to 3 for the datagrams `run` of `session`, the batch's run number `r`.
    fn decrypt_run(
        &self,
        b: &mut RxBatch,
        r: usize,
        run: std::ops::Range<usize>,
        session: &Session,
        now: Instant,
    ) {
        if now.saturating_duration_since(session.created) >= REJECT_AFTER_TIME {
            for m in &mut b.meta[run] {
                m.state = State::Dropped;
            }
            return;
        }
        // 1. What the window already holds is a copy: no decryption.
        {
            let window = session.replay_window();
            for i in run.clone() {
                let m = &mut b.meta[i];
                m.run = r;
                m.counter = Session::counter_of(&b.bufs[i]);
                if window.seen(m.counter) {
                    m.state = State::Duplicate { authentic: false };
                }
            }
        }
        // 2. Copies inside the batch: the first is decrypted, the others wait on it.
        b.pairs.clear();
        b.pairs.extend(
            run.clone()
                .filter(|&i| b.meta[i].state == State::Fresh)
                .map(|i| (b.meta[i].counter, i)),
        );
        b.pairs.sort_unstable();
        let mut k = 0;
        while k < b.pairs.len() {
            // Sorted by (counter, position): the first of equal counters arrived first.
            let (counter, first) = b.pairs[k];
            k += 1;
            while k < b.pairs.len() && b.pairs[k].0 == counter {
                b.meta[b.pairs[k].1].state = State::CopyOf(first);
                k += 1;
            }
        }
        // 3. Open in place, without a lock.
        let mut bad = 0;
        for i in run.clone() {
            let try_it = match b.meta[i].state {
                State::Fresh => true,
                // Decrypted only if every earlier copy failed.
                State::CopyOf(f) => !matches!(b.meta[f].state, State::Opened(_)),
                _ => false,
            };
            if !try_it {
                if let State::CopyOf(_) = b.meta[i].state {
                    b.meta[i].state = State::Duplicate { authentic: false };
                }
                continue;
            }
            b.meta[i].state = match session.decrypt(&mut b.bufs[i]) {
                Ok(plain) => State::Opened(plain.len()),
                Err(_) => {
                    bad += 1;
                    State::Dropped
                }
            };
        }
        if bad > 0 {
            self.drops.bad_data.fetch_add(bad, Ordering::Relaxed);
        }
    }

    /// Steps 4 and 5 for one run of a decrypted batch.
    fn commit_run(&self, b: &mut RxBatch, run: &Run, now: Instant, tx: &dyn Transmit) {
        let Run {
            range,
            peer,
            session,
        } = run;
        // 4. Commit: a counter an earlier batch committed makes this a duplicate.
        {
            let mut window = session.replay_window();
            for m in &mut b.meta[range.clone()] {
                if let State::Opened(_) = m.state {
                    if !window.commit_at(m.counter, now) {
                        m.state = State::Duplicate { authentic: true };
                    }
                }
            }
        }
        // 5. Counters, sources, timers: once for the run.
        let (mut bytes, mut data, mut opened, mut dups) = (0, false, false, 0);
        b.sources.clear();
        b.learned.clear();
        for i in range.clone() {
            let m = b.meta[i];
            match m.state {
                State::Opened(len) => {
                    bytes += m.len;
                    data |= len > 0;
                    opened = true;
                    if !b.sources.contains(&m.src) {
                        b.sources.push(m.src);
                    }
                    b.tally(m.src.path, true);
                }
                State::Duplicate { authentic } => {
                    dups += 1;
                    b.tally(m.src.path, false);
                    // A path whose copies always lose the race still learns where the
                    // peer sends from: at most one check per path and run, and one
                    // decryption per path and second (the endpoint table's refresh);
                    // and only from a copy of a packet committed moments ago, so that a
                    // packet replayed later, from anywhere, teaches nothing.
                    if b.learned.contains(&m.src.path) {
                        continue;
                    }
                    b.learned.push(m.src.path);
                    let learn = peer
                        .endpoints
                        .lock()
                        .wants_refresh(m.src.path, m.src.addr, now);
                    if learn && session.copy_teaches(&mut b.bufs[i], authentic, now) {
                        peer.saw_copy(m.src, now);
                    }
                }
                _ => {}
            }
        }
        if dups > 0 {
            self.drops.replayed.fetch_add(dups, Ordering::Relaxed);
        }
        if opened {
            let sources = std::mem::take(&mut b.sources);
            self.on_authenticated(peer, session, &sources, bytes, data, now, tx);
            b.sources = sources;
        }
    }

    /// Checks the inner packets and moves those for the TUN to the front, in order.
    fn deliver(&self, b: &mut RxBatch) {
        let mut ready = 0;
        let Some(allowed) = b.allowed.take() else {
            b.ready = 0;
            return;
        };
        b.order.clear();
        for i in 0..b.meta.len() {
            let State::Opened(len) = b.meta[i].state else {
                continue;
            };
            let (run, counter, src) = (b.meta[i].run, b.meta[i].counter, b.meta[i].src);
            if len == 0 {
                b.order.push((run, counter, src, None));
                continue; // a keepalive
            }
            let peer = &b.runs[run].peer;
            let plain = &b.bufs[i][PACKET_OFFSET..PACKET_OFFSET + len];
            if probe::is_mpwg(plain) {
                // An mpwg probe, not an IP packet: for the path monitor.
                if let Ok(p) = <[u8; PROBE_LEN]>::try_from(plain) {
                    b.mpwg.push((b.meta[i].src, peer.clone(), p));
                }
                // Sent on one path only, it is no path's win over another.
                if let Some(t) = b.tally.iter_mut().find(|t| t.path == src.path) {
                    t.wins = t.wins.saturating_sub(1);
                }
                b.meta[i].state = State::Dropped;
                b.order.push((run, counter, src, None));
                continue;
            }
            match self.inner_packet(&allowed, peer, plain) {
                Some(ip_len) => {
                    if probe::has_hello(plain, ip_len)
                        && !b.hellos.iter().any(|h| Arc::ptr_eq(h, peer))
                    {
                        b.hellos.push(peer.clone());
                    }
                    b.bufs[i].truncate(PACKET_OFFSET + ip_len);
                    b.bufs.swap(ready, i);
                    b.order.push((run, counter, src, Some(ready)));
                    ready += 1;
                }
                None => {
                    b.meta[i].state = State::Dropped;
                    b.order.push((run, counter, src, None));
                }
            }
        }
        b.ready = ready;
        b.allowed = Some(allowed);
    }

    /// What follows authenticated data from `peer` on `session`: the byte counter, the
    /// peer's sources (where it roams), confirming a `next` session, the timers, and the
    /// one late rekey. Called once per datagram by [`Device::receive`], and once per run
    /// of one session's datagrams by [`Device::open_batch`]: `bytes` is the datagrams'
    /// total, `data` whether any carried a packet (not a keepalive).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_authenticated(
        &self,
        peer: &Arc<Peer>,
        session: &Arc<Session>,
        sources: &[Source],
        bytes: usize,
        data: bool,
        now: Instant,
        tx: &dyn Transmit,
    ) {
        peer.count_rx(bytes);
        for src in sources {
            peer.saw_source(*src, now);
        }
        let confirmed = self.confirm_if_next(peer, session);
        let late_rekey = {
            let mut hs = peer.handshake.lock();
            if confirmed {
                hs.timers.on_handshake_complete();
            }
            hs.timers.on_authenticated_received(now);
            if data {
                hs.timers.on_data_received(now);
            }
            let late = session.initiator
                && now.saturating_duration_since(session.created)
                    > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
                && !hs.sent_lastminute_handshake;
            if late {
                hs.sent_lastminute_handshake = true;
            }
            late
        };
        if confirmed {
            *peer.last_handshake.lock() = Some(SystemTime::now());
            if let Some(src) = sources.first() {
                tracing::info!(peer = %peer.public_key.short(), endpoint = %src.addr, "handshake complete (peer initiated)");
            }
            self.flush_staged(peer, now, tx);
        }
        if late_rekey {
            self.initiate(peer, now, tx, false);
        }
    }

    /// Checks a decrypted packet (`plain`, with its padding) from `peer`: it must be IP,
    /// no longer than what arrived, and its source in the peer's allowed IPs. Returns the
    /// packet's length without padding; counts a drop otherwise.
    pub(crate) fn inner_packet(
        &self,
        allowed: &AllowedIps<Arc<Peer>>,
        peer: &Arc<Peer>,
        plain: &[u8],
    ) -> Option<usize> {
        let Some((src_ip, ip_len)) = ip_info(plain, false) else {
            self.drops.bad_source.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let ok = allowed.lookup(src_ip).is_some_and(|p| Arc::ptr_eq(p, peer));
        if !ok || ip_len > plain.len() || ip_len == 0 {
            self.drops.bad_source.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(peer = %peer.public_key.short(), %src_ip, "inner source not in the peer's allowed IPs");
            return None;
        }
        Some(ip_len)
    }
}
