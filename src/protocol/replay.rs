//! The sliding replay window: 8128 packets, as the kernel's and wireguard-go's.
//!
//! With duplicate paths, most packets arrive twice or more, so the window is consulted
//! twice: [`ReplayWindow::seen`] before decrypting (a copy already held is dropped without
//! spending an AEAD on it), and [`ReplayWindow::commit`] after the tag verified.

const BLOCKS: usize = 128;
const BITS_TOTAL: u64 = (BLOCKS * 64) as u64;
/// How far behind the newest counter a packet may be and still be accepted.
pub const WINDOW_SIZE: u64 = BITS_TOTAL - 64;

/// A bitmap of recently seen counters.
#[derive(Clone)]
pub struct ReplayWindow {
    /// One more than the greatest counter committed (0: nothing yet).
    next: u64,
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            next: 0,
            bitmap: [0; BLOCKS],
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
                self.bitmap[((current + i) as usize) % BLOCKS] = 0;
            }
            self.next = c;
        }
        let block = (index as usize) % BLOCKS;
        let bit = 1u64 << (c & 63);
        let fresh = self.bitmap[block] & bit == 0;
        self.bitmap[block] |= bit;
        fresh
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
