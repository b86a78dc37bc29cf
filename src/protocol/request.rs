//! What a configuration change asks of the device, and what the device reports: the
//! typed form of a `wg(8)` `set` and `get`, shared by the UAPI parser, the configuration
//! file reader and the device that applies them.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::protocol::cidr::Cidr;
use crate::protocol::key::Key;

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
