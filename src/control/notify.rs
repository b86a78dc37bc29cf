//! systemd's notification protocol (`Type=notify`), through the sd-notify crate.
//!
//! * `READY=1` once the device, its sockets and its configuration are up
//!   ([`Notifier::ready`]), with a first `STATUS=` line;
//! * `STATUS=` again whenever a path changes state (checked once a second);
//! * `WATCHDOG=1` when the unit sets `WatchdogSec=`, at half that interval. It is sent
//!   only while a fresh status can be taken (that takes the device's configuration lock
//!   and reads every path) and no worker thread has failed, so a wedged daemon stops
//!   feeding the watchdog and systemd restarts it;
//! * `STOPPING=1` when the daemon begins to shut down ([`Notifier::stopping`]).
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd) all of this does nothing and starts
//! no thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::control::http::StatusSource;
use crate::datapath;

/// How often path states are compared for a `STATUS=` update.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The daemon's link to its service manager.
pub struct Notifier {
    stop: Arc<AtomicBool>,
    active: bool,
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        // Once: the socket is the service manager's, and it does not come back.
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!("cannot notify the service manager through $NOTIFY_SOCKET: {e}");
        }
    }
}

fn status_line(source: &StatusSource) -> String {
    let s = source();
    format!("{}: {}", s.interface, s.summary())
}

impl Notifier {
    /// Tells the service manager the device is ready, and starts following path states
    /// (and feeding the watchdog, if one is set, while no worker of the tunnel `life`
    /// belongs to has failed) on a thread of its own.
    pub fn ready(source: StatusSource, life: &Arc<datapath::Lifecycle>) -> Notifier {
        let stop = Arc::new(AtomicBool::new(false));
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Notifier {
                stop,
                active: false,
            };
        }
        let mut last = status_line(&source);
        send(&[NotifyState::Ready, NotifyState::Status(&last)]);
        let watchdog = sd_notify::watchdog_enabled();
        if let Some(w) = watchdog {
            tracing::info!("feeding the systemd watchdog every {:?}", w / 2);
        }
        let tick = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
        let flag = stop.clone();
        let tunnel = life.clone();
        datapath::spawn("mpwg-notify".into(), life, move || {
            let mut since_status = Duration::ZERO;
            let mut since_watchdog = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                since_status += tick;
                since_watchdog += tick;
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let mut states = Vec::new();
                let line = if since_status >= STATUS_EVERY || watchdog.is_some() {
                    since_status = Duration::ZERO;
                    Some(status_line(&source))
                } else {
                    None
                };
                let changed = line.as_ref().filter(|l| **l != last).cloned();
                if let Some(l) = &changed {
                    states.push(NotifyState::Status(l));
                }
                if let Some(w) = watchdog {
                    if since_watchdog >= w / 2 && !tunnel.failed() {
                        since_watchdog = Duration::ZERO;
                        states.push(NotifyState::Watchdog);
                    }
                }
                if !states.is_empty() {
                    send(&states);
                }
                if let Some(l) = changed {
                    last = l;
                }
            }
        });
        Notifier { stop, active: true }
    }

    /// Tells the service manager the daemon is stopping, and stops the thread.
    pub fn stopping(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.active {
            send(&[NotifyState::Stopping]);
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
