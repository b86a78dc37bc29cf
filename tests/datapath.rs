//! The batched datapath, seen through the counters `mpwg show` prints: a bulk TCP
//! transfer must go out in UDP GSO batches (fewer send calls than datagrams), come in as
//! UDP GRO batches (fewer receive calls than datagrams), and be read from the TUN as TSO
//! super-packets (fewer reads than packets). Counters, not timings.
//!
//! The datapath configurations (--cores 1/2, --batch 1/64) are exercised by running the
//! interop and multi-path suites, and this file, once per configuration
//! (scripts/test.sh sets MPWG_TEST_ARGS). The counter tests run in the default
//! configuration only; the ordering tests ([`udp_flow_arrives_in_order_over_two_paths`],
//! [`tcp_over_two_paths_reaches_the_receiver_in_order`]) run in every one.

mod common;

use common::*;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// One row of `mpwg show`, by column name.
struct Row(Vec<(String, String)>);

impl Row {
    fn get(&self, column: &str) -> u64 {
        let v = &self
            .0
            .iter()
            .find(|(c, _)| c == column)
            .unwrap_or_else(|| panic!("no column {column}"))
            .1;
        v.parse()
            .unwrap_or_else(|_| panic!("column {column} is not a number: {v}"))
    }
}

/// Splits on runs of two or more spaces (LAST RX holds "3ms ago").
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

fn show(side: &Side) -> (Vec<Row>, Vec<[u64; 4]>) {
    let out = side.ns.run(&[MPWG, "show", &side.dev]);
    let lines: Vec<&str> = out.lines().collect();
    let header = cells(lines[1]);
    let mut rows = Vec::new();
    let mut queues = Vec::new();
    for l in &lines[2..] {
        if let Some(rest) = l.strip_prefix("tun queue ") {
            // "tun queue 0: R reads carried P packets; W write batches carried Q packets"
            let nums: Vec<u64> = rest
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .skip(1)
                .map(|s| s.parse().unwrap())
                .collect();
            queues.push([nums[0], nums[1], nums[2], nums[3]]);
        } else {
            rows.push(Row(header.iter().cloned().zip(cells(l)).collect()));
        }
    }
    (rows, queues)
}

#[test]
fn bulk_transfer_uses_gso_gro_and_tso() {
    let Some(_lab) = lab("bulk_transfer_uses_gso_gro_and_tso") else {
        return;
    };
    if !datapath_args().is_empty() {
        eprintln!("SKIPPED bulk_transfer_uses_gso_gro_and_tso: runs in the default datapath configuration only");
        return;
    }
    let pair = Pair::new(Impl::Mpwg, Impl::Mpwg, Endpoints::Both);
    tcp_transfer(&pair.a.ns, &pair.b.ns, &pair.b.tunnel, 20 << 20, 7);

    let (a_rows, a_queues) = show(&pair.a);
    let (b_rows, b_queues) = show(&pair.b);
    let (tx_pkts, tx_calls) = (a_rows[0].get("TX PKTS"), a_rows[0].get("TX CALLS"));
    let (rx_pkts, rx_calls) = (b_rows[0].get("RX PKTS"), b_rows[0].get("RX CALLS"));
    let reads: u64 = a_queues.iter().map(|q| q[0]).sum();
    let read_pkts: u64 = a_queues.iter().map(|q| q[1]).sum();
    let batches: u64 = b_queues.iter().map(|q| q[2]).sum();
    let written: u64 = b_queues.iter().map(|q| q[3]).sum();
    println!("sender: {tx_pkts} datagrams in {tx_calls} send calls; {read_pkts} TUN packets in {reads} reads");
    println!("receiver: {rx_pkts} datagrams in {rx_calls} receive calls; {written} TUN packets in {batches} write batches");

    assert!(
        tx_pkts > 14_000,
        "20 MiB is at least 14,000 datagrams: {tx_pkts}"
    );
    assert!(
        tx_calls * 2 < tx_pkts,
        "UDP GSO in use: {tx_pkts} datagrams took {tx_calls} send calls"
    );
    assert!(
        reads * 2 < read_pkts,
        "TSO super-packets from the TUN: {read_pkts} packets took {reads} reads"
    );
    assert!(
        rx_calls * 2 < rx_pkts,
        "UDP GRO in use: {rx_pkts} datagrams took {rx_calls} receive calls"
    );
    assert!(
        batches * 2 < written,
        "batched TUN writes: {written} packets in {batches} batches"
    );
    // What the kernel saw: each write(2) to the TUN is one packet on its RX counter, so
    // a flow coalesced before the write shows as fewer packets than mpwg decrypted.
    let kernel_rx = tun_counter(&pair.b, "rx_packets");
    println!("receiver's TUN: {written} packets written as {kernel_rx} (kernel RX count)");
    assert!(
        kernel_rx * 2 < written,
        "packets coalesced (GRO) before the TUN write: {written} packets took {kernel_rx} writes"
    );
    pair.a.daemon.stop();
}

#[test]
fn batch_of_one_sends_one_datagram_per_call() {
    let Some(_lab) = lab("batch_of_one_sends_one_datagram_per_call") else {
        return;
    };
    if !datapath_args().is_empty() {
        eprintln!("SKIPPED batch_of_one_sends_one_datagram_per_call: sets its own --batch");
        return;
    }
    let pair = Pair::with_args(
        Impl::Mpwg,
        Impl::Mpwg,
        Endpoints::Both,
        &["--batch", "1", "--cores", "1"],
    );
    tcp_transfer(&pair.a.ns, &pair.b.ns, &pair.b.tunnel, 2 << 20, 8);
    let (a_rows, _) = show(&pair.a);
    let (tx_pkts, tx_calls) = (a_rows[0].get("TX PKTS"), a_rows[0].get("TX CALLS"));
    println!("--batch 1: {tx_pkts} datagrams in {tx_calls} send calls");
    assert_eq!(tx_pkts, tx_calls, "no GSO batching with --batch 1");
    pair.a.daemon.stop();
}

// ---------------------------------------------------------------------------------
// Order within a flow
// ---------------------------------------------------------------------------------

/// Datagrams in the ordering burst: enough that B's receive side sees many full GRO
/// batches, and (with several decrypt workers) several batches in flight at once.
const BURST: u64 = 100_000;
/// UDP payload of each: a tag, a sequence number, padding. 900 bytes make a sealed
/// datagram of 960, so that 64 of them fit one GSO send (64 KiB).
const BURST_PAYLOAD: usize = 900;
/// Datagrams per send call of the burst's sender (UDP_SEGMENT).
const BURST_GSO: usize = 64;
/// At most this many datagrams in flight (sent, and not yet reached by the receiver):
/// 64 sends of 64, so that every stage holds many batches at once, yet well within
/// the socket buffers of the daemons' paths (8 MiB). This test is about the order the
/// datapath keeps at full speed, not under overload. Without a window (make it
/// `u64::MAX / 2`) the burst overflows the receiving daemon's path sockets, and then
/// the flow can be reordered (seen at commit 3dced24 with --batch 64): a datagram
/// whose copy one path's socket dropped is let through later from the other path's
/// backlog, after datagrams sent after it.
const BURST_WINDOW: u64 = 4096;
/// When nothing new arrived for this long, the sender goes on anyway (the datagrams
/// in flight are lost).
const BURST_STALL: Duration = Duration::from_millis(50);
/// Marks the burst's datagrams, so nothing else that might reach the port is counted.
const BURST_TAG: u64 = 0x6d70_7767_5f6f_7264; // "mpwg_ord"
/// The receiver stops this long after the last datagram once the sender is done.
const BURST_QUIET: Duration = Duration::from_secs(1);

/// The sequence numbers of one flow, as they reached the receiving socket: losses
/// are allowed, reordering (and duplicates) are not.
#[derive(Debug)]
struct Arrivals {
    sent: u64,
    seqs: Vec<u64>,
}

impl Arrivals {
    fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.seqs.len() as u64)
    }

    /// The first place where the sequence is not strictly increasing: (index of the
    /// later datagram in arrival order, the sequence number before it, its own).
    fn first_out_of_order(&self) -> Option<(usize, u64, u64)> {
        self.seqs
            .windows(2)
            .position(|w| w[1] <= w[0])
            .map(|i| (i + 1, self.seqs[i], self.seqs[i + 1]))
    }

    /// How many datagrams arrived with a smaller sequence number than one before them.
    fn late(&self) -> usize {
        let mut max = None;
        let mut late = 0;
        for &s in &self.seqs {
            if max.is_some_and(|m| s <= m) {
                late += 1;
            } else {
                max = Some(s);
            }
        }
        late
    }

    fn summary(&self) -> String {
        let pct = |n: u64| 100.0 * n as f64 / self.sent.max(1) as f64;
        let order = match self.first_out_of_order() {
            None => "strictly increasing".to_string(),
            Some((i, before, after)) => format!(
                "OUT OF ORDER: first at arrival #{i}: seq {after} after seq {before} \
                 (arrivals #{}..: {:?}); {} datagrams arrived after a later one",
                i.saturating_sub(8),
                &self.seqs[i.saturating_sub(8)..(i + 8).min(self.seqs.len())],
                self.late()
            ),
        };
        format!(
            "{} sent, {} arrived ({:.1}%), {} lost ({:.1}%); sequence {order}",
            self.sent,
            self.seqs.len(),
            pct(self.seqs.len() as u64),
            self.lost(),
            pct(self.lost())
        )
    }
}

/// `setsockopt(sock, level, name, &value)` for an int option; panics on failure.
fn set_int_option(sock: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt(2) on a socket we own, with a pointer to a c_int that lives
    // for the call and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {name}, {value}): {}",
        std::io::Error::last_os_error()
    );
}

/// Sends [`BURST`] numbered datagrams from `from_addr` in `from` to `rx` (a socket in
/// the other namespace) as fast as the tunnel carries them, at most [`BURST_WINDOW`]
/// in flight, while a thread reads `rx`; returns what arrived, in order.
///
/// The sender hands the kernel [`BURST_GSO`] datagrams per call (UDP_SEGMENT), so the
/// sending daemon reads them from its TUN as one USO super-packet and sends them on
/// each path as one GSO batch, which the receiving daemon's path sockets read as one
/// GRO batch: large receive batches, as a bulk transfer makes, at a rate a test
/// program can reach (one datagram per send call reaches neither).
fn numbered_burst(from: &Netns, from_addr: &str, rx: UdpSocket) -> Arrivals {
    let to = rx.local_addr().unwrap();
    // The receiving socket must not be what loses datagrams (SO_RCVBUFFORCE: root).
    set_int_option(&rx, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20);
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let sending = Arc::new(AtomicBool::new(true));
    // One more than the highest sequence number received so far.
    let reached = Arc::new(AtomicU64::new(0));
    let (still_sending, reached_rx) = (Arc::clone(&sending), Arc::clone(&reached));
    let receiver = thread::spawn(move || {
        let mut seqs = Vec::with_capacity(BURST as usize);
        let mut buf = [0u8; 2048];
        let mut last = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match rx.recv(&mut buf) {
                Ok(n) if n >= 16 && buf[..8] == BURST_TAG.to_be_bytes() => {
                    let seq = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                    seqs.push(seq);
                    reached_rx.fetch_max(seq + 1, Ordering::AcqRel);
                    last = Instant::now();
                    if seq + 1 == BURST {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if !still_sending.load(Ordering::Acquire) && last.elapsed() >= BURST_QUIET {
                        break;
                    }
                }
                Err(e) => panic!("recv on {to}: {e}"),
            }
        }
        seqs
    });

    let tx = from
        .udp_bind(&format!("{from_addr}:0"))
        .unwrap_or_else(|e| panic!("bind {from_addr}:0 in {}: {e}", from.name()));
    tx.connect(to).unwrap();
    set_int_option(
        &tx,
        libc::SOL_UDP,
        libc::UDP_SEGMENT,
        BURST_PAYLOAD as libc::c_int,
    );
    let mut buf = vec![0u8; BURST_PAYLOAD * BURST_GSO];
    let (mut refused, mut calls, mut stalls) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let (mut seq, mut written_off) = (0u64, 0u64);
    while seq < BURST {
        let n = (BURST - seq).min(BURST_GSO as u64) as usize;
        // Wait for room in the window. After a stall, what was in flight counts as
        // lost, so that a dead tunnel costs one stall per window, not one per send.
        let mut progress = (reached.load(Ordering::Acquire), Instant::now());
        loop {
            let r = reached.load(Ordering::Acquire);
            if seq + n as u64 <= r.max(written_off) + BURST_WINDOW {
                break;
            }
            if r != progress.0 {
                progress = (r, Instant::now());
            } else if progress.1.elapsed() >= BURST_STALL {
                stalls += 1;
                written_off = seq;
                break;
            }
            thread::yield_now();
        }
        for (i, d) in buf.chunks_mut(BURST_PAYLOAD).take(n).enumerate() {
            d[..8].copy_from_slice(&BURST_TAG.to_be_bytes());
            d[8..16].copy_from_slice(&(seq + i as u64).to_be_bytes());
        }
        // A full queue may refuse a send (ENOBUFS): a loss like any other, and the
        // next send goes on with the next numbers.
        if tx.send(&buf[..n * BURST_PAYLOAD]).is_err() {
            refused += n as u64;
        }
        calls += 1;
        seq += n as u64;
    }
    let took = start.elapsed();
    sending.store(false, Ordering::Release);
    let seqs = receiver.join().expect("receiver thread");
    println!(
        "sent {BURST} datagrams of {BURST_PAYLOAD} bytes in {calls} calls in {:.0} ms \
         ({:.0} kpps, {:.2} Gbit/s of payload); {refused} refused by the sending socket; \
         {stalls} stalls of {BURST_STALL:?} with the window ({BURST_WINDOW}) full",
        took.as_secs_f64() * 1e3,
        BURST as f64 / took.as_secs_f64() / 1e3,
        (BURST * BURST_PAYLOAD as u64 * 8) as f64 / took.as_secs_f64() / 1e9,
    );
    Arrivals { sent: BURST, seqs }
}

/// "Packets of one flow reach the TUN in the order they arrived" (DESIGN.md), through
/// a two-path mpwg <-> mpwg tunnel in duplicate mode, in whatever datapath
/// configuration MPWG_TEST_ARGS selects. A sends a burst of numbered UDP datagrams to
/// a socket in B as fast as the tunnel carries them ([`BURST_WINDOW`] in flight), so
/// that B's path sockets receive large GRO batches, many of them in flight at once,
/// each datagram twice (once per path: both must carry the burst).
/// The numbers B's socket reads must be strictly increasing: a datagram may be lost,
/// none may overtake another, none may come twice. At least half must arrive, so that
/// an empty or nearly empty sequence cannot pass. (UDP, not TCP: TCP would put a
/// reordered stream back in order and hide it.)
#[test]
fn udp_flow_arrives_in_order_over_two_paths() {
    let Some(_lab) = lab("udp_flow_arrives_in_order_over_two_paths") else {
        return;
    };
    let pair = two_paths_up();
    let got = ping(&pair.a.ns, &pair.b.tunnel, 3);
    assert_eq!(got, 3, "pings lost on a healthy tunnel");
    let before = show(&pair.b);

    let rx = pair
        .b
        .ns
        .udp_bind(&format!("{}:0", pair.b.tunnel))
        .expect("bind the receiver in B");
    let arrivals = numbered_burst(&pair.a.ns, &pair.a.tunnel, rx);

    let after = show(&pair.b);
    let per_path = |col: &str| -> Vec<u64> {
        after
            .0
            .iter()
            .zip(&before.0)
            .map(|(a, b)| a.get(col) - b.get(col))
            .collect()
    };
    let queues = |i: usize| -> u64 {
        after.1.iter().map(|q| q[i]).sum::<u64>() - before.1.iter().map(|q| q[i]).sum::<u64>()
    };
    let (rx_pkts, rx_calls) = (per_path("RX PKTS"), per_path("RX CALLS"));
    let (pkts, calls) = (rx_pkts.iter().sum::<u64>(), rx_calls.iter().sum::<u64>());
    let args = datapath_args().join(" ");
    println!(
        "mpwg up {}: B received {rx_pkts:?} datagrams on its 2 paths in {rx_calls:?} receive \
         calls ({:.1} per call), wrote {} packets to its TUN in {} batches",
        if args.is_empty() { "(default)" } else { &args },
        pkts as f64 / calls.max(1) as f64,
        queues(3),
        queues(2)
    );
    println!("{}", arrivals.summary());

    assert!(
        arrivals.first_out_of_order().is_none(),
        "one flow through the tunnel was reordered: {}",
        arrivals.summary()
    );
    assert!(
        arrivals.seqs.len() as u64 * 2 >= arrivals.sent,
        "fewer than half of the burst arrived, too few to show the order: {}",
        arrivals.summary()
    );
    assert!(
        rx_pkts.len() == 2 && rx_pkts.iter().all(|&n| n * 2 >= arrivals.seqs.len() as u64),
        "both paths should have carried the burst (duplicate mode): {rx_pkts:?}"
    );
}

/// The check itself: gaps pass; a swap, a shuffle, a duplicate, a late straggler do not.
#[test]
fn order_check_catches_reordering() {
    let arr = |seqs: Vec<u64>| Arrivals { sent: 10, seqs };
    let ok = arr(vec![0, 1, 2, 5, 6, 9]);
    assert_eq!(ok.first_out_of_order(), None);
    assert_eq!(ok.lost(), 4);
    assert_eq!(arr(vec![]).first_out_of_order(), None);
    assert_eq!(arr(vec![0, 2, 1, 3]).first_out_of_order(), Some((2, 2, 1)));
    assert_eq!(arr(vec![0, 1, 1, 2]).first_out_of_order(), Some((2, 1, 1)));
    let straggler = arr(vec![0, 1, 3, 4, 5, 2]);
    assert_eq!(straggler.first_out_of_order(), Some((5, 5, 2)));
    assert_eq!(straggler.late(), 1);
    // A shuffled burst, shuffled with the lab's own generator.
    let mut seqs: Vec<u64> = (0..BURST).collect();
    let mut rng = Rng::new(1);
    for i in (1..seqs.len()).rev() {
        seqs.swap(i, rng.below(i + 1));
    }
    let shuffled = Arrivals { sent: BURST, seqs };
    assert!(shuffled.first_out_of_order().is_some());
    assert!(shuffled.summary().contains("OUT OF ORDER"));
}

/// Two mpwg ends joined by two paths, with the tunnel answering pings.
fn two_paths_up() -> Pair {
    let pair = Pair::two_paths(&[]);
    assert!(
        ping_until(&pair.a.ns, &pair.b.tunnel, Duration::from_secs(10)),
        "no ping reply A -> B through the two-path tunnel"
    );
    pair
}

/// A counter of `side`'s TUN device, from /sys/class/net/DEV/statistics.
fn tun_counter(side: &Side, name: &str) -> u64 {
    let file = format!("/sys/class/net/{}/statistics/{name}", side.dev);
    side.ns
        .run(&["cat", &file])
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{file} is not a number: {e}"))
}

/// The receiver's kernel counters `names` in namespace `ns` (`nstat -az`, absolute).
fn nstat(ns: &Netns, names: &[&str]) -> Vec<u64> {
    let mut argv = vec!["nstat", "-az"];
    argv.extend(names);
    let out = ns.run(&argv);
    names
        .iter()
        .map(|name| {
            out.lines()
                .find_map(|l| {
                    let mut cells = l.split_whitespace();
                    (cells.next() == Some(name)).then(|| cells.next()?.parse().ok())?
                })
                .unwrap_or(0)
        })
        .collect()
}

/// A bulk TCP transfer over two paths, where the sender's TSO bursts make the receive
/// batches mix one path's copies with the other path's next packets and the decryption
/// workers open neighbouring batches at once. The receiving kernel must see the stream
/// in order: every segment it queued out of order would be a packet mpwg delivered
/// after one sent later. A datagram the receiver's socket dropped (its buffer full)
/// may legitimately come later on the other path, and a packet the sender's TUN queue
/// dropped comes later as a retransmission, so the check holds only when nothing was
/// dropped on the way, and the test says so when something was.
#[test]
fn tcp_over_two_paths_reaches_the_receiver_in_order() {
    let Some(_lab) = lab("tcp_over_two_paths_reaches_the_receiver_in_order") else {
        return;
    };
    let pair = two_paths_up();
    const COUNTERS: [&str; 3] = ["TcpExtTCPOFOQueue", "UdpRcvbufErrors", "UdpInErrors"];
    let tun_dropped = || tun_counter(&pair.a, "tx_dropped");
    let (before, tun_before) = (nstat(&pair.b.ns, &COUNTERS), tun_dropped());
    tcp_transfer(&pair.a.ns, &pair.b.ns, &pair.b.tunnel, 64 << 20, 11);
    let after = nstat(&pair.b.ns, &COUNTERS);
    let [ofo, rcvbuf, in_errors] = [0, 1, 2].map(|i| after[i] - before[i]);
    let tun_drops = tun_dropped() - tun_before;
    println!(
        "64 MiB over two paths: {ofo} segments queued out of order at the receiver; \
         its UDP sockets dropped {rcvbuf} datagrams (buffer full), {in_errors} in all; \
         the sender's TUN queue dropped {tun_drops} packets"
    );
    if in_errors > 0 || tun_drops > 0 {
        eprintln!(
            "order not checked: {in_errors} datagrams dropped by the receiver's sockets, \
             {tun_drops} packets by the sender's TUN queue, which come later"
        );
        return;
    }
    assert_eq!(
        ofo, 0,
        "TCP segments reached the receiver out of order with no datagram dropped: mpwg \
         delivered packets after packets sent later"
    );
}
