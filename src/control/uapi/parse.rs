//! Parsing a `set=1` request, whole, before anything is applied.

use std::fmt;

use crate::control::uapi::UapiError;
use crate::protocol::key::Key;
use crate::protocol::request::{PeerUpdate, SetRequest};

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
pub(super) fn shown(line: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::uapi::test_support::hex;

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
}
