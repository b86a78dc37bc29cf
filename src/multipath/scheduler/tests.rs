use super::*;

fn ids(s: PathSet) -> Vec<PathId> {
    s.iter().collect()
}

#[test]
fn every_path_that_is_up() {
    assert_eq!(ids(duplicate([true, true, true])), vec![0, 1, 2]);
    assert_eq!(ids(duplicate([true, false, true])), vec![0, 2]);
    assert_eq!(ids(duplicate([false, true])), vec![1]);
}

#[test]
fn no_path_up_means_every_path() {
    assert_eq!(ids(duplicate([false, false])), vec![0, 1]);
    assert!(duplicate([]).is_empty());
}

#[test]
fn the_set_ignores_ids_past_its_width() {
    let mut s = PathSet::default();
    s.insert(MAX_PATHS);
    assert!(s.is_empty());
    s.insert(MAX_PATHS - 1);
    assert!(s.contains(MAX_PATHS - 1));
    assert!(!s.contains(MAX_PATHS));
}

fn view(id: PathId, state: State, priority: u32, srtt_ms: u64) -> PathView {
    PathView {
        id,
        key: 100 + id as u64,
        present: true,
        state,
        since: Instant::now() - Duration::from_secs(3600),
        priority,
        srtt: Some(Duration::from_millis(srtt_ms)),
        weight: 1.0,
        trial: false,
        suspect: false,
    }
}

#[test]
fn modes_parse_and_print() {
    for m in Mode::ALL {
        assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
    }
    assert_eq!(" Failover".parse::<Mode>(), Ok(Mode::Failover));
    assert_eq!(
        "bond".parse::<Mode>().unwrap_err().to_string(),
        "unknown mode \"bond\": use duplicate, failover, aggregate or adaptive"
    );
    assert!(Mode::Adaptive.stripes() && !Mode::Failover.stripes());
}

#[test]
fn duplicate_uses_working_paths_and_never_none() {
    let mut p = vec![
        view(0, State::Up, 0, 10),
        view(1, State::Degraded, 1, 10),
        view(2, State::Down, 2, 10),
    ];
    assert_eq!(ids(duplicate_set(&p)), vec![0, 1]);
    p[0].state = State::Down;
    p[1].state = State::Down;
    assert_eq!(ids(duplicate_set(&p)), vec![0, 1, 2]);
    p[2].present = false;
    assert_eq!(ids(duplicate_set(&p)), vec![0, 1]);
}

#[test]
fn failover_takes_priority_then_rtt_and_leaves_a_dead_path_at_once() {
    let now = Instant::now();
    let mut f = Failover::default();
    let mut p = vec![view(0, State::Up, 0, 50), view(1, State::Up, 1, 5)];
    assert_eq!(
        ids(f.choose(&p, now)),
        vec![0],
        "priority before round trip"
    );
    p[1].priority = 0;
    let mut g = Failover::default();
    assert_eq!(
        ids(g.choose(&p, now)),
        vec![1],
        "equal priority: lower round trip"
    );
    p[1].priority = 1;
    p[0].state = State::Down;
    p[0].since = now;
    assert_eq!(ids(f.choose(&p, now)), vec![1]);
    // A degraded path is used only when nothing is up.
    p[1].state = State::Degraded;
    p.push(view(2, State::Up, 5, 100));
    assert_eq!(ids(f.choose(&p, now)), vec![2]);
    p[2].state = State::Down;
    assert_eq!(ids(f.choose(&p, now)), vec![1]);
    // Nothing works: every present path.
    p[1].state = State::Down;
    assert_eq!(ids(f.choose(&p, now)), vec![0, 1, 2]);
}

#[test]
fn failover_returns_to_the_primary_only_after_the_hold() {
    let t0 = Instant::now();
    let mut f = Failover::default();
    let mut p = vec![view(0, State::Down, 0, 10), view(1, State::Up, 1, 10)];
    assert_eq!(ids(f.choose(&p, t0)), vec![1]);
    // The primary flaps: up for less than the hold time each time.
    for i in 0..10u32 {
        let t = t0 + Duration::from_secs(2) * i;
        p[0].state = if i % 2 == 0 { State::Up } else { State::Down };
        p[0].since = t;
        assert_eq!(
            ids(f.choose(&p, t + Duration::from_secs(1))),
            vec![1],
            "flap {i}"
        );
    }
    p[0].state = State::Up;
    let t = t0 + Duration::from_secs(100);
    p[0].since = t;
    assert_eq!(
        ids(f.choose(&p, t + f.hold - Duration::from_millis(1))),
        vec![1]
    );
    assert_eq!(ids(f.choose(&p, t + f.hold)), vec![0]);
    assert_eq!(f.active(), Some(100));
}

/// Removes the path at `pos` from `p`, as `mpwg path del` does: the places after it
/// move down by one, the keys stay.
fn remove(p: &mut Vec<PathView>, pos: usize) {
    p.remove(pos);
    for (i, v) in p.iter_mut().enumerate() {
        v.id = i;
    }
}

/// Inserts `v` at `pos` (a list rebuilt in another order): the places from it on
/// move up by one.
fn insert(p: &mut Vec<PathView>, pos: usize, v: PathView) {
    p.insert(pos, v);
    for (i, v) in p.iter_mut().enumerate() {
        v.id = i;
    }
}

#[test]
fn failover_follows_the_active_path_when_others_come_and_go() {
    let t0 = Instant::now();
    let mut f = Failover::default();
    // x (priority 7) first, then the primary, then the backup.
    let mut p = vec![
        view(0, State::Up, 7, 10),
        view(1, State::Down, 0, 10),
        view(2, State::Up, 1, 10),
    ];
    let (primary, backup) = (p[1].key, p[2].key);
    assert_eq!(ids(f.choose(&p, t0)), vec![2]);
    assert_eq!(f.active(), Some(backup));
    // The primary recovers: the hold starts.
    p[1].state = State::Up;
    p[1].since = t0;
    assert_eq!(ids(f.choose(&p, t0 + Duration::from_secs(1))), vec![2]);
    // x, in front of the active path, goes: the backup (now at place 1) keeps the
    // data, and the primary still waits for its hold.
    remove(&mut p, 0);
    assert_eq!(ids(f.choose(&p, t0 + Duration::from_secs(2))), vec![1]);
    assert_eq!(f.active(), Some(backup));
    // A path arrives in front of both: nothing moves either.
    let mut y = view(0, State::Up, 9, 1);
    y.key = 900;
    insert(&mut p, 0, y);
    assert_eq!(ids(f.choose(&p, t0 + Duration::from_secs(2))), vec![2]);
    assert_eq!(f.active(), Some(backup));
    assert_eq!(
        ids(f.choose(&p, t0 + f.hold - Duration::from_millis(1))),
        vec![2],
        "the hold is kept across the changes"
    );
    // The hold ends: back to the primary, wherever it is now.
    assert_eq!(ids(f.choose(&p, t0 + f.hold)), vec![1]);
    assert_eq!(f.active(), Some(primary));
    // The backup goes (behind the active path), then y (in front of it).
    remove(&mut p, 2);
    assert_eq!(ids(f.choose(&p, t0 + f.hold)), vec![1]);
    remove(&mut p, 0);
    assert_eq!(ids(f.choose(&p, t0 + f.hold)), vec![0]);
    assert_eq!(f.active(), Some(primary));
    // The active path itself goes: the best one left takes over at once.
    let mut z = view(1, State::Up, 3, 10);
    z.key = 901;
    p.push(z);
    remove(&mut p, 0);
    assert_eq!(ids(f.choose(&p, t0 + f.hold)), vec![0]);
    assert_eq!(f.active(), Some(901));
}

#[test]
fn failover_copies_to_paths_on_trial() {
    let now = Instant::now();
    let mut f = Failover::default();
    let mut p = vec![view(0, State::Degraded, 0, 10), view(1, State::Up, 1, 10)];
    p[0].trial = true;
    assert_eq!(ids(f.choose(&p, now)), vec![0, 1]);
}

#[test]
fn failover_copies_to_the_best_backup_while_the_active_path_is_suspect() {
    let now = Instant::now();
    let mut f = Failover::default();
    let mut p = vec![
        view(0, State::Up, 0, 10),
        view(1, State::Degraded, 1, 10),
        view(2, State::Up, 2, 30),
        view(3, State::Up, 3, 5),
    ];
    assert_eq!(ids(f.choose(&p, now)), vec![0]);
    p[0].suspect = true;
    // An `up` backup before a `degraded` one, then by priority; the active path stays.
    assert_eq!(ids(f.choose(&p, now)), vec![0, 2]);
    assert_eq!(f.active(), Some(100));
    p[2].state = State::Down;
    p[3].state = State::Down;
    assert_eq!(ids(f.choose(&p, now)), vec![0, 1]);
    // A suspect backup changes nothing; nor does suspicion with no backup left.
    p[0].suspect = false;
    p[1].suspect = true;
    assert_eq!(ids(f.choose(&p, now)), vec![0]);
    p[0].suspect = true;
    p[1].state = State::Down;
    assert_eq!(ids(f.choose(&p, now)), vec![0]);
    p[0].suspect = false;
    assert_eq!(ids(f.choose(&p, now)), vec![0]);
}

#[test]
fn aggregate_leaves_out_paths_too_late_to_reorder() {
    let cap = Duration::from_millis(50);
    let mut p = vec![
        view(0, State::Up, 0, 20),
        view(1, State::Up, 1, 80),
        view(2, State::Up, 2, 200),
        view(3, State::Degraded, 3, 20),
    ];
    // 200 ms is 90 ms one way behind 20 ms: past the cap.
    assert_eq!(ids(aggregate_set(&p, cap, 1000.0, 8128)), vec![0, 1]);
    // At 200,000 packets/s, 30 ms of lag spans more than half the window.
    assert_eq!(ids(aggregate_set(&p, cap, 200_000.0, 8128)), vec![0]);
    p[0].state = State::Down;
    p[1].state = State::Down;
    p[2].state = State::Down;
    assert_eq!(ids(aggregate_set(&p, cap, 1000.0, 8128)), vec![3]);
    p[3].state = State::Down;
    assert_eq!(ids(aggregate_set(&p, cap, 1000.0, 8128)), vec![0, 1, 2, 3]);
}

#[test]
fn striping_follows_the_weights() {
    let mut set = PathSet::default();
    set.insert(0);
    set.insert(1);
    let weights = [40.0, 8.0];
    let mut sent = [0u64; 2];
    for _ in 0..4800 {
        let id = stripe(set, 1400, |i| sent[i], |i| weights[i]).unwrap();
        sent[id] += 1400;
    }
    let share = sent[0] as f64 / (sent[0] + sent[1]) as f64;
    assert!((share - 40.0 / 48.0).abs() < 0.01, "{share}");
    assert_eq!(stripe(PathSet::default(), 1, |_| 0, |_| 1.0), None);
    // A zero or broken weight gets (almost) nothing, never a panic.
    let id = stripe(set, 1400, |_| 0, |i| [0.0, f64::NAN][i]);
    assert!(id.is_some());
}

/// Two local queues that drain 40 and 8 units per step, offered 90% of their sum in
/// chunks, at even shares (wrong for these rates). By the shares alone the slow
/// queue grows without end (it is offered 45 a step); once queues build here, the
/// chunks go to the queue that is shorter per share, and both stay within a few
/// chunks of [`LOCAL_QUEUE`]. With both queues short, or one unknown, the shares
/// decide.
#[test]
fn striping_levels_local_queues() {
    let mut set = PathSet::default();
    set.insert(0);
    set.insert(1);
    let k = LOCAL_QUEUE;
    assert_eq!(stripe_by_queue(set, |_| Some(k), |_| 1.0), None);
    assert_eq!(
        stripe_by_queue(set, |i| [Some(k + 1), None][i], |_| 1.0),
        None
    );
    assert_eq!(
        stripe_by_queue(set, |i| Some([k + 1, 0][i]), |_| 1.0),
        Some(1)
    );
    assert_eq!(
        stripe_by_queue(PathSet::default(), |_| Some(k + 1), |_| 1.0),
        None
    );
    // Per share: 4k+8 at 0.8 is longer than k+1 at 0.2; 3k is shorter than k+2.
    let w = [0.8, 0.2];
    assert_eq!(
        stripe_by_queue(set, |i| Some([4 * k + 8, k + 1][i]), |i| w[i]),
        Some(1)
    );
    assert_eq!(
        stripe_by_queue(set, |i| Some([3 * k, k + 2][i]), |i| w[i]),
        Some(0)
    );

    let run = |by_queue: bool| {
        let drain = [40.0 * k as f64 / 48.0, 8.0 * k as f64 / 48.0];
        let chunk = k as f64 / 4.0;
        let (mut queues, mut sent, mut worst, mut budget) = ([0.0f64; 2], [0u64; 2], 0.0f64, 0.0);
        for _ in 0..2000 {
            budget += 0.9 * k as f64;
            while budget >= chunk {
                budget -= chunk;
                let q = |i: usize| Some(queues[i] as u64);
                let id = by_queue
                    .then(|| stripe_by_queue(set, q, |_| 0.5))
                    .flatten()
                    .or_else(|| stripe(set, chunk as u64, |i| sent[i], |_| 0.5))
                    .unwrap();
                queues[id] += chunk;
                sent[id] += chunk as u64;
            }
            for i in 0..2 {
                queues[i] = (queues[i] - drain[i]).max(0.0);
                worst = worst.max(queues[i]);
            }
        }
        worst
    };
    let levelled = run(true);
    assert!(levelled <= 2.0 * k as f64, "{levelled}");
    assert!(run(false) > 100.0 * k as f64);
}

/// Two paths of 40 and 8 units, rebalanced every 100 ms: each round, the queue of a
/// path grows with what it is offered beyond its capacity (in all, the sum of the
/// capacities), drains when under, and is capped at 20 ms (tbf drops beyond). What
/// rebalancing sees lags, as the recent round trip does: half the last round's queue,
/// half what it saw before.
#[test]
fn rebalancing_equalises_queues_and_follows_capacity() {
    let caps = [40.0, 8.0];
    let target = 40.0 / 48.0;
    let mut shares = [0.5, 0.5];
    let mut queues = [0.0f64; 2];
    let mut seen = [None::<f64>; 2];
    let mut settled = None;
    let mut tail = Vec::new();
    for round in 0..300 {
        let q: Vec<Option<Duration>> = seen
            .iter()
            .map(|s| s.map(Duration::from_secs_f64))
            .collect();
        rebalance(&mut shares, &q);
        for i in 0..2 {
            let offered = shares[i] * 48.0;
            queues[i] = (queues[i] + (offered - caps[i]) / caps[i] * 0.1).clamp(0.0, 0.02);
            seen[i] = Some(seen[i].map_or(queues[i], |s| (s + queues[i]) / 2.0));
        }
        if settled.is_none() && (shares[0] - target).abs() < 0.05 {
            settled = Some(round);
        }
        if round >= 200 {
            tail.push(shares[0]);
        }
    }
    // Within a second (at 5% a step: 1.3 s here), and it stays.
    assert!(settled.is_some_and(|r| r <= 10), "{settled:?}");
    let mean = tail.iter().sum::<f64>() / tail.len() as f64;
    assert!((mean - target).abs() < 0.03, "{mean}");
    assert!(tail.iter().all(|s| (s - target).abs() < 0.05), "{tail:?}");
    // Equal queues: nothing moves; nor does a difference small beside the queues.
    let mut s = [0.3, 0.7];
    rebalance(&mut s, &[Some(Duration::from_millis(5)); 2]);
    assert!((s[0] - 0.3).abs() < 1e-9);
    let ms = |n| Some(Duration::from_millis(n));
    rebalance(&mut s, &[ms(3), ms(6)]);
    rebalance(&mut s, &[ms(20), ms(26)]);
    assert!((s[0] - 0.3).abs() < 1e-9, "{s:?}");
    // One path overflowing while the other idles: a big step at once (20% off one,
    // 20% onto the other), and a small one for a small difference (5%).
    let mut s = [0.5, 0.5];
    rebalance(&mut s, &[ms(0), ms(32)]);
    assert!((s[1] - 0.4).abs() < 1e-9, "{s:?}");
    let mut s = [0.5, 0.5];
    rebalance(&mut s, &[ms(0), ms(6)]);
    assert!((s[1] - 0.95 / 2.0).abs() < 1e-9, "{s:?}");
    // No measurement: nothing moves but the floor.
    let mut s = [0.999, 0.001];
    rebalance(&mut s, &[None, None]);
    assert!(s[1] >= MIN_SHARE * 0.9, "{s:?}");
    rebalance(&mut [], &[]);
}

fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        proto,
    ];
    p.resize(20, 0);
    p.extend_from_slice(l4);
    p
}

#[test]
fn classify_small_and_latency_sensitive_packets() {
    let small = DEFAULT_SMALL_UDP;
    // TCP: an ACK (data offset 5, no payload), one with timestamps (8), and data.
    let mut ack = vec![0u8; 20];
    ack[12] = 5 << 4;
    assert_eq!(classify(&ipv4(6, &ack), small), Traffic::Interactive);
    let mut ts = vec![0u8; 32];
    ts[12] = 8 << 4;
    assert_eq!(classify(&ipv4(6, &ts), small), Traffic::Interactive);
    let mut data = ack.clone();
    data.extend_from_slice(&[0u8; 1000]);
    assert_eq!(classify(&ipv4(6, &data), small), Traffic::Bulk);
    assert!(is_tcp_control(&ipv4(6, &ack)) && is_tcp_control(&ipv4(6, &ts)));
    assert!(!is_tcp_control(&ipv4(6, &data)));
    assert!(!is_tcp_control(&ipv4(1, &[8, 0, 0, 0])) && !is_tcp_control(&[]));
    // A SYN or SYN-ACK is control, but not an acknowledgement only; a FIN is.
    assert!(is_tcp_ack_only(&ipv4(6, &ack)) && !is_tcp_ack_only(&ipv4(6, &data)));
    let (mut syn, mut syn_ack, mut fin) = (ack.clone(), ack.clone(), ack.clone());
    syn[13] = 0x02;
    syn_ack[13] = 0x12;
    fin[13] = 0x11;
    assert!(is_tcp_control(&ipv4(6, &syn)) && is_tcp_control(&ipv4(6, &syn_ack)));
    assert!(!is_tcp_ack_only(&ipv4(6, &syn)) && !is_tcp_ack_only(&ipv4(6, &syn_ack)));
    assert!(is_tcp_ack_only(&ipv4(6, &fin)) && !is_tcp_ack_only(&[]));
    // UDP: DNS either way, small, and large.
    let mut dns = vec![0u8; 8 + 600];
    dns[2..4].copy_from_slice(&53u16.to_be_bytes());
    assert_eq!(classify(&ipv4(17, &dns), small), Traffic::Interactive);
    dns[2..4].copy_from_slice(&5353u16.to_be_bytes());
    dns[0..2].copy_from_slice(&53u16.to_be_bytes());
    assert_eq!(classify(&ipv4(17, &dns), small), Traffic::Interactive);
    dns[0..2].copy_from_slice(&4000u16.to_be_bytes());
    assert_eq!(classify(&ipv4(17, &dns), small), Traffic::Bulk);
    assert_eq!(classify(&ipv4(17, &dns), 1000), Traffic::Interactive);
    assert_eq!(
        classify(&ipv4(17, &[0u8; 100]), small),
        Traffic::Interactive
    );
    // ICMP, and ICMPv6.
    assert_eq!(
        classify(&ipv4(1, &[8, 0, 0, 0]), small),
        Traffic::Interactive
    );
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
    v6.resize(48, 0);
    assert_eq!(classify(&v6, small), Traffic::Interactive);
    // IPv6 TCP with payload.
    let mut v6 = vec![0x60, 0, 0, 0, 0x04, 0x14, 6, 64];
    v6.resize(40, 0);
    v6.extend_from_slice(&data);
    assert_eq!(classify(&v6, small), Traffic::Bulk);
    // Junk never panics.
    for n in 0..64 {
        let _ = classify(&vec![0x4f; n], small);
        let _ = classify(&vec![0x6f; n], small);
    }
    assert_eq!(classify(&[], small), Traffic::Interactive);
}
