//! Paths that come and go: interfaces deleted and re-created (link events, driven by the
//! state model in [`crate::multipath::state`]), and paths added and removed at run time.
//! Every change holds the paths' change lock, swaps the list whole, and bumps the
//! generation so the receive thread takes the new sockets.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{open_patiently, LinkEvent, LinkInfo, Path, PathChangeError, PathSocket, Paths};
use crate::multipath::scheduler::MAX_PATHS;
use crate::multipath::state::{Change, LinkState, PathLink, Seen, SocketChange};

impl Paths {
    /// An id for a new path: below [`MAX_PATHS`] (the scheduler's sets hold no more),
    /// not used by a path of `list`, and the one freed longest ago: ids go round, so a
    /// path does not inherit the peer addresses another one learned recently (those age
    /// out of the endpoint table within its window).
    pub(super) fn alloc_id(&self, list: &[Arc<Path>]) -> usize {
        let start = self.next_id.load(Ordering::Relaxed);
        let id = (0..MAX_PATHS)
            .map(|i| (start + i) % MAX_PATHS)
            .find(|id| list.iter().all(|p| p.id != *id))
            .unwrap_or(start % MAX_PATHS);
        self.next_id.store(id + 1, Ordering::Relaxed);
        id
    }

    /// Applies a socket change the state model asked for, on `path` (the change lock
    /// held). A socket that cannot be opened is logged; [`Paths::retry_sockets`] tries
    /// again.
    fn apply(&self, path: &Path, socket: SocketChange) {
        match socket {
            SocketChange::Keep => {}
            SocketChange::Close => {
                if path.close_socket() {
                    self.changed();
                }
            }
            SocketChange::Open(_) => {
                if path.close_socket() {
                    // The receive thread lets go of the old socket.
                    self.changed();
                }
                self.open_for(path);
            }
        }
    }

    /// Opens a socket for `path`, bound to its interface; logs a failure.
    fn open_for(&self, path: &Path) -> bool {
        match open_patiently(&self.opts(path.name())) {
            Ok(s) => {
                *path.socket.write() = Some(Arc::new(s));
                self.changed();
                true
            }
            Err(e) => {
                tracing::warn!(
                    path = path.label(),
                    "path {}: cannot open its socket ({e}); trying again each second",
                    path.label()
                );
                self.changed();
                false
            }
        }
    }

    /// Follows a link event: the state of the paths it concerns, and their sockets.
    /// Returns the paths whose state or socket changed, with the change (for the log).
    pub fn link_event(&self, ev: LinkEvent, now: Instant) -> Vec<(Arc<Path>, Change)> {
        self.update_links(|p, link| match ev {
            LinkEvent::New {
                index,
                name,
                up,
                mtu,
            } => {
                if name == link.name() {
                    p.mtu.store(mtu, Ordering::Relaxed);
                }
                link.on_new_link(index, name, up, now)
            }
            LinkEvent::Del { index } => link.on_del_link(index, now),
        })
    }

    /// Sets every path's state from a full list of interfaces (at start, and after
    /// netlink lost events). Returns the changes, as [`Paths::link_event`].
    pub fn sync(&self, links: &[LinkInfo], now: Instant) -> Vec<(Arc<Path>, Change)> {
        self.update_links(|p, link| {
            let found = links.iter().find(|l| l.name == link.name());
            if let Some(l) = found {
                p.mtu.store(l.mtu, Ordering::Relaxed);
                p.set_addresses(&l.addresses);
            }
            link.observe(
                found.map(|l| Seen {
                    index: l.index,
                    up: l.up,
                }),
                now,
            )
        })
    }

    /// Runs `step` on the link state of every path that follows an interface (under
    /// the change lock), applies the changes it returns, and lists them.
    fn update_links(
        &self,
        mut step: impl FnMut(&Path, &mut PathLink) -> Change,
    ) -> Vec<(Arc<Path>, Change)> {
        let _g = self.change.lock();
        let mut out = Vec::new();
        for p in self.list.load().iter() {
            let change = {
                let mut link = p.link.lock();
                let Some(link) = link.as_mut() else {
                    continue;
                };
                step(p, link)
            };
            if !change.is_none() {
                self.record(p, change);
                out.push((p.clone(), change));
            }
        }
        out
    }

    fn record(&self, p: &Path, change: Change) {
        p.up.store(change.to.is_up(), Ordering::Relaxed);
        self.apply(p, change.socket);
    }

    /// Opens the sockets that a present interface's path still lacks (an earlier open
    /// failed). Returns the paths that got one.
    pub fn retry_sockets(&self) -> Vec<Arc<Path>> {
        let _g = self.change.lock();
        let mut out = Vec::new();
        for p in self.list.load().iter() {
            let wants = p
                .link
                .lock()
                .as_ref()
                .is_some_and(|l| l.state() != LinkState::Absent);
            if wants && p.socket.read().is_none() {
                if let Ok(s) = PathSocket::open(&self.opts(p.name())) {
                    *p.socket.write() = Some(Arc::new(s));
                    self.changed();
                    out.push(p.clone());
                }
            }
        }
        out
    }

    /// Adds a path on interface `name`, as `seen` now (None: no such interface yet; the
    /// path is then absent and joins when one appears). A tunnel whose only path was the
    /// unbound socket trades it for this path. Nothing changes on an error.
    pub fn add(
        &self,
        name: &str,
        seen: Option<&LinkInfo>,
        now: Instant,
    ) -> Result<Arc<Path>, PathChangeError> {
        let _g = self.change.lock();
        let list = self.list.load_full();
        if list.iter().any(|p| p.name() == Some(name)) {
            return Err(PathChangeError::Exists(name.to_string()));
        }
        let unbound: Vec<&Arc<Path>> = list.iter().filter(|p| p.name.is_none()).collect();
        if list.len() - unbound.len() >= MAX_PATHS {
            return Err(PathChangeError::TooMany);
        }
        if let Some(user) = &self.user {
            return Ok(self.add_user(&list, name, user));
        }
        let (link, _) = PathLink::new(
            name,
            seen.map(|l| Seen {
                index: l.index,
                up: l.up,
            }),
            now,
        );
        let id = self.alloc_id(&list);
        let path = Arc::new(Path::new(
            id,
            Some(name.to_string()),
            Some(link),
            seen.map_or(0, |l| l.mtu),
        ));
        if let Some(l) = seen {
            path.set_addresses(&l.addresses);
        }
        // The unbound socket holds the port on every interface: it goes first (and the
        // receive thread lets go of it).
        for u in &unbound {
            u.close_socket();
        }
        if !unbound.is_empty() {
            self.changed();
        }
        if seen.is_some() {
            match open_patiently(&self.opts(Some(name))) {
                Ok(s) => *path.socket.write() = Some(Arc::new(s)),
                Err(e) => {
                    for u in &unbound {
                        match open_patiently(&self.opts(None)) {
                            Ok(s) => *u.socket.write() = Some(Arc::new(s)),
                            Err(e) => tracing::error!(
                                "cannot reopen the unbound socket ({e}): the tunnel has none"
                            ),
                        }
                    }
                    self.changed();
                    return Err(e.into());
                }
            }
        }
        let mut next: Vec<Arc<Path>> = list.iter().filter(|p| p.name.is_some()).cloned().collect();
        next.push(path.clone());
        self.list.store(Arc::new(next));
        self.changed();
        Ok(path)
    }

    /// Removes the path on interface `name` and closes its socket. Removing the last
    /// path brings back the unbound socket of a tunnel without paths. Nothing changes on
    /// an error.
    pub fn remove(&self, name: &str) -> Result<Arc<Path>, PathChangeError> {
        let _g = self.change.lock();
        let list = self.list.load_full();
        let Some(path) = list.iter().find(|p| p.name() == Some(name)).cloned() else {
            return Err(PathChangeError::NotFound(name.to_string()));
        };
        let mut next: Vec<Arc<Path>> = list.iter().filter(|p| p.id != path.id).cloned().collect();
        let had_socket = path.close_socket();
        if next.is_empty() && self.user.is_none() {
            // The removed path's socket holds the port on its interface, which the
            // unbound socket needs: the receive thread lets go of it first.
            self.changed();
            let unbound = Arc::new(Path::new(self.alloc_id(&next), None, None, 0));
            match open_patiently(&self.opts(None)) {
                Ok(s) => *unbound.socket.write() = Some(Arc::new(s)),
                Err(e) => {
                    if had_socket {
                        self.open_for(&path);
                    }
                    self.changed();
                    return Err(e.into());
                }
            }
            next.push(unbound);
        }
        self.list.store(Arc::new(next));
        self.changed();
        Ok(path)
    }
}
