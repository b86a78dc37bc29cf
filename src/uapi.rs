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

use std::fmt::{self, Write as _};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cidr::Cidr;
pub use crate::ipc::SocketBindError;
use crate::ipc::SocketServer;
use crate::key::Key;

/// The directory `wg(8)` looks in for userspace devices' sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The longest request line the server accepts, in bytes (the longest line `wg` sends
/// is a 64-digit key, or an endpoint with a long scope name).
pub const MAX_LINE_BYTES: usize = 4096;

/// The largest request the server accepts, in bytes (about 300,000 allowed IPs). A
/// larger one is read to its end, discarded, and answered with `E2BIG`.
pub const MAX_REQUEST_BYTES: usize = 8 << 20;

/// What one `set=1` request asks for, parsed whole before anything is applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetRequest {
    /// The new private key; `Some(all-zero key)` means "remove the private key".
    pub private_key: Option<Key>,
    /// The new listen port; 0 means "pick one".
    pub listen_port: Option<u16>,
    /// The new firewall mark of outgoing packets; 0 means off.
    pub fwmark: Option<u32>,
    /// Remove every peer not named in `peers` (and reset those named) first.
    pub replace_peers: bool,
    /// Peers to add, change or remove, in the order given.
    pub peers: Vec<PeerUpdate>,
}

/// The change a `set` request asks for one peer (from its `public_key=` line to the next).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerUpdate {
    /// Which peer.
    pub public_key: Key,
    /// Remove this peer (the other fields are then meaningless).
    pub remove: bool,
    /// Change the peer only if it exists; never create it.
    pub update_only: bool,
    /// The new preshared key; `Some(all-zero key)` means "remove the preshared key".
    pub preshared_key: Option<Key>,
    /// The new endpoint.
    pub endpoint: Option<SocketAddr>,
    /// The new persistent keepalive interval in seconds; 0 means off.
    pub persistent_keepalive: Option<u16>,
    /// Remove the peer's allowed IPs before adding `allowed_ips`.
    pub replace_allowed_ips: bool,
    /// Allowed IPs to add to the peer.
    pub allowed_ips: Vec<Cidr>,
}

impl PeerUpdate {
    /// An update for `public_key` that changes nothing (creating the peer if it is new).
    pub fn new(public_key: Key) -> PeerUpdate {
        PeerUpdate {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// The device's state, as a `get` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceSnapshot {
    /// The private key, if one is set.
    pub private_key: Option<Key>,
    /// The UDP port actually bound (not 0 once bound, even when 0 was asked for).
    pub listen_port: u16,
    /// The firewall mark; 0 means off.
    pub fwmark: u32,
    /// Every peer.
    pub peers: Vec<PeerSnapshot>,
}

/// One peer's state, as a `get` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSnapshot {
    /// The peer's public key.
    pub public_key: Key,
    /// The preshared key, if one is set.
    pub preshared_key: Option<Key>,
    /// The peer's current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// When the last handshake completed.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from the peer (UDP payload, as wireguard-go counts them).
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// The persistent keepalive interval in seconds; 0 means off.
    pub persistent_keepalive: u16,
    /// The peer's allowed IPs.
    pub allowed_ips: Vec<Cidr>,
}

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
// Parsing a set request

/// Keys whose values are secrets: error messages elide their values.
const SECRET_KEYS: [&str; 2] = ["private_key", "preshared_key"];

/// Every key `parse_set` knows; lines with other keys have their value elided too.
const KNOWN_KEYS: [&str; 13] = [
    "private_key",
    "listen_port",
    "fwmark",
    "replace_peers",
    "public_key",
    "remove",
    "update_only",
    "preshared_key",
    "endpoint",
    "persistent_keepalive_interval",
    "replace_allowed_ips",
    "allowed_ip",
    "protocol_version",
];

/// Cuts `s` to at most `max` characters, marking the cut with `…`.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// How a line is shown in an error message: whole (cut short) when it is harmless, with
/// its value elided when the value is (or may be) a secret.
fn shown(line: &str) -> String {
    match line.split_once('=') {
        Some((key, _)) if SECRET_KEYS.contains(&key) || !KNOWN_KEYS.contains(&key) => {
            format!("{}=…", truncate(key, 40))
        }
        Some(_) => truncate(line, 100),
        None => truncate(line, 24),
    }
}

/// The error for a bad line.
fn bad_line(line: &str, why: impl fmt::Display) -> UapiError {
    UapiError::invalid(format!("bad UAPI line {:?}: {why}", shown(line)))
}

/// Reads a decimal number with no sign, as wireguard-go's `strconv.ParseUint` does.
fn parse_decimal<T: std::str::FromStr>(value: &str) -> Option<T> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Checks a flag's value: the protocol only ever sends `true`.
fn parse_true(line: &str, value: &str) -> Result<bool, UapiError> {
    if value == "true" {
        Ok(true)
    } else {
        Err(bad_line(line, "the only accepted value is \"true\""))
    }
}

/// Parses the lines of a `set=1` request (those after `set=1`, without the empty line
/// that ends it). Nothing is applied here: either the whole request parses, or the error
/// (errno `EINVAL`) names the first bad line.
pub fn parse_set(lines: &[&str]) -> Result<SetRequest, UapiError> {
    let mut req = SetRequest::default();
    let mut peer: Option<PeerUpdate> = None;
    for &line in lines {
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad_line(line, "expected key=value"));
        };
        if key == "public_key" {
            let public_key = Key::from_hex(value).map_err(|e| bad_line(line, e))?;
            req.peers.extend(peer.replace(PeerUpdate::new(public_key)));
            continue;
        }
        match (key, peer.as_mut()) {
            ("private_key", None) => {
                req.private_key = Some(Key::from_hex(value).map_err(|e| bad_line(line, e))?);
            }
            ("listen_port", None) => {
                req.listen_port = Some(
                    parse_decimal(value)
                        .ok_or_else(|| bad_line(line, "not a port number (0 to 65535)"))?,
                );
            }
            ("fwmark", None) => {
                req.fwmark = Some(
                    parse_decimal(value)
                        .ok_or_else(|| bad_line(line, "not a number from 0 to 4294967295"))?,
                );
            }
            ("replace_peers", None) => req.replace_peers = parse_true(line, value)?,
            ("private_key" | "listen_port" | "fwmark" | "replace_peers", Some(_)) => {
                return Err(bad_line(
                    line,
                    format!(
                        "{key} is an interface setting and must come before the first public_key"
                    ),
                ));
            }
            ("remove", Some(p)) => p.remove = parse_true(line, value)?,
            ("update_only", Some(p)) => p.update_only = parse_true(line, value)?,
            ("preshared_key", Some(p)) => {
                p.preshared_key = Some(Key::from_hex(value).map_err(|e| bad_line(line, e))?);
            }
            ("endpoint", Some(p)) => {
                p.endpoint = Some(value.parse().map_err(|_| {
                    bad_line(
                        line,
                        "not an IP:port endpoint (e.g. 192.0.2.1:51820 or [2001:db8::1]:51820)",
                    )
                })?);
            }
            ("persistent_keepalive_interval", Some(p)) => {
                p.persistent_keepalive =
                    Some(parse_decimal(value).ok_or_else(|| {
                        bad_line(line, "not a number of seconds from 0 to 65535")
                    })?);
            }
            ("replace_allowed_ips", Some(p)) => p.replace_allowed_ips = parse_true(line, value)?,
            ("allowed_ip", Some(p)) => {
                p.allowed_ips
                    .push(value.parse().map_err(|e| bad_line(line, e))?);
            }
            ("protocol_version", Some(_)) => {
                if value != "1" {
                    return Err(bad_line(line, "only protocol version 1 exists"));
                }
            }
            (
                "remove"
                | "update_only"
                | "preshared_key"
                | "endpoint"
                | "persistent_keepalive_interval"
                | "replace_allowed_ips"
                | "allowed_ip"
                | "protocol_version",
                None,
            ) => {
                return Err(bad_line(
                    line,
                    format!("{key} is a peer setting and must follow a public_key line"),
                ));
            }
            _ => {
                return Err(bad_line(
                    line,
                    format!("unknown key {:?}", truncate(key, 40)),
                ))
            }
        }
    }
    req.peers.extend(peer);
    Ok(req)
}

// ---------------------------------------------------------------------------------------
// Formatting a get reply

/// Appends `key=value\n`.
fn push_line(out: &mut String, key: &str, value: impl fmt::Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key}={value}");
}

/// The reply to `get=1`: the device's lines, in wireguard-go's order, then `errno=0` and
/// the empty line.
///
/// As wireguard-go does, `private_key` is left out when unset or all-zero, and
/// `listen_port` and `fwmark` when 0.
pub fn format_get(s: &DeviceSnapshot) -> String {
    let mut out = String::with_capacity(128 + s.peers.len() * 384);
    if let Some(key) = s.private_key.filter(|k| !k.is_zero()) {
        push_line(&mut out, "private_key", key.to_hex());
    }
    if s.listen_port != 0 {
        push_line(&mut out, "listen_port", s.listen_port);
    }
    if s.fwmark != 0 {
        push_line(&mut out, "fwmark", s.fwmark);
    }
    for p in &s.peers {
        push_line(&mut out, "public_key", p.public_key.to_hex());
        if let Some(psk) = &p.preshared_key {
            push_line(&mut out, "preshared_key", psk.to_hex());
        }
        push_line(&mut out, "protocol_version", 1);
        if let Some(endpoint) = &p.endpoint {
            // SocketAddr puts IPv6 addresses in brackets, as wg expects.
            push_line(&mut out, "endpoint", endpoint);
        }
        let since_epoch = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or(Duration::ZERO);
        push_line(&mut out, "last_handshake_time_sec", since_epoch.as_secs());
        push_line(
            &mut out,
            "last_handshake_time_nsec",
            since_epoch.subsec_nanos(),
        );
        push_line(&mut out, "tx_bytes", p.tx_bytes);
        push_line(&mut out, "rx_bytes", p.rx_bytes);
        push_line(
            &mut out,
            "persistent_keepalive_interval",
            p.persistent_keepalive,
        );
        for ip in &p.allowed_ips {
            push_line(&mut out, "allowed_ip", ip);
        }
    }
    out.push_str("errno=0\n\n");
    out
}

/// The status lines that end a reply: `errno=0`, or the negated errno as wireguard-go
/// sends it.
fn status_reply(result: &Result<(), UapiError>) -> String {
    match result {
        Ok(()) => "errno=0\n\n".to_string(),
        Err(e) => {
            let errno = if e.errno == 0 {
                libc::EIO
            } else {
                e.errno.saturating_abs()
            };
            format!("errno=-{errno}\n\n")
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Cursor;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;
    use std::sync::Mutex;

    fn hex(b: u8) -> String {
        Key([b; 32]).to_hex()
    }

    #[test]
    fn parses_a_full_request() {
        let text = format!(
            "private_key={}\nlisten_port=51820\nfwmark=4660\nreplace_peers=true\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nreplace_allowed_ips=true\n\
             allowed_ip=10.0.0.5/24\nallowed_ip=fd00::/64\nendpoint=192.0.2.1:51820\n\
             persistent_keepalive_interval=25\n\
             public_key={}\nupdate_only=true\nendpoint=[2001:db8::1]:4500\n\
             persistent_keepalive_interval=0\npreshared_key={}\n\
             public_key={}\nremove=true",
            hex(1),
            hex(2),
            hex(3),
            hex(4),
            hex(0),
            hex(5)
        );
        let lines: Vec<&str> = text.lines().collect();
        let req = parse_set(&lines).unwrap();
        let mut p2 = PeerUpdate::new(Key([2; 32]));
        p2.preshared_key = Some(Key([3; 32]));
        p2.replace_allowed_ips = true;
        p2.allowed_ips = vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()];
        p2.endpoint = Some("192.0.2.1:51820".parse().unwrap());
        p2.persistent_keepalive = Some(25);
        let mut p4 = PeerUpdate::new(Key([4; 32]));
        p4.update_only = true;
        p4.endpoint = Some("[2001:db8::1]:4500".parse().unwrap());
        p4.persistent_keepalive = Some(0);
        p4.preshared_key = Some(Key([0; 32]));
        let mut p5 = PeerUpdate::new(Key([5; 32]));
        p5.remove = true;
        assert_eq!(
            req,
            SetRequest {
                private_key: Some(Key([1; 32])),
                listen_port: Some(51820),
                fwmark: Some(4660),
                replace_peers: true,
                peers: vec![p2, p4, p5],
            }
        );
    }

    #[test]
    fn empty_request_changes_nothing() {
        assert_eq!(parse_set(&[]).unwrap(), SetRequest::default());
        let zero = format!("private_key={}", hex(0));
        let req = parse_set(&[&zero]).unwrap();
        assert!(req.private_key.unwrap().is_zero());
    }

    fn err(lines: &[&str]) -> UapiError {
        let e = parse_set(lines).unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        e
    }

    #[test]
    fn rejects_bad_lines() {
        let pk = format!("public_key={}", hex(9));
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["listen_port=abc"],
                "bad UAPI line \"listen_port=abc\": not a port number (0 to 65535)",
            ),
            (vec!["listen_port=65536"], "not a port number"),
            (vec!["listen_port=+1"], "not a port number"),
            (vec!["listen_port="], "not a port number"),
            (vec!["fwmark=-1"], "not a number"),
            (vec!["fwmark=4294967296"], "not a number"),
            (vec!["replace_peers=false"], "only accepted value"),
            (
                vec!["bogus=1"],
                "bad UAPI line \"bogus=…\": unknown key \"bogus\"",
            ),
            (vec!["no equals sign"], "expected key=value"),
            (vec![""], "expected key=value"),
            (
                vec!["private_key="],
                "\"private_key=…\": not a valid hex key",
            ),
            (vec!["public_key=abcd"], "not a valid hex key"),
            (vec!["remove=true"], "must follow a public_key line"),
            (
                vec!["allowed_ip=10.0.0.0/8"],
                "must follow a public_key line",
            ),
            (
                vec![&pk, "listen_port=1"],
                "must come before the first public_key",
            ),
            (
                vec![&pk, "endpoint=vpn.example.com:51820"],
                "not an IP:port",
            ),
            (vec![&pk, "endpoint=fd00::1:51820"], "not an IP:port"),
            (vec![&pk, "endpoint=192.0.2.1"], "not an IP:port"),
            (vec![&pk, "allowed_ip=10.0.0.0/33"], "too long"),
            (vec![&pk, "allowed_ip=10.0.0.0/x"], "not a prefix length"),
            (vec![&pk, "persistent_keepalive_interval=70000"], "seconds"),
            (vec![&pk, "protocol_version=2"], "only protocol version 1"),
            (vec![&pk, "remove=1"], "only accepted value"),
            (vec![&pk, "update_only=yes"], "only accepted value"),
            (vec![&pk, "replace_allowed_ips=TRUE"], "only accepted value"),
            (vec![&pk, "preshared_key="], "not a valid hex key"),
            (vec![&pk, "last_handshake_time_sec=0"], "unknown key"),
        ];
        for (lines, want) in cases {
            let e = err(&lines);
            assert!(e.message.contains(want), "{lines:?}: {}", e.message);
        }
    }

    #[test]
    fn errors_never_echo_secrets() {
        let secret = "ab".repeat(31) + "zz"; // 64 chars, not hex
        for key in ["private_key", "preshared_key", "privat_key"] {
            let line = format!("{key}={secret}");
            let pk = format!("public_key={}", hex(9));
            let lines: Vec<&str> = if key == "preshared_key" {
                vec![&pk, &line]
            } else {
                vec![&line]
            };
            let e = err(&lines);
            assert!(!e.message.contains("abab"), "{}", e.message);
            assert!(e.message.contains(&format!("\"{key}=…\"")), "{}", e.message);
        }
        // A line with no '=' is cut short.
        let e = err(&[&secret]);
        assert!(!e.message.contains(&secret[..30]), "{}", e.message);
    }

    #[test]
    fn a_bad_line_anywhere_fails_the_whole_request() {
        let pk = format!("public_key={}", hex(9));
        let lines = [
            "listen_port=51820",
            "replace_peers=true",
            &pk,
            "allowed_ip=10.0.0.0/8",
            "allowed_ip=nonsense",
        ];
        assert!(parse_set(&lines).is_err());
    }

    fn snapshot() -> DeviceSnapshot {
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

    #[test]
    fn formats_get_in_wireguard_go_order() {
        let want = format!(
            "private_key={}\nlisten_port=51820\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=[fd00::1]:51820\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123456789\n\
             tx_bytes=2000\nrx_bytes=1000\npersistent_keepalive_interval=25\n\
             allowed_ip=10.0.0.0/24\nallowed_ip=fd00::/64\n\
             public_key={}\nprotocol_version=1\n\
             last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n\
             tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n\
             errno=0\n\n",
            hex(1),
            hex(2),
            hex(3),
            hex(4)
        );
        assert_eq!(format_get(&snapshot()), want);
    }

    #[test]
    fn formats_an_empty_device() {
        assert_eq!(format_get(&DeviceSnapshot::default()), "errno=0\n\n");
        let s = DeviceSnapshot {
            private_key: Some(Key([0; 32])),
            listen_port: 0,
            fwmark: 0x10,
            peers: vec![],
        };
        assert_eq!(format_get(&s), "fwmark=16\nerrno=0\n\n");
        let s = DeviceSnapshot {
            peers: vec![PeerSnapshot {
                endpoint: Some("192.0.2.1:1".parse().unwrap()),
                ..snapshot().peers[1].clone()
            }],
            ..DeviceSnapshot::default()
        };
        assert!(format_get(&s).contains("\nendpoint=192.0.2.1:1\n"));
    }

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
