//! The protocol core against boringtun as an in-process reference peer: no sockets, time
//! passed in. Each test drives both sides by hand and checks what crosses.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use parking_lot::Mutex;

use mpwg::multipath::path::Source;
use mpwg::protocol::device::{Device, SealedFor, SendCache};
use mpwg::protocol::device::{PathTally, RxBatch, RxCache, PACKET_OFFSET};
use mpwg::protocol::key::Key;
use mpwg::protocol::noise::messages::{classify, Kind};
use mpwg::protocol::peer::Peer;
use mpwg::protocol::request::{PeerUpdate, SetRequest};
use mpwg::protocol::session::{HEADROOM, TAILROOM};
use mpwg::protocol::timers::REKEY_AFTER_TIME;
use mpwg::protocol::transmit::Transmit;

const MPWG_IP: [u8; 4] = [10, 0, 0, 1];
const BT_IP: [u8; 4] = [10, 0, 0, 2];

/// What mpwg sent, in order.
#[derive(Default)]
struct Capture(Mutex<Vec<Vec<u8>>>);

impl Transmit for Capture {
    fn send_to_peer(&self, peer: &Peer, d: &[u8]) -> bool {
        assert!(
            peer.endpoint_addr().is_some(),
            "sent to a peer with no endpoint"
        );
        self.0.lock().push(d.to_vec());
        true
    }
    fn send_to(&self, _dst: Source, d: &[u8]) -> bool {
        self.0.lock().push(d.to_vec());
        true
    }
}

impl Capture {
    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.0.lock())
    }
}

fn src() -> Source {
    Source {
        addr: "192.168.50.2:51820".parse().unwrap(),
        path: 0,
        local: None,
    }
}

/// An IPv4 packet (UDP protocol number, no real UDP header needed) with `payload`.
fn ipv4(from: [u8; 4], to: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&from);
    p[16..20].copy_from_slice(&to);
    p[20..].copy_from_slice(payload);
    p
}

struct Pair {
    dev: Device,
    cap: Capture,
    bt: Tunn,
    /// The TX side's cache, kept between packets as a TX worker keeps it.
    send_cache: Mutex<SendCache>,
    /// The receive side's cache, likewise.
    rx_cache: Mutex<RxCache>,
}

/// What became of a packet mpwg was asked to send.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Sealed and handed to the paths.
    Sealed,
    /// Kept until a handshake completes.
    Staged,
    /// No peer's allowed IPs hold the destination.
    NoRoute,
}

/// Sends `pkt` from mpwg's TUN side as a TX worker does: sealed in place through its
/// cache ([`Device::seal_cached`]), handed to the paths, and reported
/// ([`Device::note_sent`]).
fn send_via(
    dev: &Device,
    cache: &mut SendCache,
    tx: &dyn Transmit,
    pkt: &[u8],
    now: Instant,
) -> Outcome {
    let mut buf = vec![0u8; HEADROOM + pkt.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    match dev.seal_cached(&mut buf, pkt.len(), now, tx, cache) {
        SealedFor::Ready(peer, n) => {
            let peer = peer.clone();
            let ok = tx.send_to_peer(&peer, &buf[..n]);
            dev.note_sent(&peer, n, usize::from(!pkt.is_empty()), ok, now, tx);
            Outcome::Sealed
        }
        SealedFor::Staged => Outcome::Staged,
        SealedFor::NoRoute => Outcome::NoRoute,
    }
}

/// Receives `datagram` on mpwg's side as the receive thread does: a handshake message
/// or cookie reply goes to [`Device::receive_handshake`]; a data message is opened as a
/// batch of one ([`Device::open_batch`]). Returns the IP packet for the TUN, if any.
fn recv_via(
    dev: &Device,
    cache: &mut RxCache,
    tx: &dyn Transmit,
    src: Source,
    datagram: &[u8],
    now: Instant,
) -> Option<Vec<u8>> {
    if classify(datagram) != Some(Kind::Data) {
        dev.receive_handshake(src, datagram, now, tx);
        return None;
    }
    let mut b = RxBatch::new(1);
    assert!(b.push(src, datagram), "a data message joins the batch");
    dev.open_batch(&mut b, cache, now, tx);
    delivered(&mut b).pop()
}

/// A device and a boringtun peer configured for each other. `bt_handshake_limit` gives
/// boringtun a rate limiter of that many handshakes (0: always under load).
fn pair_with(psk: Option<[u8; 32]>, bt_handshake_limit: Option<u64>) -> Pair {
    let dev_key = Key::generate();
    let bt_secret = x25519::StaticSecret::random_from_rng(rand_core::OsRng);
    let bt_public = x25519::PublicKey::from(&bt_secret);
    let bt_limiter = bt_handshake_limit.map(|n| Arc::new(RateLimiter::new(&bt_public, n)));
    let dev_public = x25519::PublicKey::from(dev_key.public_key().0);
    let bt = Tunn::new(bt_secret, dev_public, psk, None, 7, bt_limiter).unwrap();
    let dev = Device::new(1420);
    dev.apply(
        &SetRequest {
            private_key: Some(dev_key),
            listen_port: Some(51820),
            fwmark: None,
            replace_peers: false,
            peers: vec![PeerUpdate {
                public_key: Key(*bt_public.as_bytes()),
                remove: false,
                update_only: false,
                preshared_key: psk.map(Key),
                endpoint: Some(src().addr),
                persistent_keepalive: None,
                replace_allowed_ips: true,
                allowed_ips: vec!["10.0.0.2/32".parse().unwrap()],
            }],
        },
        Instant::now(),
    )
    .unwrap();
    Pair {
        dev,
        cap: Capture::default(),
        bt,
        send_cache: Mutex::new(SendCache::default()),
        rx_cache: Mutex::new(RxCache::default()),
    }
}

fn pair() -> Pair {
    pair_with(Some([42u8; 32]), None)
}

impl Pair {
    /// mpwg sends `pkt` from its TUN side.
    fn dev_send(&self, pkt: &[u8], now: Instant) -> Outcome {
        send_via(&self.dev, &mut self.send_cache.lock(), &self.cap, pkt, now)
    }

    /// mpwg receives a datagram; returns the IP packet for its TUN, if any.
    fn dev_recv(&self, datagram: &[u8], now: Instant) -> Option<Vec<u8>> {
        recv_via(
            &self.dev,
            &mut self.rx_cache.lock(),
            &self.cap,
            src(),
            datagram,
            now,
        )
    }

    /// boringtun receives a datagram. Returns (datagrams it sends back, packets for its TUN).
    fn bt_recv(&mut self, datagram: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let from = Some(IpAddr::V4(Ipv4Addr::new(192, 168, 50, 1)));
        let mut out = vec![0u8; 65536];
        let mut net = Vec::new();
        let mut tun = Vec::new();
        let mut input = datagram.to_vec();
        loop {
            match self.bt.decapsulate(from, &input, &mut out) {
                TunnResult::WriteToNetwork(d) => net.push(d.to_vec()),
                TunnResult::WriteToTunnelV4(p, _) => {
                    tun.push(p.to_vec());
                    break;
                }
                TunnResult::WriteToTunnelV6(p, _) => {
                    tun.push(p.to_vec());
                    break;
                }
                TunnResult::Done | TunnResult::Err(_) => break,
            }
            input.clear(); // repeated call drains boringtun's queue
        }
        (net, tun)
    }

    fn bt_send(&mut self, pkt: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 65536];
        match self.bt.encapsulate(pkt, &mut out) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => panic!("boringtun did not encapsulate"),
        }
    }

    /// Each packet sealed by boringtun, in order.
    fn bt_send_all(&mut self, pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
        pkts.iter().map(|x| self.bt_send(x)).collect()
    }

    /// boringtun's handshake initiation (`retry`: a retry, which carries mac2 once it
    /// holds a cookie).
    fn bt_initiation(&mut self, retry: bool) -> Vec<u8> {
        let mut out = vec![0u8; 256];
        match self.bt.format_handshake_initiation(&mut out, retry) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            _ => panic!("no initiation"),
        }
    }

    /// Completes a handshake started by mpwg with a packet, and returns what boringtun
    /// delivered to its TUN.
    fn handshake_from_mpwg(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let pkt = ipv4(MPWG_IP, BT_IP, b"first packet");
        assert_eq!(self.dev_send(&pkt, now), Outcome::Staged);
        let sent = self.cap.take();
        assert_eq!(sent.len(), 1, "one initiation");
        assert_eq!(sent[0][0], 1);
        let (resp, _) = self.bt_recv(&sent[0]);
        assert_eq!(resp.len(), 1, "boringtun answers with a response");
        assert_eq!(resp[0][0], 2);
        assert_eq!(self.dev_recv(&resp[0], now), None);
        let staged = self.cap.take();
        assert_eq!(
            staged.len(),
            1,
            "the staged packet goes out after the handshake"
        );
        let mut delivered = Vec::new();
        for d in staged {
            delivered.extend(self.bt_recv(&d).1);
        }
        delivered
    }
}

#[test]
fn handshake_started_by_mpwg_then_data_both_ways() {
    let mut p = pair();
    let now = Instant::now();
    let delivered = p.handshake_from_mpwg(now);
    assert_eq!(delivered, vec![ipv4(MPWG_IP, BT_IP, b"first packet")]);

    let back = ipv4(BT_IP, MPWG_IP, b"reply from boringtun");
    let d = p.bt_send(&back);
    assert_eq!(p.dev_recv(&d, now), Some(back));

    for i in 0..50u8 {
        let pkt = ipv4(MPWG_IP, BT_IP, &vec![i; 1 + usize::from(i) * 20]);
        assert_eq!(p.dev_send(&pkt, now), Outcome::Sealed);
        let out = p.cap.take();
        assert_eq!(out.len(), 1);
        assert_eq!(p.bt_recv(&out[0]).1, vec![pkt]);
    }
    let snap = p.dev.snapshot();
    assert!(snap.peers[0].last_handshake.is_some());
    assert!(snap.peers[0].rx_bytes > 0 && snap.peers[0].tx_bytes > 0);
}

#[test]
fn handshake_started_by_boringtun_then_data_both_ways() {
    let mut p = pair();
    let now = Instant::now();
    let init = p.bt_initiation(false);
    assert_eq!(p.dev_recv(&init, now), None);
    let resp = p.cap.take();
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0][0], 2, "mpwg responds");
    let (keepalive, _) = p.bt_recv(&resp[0]);
    // boringtun confirms the session with a keepalive or its first data packet.
    for k in &keepalive {
        assert_eq!(p.dev_recv(k, now), None);
    }
    let pkt = ipv4(BT_IP, MPWG_IP, b"hello mpwg");
    let d = p.bt_send(&pkt);
    assert_eq!(p.dev_recv(&d, now), Some(pkt));
    assert!(p.dev.snapshot().peers[0].last_handshake.is_some());

    let back = ipv4(MPWG_IP, BT_IP, b"hello boringtun");
    assert_eq!(p.dev_send(&back, now), Outcome::Sealed);
    let out = p.cap.take();
    assert_eq!(p.bt_recv(&out[0]).1, vec![back]);
}

#[test]
fn rekey_after_time_makes_a_new_session_that_carries_data() {
    let mut p = pair();
    let t0 = Instant::now();
    p.handshake_from_mpwg(t0);
    let first_index = p.cap.0.lock().len();
    assert_eq!(first_index, 0);

    // Initiation timestamps are wall-clock time rounded to ~16 ms, and a responder
    // refuses one that is not newer than the last: let the clock move on.
    std::thread::sleep(Duration::from_millis(40));
    // Past REKEY_AFTER_TIME, the initiator's next packet triggers a new handshake.
    let later = t0 + REKEY_AFTER_TIME + Duration::from_secs(1);
    let pkt = ipv4(MPWG_IP, BT_IP, b"old session");
    assert_eq!(p.dev_send(&pkt, later), Outcome::Sealed);
    let out = p.cap.take();
    assert_eq!(out.len(), 2, "data on the old session, then an initiation");
    assert_eq!(out[0][0], 4);
    assert_eq!(out[1][0], 1);
    let old_receiver = out[0][4..8].to_vec();
    assert_eq!(p.bt_recv(&out[0]).1, vec![pkt]);
    let (resp, _) = p.bt_recv(&out[1]);
    assert_eq!(p.dev_recv(&resp[0], later), None);
    p.cap.take(); // keepalive on the new session

    let pkt = ipv4(MPWG_IP, BT_IP, b"new session");
    assert_eq!(p.dev_send(&pkt, later), Outcome::Sealed);
    let out = p.cap.take();
    assert_ne!(out[0][4..8].to_vec(), old_receiver, "a new receiver index");
    assert_eq!(p.bt_recv(&out[0]).1, vec![pkt]);
}

#[test]
fn replayed_packet_is_rejected() {
    let mut p = pair();
    let now = Instant::now();
    p.handshake_from_mpwg(now);
    let pkt = ipv4(BT_IP, MPWG_IP, b"once only");
    let d = p.bt_send(&pkt);
    assert_eq!(p.dev_recv(&d, now), Some(pkt));
    let before = p
        .dev
        .drops
        .replayed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(p.dev_recv(&d, now), None);
    assert_eq!(
        p.dev
            .drops
            .replayed
            .load(std::sync::atomic::Ordering::Relaxed),
        before + 1
    );
}

#[test]
fn window_holds_8128_and_rejects_what_is_behind_it() {
    let mut p = pair();
    let now = Instant::now();
    p.handshake_from_mpwg(now);
    let msgs: Vec<Vec<u8>> = (0..8300u32)
        .map(|i| p.bt_send(&ipv4(BT_IP, MPWG_IP, &i.to_be_bytes())))
        .collect();
    // Deliver the newest first; then one 8000 behind (inside our window, outside
    // boringtun's 1024), then one 8200 behind.
    assert!(p.dev_recv(&msgs[8299], now).is_some());
    assert!(
        p.dev_recv(&msgs[299], now).is_some(),
        "8000 behind is accepted"
    );
    assert!(
        p.dev_recv(&msgs[99], now).is_none(),
        "8200 behind is rejected"
    );
}

#[test]
fn bad_mac1_is_ignored() {
    let mut p = pair();
    let now = Instant::now();
    let mut init = p.bt_initiation(false);
    init[116] ^= 0xff;
    assert_eq!(p.dev_recv(&init, now), None);
    assert!(p.cap.take().is_empty(), "no answer to a bad mac1");
    assert_eq!(
        p.dev
            .drops
            .bad_mac1
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(p.dev.snapshot().peers[0].last_handshake.is_none());
}

#[test]
fn cookie_round_trip_when_mpwg_is_under_load() {
    let mut p = pair();
    let now = Instant::now();
    p.dev.force_under_load(Some(true));
    let init = p.bt_initiation(false);
    assert_eq!(p.dev_recv(&init, now), None);
    let reply = p.cap.take();
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0][0], 3, "a cookie reply, not a response");
    let (nothing, _) = p.bt_recv(&reply[0]);
    assert!(nothing.is_empty());
    // boringtun retries; its initiation now carries mac2, which mpwg accepts under load.
    let init2 = p.bt_initiation(true);
    assert_ne!(&init2[132..148], &[0u8; 16], "mac2 set");
    assert_eq!(p.dev_recv(&init2, now + Duration::from_millis(50)), None);
    let resp = p.cap.take();
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0][0], 2, "a response this time");
}

#[test]
fn cookie_round_trip_when_boringtun_is_under_load() {
    let mut p = pair_with(None, Some(0));
    let t0 = Instant::now();
    assert_eq!(p.dev_send(&ipv4(MPWG_IP, BT_IP, b"x"), t0), Outcome::Staged);
    let init = p.cap.take();
    let (reply, _) = p.bt_recv(&init[0]);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0][0], 3, "boringtun answers with a cookie reply");
    assert_eq!(p.dev_recv(&reply[0], t0), None);
    // The retry (after REKEY_TIMEOUT) carries mac2, and boringtun responds.
    let t1 = t0 + Duration::from_secs(6);
    p.dev.handle_timeout(t1, &p.cap);
    let init2 = p.cap.take();
    assert_eq!(init2.len(), 1);
    assert_eq!(init2[0][0], 1);
    assert_ne!(&init2[0][132..148], &[0u8; 16], "mac2 set");
    let (resp, _) = p.bt_recv(&init2[0]);
    assert_eq!(resp.len(), 1);
    assert_eq!(
        resp[0][0], 2,
        "boringtun responds to an initiation with a valid mac2"
    );
    assert_eq!(p.dev_recv(&resp[0], t1), None);
    let staged = p.cap.take();
    assert_eq!(p.bt_recv(&staged[0]).1, vec![ipv4(MPWG_IP, BT_IP, b"x")]);
}

#[test]
fn garbage_never_panics_and_changes_nothing() {
    let mut p = pair();
    let now = Instant::now();
    p.handshake_from_mpwg(now);
    let mut seed = 0x1234_5678u32;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for i in 0..20_000 {
        let len = match i % 5 {
            0 => 148,
            1 => 92,
            2 => 64,
            3 => 32 + (rnd() % 200) as usize,
            _ => (rnd() % 300) as usize,
        };
        let mut d: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if !d.is_empty() {
            d[0] = (i % 5) as u8;
            if d.len() >= 4 {
                d[1..4].fill(0);
            }
        }
        assert_eq!(p.dev_recv(&d, now), None);
    }
    assert!(p.cap.take().is_empty(), "garbage gets no answer");
    let pkt = ipv4(BT_IP, MPWG_IP, b"still working");
    let d = p.bt_send(&pkt);
    assert_eq!(p.dev_recv(&d, now), Some(pkt));
}

#[test]
fn inner_source_outside_allowed_ips_is_dropped() {
    let mut p = pair();
    let now = Instant::now();
    p.handshake_from_mpwg(now);
    let spoofed = ipv4([10, 9, 9, 9], MPWG_IP, b"spoofed");
    let d = p.bt_send(&spoofed);
    assert_eq!(p.dev_recv(&d, now), None);
    assert_eq!(
        p.dev
            .drops
            .bad_source
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn unrouted_destination_is_not_sent() {
    let p = pair();
    let pkt = ipv4(MPWG_IP, [10, 7, 7, 7], b"nowhere");
    assert_eq!(p.dev_send(&pkt, Instant::now()), Outcome::NoRoute);
    assert!(p.cap.take().is_empty());
}

/// A responder that accepts one initiation twice and answers both copies, as
/// wireguard-go can when the copies of a duplicated initiation reach its parallel
/// handshake workers at once: it keeps the session of its second response, and so must
/// mpwg. A repeated copy of a response already consumed changes nothing.
#[test]
fn a_peer_answering_one_initiation_twice_keeps_its_last_session() {
    use mpwg::protocol::noise::handshake::{consume_initiation, create_response, StaticKeys};
    use mpwg::protocol::session::Session;

    let peer_private = Key::generate();
    let peer_keys = StaticKeys::new(peer_private.0);
    let dev_key = Key::generate();
    let dev = Device::new(1420);
    let cap = Capture::default();
    dev.apply(
        &SetRequest {
            private_key: Some(dev_key),
            peers: vec![PeerUpdate {
                public_key: peer_private.public_key(),
                remove: false,
                update_only: false,
                preshared_key: None,
                endpoint: Some(src().addr),
                persistent_keepalive: None,
                replace_allowed_ips: true,
                allowed_ips: vec!["10.0.0.2/32".parse().unwrap()],
            }],
            ..Default::default()
        },
        Instant::now(),
    )
    .unwrap();
    let now = Instant::now();
    let mut send_cache = SendCache::default();
    let mut rx_cache = RxCache::default();
    let pkt = ipv4(MPWG_IP, BT_IP, b"hello");
    assert_eq!(
        send_via(&dev, &mut send_cache, &cap, &pkt, now),
        Outcome::Staged
    );
    let init = cap.take().remove(0);

    // The peer consumes the same initiation twice and answers each time.
    let dev_public = dev_key.public_key().0;
    let answer = |index: u32| {
        let consumed = consume_initiation(&peer_keys, &init, |pk| {
            assert_eq!(pk, &dev_public);
            Some(peer_keys.dh(pk))
        })
        .unwrap();
        let (mut resp, keys) = create_response(consumed, &[0u8; 32], index).unwrap();
        // mac1 over the response, keyed with the initiator's public key.
        let mut cookie = mpwg::protocol::noise::cookie::CookieState::new(&dev_public);
        cookie.add_macs(&mut resp, now);
        (resp, keys)
    };
    let (resp1, _keys1) = answer(111);
    let (resp2, keys2) = answer(222);

    assert_eq!(
        recv_via(&dev, &mut rx_cache, &cap, src(), &resp1, now),
        None
    );
    let after_first = cap.take();
    assert_eq!(
        &after_first[0][4..8],
        &111u32.to_le_bytes(),
        "staged data on session 1"
    );

    assert_eq!(
        recv_via(&dev, &mut rx_cache, &cap, src(), &resp2, now),
        None
    );
    let after_second = cap.take();
    assert_eq!(
        after_second.len(),
        1,
        "a keepalive confirms the replacing session"
    );
    assert_eq!(&after_second[0][4..8], &222u32.to_le_bytes());

    // A second copy of the first response is not taken again.
    assert_eq!(
        recv_via(&dev, &mut rx_cache, &cap, src(), &resp1, now),
        None
    );
    assert!(cap.take().is_empty());

    // Data goes out on the peer's second session, and the peer can open it.
    let pkt = ipv4(MPWG_IP, BT_IP, b"after the race");
    assert_eq!(
        send_via(&dev, &mut send_cache, &cap, &pkt, now),
        Outcome::Sealed
    );
    let mut d = cap.take().remove(0);
    assert_eq!(&d[4..8], &222u32.to_le_bytes());
    let peer_session = Session::new(&keys2, now);
    let plain = peer_session
        .decrypt(&mut d)
        .expect("the peer's kept session opens it");
    assert_eq!(&d[plain.start..plain.start + pkt.len()], &pkt[..]);
}

// ----- batched receive (Device::open_batch), as the datapath's workers run it -----

fn src_on(path: usize) -> Source {
    Source {
        addr: format!("192.168.5{path}.2:51820").parse().unwrap(),
        path,
        local: None,
    }
}

/// Opens `datagrams` (each with the path it came on) as one batch; returns the packets
/// for the TUN, in order, and the per-path tally.
fn open_batch(
    p: &Pair,
    cache: &mut RxCache,
    datagrams: &[(usize, Vec<u8>)],
    now: Instant,
) -> (Vec<Vec<u8>>, Vec<PathTally>) {
    let mut b = batch_of(datagrams);
    p.dev.open_batch(&mut b, cache, now, &p.cap);
    (delivered(&mut b), sorted_tally(&b))
}

/// A batch of `(path, datagram)` pairs, as the receive thread would fill it.
fn batch_of(datagrams: &[(usize, Vec<u8>)]) -> RxBatch {
    let mut b = RxBatch::new(datagrams.len());
    for (path, d) in datagrams {
        assert!(b.push(src_on(*path), d));
    }
    b
}

/// The packets an opened batch delivers to the TUN, in order.
fn delivered(b: &mut RxBatch) -> Vec<Vec<u8>> {
    b.packets()
        .iter()
        .map(|v| v[PACKET_OFFSET..].to_vec())
        .collect()
}

/// The batch's per-path tally, by path.
fn sorted_tally(b: &RxBatch) -> Vec<PathTally> {
    let mut tally = b.tally.clone();
    tally.sort_by_key(|t| t.path);
    tally
}

fn tally(path: usize, wins: u64, duplicates: u64) -> PathTally {
    PathTally {
        path,
        wins,
        duplicates,
    }
}

fn drops(p: &Pair) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (
        p.dev.drops.replayed.load(Relaxed),
        p.dev.drops.bad_data.load(Relaxed),
    )
}

/// Two paths' GRO batches interleaved, as the receive thread gathers them: each packet
/// is delivered once, in the order sent, and the copies are counted against the path
/// that brought them second.
#[test]
fn a_batch_with_both_paths_copies_delivers_each_packet_once_in_order() {
    let mut p = pair();
    let now = Instant::now();
    p.handshake_from_mpwg(now);
    let pkts: Vec<Vec<u8>> = (0..40u8)
        .map(|i| ipv4(BT_IP, MPWG_IP, &vec![i; 100 + usize::from(i)]))
        .collect();
    let sealed = p.bt_send_all(&pkts);
    let mut batch = Vec::new();
    for chunk in [0..20, 20..40] {
        batch.extend(sealed[chunk.clone()].iter().map(|d| (0, d.clone())));
        batch.extend(sealed[chunk].iter().map(|d| (1, d.clone())));
    }
    let mut cache = RxCache::default();
    let (got, t) = open_batch(&p, &mut cache, &batch, now);
    assert_eq!(got, pkts);
    assert_eq!(t, vec![tally(0, 40, 0), tally(1, 0, 40)]);
    assert_eq!(
        drops(&p),
        (40, 0),
        "40 copies dropped, none failed to decrypt"
    );

    // Late copies in a later batch are dropped before decryption.
    let late: Vec<(usize, Vec<u8>)> = sealed[..5].iter().map(|d| (1, d.clone())).collect();
    let (got, t) = open_batch(&p, &mut cache, &late, now);
    assert!(got.is_empty());
    assert_eq!(t, vec![tally(1, 0, 5)]);
    let snap = p.dev.snapshot();
    assert!(snap.peers[0].rx_bytes >= sealed.iter().map(|d| d.len() as u64).sum::<u64>());
}

/// Two workers decrypt neighbouring batches at once: the later batch (path 1's copies of
/// packets 0..4, then path 0's packets 8..12) is decrypted before the earlier one
/// (path 0's packets 0..8). Committed in receive order, every packet is delivered from
/// the batch that received it first, so the flow stays in order: 0..8, then 8..12.
#[test]
fn batches_decrypted_out_of_order_commit_in_receive_order() {
    let mut p = pair();
    let now = Instant::now();
    p.handshake_from_mpwg(now);
    let pkts: Vec<Vec<u8>> = (0..12u8).map(|i| ipv4(BT_IP, MPWG_IP, &[i; 200])).collect();
    let sealed = p.bt_send_all(&pkts);
    let on = |path: usize, ds: &[Vec<u8>]| -> Vec<(usize, Vec<u8>)> {
        ds.iter().map(|d| (path, d.clone())).collect()
    };
    let mut first = batch_of(&on(0, &sealed[..8]));
    let mut second = batch_of(&[on(1, &sealed[..4]), on(0, &sealed[8..])].concat());
    let (mut cache_a, mut cache_b) = (RxCache::default(), RxCache::default());
    p.dev.decrypt_batch(&mut second, &mut cache_b, now);
    p.dev.decrypt_batch(&mut first, &mut cache_a, now);
    let mut got = Vec::new();
    for b in [&mut first, &mut second] {
        p.dev.commit_batch(b, now, &p.cap);
        got.extend(delivered(b));
    }
    assert_eq!(got, pkts, "each packet once, in the order sent");
    assert_eq!(sorted_tally(&second), vec![tally(0, 4, 0), tally(1, 0, 4)]);
}

/// A forged copy that arrives first (on a hostile path) must not suppress the genuine
/// one: the genuine copy is decrypted when the first fails.
#[test]
fn a_forged_first_copy_does_not_suppress_the_genuine_one() {
    let mut p = pair();
    let now = Instant::now();
    p.handshake_from_mpwg(now);
    let pkts: Vec<Vec<u8>> = (0..3u8).map(|i| ipv4(BT_IP, MPWG_IP, &[i; 64])).collect();
    let sealed = p.bt_send_all(&pkts);
    let mut forged = sealed[1].clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x55;
    let batch = vec![
        (0, sealed[0].clone()),
        (1, forged),
        (0, sealed[1].clone()),
        (0, sealed[2].clone()),
    ];
    let (got, t) = open_batch(&p, &mut RxCache::default(), &batch, now);
    assert_eq!(got, pkts);
    assert_eq!(t, vec![tally(0, 3, 0)]);
    assert_eq!(drops(&p), (0, 1), "the forgery failed to decrypt");
}

/// Within a batch, a datagram for an unknown index, a spoofed inner source and a
/// replayed packet are dropped; everything else still arrives, in order.
#[test]
fn a_batch_drops_only_its_bad_datagrams() {
    let mut p = pair();
    let now = Instant::now();
    p.handshake_from_mpwg(now);
    let good: Vec<Vec<u8>> = (0..3u8).map(|i| ipv4(BT_IP, MPWG_IP, &[i; 80])).collect();
    let spoofed = ipv4([10, 9, 9, 9], MPWG_IP, b"spoofed");
    let g = p.bt_send_all(&good);
    let s = p.bt_send(&spoofed);
    let mut unknown = g[0].clone();
    unknown[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    let batch = vec![
        (0, g[0].clone()),
        (0, unknown),
        (0, s),
        (0, g[1].clone()),
        (0, g[0].clone()),
        (0, g[2].clone()),
    ];
    let (got, _) = open_batch(&p, &mut RxCache::default(), &batch, now);
    assert_eq!(got, good);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(p.dev.drops.unknown_index.load(Relaxed), 1);
    assert_eq!(p.dev.drops.bad_source.load(Relaxed), 1);
    assert_eq!(drops(&p), (1, 0));
    assert!(!RxBatch::new(1).push(src(), b"not a data message"));
}

/// The session boringtun's handshake makes is confirmed by the first data packet arriving
/// in a batch, with a cache filled before the handshake (the device's epoch moves on).
#[test]
fn a_batch_confirms_a_session_boringtun_started() {
    let mut p = pair();
    let now = Instant::now();
    let mut cache = RxCache::default();
    let (got, _) = open_batch(&p, &mut cache, &[], now);
    assert!(got.is_empty());
    let init = p.bt_initiation(false);
    assert_eq!(p.dev_recv(&init, now), None);
    let resp = p.cap.take();
    let (keepalive, _) = p.bt_recv(&resp[0]);
    let pkt = ipv4(BT_IP, MPWG_IP, b"hello batch");
    let mut batch: Vec<(usize, Vec<u8>)> = keepalive.into_iter().map(|k| (1, k)).collect();
    batch.push((0, p.bt_send(&pkt)));
    let (got, _) = open_batch(&p, &mut cache, &batch, now);
    assert_eq!(got, vec![pkt]);
    assert!(p.dev.snapshot().peers[0].last_handshake.is_some());
    let back = ipv4(MPWG_IP, BT_IP, b"back");
    assert_eq!(p.dev_send(&back, now), Outcome::Sealed);
    assert_eq!(p.bt_recv(&p.cap.take()[0]).1, vec![back]);
}

/// The TX workers' cached sealing: packets boringtun opens, a route removed by `wg set`
/// is seen at once (the device's epoch moves), and a packet with no session is staged
/// and starts a handshake.
#[test]
fn sealing_through_a_cache_follows_configuration_changes() {
    let mut p = pair();
    let now = Instant::now();
    let mut cache = SendCache::default();
    let pkt = ipv4(MPWG_IP, BT_IP, b"cached");
    let mut buf = vec![0u8; HEADROOM + pkt.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(&pkt);
    assert!(matches!(
        p.dev
            .seal_cached(&mut buf.clone(), pkt.len(), now, &p.cap, &mut cache),
        SealedFor::Staged
    ));
    let init = p.cap.take();
    assert_eq!(init.len(), 1, "a handshake initiation");
    let (resp, _) = p.bt_recv(&init[0]);
    assert_eq!(p.dev_recv(&resp[0], now), None);
    for d in p.cap.take() {
        assert_eq!(p.bt_recv(&d).1, vec![pkt.clone()], "the staged packet");
    }
    for _ in 0..3 {
        let mut b = buf.clone();
        let n = match p
            .dev
            .seal_cached(&mut b, pkt.len(), now, &p.cap, &mut cache)
        {
            SealedFor::Ready(peer, n) => {
                assert_eq!(peer.public_key, p.dev.peers()[0].public_key);
                n
            }
            _ => panic!("not sealed with the new session"),
        };
        assert_eq!(p.bt_recv(&b[..n]).1, vec![pkt.clone()]);
    }
    let key = p.dev.peers()[0].public_key;
    p.dev
        .apply(
            &SetRequest {
                private_key: None,
                listen_port: None,
                fwmark: None,
                replace_peers: false,
                peers: vec![PeerUpdate {
                    public_key: key,
                    remove: false,
                    update_only: true,
                    preshared_key: None,
                    endpoint: None,
                    persistent_keepalive: None,
                    replace_allowed_ips: true,
                    allowed_ips: vec![],
                }],
            },
            now,
        )
        .unwrap();
    assert!(matches!(
        p.dev
            .seal_cached(&mut buf, pkt.len(), now, &p.cap, &mut cache),
        SealedFor::NoRoute
    ));
}
