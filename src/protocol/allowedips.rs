//! Allowed IPs: the longest-prefix-match table that routes outbound packets to a peer and
//! checks the source address of inbound ones.
//!
//! A path-compressed binary trie per address family (a node only where a prefix is held
//! or where two branch apart: at most two nodes per prefix, however long the prefixes),
//! with nodes shared through `Arc`s. A copy of the table is a copy of two pointers, and a
//! change copies only the nodes on the path to what changes (at most one per bit of the
//! address), so the workers keep reading the snapshot they hold while a `set` changes
//! its own copy, and a `set` costs what it changes, not the size of the table. Lookups
//! never allocate and take no lock.
//!
//! Written here rather than taken from a crate: the crates for prefix tables either
//! mutate in place (so every change would copy the whole table for the workers'
//! snapshots) or are not maintained.

use std::net::IpAddr;
use std::sync::Arc;

use crate::protocol::cidr::Cidr;

/// One node: a prefix (`key`, its `len` leading bits, the rest zero), maybe a value, and
/// the subtrees whose next bit after the prefix is 0 or 1.
#[derive(Clone)]
struct Node<T> {
    key: u128,
    len: u8,
    value: Option<T>,
    children: [Option<Arc<Node<T>>>; 2],
}

/// The `len` leading bits of `key`, the rest cleared.
fn mask(key: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        key & (!0u128 << (128 - u32::from(len)))
    }
}

/// Bit `i` of `key`, counted from the most significant.
fn bit(key: u128, i: u8) -> usize {
    ((key >> (127 - u32::from(i))) & 1) as usize
}

/// How many leading bits `a` and `b` share, at most `max`.
fn common(a: u128, b: u128, max: u8) -> u8 {
    (((a ^ b).leading_zeros()) as u8).min(max)
}

fn leaf<T>(key: u128, len: u8, value: T) -> Arc<Node<T>> {
    Arc::new(Node {
        key,
        len,
        value: Some(value),
        children: [None, None],
    })
}

fn insert<T: Clone>(slot: &mut Option<Arc<Node<T>>>, key: u128, len: u8, value: T) -> Option<T> {
    let Some(node) = slot.as_mut() else {
        *slot = Some(leaf(key, len, value));
        return None;
    };
    let shared = common(node.key, key, node.len.min(len));
    if shared == node.len && shared == len {
        return Arc::make_mut(node).value.replace(value);
    }
    if shared == node.len {
        let n = Arc::make_mut(node);
        let b = bit(key, n.len);
        return insert(&mut n.children[b], key, len, value);
    }
    let Some(old) = slot.take() else {
        return None; // unreachable: the slot was just seen full
    };
    let mut split = Node {
        key: mask(key, shared),
        len: shared,
        value: None,
        children: [None, None],
    };
    let side = bit(old.key, shared);
    split.children[side] = Some(old);
    if shared == len {
        split.value = Some(value);
    } else {
        split.children[bit(key, shared)] = Some(leaf(key, len, value));
    }
    *slot = Some(Arc::new(split));
    None
}

/// Removes the value at exactly (`key`, `len`); the caller has checked it is there, so
/// no node is copied for nothing.
fn remove<T: Clone>(slot: &mut Option<Arc<Node<T>>>, key: u128, len: u8) -> Option<T> {
    let node = slot.as_mut()?;
    let n = Arc::make_mut(node);
    let taken = if n.len == len {
        n.value.take()
    } else {
        let b = bit(key, n.len);
        remove(&mut n.children[b], key, len)
    };
    // A node without a value keeps its place only where two subtrees branch.
    let n = Arc::make_mut(slot.as_mut()?);
    if n.value.is_none() {
        match (&n.children[0], &n.children[1]) {
            (None, None) => *slot = None,
            (Some(_), None) => *slot = n.children[0].take(),
            (None, Some(_)) => *slot = n.children[1].take(),
            _ => {}
        }
    }
    taken
}

/// One address family's trie; addresses are held left-aligned in a u128 (an IPv4
/// address in the top 32 bits).
struct Trie<T> {
    root: Option<Arc<Node<T>>>,
    len: usize,
}

impl<T> Clone for Trie<T> {
    fn clone(&self) -> Self {
        Trie {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<T: Clone> Trie<T> {
    fn insert(&mut self, key: u128, len: u8, value: T) -> Option<T> {
        let old = insert(&mut self.root, key, len, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    fn get(&self, key: u128, len: u8) -> Option<&T> {
        let mut node = self.root.as_deref()?;
        loop {
            if node.len > len || mask(key, node.len) != node.key {
                return None;
            }
            if node.len == len {
                return node.value.as_ref();
            }
            node = node.children[bit(key, node.len)].as_deref()?;
        }
    }

    fn remove(&mut self, key: u128, len: u8) -> Option<T> {
        self.get(key, len)?;
        let old = remove(&mut self.root, key, len);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    fn lookup(&self, addr: u128, max: u8) -> Option<&T> {
        let mut best = None;
        let mut node = self.root.as_deref();
        while let Some(n) = node {
            if mask(addr, n.len) != n.key {
                break;
            }
            if n.value.is_some() {
                best = n.value.as_ref();
            }
            if n.len >= max {
                break;
            }
            node = n.children[bit(addr, n.len)].as_deref();
        }
        best
    }

    /// Every (key, len, value), in address order (a prefix before what it contains).
    fn entries<'a>(&'a self, out: &mut Vec<(u128, u8, &'a T)>) {
        let mut stack: Vec<&Node<T>> = self.root.as_deref().into_iter().collect();
        while let Some(n) = stack.pop() {
            if let Some(v) = &n.value {
                out.push((n.key, n.len, v));
            }
            stack.extend(n.children.iter().rev().flatten().map(|c| &**c));
        }
    }
}

/// The allowed-IPs table, mapping prefixes to a peer handle `T` (typically an index or
/// an `Arc` of the peer). Cloning it is O(1): the clone shares every node.
pub struct AllowedIps<T> {
    v4: Trie<T>,
    v6: Trie<T>,
}

impl<T> Clone for AllowedIps<T> {
    fn clone(&self) -> Self {
        AllowedIps {
            v4: self.v4.clone(),
            v6: self.v6.clone(),
        }
    }
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            v4: Trie { root: None, len: 0 },
            v6: Trie { root: None, len: 0 },
        }
    }
}

/// An address left-aligned in a u128, and the most bits a prefix of its family has.
fn key(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

impl<T: Clone> AllowedIps<T> {
    fn trie(&self, ip: IpAddr) -> &Trie<T> {
        match ip {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        }
    }

    fn trie_mut(&mut self, ip: IpAddr) -> &mut Trie<T> {
        match ip {
            IpAddr::V4(_) => &mut self.v4,
            IpAddr::V6(_) => &mut self.v6,
        }
    }

    /// Maps `cidr` to `value`, taking it from whichever peer had it before (as wg does).
    /// Returns the value it had.
    pub fn insert(&mut self, cidr: Cidr, value: T) -> Option<T> {
        let (k, _) = key(cidr.addr);
        self.trie_mut(cidr.addr).insert(k, cidr.prefix, value)
    }

    /// Removes `cidr` (exactly that prefix); returns its value, if it was held.
    pub fn remove(&mut self, cidr: Cidr) -> Option<T> {
        let (k, _) = key(cidr.addr);
        self.trie_mut(cidr.addr).remove(k, cidr.prefix)
    }

    /// The value held for exactly `cidr`.
    pub fn get(&self, cidr: Cidr) -> Option<&T> {
        let (k, _) = key(cidr.addr);
        self.trie(cidr.addr).get(k, cidr.prefix)
    }

    /// The value of the longest prefix that contains `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        let (k, max) = key(ip);
        self.trie(ip).lookup(k, max)
    }

    /// How many prefixes are held.
    pub fn len(&self) -> usize {
        self.v4.len + self.v6.len
    }

    /// True if no prefix is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every (prefix, value) pair: IPv4 then IPv6, each in address order. One walk of
    /// the table, whatever the number of values.
    pub fn all(&self) -> Vec<(Cidr, &T)> {
        let mut raw = Vec::with_capacity(self.len());
        let mut out = Vec::with_capacity(self.len());
        self.v4.entries(&mut raw);
        for (k, len, v) in raw.drain(..) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from((k >> 96) as u32));
            if let Ok(c) = Cidr::new(addr, len) {
                out.push((c, v));
            }
        }
        self.v6.entries(&mut raw);
        for (k, len, v) in raw {
            let addr = IpAddr::V6(std::net::Ipv6Addr::from(k));
            if let Ok(c) = Cidr::new(addr, len) {
                out.push((c, v));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::default();
        t.insert(c("0.0.0.0/0"), 1);
        t.insert(c("10.0.0.0/8"), 2);
        t.insert(c("10.1.0.0/16"), 3);
        t.insert(c("10.1.2.3/32"), 4);
        let l = |s: &str| t.lookup(s.parse().unwrap()).copied();
        assert_eq!(l("8.8.8.8"), Some(1));
        assert_eq!(l("10.2.0.1"), Some(2));
        assert_eq!(l("10.1.9.9"), Some(3));
        assert_eq!(l("10.1.2.3"), Some(4));
        assert_eq!(l("fd00::1"), None);
    }

    #[test]
    fn v6_and_reassignment_and_removal() {
        let mut t = AllowedIps::default();
        t.insert(c("fd00::/64"), 1);
        t.insert(c("fd00::5/128"), 2);
        assert_eq!(t.lookup("fd00::5".parse().unwrap()), Some(&2));
        assert_eq!(t.lookup("fd00::6".parse().unwrap()), Some(&1));
        assert_eq!(t.insert(c("fd00::/64"), 3), Some(1), "taken from its owner");
        assert_eq!(t.lookup("fd00::6".parse().unwrap()), Some(&3));
        assert_eq!(t.remove(c("fd00::/64")), Some(3));
        assert_eq!(t.remove(c("fd00::/64")), None);
        assert_eq!(t.lookup("fd00::6".parse().unwrap()), None);
        assert_eq!(t.all(), vec![(c("fd00::5/128"), &2)]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_copy_is_a_snapshot_and_changes_copy_only_their_path() {
        let mut t = AllowedIps::default();
        for i in 0..=255u8 {
            t.insert(c(&format!("10.0.{i}.0/24")), u32::from(i));
        }
        let snapshot = t.clone();
        t.insert(c("10.0.7.128/25"), 1000);
        t.remove(c("10.0.9.0/24"));
        assert_eq!(snapshot.lookup("10.0.7.200".parse().unwrap()), Some(&7));
        assert_eq!(snapshot.lookup("10.0.9.1".parse().unwrap()), Some(&9));
        assert_eq!(t.lookup("10.0.7.200".parse().unwrap()), Some(&1000));
        assert_eq!(t.lookup("10.0.9.1".parse().unwrap()), None);
        // The untouched half of the table is still shared with the snapshot.
        let right = |x: &AllowedIps<u32>| x.v4.root.as_ref().unwrap().children[1].clone();
        assert!(Arc::ptr_eq(&right(&t).unwrap(), &right(&snapshot).unwrap()));
    }

    #[test]
    fn nodes_stay_few_for_long_prefixes() {
        fn count<T>(n: &Option<Arc<Node<T>>>) -> usize {
            n.as_ref()
                .map_or(0, |n| 1 + count(&n.children[0]) + count(&n.children[1]))
        }
        let mut t = AllowedIps::default();
        for i in 0..1000u32 {
            let a = std::net::Ipv6Addr::from((0xfd00u128 << 112) | u128::from(i * 7919));
            t.insert(Cidr::new(a.into(), 128).unwrap(), i);
        }
        assert_eq!(t.len(), 1000);
        assert!(count(&t.v6.root) < 2000, "{} nodes", count(&t.v6.root));
        for i in 0..1000u32 {
            let a = std::net::Ipv6Addr::from((0xfd00u128 << 112) | u128::from(i * 7919));
            assert_eq!(t.remove(Cidr::new(a.into(), 128).unwrap()), Some(i));
        }
        assert!(t.v6.root.is_none(), "removal leaves no empty node");
    }

    /// A model test: the trie against a plain list of prefixes, looked up by the
    /// longest matching one.
    fn model_lookup(model: &[(u32, u8, u16)], addr: u32) -> Option<u16> {
        model
            .iter()
            .filter(|(k, l, _)| {
                let m = if *l == 0 { 0 } else { !0u32 << (32 - l) };
                addr & m == *k
            })
            .max_by_key(|(_, l, _)| *l)
            .map(|(_, _, v)| *v)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn matches_a_list_of_prefixes(
            ops in proptest::collection::vec((any::<bool>(), any::<u32>(), 0u8..=32, any::<u16>()), 1..120),
            probes in proptest::collection::vec(any::<u32>(), 32),
        ) {
            let mut t = AllowedIps::default();
            let mut model: Vec<(u32, u8, u16)> = Vec::new();
            for (ins, addr, len, v) in ops {
                // Few distinct high bits, so prefixes nest and collide.
                let addr = addr & 0xc0ff_00ff;
                let cidr = Cidr::new(std::net::Ipv4Addr::from(addr).into(), len).unwrap();
                let IpAddr::V4(net) = cidr.addr else { unreachable!() };
                let k = u32::from(net);
                let pos = model.iter().position(|(mk, ml, _)| *mk == k && *ml == len);
                if ins {
                    let old = t.insert(cidr, v);
                    prop_assert_eq!(old, pos.map(|p| model[p].2));
                    match pos { Some(p) => model[p].2 = v, None => model.push((k, len, v)) }
                } else {
                    let old = t.remove(cidr);
                    prop_assert_eq!(old, pos.map(|p| model[p].2));
                    if let Some(p) = pos { model.remove(p); }
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for p in probes.iter().copied().chain(model.iter().map(|m| m.0)) {
                let p = p & 0xc0ff_00ff | (p & 0x0100_0100);
                prop_assert_eq!(t.lookup(std::net::Ipv4Addr::from(p).into()).copied(), model_lookup(&model, p));
            }
            prop_assert_eq!(t.all().len(), model.len());
        }
    }
}
