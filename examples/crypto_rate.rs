//! The box's crypto ceiling, for `scripts/bench.sh`: how many bytes of plaintext one core
//! seals, and opens, per CPU second with mpwg's transport session (ring's
//! ChaCha20-Poly1305, in place), at one packet size.
//!
//! ```sh
//! cargo build --release --example crypto_rate
//! target/release/examples/crypto_rate [SECONDS] [SIZE]    # default 0.5 s, 1420 B
//! ```
//!
//! Prints one line: `seal_gbps=… open_gbps=… size=… cpu_s=…`. Rates are per second of
//! this thread's own CPU time (`/proc/thread-self/schedstat`), not of wall time, so a
//! build next door that takes the core away for a while does not lower them.
//!
//! Every byte through a tunnel is sealed once at one end and opened once at the other;
//! on a box that runs both ends, a GB of goodput therefore costs at least
//! `8 / seal_gbps + 8 / open_gbps` CPU seconds of crypto. `scripts/bench/report.py`
//! adds that to what raw veth TCP costs the same box in the same run to state the
//! ceiling a tunnel could reach here.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mpwg::protocol::noise::handshake::SessionKeys;
use mpwg::protocol::session::{Session, HEADROOM, TAILROOM};

/// Messages sealed ahead of each timed open pass: opening needs fresh ciphertext.
const CHUNK: usize = 256;

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (nanoseconds on CPU).
/// Falls back to wall time where the file is missing (then rates include preemption).
fn cpu_now() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// A clock that reads this thread's CPU time, or wall time where it cannot.
struct Clock {
    start_cpu: Option<Duration>,
    start_wall: Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            start_cpu: cpu_now(),
            start_wall: Instant::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        match (self.start_cpu, cpu_now()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => self.start_wall.elapsed(),
        }
    }
}

fn sessions() -> (Session, Session) {
    let now = Instant::now();
    let a = SessionKeys {
        send: [7; 32],
        recv: [9; 32],
        local_index: 1,
        remote_index: 2,
        initiator: true,
    };
    (Session::new(&a, now), Session::new(&a.mirrored(), now))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0 && s.is_finite())
        .unwrap_or(0.5);
    let size: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|&s| (1..=65000).contains(&s))
        .unwrap_or(1420);
    let budget = Duration::from_secs_f64(secs);
    let (a, b) = sessions();
    let mut buf = vec![0x5au8; HEADROOM + size + TAILROOM];

    // Seal: the same buffer again and again (its contents do not change the cost).
    let clock = Clock::start();
    let mut sealed = 0u64;
    while clock.elapsed() < budget {
        for _ in 0..64 {
            let n = a.seal(&mut buf, size, size).expect("room to seal");
            black_box(&buf[..n]);
            sealed += 1;
        }
    }
    let seal_s = clock.elapsed().as_secs_f64();

    // Open: seal a chunk untimed, then time opening it.
    let mut chunk: Vec<Vec<u8>> = (0..CHUNK).map(|_| buf.clone()).collect();
    let mut opened = 0u64;
    let mut open_time = Duration::ZERO;
    while open_time < budget {
        let mut lens = [0usize; CHUNK];
        for (m, l) in chunk.iter_mut().zip(lens.iter_mut()) {
            *l = a.seal(m, size, size).expect("room to seal");
        }
        let clock = Clock::start();
        for (m, &l) in chunk.iter_mut().zip(&lens) {
            let plain = b.decrypt(&mut m[..l]).expect("a message just sealed opens");
            black_box(plain);
            opened += 1;
        }
        open_time += clock.elapsed();
    }
    let open_s = open_time.as_secs_f64();
    let gbps = |n: u64, s: f64| n as f64 * size as f64 * 8.0 / s / 1e9;
    println!(
        "seal_gbps={:.3} open_gbps={:.3} size={size} cpu_s={:.3}",
        gbps(sealed, seal_s),
        gbps(opened, open_s),
        seal_s + open_s
    );
}
