//! Unix sockets a device is controlled through (the UAPI socket of `wg(8)`, and mpwg's
//! own control socket): created safely, served by threads, removed on drop.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What serves one accepted connection, on a thread of its own.
pub type ConnectionHandler = Arc<dyn Fn(UnixStream) + Send + Sync>;

/// Why a control socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketBindError {
    /// The name cannot be an interface name.
    #[error("{0:?} is not a valid interface name (1 to 15 characters, no '/', ':' or whitespace)")]
    InvalidName(String),
    /// The socket directory could not be created.
    #[error("cannot create the socket directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A server already answers on the socket.
    #[error(
        "device {name} already has a {what} at {}: is another mpwg or wireguard-go running for it?",
        path.display()
    )]
    InUse {
        /// Which socket: "UAPI socket", "control socket".
        what: &'static str,
        /// The device name.
        name: String,
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket sits at the socket path.
    #[error("{} exists and is not a socket; move it away so the socket can be created there", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The socket could not be created (or a stale one removed).
    #[error("cannot create the socket {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// A listening Unix socket of one device. Dropping it removes the socket file.
pub struct SocketServer {
    path: PathBuf,
    listener: Arc<UnixListener>,
    /// Device and inode of the socket file we created, so we never remove another's.
    identity: (u64, u64),
    stop: Arc<AtomicBool>,
    serving: AtomicBool,
}

impl fmt::Debug for SocketServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Linux's rules for an interface name (`dev_valid_name`).
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
}

/// Binds at `staged`, makes the socket 0600, moves it to `path`; returns the listener
/// and the socket file's device and inode.
fn bind_staged(staged: &Path, path: &Path) -> io::Result<(UnixListener, (u64, u64))> {
    let listener = UnixListener::bind(staged)?;
    fs::set_permissions(staged, fs::Permissions::from_mode(0o600))?;
    fs::rename(staged, path)?;
    let meta = fs::symlink_metadata(path)?;
    Ok((listener, (meta.dev(), meta.ino())))
}

/// Removes the staging directory and whatever socket is left in it.
fn remove_staging(dir: &Path, sock: &Path) {
    let _ = fs::remove_file(sock);
    let _ = fs::remove_dir(dir);
}

impl SocketServer {
    /// Creates the socket `DIR/NAME.SUFFIX`, mode 0600, creating `dir` (mode 0755) if
    /// missing. Refuses if a server answers on that socket already; removes a stale
    /// socket file left by a process that died.
    ///
    /// The socket is bound in a private directory, made 0600, and only then moved into
    /// place, so no other user can connect in between, whatever the umask.
    pub fn bind_in(
        dir: &Path,
        name: &str,
        suffix: &str,
        what: &'static str,
    ) -> Result<SocketServer, SocketBindError> {
        if !valid_interface_name(name) {
            return Err(SocketBindError::InvalidName(name.to_string()));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| SocketBindError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        let path = dir.join(format!("{name}.{suffix}"));
        let bind_err = |source| SocketBindError::Bind {
            path: path.clone(),
            source,
        };

        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketBindError::NotASocket { path });
            }
            Ok(_) => {
                match UnixStream::connect(&path) {
                    Ok(_) => {
                        return Err(SocketBindError::InUse {
                            what,
                            name: name.to_string(),
                            path,
                        });
                    }
                    // Nobody listens: a socket left behind by a process that died.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    // Anything else (no permission, say): do not guess, do not remove.
                    Err(e) => return Err(bind_err(e)),
                }
                tracing::info!("removing stale socket {}", path.display());
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(bind_err(e)),
                    _ => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }

        let staging = dir.join(format!(".{name}.{suffix}.{}.tmp", std::process::id()));
        let staged = staging.join("sock");
        remove_staging(&staging, &staged);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(bind_err)?;
        let result = bind_staged(&staged, &path);
        remove_staging(&staging, &staged);
        let (listener, identity) = result.map_err(bind_err)?;

        Ok(SocketServer {
            path,
            listener: Arc::new(listener),
            identity,
            stop: Arc::new(AtomicBool::new(false)),
            serving: AtomicBool::new(false),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True while the socket file is still the one this server created. The
    /// cross-platform spec asks a daemon to shut down when its socket file is deleted.
    pub fn socket_file_present(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity)
    }

    /// Serves clients in a background thread, each connection in a thread of its own,
    /// until the server is dropped. A second call does nothing. If no thread can be
    /// started (the process is out of threads), the failure is logged and no one is
    /// served.
    pub fn serve(&self, handler: ConnectionHandler) {
        if self.serving.swap(true, Ordering::SeqCst) {
            tracing::warn!("socket {} is already served", self.path.display());
            return;
        }
        let listener = Arc::clone(&self.listener);
        let stop = Arc::clone(&self.stop);
        let name = format!("socket {}", self.path.display());
        let spawned = std::thread::Builder::new()
            .name("mpwg-ipc-accept".to_string())
            .spawn(move || accept_loop(&listener, &stop, handler, &name));
        if let Err(e) = spawned {
            self.serving.store(false, Ordering::SeqCst);
            tracing::error!(
                "cannot start the thread serving {}: {e}; clients will get no answer",
                self.path.display()
            );
        }
    }
}

/// Accepts clients until `stop` is set.
fn accept_loop(listener: &UnixListener, stop: &AtomicBool, handler: ConnectionHandler, name: &str) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                let conn_handler = Arc::clone(&handler);
                let spawned = std::thread::Builder::new()
                    .name("mpwg-ipc-conn".to_string())
                    .spawn(move || conn_handler(stream));
                if let Err(e) = spawned {
                    tracing::warn!("{name}: cannot start a thread for a client: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!("{name}: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        let ours = self.socket_file_present();
        self.stop.store(true, Ordering::SeqCst);
        if ours && self.serving.load(Ordering::SeqCst) {
            // Wake the accept thread so it sees `stop` and ends.
            let _ = UnixStream::connect(&self.path);
        }
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}
