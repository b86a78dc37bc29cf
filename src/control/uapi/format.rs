//! Formatting the reply to a `get=1` request, and the status line that ends a reply.

use std::fmt::{self, Write as _};
use std::time::{Duration, UNIX_EPOCH};

use crate::control::uapi::UapiError;
use crate::protocol::request::DeviceSnapshot;

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
pub(super) fn status_reply(result: &Result<(), UapiError>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::uapi::test_support::{hex, snapshot};
    use crate::protocol::key::Key;
    use crate::protocol::request::PeerSnapshot;

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
}
