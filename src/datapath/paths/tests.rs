//! Unit tests of the paths: sends through the ring, rebinds, GSO fallback, and paths
//! that come and go.

use super::*;
use crate::io::uring::alloc_count::allocations_in;
use crate::multipath::state::SocketChange;
use crate::protocol::key::Key;

fn receiver() -> UdpSocket {
    let r = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Room for every datagram a test sends before reading them.
    udp::set_buffers(&r, SOCKET_BUFFER);
    r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    r
}

/// Takes `sizes.len()` datagrams from `r`, checking their sizes.
fn expect_datagrams(r: &UdpSocket, sizes: &[usize]) {
    let mut b = [0u8; 2048];
    for &len in sizes {
        assert_eq!(r.recv(&mut b).unwrap(), len);
    }
}

/// One unbound path, a receiver the peer's endpoint points at, and a TX ring.
fn uring_sender() -> (Paths, UdpSocket, Peer, UringTx) {
    let paths = Paths::open(&[], 0, 0).unwrap();
    let r = receiver();
    let peer = Peer::new(Key([7; 32]), None);
    peer.endpoints
        .lock()
        .set_configured(r.local_addr().unwrap());
    (paths, r, peer, UringTx::new(8).unwrap())
}

#[test]
fn send_segments_via_steady_state_allocates_nothing() {
    let (paths, r, peer, mut ring) = uring_sender();
    let buf = vec![0x5a; 340];

    // GSO batch and single datagram, once each to size the scratch storage.
    assert!(paths.send_segments_via(&mut ring, &peer, &buf, 100));
    expect_datagrams(&r, &[100, 100, 100, 40]);
    assert!(paths.send_segments_via(&mut ring, &peer, &buf[..60], 60));
    expect_datagrams(&r, &[60]);

    let (allocs, ok) = allocations_in(|| {
        (0..50).all(|_| {
            paths.send_segments_via(&mut ring, &peer, &buf, 100)
                & paths.send_segments_via(&mut ring, &peer, &buf[..60], 60)
        })
    });
    assert_eq!(allocs, 0, "allocations in 100 sends");
    assert!(ok);
    for _ in 0..50 {
        expect_datagrams(&r, &[100, 100, 100, 40, 60]);
    }
    let st = &paths.all()[0].stats;
    assert_eq!(st.tx_calls.load(Ordering::Relaxed), 102);
    assert_eq!(st.tx_packets.load(Ordering::Relaxed), 51 * 5);
    assert_eq!(st.tx_bytes.load(Ordering::Relaxed), 51 * 400);
    assert_eq!(st.send_errors.load(Ordering::Relaxed), 0);
}

#[test]
fn datagrams_in_their_own_buffers_go_out_gathered_through_either_datapath() {
    let (paths, r, peer, mut ring) = uring_sender();
    let bufs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 200]).collect();
    let parts: Vec<&[u8]> = vec![
        &bufs[0][..100],
        &bufs[1][..100],
        &bufs[2][..100],
        &bufs[3][..40],
    ];
    let check = |r: &UdpSocket| {
        let mut b = [0u8; 2048];
        for (i, len) in [100usize, 100, 100, 40].into_iter().enumerate() {
            let n = r.recv(&mut b).unwrap();
            assert_eq!(n, len);
            assert!(b[..n].iter().all(|&x| x == i as u8));
        }
    };
    // io_uring: one GSO send, sized once, then allocation-free.
    assert!(paths.send_datagrams_via(&mut ring, &peer, Datagrams::Each(&parts)));
    check(&r);
    let (allocs, ok) = allocations_in(|| {
        (0..20).all(|_| paths.send_datagrams_via(&mut ring, &peer, Datagrams::Each(&parts)))
    });
    assert_eq!(allocs, 0, "allocations in 20 gathered sends");
    assert!(ok);
    for _ in 0..20 {
        check(&r);
    }
    // Plain system calls (the Transmit implementation of Paths).
    assert!(paths.send_each_to_peer(&peer, &parts));
    check(&r);
    let st = &paths.all()[0].stats;
    assert_eq!(st.tx_calls.load(Ordering::Relaxed), 22);
    assert_eq!(st.tx_packets.load(Ordering::Relaxed), 22 * 4);
    assert_eq!(st.tx_bytes.load(Ordering::Relaxed), 22 * 340);
}

/// Datagrams to a peer leave from the local address it last wrote to (here 127.0.0.5,
/// where the kernel would pick 127.0.0.1), through every way the tunnel sends: the ring
/// (GSO and single), plain system calls (GSO and single), and a reply to a handshake
/// message. If the host no longer has that address, they go from the kernel's choice,
/// none lost and no error counted.
#[test]
fn sends_leave_from_the_address_the_peer_wrote_to_and_fall_back_when_it_is_gone() {
    let (paths, r, peer, mut ring) = uring_sender();
    let path = paths.all()[0].clone();
    let to = r.local_addr().unwrap();
    let source = |local: &str| Source {
        addr: to,
        path: path.id,
        local: Some(local.parse().unwrap()),
    };
    let buf = vec![9u8; 340];
    let mut sends = |src: Source| {
        assert!(paths.send_segments_via(&mut ring, &peer, &buf, 100));
        assert!(paths.send_segments_via(&mut ring, &peer, &buf[..60], 60));
        assert!(paths.send_segments_to_peer(&peer, &buf, 100));
        assert!(paths.send_to_peer(&peer, &buf[..60]));
        assert!(paths.send_to(src, &buf[..30]));
    };
    let sources = |r: &UdpSocket| -> Vec<(usize, IpAddr)> {
        let mut b = [0u8; 2048];
        (0..11)
            .map(|_| {
                let (n, from) = r.recv_from(&mut b).unwrap();
                (n, from.ip())
            })
            .collect()
    };
    let sizes = [100, 100, 100, 40, 60, 100, 100, 100, 40, 60, 30];

    peer.saw_source(source("127.0.0.5"), Instant::now());
    sends(source("127.0.0.5"));
    let five: IpAddr = "127.0.0.5".parse().unwrap();
    assert_eq!(sources(&r), sizes.map(|n| (n, five)).to_vec());

    peer.saw_source(source("192.0.2.9"), Instant::now());
    sends(source("192.0.2.9"));
    let one: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(sources(&r), sizes.map(|n| (n, one)).to_vec());
    assert_eq!(path.stats.send_errors.load(Ordering::Relaxed), 0);
    assert_eq!(path.stats.tx_packets.load(Ordering::Relaxed), 22);
}

#[test]
fn send_segments_via_follows_a_rebind_and_lets_the_old_socket_go() {
    let (paths, r, peer, mut ring) = uring_sender();
    let old = paths.all()[0].socket().unwrap();
    assert!(paths.send_segments_via(&mut ring, &peer, b"one", 3));
    let mut b = [0u8; 64];
    let (_, from) = r.recv_from(&mut b).unwrap();
    assert_eq!(from.port(), old.port);
    // The ring keeps no reference to the socket between sends.
    assert_eq!(Arc::strong_count(&old), 2);

    paths.rebind(0, 0).unwrap();
    assert!(old.closed.load(Ordering::Relaxed));
    let new = paths.all()[0].socket().unwrap();
    assert_ne!(new.port, old.port);
    assert!(paths.send_segments_via(&mut ring, &peer, b"two", 3));
    let (n, from) = r.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], b"two");
    assert_eq!(from.port(), new.port);
    assert_eq!(Arc::strong_count(&old), 1);
}

#[test]
fn send_segments_via_fails_one_destination_alone_and_falls_back_from_gso() {
    let paths = Paths::open(&[], 0, 0).unwrap();
    let path = &paths.all()[0];
    let st = &path.stats;
    let r = receiver();
    let peer = Peer::new(Key([7; 32]), None);
    // Two destinations on the one path: port 0 is refused (EINVAL), the other works.
    let bad: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let now = Instant::now();
    peer.endpoints.lock().record(path.id, bad, now);
    peer.endpoints
        .lock()
        .record(path.id, r.local_addr().unwrap(), now);
    let mut ring = UringTx::new(8).unwrap();

    assert!(paths.send_segments_via(&mut ring, &peer, b"kept", 4));
    expect_datagrams(&r, &[4]);
    assert_eq!(st.send_errors.load(Ordering::Relaxed), 1);
    assert_eq!(st.tx_calls.load(Ordering::Relaxed), 2);
    assert_eq!(st.tx_packets.load(Ordering::Relaxed), 1);
    assert!(path.gso.load(Ordering::Relaxed));

    // EINVAL on a GSO send (here: port 0) is that send's problem, not GSO's: that
    // destination is retried one datagram per call (failing 4 times), the other went out
    // as one GSO send, and GSO stays on for the path.
    let buf = vec![1u8; 340];
    assert!(paths.send_segments_via(&mut ring, &peer, &buf, 100));
    expect_datagrams(&r, &[100, 100, 100, 40]);
    assert!(path.gso_enabled());
    assert_eq!(st.send_errors.load(Ordering::Relaxed), 1 + 4);
    assert_eq!(st.tx_calls.load(Ordering::Relaxed), 2 + 4 + 1);
    assert_eq!(st.tx_packets.load(Ordering::Relaxed), 1 + 4);

    // The same again: the good destination still gets one GSO send.
    assert!(paths.send_segments_via(&mut ring, &peer, &buf, 100));
    expect_datagrams(&r, &[100, 100, 100, 40]);
    assert!(path.gso_enabled());
    assert_eq!(st.send_errors.load(Ordering::Relaxed), 5 + 4);
    assert_eq!(st.tx_calls.load(Ordering::Relaxed), 7 + 4 + 1);
    assert_eq!(st.tx_packets.load(Ordering::Relaxed), 5 + 4);
    assert_eq!(st.tx_bytes.load(Ordering::Relaxed), 4 + 340 + 340);
}

#[test]
fn datagrams_larger_than_the_interface_mtu_go_one_per_call_and_gso_stays_on() {
    let (paths, r, peer, mut ring) = uring_sender();
    let path = &paths.all()[0];
    let v4: SocketAddr = "192.0.2.1:1".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:192.0.2.1]:1".parse().unwrap();
    // MTU unknown (0): anything goes.
    assert!(path.fits(v4, 60000));
    path.mtu.store(1400, Ordering::Relaxed);
    assert!(path.fits(v4, 1372) && !path.fits(v4, 1373));
    assert!(path.fits(mapped, 1372) && !path.fits(mapped, 1373));
    assert!(path.fits(v6, 1352) && !path.fits(v6, 1353));

    // On loopback, with the path's MTU said to be 120: 100-byte datagrams do not fit
    // (100 + 28 > 120), so they go one per call; 90-byte ones fit and go as one GSO send.
    path.mtu.store(120, Ordering::Relaxed);
    let st = &path.stats;
    let buf = vec![3u8; 340];
    assert!(paths.send_segments_via(&mut ring, &peer, &buf, 100));
    expect_datagrams(&r, &[100, 100, 100, 40]);
    assert_eq!(st.tx_calls.load(Ordering::Relaxed), 4);
    assert!(paths.send_segments_via(&mut ring, &peer, &buf[..270], 90));
    expect_datagrams(&r, &[90, 90, 90]);
    assert_eq!(st.tx_calls.load(Ordering::Relaxed), 5);
    assert!(paths.send_segments_to_peer(&peer, &buf, 100));
    expect_datagrams(&r, &[100, 100, 100, 40]);
    assert_eq!(st.tx_calls.load(Ordering::Relaxed), 9);
    assert_eq!(st.send_errors.load(Ordering::Relaxed), 0);
    assert!(path.gso_enabled());
}

fn lo() -> LinkInfo {
    LinkInfo {
        index: 1,
        name: "lo".into(),
        up: true,
        mtu: 65536,
        addresses: vec!["127.0.0.1".parse().unwrap()],
    }
}

fn labels(paths: &Paths) -> Vec<(String, &'static str, bool)> {
    paths
        .all()
        .iter()
        .map(|p| {
            (
                p.label().to_string(),
                p.state().0.as_str(),
                p.socket().is_some(),
            )
        })
        .collect()
}

#[test]
fn paths_come_and_go_and_the_unbound_socket_makes_room() {
    let now = Instant::now();
    let paths = Paths::open(&[], 0, 0).unwrap();
    let port = paths.port();
    let unbound = Arc::downgrade(&paths.all()[0].socket().unwrap());
    let g0 = paths.generation();

    // The first path takes the unbound socket's place, on the same port: the unbound
    // socket is closed (nothing else holds it here; the receive thread would let go).
    let lo_path = paths.add("lo", Some(&lo()), now).unwrap();
    assert!(unbound.upgrade().is_none());
    assert_eq!(labels(&paths), [("lo".to_string(), "up", true)]);
    assert_eq!(lo_path.socket().unwrap().port, port);
    assert_eq!((lo_path.index(), lo_path.mtu()), (Some(1), 65536));
    assert_ne!(paths.generation(), g0);

    // An interface that does not exist yet: the path is absent, with no socket.
    let absent = paths.add("mpwgnone0", None, now).unwrap();
    assert_ne!(absent.id, lo_path.id);
    assert_eq!(
        labels(&paths)[1],
        ("mpwgnone0".to_string(), "absent", false)
    );
    assert!(matches!(
        paths.add("lo", Some(&lo()), now),
        Err(PathChangeError::Exists(n)) if n == "lo"
    ));
    assert!(matches!(
        paths.remove("eth9"),
        Err(PathChangeError::NotFound(n)) if n == "eth9"
    ));
    assert_eq!(
        PathChangeError::NotFound("eth9".into()).to_string(),
        "there is no path on interface eth9"
    );

    // Removing a path closes its socket; the others stay as they are.
    let lo_sock = lo_path.socket().unwrap();
    paths.remove("lo").unwrap();
    assert!(lo_sock.closed.load(Ordering::Relaxed));
    assert!(lo_path.socket().is_none());
    assert_eq!(labels(&paths), [("mpwgnone0".to_string(), "absent", false)]);
    drop(lo_sock);
    // The last path gone, the unbound socket is back, on the same port.
    paths.remove("mpwgnone0").unwrap();
    assert_eq!(labels(&paths), [("*".to_string(), "up", true)]);
    assert_eq!(paths.all()[0].socket().unwrap().port, port);
    assert_eq!(paths.port(), port);
}

#[test]
fn an_interface_deleted_and_back_gets_a_new_socket_on_the_port() {
    let t0 = Instant::now();
    let paths = Paths::open(&[], 0, 0).unwrap();
    let port = paths.port();
    let path = paths.add("lo", Some(&lo()), t0).unwrap();
    let first = path.socket().unwrap();

    // Other interfaces' news changes nothing.
    let ev = LinkEvent::New {
        index: 77,
        name: "eth7",
        up: false,
        mtu: 1500,
    };
    assert!(paths.link_event(ev, t0).is_empty());

    let t1 = t0 + Duration::from_secs(1);
    let changes = paths.link_event(LinkEvent::Del { index: 1 }, t1);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].1.to, changes[0].1.socket),
        (LinkState::Absent, SocketChange::Close)
    );
    assert!(first.closed.load(Ordering::Relaxed));
    assert_eq!(path.state(), (LinkState::Absent, Some(t1)));
    assert!(!path.is_up() && path.socket().is_none() && path.index().is_none());
    drop(first);

    let t2 = t1 + Duration::from_secs(1);
    let ev = LinkEvent::New {
        index: 1,
        name: "lo",
        up: true,
        mtu: 1500,
    };
    let changes = paths.link_event(ev, t2);
    assert_eq!(
        (changes[0].1.to, changes[0].1.socket),
        (LinkState::Up, SocketChange::Open(1))
    );
    let second = path.socket().expect("a new socket");
    assert_eq!(second.port, port);
    assert_eq!(
        (path.state(), path.mtu()),
        ((LinkState::Up, Some(t2)), 1500)
    );

    // A resync that finds it gone does the same as the deletion.
    let changes = paths.sync(&[], t2);
    assert_eq!(changes[0].1.to, LinkState::Absent);
    assert!(second.closed.load(Ordering::Relaxed));
    drop(second);
    let changes = paths.sync(&[lo()], t2);
    assert_eq!(changes[0].1.socket, SocketChange::Open(1));
    assert!(path.socket().is_some());
    assert!(paths.retry_sockets().is_empty());
}

#[test]
fn a_socket_that_cannot_be_opened_is_retried() {
    let t0 = Instant::now();
    let paths = Paths::open(&[], 0, 0).unwrap();
    // Netlink says the interface exists, but SO_BINDTODEVICE finds no such name.
    let ghost = LinkInfo {
        index: 4242,
        name: "mpwgghost0".into(),
        up: true,
        mtu: 1500,
        addresses: Vec::new(),
    };
    assert!(matches!(
        paths.add("mpwgghost0", Some(&ghost), t0),
        Err(PathChangeError::Socket(_))
    ));
    // Nothing changed: the unbound socket is back.
    assert_eq!(labels(&paths), [("*".to_string(), "up", true)]);
    let path = paths.add("mpwgghost0", None, t0).unwrap();
    let ev = LinkEvent::New {
        index: 4242,
        name: "mpwgghost0",
        up: true,
        mtu: 1500,
    };
    let changes = paths.link_event(ev, t0);
    assert_eq!(changes[0].1.to, LinkState::Up);
    assert!(path.socket().is_none());
    assert!(paths.retry_sockets().is_empty());
}

#[test]
fn path_ids_stay_below_the_schedulers_width_and_are_not_reused_at_once() {
    let now = Instant::now();
    let paths = Paths::open(&[], 0, 0).unwrap();
    // A path that stays, so that no unbound socket comes and goes (taking ids too).
    let keep = paths.add("mpwgkeep0", None, now).unwrap();
    let mut seen = Vec::new();
    for round in 0..(MAX_PATHS + 5) {
        let p = paths.add("mpwgnone0", None, now).unwrap();
        assert!(p.id < MAX_PATHS, "round {round}: id {}", p.id);
        seen.push(p.id);
        paths.remove("mpwgnone0").unwrap();
    }
    // Each id comes back only after every other one was used.
    for w in seen.windows(2) {
        assert_ne!(w[0], w[1]);
    }
    assert!(
        !seen.contains(&keep.id),
        "the id of a path in use was given out"
    );
    let first = seen[0];
    let again = seen.iter().skip(1).position(|&i| i == first).unwrap() + 1;
    assert!(
        again >= MAX_PATHS - 2,
        "id {first} reused after {again} paths"
    );
}

#[test]
fn a_path_answers_only_from_its_own_interface_addresses() {
    let now = Instant::now();
    let paths = Paths::open(&[], 0, 0).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // The unbound socket answers from any address the peer wrote to.
    assert!(paths.all()[0].may_answer_from(ip("10.9.9.9")));
    let lo_path = paths.add("lo", Some(&lo()), now).unwrap();
    assert!(lo_path.may_answer_from(ip("127.0.0.1")));
    // Another uplink's address, reached over this one: the kernel picks the source.
    assert!(!lo_path.may_answer_from(ip("10.9.9.9")));
    // An address added later (a netlink dump) is the path's from then on.
    let mut more = lo();
    more.addresses.push(ip("10.9.9.9"));
    paths.sync(&[more], now);
    assert!(lo_path.may_answer_from(ip("10.9.9.9")));
}
