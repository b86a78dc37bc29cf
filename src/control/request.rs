//! The requests of mpwg's control socket (`/var/run/wireguard/NAME.mpwg`), and their
//! grammar.
//!
//! A request is one line of words separated by spaces, the `mpwg` subcommand's words
//! after the device name:
//!
//! ```text
//! show                   mpwg show NAME
//! status                 mpwg show --json NAME (the status object, JSON)
//! path add IFACE         mpwg path add NAME IFACE
//! path del IFACE         mpwg path del NAME IFACE
//! mode MODE              mpwg mode NAME MODE
//! ```
//!
//! The reply is text: what the command prints (nothing, for `path add`, `path del` and
//! `mode`),
//! or one line `error: MESSAGE` that the command prints on stderr before exiting 1.
//!
//! To add a request (`path set IFACE priority N weight W`): a variant of
//! [`Request`], its words in [`Request::parse`] and [`Request::to_line`] (with a test
//! that one reads what the other writes), its answer in the daemon's
//! [`ControlHandler::handle`], and its subcommand in `src/main.rs`.

use crate::multipath::scheduler::Mode;

/// One request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// `show`: the paths, their states and counters, as `mpwg show` prints them.
    Show,
    /// `status`: the same as JSON, as `mpwg show --json` prints it.
    Status,
    /// `path add IFACE`: a new path on interface IFACE (which may not exist yet).
    PathAdd {
        /// The interface.
        iface: String,
    },
    /// `path del IFACE`: the path on interface IFACE stops; its socket closes.
    PathDel {
        /// The interface.
        iface: String,
    },
    /// `mode MODE`: the scheduling mode changes at once.
    Mode {
        /// The new mode.
        mode: Mode,
    },
}

/// What the daemon knows, for an error about an unknown request.
const KNOWN: &str = "show, status, path add IFACE, path del IFACE, mode MODE";

impl Request {
    /// Reads a request line. The error says what is wrong, for the `error:` reply.
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["show"] => Ok(Request::Show),
            ["status"] => Ok(Request::Status),
            ["path", "add", iface] => Ok(Request::PathAdd {
                iface: iface.to_string(),
            }),
            ["path", "del", iface] => Ok(Request::PathDel {
                iface: iface.to_string(),
            }),
            ["mode", mode] => mode
                .parse()
                .map(|mode| Request::Mode { mode })
                .map_err(|e: crate::multipath::scheduler::UnknownMode| e.to_string()),
            ["mode", ..] => {
                Err("mode takes one mode name: duplicate, failover, aggregate or adaptive".into())
            }
            ["path", verb @ ("add" | "del"), ..] => Err(format!(
                "path {verb} takes one interface name, as in `path {verb} eth1`"
            )),
            _ => Err(format!(
                "unknown request {:?} (this daemon knows: {KNOWN})",
                line.trim()
            )),
        }
    }

    /// The request line (without its newline).
    pub fn to_line(&self) -> String {
        match self {
            Request::Show => "show".to_string(),
            Request::Status => "status".to_string(),
            Request::PathAdd { iface } => format!("path add {iface}"),
            Request::PathDel { iface } => format!("path del {iface}"),
            Request::Mode { mode } => format!("mode {mode}"),
        }
    }
}

/// What answers the control socket.
pub trait ControlHandler: Send + Sync {
    /// Handles one request: the text to print, or why it failed (one line, acted on by
    /// a user: it names the device, interface or path at fault).
    fn handle(&self, request: Request) -> Result<String, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_reads_back_what_it_writes() {
        for r in [
            Request::Show,
            Request::Status,
            Request::PathAdd {
                iface: "wwan0".into(),
            },
            Request::PathDel {
                iface: "eth1".into(),
            },
            Request::Mode {
                mode: Mode::Failover,
            },
            Request::Mode {
                mode: Mode::Adaptive,
            },
        ] {
            assert_eq!(Request::parse(&r.to_line()), Ok(r.clone()), "{r:?}");
        }
        assert_eq!(
            Request::parse("  path   add\tppp0 \n"),
            Ok(Request::PathAdd {
                iface: "ppp0".into()
            })
        );
    }

    #[test]
    fn bad_requests_say_what_is_known() {
        assert_eq!(
            Request::parse("path add"),
            Err("path add takes one interface name, as in `path add eth1`".into())
        );
        assert_eq!(
            Request::parse("path del a b"),
            Err("path del takes one interface name, as in `path del eth1`".into())
        );
        assert_eq!(
            Request::parse("reboot"),
            Err(format!(
                "unknown request \"reboot\" (this daemon knows: {KNOWN})"
            ))
        );
        assert!(Request::parse("").is_err());
        assert_eq!(
            Request::parse("mode"),
            Err("mode takes one mode name: duplicate, failover, aggregate or adaptive".into())
        );
        let e = Request::parse("mode bond").unwrap_err();
        assert!(e.contains("bond") && e.contains("failover"), "{e}");
    }
}
