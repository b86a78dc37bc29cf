//! The batched datapath, seen through the counters `mpwg show` prints: a bulk TCP
//! transfer must go out in UDP GSO batches (fewer send calls than datagrams), come in as
//! UDP GRO batches (fewer receive calls than datagrams), and be read from the TUN as TSO
//! super-packets (fewer reads than packets). Counters, not timings.
//!
//! The datapath configurations (--cores 1/2, --batch 1/64) are exercised by running the
//! interop and multi-path suites once per configuration (scripts/test.sh sets
//! MPWG_TEST_ARGS); this file runs in the default configuration only.

mod common;

use common::*;

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
