//! The TUN device: created with TUNSETIFF, read and written one packet at a time.
//!
//! The device is not persistent: the kernel removes it when the last descriptor closes,
//! so it cannot outlive the daemon, whatever way the daemon exits.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Why the TUN device could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The name is empty, too long or has characters an interface name cannot have.
    #[error("invalid interface name {0:?}: it must be 1 to 15 characters, without '/', ':' or whitespace")]
    BadName(String),
    /// /dev/net/tun does not exist.
    #[error("/dev/net/tun is missing: load the tun module (modprobe tun) or, in a container, pass the device in")]
    NoTunDevice,
    /// Permission denied.
    #[error("creating TUN device {0} needs root or CAP_NET_ADMIN")]
    NotPermitted(String),
    /// Another interface has this name.
    #[error("a network interface named {0} already exists: pick another name or remove it (ip link del {0})")]
    NameTaken(String),
    /// Any other failure, with the step that failed.
    #[error("TUN device {name}: {step} failed: {source}")]
    Io {
        /// Interface name.
        name: String,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// An open TUN device.
pub struct Tun {
    file: File,
    name: String,
}

/// Checks an interface name as the kernel would, before it is used anywhere.
pub fn check_name(name: &str) -> Result<(), TunError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(TunError::BadName(name.to_string()))
    }
}

fn ifreq_with_name(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr
}

impl Tun {
    /// Creates TUN device `name` (no packet information header) and sets its MTU.
    pub fn create(name: &str, mtu: u32) -> Result<Tun, TunError> {
        check_name(name)?;
        if std::path::Path::new("/sys/class/net").join(name).exists() {
            return Err(TunError::NameTaken(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => TunError::NoTunDevice,
                io::ErrorKind::PermissionDenied => TunError::NotPermitted(name.to_string()),
                _ => TunError::Io {
                    name: name.to_string(),
                    step: "opening /dev/net/tun",
                    source: e,
                },
            })?;
        let mut ifr = ifreq_with_name(name);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `ifr` is, on an open tun fd.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => TunError::NotPermitted(name.to_string()),
                Some(libc::EBUSY) | Some(libc::EEXIST) | Some(libc::EINVAL) => {
                    TunError::NameTaken(name.to_string())
                }
                _ => TunError::Io {
                    name: name.to_string(),
                    step: "TUNSETIFF",
                    source: e,
                },
            });
        }
        let tun = Tun {
            file,
            name: name.to_string(),
        };
        tun.set_mtu(mtu)?;
        Ok(tun)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn set_mtu(&self, mtu: u32) -> Result<(), TunError> {
        let err = |step, source| TunError::Io {
            name: self.name.clone(),
            step,
            source,
        };
        // SAFETY: socket() has no memory arguments; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(err(
                "opening a socket to set the MTU",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd was just returned by socket() and is owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ifr = ifreq_with_name(&self.name);
        ifr.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        // SAFETY: SIOCSIFMTU reads an ifreq, which `ifr` is.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &ifr) };
        if rc < 0 {
            return Err(err("setting the MTU", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Reads one packet into `buf`; returns its length.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is a valid writable region of buf.len() bytes.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one packet.
    pub fn write(&self, pkt: &[u8]) -> io::Result<usize> {
        // SAFETY: pkt is a valid readable region of pkt.len() bytes.
        let n = unsafe { libc::write(self.file.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("wg0").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a-very-long-interface").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a b").is_err());
    }
}
