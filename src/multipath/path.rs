//! Paths as the rest of the tunnel names them: a path's id, where a datagram came from,
//! the interface a path is bound to, and the `--path`/`--path-index` arguments that pick
//! those interfaces.

use std::net::{IpAddr, SocketAddr};

/// Which local path (socket) a datagram arrived on or leaves by. Path 0 is the first.
pub type PathId = usize;

/// Where a received datagram came from, and where a reply to it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The sender's address.
    pub addr: SocketAddr,
    /// The local path it arrived on.
    pub path: PathId,
    /// The local address it was sent to, which a reply leaves from (None: unknown, the
    /// kernel picks the source).
    pub local: Option<IpAddr>,
}

/// A `--path` or `--path-index` argument, before it is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathArg {
    /// By interface name (`--path eth1`).
    Name(String),
    /// By interface index (`--path-index 3`).
    Index(u32),
}

impl std::fmt::Display for PathArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathArg::Name(n) => write!(f, "--path {n}"),
            PathArg::Index(i) => write!(f, "--path-index {i}"),
        }
    }
}

/// Why the paths asked for cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// No interface has this name.
    #[error("no interface named {0:?} (`mpwg interfaces` lists them)")]
    UnknownName(String),
    /// No interface has this index.
    #[error("no interface with index {0} (`mpwg interfaces` lists them)")]
    UnknownIndex(u32),
    /// The same interface given twice.
    #[error(
        "interface {name} is given twice ({first} and {second}): each path needs its own interface"
    )]
    Duplicate {
        /// Interface name.
        name: String,
        /// The first argument naming it.
        first: String,
        /// The second.
        second: String,
    },
}

/// An interface a path is bound to: its name, and the index that name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
}

/// Resolves path arguments against the interfaces that exist (`interfaces`), in the
/// order given.
pub fn resolve(args: &[PathArg], interfaces: &[Interface]) -> Result<Vec<Interface>, PathError> {
    let mut out: Vec<(Interface, &PathArg)> = Vec::new();
    for arg in args {
        let found = match arg {
            PathArg::Name(n) => interfaces
                .iter()
                .find(|i| &i.name == n)
                .ok_or_else(|| PathError::UnknownName(n.clone()))?,
            PathArg::Index(x) => interfaces
                .iter()
                .find(|i| i.index == *x)
                .ok_or(PathError::UnknownIndex(*x))?,
        };
        if let Some((_, first)) = out.iter().find(|(i, _)| i.index == found.index) {
            return Err(PathError::Duplicate {
                name: found.name.clone(),
                first: first.to_string(),
                second: arg.to_string(),
            });
        }
        out.push((found.clone(), arg));
    }
    Ok(out.into_iter().map(|(i, _)| i).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(index: u32, name: &str) -> Interface {
        Interface {
            name: name.into(),
            index,
        }
    }

    #[test]
    fn resolves_names_and_indices_in_order() {
        let list = [iface(1, "lo"), iface(3, "eth0"), iface(4, "wlan0")];
        let got = resolve(&[PathArg::Index(4), PathArg::Name("eth0".into())], &list).unwrap();
        assert_eq!(got[0].name, "wlan0");
        assert_eq!(got[1].index, 3);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let list = [iface(3, "eth0")];
        assert_eq!(
            resolve(&[PathArg::Name("eth9".into())], &list)
                .unwrap_err()
                .to_string(),
            "no interface named \"eth9\" (`mpwg interfaces` lists them)"
        );
        assert_eq!(
            resolve(&[PathArg::Index(42)], &list)
                .unwrap_err()
                .to_string(),
            "no interface with index 42 (`mpwg interfaces` lists them)"
        );
        assert_eq!(
            resolve(&[PathArg::Name("eth0".into()), PathArg::Index(3)], &list)
                .unwrap_err()
                .to_string(),
            "interface eth0 is given twice (--path eth0 and --path-index 3): each path needs its own interface"
        );
    }
}
