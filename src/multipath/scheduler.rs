//! Which paths a packet leaves by. Pure: it sees each path's state, never a socket.
//!
//! Duplicate mode, the one mode so far: every packet goes out on every path that is up.
//! If no path is up (netlink may be stale, or every link flapped at once), every path is
//! tried, so that a wrong link state never silences the tunnel.

use crate::multipath::path::PathId;

/// The most paths a tunnel can have (the width of [`PathSet`]).
pub const MAX_PATHS: usize = 64;

/// A set of paths, by id, without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathSet(u64);

impl PathSet {
    /// Adds path `id` (ids from [`MAX_PATHS`] on are ignored).
    pub fn insert(&mut self, id: PathId) {
        if id < MAX_PATHS {
            self.0 |= 1 << id;
        }
    }

    /// True if path `id` is in the set.
    pub fn contains(&self, id: PathId) -> bool {
        id < MAX_PATHS && self.0 & (1 << id) != 0
    }

    /// True if the set holds no path.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The ids in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = PathId> {
        let bits = self.0;
        (0..MAX_PATHS).filter(move |i| bits & (1 << i) != 0)
    }
}

/// The paths a packet goes out on in duplicate mode, given whether each path (by id, in
/// order) is up: every path that is up; if none is, every path.
pub fn duplicate(up: impl IntoIterator<Item = bool>) -> PathSet {
    let (mut live, mut all) = (PathSet::default(), PathSet::default());
    for (id, is_up) in up.into_iter().enumerate() {
        all.insert(id);
        if is_up {
            live.insert(id);
        }
    }
    if live.is_empty() {
        all
    } else {
        live
    }
}

#[cfg(test)]
mod tests {
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
}
