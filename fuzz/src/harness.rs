//! The fuzz harnesses of mpwg, one function per cargo-fuzz target. Each reads its input
//! as a little program (a byte says what to do, the next bytes with what), so that
//! random bytes drive the code the daemon runs: real handshakes, real sessions, batches
//! through the replay window, the UAPI and config parsers with a device behind them, the
//! TUN's GSO splitting and GRO coalescing.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and by the corpus replay
//! test of the main crate (`tests/fuzz_corpus.rs`, which includes this file), so the
//! committed corpus runs in plain `cargo test`.
//!
//! Besides "no panic", the harnesses check what must hold whatever comes in: a packet
//! reaches the TUN at most once, and only if it was sealed by the peer.
#![allow(clippy::missing_panics_doc, clippy::vec_box)]

use std::collections::HashSet;
use std::io::{Cursor, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpwg::control::uapi::{
    format_get, handle_connection, DeviceSnapshot, SetRequest, UapiError, UapiHandler,
};
use mpwg::datapath::gso::GsoBatch;
use mpwg::multipath::path::Source;
use mpwg::protocol::device::{Device, RxBatch, RxCache, SealedFor, SendCache, PACKET_OFFSET};
use mpwg::protocol::key::Key;
use mpwg::protocol::noise::cookie::mac1_key;
use mpwg::protocol::noise::crypto::mac;
use mpwg::protocol::noise::messages::{COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN};
use mpwg::protocol::peer::Peer;
use mpwg::protocol::request::PeerUpdate;
use mpwg::protocol::session::{HEADROOM, TAILROOM};
use mpwg::protocol::transmit::Transmit;

/// Reads the input a byte or a slice at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// What the devices sent: (to whom, the datagram).
#[derive(Default)]
struct Capture(Mutex<Vec<(Option<Source>, Vec<u8>)>>);

impl Transmit for Capture {
    fn send_to_peer(&self, _peer: &Peer, d: &[u8]) -> bool {
        self.0.lock().unwrap().push((None, d.to_vec()));
        true
    }
    fn send_to(&self, dst: Source, d: &[u8]) -> bool {
        self.0.lock().unwrap().push((Some(dst), d.to_vec()));
        true
    }
}

impl Capture {
    fn take(&self) -> Vec<(Option<Source>, Vec<u8>)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

const A_KEY: [u8; 32] = [0x11; 32];
const B_KEY: [u8; 32] = [0x22; 32];
const A_TUN: [u8; 4] = [10, 0, 0, 1];
const B_TUN: [u8; 4] = [10, 0, 0, 2];

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1 + (i % 8)], 51820))
}

fn src(path: u8, a: u8) -> Source {
    Source {
        addr: addr(a),
        path: usize::from(path % 2),
        local: None,
    }
}

/// A device with `own` as private key and `peer`'s public key as its one peer, reached
/// at `endpoint`, with `allowed` as its allowed IPs.
fn device(own: [u8; 32], peer: [u8; 32], allowed: &[&str], endpoint: SocketAddr) -> Device {
    let d = Device::new(1420);
    let mut u = PeerUpdate::new(Key(peer).public_key());
    u.endpoint = Some(endpoint);
    u.replace_allowed_ips = true;
    u.allowed_ips = allowed.iter().map(|s| s.parse().unwrap()).collect();
    u.preshared_key = Some(Key([0x33; 32]));
    d.apply(
        &SetRequest {
            private_key: Some(Key(own)),
            peers: vec![u],
            ..SetRequest::default()
        },
        Instant::now(),
    )
    .unwrap();
    d
}

/// An IPv4 packet from `from` to `to`: a 20-byte header whose total length field is
/// `total` (not necessarily the truth), then `body`.
fn ipv4(from: [u8; 4], to: [u8; 4], total: u16, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&from);
    p[16..20].copy_from_slice(&to);
    p.extend_from_slice(body);
    p
}

/// Two devices, A and B, that completed a handshake (A initiated) and confirmed it
/// with a first packet: B holds a session from A.
struct Tunnel {
    a: Device,
    b: Device,
    cap_a: Capture,
    cap_b: Capture,
    a_cache: SendCache,
    now: Instant,
}

impl Tunnel {
    fn new() -> Tunnel {
        let now = Instant::now();
        let a = device(A_KEY, B_KEY, &["10.0.0.2/32"], addr(0));
        let b = device(B_KEY, A_KEY, &["10.0.0.0/24", "fd00::/64"], addr(0));
        let mut t = Tunnel {
            a,
            b,
            cap_a: Capture::default(),
            cap_b: Capture::default(),
            a_cache: SendCache::default(),
            now,
        };
        t.a_send(&ipv4(A_TUN, B_TUN, 28, b"first!!!"));
        t.exchange();
        t
    }

    /// A seals an IP packet through its TX path (staging it, and initiating, if it has
    /// no session); what A sends lands in `cap_a`.
    fn a_send(&mut self, pkt: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; HEADROOM + pkt.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
        let r = match self.a.seal_cached(
            &mut buf,
            pkt.len(),
            self.now,
            &self.cap_a,
            &mut self.a_cache,
        ) {
            SealedFor::Ready(_, n) => Some(buf[..n].to_vec()),
            _ => None,
        };
        self.a_cache.end_batch();
        r
    }

    /// Carries handshake traffic between A and B until none is left (data goes to B).
    fn exchange(&mut self) {
        for _ in 0..4 {
            let from_a = self.cap_a.take();
            let from_b = self.cap_b.take();
            if from_a.is_empty() && from_b.is_empty() {
                return;
            }
            let mut cache = RxCache::default();
            for (_, d) in from_a {
                deliver(&self.b, &mut cache, &self.cap_b, src(0, 0), &d, self.now);
            }
            for (_, d) in from_b {
                deliver(&self.a, &mut cache, &self.cap_a, src(0, 0), &d, self.now);
            }
        }
    }
}

/// One datagram into `dev` as the daemon would take it.
fn deliver(
    dev: &Device,
    cache: &mut RxCache,
    tx: &dyn Transmit,
    s: Source,
    d: &[u8],
    now: Instant,
) {
    let mut b = RxBatch::new(1);
    if b.push(s, d) {
        dev.open_batch(&mut b, cache, now, tx);
    } else {
        dev.receive_handshake(s, d, now, tx);
    }
}

/// The data receive path with real sessions: A seals packets (each carrying a unique
/// id), and the input decides which datagrams B's receive batches get (copies on either
/// path, from any of several addresses, flipped bytes, garbage under B's real receiver
/// index), in which order batches are decrypted and when time passes. Checked: every
/// packet B delivers carries an id A sealed, and no id is delivered twice.
pub fn receive(data: &[u8]) {
    let mut input = Input(data);
    let mut t = Tunnel::new();
    let mut sealed: Vec<Vec<u8>> = Vec::new();
    let mut next_id: u64 = 1;
    let mut issued: HashSet<u64> = HashSet::new();
    let mut delivered: HashSet<u64> = HashSet::new();
    let mut rx = Receiver::default();
    let index = t.b.peers()[0]
        .sessions
        .read()
        .current
        .as_ref()
        .map_or(0, |s| s.local_index);
    while !input.done() {
        match input.byte() % 9 {
            0 => {
                // A seals an IPv4 packet: total length from the input, a unique id.
                let total = input.u16();
                let n = usize::from(input.byte());
                let mut body = next_id.to_le_bytes().to_vec();
                body.extend_from_slice(input.bytes(n));
                let from = if input.byte() % 8 == 0 {
                    [10, 9, 9, 9]
                } else {
                    A_TUN
                };
                if let Some(d) = t.a_send(&ipv4(from, B_TUN, total, &body)) {
                    issued.insert(next_id);
                    sealed.push(d);
                }
                next_id += 1;
                t.exchange_handshakes_only();
            }
            1 | 2 => {
                // A copy of a sealed datagram, on a path, from an address.
                let i = usize::from(input.u16());
                let (p, a) = (input.byte(), input.byte());
                if !sealed.is_empty() {
                    let d = sealed[i % sealed.len()].clone();
                    rx.push(&t, src(p, a), &d);
                }
            }
            3 => {
                // A sealed datagram with one byte changed.
                let i = usize::from(input.u16());
                let (at, x) = (usize::from(input.u16()), input.byte() | 1);
                if !sealed.is_empty() {
                    let mut d = sealed[i % sealed.len()].clone();
                    let at = at % d.len();
                    d[at] ^= x;
                    rx.push(&t, src(0, 1), &d);
                }
            }
            4 => {
                // Garbage data under B's receiver index.
                let n = usize::from(input.byte()) + 32;
                let mut d = vec![4, 0, 0, 0];
                d.extend_from_slice(&index.to_le_bytes());
                d.extend_from_slice(input.bytes(n));
                d.resize(n.max(32), 0);
                rx.push(&t, src(1, 2), &d);
            }
            5 => {
                // The batch goes to decryption (it may wait for a later one); the
                // receive thread lets go of its sessions, as before it waits.
                rx.known.cache.end_batch();
                rx.close_batch();
            }
            6 => {
                // Pending batches are decrypted in an order the input picks, then
                // committed in receive order, as the decryption workers do.
                let rot = usize::from(input.byte());
                let n = rx.pending.len();
                for k in 0..n {
                    let j = (k + rot) % n;
                    t.b.decrypt_batch(&mut rx.pending[j], &mut rx.cache, t.now);
                }
                for mut b in rx.pending.drain(..) {
                    t.b.commit_batch(&mut b, t.now, &t.cap_b);
                    check_delivered(&mut b, &issued, &mut delivered);
                    rx.pool.put(b);
                }
                t.cap_b.take();
            }
            7 => {
                t.now += Duration::from_millis(u64::from(input.u16()) * 20);
            }
            _ => {
                t.b.handle_timeout(t.now, &t.cap_b);
                t.a.handle_timeout(t.now, &t.cap_a);
                t.exchange_handshakes_only();
            }
        }
    }
    for mut b in rx.pending.drain(..) {
        t.b.decrypt_batch(&mut b, &mut rx.cache, t.now);
        t.b.commit_batch(&mut b, t.now, &t.cap_b);
        check_delivered(&mut b, &issued, &mut delivered);
    }
}

impl Tunnel {
    /// Carries handshake messages (not data) between A and B.
    fn exchange_handshakes_only(&mut self) {
        for _ in 0..4 {
            let hs = |v: Vec<(Option<Source>, Vec<u8>)>| -> Vec<Vec<u8>> {
                v.into_iter()
                    .map(|(_, d)| d)
                    .filter(|d| d.first() != Some(&4))
                    .collect()
            };
            let (from_a, from_b) = (hs(self.cap_a.take()), hs(self.cap_b.take()));
            if from_a.is_empty() && from_b.is_empty() {
                return;
            }
            for d in from_a {
                self.b
                    .receive_handshake(src(0, 0), &d, self.now, &self.cap_b);
            }
            for d in from_b {
                self.a
                    .receive_handshake(src(0, 0), &d, self.now, &self.cap_a);
            }
        }
    }
}

/// Receive batches, reused within one input (each reserves room for super-packets, so
/// making one is dear).
#[derive(Default)]
struct Pool(Vec<Box<RxBatch>>);

impl Pool {
    fn take(&mut self) -> Box<RxBatch> {
        self.0.pop().unwrap_or_else(|| Box::new(RxBatch::new(8)))
    }

    fn put(&mut self, mut b: Box<RxBatch>) {
        b.clear();
        self.0.push(b);
    }
}

/// What the receive thread keeps for [`Device::known_copies`]: its own cache of sessions,
/// and which datagrams of a receive are copies the committed window holds.
#[derive(Default)]
struct Known {
    cache: RxCache,
    flags: Vec<bool>,
}

/// B's receive side as the receive thread and decryption workers hold it: the batch
/// being filled, the batches waiting for decryption, and the caches.
struct Receiver {
    pool: Pool,
    batch: Box<RxBatch>,
    cache: RxCache,
    known: Known,
    pending: Vec<Box<RxBatch>>,
}

impl Default for Receiver {
    fn default() -> Receiver {
        let mut pool = Pool::default();
        let batch = pool.take();
        Receiver {
            pool,
            batch,
            cache: RxCache::default(),
            known: Known::default(),
            pending: Vec::new(),
        }
    }
}

impl Receiver {
    /// One datagram as the receive thread takes it: a copy the committed replay window
    /// already holds is dropped before it is copied into a batch (as `rx.rs` does); the
    /// rest joins the batch, or goes to the handshake code.
    fn push(&mut self, t: &Tunnel, s: Source, d: &[u8]) {
        let known = &mut self.known;
        t.b.known_copies(&mut known.cache, s, d, d.len(), t.now, &mut known.flags);
        if known.flags.first() == Some(&true) {
            return;
        }
        if self.batch.is_full() {
            self.close_batch();
        }
        if !self.batch.push(s, d) {
            t.b.receive_handshake(s, d, t.now, &t.cap_b);
        }
        // Bound the work an input can ask for.
        if self.pending.len() > 8 {
            for mut b in self.pending.drain(..) {
                t.b.decrypt_batch(&mut b, &mut self.cache, t.now);
                t.b.commit_batch(&mut b, t.now, &t.cap_b);
                self.pool.put(b);
            }
        }
    }

    /// The batch being filled goes to wait for decryption; a fresh one takes its place.
    fn close_batch(&mut self) {
        let full = std::mem::replace(&mut self.batch, self.pool.take());
        self.pending.push(full);
    }
}

fn check_delivered(b: &mut RxBatch, issued: &HashSet<u64>, delivered: &mut HashSet<u64>) {
    for p in b.packets() {
        let pkt = &p[PACKET_OFFSET..];
        assert!(
            pkt.len() >= 20,
            "a packet shorter than its header was delivered"
        );
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        assert_eq!(total, pkt.len(), "delivered with the wrong length");
        if pkt.len() >= 28 {
            let id = u64::from_le_bytes(pkt[20..28].try_into().unwrap());
            assert!(issued.contains(&id), "delivered a packet A never sealed");
            assert!(delivered.insert(id), "packet {id} delivered twice");
        }
    }
}

/// Handshake processing: B, with A as its peer, takes handshake messages through the
/// handshake queue (the receive thread's precheck, then the worker): A's genuine
/// initiations and responses, replays of them, mutated copies (mac1 made valid again,
/// or not), raw messages of each type, cookie replies, under load or not, with time
/// passing and timers firing.
pub fn handshake(data: &[u8]) {
    let mut input = Input(data);
    let now0 = Instant::now();
    let mut now = now0;
    let a = device(A_KEY, B_KEY, &["10.0.0.2/32"], addr(0));
    let b = device(B_KEY, A_KEY, &["10.0.0.1/32"], addr(0));
    let (cap_a, cap_b) = (Capture::default(), Capture::default());
    let (queue, worker) = mpwg::datapath::handshake::queue();
    let b_mac1 = mac1_key(&Key(B_KEY).public_key().0);
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut a_cache = SendCache::default();
    while !input.done() {
        match input.byte() % 10 {
            0 => {
                // A starts a handshake (a packet to send, no session yet, or a rekey).
                let pkt = ipv4(A_TUN, B_TUN, 28, b"12345678");
                let mut buf = vec![0u8; HEADROOM + pkt.len() + TAILROOM];
                buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(&pkt);
                let _ = a.seal_cached(&mut buf, pkt.len(), now, &cap_a, &mut a_cache);
                a_cache.end_batch();
            }
            1 => {
                // What A sent goes to B (through the queue), on a path, from an address.
                let (p, s) = (input.byte(), input.byte());
                for (_, d) in cap_a.take() {
                    seen.push(d.clone());
                    queue.submit(&b, src(p, s), &d);
                }
                worker.drain(&b, &cap_b, now);
            }
            2 => {
                // What B sent goes to A.
                for (_, d) in cap_b.take() {
                    seen.push(d.clone());
                    deliver(&a, &mut RxCache::default(), &cap_a, src(0, 0), &d, now);
                }
            }
            3 => {
                // A message seen before, replayed or changed, to B.
                let i = usize::from(input.u16());
                let (at, x, fix) = (usize::from(input.u16()), input.byte(), input.byte());
                if !seen.is_empty() {
                    let mut d = seen[i % seen.len()].clone();
                    if x != 0 {
                        let at = at % d.len();
                        d[at] ^= x;
                    }
                    if fix % 2 == 1 && d.len() >= 32 {
                        let m1 = d.len() - 32;
                        let m = mac(&b_mac1, &d[..m1]);
                        d[m1..m1 + 16].copy_from_slice(&m);
                    }
                    queue.submit(&b, src(input.byte(), input.byte()), &d);
                    worker.drain(&b, &cap_b, now);
                }
            }
            4 => {
                // A raw message of one of the handshake types, mac1 valid if asked.
                let kind = input.byte();
                let (ty, len) = match kind % 3 {
                    0 => (1u8, INITIATION_LEN),
                    1 => (2, RESPONSE_LEN),
                    _ => (3, COOKIE_REPLY_LEN),
                };
                let mut d = vec![ty, 0, 0, 0];
                d.extend_from_slice(input.bytes(len - 4));
                d.resize(len, 0);
                if kind & 0x80 != 0 && ty != 3 {
                    let m1 = len - 32;
                    let m = mac(&b_mac1, &d[..m1]);
                    d[m1..m1 + 16].copy_from_slice(&m);
                }
                queue.submit(&b, src(input.byte(), input.byte()), &d);
                worker.drain(&b, &cap_b, now);
            }
            5 => b.force_under_load(match input.byte() % 3 {
                0 => None,
                1 => Some(true),
                _ => Some(false),
            }),
            6 => b.note_handshake_backlog(usize::from(input.u16()), now),
            7 => now += Duration::from_millis(u64::from(input.u16()) * 50),
            8 => {
                a.handle_timeout(now, &cap_a);
                b.handle_timeout(now, &cap_b);
            }
            _ => {
                // Any datagram at all, straight to B's handshake entry point.
                let n = usize::from(input.byte());
                let d = input.bytes(n).to_vec();
                b.receive_handshake(src(0, 3), &d, now, &cap_b);
            }
        }
        // Whatever happens, the index table stays small: a pending handshake and three
        // sessions per side, and nothing that piles up.
        assert!(
            b.index_entries() <= 8,
            "B's index table grew to {}",
            b.index_entries()
        );
        assert!(
            a.index_entries() <= 8,
            "A's index table grew to {}",
            a.index_entries()
        );
        if seen.len() > 64 {
            seen.drain(..32);
        }
    }
}

/// The UAPI: the input is what a client writes on the socket; behind it, a real device
/// that applies each `set` (after its limits check) and answers each `get`.
pub fn uapi(data: &[u8]) {
    struct Handler(Device);
    impl UapiHandler for Handler {
        fn get(&self) -> DeviceSnapshot {
            self.0.snapshot()
        }
        fn set(&self, req: SetRequest) -> Result<(), UapiError> {
            self.0
                .check(&req)
                .map_err(|e| UapiError::invalid(e.to_string()))?;
            self.0
                .apply(&req, Instant::now())
                .map_err(|e| UapiError::invalid(e.to_string()))
        }
    }
    struct Stream<'a> {
        input: Cursor<&'a [u8]>,
        output: Vec<u8>,
    }
    impl Read for Stream<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }
    impl Write for Stream<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let h = Handler(Device::new(1420));
    let mut s = Stream {
        input: Cursor::new(data),
        output: Vec::new(),
    };
    handle_connection(&mut s, &h);
    // Every reply ends with an errno line and the empty line.
    let out = String::from_utf8(s.output).expect("replies are text");
    assert!(
        out.is_empty() || out.ends_with("\n\n"),
        "a reply is cut: {out:?}"
    );
    // What the device holds is what a get shows, and it formats.
    let _ = format_get(&h.0.snapshot());
}

/// The configuration file parser, and applying what it parsed to a device.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(parsed) = mpwg::control::config::parse(&text, Path::new("fuzz.conf")) {
        let d = Device::new(1420);
        if d.check(&parsed.request).is_ok() {
            d.apply(&parsed.request, Instant::now()).unwrap();
            let snap = d.snapshot();
            let _ = format_get(&snap);
        }
    }
}

/// GSO splitting and GRO coalescing, as the TUN edge does them: a virtio-net header
/// and a super-packet from the input are split (what a TX worker's TUN read does); the
/// pieces, as sealed-size messages, are coalesced into UDP GSO batches (what the TX
/// worker does before sending); and packets (the split ones, or raw ones from the
/// input) are coalesced for a TUN write (what the receive side does).
pub fn gso_gro(data: &[u8]) {
    use tun_rs::{GROTable, VirtioNetHdr, VIRTIO_NET_HDR_LEN};
    let mut input = Input(data);
    let mode = input.byte();
    let hdr = VirtioNetHdr {
        flags: input.byte() & 3,
        gso_type: [0u8, 1, 3, 4, 5, 0x81][usize::from(input.byte() % 6)],
        hdr_len: input.u16(),
        gso_size: input.u16() % 2048,
        csum_start: input.u16(),
        csum_offset: input.u16(),
    };
    let is_v6 = input.byte() & 1 == 1;
    let mut packets: Vec<Vec<u8>> = Vec::new();
    if mode & 1 == 0 {
        let mut sup = input.bytes(65535).to_vec();
        let mut bufs: Vec<Vec<u8>> = (0..64)
            .map(|_| vec![0u8; HEADROOM + 2048 + TAILROOM])
            .collect();
        let mut sizes = vec![0usize; 64];
        if let Ok(n) = tun_rs::gso_split(&mut sup, hdr, &mut bufs, &mut sizes, HEADROOM, is_v6) {
            assert!(n <= bufs.len());
            for (b, &len) in bufs.iter().zip(&sizes).take(n) {
                assert!(
                    HEADROOM + len <= b.len(),
                    "a split packet overran its buffer"
                );
                packets.push(b[HEADROOM..HEADROOM + len].to_vec());
            }
        }
    } else {
        while !input.done() && packets.len() < 64 {
            let n = usize::from(input.u16() % 2048);
            packets.push(input.bytes(n).to_vec());
        }
    }
    // UDP GSO batches of "sealed" messages of these sizes, to one or two peers.
    let peers = [
        Arc::new(Peer::new(Key([1; 32]), None)),
        Arc::new(Peer::new(Key([2; 32]), None)),
    ];
    let mut batch = GsoBatch::default();
    let mut sent: Vec<usize> = Vec::new();
    let take = |batch: &GsoBatch, sent: &mut Vec<usize>| {
        if let Some(r) = batch.ready() {
            assert_eq!(r.parts.len(), r.count);
            assert!(
                r.bytes <= r.segment * r.count,
                "a segment is over the segment size"
            );
            let (last, rest) = r.parts.split_last().expect("a ready batch is not empty");
            assert!(rest.iter().all(|&(_, len)| len == r.segment));
            assert!(last.1 <= r.segment);
            sent.extend(r.parts.iter().map(|&(i, _)| i));
        }
    };
    for (i, p) in packets.iter().enumerate() {
        let peer = &peers[usize::from(mode >> 1 & 1) * (i % 2)];
        let len = p.len() + 32;
        if !batch.fits(peer, len) {
            take(&batch, &mut sent);
            batch.clear();
        }
        batch.push(peer, i, len, !p.is_empty());
    }
    take(&batch, &mut sent);
    let all: Vec<usize> = (0..packets.len()).collect();
    assert_eq!(sent, all, "every message is sent once, in order");
    // GRO coalescing for a TUN write, at the offset the receive side writes from.
    let mut bufs: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            let mut b = Vec::with_capacity(PACKET_OFFSET + 65535);
            b.resize(PACKET_OFFSET, 0);
            b.extend_from_slice(p);
            b
        })
        .collect();
    // mpwg's own coalescer, which the TUN write uses for TCP, on the same packets: each
    // write stays within one IP packet's size after its virtio header, and either asks
    // nothing or is a TCP GSO super-packet.
    let mut tcp: Vec<Vec<u8>> = bufs
        .iter()
        .filter(|b| mpwg::io::tun::gro::kind(&b[PACKET_OFFSET..]) == mpwg::io::tun::gro::Kind::Tcp)
        .cloned()
        .collect();
    let mut ours = mpwg::io::tun::gro::Coalescer::default();
    ours.plan(&mut tcp, PACKET_OFFSET);
    let mut writes = 0;
    ours.write(
        &tcp,
        PACKET_OFFSET,
        &mut |iov| {
            let len: usize = iov.iter().map(|s| s.len()).sum();
            let head = &iov[0][..VIRTIO_NET_HDR_LEN];
            let gso = VirtioNetHdr::decode(head).expect("a whole virtio header");
            if iov.len() > 1 {
                assert!(
                    len <= VIRTIO_NET_HDR_LEN + 65535,
                    "a super-packet over 64 KiB"
                );
                assert!([1, 4].contains(&gso.gso_type) && gso.gso_size > 0);
            } else {
                assert!(head.iter().all(|&b| b == 0), "a packet alone asks nothing");
            }
            writes += 1;
            Ok(len)
        },
        &|_| false,
    )
    .expect("the test writer never fails");
    assert!(writes <= tcp.len());
    let mut gro = GROTable::new();
    let _ = gro.apply_gro(&mut bufs, PACKET_OFFSET, mode & 4 != 0);
}
