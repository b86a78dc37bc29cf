//! wg-quick style configuration files, read into a [`SetRequest`] that replaces the
//! device's whole configuration.
//!
//! ```text
//! [Interface]
//! PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
//! ListenPort = 51820
//! FwMark = off            # or a number, decimal or 0x hex
//!
//! [Peer]
//! PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
//! PresharedKey = ...
//! AllowedIPs = 10.0.0.2/32, fd00::2/128
//! Endpoint = 192.0.2.1:51820   # an IP address: mpwg resolves no host names
//! PersistentKeepalive = 25     # or off
//! ```
//!
//! Keys and section names are case-insensitive and `#` starts a comment. The keys only
//! wg-quick acts on (`Address`, `DNS`, `MTU`, ...) are accepted and listed in
//! [`ParsedConfig::not_handled`], so the daemon can say it ignores them.
//!
//! mpwg's own keys, which `wg(8)` does not know (so they never reach `wg setconf`:
//! [`strip`] gives the file without them, for `wg syncconf NAME <(mpwg strip FILE)`):
//!
//! ```text
//! [Interface]
//! Mode = duplicate        # the scheduling mode; only duplicate for now
//!
//! [Path]                  # one per uplink, in order, as --path IFACE
//! Interface = eth1
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::protocol::cidr::Cidr;
use crate::protocol::key::Key;
use crate::protocol::request::{PeerUpdate, SetRequest};

/// Keys of `[Interface]` that only wg-quick acts on, spelled as wg-quick documents them.
const WG_QUICK_KEYS: [&str; 9] = [
    "Address",
    "DNS",
    "MTU",
    "Table",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
    "SaveConfig",
];

/// The scheduling modes a `Mode =` line may name today.
pub const MODES: [&str; 1] = ["duplicate"];

/// A configuration file, read.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedConfig {
    /// The request that makes the device match the file: `replace_peers` is set, and
    /// every peer has `replace_allowed_ips` set.
    pub request: SetRequest,
    /// wg-quick settings present in the file, which mpwg does not act on.
    pub not_handled: Vec<NotHandled>,
    /// The `[Path]` sections, in order.
    pub paths: Vec<ConfigPath>,
    /// `Mode =` of `[Interface]`, spelled as in [`MODES`].
    pub mode: Option<&'static str>,
}

/// A `[Path]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath {
    /// Its `Interface =`.
    pub interface: String,
    /// The 1-based line of that key.
    pub line: usize,
}

/// A wg-quick-only setting found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotHandled {
    /// The 1-based line number.
    pub line: usize,
    /// The key, spelled as wg-quick documents it (`Address`, `PostUp`, ...).
    pub key: String,
}

/// Why a configuration file cannot be used. Each variant names the file, and all but
/// [`ConfigError::Read`] the 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A line that is neither `Key = Value`, a `[Section]` header, a comment nor blank.
    #[error("{}:{line}: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
        /// What is wrong with the line.
        message: &'static str,
    },
    /// A section other than `[Interface]` and `[Peer]`.
    #[error("{}:{line}: unknown section [{section}]; mpwg knows [Interface], [Peer] and [Path]", file.display())]
    UnknownSection {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
        /// The section name as written.
        section: String,
    },
    /// A key that the section does not have.
    #[error("{}:{line}: unknown key {key:?} in [{section}]", file.display())]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
        /// `Interface` or `Peer`.
        section: &'static str,
        /// The key as written.
        key: String,
    },
    /// A `Key = Value` line before the first section header.
    #[error("{}:{line}: {key:?} comes before any section; put it under [Interface] or [Peer]", file.display())]
    OutsideSection {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
        /// The key as written.
        key: String,
    },
    /// A value that cannot be used. The reason never contains a key's value.
    #[error("{}:{line}: bad {key}: {reason}", file.display())]
    BadValue {
        /// The file.
        file: PathBuf,
        /// The line number.
        line: usize,
        /// The key, spelled as documented (`PublicKey`, `AllowedIPs`, ...).
        key: &'static str,
        /// Why the value is refused.
        reason: String,
    },
    /// A `[Path]` section without an `Interface`.
    #[error("{}:{line}: this [Path] has no Interface (as in `Interface = eth1`)", file.display())]
    MissingInterface {
        /// The file.
        file: PathBuf,
        /// The line of the `[Path]` header.
        line: usize,
    },
    /// Two `[Path]` sections with the same interface.
    #[error(
        "{}:{line}: interface {interface} already has a [Path] (line {first_line}): each \
         path needs its own interface",
        file.display()
    )]
    DuplicatePath {
        /// The file.
        file: PathBuf,
        /// The line of the second `Interface`.
        line: usize,
        /// The interface.
        interface: String,
        /// The line of the first.
        first_line: usize,
    },
    /// A `[Peer]` section without a `PublicKey`.
    #[error("{}:{line}: this [Peer] has no PublicKey", file.display())]
    MissingPublicKey {
        /// The file.
        file: PathBuf,
        /// The line of the `[Peer]` header.
        line: usize,
    },
    /// Two `[Peer]` sections with the same public key.
    #[error(
        "{}:{line}: duplicate peer: the [Peer] at line {first_line} has the same PublicKey; \
         merge the two sections",
        file.display()
    )]
    DuplicatePeer {
        /// The file.
        file: PathBuf,
        /// The line of the second `PublicKey`.
        line: usize,
        /// The line of the first peer's `[Peer]` header.
        first_line: usize,
    },
}

/// The text of a configuration file without what `wg(8)` does not know: mpwg's keys
/// (`[Path]` sections, `Mode`) and wg-quick's (`Address`, `DNS`, ... of `[Interface]`),
/// as `wg-quick strip` does for its own. What is left is for `wg setconf` and
/// `wg syncconf`. The text is not checked: [`parse`] does that.
pub fn strip(text: &str) -> String {
    let mut out = String::new();
    let mut in_interface = false;
    let mut in_path = false;
    for raw in text.lines() {
        let content = raw.split_once('#').map_or(raw, |(b, _)| b).trim();
        if let Some(name) = content.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.trim();
            in_interface = name.eq_ignore_ascii_case("Interface");
            in_path = name.eq_ignore_ascii_case("Path");
            if in_path {
                continue;
            }
        } else if in_path {
            continue;
        } else if in_interface {
            let key: String = content
                .split_once('=')
                .map_or("", |(k, _)| k)
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let mpwg_or_wg_quick = key.eq_ignore_ascii_case("Mode")
                || WG_QUICK_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k));
            if mpwg_or_wg_quick {
                continue;
            }
        }
        out.push_str(raw);
        out.push('\n');
    }
    out
}

/// Reads and parses a configuration file.
pub fn load(file: &Path) -> Result<ParsedConfig, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse(&text, file)
}

/// The section being read.
enum Section {
    /// Before the first header.
    None,
    Interface,
    /// A `[Peer]`, with its header's line number.
    Peer(PeerDraft),
    /// A `[Path]`: its header's line, and its interface once read.
    Path {
        header_line: usize,
        interface: Option<(String, usize)>,
    },
}

/// A `[Peer]` being read.
struct PeerDraft {
    header_line: usize,
    public_key: Option<(Key, usize)>,
    update: PeerUpdate,
}

/// Why a value is refused (the caller adds the file, line and key).
type ValueResult<T> = Result<T, String>;

fn parse_port(v: &str) -> ValueResult<u16> {
    parse_decimal(v).ok_or_else(|| format!("{v:?} is not a port number (0 to 65535)"))
}

fn parse_decimal<T: std::str::FromStr>(v: &str) -> Option<T> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn parse_fwmark(v: &str) -> ValueResult<u32> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let hex = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X"));
    let mark = match hex {
        Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(h, 16).ok()
        }
        Some(_) => None,
        None => parse_decimal(v),
    };
    mark.ok_or_else(|| {
        format!("{v:?} is not \"off\" or a 32-bit number (decimal, or hex starting with 0x)")
    })
}

fn parse_keepalive(v: &str) -> ValueResult<u16> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    parse_decimal(v)
        .ok_or_else(|| format!("{v:?} is not \"off\" or a number of seconds from 0 to 65535"))
}

fn parse_allowed_ips(v: &str) -> ValueResult<Vec<Cidr>> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Cidr>().map_err(|e| e.to_string()))
        .collect()
}

fn parse_endpoint(v: &str) -> ValueResult<SocketAddr> {
    if let Ok(addr) = v.parse() {
        return Ok(addr);
    }
    const EXAMPLE: &str = "expected IP:PORT, e.g. 192.0.2.1:51820 or [2001:db8::1]:51820";
    let (host, port, bracketed) = match v.strip_prefix('[') {
        Some(rest) => match rest.split_once("]:") {
            Some((h, p)) => (h, p, true),
            None => return Err(format!("{v:?}: {EXAMPLE}")),
        },
        None => match v.rsplit_once(':') {
            Some((h, p)) => (h, p, false),
            None => return Err(format!("{v:?} has no port: {EXAMPLE}")),
        },
    };
    if !bracketed && host.contains(':') {
        return Err(format!(
            "{v:?}: write an IPv6 endpoint in brackets, e.g. [2001:db8::1]:51820"
        ));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{v:?}: the port {port:?} is not a number from 0 to 65535"
        ));
    }
    let hostname_like = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if hostname_like && !bracketed {
        return Err(format!(
            "{host:?} is a host name; mpwg needs an IP address (resolve the name first, \
             e.g. with `getent ahosts {host}`)"
        ));
    }
    Err(format!("{v:?}: {EXAMPLE}"))
}

/// Parses the text of a configuration file; `file` is used in error messages only.
pub fn parse(text: &str, file: &Path) -> Result<ParsedConfig, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut request = SetRequest {
        replace_peers: true,
        ..SetRequest::default()
    };
    let mut not_handled = Vec::new();
    let mut paths: Vec<ConfigPath> = Vec::new();
    let mut mode = None;
    let mut section = Section::None;
    // Public key -> line of its [Peer] header.
    let mut seen: HashMap<Key, usize> = HashMap::new();

    let path = || file.to_path_buf();

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
        if content.is_empty() {
            continue;
        }

        if let Some(rest) = content.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(ConfigError::Syntax {
                    file: path(),
                    line,
                    message: "a section header must end with ']', as in [Peer]",
                });
            };
            let name = name.trim();
            let next = if name.eq_ignore_ascii_case("Interface") {
                Section::Interface
            } else if name.eq_ignore_ascii_case("Peer") {
                Section::Peer(PeerDraft {
                    header_line: line,
                    public_key: None,
                    update: PeerUpdate::new(Key::default()),
                })
            } else if name.eq_ignore_ascii_case("Path") {
                Section::Path {
                    header_line: line,
                    interface: None,
                }
            } else {
                return Err(ConfigError::UnknownSection {
                    file: path(),
                    line,
                    section: name.to_string(),
                });
            };
            finish_section(
                std::mem::replace(&mut section, next),
                &mut request,
                &mut paths,
                file,
            )?;
            continue;
        }

        let Some((key, value)) = content.split_once('=') else {
            return Err(ConfigError::Syntax {
                file: path(),
                line,
                message: "expected `Key = Value`, a [Section] header or a # comment",
            });
        };
        // wg(8) ignores whitespace inside keys ("Allowed IPs"); so do we.
        let key: String = key.chars().filter(|c| !c.is_whitespace()).collect();
        let value = value.trim();
        let bad = |name: &'static str, reason: String| ConfigError::BadValue {
            file: path(),
            line,
            key: name,
            reason,
        };
        let is = |name: &str| key.eq_ignore_ascii_case(name);

        match &mut section {
            Section::None => {
                return Err(ConfigError::OutsideSection {
                    file: path(),
                    line,
                    key,
                })
            }
            Section::Interface => {
                if is("PrivateKey") {
                    let k =
                        Key::from_base64(value).map_err(|e| bad("PrivateKey", e.to_string()))?;
                    request.private_key = Some(k);
                } else if is("ListenPort") {
                    request.listen_port =
                        Some(parse_port(value).map_err(|r| bad("ListenPort", r))?);
                } else if is("FwMark") {
                    request.fwmark = Some(parse_fwmark(value).map_err(|r| bad("FwMark", r))?);
                } else if is("Mode") {
                    mode = Some(parse_mode(value).map_err(|r| bad("Mode", r))?);
                } else if let Some(name) = WG_QUICK_KEYS.iter().find(|k| is(k)) {
                    not_handled.push(NotHandled {
                        line,
                        key: (*name).to_string(),
                    });
                } else {
                    return Err(ConfigError::UnknownKey {
                        file: path(),
                        line,
                        section: "Interface",
                        key,
                    });
                }
            }
            Section::Path { interface, .. } => {
                if is("Interface") {
                    if let Some((_, first)) = interface {
                        return Err(bad(
                            "Interface",
                            format!(
                                "this [Path] already has an Interface (line {first}); \
                                 start a new [Path] section for another path"
                            ),
                        ));
                    }
                    crate::io::tun::check_name(value)
                        .map_err(|e| bad("Interface", e.to_string()))?;
                    if let Some(first) = paths.iter().find(|p| p.interface == value) {
                        return Err(ConfigError::DuplicatePath {
                            file: path(),
                            line,
                            interface: value.to_string(),
                            first_line: first.line,
                        });
                    }
                    *interface = Some((value.to_string(), line));
                } else {
                    return Err(ConfigError::UnknownKey {
                        file: path(),
                        line,
                        section: "Path",
                        key,
                    });
                }
            }
            Section::Peer(draft) => {
                if is("PublicKey") {
                    let k = Key::from_base64(value).map_err(|e| bad("PublicKey", e.to_string()))?;
                    if let Some((_, first)) = draft.public_key {
                        return Err(bad(
                            "PublicKey",
                            format!(
                                "this [Peer] already has a PublicKey (line {first}); \
                                 start a new [Peer] section for another peer"
                            ),
                        ));
                    }
                    if let Some(&first_line) = seen.get(&k) {
                        return Err(ConfigError::DuplicatePeer {
                            file: path(),
                            line,
                            first_line,
                        });
                    }
                    seen.insert(k, draft.header_line);
                    draft.public_key = Some((k, line));
                } else if is("PresharedKey") {
                    let k =
                        Key::from_base64(value).map_err(|e| bad("PresharedKey", e.to_string()))?;
                    draft.update.preshared_key = Some(k);
                } else if is("AllowedIPs") {
                    let ips = parse_allowed_ips(value).map_err(|r| bad("AllowedIPs", r))?;
                    draft.update.allowed_ips.extend(ips);
                } else if is("Endpoint") {
                    draft.update.endpoint =
                        Some(parse_endpoint(value).map_err(|r| bad("Endpoint", r))?);
                } else if is("PersistentKeepalive") {
                    draft.update.persistent_keepalive =
                        Some(parse_keepalive(value).map_err(|r| bad("PersistentKeepalive", r))?);
                } else {
                    return Err(ConfigError::UnknownKey {
                        file: path(),
                        line,
                        section: "Peer",
                        key,
                    });
                }
            }
        }
    }
    finish_section(section, &mut request, &mut paths, file)?;
    Ok(ParsedConfig {
        request,
        not_handled,
        paths,
        mode,
    })
}

fn parse_mode(v: &str) -> ValueResult<&'static str> {
    if let Some(m) = MODES.iter().find(|m| v.eq_ignore_ascii_case(m)) {
        return Ok(m);
    }
    Err(format!(
        "{v:?} is not a mode this mpwg has: only duplicate (every packet on every path \
         that is up); failover, aggregate and adaptive are planned"
    ))
}

/// Adds the peer or path being read, if `section` is one, to `request` or `paths`.
fn finish_section(
    section: Section,
    request: &mut SetRequest,
    paths: &mut Vec<ConfigPath>,
    file: &Path,
) -> Result<(), ConfigError> {
    let draft = match section {
        Section::Peer(draft) => draft,
        Section::Path {
            header_line,
            interface,
        } => {
            let Some((interface, line)) = interface else {
                return Err(ConfigError::MissingInterface {
                    file: file.to_path_buf(),
                    line: header_line,
                });
            };
            paths.push(ConfigPath { interface, line });
            return Ok(());
        }
        Section::None | Section::Interface => return Ok(()),
    };
    let Some((public_key, _)) = draft.public_key else {
        return Err(ConfigError::MissingPublicKey {
            file: file.to_path_buf(),
            line: draft.header_line,
        });
    };
    request.peers.push(PeerUpdate {
        public_key,
        replace_allowed_ips: true,
        ..draft.update
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(b: u8) -> String {
        Key([b; 32]).to_base64()
    }

    fn p(text: &str) -> Result<ParsedConfig, ConfigError> {
        parse(text, Path::new("wg0.conf"))
    }

    fn e(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_full_file() {
        let text = format!(
            "\u{feff}# a comment\n\
             [Interface]\n\
             PrivateKey = {}  # trailing comment\n\
             listenport=51820\n\
             Address = 10.0.0.1/24\n\
             DNS = 1.1.1.1\n\
             FwMark = 0x10\n\
             PostUp = iptables -A FORWARD -i %i -j ACCEPT\n\
             \n\
             [peer]\n\
             PublicKey = {}\n\
             PresharedKey = {}\n\
             AllowedIPs = 10.0.0.2/32 , fd00::2/128,10.9.0.5/16\n\
             AllowedIPs = 192.0.2.0/24\n\
             Endpoint = 192.0.2.1:51820\n\
             PersistentKeepalive = 25\n\
             \r\n\
             [Peer]\n\
             PublicKey = {}\n\
             Endpoint = [2001:db8::1]:4500\n\
             PersistentKeepalive = off\n\
             AllowedIPs =\n\
             [ PEER ]\n\
             Public Key = {}\n",
            b64(1),
            b64(2),
            b64(3),
            b64(4),
            b64(5)
        );
        let cfg = p(&text).unwrap();
        let mut p2 = PeerUpdate::new(Key([2; 32]));
        p2.preshared_key = Some(Key([3; 32]));
        p2.replace_allowed_ips = true;
        p2.allowed_ips = ["10.0.0.2/32", "fd00::2/128", "10.9.0.0/16", "192.0.2.0/24"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        p2.endpoint = Some("192.0.2.1:51820".parse().unwrap());
        p2.persistent_keepalive = Some(25);
        let mut p4 = PeerUpdate::new(Key([4; 32]));
        p4.replace_allowed_ips = true;
        p4.endpoint = Some("[2001:db8::1]:4500".parse().unwrap());
        p4.persistent_keepalive = Some(0);
        let mut p5 = PeerUpdate::new(Key([5; 32]));
        p5.replace_allowed_ips = true;
        assert_eq!(
            cfg.request,
            SetRequest {
                private_key: Some(Key([1; 32])),
                listen_port: Some(51820),
                fwmark: Some(16),
                replace_peers: true,
                peers: vec![p2, p4, p5],
            }
        );
        let nh: Vec<(usize, &str)> = cfg
            .not_handled
            .iter()
            .map(|n| (n.line, n.key.as_str()))
            .collect();
        assert_eq!(nh, vec![(5, "Address"), (6, "DNS"), (8, "PostUp")]);
    }

    #[test]
    fn empty_file_removes_every_peer() {
        let cfg = p("# nothing\n\n").unwrap();
        assert_eq!(
            cfg.request,
            SetRequest {
                replace_peers: true,
                ..SetRequest::default()
            }
        );
        assert!(cfg.not_handled.is_empty());
    }

    #[test]
    fn values() {
        for (v, want) in [
            ("off", 0),
            ("0", 0),
            ("1234", 1234),
            ("0xff", 255),
            ("0XFF", 255),
        ] {
            let cfg = p(&format!("[Interface]\nFwMark = {v}\n")).unwrap();
            assert_eq!(cfg.request.fwmark, Some(want), "{v}");
        }
        for v in ["-1", "0x", "0x1g", "4294967296", "0x100000000", "on", ""] {
            let msg = e(&format!("[Interface]\nFwMark = {v}\n"));
            assert!(msg.starts_with("wg0.conf:2: bad FwMark: "), "{msg}");
        }
        for v in ["65536", "-1", "x", ""] {
            let msg = e(&format!("[Interface]\nListenPort = {v}\n"));
            assert!(msg.starts_with("wg0.conf:2: bad ListenPort: "), "{msg}");
        }
        let peer = format!("[Peer]\nPublicKey = {}\n", b64(2));
        for v in ["65536", "-5", "never"] {
            let msg = e(&format!("{peer}PersistentKeepalive = {v}\n"));
            assert!(
                msg.starts_with("wg0.conf:3: bad PersistentKeepalive: "),
                "{msg}"
            );
        }
        for v in ["10.0.0.0/33", "10.0.0.0/8 10.1.0.0/16", "nonsense"] {
            let msg = e(&format!("{peer}AllowedIPs = {v}\n"));
            assert!(msg.starts_with("wg0.conf:3: bad AllowedIPs: "), "{msg}");
        }
    }

    #[test]
    fn endpoints() {
        let peer = format!("[Peer]\nPublicKey = {}\n", b64(2));
        let ep = |v: &str| e(&format!("{peer}Endpoint = {v}\n"));
        let msg = ep("vpn.example.com:51820");
        assert!(msg.starts_with("wg0.conf:3: bad Endpoint: "), "{msg}");
        assert!(msg.contains("mpwg needs an IP address"), "{msg}");
        assert!(ep("fd00::1:51820").contains("in brackets"));
        assert!(ep("192.0.2.1").contains("no port"));
        assert!(ep("192.0.2.1:99999").contains("port \"99999\""));
        assert!(ep("[fd00::1]").contains("expected IP:PORT"));
        assert!(ep("[nothost]:1").contains("expected IP:PORT"));
        assert!(ep("1.2.3.4.5:1").contains("host name"));
        assert!(ep(":51820").contains("expected IP:PORT"));
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            e("[Interface]\n[Wat]\n"),
            "wg0.conf:2: unknown section [Wat]; mpwg knows [Interface], [Peer] and [Path]"
        );
        assert_eq!(
            e("\n[Interface]\nFoo = 1\n"),
            "wg0.conf:3: unknown key \"Foo\" in [Interface]"
        );
        assert_eq!(
            e("[Peer]\nAddress = 10.0.0.1/24\n"),
            "wg0.conf:2: unknown key \"Address\" in [Peer]"
        );
        assert_eq!(
            e("ListenPort = 1\n[Interface]\n"),
            "wg0.conf:1: \"ListenPort\" comes before any section; put it under [Interface] or [Peer]"
        );
        assert!(e("[Interface]\njust words\n").starts_with("wg0.conf:2: expected `Key = Value`"));
        assert!(e("[Peer\n").starts_with("wg0.conf:1: a section header must end with ']'"));
        assert_eq!(
            e("[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\n[Peer]\n"),
            "wg0.conf:3: this [Peer] has no PublicKey"
        );
        assert_eq!(
            e(&format!("[Peer]\nPublicKey = {}\n[Peer]\n", b64(1))),
            "wg0.conf:3: this [Peer] has no PublicKey"
        );
        let dup = format!(
            "[Peer]\nPublicKey = {}\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\nPublicKey = {}\n",
            b64(1),
            b64(1)
        );
        assert_eq!(
            e(&dup),
            "wg0.conf:6: duplicate peer: the [Peer] at line 1 has the same PublicKey; \
             merge the two sections"
        );
        let twice = format!("[Peer]\nPublicKey = {}\nPublicKey = {}\n", b64(1), b64(2));
        assert!(e(&twice).contains("already has a PublicKey (line 2)"));
    }

    #[test]
    fn key_errors_never_echo_the_value() {
        let secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0";
        for (section, key) in [
            ("Interface", "PrivateKey"),
            ("Peer", "PresharedKey"),
            ("Peer", "PublicKey"),
        ] {
            let pk = if key == "PresharedKey" {
                format!("PublicKey = {}\n", b64(1))
            } else {
                String::new()
            };
            let msg = e(&format!("[{section}]\n{pk}{key} = {secret}\n"));
            assert!(
                msg.contains(&format!("bad {key}: not a valid base64 key")),
                "{msg}"
            );
            assert!(!msg.contains(secret), "{msg}");
        }
    }

    #[test]
    fn paths_and_mode_are_mpwg_keys() {
        let cfg = p(
            "[Interface]\nmode = Duplicate\n\n[Path]\nInterface = eth1\n\
                     [path]  # the second uplink\ninterface=wwan0\n",
        )
        .unwrap();
        assert_eq!(cfg.mode, Some("duplicate"));
        assert_eq!(
            cfg.paths,
            vec![
                ConfigPath {
                    interface: "eth1".into(),
                    line: 5
                },
                ConfigPath {
                    interface: "wwan0".into(),
                    line: 7
                }
            ]
        );
        assert_eq!(cfg.request.peers, vec![]);
        let none = p("[Interface]\nListenPort = 1\n").unwrap();
        assert_eq!((none.mode, none.paths.len()), (None, 0));
    }

    #[test]
    fn path_and_mode_errors_name_the_line() {
        assert_eq!(
            e("[Interface]\nMode = failover\n"),
            "wg0.conf:2: bad Mode: \"failover\" is not a mode this mpwg has: only duplicate \
             (every packet on every path that is up); failover, aggregate and adaptive are \
             planned"
        );
        assert_eq!(
            e("[Path]\nInterface = eth1\nPriority = 1\n"),
            "wg0.conf:3: unknown key \"Priority\" in [Path]"
        );
        assert_eq!(
            e("[Interface]\n[Path]\n# nothing\n[Peer]\n"),
            "wg0.conf:2: this [Path] has no Interface (as in `Interface = eth1`)"
        );
        assert_eq!(
            e("[Path]\nInterface = eth1\n[Path]\nInterface = eth1\n"),
            "wg0.conf:4: interface eth1 already has a [Path] (line 2): each path needs its \
             own interface"
        );
        assert!(
            e("[Path]\nInterface = eth1\nInterface = eth2\n").starts_with(
                "wg0.conf:3: bad Interface: this [Path] already has an Interface (line 2)"
            )
        );
        assert!(e("[Path]\nInterface = a/b\n")
            .starts_with("wg0.conf:2: bad Interface: invalid interface name \"a/b\""));
        assert_eq!(
            e("[Peer]\nPublicKey = x\nMode = duplicate\n"
                .replace('x', &b64(1))
                .as_str()),
            "wg0.conf:3: unknown key \"Mode\" in [Peer]"
        );
    }

    #[test]
    fn strip_leaves_what_wg_setconf_reads() {
        let text = format!(
            "[Interface]\nPrivateKey = {}\nMode = duplicate\nAddress = 10.0.0.1/24\n\
             ListenPort = 51820\n\n[Path]\nInterface = eth1\n# a comment in the path\n\
             [ Peer ]\nPublicKey = {}\nAllowedIPs = 10.0.0.2/32\n[Path]\nInterface = wwan0\n",
            b64(1),
            b64(2)
        );
        let stripped = strip(&text);
        assert_eq!(
            stripped,
            format!(
                "[Interface]\nPrivateKey = {}\nListenPort = 51820\n\n[ Peer ]\nPublicKey = {}\n\
                 AllowedIPs = 10.0.0.2/32\n",
                b64(1),
                b64(2)
            )
        );
        // What is left parses to the same WireGuard configuration, with nothing of mpwg's.
        let (full, left) = (p(&text).unwrap(), p(&stripped).unwrap());
        assert_eq!(full.request, left.request);
        assert!(left.paths.is_empty() && left.mode.is_none() && left.not_handled.is_empty());
    }

    #[test]
    fn load_names_the_file() {
        let missing = Path::new("/nonexistent/mpwg/wg9.conf");
        let msg = load(missing).unwrap_err().to_string();
        assert!(
            msg.starts_with("cannot read /nonexistent/mpwg/wg9.conf: "),
            "{msg}"
        );

        let file =
            std::env::temp_dir().join(format!("mpwg-config-test-{}.conf", std::process::id()));
        std::fs::write(&file, format!("[Interface]\nPrivateKey = {}\n", b64(7))).unwrap();
        let cfg = load(&file).unwrap();
        assert_eq!(cfg.request.private_key, Some(Key([7; 32])));
        std::fs::write(&file, "[Interface]\nListenPort = x\n").unwrap();
        let msg = load(&file).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{}:2: bad ListenPort", file.display())),
            "{msg}"
        );
        std::fs::remove_file(&file).unwrap();
    }
}
