//! Waiting for input on several descriptors at once: poll(2), for the receive loop.

use std::os::fd::RawFd;
use std::time::Duration;

/// A set of descriptors to wait on, built once per socket set.
pub struct PollSet {
    fds: Vec<libc::pollfd>,
}

impl PollSet {
    /// A set waiting for input on every one of `fds`.
    pub fn readable(fds: impl Iterator<Item = RawFd>) -> PollSet {
        PollSet {
            fds: fds
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect(),
        }
    }

    /// Waits up to `timeout` until one of the descriptors is readable (or a signal).
    pub fn wait(&mut self, timeout: Duration) {
        // SAFETY: self.fds is a live array of fds.len() pollfd structs for the whole call.
        unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout.as_millis() as libc::c_int,
            );
        }
    }
}
