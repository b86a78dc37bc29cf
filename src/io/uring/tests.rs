//! io_uring on loopback: receive, GRO, buffer recycling, batched sends, the probe.

use super::probe::*;
use super::recv::*;
use super::send::*;
use super::*;
use std::net::SocketAddr;

fn set_int_opt(fd: RawFd, level: i32, opt: i32, val: i32) {
    crate::io::udp::setsockopt_int(fd, level, opt, val).expect("setsockopt");
}

fn udp4() -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
}

/// A 340-byte buffer of 3 segments of 100 and one of 40, each segment filled with its index.
fn gso_buf() -> Vec<u8> {
    let mut v = Vec::new();
    for (i, len) in [100usize, 100, 100, 40].into_iter().enumerate() {
        v.extend(std::iter::repeat_n(i as u8 + 1, len));
    }
    v
}

/// Receives until `want` messages arrived or `within` passed.
fn collect(rx: &mut UringRx, want: usize, within: Duration) -> Vec<(SocketAddr, Vec<u8>, usize)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    while got.len() < want && Instant::now() < deadline {
        rx.recv(Duration::from_millis(100), &mut |src, p, seg, _| {
            got.push((src, p.to_vec(), seg))
        })
        .unwrap();
    }
    got
}

#[test]
fn probe_ok_on_this_kernel() {
    probe().unwrap();
}

#[test]
fn unsupported_message_names_feature_and_version() {
    let e = UringUnsupported::Missing {
        feature: UringFeature::MultishotRecvMsg,
        kernel: "5.15.0".into(),
    };
    assert_eq!(
        e.to_string(),
        "io_uring multishot recvmsg is not supported by this kernel (Linux 5.15.0); \
         mpwg needs Linux 6.0 or later"
    );
    assert_eq!(parse_release("6.18.0-1-amd64"), Some((6, 18)));
    assert_eq!(parse_release("garbage"), None);
}

#[test]
fn send_all_gso_to_two_sockets() {
    let tx_sock = udp4();
    let r1 = udp4();
    let r2 = udp4();
    for r in [&r1, &r2] {
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let buf = gso_buf();
    let sends: Vec<Send> = [&r1, &r2]
        .iter()
        .map(|r| Send {
            fd: tx_sock.as_raw_fd(),
            dst: r.local_addr().unwrap(),
            v6_socket: false,
            buf: &buf,
            segment: 100,
        })
        .collect();
    let mut results: Vec<io::Result<usize>> = (0..2).map(|_| Ok(0)).collect();
    let mut tx = UringTx::new(8).unwrap();
    tx.send_all(&sends, &mut results);
    for r in &results {
        assert_eq!(*r.as_ref().unwrap(), 340);
    }
    for r in [&r1, &r2] {
        let mut b = [0u8; 2048];
        for (i, len) in [100usize, 100, 100, 40].into_iter().enumerate() {
            let (n, from) = r.recv_from(&mut b).unwrap();
            assert_eq!(n, len);
            assert_eq!(from, tx_sock.local_addr().unwrap());
            assert!(b[..n].iter().all(|&x| x == i as u8 + 1));
        }
    }
}

#[test]
fn send_gather_sends_datagrams_from_separate_buffers_as_one_gso_batch() {
    let tx_sock = Arc::new(udp4());
    let r1 = udp4();
    let r2 = udp4();
    for r in [&r1, &r2] {
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    // Each datagram in its own buffer, with bytes around it that must not be sent.
    let bufs: Vec<Vec<u8>> = [100usize, 100, 100, 40]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut b = vec![0xee; len + 30];
            b[..len].fill(i as u8 + 1);
            b
        })
        .collect();
    let parts: Vec<&[u8]> = bufs.iter().map(|b| &b[..b.len() - 30]).collect();
    let mut tx = UringTx::new(8).unwrap();
    let mut batch = tx.batch();
    batch.push(&tx_sock, false, r1.local_addr().unwrap(), None, 1);
    batch.push(&tx_sock, false, r2.local_addr().unwrap(), None, 2);
    let out: Vec<(usize, usize)> = batch
        .send_gather(&parts, 100)
        .map(|(tag, _, r)| (tag, r.unwrap()))
        .collect();
    assert_eq!(out, vec![(1, 340), (2, 340)]);
    for r in [&r1, &r2] {
        let mut b = [0u8; 2048];
        for (i, len) in [100usize, 100, 100, 40].into_iter().enumerate() {
            let n = r.recv(&mut b).unwrap();
            assert_eq!(n, len);
            assert!(b[..n].iter().all(|&x| x == i as u8 + 1), "datagram {i}");
        }
    }
}

#[test]
fn send_all_chunks_and_reports_errors_per_send() {
    let tx_sock = udp4();
    let r = udp4();
    r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let dst = r.local_addr().unwrap();
    let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
    let mut sends: Vec<Send> = payloads
        .iter()
        .map(|p| Send {
            fd: tx_sock.as_raw_fd(),
            dst,
            v6_socket: false,
            buf: p,
            segment: 0,
        })
        .collect();
    // A bad fd and an IPv6 destination on an IPv4 socket fail alone.
    sends.insert(1, Send { fd: -1, ..sends[0] });
    sends.insert(
        3,
        Send {
            dst: "[2001:db8::1]:51820".parse().unwrap(),
            ..sends[0]
        },
    );
    let mut results: Vec<io::Result<usize>> = (0..sends.len()).map(|_| Ok(0)).collect();
    let mut tx = UringTx::new(2).unwrap();
    assert_eq!(tx.capacity(), 2);
    tx.send_all(&sends, &mut results);
    assert_eq!(
        results[1].as_ref().unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
    assert_eq!(
        results[3].as_ref().unwrap_err().raw_os_error(),
        Some(libc::EAFNOSUPPORT)
    );
    let oks: Vec<usize> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(oks, vec![10, 11, 12, 13, 14]);
    let mut b = [0u8; 64];
    for i in 0..5u8 {
        let n = r.recv(&mut b).unwrap();
        assert_eq!(&b[..n], &payloads[usize::from(i)][..]);
    }
}

#[test]
fn batch_tags_results_and_releases_sockets() {
    let tx_sock = Arc::new(udp4());
    let v6_only = "[2001:db8::1]:51820".parse().unwrap();
    let r1 = udp4();
    let r2 = udp4();
    for r in [&r1, &r2] {
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let buf = gso_buf();
    let mut tx = UringTx::new(2).unwrap();
    for round in 0..3 {
        let mut batch = tx.batch();
        batch.push(&tx_sock, false, r1.local_addr().unwrap(), None, 7);
        // An IPv6 destination on an IPv4 socket fails alone.
        batch.push(&tx_sock, false, v6_only, None, 8);
        batch.push(&tx_sock, false, r2.local_addr().unwrap(), None, 9);
        assert_eq!(Arc::strong_count(&tx_sock), 4);
        let got: Vec<(usize, SocketAddr, Result<usize, Option<i32>>)> = batch
            .send(&buf, 100)
            .map(|(tag, dst, r)| (tag, dst, r.map_err(|e| e.raw_os_error())))
            .collect();
        assert_eq!(
            got,
            vec![
                (7, r1.local_addr().unwrap(), Ok(340)),
                (8, v6_only, Err(Some(libc::EAFNOSUPPORT))),
                (9, r2.local_addr().unwrap(), Ok(340)),
            ],
            "round {round}"
        );
        // Once sent, the ring no longer holds the socket.
        assert_eq!(Arc::strong_count(&tx_sock), 1);
        for r in [&r1, &r2] {
            let mut b = [0u8; 2048];
            for (i, len) in [100usize, 100, 100, 40].into_iter().enumerate() {
                let n = r.recv(&mut b).unwrap();
                assert_eq!(n, len);
                assert!(b[..n].iter().all(|&x| x == i as u8 + 1));
            }
        }
    }
    // A batch dropped unsent releases its sockets too, and sends nothing.
    let mut batch = tx.batch();
    batch.push(&tx_sock, false, r1.local_addr().unwrap(), None, 0);
    drop(batch);
    assert_eq!(Arc::strong_count(&tx_sock), 1);
    assert_eq!(tx.batch().send(&buf, 100).count(), 0);
    r1.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert!(r1.recv(&mut [0u8; 16]).is_err());
}

#[test]
fn batch_steady_state_allocates_nothing() {
    let tx_sock = Arc::new(udp4());
    let receivers: Vec<UdpSocket> = (0..5).map(|_| udp4()).collect();
    let dsts: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
    let buf = gso_buf();
    // A ring smaller than the batch: chunking must not allocate either.
    let mut tx = UringTx::new(2).unwrap();
    let round = |tx: &mut UringTx| {
        let mut batch = tx.batch();
        for (i, &dst) in dsts.iter().enumerate() {
            batch.push(&tx_sock, false, dst, None, i);
        }
        batch
            .send(&buf, 100)
            .filter(|(_, _, r)| matches!(r, Ok(340)))
            .count()
    };
    assert_eq!(round(&mut tx), 5);
    // The counter works: a real allocation is seen.
    let (allocs, v) = alloc_count::allocations_in(|| std::hint::black_box(vec![0u8; 64]));
    assert!(allocs >= 1 && v.len() == 64);
    let (allocs, sent) =
        alloc_count::allocations_in(|| (0..100).map(|_| round(&mut tx)).sum::<usize>());
    assert_eq!(allocs, 0);
    assert_eq!(sent, 500);
    // And the existing API, given its slices, allocates nothing.
    let sends: Vec<Send> = dsts
        .iter()
        .map(|&dst| Send {
            fd: tx_sock.as_raw_fd(),
            dst,
            v6_socket: false,
            buf: &buf,
            segment: 100,
        })
        .collect();
    let mut results: Vec<io::Result<usize>> = sends.iter().map(|_| Ok(0)).collect();
    let (allocs, ()) = alloc_count::allocations_in(|| tx.send_all(&sends, &mut results));
    assert_eq!(allocs, 0);
    assert!(results.iter().all(|r| matches!(r, Ok(340))));
}

#[test]
fn send_all_v4_mapped_on_v6_socket() {
    let Ok(tx_sock) = UdpSocket::bind("[::]:0") else {
        eprintln!("no IPv6: skipped");
        return;
    };
    let r = udp4();
    r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let sends = [Send {
        fd: tx_sock.as_raw_fd(),
        dst: r.local_addr().unwrap(),
        v6_socket: true,
        buf: b"mapped",
        segment: 0,
    }];
    let mut results = [Ok(0)];
    UringTx::new(4).unwrap().send_all(&sends, &mut results);
    assert_eq!(*results[0].as_ref().unwrap(), 6);
    let mut b = [0u8; 16];
    let n = r.recv(&mut b).unwrap();
    assert_eq!(&b[..n], b"mapped");
}

#[test]
fn rx_plain_datagrams_with_sources() {
    let r = udp4();
    let a = udp4();
    let b = udp4();
    let mut rx = UringRx::new(r.as_raw_fd(), 32).unwrap();
    a.send_to(b"from a", r.local_addr().unwrap()).unwrap();
    b.send_to(b"from b, longer", r.local_addr().unwrap())
        .unwrap();
    let got = collect(&mut rx, 2, Duration::from_secs(5));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (a.local_addr().unwrap(), b"from a".to_vec(), 6));
    assert_eq!(
        got[1],
        (b.local_addr().unwrap(), b"from b, longer".to_vec(), 14)
    );
    let st = rx.stats();
    assert_eq!(st.messages, 2);
    assert_eq!(st.truncated, 0);
    assert_eq!(st.rearms, 0);
}

#[test]
fn rx_payload_is_mutable_in_place() {
    let r = udp4();
    let a = udp4();
    let mut rx = UringRx::new(r.as_raw_fd(), 2).unwrap();
    for _ in 0..4 {
        a.send_to(b"abc", r.local_addr().unwrap()).unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.is_empty() && Instant::now() < deadline {
            rx.recv(Duration::from_millis(100), &mut |_, p, _, _| {
                // Buffers are reused: what the last message left must not show.
                seen.push(p.to_vec());
                p.copy_from_slice(b"XYZ");
            })
            .unwrap();
        }
        assert_eq!(seen, vec![b"abc".to_vec()]);
    }
}

#[test]
fn rx_mapped_source_on_v6_socket() {
    let Ok(r) = UdpSocket::bind("[::]:0") else {
        eprintln!("no IPv6: skipped");
        return;
    };
    let port = r.local_addr().unwrap().port();
    let a = udp4();
    let mut rx = UringRx::new(r.as_raw_fd(), 4).unwrap();
    a.send_to(b"v4 to v6", (Ipv4Addr::LOCALHOST, port)).unwrap();
    let got = collect(&mut rx, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, a.local_addr().unwrap());
    assert!(got[0].0.is_ipv4());
}

#[test]
fn rx_reports_gro_segment_size() {
    let r = udp4();
    set_int_opt(r.as_raw_fd(), SOL_UDP, UDP_GRO, 1);
    let tx_sock = udp4();
    let mut rx = UringRx::new(r.as_raw_fd(), 8).unwrap();
    let buf = gso_buf();
    let mut results = [Ok(0)];
    UringTx::new(4).unwrap().send_all(
        &[Send {
            fd: tx_sock.as_raw_fd(),
            dst: r.local_addr().unwrap(),
            v6_socket: false,
            buf: &buf,
            segment: 100,
        }],
        &mut results,
    );
    assert_eq!(*results[0].as_ref().unwrap(), 340);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got
        .iter()
        .map(|(_, p, _): &(_, Vec<u8>, _)| p.len())
        .sum::<usize>()
        < 340
        && Instant::now() < deadline
    {
        got.extend(collect(&mut rx, 1, Duration::from_millis(500)));
    }
    assert_eq!(got.iter().map(|(_, p, _)| p.len()).sum::<usize>(), 340);
    // Loopback keeps the GSO packet whole for a GRO socket: one message, segment 100.
    assert_eq!(
        got.len(),
        1,
        "{:?}",
        got.iter().map(|g| (g.1.len(), g.2)).collect::<Vec<_>>()
    );
    assert_eq!(got[0].1, buf);
    assert_eq!(got[0].2, 100);
    assert_eq!(got[0].0, tx_sock.local_addr().unwrap());
}

#[test]
fn rx_rearms_after_buffer_ring_runs_dry() {
    let r = udp4();
    // Room in the socket for the whole burst (SO_RCVBUFFORCE: we are root in tests).
    let _ = {
        // SAFETY: as in `set_int_opt`; the result is ignored (unprivileged runs keep the
        // default buffer and merely drop more of the burst).
        let val: i32 = 8 << 20;
        unsafe {
            libc::setsockopt(
                r.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&val as *const i32).cast(),
                mem::size_of::<i32>() as libc::socklen_t,
            )
        }
    };
    let a = udp4();
    let dst = r.local_addr().unwrap();
    let mut rx = UringRx::new(r.as_raw_fd(), 32).unwrap();
    // Arm, then stop polling while 1000 datagrams arrive.
    assert_eq!(
        rx.recv(Duration::from_millis(10), &mut |_, _, _, _| {})
            .unwrap(),
        0
    );
    for i in 0u32..1000 {
        a.send_to(&i.to_be_bytes(), dst).unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    fn record(seen: &mut std::collections::BTreeSet<u32>, p: &[u8]) {
        if let Ok(b) = <[u8; 4]>::try_from(p) {
            seen.insert(u32::from_be_bytes(b));
        }
    }
    // Drain the burst.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if rx
            .recv(Duration::from_millis(200), &mut |_, p, _, _| {
                record(&mut seen, p)
            })
            .unwrap()
            == 0
        {
            break;
        }
    }
    // Later datagrams still arrive: the multishot was re-armed.
    for i in 1000u32..1010 {
        a.send_to(&i.to_be_bytes(), dst).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while (1000..1010).any(|i| !seen.contains(&i)) && Instant::now() < deadline {
        rx.recv(Duration::from_millis(100), &mut |_, p, _, _| {
            record(&mut seen, p)
        })
        .unwrap();
    }
    let st = rx.stats();
    eprintln!("received {} of 1010; {st:?}", seen.len());
    assert!((1000..1010).all(|i| seen.contains(&i)), "{st:?}");
    assert!(st.nobufs >= 1, "the ring never ran dry: {st:?}");
    assert!(st.rearms >= 1, "{st:?}");
    assert!(seen.len() > 32, "{st:?}");
}

#[test]
fn rx_drop_cancels_so_a_new_rx_gets_later_datagrams() {
    let r = udp4();
    let a = udp4();
    let dst = r.local_addr().unwrap();
    {
        let mut rx = UringRx::new(r.as_raw_fd(), 4).unwrap();
        a.send_to(b"one", dst).unwrap();
        assert_eq!(collect(&mut rx, 1, Duration::from_secs(5)).len(), 1);
        // Dropped while armed.
    }
    a.send_to(b"two", dst).unwrap();
    let mut rx = UringRx::new(r.as_raw_fd(), 4).unwrap();
    let got = collect(&mut rx, 1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, b"two");
}

#[test]
fn rx_timeout_returns_zero() {
    let r = udp4();
    let mut rx = UringRx::new(r.as_raw_fd(), 4).unwrap();
    let t = Instant::now();
    assert_eq!(
        rx.recv(Duration::from_millis(50), &mut |_, _, _, _| {})
            .unwrap(),
        0
    );
    assert!(t.elapsed() >= Duration::from_millis(45));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(rx.recv(Duration::ZERO, &mut |_, _, _, _| {}).unwrap(), 0);
}

#[test]
fn rx_rejects_bad_buffer_counts() {
    let r = udp4();
    for n in [0u16, 3, 100] {
        let e = UringRx::new(r.as_raw_fd(), n).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

#[test]
fn rx_on_a_non_socket_errors_without_spinning() {
    let f = std::fs::File::open("/dev/null").unwrap();
    let mut rx = UringRx::new(f.as_raw_fd(), 2).unwrap();
    let t = Instant::now();
    let e = rx
        .recv(Duration::from_secs(5), &mut |_, _, _, _| {})
        .unwrap_err();
    eprintln!("{e}");
    assert_eq!(
        e.kind(),
        io::Error::from_raw_os_error(libc::ENOTSOCK).kind()
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn parsers_reject_garbage() {
    assert_eq!(parse_sockaddr(&[]), None);
    assert_eq!(parse_sockaddr(&[2, 0, 0]), None);
    assert_eq!(parse_sockaddr(&[0xff; 32]), None);
    let mut v4 = [0u8; 16];
    v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    v4[2..4].copy_from_slice(&51820u16.to_be_bytes());
    v4[4..8].copy_from_slice(&[192, 0, 2, 1]);
    assert_eq!(
        parse_sockaddr(&v4),
        Some("192.0.2.1:51820".parse().unwrap())
    );
    let mut v6 = [0u8; 28];
    v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    v6[2..4].copy_from_slice(&7u16.to_be_bytes());
    v6[8..24].copy_from_slice(&"::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(parse_sockaddr(&v6), Some("10.0.0.1:7".parse().unwrap()));

    assert_eq!(parse_gro(&[]), None);
    assert_eq!(parse_gro(&[0xff; 40]), None);
    assert_eq!(parse_gro(&[0; 40]), None);
}

#[test]
#[cfg(all(target_pointer_width = "64", target_env = "gnu"))]
fn parse_gro_finds_the_cmsg() {
    // A well-formed UDP_GRO cmsg after an unrelated one.
    let mut c = Vec::new();
    for (level, ty, val) in [(libc::SOL_IP, libc::IP_TOS, 0i32), (SOL_UDP, UDP_GRO, 1200)] {
        let mut h = [0u8; 24];
        let len = CMSG_DATA_OFFSET + 4;
        h[..mem::size_of::<usize>()].copy_from_slice(&len.to_ne_bytes());
        h[8..12].copy_from_slice(&level.to_ne_bytes());
        h[12..16].copy_from_slice(&ty.to_ne_bytes());
        h[16..20].copy_from_slice(&val.to_ne_bytes());
        c.extend_from_slice(&h);
    }
    assert_eq!(parse_gro(&c), Some(1200));
    // Cut anywhere: never a panic.
    for n in 0..c.len() {
        let _ = parse_gro(&c[..n]);
    }
}

/// Packet info through io_uring: a datagram sent to 127.0.0.5 on a tunnel socket
/// ([`crate::io::udp::open`], which asks for it) is handed over with that local address,
/// and a GSO send from it through a [`TxBatch`] arrives from it, every datagram, where
/// the kernel would pick 127.0.0.1.
#[test]
fn the_local_address_comes_with_a_receive_and_a_send_leaves_from_it() {
    let server = Arc::new(crate::io::udp::open(&crate::io::udp::SocketOptions::default()).unwrap());
    let port = server.local_addr().unwrap().port();
    let client = udp4();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let to = SocketAddr::from(([127, 0, 0, 5], port));
    client.send_to(b"hello", to).unwrap();
    let mut rx = UringRx::new(server.as_raw_fd(), 4).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while got.is_empty() && Instant::now() < deadline {
        rx.recv(Duration::from_millis(100), &mut |src, p, _, local| {
            got.push((src, p.to_vec(), local))
        })
        .unwrap();
    }
    let from = client.local_addr().unwrap();
    let local = Some(IpAddr::from([127, 0, 0, 5]));
    assert_eq!(got, vec![(from, b"hello".to_vec(), local)]);

    let mut tx = UringTx::new(4).unwrap();
    let mut batch = tx.batch();
    batch.push(&server, true, from, local, 0);
    batch.push(&server, true, from, None, 1);
    let out: Vec<usize> = batch
        .send(&gso_buf(), 100)
        .map(|(_, _, r)| r.unwrap())
        .collect();
    assert_eq!(out, vec![340, 340]);
    let mut b = [0u8; 2048];
    for want in [to, to, to, to] {
        let (_, src) = client.recv_from(&mut b).unwrap();
        assert_eq!(src, want);
    }
    for _ in 0..4 {
        let (_, src) = client.recv_from(&mut b).unwrap();
        assert_eq!(src.ip(), IpAddr::from([127, 0, 0, 1]));
    }
}
