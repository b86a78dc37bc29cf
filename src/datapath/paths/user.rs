//! The path layer as a trait a program implements ([`Transport`]: the seed's bind
//! factory), and the paths over it: no socket, no interface to follow; each path is a
//! name the transport knows, always up. The TX workers and the handshake worker hand it
//! each datagram ([`Transport::send`], one call each, no GSO), and it hands what it
//! receives to the tunnel's receive thread ([`Inbound::deliver`], a bounded queue the
//! receive thread drains: `src/datapath/rx/user.rs`).
//!
//! A program's transport is reached through `dyn Transport`, one call per datagram. The
//! tunnel's own UDP paths never go through it: their sends are plain calls on the
//! path's socket; only a path with no socket looks at its transport.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use super::{Path, Paths};
use crate::multipath::endpoint::DEFAULT_WINDOW;
use crate::multipath::path::PathId;

/// A program's path layer: sends a tunnel's datagrams on its paths, and hands what
/// arrives to the tunnel ([`Inbound`]).
///
/// ```
/// use std::net::SocketAddr;
/// use std::sync::OnceLock;
///
/// /// A path that logs every datagram and sends it nowhere.
/// #[derive(Default)]
/// struct Logging(OnceLock<mpwg::Inbound>);
///
/// impl mpwg::Transport for Logging {
///     fn attach(&self, inbound: mpwg::Inbound) {
///         let _ = self.0.set(inbound);
///     }
///     fn send(&self, path: &str, dst: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
///         println!("{path}: {} bytes to {dst}", datagram.len());
///         Ok(())
///     }
/// }
/// ```
pub trait Transport: Send + Sync + 'static {
    /// Called once when the tunnel starts, before anything is sent: where to hand the
    /// datagrams that arrive.
    fn attach(&self, inbound: Inbound);

    /// Sends `datagram` on the path named `path` to `dst`. It should not wait long: the
    /// TX worker that calls it waits. An error is counted as the path's send error (and
    /// logged, at increasing intervals).
    fn send(&self, path: &str, dst: SocketAddr, datagram: &[u8]) -> io::Result<()>;
}

impl Path {
    /// A path named `name` over `transport`.
    fn over(id: PathId, name: &str, transport: &Arc<dyn Transport>) -> Path {
        let mut p = Path::new(id, Some(name.to_string()), None, 0);
        p.gso.store(false, Ordering::Relaxed);
        p.transport = Some(transport.clone());
        p
    }

    /// Sends one datagram through the program's transport (false for a path that has
    /// none: a socket path whose interface is absent).
    pub(super) fn send_user(&self, dst: SocketAddr, d: &[u8]) -> bool {
        match &self.transport {
            Some(t) => self.sent(dst, t.send(self.label(), dst, d), d.len(), 1),
            None => false,
        }
    }
}

impl Paths {
    /// Paths named `names`, in order, over `transport`, reporting `port` as the listen
    /// port. The transport gets its [`Inbound`] from [`Paths::inbound`].
    pub fn open_user(names: &[String], port: u16, transport: Arc<dyn Transport>) -> Paths {
        let list: Vec<Arc<Path>> = names
            .iter()
            .enumerate()
            .map(|(id, n)| Arc::new(Path::over(id, n, &transport)))
            .collect();
        Paths {
            next_id: AtomicUsize::new(list.len()),
            list: ArcSwap::from_pointee(list),
            change: Mutex::new(()),
            generation: AtomicU64::new(0),
            port: AtomicU16::new(port),
            fwmark: AtomicU32::new(0),
            window: DEFAULT_WINDOW,
            epoch: Instant::now(),
            user: Some(UserTransport::new(transport)),
            schedule: Arc::default(),
        }
    }

    /// True if the paths are a program's transport, not sockets.
    pub fn is_user(&self) -> bool {
        self.user.is_some()
    }

    /// Where the program's transport hands what it receives (None: socket paths).
    pub fn inbound(self: &Arc<Self>) -> Option<Inbound> {
        self.user.as_ref().map(|u| u.inbound(self))
    }

    /// Hands the transport its [`Inbound`] ([`Transport::attach`]), once, at start.
    pub fn attach(self: &Arc<Self>) {
        if let (Some(u), Some(inbound)) = (&self.user, self.inbound()) {
            u.transport.attach(inbound);
        }
    }

    /// What the transport delivered, for the receive thread (None: socket paths).
    pub(crate) fn user_queue(&self) -> Option<&Receiver<Delivered>> {
        self.user.as_ref().map(|u| &u.rx)
    }

    /// [`Paths::add`] over the program's transport (the change lock held, `name` new).
    pub(super) fn add_user(
        &self,
        list: &[Arc<Path>],
        name: &str,
        user: &UserTransport,
    ) -> Arc<Path> {
        let path = Arc::new(Path::over(self.alloc_id(list), name, &user.transport));
        let mut next = list.to_vec();
        next.push(path.clone());
        self.list.store(Arc::new(next));
        self.changed();
        path
    }
}

/// Datagrams received that the receive thread has not taken yet, per tunnel; beyond,
/// [`Inbound::deliver`] drops them (as a full socket buffer would).
pub const INBOUND_DEPTH: usize = 4096;

/// One received datagram, queued for the receive thread.
pub(crate) struct Delivered {
    pub(crate) path: Arc<Path>,
    pub(crate) from: SocketAddr,
    pub(crate) datagram: Vec<u8>,
}

/// Where a [`Transport`] hands what it receives ([`Transport::attach`]). Cheap to clone; any thread may use it.
#[derive(Clone)]
pub struct Inbound {
    paths: Weak<Paths>,
    tx: Sender<Delivered>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("queued", &self.tx.len())
            .finish()
    }
}

impl Inbound {
    /// Hands `datagram`, received on the path named `path` from `from`, to the tunnel.
    /// Returns false if it was dropped: the tunnel has no path of that name, its queue
    /// is full ([`INBOUND_DEPTH`]), or it has stopped.
    pub fn deliver(&self, path: &str, from: SocketAddr, datagram: &[u8]) -> bool {
        let Some(paths) = self.paths.upgrade() else {
            return false;
        };
        let Some(path) = paths.all().iter().find(|p| p.name() == Some(path)).cloned() else {
            return false;
        };
        match self.tx.try_send(Delivered {
            path,
            from,
            datagram: datagram.to_vec(),
        }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The tunnel's side of a program's transport: the transport, and the queue its
/// [`Inbound`] fills.
pub(crate) struct UserTransport {
    pub(crate) transport: Arc<dyn Transport>,
    tx: Sender<Delivered>,
    pub(crate) rx: Receiver<Delivered>,
}

impl UserTransport {
    pub(crate) fn new(transport: Arc<dyn Transport>) -> UserTransport {
        let (tx, rx) = crossbeam_channel::bounded(INBOUND_DEPTH);
        UserTransport { transport, tx, rx }
    }

    /// The [`Inbound`] of the tunnel whose paths are `paths`.
    pub(crate) fn inbound(&self, paths: &Arc<Paths>) -> Inbound {
        Inbound {
            paths: Arc::downgrade(paths),
            tx: self.tx.clone(),
        }
    }
}
