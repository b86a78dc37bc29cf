//! Control: the `wg(8)` UAPI ([`uapi`]), mpwg's own control socket for `mpwg show` and
//! `mpwg path` ([`show`], its requests in [`request`]), configuration files
//! ([`config`]), the status object ([`status`]) and what is made of it: Prometheus
//! metrics ([`metrics`]), the HTTP listener with the status page ([`http`]), and systemd
//! notifications ([`notify`]).

pub mod config;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod request;
pub mod show;
pub mod status;
pub mod uapi;
