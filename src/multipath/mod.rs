//! The path model, as pure logic: which local path a datagram came on ([`path`]), where
//! a peer is reached on each path ([`endpoint`]), and which paths and addresses a packet
//! leaves by ([`scheduler`]). No sockets here: the datapath owns those.

pub mod endpoint;
pub mod path;
pub mod scheduler;
