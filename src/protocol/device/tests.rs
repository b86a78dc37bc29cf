//! The device against itself: two devices, A and B, joined by captures, time passed in
//! by hand (a fake clock). The protocol's edge cases, key erasure, reloads that must
//! disturb nothing, endpoint learning from copies, and handshakes under load.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::multipath::path::Source;
use crate::protocol::device::{Device, RxBatch, RxCache, SealedFor, SendCache, PACKET_OFFSET};
use crate::protocol::key::Key;
use crate::protocol::noise::cookie::CookieState;
use crate::protocol::noise::messages::{classify, Kind, INITIATION_LEN};
use crate::protocol::peer::Peer;
use crate::protocol::request::{PeerUpdate, SetRequest};
use crate::protocol::session::{Session, HEADROOM, TAILROOM};
use crate::protocol::timers::{MAX_JITTER, REJECT_AFTER_TIME, REKEY_TIMEOUT};
use crate::protocol::transmit::Transmit;

/// What a device sent: (to a source, or to the peer), the datagram.
#[derive(Default)]
struct Capture(Mutex<Vec<(Option<Source>, Vec<u8>)>>);

impl Transmit for Capture {
    fn send_to_peer(&self, _peer: &Peer, d: &[u8]) -> bool {
        self.0.lock().push((None, d.to_vec()));
        true
    }
    fn send_to(&self, dst: Source, d: &[u8]) -> bool {
        self.0.lock().push((Some(dst), d.to_vec()));
        true
    }
}

impl Capture {
    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.0.lock())
            .into_iter()
            .map(|(_, d)| d)
            .collect()
    }
}

fn at(s: &str, path: usize) -> Source {
    Source {
        addr: s.parse().unwrap(),
        path,
        local: None,
    }
}

const A_ADDR: &str = "192.0.2.1:51820";
const B_ADDR: &str = "192.0.2.2:51820";

/// One side: a device, its capture, its TX cache.
struct Side {
    dev: Device,
    cap: Capture,
    key: Key,
    cache: Mutex<SendCache>,
    rx: Mutex<RxCache>,
}

/// The request that configures `me` with `other` as its peer.
fn config(me: &Key, other: &Key, other_tun: &str, other_addr: &str) -> SetRequest {
    let mut u = PeerUpdate::new(other.public_key());
    u.endpoint = Some(other_addr.parse().unwrap());
    u.replace_allowed_ips = true;
    u.allowed_ips = vec![other_tun.parse().unwrap()];
    u.preshared_key = Some(Key([9; 32]));
    SetRequest {
        private_key: Some(*me),
        listen_port: Some(51820),
        peers: vec![u],
        ..SetRequest::default()
    }
}

fn ipv4(from: [u8; 4], to: [u8; 4], body: &[u8]) -> Vec<u8> {
    let total = 20 + body.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[12..16].copy_from_slice(&from);
    p[16..20].copy_from_slice(&to);
    p.extend_from_slice(body);
    p
}

const A_TUN: [u8; 4] = [10, 0, 0, 1];
const B_TUN: [u8; 4] = [10, 0, 0, 2];

impl Side {
    fn new(key: Key, other: &Key, other_tun: &str, other_addr: &str, now: Instant) -> Side {
        let dev = Device::new(1420);
        dev.apply(&config(&key, other, other_tun, other_addr), now)
            .unwrap();
        Side {
            dev,
            cap: Capture::default(),
            key,
            cache: Mutex::new(SendCache::default()),
            rx: Mutex::new(RxCache::default()),
        }
    }

    fn peer(&self) -> Arc<Peer> {
        self.dev.peers()[0].clone()
    }

    /// Sends an IP packet from the TUN side, as a TX worker does (one batch); returns
    /// the sealed datagram, if it was sealed.
    fn send(&self, pkt: &[u8], now: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; HEADROOM + pkt.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
        let mut cache = self.cache.lock();
        let out = match self
            .dev
            .seal_cached(&mut buf, pkt.len(), now, &self.cap, &mut cache)
        {
            SealedFor::Ready(peer, n) => {
                let peer = peer.clone();
                self.dev.note_sent(&peer, n, 1, true, now, &self.cap);
                Some(buf[..n].to_vec())
            }
            _ => None,
        };
        cache.end_batch();
        out
    }

    /// Receives datagrams as the daemon does: handshake messages one by one, data
    /// messages as one batch. Returns the IP packets for the TUN.
    fn recv(&self, from: Source, datagrams: &[Vec<u8>], now: Instant) -> Vec<Vec<u8>> {
        self.recv_counted(from, datagrams, now).0
    }

    /// [`Side::recv`], also returning how many data messages were copied into the batch
    /// (the others were known copies, dropped before: [`Device::known_copies`], each
    /// datagram its own receive, as the receive thread sees them without GRO).
    fn recv_counted(
        &self,
        from: Source,
        datagrams: &[Vec<u8>],
        now: Instant,
    ) -> (Vec<Vec<u8>>, usize) {
        let mut b = RxBatch::new(datagrams.len().max(1));
        let mut known = Vec::new();
        for d in datagrams {
            self.dev
                .known_copies(&mut self.rx.lock(), from, d, d.len(), now, &mut known);
            if known[0] {
                continue;
            }
            if classify(d) == Some(Kind::Data) {
                b.push(from, d);
            } else {
                self.dev.receive_handshake(from, d, now, &self.cap);
            }
        }
        let copied = b.len();
        self.dev
            .open_batch(&mut b, &mut self.rx.lock(), now, &self.cap);
        let packets = b
            .packets()
            .iter()
            .map(|p| p[PACKET_OFFSET..].to_vec())
            .collect();
        (packets, copied)
    }
}

/// A and B configured for each other.
fn sides(now: Instant) -> (Side, Side) {
    let (ka, kb) = (Key::generate(), Key::generate());
    let a = Side::new(ka, &kb, "10.0.0.2/32", B_ADDR, now);
    let b = Side::new(kb, &ka, "10.0.0.1/32", A_ADDR, now);
    (a, b)
}

/// A and B after a handshake A started, confirmed by A's first packet.
fn tunnel(now: Instant) -> (Side, Side) {
    let (a, b) = sides(now);
    assert!(a.send(&ipv4(A_TUN, B_TUN, b"hello"), now).is_none());
    let init = a.cap.take();
    b.recv(at(A_ADDR, 0), &init, now);
    let resp = b.cap.take();
    a.recv(at(B_ADDR, 0), &resp, now);
    let data = a.cap.take();
    assert_eq!(
        b.recv(at(A_ADDR, 0), &data, now).len(),
        1,
        "the staged packet"
    );
    (a, b)
}

fn weak_sessions(p: &Peer) -> Vec<Weak<Session>> {
    p.sessions.read().all().map(Arc::downgrade).collect()
}

#[test]
fn an_unanswered_handshake_sends_20_initiations_then_frees_its_index() {
    let t0 = Instant::now();
    let (a, _b) = sides(t0);
    assert!(a.send(&ipv4(A_TUN, B_TUN, b"x"), t0).is_none());
    let mut initiations = a.cap.take().len();
    let mut now = t0;
    for _ in 0..40 {
        now += REKEY_TIMEOUT + MAX_JITTER;
        a.dev.handle_timeout(now, &a.cap);
        initiations += a.cap.take().len();
    }
    assert_eq!(
        initiations, 20,
        "the kernel's count: the first and 19 retries"
    );
    assert!(a.peer().handshake.lock().pending.is_none());
    assert_eq!(a.dev.index_entries(), 0, "given up: no index entry left");
    // Removing the peer then lets it go: nothing else holds it.
    let weak = Arc::downgrade(&a.peer());
    let mut rm = PeerUpdate::new(a.peer().public_key);
    rm.remove = true;
    a.dev
        .apply(
            &SetRequest {
                peers: vec![rm],
                ..SetRequest::default()
            },
            now,
        )
        .unwrap();
    assert!(weak.upgrade().is_none(), "a removed peer stays alive");
}

#[test]
fn simultaneous_handshakes_lose_no_data() {
    let now = Instant::now();
    let (a, b) = sides(now);
    assert!(a.send(&ipv4(A_TUN, B_TUN, b"from a"), now).is_none());
    assert!(b.send(&ipv4(B_TUN, A_TUN, b"from b"), now).is_none());
    let (init_a, init_b) = (a.cap.take(), b.cap.take());
    // Both initiations cross: each side answers the other's (a `next` each)...
    a.recv(at(B_ADDR, 0), &init_b, now);
    b.recv(at(A_ADDR, 0), &init_a, now);
    let (resp_a, resp_b) = (a.cap.take(), b.cap.take());
    // ...then each takes the response to its own, and sends its staged packet on it.
    a.recv(at(B_ADDR, 0), &resp_b, now);
    b.recv(at(A_ADDR, 0), &resp_a, now);
    let (data_a, data_b) = (a.cap.take(), b.cap.take());
    // B's packet is sealed for the session A answered: A kept it (as previous).
    let got_a = a.recv(at(B_ADDR, 0), &data_b, now);
    let got_b = b.recv(at(A_ADDR, 0), &data_a, now);
    assert_eq!(got_a, vec![ipv4(B_TUN, A_TUN, b"from b")]);
    assert_eq!(got_b, vec![ipv4(A_TUN, B_TUN, b"from a")]);
}

#[test]
fn after_reject_after_time_x3_no_key_material_is_left() {
    let t0 = Instant::now();
    let (a, b) = tunnel(t0);
    // One packet each way, then silence (what the peer sends is never delivered).
    let d = a.send(&ipv4(A_TUN, B_TUN, b"one"), t0).unwrap();
    b.recv(at(A_ADDR, 0), &[d], t0);
    let d = b.send(&ipv4(B_TUN, A_TUN, b"two"), t0).unwrap();
    a.recv(at(B_ADDR, 0), &[d], t0);
    let (wa, wb) = (weak_sessions(&a.peer()), weak_sessions(&b.peer()));
    assert!(!wa.is_empty() && !wb.is_empty());
    let mut now = t0;
    while now < t0 + REJECT_AFTER_TIME * 3 + Duration::from_secs(1) {
        now += Duration::from_millis(500);
        a.dev.handle_timeout(now, &a.cap);
        b.dev.handle_timeout(now, &b.cap);
        a.cap.take();
        b.cap.take();
    }
    for (side, weak) in [(&a, &wa), (&b, &wb)] {
        let p = side.peer();
        assert_eq!(p.sessions.read().all().count(), 0, "a session is left");
        let hs = p.handshake.lock();
        assert!(hs.pending.is_none() && hs.answered.is_none());
        drop(hs);
        assert_eq!(side.dev.index_entries(), 0);
        // No cache (the TX worker's, the receive side's) keeps one alive: the last
        // reference is gone, so each session's keys were wiped when it was dropped.
        assert!(
            weak.iter().all(|w| w.upgrade().is_none()),
            "a session is still alive"
        );
        assert_eq!(side.cache.lock().held(), 0);
        assert_eq!(side.rx.lock().held(), 0);
    }
}

#[test]
fn the_same_configuration_again_disturbs_nothing() {
    let t0 = Instant::now();
    let (a, b) = tunnel(t0);
    let peer = b.peer();
    let before = peer.sessions.read().current.clone().unwrap();
    let epoch = b.dev.epoch();
    // A copy on a second path from the peer's other address: learned for that path.
    let d = a.send(&ipv4(A_TUN, B_TUN, b"p"), t0).unwrap();
    b.recv(at(A_ADDR, 0), std::slice::from_ref(&d), t0);
    b.recv(at("192.0.2.11:51820", 1), &[d], t0);
    let seen = peer.endpoints.lock().seen(t0);
    // What `wg syncconf` of an unchanged file sends, and `wg setconf` (replace_peers).
    let same = config(&b.key, &a.key, "10.0.0.1/32", A_ADDR);
    let mut setconf = same.clone();
    setconf.replace_peers = true;
    for req in [&same, &setconf] {
        b.dev.apply(req, t0 + Duration::from_secs(1)).unwrap();
        let now = peer.sessions.read().current.clone().unwrap();
        assert!(Arc::ptr_eq(&before, &now), "the session was replaced");
        assert_eq!(b.dev.epoch(), epoch, "the caches were flushed for nothing");
        assert_eq!(peer.endpoints.lock().seen(t0), seen, "endpoints forgotten");
        assert!(Arc::ptr_eq(&peer, &b.peer()), "the peer was recreated");
    }
    // And the tunnel carries on without a handshake.
    let d = b.send(&ipv4(B_TUN, A_TUN, b"still"), t0).unwrap();
    assert!(
        b.cap.take().is_empty(),
        "something was sent: an initiation?"
    );
    assert_eq!(a.recv(at(B_ADDR, 0), &[d], t0).len(), 1);
    // A new private key is a change: every session goes.
    let mut other = same.clone();
    other.private_key = Some(Key::generate());
    b.dev.apply(&other, t0).unwrap();
    assert!(peer.sessions.read().current.is_none());
}

#[test]
fn a_persistent_keepalive_fires_on_a_set_only_when_turned_on() {
    let t0 = Instant::now();
    let (a, b) = tunnel(t0);
    let mut req = config(&b.key, &a.key, "10.0.0.1/32", A_ADDR);
    req.peers[0].persistent_keepalive = Some(25);
    let sent = |now| {
        b.dev.handle_timeout(now, &b.cap);
        b.cap.take().len()
    };
    let t1 = t0 + Duration::from_secs(1);
    b.dev.apply(&req, t1).unwrap();
    assert_eq!(sent(t1), 1, "off to on: a keepalive at once");
    let t2 = t1 + Duration::from_secs(2);
    b.dev.apply(&req, t2).unwrap();
    assert_eq!(sent(t2), 0, "the same interval again: nothing");
    assert_eq!(sent(t1 + Duration::from_secs(25)), 1, "then every 25 s");
}

#[test]
fn a_cookie_reply_replayed_later_does_not_renew_the_cookie() {
    let t0 = Instant::now();
    let (a, b) = sides(t0);
    b.dev.force_under_load(Some(true));
    assert!(a.send(&ipv4(A_TUN, B_TUN, b"x"), t0).is_none());
    b.recv(at(A_ADDR, 0), &a.cap.take(), t0);
    let reply = b.cap.take();
    assert_eq!(reply.len(), 1);
    assert_eq!(classify(&reply[0]), Some(Kind::CookieReply));
    a.recv(at(B_ADDR, 0), &reply, t0);
    let refused = a
        .dev
        .drops
        .unexpected_cookie
        .load(std::sync::atomic::Ordering::Relaxed);
    // 100 s later, someone replays the reply.
    a.recv(at(B_ADDR, 0), &reply, t0 + Duration::from_secs(100));
    assert_eq!(
        a.dev
            .drops
            .unexpected_cookie
            .load(std::sync::atomic::Ordering::Relaxed),
        refused + 1
    );
    // The cookie (120 s) has expired by its first date: no mac2 on the next initiation.
    let later = t0 + Duration::from_secs(121);
    a.dev.handle_timeout(later, &a.cap);
    let mut init: Vec<Vec<u8>> = a.cap.take();
    init.retain(|d| d.len() == INITIATION_LEN);
    assert!(!init.is_empty(), "a retry was due");
    assert!(init.iter().all(|m| m[INITIATION_LEN - 16..] == [0; 16]));
}

#[test]
fn an_inner_ipv4_total_length_below_20_is_dropped() {
    let t0 = Instant::now();
    let (a, b) = tunnel(t0);
    let session = a.peer().sessions.read().current.clone().unwrap();
    for total in [0u16, 1, 19, 20] {
        let mut pkt = ipv4(A_TUN, B_TUN, b"");
        pkt[2..4].copy_from_slice(&total.to_be_bytes());
        let mut buf = vec![0u8; HEADROOM + pkt.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + 20].copy_from_slice(&pkt);
        let n = session.seal(&mut buf, 20, 1420).unwrap();
        let got = b.recv(at(A_ADDR, 0), &[buf[..n].to_vec()], t0);
        assert_eq!(got.len(), usize::from(total == 20), "total length {total}");
    }
}

#[test]
fn copies_teach_a_path_only_when_fresh_and_never_the_endpoint() {
    let t0 = Instant::now();
    let (a, b) = tunnel(t0);
    let peer = b.peer();
    let ms = Duration::from_millis;
    let d = a.send(&ipv4(A_TUN, B_TUN, b"captured"), t0).unwrap();
    b.recv(at(A_ADDR, 0), std::slice::from_ref(&d), t0);
    // The genuine copy on path 1, 20 ms later: path 1 learns where A sends from.
    b.recv(
        at("192.0.2.21:51820", 1),
        std::slice::from_ref(&d),
        t0 + ms(20),
    );
    // An attacker replays the captured packet from a third address, a second later.
    for i in 1..=3u64 {
        b.recv(
            at("198.51.100.66:40000", 1),
            std::slice::from_ref(&d),
            t0 + ms(1000 * i),
        );
    }
    let now = t0 + ms(3100);
    let e = peer.endpoints.lock();
    assert_eq!(
        e.current(),
        Some(A_ADDR.parse().unwrap()),
        "a copy moved the endpoint"
    );
    let p1: Vec<SocketAddr> = e
        .destinations(1, now, Duration::from_secs(15))
        .iter()
        .collect();
    assert_eq!(p1, vec!["192.0.2.21:51820".parse::<SocketAddr>().unwrap()]);
    assert!(
        !e.seen(now).iter().any(|(_, a, _)| a.port() == 40000),
        "the replayed copy taught an address: {:?}",
        e.seen(now)
    );
}

#[test]
fn under_load_valid_mac2_is_rate_limited_per_source() {
    let t0 = Instant::now();
    let (_a, b) = sides(t0);
    let b_pub = b.key.public_key();
    b.dev
        .note_handshake_backlog(crate::protocol::ratelimit::UNDER_LOAD_BACKLOG, t0);
    let drops = &b.dev.drops;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    for (i, from) in ["198.51.100.1:1000", "198.51.100.2:1000"]
        .iter()
        .enumerate()
    {
        // A flooder that decrypts its cookie: one initiation, the reply, then 100 with
        // a valid mac2 at the same instant.
        let mut cookie = CookieState::new(&b_pub.0);
        let mut msg = [0u8; INITIATION_LEN];
        msg[0] = 1;
        msg[8] = i as u8 + 1;
        cookie.add_macs(&mut msg, t0);
        b.dev.receive_handshake(at(from, 0), &msg, t0, &b.cap);
        let reply = b.cap.take();
        assert_eq!(reply.len(), 1, "a cookie reply");
        assert!(cookie.consume_reply(&reply[0], t0));
        let (processed, limited) = (load(&drops.bad_handshake), load(&drops.rate_limited));
        for _ in 0..100 {
            cookie.add_macs(&mut msg, t0);
            b.dev.receive_handshake(at(from, 0), &msg, t0, &b.cap);
        }
        assert!(b.cap.take().is_empty(), "mac2 was valid: no more cookies");
        assert_eq!(
            load(&drops.bad_handshake) - processed,
            5,
            "the burst is processed"
        );
        assert_eq!(load(&drops.rate_limited) - limited, 95);
    }
    // A second after the queue was last deep, the device is no longer under load.
    assert!(!b.dev.under_load(t0 + Duration::from_secs(1)));
}

#[test]
fn a_set_that_changes_one_peer_disturbs_no_other() {
    let t0 = Instant::now();
    let (a, b) = tunnel(t0);
    let peer_a = b.peer();
    let session = peer_a.sessions.read().current.clone().unwrap();
    let endpoints = peer_a.endpoints.lock().seen(t0);
    let c = Key::generate().public_key();
    let a_untouched = |what: &str| {
        assert!(Arc::ptr_eq(&peer_a, &b.peer()), "{what}: A was recreated");
        let now = peer_a.sessions.read().current.clone().unwrap();
        assert!(
            Arc::ptr_eq(&session, &now),
            "{what}: A's session was replaced"
        );
        assert_eq!(peer_a.endpoints.lock().seen(t0), endpoints, "{what}");
        assert_eq!(
            peer_a.endpoint_addr(),
            Some(A_ADDR.parse().unwrap()),
            "{what}"
        );
        let route = b.dev.allowed().lookup("10.0.0.1".parse().unwrap()).cloned();
        assert!(
            route.is_some_and(|p| Arc::ptr_eq(&p, &peer_a)),
            "{what}: A's route"
        );
    };
    // Add a peer C, then change everything C has, then remove it: A never notices.
    let mut add = PeerUpdate::new(c);
    add.endpoint = Some("192.0.2.3:51820".parse().unwrap());
    add.allowed_ips = vec!["10.0.0.3/32".parse().unwrap()];
    let mut change = PeerUpdate::new(c);
    change.endpoint = Some("192.0.2.33:51820".parse().unwrap());
    change.preshared_key = Some(Key([7; 32]));
    change.persistent_keepalive = Some(25);
    change.replace_allowed_ips = true;
    change.allowed_ips = vec!["10.0.3.0/24".parse().unwrap()];
    let mut remove = PeerUpdate::new(c);
    remove.remove = true;
    for (what, u) in [
        ("adding C", add),
        ("changing C", change),
        ("removing C", remove),
    ] {
        let req = SetRequest {
            peers: vec![u],
            ..SetRequest::default()
        };
        b.dev.apply(&req, t0 + Duration::from_secs(1)).unwrap();
        a_untouched(what);
        let to_c = b.dev.allowed().lookup("10.0.3.1".parse().unwrap()).cloned();
        assert_eq!(
            to_c.map(|p| p.public_key),
            (what == "changing C").then_some(c),
            "{what}: C's allowed IPs"
        );
        // Data flows both ways on the same session, and B starts no handshake.
        let d = a.send(&ipv4(A_TUN, B_TUN, what.as_bytes()), t0).unwrap();
        assert_eq!(b.recv(at(A_ADDR, 0), &[d], t0).len(), 1, "{what}");
        let d = b.send(&ipv4(B_TUN, A_TUN, what.as_bytes()), t0).unwrap();
        assert!(b.cap.take().is_empty(), "{what}: B sent something else");
        assert_eq!(a.recv(at(B_ADDR, 0), &[d], t0).len(), 1, "{what}");
    }
    assert_eq!(b.dev.peers().len(), 1);
}

#[test]
fn a_replayed_initiation_or_response_changes_nothing() {
    let t0 = Instant::now();
    let (a, b) = sides(t0);
    assert!(a.send(&ipv4(A_TUN, B_TUN, b"x"), t0).is_none());
    let init = a.cap.take();
    b.recv(at(A_ADDR, 0), &init, t0);
    let resp = b.cap.take();
    a.recv(at(B_ADDR, 0), &resp, t0);
    let data = a.cap.take();
    assert_eq!(b.recv(at(A_ADDR, 0), &data, t0).len(), 1);
    let current = |s: &Side| s.peer().sessions.read().current.clone().unwrap();
    let (sa, sb) = (current(&a), current(&b));
    let (ia, ib) = (a.dev.index_entries(), b.dev.index_entries());
    // Both messages replayed, later and from an attacker's address.
    let later = t0 + Duration::from_secs(2);
    let attacker = at("198.51.100.9:4000", 1);
    b.recv(attacker, &init, later);
    a.recv(attacker, &resp, later);
    assert!(b.cap.take().is_empty(), "B answered a replayed initiation");
    assert!(a.cap.take().is_empty(), "A answered a replayed response");
    for (s, was, idx) in [(&a, &sa, ia), (&b, &sb, ib)] {
        assert!(Arc::ptr_eq(was, &current(s)), "a replay replaced a session");
        assert_eq!(s.dev.index_entries(), idx, "a replay took an index");
        let seen = s.peer().endpoints.lock().seen(later);
        assert!(
            !seen.iter().any(|(_, addr, _)| addr.port() == 4000),
            "a replay taught an address: {seen:?}"
        );
    }
    assert_eq!(b.peer().endpoint_addr(), Some(A_ADDR.parse().unwrap()));
    assert_eq!(a.peer().endpoint_addr(), Some(B_ADDR.parse().unwrap()));
    // The tunnel carries on.
    let d = a.send(&ipv4(A_TUN, B_TUN, b"on"), later).unwrap();
    assert_eq!(b.recv(at(A_ADDR, 0), &[d], later).len(), 1);
}

#[test]
fn a_set_past_the_allowed_ips_limit_is_refused_whole() {
    use crate::protocol::cidr::Cidr;
    use crate::protocol::device::{ApplyError, MAX_ALLOWED_IPS};
    let t0 = Instant::now();
    let (a, b) = tunnel(t0);
    let prefixes = |n: usize| -> Vec<Cidr> {
        (0..n as u128)
            .map(|i| {
                Cidr::new(
                    std::net::Ipv6Addr::from((0xfd00u128 << 112) | i).into(),
                    128,
                )
            })
            .collect::<Result<_, _>>()
            .unwrap()
    };
    // B holds A's one prefix: one more than the limit's remainder is too many...
    let c = Key::generate().public_key();
    let mut u = PeerUpdate::new(c);
    u.endpoint = Some("192.0.2.3:51820".parse().unwrap());
    u.allowed_ips = prefixes(MAX_ALLOWED_IPS);
    let mut req = SetRequest {
        fwmark: Some(7),
        peers: vec![u],
        ..SetRequest::default()
    };
    let err = b.dev.apply(&req, t0).unwrap_err();
    assert_eq!(
        err,
        ApplyError::TooManyAllowedIps {
            would: MAX_ALLOWED_IPS + 1,
            limit: MAX_ALLOWED_IPS
        }
    );
    assert!(err.to_string().contains("limit of 1048576"), "{err}");
    // ...and nothing of it was applied: no peer, no mark, A's session and route as before.
    assert_eq!(b.dev.peers().len(), 1);
    assert_eq!(b.dev.fwmark(), 0);
    assert_eq!(b.dev.allowed().len(), 1);
    let d = a.send(&ipv4(A_TUN, B_TUN, b"still"), t0).unwrap();
    assert_eq!(b.recv(at(A_ADDR, 0), &[d], t0).len(), 1);
    // Replacing A's prefixes instead of adding to them makes room (checked, not applied:
    // a million prefixes is what the limit is for).
    req.peers[0].public_key = a.key.public_key();
    req.peers[0].replace_allowed_ips = true;
    assert_eq!(b.dev.check(&req), Ok(()));
}

#[test]
fn a_copy_the_window_holds_is_dropped_uncopied_and_a_forgery_suppresses_nothing() {
    let t0 = Instant::now();
    let (a, b) = tunnel(t0);
    let ms = Duration::from_millis;
    let replayed = || {
        b.dev
            .drops
            .replayed
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Path 0 delivers; path 1 has been heard lately, so it wants no endpoint refresh.
    let d = a.send(&ipv4(A_TUN, B_TUN, b"first"), t0).unwrap();
    assert_eq!(
        b.recv_counted(at(A_ADDR, 0), std::slice::from_ref(&d), t0),
        (vec![ipv4(A_TUN, B_TUN, b"first")], 1)
    );
    let on1 = at("192.0.2.21:51820", 1);
    b.recv(on1, std::slice::from_ref(&d), t0 + ms(10));
    let before = replayed();
    // The committed window holds its counter: dropped before the batch, counted.
    let (got, copied) = b.recv_counted(on1, std::slice::from_ref(&d), t0 + ms(20));
    assert!(got.is_empty(), "a duplicate reached the TUN");
    assert_eq!(copied, 0, "the known copy was copied into the batch");
    assert_eq!(replayed(), before + 1, "the dropped copy was not counted");

    // A forged datagram with the next packet's counter (its tag broken) arrives first,
    // on either path: nothing is committed, and the genuine packet still gets through.
    let real = a.send(&ipv4(A_TUN, B_TUN, b"second"), t0 + ms(30)).unwrap();
    let mut forged = real.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let bad = |s: &Side| {
        s.dev
            .drops
            .bad_data
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let bad0 = bad(&b);
    assert_eq!(
        b.recv_counted(on1, std::slice::from_ref(&forged), t0 + ms(31)),
        (vec![], 1)
    );
    assert_eq!(bad(&b), bad0 + 1);
    let (got, copied) = b.recv_counted(at(A_ADDR, 0), std::slice::from_ref(&real), t0 + ms(32));
    assert_eq!(
        got,
        vec![ipv4(A_TUN, B_TUN, b"second")],
        "the forgery suppressed the packet"
    );
    assert_eq!(copied, 1);
    // The same, with the forgery and the packet in one receive.
    let real = a.send(&ipv4(A_TUN, B_TUN, b"third"), t0 + ms(40)).unwrap();
    let mut forged = real.clone();
    forged[real.len() - 1] ^= 1;
    let (got, copied) = b.recv_counted(on1, &[forged, real.clone()], t0 + ms(41));
    assert_eq!(got, vec![ipv4(A_TUN, B_TUN, b"third")]);
    assert_eq!(
        copied, 2,
        "a copy of an uncommitted packet skipped the batch"
    );
    // And now that it is committed, its copy on the other path goes uncopied.
    assert_eq!(
        b.recv_counted(at(A_ADDR, 0), &[real], t0 + ms(42)),
        (vec![], 0)
    );
}
