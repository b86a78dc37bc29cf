//! Per-core cost of WireGuard's transport crypto and handshake, three ways side by side:
//!
//! * `mpwg`: [`mpwg::protocol::session::Session`], sealing and opening in place, shared by threads
//!   through an `Arc` (atomic send counter, replay window behind a short lock).
//! * `boringtun`: `boringtun::noise::Tunn::encapsulate` / `decapsulate` (0.6, a copy per
//!   packet, `&mut self`: two threads on one peer share it behind a mutex, as its
//!   device does).
//! * `ring`: ChaCha20-Poly1305 from `ring::aead::LessSafeKey` alone, no header, no replay
//!   window: the floor that a WireGuard data path built on ring can approach.
//!
//! Groups (criterion reports bytes/s of plaintext, or handshakes/s):
//!
//! * `seal_1thread`, `open_1thread`: one thread, packets of 64, 512 and 1420 bytes.
//! * `seal_2threads_one_peer`, `open_2threads_one_peer`: two threads on one peer's
//!   session at once; the throughput is the sum of both threads.
//! * `handshake`: a whole exchange on one core (initiation and response made, macs
//!   written and checked, both consumed), and the responder's half alone.
//!
//! Opening needs a fresh counter for every message (replay windows), so the open
//! benchmarks seal a chunk of messages untimed, then time opening them; a chunk spans
//! fewer counters than boringtun's 1024-packet window, so no message is ever refused,
//! and a refused one fails the benchmark rather than flattering it.
//!
//! This box has two cores and is shared: while each benchmark runs, the CPU time that
//! other processes take (from /proc/stat, less this process's own) is written beside
//! criterion's figures (target/criterion/GROUP/NAME/SIZE/mpwg-other-load.txt, in cores),
//! and a warning is printed when it passes a tenth of a core: a two-thread figure
//! measured while a build ran next door is not a figure.
//!
//! `cargo bench --bench crypto` takes about a minute and a half on two cores; add
//! `-- --measurement-time 5` for steadier figures, or a filter such as `-- open_`.
//! `scripts/bench/crypto_table.py` turns target/criterion into a table with ratios.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use criterion::measurement::WallTime;
use criterion::{criterion_group, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use parking_lot::Mutex;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use mpwg::protocol::noise::cookie::{CookieChecker, CookieState, MacCheck};
use mpwg::protocol::noise::handshake::{
    consume_initiation, consume_response, create_initiation, create_response, InitiatorState,
    SessionKeys, StaticKeys,
};
use mpwg::protocol::noise::messages::{INITIATION_LEN, RESPONSE_LEN};
use mpwg::protocol::noise::tai64::Tai64n;
use mpwg::protocol::session::{Session, HEADROOM, TAILROOM};

const SIZES: [usize; 3] = [64, 512, 1420];
const MTU: usize = 1420;
/// Messages sealed ahead per thread in the open benchmarks. Two threads' chunks span
/// 896 counters: inside boringtun's replay window of 1024, and mpwg's of 8128.
const CHUNK: usize = 448;
/// Room for any sealed packet here: header, 1420 bytes, padding and tag.
const BUF: usize = HEADROOM + 1440 + TAILROOM;

/// An IPv4 packet of `size` bytes (boringtun checks the header of what it decrypts).
fn ip_packet(size: usize) -> Vec<u8> {
    let mut p = vec![0x5a; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 78, 0, 1]);
    p[16..20].copy_from_slice(&[10, 78, 0, 2]);
    p
}

/// One message buffer: the packet as sealed (or about to be), and an output buffer for
/// implementations that decrypt into another buffer.
struct Msg {
    buf: Vec<u8>,
    len: usize,
    out: Vec<u8>,
}

impl Msg {
    fn new() -> Msg {
        Msg {
            buf: vec![0; BUF],
            len: 0,
            out: vec![0; BUF],
        }
    }
}

// ------------------------------------------------------------------ the three systems

/// A pair of mpwg sessions, a -> b.
fn mpwg_pair() -> (Session, Session) {
    let now = Instant::now();
    let a = SessionKeys {
        send: [1; 32],
        recv: [2; 32],
        local_index: 10,
        remote_index: 20,
        initiator: true,
    };
    (Session::new(&a, now), Session::new(&a.mirrored(), now))
}

fn mpwg_seal(s: &Session, m: &mut Msg, packet: &[u8]) {
    m.buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
    m.len = s.seal(&mut m.buf, packet.len(), MTU).expect("seal");
}

/// What the receive path does for one message: window check, decryption in place,
/// counter commit.
fn mpwg_open(s: &Session, m: &mut Msg) -> bool {
    let msg = &mut m.buf[..m.len];
    let counter = Session::counter_of(msg);
    !s.replay_window().seen(counter) && s.decrypt(msg).is_ok() && s.replay_window().commit(counter)
}

/// Two boringtun tunnels with a finished handshake, a -> b ready for data both ways.
fn boringtun_pair() -> (Tunn, Tunn) {
    let sa = StaticSecret::from([3u8; 32]);
    let sb = StaticSecret::from([4u8; 32]);
    let (pa, pb) = (PublicKey::from(&sa), PublicKey::from(&sb));
    let unlimited = |p: &PublicKey| Some(Arc::new(RateLimiter::new(p, u64::MAX)));
    let mut a = Tunn::new(sa, pb, None, None, 1, unlimited(&pa)).expect("tunn a");
    let mut b = Tunn::new(sb, pa, None, None, 2, unlimited(&pb)).expect("tunn b");
    let (mut x, mut y) = (vec![0u8; 2048], vec![0u8; 2048]);
    let init = match a.format_handshake_initiation(&mut x, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        r => panic!("boringtun initiation: {r:?}"),
    };
    let resp = match b.decapsulate(None, &init, &mut y) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        r => panic!("boringtun response: {r:?}"),
    };
    let keepalive = match a.decapsulate(None, &resp, &mut x) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        r => panic!("boringtun keepalive: {r:?}"),
    };
    match b.decapsulate(None, &keepalive, &mut y) {
        TunnResult::Done => {}
        r => panic!("boringtun keepalive at b: {r:?}"),
    }
    (a, b)
}

fn boringtun_seal(t: &mut Tunn, m: &mut Msg, packet: &[u8]) {
    m.len = match t.encapsulate(packet, &mut m.buf) {
        TunnResult::WriteToNetwork(p) => p.len(),
        r => panic!("boringtun encapsulate: {r:?}"),
    };
}

fn boringtun_open(t: &mut Tunn, m: &mut Msg) -> bool {
    matches!(
        t.decapsulate(None, &m.buf[..m.len], &mut m.out),
        TunnResult::WriteToTunnelV4(..)
    )
}

/// Raw ring: a key and a counter for nonces. The message is the counter (8 bytes),
/// the ciphertext and the tag.
struct Raw {
    key: LessSafeKey,
    counter: AtomicU64,
}

impl Raw {
    fn new() -> Raw {
        Raw {
            key: LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7; 32]).expect("key")),
            counter: AtomicU64::new(0),
        }
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn ring_seal(r: &Raw, m: &mut Msg, packet: &[u8]) {
    let c = r.counter.fetch_add(1, Ordering::Relaxed);
    let n = packet.len();
    m.buf[..8].copy_from_slice(&c.to_le_bytes());
    m.buf[8..8 + n].copy_from_slice(packet);
    let tag = r
        .key
        .seal_in_place_separate_tag(nonce(c), Aad::empty(), &mut m.buf[8..8 + n])
        .expect("seal");
    m.buf[8 + n..8 + n + 16].copy_from_slice(tag.as_ref());
    m.len = 8 + n + 16;
}

/// Seals whatever the buffer holds, in place, as a data path would: no copy in.
fn ring_seal_in_place(r: &Raw, m: &mut Msg, n: usize) {
    let c = r.counter.fetch_add(1, Ordering::Relaxed);
    m.buf[..8].copy_from_slice(&c.to_le_bytes());
    let tag = r
        .key
        .seal_in_place_separate_tag(nonce(c), Aad::empty(), &mut m.buf[8..8 + n])
        .expect("seal");
    m.buf[8 + n..8 + n + 16].copy_from_slice(tag.as_ref());
    m.len = 8 + n + 16;
}

fn ring_open(r: &Raw, m: &mut Msg) -> bool {
    let c = u64::from_le_bytes(m.buf[..8].try_into().expect("8 bytes"));
    r.key
        .open_in_place(nonce(c), Aad::empty(), &mut m.buf[8..m.len])
        .is_ok()
}

// ------------------------------------------------------------------ other load

/// Busy clock ticks of the whole machine (/proc/stat) and of this process (/proc/self/stat).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq: all but idle and iowait
    let machine = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest: Vec<&str> = own.rsplit_once(") ")?.1.split_whitespace().collect();
    // rest[0] is field 3 (state): utime and stime are fields 14 and 15
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((machine, utime + stime))
}

fn other_load_file(label: &str) -> std::path::PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    std::path::Path::new(&target)
        .join("criterion")
        .join(label)
        .join("mpwg-other-load.txt")
}

/// Runs one benchmark and records how many cores other processes kept busy meanwhile.
fn watched(
    g: &mut BenchmarkGroup<'_, WallTime>,
    group: &str,
    name: &str,
    size: Option<usize>,
    f: impl FnMut(&mut criterion::Bencher<'_, WallTime>),
) {
    let id = match size {
        Some(n) => BenchmarkId::new(name, n),
        None => BenchmarkId::from_parameter(name),
    };
    let (t0, c0) = (Instant::now(), cpu_ticks());
    g.bench_function(id, f);
    let (wall, c1) = (t0.elapsed().as_secs_f64(), cpu_ticks());
    // a benchmark left out by a filter returns at once: nothing to record
    if wall < 0.1 {
        return;
    }
    if let (Some((m0, o0)), Some((m1, o1))) = (c0, c1) {
        // USER_HZ is 100 on Linux
        let other = (m1.saturating_sub(m0).saturating_sub(o1 - o0)) as f64 / 100.0 / wall;
        let label = match size {
            Some(n) => format!("{group}/{name}/{n}"),
            None => format!("{group}/{name}"),
        };
        if other > 0.1 {
            eprintln!(
                "warning: other processes kept {other:.2} cores busy while {label} ran: \
                 its figure is low, the more so for two threads"
            );
        }
        let _ = std::fs::write(other_load_file(&label), format!("{other:.3}\n"));
    }
}

// ------------------------------------------------------------------ harnesses

/// Times `iters` opens on one thread: chunks are sealed untimed, then opened timed.
fn open_1thread(
    iters: u64,
    mut seal: impl FnMut(&mut Msg),
    mut open: impl FnMut(&mut Msg) -> bool,
) -> Duration {
    let mut msgs: Vec<Msg> = (0..2 * CHUNK).map(|_| Msg::new()).collect();
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(msgs.len());
        msgs[..n].iter_mut().for_each(&mut seal);
        let t = Instant::now();
        for m in &mut msgs[..n] {
            if !open(m) {
                panic!("a fresh message was refused: the benchmark would be wrong");
            }
        }
        total += t.elapsed();
        left -= n;
    }
    total
}

/// Spins until `cell` reaches `want` (yielding now and then: this box has two cores).
fn spin_until(cell: &AtomicU64, want: u64) {
    let mut spins = 0u32;
    while cell.load(Ordering::Acquire) < want {
        spins += 1;
        if spins >= 256 {
            spins = 0;
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Times `iters` opens on each of two threads at once, on one shared receiver. The main
/// thread seals every chunk (untimed), handing every other message to the worker, then
/// both open their halves; the time is from the start signal until both are done.
fn open_2threads(
    iters: u64,
    mut seal: impl FnMut(&mut Msg),
    open: impl Fn(&mut Msg) -> bool + Sync,
) -> Duration {
    let mut mine: Vec<Msg> = (0..CHUNK).map(|_| Msg::new()).collect();
    let theirs: Mutex<Vec<Msg>> = Mutex::new((0..CHUNK).map(|_| Msg::new()).collect());
    let go = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let count = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let refused = AtomicBool::new(false);
    let mut total = Duration::ZERO;
    thread::scope(|s| {
        s.spawn(|| {
            let mut round = 0;
            loop {
                round += 1;
                spin_until(&go, round);
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let n = count.load(Ordering::Acquire) as usize;
                let mut msgs = theirs.lock();
                for m in &mut msgs[..n] {
                    if !open(m) {
                        refused.store(true, Ordering::Relaxed);
                    }
                }
                drop(msgs);
                done.store(round, Ordering::Release);
            }
        });
        let mut left = iters as usize;
        let mut round = 0;
        while left > 0 {
            let n = left.min(CHUNK);
            {
                let mut other = theirs.lock();
                for (x, y) in mine[..n].iter_mut().zip(other[..n].iter_mut()) {
                    seal(x);
                    seal(y);
                }
            }
            round += 1;
            count.store(n as u64, Ordering::Release);
            let t = Instant::now();
            go.store(round, Ordering::Release);
            for m in &mut mine[..n] {
                if !open(m) {
                    refused.store(true, Ordering::Relaxed);
                }
            }
            spin_until(&done, round);
            total += t.elapsed();
            left -= n;
        }
        stop.store(true, Ordering::Release);
        go.store(round + 1, Ordering::Release);
    });
    assert!(
        !refused.load(Ordering::Relaxed),
        "a fresh message was refused: the benchmark would be wrong"
    );
    total
}

/// Times `iters` seals on each of two threads at once; `seal` gets the thread's buffer.
fn seal_2threads(iters: u64, seal: impl Fn(&mut Msg) + Sync) -> Duration {
    let start = Barrier::new(2);
    thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut m = Msg::new();
            start.wait();
            for _ in 0..iters {
                seal(&mut m);
                black_box(&m.buf);
            }
        });
        let mut m = Msg::new();
        start.wait();
        let t = Instant::now();
        for _ in 0..iters {
            seal(&mut m);
            black_box(&m.buf);
        }
        worker.join().expect("worker");
        t.elapsed()
    })
}

// ------------------------------------------------------------------ benchmarks

fn seal_1thread(c: &mut Criterion) {
    const GROUP: &str = "seal_1thread";
    let mut g = c.benchmark_group(GROUP);
    for size in SIZES {
        let packet = ip_packet(size);
        g.throughput(Throughput::Bytes(size as u64));
        let (a, _) = mpwg_pair();
        let mut m = Msg::new();
        m.buf[HEADROOM..HEADROOM + size].copy_from_slice(&packet);
        // In place, as the data path does: the TUN read lands at HEADROOM.
        watched(&mut g, GROUP, "mpwg", Some(size), |b| {
            b.iter(|| black_box(a.seal(&mut m.buf, size, MTU).expect("seal")))
        });
        let (mut ta, _) = boringtun_pair();
        watched(&mut g, GROUP, "boringtun", Some(size), |b| {
            b.iter(|| boringtun_seal(&mut ta, &mut m, black_box(&packet)))
        });
        let raw = Raw::new();
        watched(&mut g, GROUP, "ring", Some(size), |b| {
            b.iter(|| ring_seal_in_place(&raw, &mut m, black_box(size)))
        });
    }
    g.finish();
}

fn open_1thread_bench(c: &mut Criterion) {
    const GROUP: &str = "open_1thread";
    let mut g = c.benchmark_group(GROUP);
    for size in SIZES {
        let packet = ip_packet(size);
        g.throughput(Throughput::Bytes(size as u64));
        let (a, bs) = mpwg_pair();
        watched(&mut g, GROUP, "mpwg", Some(size), |b| {
            b.iter_custom(|iters| {
                open_1thread(iters, |m| mpwg_seal(&a, m, &packet), |m| mpwg_open(&bs, m))
            })
        });
        let (mut ta, mut tb) = boringtun_pair();
        watched(&mut g, GROUP, "boringtun", Some(size), |b| {
            b.iter_custom(|iters| {
                open_1thread(
                    iters,
                    |m| boringtun_seal(&mut ta, m, &packet),
                    |m| boringtun_open(&mut tb, m),
                )
            })
        });
        let raw = Raw::new();
        watched(&mut g, GROUP, "ring", Some(size), |b| {
            b.iter_custom(|iters| {
                open_1thread(
                    iters,
                    |m| ring_seal(&raw, m, &packet),
                    |m| ring_open(&raw, m),
                )
            })
        });
    }
    g.finish();
}

fn seal_2threads_bench(c: &mut Criterion) {
    const GROUP: &str = "seal_2threads_one_peer";
    let mut g = c.benchmark_group(GROUP);
    for size in SIZES {
        let packet = ip_packet(size);
        g.throughput(Throughput::Bytes(2 * size as u64));
        let a = Arc::new(mpwg_pair().0);
        watched(&mut g, GROUP, "mpwg", Some(size), |b| {
            b.iter_custom(|iters| {
                seal_2threads(iters, |m| {
                    black_box(a.seal(&mut m.buf, size, MTU).expect("seal"));
                })
            })
        });
        let ta = Mutex::new(boringtun_pair().0);
        watched(&mut g, GROUP, "boringtun", Some(size), |b| {
            b.iter_custom(|iters| {
                seal_2threads(iters, |m| boringtun_seal(&mut ta.lock(), m, &packet))
            })
        });
        let raw = Raw::new();
        watched(&mut g, GROUP, "ring", Some(size), |b| {
            b.iter_custom(|iters| seal_2threads(iters, |m| ring_seal_in_place(&raw, m, size)))
        });
    }
    g.finish();
}

fn open_2threads_bench(c: &mut Criterion) {
    const GROUP: &str = "open_2threads_one_peer";
    let mut g = c.benchmark_group(GROUP);
    for size in SIZES {
        let packet = ip_packet(size);
        g.throughput(Throughput::Bytes(2 * size as u64));
        let (a, bs) = mpwg_pair();
        let bs = Arc::new(bs);
        watched(&mut g, GROUP, "mpwg", Some(size), |b| {
            b.iter_custom(|iters| {
                open_2threads(iters, |m| mpwg_seal(&a, m, &packet), |m| mpwg_open(&bs, m))
            })
        });
        let (mut ta, tb) = boringtun_pair();
        let tb = Mutex::new(tb);
        watched(&mut g, GROUP, "boringtun", Some(size), |b| {
            b.iter_custom(|iters| {
                open_2threads(
                    iters,
                    |m| boringtun_seal(&mut ta, m, &packet),
                    |m| boringtun_open(&mut tb.lock(), m),
                )
            })
        });
        let raw = Raw::new();
        watched(&mut g, GROUP, "ring", Some(size), |b| {
            b.iter_custom(|iters| {
                open_2threads(
                    iters,
                    |m| ring_seal(&raw, m, &packet),
                    |m| ring_open(&raw, m),
                )
            })
        });
    }
    g.finish();
}

/// mpwg's side of a handshake as the daemon runs it: macs written and checked, static
/// DH precomputed per peer, sessions made from the keys.
struct MpwgPeer {
    keys: StaticKeys,
    peer: [u8; 32],
    static_static: Option<mpwg::protocol::noise::crypto::Secret>,
    cookie: CookieState,
    checker: CookieChecker,
}

impl MpwgPeer {
    fn pair() -> (MpwgPeer, MpwgPeer) {
        let a = StaticKeys::new([5; 32]);
        let b = StaticKeys::new([6; 32]);
        let make = |ours: StaticKeys, peer: [u8; 32]| MpwgPeer {
            static_static: ours.dh(&peer),
            cookie: CookieState::new(&peer),
            checker: CookieChecker::new(&ours.public),
            keys: ours,
            peer,
        };
        let (pa, pb) = (a.public, b.public);
        (make(a, pb), make(b, pa))
    }
}

const FROM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 1, 1)), 51820);

fn mpwg_initiation(a: &mut MpwgPeer) -> ([u8; INITIATION_LEN], InitiatorState) {
    let (mut init, state) = create_initiation(
        &a.keys,
        &a.peer,
        a.static_static.as_deref(),
        1,
        Tai64n::now(),
    )
    .expect("init");
    a.cookie.add_macs(&mut init, Instant::now());
    (init, state)
}

fn mpwg_respond(b: &mut MpwgPeer, init: &[u8]) -> ([u8; RESPONSE_LEN], Session) {
    assert_ne!(
        b.checker.check(init, FROM, Instant::now()),
        MacCheck::BadMac1
    );
    let ss = b.static_static.clone();
    let consumed = consume_initiation(&b.keys, init, |_| Some(ss)).expect("consume init");
    let (mut resp, keys) = create_response(consumed, &[0; 32], 2).expect("response");
    b.cookie.add_macs(&mut resp, Instant::now());
    (resp, Session::new(&keys, Instant::now()))
}

fn handshake(c: &mut Criterion) {
    const GROUP: &str = "handshake";
    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Elements(1));
    let (mut a, mut b) = MpwgPeer::pair();
    watched(&mut g, GROUP, "mpwg_full_exchange", None, |bench| {
        bench.iter(|| {
            let (init, state) = mpwg_initiation(&mut a);
            let (resp, sb) = mpwg_respond(&mut b, &init);
            assert_ne!(
                a.checker.check(&resp, FROM, Instant::now()),
                MacCheck::BadMac1
            );
            let keys = consume_response(&a.keys, &state, &[0; 32], &resp).expect("consume resp");
            black_box((Session::new(&keys, Instant::now()), sb))
        })
    });
    watched(&mut g, GROUP, "mpwg_responder_only", None, |bench| {
        bench.iter_batched(
            || mpwg_initiation(&mut a).0,
            |init| black_box(mpwg_respond(&mut b, &init)),
            BatchSize::SmallInput,
        )
    });
    let (mut ta, mut tb) = boringtun_pair();
    let (mut x, mut y) = (vec![0u8; 256], vec![0u8; 256]);
    watched(&mut g, GROUP, "boringtun_full_exchange", None, |bench| {
        bench.iter(|| {
            let init = match ta.format_handshake_initiation(&mut x, true) {
                TunnResult::WriteToNetwork(p) => p,
                r => panic!("boringtun initiation: {r:?}"),
            };
            let resp = match tb.decapsulate(None, init, &mut y) {
                TunnResult::WriteToNetwork(p) => p,
                r => panic!("boringtun response: {r:?}"),
            };
            let mut z = [0u8; 256];
            match ta.decapsulate(None, resp, &mut z) {
                TunnResult::WriteToNetwork(p) => black_box(p.len()),
                r => panic!("boringtun keepalive: {r:?}"),
            };
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(400))
        .measurement_time(Duration::from_millis(1200))
        .sample_size(20)
        .noise_threshold(0.03)
}

criterion_group! {
    name = benches;
    config = config();
    targets = seal_1thread, open_1thread_bench, seal_2threads_bench, open_2threads_bench, handshake
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
