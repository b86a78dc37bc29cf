//! A handshake load generator for `scripts/bench.sh --server`: many WireGuard peers
//! re-handshaking with one server as fast as it answers, from one UDP socket.
//!
//! ```sh
//! target/release/examples/handshake_load SERVER:PORT SERVER_PUBLIC_KEY SECONDS KEYFILE
//! ```
//!
//! KEYFILE holds one base64 private key per line: one peer each, configured on the server
//! beforehand. Every peer keeps one initiation in flight: when the response comes, the
//! session keys are derived (so the exchange is whole) and the next initiation goes out at
//! once, but never sooner than 21 ms after the last; an initiation unanswered for 100 ms
//! is sent again (a new one). Cookie replies
//! (the server under load) are consumed, and the next initiation carries mac2, as a real
//! peer's would. WireGuard servers refuse initiations from one peer closer together than
//! 20 ms (mpwg and wireguard-go), so each peer alone is capped near 47 exchanges a second:
//! the server's own limit shows only when the rate falls below that.
//!
//! Prints one line: `handshakes=N seconds=S rate=R cookies=C timeouts=T peers=P`.
//! Only sends to the address it is given (a namespace of the bench's own).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mpwg::protocol::key::Key;
use mpwg::protocol::noise::cookie::CookieState;
use mpwg::protocol::noise::handshake::{
    consume_response, create_initiation, response_receiver, InitiatorState, StaticKeys,
};
use mpwg::protocol::noise::messages::{
    cookie_reply, COOKIE_REPLY_LEN, RESPONSE_LEN, TYPE_COOKIE_REPLY, TYPE_RESPONSE,
};
use mpwg::protocol::noise::tai64::Tai64n;

/// How long an initiation waits for its answer before another is sent.
const RETRY: Duration = Duration::from_millis(100);
/// The least time between two initiations of one peer: servers drop initiations from one
/// peer closer together than 20 ms (wireguard-go and mpwg alike).
const PACE: Duration = Duration::from_millis(21);

struct LoadPeer {
    keys: StaticKeys,
    static_static: Option<mpwg::protocol::noise::crypto::Secret>,
    cookie: CookieState,
    pending: Option<(InitiatorState, Instant)>,
    /// When the last initiation went out.
    last_sent: Option<Instant>,
    /// Each initiation gets a new index; its low bits name the peer.
    round: u32,
}

fn usage() -> ! {
    eprintln!("usage: handshake_load SERVER:PORT SERVER_PUBLIC_KEY SECONDS KEYFILE");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        usage();
    }
    let server: SocketAddr = args[0].parse().unwrap_or_else(|_| usage());
    let server_pub = Key::from_base64(args[1].trim()).unwrap_or_else(|_| usage());
    let seconds: f64 = args[2].parse().unwrap_or_else(|_| usage());
    let text = std::fs::read_to_string(&args[3]).unwrap_or_else(|e| {
        eprintln!("handshake_load: {}: {e}", args[3]);
        std::process::exit(1)
    });
    let mut peers: Vec<LoadPeer> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let k = Key::from_base64(l.trim()).unwrap_or_else(|_| usage());
            let keys = StaticKeys::new(k.0);
            LoadPeer {
                static_static: keys.dh(&server_pub.0),
                keys,
                cookie: CookieState::new(&server_pub.0),
                pending: None,
                last_sent: None,
                round: 0,
            }
        })
        .collect();
    if peers.is_empty() || peers.len() > 1 << 16 {
        usage();
    }
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let sock = UdpSocket::bind(bind).expect("a UDP socket");
    sock.set_read_timeout(Some(Duration::from_millis(2)))
        .expect("a read timeout");

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let (mut done, mut cookies, mut timeouts) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 256];
    while Instant::now() < end {
        let now = Instant::now();
        for (i, p) in peers.iter_mut().enumerate() {
            let due = match &p.pending {
                None => true,
                Some((_, sent)) if now.duration_since(*sent) >= RETRY => {
                    timeouts += 1;
                    true
                }
                _ => false,
            };
            let paced = p.last_sent.is_none_or(|t| now.duration_since(t) >= PACE);
            if !due || !paced {
                continue;
            }
            p.round = p.round.wrapping_add(1);
            let index = (p.round << 16) | i as u32;
            let Ok((mut msg, state)) = create_initiation(
                &p.keys,
                &server_pub.0,
                p.static_static.as_deref(),
                index,
                Tai64n::now(),
            ) else {
                continue;
            };
            p.cookie.add_macs(&mut msg, now);
            let _ = sock.send_to(&msg, server);
            p.pending = Some((state, now));
            p.last_sent = Some(now);
        }
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if from != server || n < 8 {
            continue;
        }
        let msg = &buf[..n];
        let index = match (msg[0], n) {
            (TYPE_RESPONSE, RESPONSE_LEN) => response_receiver(msg),
            (TYPE_COOKIE_REPLY, COOKIE_REPLY_LEN) => u32::from_le_bytes(
                msg[cookie_reply::RECEIVER..cookie_reply::RECEIVER + 4]
                    .try_into()
                    .expect("4 bytes"),
            ),
            _ => continue,
        };
        let Some(p) = peers.get_mut((index & 0xffff) as usize) else {
            continue;
        };
        let Some((state, _)) = p.pending.as_ref() else {
            continue;
        };
        if state.local_index != index {
            continue; // the answer to an initiation given up on
        }
        if msg[0] == TYPE_COOKIE_REPLY {
            if p.cookie.consume_reply(msg, Instant::now()) {
                cookies += 1;
                p.pending = None; // the next initiation carries mac2
            }
            continue;
        }
        if consume_response(&p.keys, state, &[0; 32], msg).is_ok() {
            done += 1;
            p.pending = None;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "handshakes={done} seconds={secs:.2} rate={:.1} cookies={cookies} timeouts={timeouts} peers={}",
        done as f64 / secs,
        peers.len()
    );
}
