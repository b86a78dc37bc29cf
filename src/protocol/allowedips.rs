//! Allowed IPs: the longest-prefix-match table that routes outbound packets to a peer and
//! checks the source address of inbound ones.
//!
//! A binary trie per address family, nodes in a `Vec`. Lookups walk at most 32 or 128
//! nodes and never allocate; changes are rare (configuration) and may rebuild.

use std::net::IpAddr;

use crate::protocol::cidr::Cidr;

#[derive(Clone)]
struct Node<T> {
    children: [Option<u32>; 2],
    value: Option<T>,
}

/// One trie, for addresses of `BITS` bits held as a big-endian u128.
#[derive(Clone)]
struct Trie<T> {
    nodes: Vec<Node<T>>,
    bits: u32,
}

impl<T: Clone + PartialEq> Trie<T> {
    fn new(bits: u32) -> Trie<T> {
        Trie {
            nodes: vec![Node {
                children: [None, None],
                value: None,
            }],
            bits,
        }
    }

    fn bit(&self, addr: u128, depth: u32) -> usize {
        ((addr >> (self.bits - 1 - depth)) & 1) as usize
    }

    fn insert(&mut self, addr: u128, prefix: u32, value: T) {
        let mut n = 0usize;
        for depth in 0..prefix {
            let b = self.bit(addr, depth);
            n = match self.nodes[n].children[b] {
                Some(c) => c as usize,
                None => {
                    self.nodes.push(Node {
                        children: [None, None],
                        value: None,
                    });
                    let c = self.nodes.len() - 1;
                    self.nodes[n].children[b] = Some(c as u32);
                    c
                }
            };
        }
        self.nodes[n].value = Some(value);
    }

    fn lookup(&self, addr: u128) -> Option<&T> {
        let mut n = 0usize;
        let mut best = self.nodes[0].value.as_ref();
        for depth in 0..self.bits {
            match self.nodes[n].children[self.bit(addr, depth)] {
                Some(c) => n = c as usize,
                None => break,
            }
            if let Some(v) = self.nodes[n].value.as_ref() {
                best = Some(v);
            }
        }
        best
    }

    fn entries(&self, out: &mut Vec<(u128, u32, T)>) {
        let mut stack = vec![(0usize, 0u128, 0u32)];
        while let Some((n, addr, depth)) = stack.pop() {
            if let Some(v) = &self.nodes[n].value {
                out.push((addr, depth, v.clone()));
            }
            for b in [1usize, 0] {
                if let Some(c) = self.nodes[n].children[b] {
                    let a = addr | ((b as u128) << (self.bits - 1 - depth));
                    stack.push((c as usize, a, depth + 1));
                }
            }
        }
    }
}

/// The allowed-IPs table, mapping prefixes to a peer handle `T` (typically an index or
/// an `Arc` of the peer).
#[derive(Clone)]
pub struct AllowedIps<T> {
    v4: Trie<T>,
    v6: Trie<T>,
}

impl<T: Clone + PartialEq> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            v4: Trie::new(32),
            v6: Trie::new(128),
        }
    }
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl<T: Clone + PartialEq> AllowedIps<T> {
    /// Maps `cidr` to `value`, taking it from whichever peer had it before (as wg does).
    pub fn insert(&mut self, cidr: Cidr, value: T) {
        let trie = match cidr.addr {
            IpAddr::V4(_) => &mut self.v4,
            IpAddr::V6(_) => &mut self.v6,
        };
        trie.insert(key(cidr.addr), u32::from(cidr.prefix), value);
    }

    /// The value of the longest prefix that contains `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        match ip {
            IpAddr::V4(_) => self.v4.lookup(key(ip)),
            IpAddr::V6(_) => self.v6.lookup(key(ip)),
        }
    }

    /// Every prefix held for `value`.
    pub fn prefixes_of(&self, value: &T) -> Vec<Cidr> {
        self.all()
            .into_iter()
            .filter(|(_, v)| v == value)
            .map(|(c, _)| c)
            .collect()
    }

    /// Every (prefix, value) pair.
    pub fn all(&self) -> Vec<(Cidr, T)> {
        let mut out = Vec::new();
        let mut raw = Vec::new();
        self.v4.entries(&mut raw);
        for (a, p, v) in raw.drain(..) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(a as u32));
            if let Ok(c) = Cidr::new(addr, p as u8) {
                out.push((c, v));
            }
        }
        self.v6.entries(&mut raw);
        for (a, p, v) in raw {
            let addr = IpAddr::V6(std::net::Ipv6Addr::from(a));
            if let Ok(c) = Cidr::new(addr, p as u8) {
                out.push((c, v));
            }
        }
        out
    }

    /// Removes every prefix held for values matching `pred` (rebuilds the table).
    pub fn remove_where(&mut self, pred: impl Fn(&T) -> bool) {
        let keep: Vec<_> = self.all().into_iter().filter(|(_, v)| !pred(v)).collect();
        *self = AllowedIps::default();
        for (c, v) in keep {
            self.insert(c, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        t.insert(c("fd00::/64"), 3);
        assert_eq!(t.lookup("fd00::6".parse().unwrap()), Some(&3));
        t.remove_where(|v| *v == 3);
        assert_eq!(t.lookup("fd00::6".parse().unwrap()), None);
        assert_eq!(t.prefixes_of(&2), vec![c("fd00::5/128")]);
    }
}
