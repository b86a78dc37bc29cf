//! The sliding replay window: 8128 packets, as the kernel's and wireguard-go's.
//!
//! With duplicate paths, most packets arrive twice or more, so the window is consulted
//! twice: [`ReplayWindow::seen`] before decrypting (a copy already held is dropped without
//! spending an AEAD on it), and [`ReplayWindow::commit`] after the tag verified.
//!
//! The window also remembers roughly when counters were committed
//! ([`ReplayWindow::commit_at`], [`ReplayWindow::committed_within`]): a copy teaches a
//! path the peer's address only if the packet it copies was committed moments before,
//! so an old packet replayed from elsewhere teaches nothing.

use std::time::{Duration, Instant};

const BLOCKS: usize = 128;
/// Exact commit times kept for the newest commits (a slow path's copies at low rates).
const RECENT: usize = 64;
const BITS_TOTAL: u64 = (BLOCKS * 64) as u64;
/// How far behind the newest counter a packet may be and still be accepted.
pub const WINDOW_SIZE: u64 = BITS_TOTAL - 64;

/// A bitmap of recently seen counters.
#[derive(Clone)]
pub struct ReplayWindow {
    /// One more than the greatest counter committed (0: nothing yet).
    next: u64,
    bitmap: [u64; BLOCKS],
    /// Per bitmap block, when its first counter was committed since the block was last
    /// cleared: every counter of the block was committed then or later.
    block_since: [Option<Instant>; BLOCKS],
    /// The newest commits with their times, a ring.
    recent: [(u64, Option<Instant>); RECENT],
    recent_pos: usize,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            next: 0,
            bitmap: [0; BLOCKS],
            block_since: [None; BLOCKS],
            recent: [(0, None); RECENT],
            recent_pos: 0,
        }
    }
}

impl ReplayWindow {
    /// True if `counter` must be refused: already committed, or too far behind the window.
    pub fn seen(&self, counter: u64) -> bool {
        let Some(c) = counter.checked_add(1) else {
            return true;
        };
        if c.saturating_add(WINDOW_SIZE) < self.next {
            return true;
        }
        if c > self.next {
            return false;
        }
        let block = ((c >> 6) as usize) % BLOCKS;
        self.bitmap[block] & (1u64 << (c & 63)) != 0
    }

    /// One more than the greatest counter committed (0 if none).
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Records `counter`. Returns false (and records nothing) if it was already seen or is
    /// too old.
    pub fn commit(&mut self, counter: u64) -> bool {
        self.commit_inner(counter, None)
    }

    /// [`ReplayWindow::commit`], remembering that it happened at `now`.
    pub fn commit_at(&mut self, counter: u64, now: Instant) -> bool {
        self.commit_inner(counter, Some(now))
    }

    fn commit_inner(&mut self, counter: u64, now: Option<Instant>) -> bool {
        let Some(c) = counter.checked_add(1) else {
            return false;
        };
        if c.saturating_add(WINDOW_SIZE) < self.next {
            return false;
        }
        let index = c >> 6;
        if c > self.next {
            let current = self.next >> 6;
            let advance = (index - current).min(BLOCKS as u64);
            for i in 1..=advance {
                let b = ((current + i) as usize) % BLOCKS;
                self.bitmap[b] = 0;
                self.block_since[b] = None;
            }
            self.next = c;
        }
        let block = (index as usize) % BLOCKS;
        let bit = 1u64 << (c & 63);
        let fresh = self.bitmap[block] & bit == 0;
        self.bitmap[block] |= bit;
        if fresh {
            if let Some(now) = now {
                self.block_since[block].get_or_insert(now);
                self.recent[self.recent_pos] = (counter, Some(now));
                self.recent_pos = (self.recent_pos + 1) % RECENT;
            }
        }
        fresh
    }

    /// True if `counter` was committed (by [`ReplayWindow::commit_at`]) no longer than
    /// `within` before `now`. Never true for a packet committed earlier than that; it may
    /// be false for one committed within it, if it is neither among the newest commits
    /// nor in a block whose first commit was that recent (a slow trickle of packets).
    pub fn committed_within(&self, counter: u64, now: Instant, within: Duration) -> bool {
        if !self.seen(counter) {
            return false;
        }
        let Some(c) = counter.checked_add(1) else {
            return false;
        };
        if c.saturating_add(WINDOW_SIZE) < self.next {
            return false;
        }
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) <= within);
        if self.recent.iter().any(|&(n, t)| n == counter && recent(t)) {
            return true;
        }
        recent(self.block_since[((c >> 6) as usize) % BLOCKS])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_old_packets_are_refused() {
        let mut w = ReplayWindow::default();
        assert!(!w.seen(0));
        assert!(w.commit(0));
        assert!(w.seen(0));
        assert!(!w.commit(0));
        assert!(w.commit(5));
        assert!(w.commit(3), "out of order inside the window is fine");
        assert!(!w.commit(3));
        assert!(w.commit(10_000));
        assert!(w.commit(10_000 - WINDOW_SIZE + 1));
        assert!(w.seen(10_000 - WINDOW_SIZE - 1), "behind the window");
        assert!(!w.commit(10_000 - WINDOW_SIZE - 1));
    }

    #[test]
    fn whole_window_holds_8128_packets_out_of_order() {
        let mut w = ReplayWindow::default();
        let top = 20_000u64;
        assert!(w.commit(top));
        for c in (top - WINDOW_SIZE + 1..top).rev() {
            assert!(w.commit(c), "counter {c}");
        }
        for c in top - WINDOW_SIZE + 1..=top {
            assert!(w.seen(c));
        }
    }

    #[test]
    fn commit_times_bound_how_old_a_copy_may_be() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = ReplayWindow::default();
        // A slow trickle: one packet every 300 ms.
        for c in 0..10u64 {
            assert!(w.commit_at(c, t0 + ms(300 * c)));
        }
        let now = t0 + ms(2_800);
        assert!(
            w.committed_within(9, now, ms(500)),
            "the newest, 100 ms ago"
        );
        assert!(w.committed_within(8, now, ms(500)), "400 ms ago");
        assert!(!w.committed_within(7, now, ms(500)), "700 ms ago");
        assert!(!w.committed_within(0, now, ms(500)));
        assert!(!w.committed_within(10, now, ms(500)), "never committed");
        // A fast stream: the exact ring forgets, the blocks still bound it.
        let mut w = ReplayWindow::default();
        for c in 0..1_000u64 {
            assert!(w.commit_at(c, t0 + Duration::from_micros(c)));
        }
        let now = t0 + ms(100);
        assert!(w.committed_within(10, now, ms(500)));
        assert!(!w.committed_within(10, t0 + ms(600), ms(500)));
        // Without times (commit), nothing counts as recent.
        let mut w = ReplayWindow::default();
        assert!(w.commit(3));
        assert!(!w.committed_within(3, t0, ms(500)));
    }

    /// A model test: the window against a plain set of committed counters, over random
    /// sequences of commits and checks (near the top, far behind it, big jumps). A
    /// counter is accepted iff it was never committed and is not behind the window.
    mod model {
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::BTreeSet;

        #[derive(Debug, Clone)]
        enum Op {
            Commit(u64),
            Seen(u64),
        }

        /// Counters relative to the greatest committed so far: mostly near it (within
        /// and just past the window's edges), sometimes a jump far ahead.
        fn op() -> impl Strategy<Value = (bool, i64)> {
            (
                any::<bool>(),
                prop_oneof![
                    8 => -9000i64..200,
                    1 => -200i64..20_000,
                    1 => Just(i64::MAX),
                ],
            )
        }

        fn resolve(top: Option<u64>, delta: i64) -> u64 {
            if delta == i64::MAX {
                return u64::MAX - 1;
            }
            let base = i128::from(top.unwrap_or(0));
            (base + i128::from(delta)).clamp(0, i128::from(u64::MAX)) as u64
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn window_matches_a_set_of_seen_counters(ops in proptest::collection::vec(op(), 1..400)) {
                let mut w = ReplayWindow::default();
                let mut set: BTreeSet<u64> = BTreeSet::new();
                let mut top: Option<u64> = None;
                for (is_commit, delta) in ops {
                    let c = resolve(top, delta);
                    let op = if is_commit { Op::Commit(c) } else { Op::Seen(c) };
                    // What the window must say (the kernel's rule): refused iff already
                    // committed, or more than WINDOW_SIZE behind the greatest committed.
                    let behind = top.is_some_and(|t| c.saturating_add(WINDOW_SIZE) < t);
                    let refused = set.contains(&c) || behind || c == u64::MAX;
                    match op {
                        Op::Seen(c) => prop_assert_eq!(w.seen(c), refused, "seen({}) top {:?}", c, top),
                        Op::Commit(c) => {
                            prop_assert_eq!(w.commit(c), !refused, "commit({}) top {:?}", c, top);
                            if !refused {
                                set.insert(c);
                                top = Some(top.map_or(c, |t| t.max(c)));
                            }
                        }
                    }
                }
            }
        }
    }

    /// A model test of the commit times: over random commits at random, advancing
    /// times, `committed_within` is never true for a counter that was not committed
    /// within the span asked about (what keeps an old packet replayed later from
    /// teaching an address), and always true for one of the last 64 commits that was.
    mod times {
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::HashMap;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            #[test]
            fn committed_within_never_vouches_for_an_old_commit(
                ops in proptest::collection::vec((-300i64..300, 0u64..400, any::<bool>()), 1..300),
            ) {
                let t0 = Instant::now();
                let within = Duration::from_millis(500);
                let mut w = ReplayWindow::default();
                let mut when: HashMap<u64, Instant> = HashMap::new();
                let mut order: Vec<u64> = Vec::new();
                let (mut top, mut now) = (1_000u64, t0);
                for (delta, step_ms, check) in ops {
                    now += Duration::from_millis(step_ms);
                    let c = top.saturating_add_signed(delta);
                    if check {
                        let got = w.committed_within(c, now, within);
                        let truth = when
                            .get(&c)
                            .is_some_and(|&t| now.duration_since(t) <= within);
                        prop_assert!(!got || truth, "vouched for {} committed {:?} ago", c,
                            when.get(&c).map(|&t| now.duration_since(t)));
                        let recent = order.iter().rev().take(RECENT).any(|&n| n == c);
                        if truth && recent {
                            prop_assert!(got, "forgot {}, committed {:?} ago", c,
                                now.duration_since(when[&c]));
                        }
                    } else if w.commit_at(c, now) {
                        when.insert(c, now);
                        order.push(c);
                        top = top.max(c);
                    }
                }
            }
        }
    }

    #[test]
    fn a_big_jump_clears_the_bitmap() {
        let mut w = ReplayWindow::default();
        for c in 0..200 {
            assert!(w.commit(c));
        }
        assert!(w.commit(1_000_000));
        for c in 1_000_000 - 100..1_000_000 {
            assert!(!w.seen(c), "{c} was never received");
        }
        assert!(w.seen(u64::MAX));
    }
}
