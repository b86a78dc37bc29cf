//! The requests of mpwg's control socket (`/var/run/wireguard/NAME.mpwg`), and their
//! grammar.
//!
//! A request is one line of words separated by spaces, the `mpwg` subcommand's words
//! after the device name:
//!
//! ```text
//! show                   mpwg show NAME
//! status                 mpwg show --json NAME (the status object, JSON)
//! path add IFACE [priority N] [weight W]
//!                        mpwg path add NAME IFACE [--priority N] [--weight W]
//! path del IFACE         mpwg path del NAME IFACE
//! path set IFACE [priority N] [weight W]
//!                        mpwg path set NAME IFACE [--priority N] [--weight W]
//! mode MODE              mpwg mode NAME MODE
//! ```
//!
//! The reply is text: what the command prints (nothing, for `path add`, `path del`,
//! `path set` and `mode`),
//! or one line `error: MESSAGE` that the command prints on stderr before exiting 1.
//!
//! To add a request: a variant of
//! [`Request`], its words in [`Request::parse`] and [`Request::to_line`] (with a test
//! that one reads what the other writes), its answer in the daemon's
//! [`ControlHandler::handle`], and its subcommand in `src/main.rs`.

use crate::multipath::scheduler::Mode;

/// One request to the daemon.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// `show`: the paths, their states and counters, as `mpwg show` prints them.
    Show,
    /// `status`: the same as JSON, as `mpwg show --json` prints it.
    Status,
    /// `path add IFACE [priority N] [weight W]`: a new path on interface IFACE (which
    /// may not exist yet), with its failover priority and striping weight if given (as
    /// `path set` sets them).
    PathAdd {
        /// The interface.
        iface: String,
        /// Its priority.
        priority: Option<u32>,
        /// Its weight.
        weight: Option<f64>,
    },
    /// `path del IFACE`: the path on interface IFACE stops; its socket closes.
    PathDel {
        /// The interface.
        iface: String,
    },
    /// `path set IFACE [priority N] [weight W]`: the path's failover priority (lower is
    /// preferred) and its share of striped traffic; what is not given stays.
    PathSet {
        /// The interface.
        iface: String,
        /// The new priority.
        priority: Option<u32>,
        /// The new weight.
        weight: Option<f64>,
    },
    /// `mode MODE`: the scheduling mode changes at once.
    Mode {
        /// The new mode.
        mode: Mode,
    },
}

/// What the daemon knows, for an error about an unknown request.
const KNOWN: &str = "show, status, path add IFACE [priority N] [weight W], path del IFACE, \
     path set IFACE [priority N] [weight W], mode MODE";

/// A path's weight (`Weight =`, `--weight`): a finite number above 0.
pub fn parse_weight(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(w) if w.is_finite() && w > 0.0 => Ok(w),
        _ => Err(format!(
            "{v:?} is not a weight: a number above 0, as in 2 or 0.5"
        )),
    }
}

/// A path's priority (`Priority =`, `--priority`): a whole number that fits 32 bits.
pub fn parse_priority(v: &str) -> Result<u32, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("priority {v:?} is not a whole number from 0 to 4294967295"))
}

/// A path's priority and weight, those given.
type Options = (Option<u32>, Option<f64>);

/// The `priority N` and `weight W` words of `path VERB IFACE ...` (`add` or `set`); None
/// if a word is left over.
fn path_options(verb: &str, words: &[&str]) -> Result<Option<Options>, String> {
    let (mut priority, mut weight) = (None, None);
    let mut rest = words;
    while let [key, value, tail @ ..] = rest {
        match *key {
            "priority" => priority = Some(parse_priority(value)?),
            "weight" => weight = Some(parse_weight(value)?),
            other => {
                return Err(format!(
                    "path {verb} knows priority and weight, not {other:?}"
                ))
            }
        }
        rest = tail;
    }
    Ok(rest.is_empty().then_some((priority, weight)))
}

/// What `path add` takes.
const ADD_USAGE: &str = "path add takes one interface name, then priority N, weight W or both \
     if wanted, as in `path add eth1` or `path add eth1 priority 0 weight 2`";

/// `path add IFACE ...`'s words after IFACE.
fn path_add(iface: &str, words: &[&str]) -> Result<Request, String> {
    let Some((priority, weight)) = path_options("add", words)? else {
        return Err(ADD_USAGE.into());
    };
    Ok(Request::PathAdd {
        iface: iface.to_string(),
        priority,
        weight,
    })
}

/// `path set IFACE ...`'s words after IFACE.
fn path_set(iface: &str, words: &[&str]) -> Result<Request, String> {
    match path_options("set", words)? {
        Some((priority, weight)) if priority.is_some() || weight.is_some() => {
            Ok(Request::PathSet {
                iface: iface.to_string(),
                priority,
                weight,
            })
        }
        _ => Err(
            "path set takes an interface and priority N, weight W or both, as in \
             `path set eth1 priority 0 weight 2`"
                .into(),
        ),
    }
}

/// ` priority N` and ` weight W`, for those given.
fn options_line(priority: &Option<u32>, weight: &Option<f64>) -> String {
    let mut line = String::new();
    if let Some(p) = priority {
        line += &format!(" priority {p}");
    }
    if let Some(w) = weight {
        line += &format!(" weight {w}");
    }
    line
}

impl Request {
    /// Reads a request line. The error says what is wrong, for the `error:` reply.
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["show"] => Ok(Request::Show),
            ["status"] => Ok(Request::Status),
            ["path", "add", iface, rest @ ..] => path_add(iface, rest),
            ["path", "del", iface] => Ok(Request::PathDel {
                iface: iface.to_string(),
            }),
            ["path", "set", iface, rest @ ..] => path_set(iface, rest),
            ["path", "set"] => path_set("", &[]),
            ["mode", mode] => mode
                .parse()
                .map(|mode| Request::Mode { mode })
                .map_err(|e: crate::multipath::scheduler::UnknownMode| e.to_string()),
            ["mode", ..] => {
                Err("mode takes one mode name: duplicate, failover, aggregate or adaptive".into())
            }
            ["path", "add"] => Err(ADD_USAGE.into()),
            ["path", "del", ..] => {
                Err("path del takes one interface name, as in `path del eth1`".into())
            }
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
            Request::PathAdd {
                iface,
                priority,
                weight,
            } => format!("path add {iface}{}", options_line(priority, weight)),
            Request::PathDel { iface } => format!("path del {iface}"),
            Request::PathSet {
                iface,
                priority,
                weight,
            } => format!("path set {iface}{}", options_line(priority, weight)),
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
                priority: None,
                weight: None,
            },
            Request::PathAdd {
                iface: "eth1".into(),
                priority: Some(3),
                weight: Some(0.5),
            },
            Request::PathAdd {
                iface: "eth2".into(),
                priority: None,
                weight: Some(4.0),
            },
            Request::PathDel {
                iface: "eth1".into(),
            },
            Request::Mode {
                mode: Mode::Failover,
            },
            Request::PathSet {
                iface: "wwan0".into(),
                priority: Some(9),
                weight: None,
            },
            Request::PathSet {
                iface: "eth1".into(),
                priority: Some(0),
                weight: Some(2.5),
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
                iface: "ppp0".into(),
                priority: None,
                weight: None,
            })
        );
    }

    #[test]
    fn bad_requests_say_what_is_known() {
        assert_eq!(Request::parse("path add"), Err(ADD_USAGE.into()));
        assert_eq!(
            Request::parse("path add eth1 weight"),
            Err(ADD_USAGE.into())
        );
        // path add checks its values as path set does, with the same errors.
        for bad in [
            "priority -1",
            "priority x",
            "weight 0",
            "weight nan",
            "metric 3",
        ] {
            let add = Request::parse(&format!("path add eth1 {bad}")).unwrap_err();
            let set = Request::parse(&format!("path set eth1 {bad}")).unwrap_err();
            assert_eq!(add.replace("path add", "path set"), set, "{bad}");
        }
        assert_eq!(
            Request::parse("path add eth1 priority 99999999999"),
            Err("priority \"99999999999\" is not a whole number from 0 to 4294967295".into())
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
        assert_eq!(
            Request::parse("path set eth1 weight -1"),
            Err("\"-1\" is not a weight: a number above 0, as in 2 or 0.5".into())
        );
        assert!(Request::parse("path set eth1").is_err());
        assert!(Request::parse("path set eth1 priority").is_err());
        assert!(Request::parse("path set eth1 metric 3").is_err());
        let e = Request::parse("mode bond").unwrap_err();
        assert!(e.contains("bond") && e.contains("failover"), "{e}");
    }
}
