//! The path model, as pure logic: which local path a datagram came on ([`path`]), a
//! path's link state followed by interface name ([`state`]), where a peer is reached on
//! each path ([`endpoint`]), each path's health ([`health`]) and quality ([`quality`]),
//! mpwg's probes ([`probe`]), which paths a packet leaves by ([`scheduler`]), and putting
//! striped packets back in order ([`reorder`]). No sockets and no clock here: the
//! datapath owns those, and passes `now` in.

pub mod endpoint;
pub mod health;
pub mod path;
pub mod probe;
pub mod quality;
pub mod reorder;
pub mod scheduler;
pub mod state;
