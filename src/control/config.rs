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
//! Mode = failover         # the scheduling mode, as mpwg up --mode
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

/// The scheduling modes a `Mode =` line may name (those of `mpwg up --mode`).
pub const MODES: [&str; 4] = ["duplicate", "failover", "aggregate", "adaptive"];

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
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigPath {
    /// Its `Interface =`.
    pub interface: String,
    /// The 1-based line of that key.
    pub line: usize,
    /// Its `Priority =` (failover: lower is preferred; default: its place in the list).
    pub priority: Option<u32>,
    /// Its `Weight =` (its share of striped traffic; default: measured).
    pub weight: Option<f64>,
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
        priority: Option<u32>,
        weight: Option<f64>,
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
                    priority: None,
                    weight: None,
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
            Section::Path {
                interface,
                priority,
                weight,
                ..
            } => {
                if is("Priority") {
                    *priority = Some(value.parse().map_err(|_| {
                        bad(
                            "Priority",
                            format!("{value:?} is not a whole number from 0 to 4294967295"),
                        )
                    })?);
                } else if is("Weight") {
                    *weight = Some(
                        crate::control::request::parse_weight(value)
                            .map_err(|r| bad("Weight", r))?,
                    );
                } else if is("Interface") {
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
        "{v:?} is not a mode this mpwg has: duplicate, failover, aggregate or adaptive"
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
            priority,
            weight,
        } => {
            let Some((interface, line)) = interface else {
                return Err(ConfigError::MissingInterface {
                    file: file.to_path_buf(),
                    line: header_line,
                });
            };
            paths.push(ConfigPath {
                interface,
                line,
                priority,
                weight,
            });
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
mod tests;
