//! Control: the `wg(8)` UAPI ([`uapi`]), mpwg's own control socket for `mpwg show`
//! ([`show`]), and configuration files ([`config`]).

pub mod config;
pub mod show;
pub mod uapi;
