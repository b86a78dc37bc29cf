//! The cross-platform userspace API that `wg(8)` speaks to `/var/run/wireguard/NAME.sock`.
//!
//! The protocol (<https://www.wireguard.com/xplatform/>) is line based. A client writes
//! `get=1\n\n`, or `set=1\n` then `key=value\n` lines then an empty line. A get is answered
//! with the device's `key=value` lines then `errno=0\n\n`; a set with `errno=0\n\n` or a
//! nonzero errno. Several requests may follow one another on one connection.
//!
//! As wireguard-go does, and as `wg(8)` expects (it sets `errno = -N` from the reply), a
//! failure goes on the wire as a *negative* errno: [`UapiError::errno`] holds the positive
//! value (`libc::EINVAL`), and the reply reads `errno=-22`.
//!
//! A set is parsed whole ([`parse_set`]) before the device applies any of it, so a
//! malformed request changes nothing.

mod format;
mod parse;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::io::ipc::SocketBindError;
use crate::io::ipc::SocketServer;
pub use crate::protocol::request::{DeviceSnapshot, PeerSnapshot, PeerUpdate, SetRequest};
pub use format::format_get;
use format::status_reply;
pub use parse::parse_set;
use parse::shown;

/// The directory `wg(8)` looks in for userspace devices' sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The longest request line the server accepts, in bytes (the longest line `wg` sends
/// is a 64-digit key, or an endpoint with a long scope name).
pub const MAX_LINE_BYTES: usize = 4096;

/// The largest request the server accepts, in bytes (about 300,000 allowed IPs). A
/// larger one is read to its end, discarded, and answered with `E2BIG`.
pub const MAX_REQUEST_BYTES: usize = 8 << 20;

/// A failed `set`: the errno sent back to `wg`, and a message for the daemon's log.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct UapiError {
    /// A positive errno (`libc::EINVAL`, `libc::EADDRINUSE`, ...); it is sent negated, as
    /// wireguard-go does.
    pub errno: i32,
    /// What went wrong, for the log. Never contains a private or preshared key.
    pub message: String,
}

impl UapiError {
    /// An `EINVAL` error with this message.
    pub fn invalid(message: impl Into<String>) -> UapiError {
        UapiError {
            errno: libc::EINVAL,
            message: message.into(),
        }
    }
}

/// What the device provides to the UAPI server.
pub trait UapiHandler: Send + Sync {
    /// The device's current state.
    fn get(&self) -> DeviceSnapshot;
    /// Applies the whole request or nothing.
    fn set(&self, req: SetRequest) -> Result<(), UapiError>;
}

// ---------------------------------------------------------------------------------------
// Serving one connection

/// What reading one line gave.
enum LineRead {
    /// End of stream before any byte.
    Eof,
    /// A line (its last one may lack the newline at the end of the stream).
    Line,
    /// A line longer than the limit; it was read to its end and discarded.
    TooLong,
}

/// Reads one line into `out` (without its `\n`), never holding more than `cap` bytes.
fn read_line_capped<R: BufRead>(r: &mut R, out: &mut Vec<u8>, cap: usize) -> io::Result<LineRead> {
    out.clear();
    let mut any = false;
    let mut too_long = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => LineRead::Eof,
                (true, false) => LineRead::Line,
                (true, true) => LineRead::TooLong,
            });
        }
        any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        if !too_long {
            if out.len() + chunk.len() > cap {
                too_long = true;
                out.clear();
            } else {
                out.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(buf.len(), |i| i + 1);
        r.consume(used);
        if newline.is_some() {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// The body of a request: its lines up to the empty line, or why they cannot be used.
struct Body {
    /// The lines, each followed by `\n`.
    text: String,
    /// Why the body is unusable, if it is.
    problem: Option<UapiError>,
    /// The stream ended before the empty line.
    eof: bool,
}

impl Body {
    /// The lines, as `parse_set` takes them.
    fn lines(&self) -> Vec<&str> {
        let mut lines: Vec<&str> = self.text.split('\n').collect();
        // `text` ends with '\n', so the last piece is empty.
        lines.pop();
        lines
    }
}

/// Reads lines up to the empty line that ends a request, or to the end of the stream.
fn read_body<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> io::Result<Body> {
    let mut body = Body {
        text: String::new(),
        problem: None,
        eof: false,
    };
    let mut number = 1; // the operation line was line 1
    loop {
        number += 1;
        let read = read_line_capped(r, line, MAX_LINE_BYTES)?;
        match read {
            LineRead::Eof => {
                body.eof = true;
                return Ok(body);
            }
            LineRead::Line if line.is_empty() => return Ok(body),
            _ if body.problem.is_some() => {}
            LineRead::TooLong => {
                body.problem = Some(UapiError::invalid(format!(
                    "UAPI request line {number} is longer than {MAX_LINE_BYTES} bytes"
                )));
            }
            LineRead::Line => match std::str::from_utf8(line) {
                Err(_) => {
                    body.problem = Some(UapiError::invalid(format!(
                        "UAPI request line {number} is not UTF-8 text"
                    )));
                }
                Ok(_) if body.text.len() + line.len() + 1 > MAX_REQUEST_BYTES => {
                    body.problem = Some(UapiError {
                        errno: libc::E2BIG,
                        message: format!(
                            "UAPI request is larger than {MAX_REQUEST_BYTES} bytes; \
                             split it into several set requests"
                        ),
                    });
                    body.text = String::new();
                }
                Ok(text) => {
                    body.text.push_str(text);
                    body.text.push('\n');
                }
            },
        }
    }
}

/// The operation a request's first line names.
enum Op {
    Get,
    Set,
    Unknown,
}

/// Serves requests from one client until it closes the connection (or an I/O error).
///
/// A malformed request is answered with an errno and the connection goes on: the server
/// skips to the empty line that ends the request. Failed sets are logged (without keys).
pub fn handle_connection<S: Read + Write>(stream: S, handler: &dyn UapiHandler) {
    let mut conn = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        let (op, ended) = match read_line_capped(&mut conn, &mut line, MAX_LINE_BYTES) {
            Err(_) | Ok(LineRead::Eof) => return,
            Ok(LineRead::TooLong) => (Op::Unknown, false),
            Ok(LineRead::Line) => match line.as_slice() {
                b"get=1" => (Op::Get, false),
                b"set=1" => (Op::Set, false),
                // An empty line is a request with no operation at all.
                b"" => (Op::Unknown, true),
                _ => (Op::Unknown, false),
            },
        };
        let op_line = String::from_utf8_lossy(&line).into_owned();
        let body = if ended {
            Body {
                text: String::new(),
                problem: None,
                eof: false,
            }
        } else {
            match read_body(&mut conn, &mut line) {
                Ok(body) => body,
                Err(_) => return,
            }
        };

        let reply = match op {
            Op::Get => match body.problem {
                None if body.text.is_empty() => format_get(&handler.get()),
                _ => {
                    tracing::warn!("UAPI: get=1 must be followed by an empty line");
                    status_reply(&Err(UapiError::invalid("")))
                }
            },
            Op::Set => {
                let result = match body.problem {
                    Some(problem) => Err(problem),
                    None => parse_set(&body.lines()).and_then(|req| handler.set(req)),
                };
                match &result {
                    Ok(()) => tracing::debug!("UAPI: set applied"),
                    Err(e) => tracing::warn!(errno = e.errno, "UAPI set refused: {}", e.message),
                }
                status_reply(&result)
            }
            Op::Unknown => {
                tracing::warn!(
                    "UAPI: unknown operation {:?} (expected get=1 or set=1)",
                    shown(&op_line)
                );
                status_reply(&Err(UapiError::invalid("")))
            }
        };

        let stream = conn.get_mut();
        if stream.write_all(reply.as_bytes()).is_err() || stream.flush().is_err() {
            return;
        }
        if body.eof {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The socket

/// The socket `wg(8)` connects to for device `name`: `/var/run/wireguard/NAME.sock`.
pub fn socket_path(name: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

/// Why the UAPI socket could not be created.
pub type UapiBindError = SocketBindError;

/// The listening UAPI socket of one device. Dropping it removes the socket file.
#[derive(Debug)]
pub struct UapiServer(SocketServer);

impl UapiServer {
    /// Creates `/var/run/wireguard/NAME.sock` (see [`UapiServer::bind_in`]).
    pub fn bind(name: &str) -> Result<UapiServer, UapiBindError> {
        UapiServer::bind_in(Path::new(SOCKET_DIR), name)
    }

    /// Creates the socket `DIR/NAME.sock` (see [`SocketServer::bind_in`]).
    pub fn bind_in(dir: &Path, name: &str) -> Result<UapiServer, UapiBindError> {
        SocketServer::bind_in(dir, name, "sock", "UAPI socket").map(UapiServer)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// True while the socket file is still the one this server created.
    pub fn socket_file_present(&self) -> bool {
        self.0.socket_file_present()
    }

    /// Serves `wg(8)` clients in background threads until the server is dropped.
    pub fn serve(&self, handler: Arc<dyn UapiHandler>) {
        self.0
            .serve(Arc::new(move |stream| handle_connection(stream, &*handler)));
    }
}

/// Fixtures the UAPI's tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::protocol::key::Key;
    use crate::protocol::request::{DeviceSnapshot, PeerSnapshot};
    use std::time::{Duration, UNIX_EPOCH};

    pub(crate) fn hex(b: u8) -> String {
        Key([b; 32]).to_hex()
    }

    pub(crate) fn snapshot() -> DeviceSnapshot {
        DeviceSnapshot {
            private_key: Some(Key([1; 32])),
            listen_port: 51820,
            fwmark: 0,
            peers: vec![
                PeerSnapshot {
                    public_key: Key([2; 32]),
                    preshared_key: Some(Key([3; 32])),
                    endpoint: Some("[fd00::1]:51820".parse().unwrap()),
                    last_handshake: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
                    rx_bytes: 1000,
                    tx_bytes: 2000,
                    persistent_keepalive: 25,
                    allowed_ips: vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
                },
                PeerSnapshot {
                    public_key: Key([4; 32]),
                    preshared_key: None,
                    endpoint: None,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive: 0,
                    allowed_ips: vec![],
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{hex, snapshot};
    use super::*;
    use std::fs;
    use std::io::Cursor;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;

    /// A handler that records sets and fails those asking for port 1.
    #[derive(Default)]
    struct Recorder {
        sets: Mutex<Vec<SetRequest>>,
        gets: AtomicUsize,
    }

    impl UapiHandler for Recorder {
        fn get(&self) -> DeviceSnapshot {
            self.gets.fetch_add(1, Ordering::SeqCst);
            snapshot()
        }
        fn set(&self, req: SetRequest) -> Result<(), UapiError> {
            if req.listen_port == Some(1) {
                return Err(UapiError {
                    errno: libc::EADDRINUSE,
                    message: "port 1 is taken".into(),
                });
            }
            self.sets.lock().unwrap().push(req);
            Ok(())
        }
    }

    /// A stream that reads from a buffer and writes into another.
    struct Mem {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Mem {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Mem {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn converse(input: &[u8], handler: &Recorder) -> String {
        let mut mem = Mem {
            input: Cursor::new(input.to_vec()),
            output: Vec::new(),
        };
        handle_connection(&mut mem, handler);
        String::from_utf8(mem.output).unwrap()
    }

    #[test]
    fn serves_several_requests_on_one_connection() {
        let h = Recorder::default();
        let input = format!(
            "get=1\n\nset=1\nlisten_port=51821\npublic_key={}\nallowed_ip=10.1.0.0/16\n\n\
             set=1\nlisten_port=1\n\nset=1\n\nget=1\n\n",
            hex(7)
        );
        let out = converse(input.as_bytes(), &h);
        let get = format_get(&snapshot());
        assert_eq!(
            out,
            format!("{get}errno=0\n\nerrno=-98\n\nerrno=0\n\n{get}")
        );
        let sets = h.sets.lock().unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].listen_port, Some(51821));
        assert_eq!(sets[0].peers[0].allowed_ips[0].to_string(), "10.1.0.0/16");
        assert_eq!(sets[1], SetRequest::default());
        assert_eq!(h.gets.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn garbage_is_answered_and_the_connection_goes_on() {
        let h = Recorder::default();
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let input = format!(
            "hello\nworld\n\n\
             set=1\nlisten_port=5\nlisten_port=abc\n\n\
             set=1\n{long}\n\n\
             {long}\nmore\n\n\
             get=1\nextra\n\n\
             \n\
             set=1\nlisten_port=7\n\n"
        );
        let mut bytes = input.into_bytes();
        bytes.extend_from_slice(b"set=1\nlisten_port=\xff\n\nget=1\n\n");
        let out = converse(&bytes, &h);
        let want =
            "errno=-22\n\n".repeat(6) + "errno=0\n\nerrno=-22\n\n" + &format_get(&snapshot());
        assert_eq!(out, want);
        let sets = h.sets.lock().unwrap();
        assert_eq!(sets.len(), 1, "only the good set is applied");
        assert_eq!(sets[0].listen_port, Some(7));
    }

    #[test]
    fn request_cut_by_eof_is_still_answered() {
        let h = Recorder::default();
        assert_eq!(converse(b"set=1\nlisten_port=9", &h), "errno=0\n\n");
        assert_eq!(h.sets.lock().unwrap()[0].listen_port, Some(9));
        assert_eq!(converse(b"", &h), "");
    }

    #[test]
    fn oversized_request_is_refused_without_growing() {
        let h = Recorder::default();
        let mut input = b"set=1\n".to_vec();
        let line = format!("public_key={}\n", hex(3));
        while input.len() <= MAX_REQUEST_BYTES + line.len() {
            input.extend_from_slice(line.as_bytes());
        }
        input.extend_from_slice(b"\nset=1\nfwmark=3\n\n");
        let out = converse(&input, &h);
        assert_eq!(out, format!("errno=-{}\n\nerrno=0\n\n", libc::E2BIG));
        assert_eq!(h.sets.lock().unwrap().len(), 1);
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mpwg-uapi-test-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn ask(path: &Path, request: &str) -> String {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn server_binds_serves_and_cleans_up() {
        let dir = scratch_dir("serve").join("wireguard");
        let server = UapiServer::bind_in(&dir, "wgtest0").unwrap();
        assert_eq!(server.path(), dir.join("wgtest0.sock"));
        let mode = fs::metadata(server.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o755);
        // Only the socket is left in the directory: the staging directory is gone.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert!(server.socket_file_present());

        let h = Arc::new(Recorder::default());
        server.serve(h.clone());
        assert_eq!(ask(server.path(), "get=1\n\n"), format_get(&snapshot()));
        assert_eq!(
            ask(server.path(), "set=1\nfwmark=1\n\nset=1\nlisten_port=1\n\n"),
            "errno=0\n\nerrno=-98\n\n"
        );
        assert_eq!(h.sets.lock().unwrap().len(), 1);

        // A second server for the same device is refused while the first answers.
        let e = UapiServer::bind_in(&dir, "wgtest0").unwrap_err();
        assert!(matches!(e, UapiBindError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("already has a UAPI socket"), "{e}");
        assert!(e.to_string().contains("wgtest0.sock"), "{e}");

        let path = server.path().to_path_buf();
        drop(server);
        assert!(!path.exists());
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = scratch_dir("stale");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wgtest1.sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves the file, nobody listening
        assert!(path.exists());
        let server = UapiServer::bind_in(&dir, "wgtest1").unwrap();
        assert!(server.socket_file_present());
        server.serve(Arc::new(Recorder::default()));
        assert_eq!(ask(&path, "set=1\n\n"), "errno=0\n\n");
        drop(server);
        assert!(!path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bind_refusals() {
        let dir = scratch_dir("refuse");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("wgtest2.sock"), "not a socket").unwrap();
        let e = UapiServer::bind_in(&dir, "wgtest2").unwrap_err();
        assert!(matches!(e, UapiBindError::NotASocket { .. }), "{e}");
        for bad in ["", "a/b", "a b", "..", "sixteen-chars-xx", "wg:0"] {
            assert!(
                matches!(
                    UapiServer::bind_in(&dir, bad),
                    Err(UapiBindError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replaced_socket_file_is_not_removed_by_drop() {
        let dir = scratch_dir("replaced");
        let server = UapiServer::bind_in(&dir, "wgtest3").unwrap();
        let path = server.path().to_path_buf();
        fs::remove_file(&path).unwrap();
        assert!(!server.socket_file_present());
        fs::write(&path, "someone else's").unwrap();
        drop(server);
        assert!(path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn socket_path_is_wgs() {
        assert_eq!(
            socket_path("wg0"),
            PathBuf::from("/var/run/wireguard/wg0.sock")
        );
    }
}
