//! A small network-namespace lab for the integration tests.
//!
//! * [`Netns`]: a namespace with a unique name (`mpwgt-<pid>-<n>`), deleted on drop
//!   (processes still inside it are ended first, by PID).
//! * [`veth`]: a veth pair between two namespaces, addressed and up.
//! * [`Daemon`]: `mpwg up` (or `wireguard-go -f`) running inside a namespace, with its
//!   output captured to a file that is printed when the test fails. Drop ends it with
//!   SIGTERM (SIGKILL after 5 s) and checks that it removed its UAPI socket.
//! * [`wg`], [`genkey`], [`pubkey`], [`ping`], [`tcp_transfer`], [`udp_garbage`], [`uapi`]:
//!   the things a test does to a tunnel.
//! * [`Pair`]: two namespaces, one veth, a daemon on each side, configured with `wg set`.
//! * [`emulator`]: a router namespace between A and B with per-path, per-direction
//!   delay, jitter, loss and rate (`emulator::RoutedLab`), for a kernel without netem.
//!
//! Every test that builds a lab starts with `let Some(_lab) = common::lab("name") else
//! { return };`: without root it prints a skip message and passes, as root it takes the
//! lab lock so that the labs of one test binary run one at a time (this machine has two
//! cores; timing-sensitive steps like handshakes should not compete with a 20 MB
//! transfer of another test). Names are unique per process anyway, so two test
//! binaries running at once do not collide.
//!
//! Sockets in a namespace are made by a thread that `setns(2)`s into it, so the test
//! process itself sends and checks the traffic: no helper programs are needed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The daemon under test, built by cargo for this test binary.
pub const MPWG: &str = env!("CARGO_BIN_EXE_mpwg");

/// The link emulator and the routed lab (A, a router, B) it runs in.
pub mod emulator;

/// How long a daemon gets to answer `wg show` after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon gets to exit after SIGTERM/SIGINT before it is SIGKILLed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the daemon is expected to say and do, in one place: the wording is not final,
/// so tests assert on a few essential words only.
pub mod expect {
    /// Exit status of `mpwg up` after SIGTERM or SIGINT: a clean shutdown.
    pub const CLEAN_EXIT_CODE: i32 = 0;

    /// `mpwg up` as an unprivileged user: stderr mentions at least one of these
    /// (compared case-insensitively).
    pub const NOT_ROOT_ANY_OF: &[&str] = &["root", "CAP_NET_ADMIN"];

    /// `mpwg up NAME` when NAME is taken: stderr contains all of these.
    pub fn name_taken(name: &str) -> Vec<String> {
        vec![name.to_string()]
    }

    /// `mpwg up --listen-port PORT` when PORT is held: stderr contains all of these.
    pub fn port_in_use(port: u16) -> Vec<String> {
        vec![port.to_string()]
    }

    /// `mpwg up --config FILE` with a bad line: stderr contains all of these.
    pub fn bad_config_line(file: &str, line: usize) -> Vec<String> {
        vec![format!("{file}:{line}")]
    }

    /// Never in the stderr of a user-facing error: it should be a message, not a crash.
    pub const NEVER_IN_ERRORS: &[&str] = &["panicked at", "RUST_BACKTRACE"];
}

// ---------------------------------------------------------------------------------
// Names, root, the lab lock, temporary directories
// ---------------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);
static LAB: Mutex<()> = Mutex::new(());

fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A device name unique on this machine (`/var/run/wireguard` is shared by every
/// namespace): `mpwt<pid hex>-<n hex>`, at most 15 bytes (IFNAMSIZ - 1).
pub fn unique_dev() -> String {
    let name = format!("mpwt{:x}-{:x}", std::process::id(), next_id());
    assert!(name.len() <= 15, "device name {name} is too long");
    name
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True (after printing why) when the test should be skipped because we are not root.
/// As root it returns false, and the test runs and must pass or fail on its merits.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    // Straight to stderr, not eprintln!: the test harness would capture that, and a
    // passing test's captured output is never shown.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root (network namespaces, TUN devices); run sudo scripts/test.sh"
    );
    true
}

/// Skip unless root; otherwise take the lab lock (held until the guard drops).
pub fn lab(test: &str) -> Option<MutexGuard<'static, ()>> {
    if skip_unless_root(test) {
        return None;
    }
    // A test that panicked while holding the lock poisons it; the lab it used has been
    // torn down by its Drop guards, so the next test may go on.
    Some(LAB.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A directory under /tmp, removed on drop. Mode 0755, so an unprivileged user can
/// run a binary copied into it.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("mpwgt-{}-{}", std::process::id(), next_id()));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Write a file readable by its owner only (keys).
    pub fn secret_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        f.write_all(contents.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
        path
    }

    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // MPWG_TEST_KEEP=1 keeps them (daemon logs, configs) for a person debugging.
        if std::env::var_os("MPWG_TEST_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion; panic with its stderr if it fails. Returns stdout.
pub fn check(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)));
    if !out.status.success() {
        panic!(
            "`{}` failed ({}):\nstdout: {}\nstderr: {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait for a child to exit, at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet (so the
    // PID cannot have been reused); no memory is involved.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

// ---------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------

/// A network namespace with a unique name, deleted (by that name) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!("mpwgt-{}-{}", std::process::id(), next_id());
        check(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program args` inside this namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Run `argv` inside the namespace and return its output, whatever its status.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let mut cmd = self.command(argv[0], &argv[1..]);
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(&cmd)))
    }

    /// Run `argv` inside the namespace; panic with its stderr if it fails.
    pub fn run(&self, argv: &[&str]) -> String {
        check(&mut self.command(argv[0], &argv[1..]))
    }

    /// Start `argv` inside the namespace (stdin null, stdout/stderr as given).
    pub fn spawn(&self, argv: &[&str], stdout: Stdio, stderr: Stdio) -> Child {
        let mut cmd = self.command(argv[0], &argv[1..]);
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)))
    }

    /// `ip -n NS args...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        check(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Run `f` on a thread that has joined this namespace. Sockets it creates stay in
    /// the namespace whichever thread later uses them.
    pub fn enter<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/var/run/netns/{}", self.name);
        thread::scope(|s| {
            let h = s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns(2) on a namespace file descriptor we own and keep open for
                // the call; it changes only this (short-lived, scoped) thread's netns.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
                f()
            });
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    pub fn udp_bind(&self, addr: &str) -> std::io::Result<UdpSocket> {
        let addr: SocketAddr = addr.parse().expect("socket address");
        self.enter(|| UdpSocket::bind(addr))
    }

    pub fn tcp_listen(&self, addr: SocketAddr) -> TcpListener {
        self.enter(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("listen on {addr} in {}: {e}", self.name))
    }

    pub fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        self.enter(|| TcpStream::connect_timeout(&addr, timeout))
    }

    /// PIDs of the processes inside this namespace.
    pub fn pids(&self) -> Vec<u32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Anything still running in here was started by this test (the namespace name is
        // ours alone); end it by PID so the namespace really goes away.
        let me = std::process::id();
        for (sig, pause) in [(libc::SIGTERM, 300), (libc::SIGKILL, 100)] {
            let pids: Vec<u32> = self.pids().into_iter().filter(|&p| p != me).collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) with a PID read from our own namespace; no memory involved.
                unsafe {
                    libc::kill(pid as libc::pid_t, sig);
                }
            }
            thread::sleep(Duration::from_millis(pause));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A veth pair: `a_if` in `a`, `b_if` in `b`, addressed (CIDR, e.g. "10.99.0.1/24")
/// and up.
pub fn veth(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    a.ip(&["addr", "add", a_addr, "dev", a_if]);
    b.ip(&["addr", "add", b_addr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

// ---------------------------------------------------------------------------------
// Daemons
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Mpwg,
    WireguardGo,
}

/// A WireGuard daemon running in a namespace. Drop stops it (SIGTERM, then SIGKILL
/// after 5 s), and fails the test if it left its UAPI socket behind. When the test is
/// failing, Drop prints the daemon's output.
pub struct Daemon {
    ns: String,
    name: String,
    kind: Impl,
    child: Option<Child>,
    log: PathBuf,
    dir: TempDir,
}

/// Extra `mpwg up` arguments for every daemon a test starts, from the environment
/// variable MPWG_TEST_ARGS (e.g. "--cores 1 --batch 1"): scripts/test.sh runs the
/// network tests once per datapath configuration this way.
pub fn datapath_args() -> Vec<String> {
    std::env::var("MPWG_TEST_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

impl Daemon {
    /// `mpwg up NAME ARGS... -v` in `ns`, waiting until it answers `wg show`.
    pub fn mpwg(ns: &Netns, name: &str, args: &[&str]) -> Daemon {
        Self::start(ns, Impl::Mpwg, name, args)
    }

    /// `wireguard-go -f NAME` in `ns`, waiting until it answers `wg show`.
    pub fn wireguard_go(ns: &Netns, name: &str) -> Daemon {
        Self::start(ns, Impl::WireguardGo, name, &[])
    }

    pub fn start(ns: &Netns, kind: Impl, name: &str, args: &[&str]) -> Daemon {
        Self::start_env(ns, kind, name, args, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables (NOTIFY_SOCKET, say).
    pub fn start_env(
        ns: &Netns,
        kind: Impl,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = TempDir::new();
        let log = dir.join("daemon.log");
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut argv: Vec<&str> = Vec::new();
        let extra = datapath_args();
        let mut cmd = match kind {
            Impl::Mpwg => {
                argv.extend([MPWG, "up", name]);
                argv.extend(args);
                argv.extend(extra.iter().map(String::as_str));
                if !args.iter().any(|a| a.starts_with("-v")) {
                    argv.push("-v");
                }
                ns.command(argv[0], &argv[1..])
            }
            Impl::WireguardGo => {
                argv.extend(["wireguard-go", "-f", name]);
                let mut c = ns.command(argv[0], &argv[1..]);
                c.env("LOG_LEVEL", "verbose");
                c
            }
        };
        let child = cmd
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(&cmd)));
        let mut d = Daemon {
            ns: ns.name().to_string(),
            name: name.to_string(),
            kind,
            child: Some(child),
            log,
            dir,
        };
        d.wait_ready(&argv.join(" "));
        d
    }

    fn wait_ready(&mut self, what: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "`{what}` in {} exited before it was ready ({status}); its output:\n{}",
                    self.ns,
                    self.log()
                );
            }
            if self.socket().exists() && self.wg_show_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{what}` in {} did not answer `wg show {}` within {READY_TIMEOUT:?}; its output:\n{}",
                    self.ns,
                    self.name,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn wg_show_ok(&self) -> bool {
        Command::new("wg")
            .args(["show", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> Impl {
        self.kind
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is running").id()
    }

    pub fn socket(&self) -> PathBuf {
        uapi_socket(&self.name)
    }

    /// Everything the daemon wrote on stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Stop with SIGTERM and assert a clean shutdown: exit within 5 s with
    /// [`expect::CLEAN_EXIT_CODE`] (mpwg), socket and device removed.
    pub fn stop(self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Like [`Daemon::stop`], with another signal (SIGINT).
    pub fn stop_with(mut self, sig: libc::c_int) -> ExitStatus {
        match self.shutdown(sig) {
            Ok(status) => status,
            // Drop prints the daemon's output while this panic unwinds.
            Err(problem) => panic!("{problem}"),
        }
    }

    fn shutdown(&mut self, sig: libc::c_int) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err(format!("{} is not running", self.name));
        };
        let mut problems = Vec::new();
        signal(&child, sig);
        let status = match wait_timeout(&mut child, STOP_TIMEOUT) {
            Some(s) => s,
            None => {
                problems.push(format!(
                    "{} ignored signal {sig} for {STOP_TIMEOUT:?}; SIGKILLed",
                    self.name
                ));
                let _ = child.kill();
                child.wait().expect("wait")
            }
        };
        if self.kind == Impl::Mpwg
            && problems.is_empty()
            && status.code() != Some(expect::CLEAN_EXIT_CODE)
        {
            problems.push(format!(
                "{} exited with {status} after signal {sig}, expected exit code {}",
                self.name,
                expect::CLEAN_EXIT_CODE
            ));
        }
        problems.extend(self.leftovers());
        if problems.is_empty() {
            Ok(status)
        } else {
            Err(problems.join("\n"))
        }
    }
}

impl Daemon {
    /// What the daemon left behind: its control socket (mpwg), its UAPI socket, its
    /// device. The sockets are removed as they are found, so the next test starts clean.
    pub fn leftovers(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let control = control_socket(&self.name);
        if self.kind == Impl::Mpwg && control.exists() {
            problems.push(format!(
                "{} left its control socket {} behind",
                self.name,
                control.display()
            ));
            let _ = fs::remove_file(&control);
        }
        if self.socket().exists() {
            problems.push(format!(
                "{} left its UAPI socket {} behind",
                self.name,
                self.socket().display()
            ));
            let _ = fs::remove_file(self.socket());
        }
        let dev_left = Command::new("ip")
            .args(["-n", &self.ns, "link", "show", "dev", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if dev_left {
            problems.push(format!(
                "{} left its device behind in {}",
                self.name, self.ns
            ));
        }
        problems
    }

    /// Waits up to `timeout` for the daemon to exit by itself (no signal sent); returns
    /// its exit status, or None if it still runs (it is then left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_timeout(child, timeout)?;
        self.child = None;
        Some(status)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let failing = thread::panicking();
        if failing {
            eprintln!(
                "----- output of {} ({:?} in {}) -----",
                self.name, self.kind, self.ns
            );
            eprintln!("{}", self.log());
            eprintln!("----- end of output of {} -----", self.name);
        }
        if self.child.is_none() {
            return;
        }
        if let Err(problem) = self.shutdown(libc::SIGTERM) {
            if failing {
                eprintln!("{problem}");
            } else {
                panic!("{problem}\noutput of {}:\n{}", self.name, self.log());
            }
        }
    }
}

pub fn uapi_socket(dev: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{dev}.sock"))
}

/// mpwg's own control socket (`mpwg show`), next to the UAPI socket.
pub fn control_socket(dev: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{dev}.mpwg"))
}

/// Run mpwg with `args` (through `wrapper`, e.g. setpriv, if not empty) in `ns`, where
/// it is expected to fail. Returns its exit status and output. Panics if it is still
/// running after 10 s (after stopping it).
pub fn mpwg_must_fail(
    ns: &Netns,
    wrapper: &[&str],
    bin: &str,
    args: &[&str],
) -> (ExitStatus, String) {
    let dir = TempDir::new();
    let log = dir.join("out.log");
    let out = File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.push(bin);
    argv.extend(args);
    let mut child = ns.spawn(&argv, Stdio::from(out), Stdio::from(err));
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    let read_log = || {
        fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    match status {
        Some(status) => (status, read_log()),
        None => {
            signal(&child, libc::SIGTERM);
            if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            panic!(
                "`{}` in {} was expected to fail, but it was still running after 10 s; output:\n{}",
                argv.join(" "),
                ns.name(),
                read_log()
            );
        }
    }
}

/// Assert that a failed command's output is a user-facing error: a nonzero exit code
/// (not a signal), `all_of` present, at least one of `any_of` (if given) present
/// (case-insensitively), and no panic.
pub fn assert_user_error(
    what: &str,
    status: ExitStatus,
    output: &str,
    all_of: &[String],
    any_of: &[&str],
) {
    let lower = output.to_lowercase();
    let mut problems = Vec::new();
    match status.code() {
        Some(0) => problems.push("it exited with status 0".to_string()),
        None => problems.push(format!("it was killed by a signal ({status})")),
        Some(_) => {}
    }
    for w in all_of {
        if !output.contains(w.as_str()) {
            problems.push(format!("its output does not contain {w:?}"));
        }
    }
    if !any_of.is_empty() && !any_of.iter().any(|w| lower.contains(&w.to_lowercase())) {
        problems.push(format!("its output contains none of {any_of:?}"));
    }
    for w in expect::NEVER_IN_ERRORS {
        if output.contains(w) {
            problems.push(format!(
                "its output contains {w:?}: a crash, not an error message"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}:\n  {}\nexit status: {status}\noutput:\n{output}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------
// wg(8)
// ---------------------------------------------------------------------------------

/// `wg ARGS...` inside `ns`; panics with wg's stderr on failure. Returns stdout.
pub fn wg(ns: &Netns, args: &[&str]) -> String {
    let mut argv = vec!["wg"];
    argv.extend(args);
    ns.run(&argv)
}

/// `wg ARGS...` inside `ns`, whatever its status.
pub fn wg_output(ns: &Netns, args: &[&str]) -> Output {
    let mut argv = vec!["wg"];
    argv.extend(args);
    ns.exec(&argv)
}

fn wg_stdin(args: &[&str], input: &str) -> String {
    let mut child = Command::new("wg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wg");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "wg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A new private key, base64 (`wg genkey`).
pub fn genkey() -> String {
    check(Command::new("wg").arg("genkey")).trim().to_string()
}

/// The public key of a base64 private key (`wg pubkey`).
pub fn pubkey(private: &str) -> String {
    wg_stdin(&["pubkey"], private)
}

/// A new preshared key (`wg genpsk`).
pub fn genpsk() -> String {
    check(Command::new("wg").arg("genpsk")).trim().to_string()
}

/// A base64 key as the lowercase hex the UAPI uses.
pub fn key_hex(b64: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .expect("base64 key");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One peer line of `wg show DEV dump`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerDump {
    pub public_key: String,
    pub preshared_key: Option<String>,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub latest_handshake: u64,
    pub rx: u64,
    pub tx: u64,
    pub persistent_keepalive: Option<u16>,
}

/// `wg show DEV dump`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dump {
    pub private_key: Option<String>,
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerDump>,
}

fn none_if(s: &str, none: &str) -> Option<String> {
    (s != none).then(|| s.to_string())
}

impl Dump {
    pub fn parse(text: &str) -> Dump {
        let mut lines = text.lines();
        let first = lines.next().expect("dump has an interface line");
        let f: Vec<&str> = first.split('\t').collect();
        assert_eq!(f.len(), 4, "interface line of dump: {first:?}");
        let mut dump = Dump {
            private_key: none_if(f[0], "(none)"),
            public_key: none_if(f[1], "(none)"),
            listen_port: f[2].parse().expect("listen port"),
            fwmark: if f[3] == "off" {
                None
            } else {
                Some(f[3].parse().expect("fwmark"))
            },
            peers: Vec::new(),
        };
        for line in lines {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 8, "peer line of dump: {line:?}");
            dump.peers.push(PeerDump {
                public_key: f[0].to_string(),
                preshared_key: none_if(f[1], "(none)"),
                endpoint: none_if(f[2], "(none)"),
                allowed_ips: if f[3] == "(none)" {
                    Vec::new()
                } else {
                    f[3].split(',').map(str::to_string).collect()
                },
                latest_handshake: f[4].parse().expect("latest handshake"),
                rx: f[5].parse().expect("transfer rx"),
                tx: f[6].parse().expect("transfer tx"),
                persistent_keepalive: if f[7] == "off" {
                    None
                } else {
                    Some(f[7].parse().expect("keepalive"))
                },
            });
        }
        dump
    }

    pub fn peer(&self, public_key: &str) -> &PeerDump {
        self.peers
            .iter()
            .find(|p| p.public_key == public_key)
            .unwrap_or_else(|| panic!("no peer {public_key} in {self:#?}"))
    }

    /// The configuration only: without handshake times and byte counters.
    pub fn config(&self) -> Dump {
        let mut d = self.clone();
        for p in &mut d.peers {
            p.latest_handshake = 0;
            p.rx = 0;
            p.tx = 0;
            p.allowed_ips.sort();
        }
        d.peers.sort_by(|a, b| a.public_key.cmp(&b.public_key));
        d
    }
}

/// `wg show DEV dump` inside `ns`, parsed.
pub fn dump(ns: &Netns, dev: &str) -> Dump {
    Dump::parse(&wg(ns, &["show", dev, "dump"]))
}

/// A wg(8) config text (`wg showconf`, or a file for `wg setconf`), normalised for
/// comparison: comments and blank lines dropped, keys lowercased, AllowedIPs sorted,
/// peers sorted by public key.
pub fn normalize_conf(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut sections: Vec<BTreeMap<String, String>> = Vec::new();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            let mut m = BTreeMap::new();
            m.insert("[section]".to_string(), line.to_lowercase());
            sections.push(m);
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("config line without '=': {raw:?}"));
        let k = k.trim().to_lowercase();
        let mut v = v.trim().to_string();
        let m = sections.last_mut().expect("key before a section");
        if k == "allowedips" {
            let mut ips: Vec<String> = v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(old) = m.get(&k) {
                ips.extend(old.split(',').map(str::to_string));
            }
            ips.sort();
            v = ips.join(",");
        }
        m.insert(k, v);
    }
    let mut peers: Vec<_> = sections.split_off(
        sections
            .iter()
            .position(|s| s["[section]"] == "[peer]")
            .unwrap_or(sections.len()),
    );
    peers.sort_by(|a, b| a.get("publickey").cmp(&b.get("publickey")));
    sections.extend(peers);
    sections
}

// ---------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------

/// `ping -c COUNT DST` inside `ns`; returns how many replies came back.
pub fn ping(ns: &Netns, dst: &str, count: u32) -> u32 {
    let out = ns.exec(&[
        "ping",
        "-n",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        "2",
        dst,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    for part in text.split(',') {
        if let Some(n) = part.trim().strip_suffix(" received") {
            return n.trim().parse().unwrap_or(0);
        }
    }
    panic!(
        "cannot parse ping output in {}:\n{text}\n{}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ping once a second until a reply comes, for at most `timeout`. Returns whether one
/// did. (The first ping of a tunnel waits for the handshake.)
pub fn ping_until(ns: &Netns, dst: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let out = ns.exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", dst]);
        if out.status.success() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The lab's pseudo-random generator ([`emulator::link::Rng`]), with the tests' helpers.
pub use emulator::link::Rng;

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// Send `bytes` pseudo-random bytes over TCP from namespace `from` to `to_addr` (an
/// address of namespace `to`, usually its tunnel address), and check on the receiving
/// side that exactly those bytes arrived. Panics on any difference or after 60 s.
/// Returns the time the transfer took.
pub fn tcp_transfer(from: &Netns, to: &Netns, to_addr: &str, bytes: usize, seed: u64) -> Duration {
    tcp_transfer_cc(from, to, to_addr, bytes, seed, None)
}

/// [`tcp_transfer`] with the sender's congestion control set to `cc` (`cubic`, `bbr`:
/// TCP_CONGESTION; None: the namespace's default).
pub fn tcp_transfer_cc(
    from: &Netns,
    to: &Netns,
    to_addr: &str,
    bytes: usize,
    seed: u64,
    cc: Option<&str>,
) -> Duration {
    const TIMEOUT: Duration = Duration::from_secs(60);
    let ip: IpAddr = to_addr.parse().expect("IP address");
    let data = Arc::new(Rng::new(seed).bytes(bytes));
    let listener = to.tcp_listen(SocketAddr::new(ip, 0));
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let deadline = start + TIMEOUT;

    let expected = Arc::clone(&data);
    let receiver = thread::spawn(move || -> Result<usize, String> {
        let (mut s, peer) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err("no connection arrived".into());
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        loop {
            if Instant::now() >= deadline {
                return Err(format!("timed out after {got} bytes from {peer}"));
            }
            let n = s
                .read(&mut buf)
                .map_err(|e| format!("read after {got} bytes from {peer}: {e}"))?;
            if n == 0 {
                break;
            }
            if got + n > expected.len() {
                return Err(format!(
                    "received more than the {} bytes sent",
                    expected.len()
                ));
            }
            if buf[..n] != expected[got..got + n] {
                let off = (0..n).find(|&i| buf[i] != expected[got + i]).unwrap();
                return Err(format!("corrupt data at byte {}", got + off));
            }
            got += n;
        }
        if got != expected.len() {
            return Err(format!("received {got} of {} bytes", expected.len()));
        }
        // Tell the sender everything arrived intact.
        let _ = s.write_all(b"OK");
        Ok(got)
    });

    let sent: Result<(), String> = (|| {
        let mut s = from
            .tcp_connect(addr, Duration::from_secs(10))
            .map_err(|e| format!("connect from {} to {addr}: {e}", from.name()))?;
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        if let Some(cc) = cc {
            socket2::SockRef::from(&s)
                .set_tcp_congestion(cc.as_bytes())
                .map_err(|e| format!("congestion control {cc}: {e}"))?;
        }
        for chunk in data.chunks(64 * 1024) {
            s.write_all(chunk).map_err(|e| format!("write: {e}"))?;
            if Instant::now() >= deadline {
                return Err("timed out while sending".into());
            }
        }
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        let mut ack = Vec::new();
        let _ = s.read_to_end(&mut ack);
        Ok(())
    })();
    let received = receiver.join().expect("receiver thread");
    match (sent, received) {
        (_, Ok(n)) if n == bytes => start.elapsed(),
        (s, r) => panic!(
            "TCP transfer of {bytes} bytes {} -> {} ({addr}) failed: sender: {s:?}, receiver: {r:?}",
            from.name(),
            to.name()
        ),
    }
}

/// Datagrams that look a little like WireGuard and are not: every message type with
/// right and wrong lengths, empty and 1-byte datagrams, random sizes, a few jumbo ones.
pub fn udp_garbage(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut d = match i % 12 {
            0 => Vec::new(),
            1 => vec![rng.next_u64() as u8],
            2 => vec![1 + (i / 12 % 4) as u8],
            3 | 4 => rng.bytes(148), // handshake initiation size
            5 => rng.bytes(92),      // handshake response size
            6 => rng.bytes(64),      // cookie reply size
            7 | 8 => {
                let n = 32 + 16 * rng.below(90); // transport data sizes
                rng.bytes(n)
            }
            9 => {
                let n = rng.below(2000);
                rng.bytes(n)
            }
            10 => {
                let n = 4 + rng.below(300);
                rng.bytes(n)
            }
            _ if i % 120 == 11 => rng.bytes(60_000), // more than one MTU-sized buffer holds
            _ => {
                let n = 1 + rng.below(1500);
                rng.bytes(n)
            }
        };
        // Give the sized ones the matching type byte, and usually zero reserved bytes.
        let ty = match i % 12 {
            3 | 4 => Some(1),
            5 => Some(2),
            6 => Some(3),
            7 | 8 => Some(4),
            10 => Some(1 + rng.below(4) as u8),
            _ => None,
        };
        if let Some(ty) = ty {
            d[0] = ty;
            if rng.below(4) != 0 {
                d[1..4].fill(0);
            }
        }
        out.push(d);
    }
    out
}

/// Send `datagrams` from a fresh socket in `from` to `to`. Send errors (full buffers,
/// ICMP errors) are ignored: this is a flood. Returns how many were sent.
pub fn udp_flood(from: &Netns, to: &str, datagrams: &[Vec<u8>]) -> usize {
    let to: SocketAddr = to.parse().expect("socket address");
    let sock = from.udp_bind("0.0.0.0:0").expect("bind UDP socket");
    let mut sent = 0;
    for d in datagrams {
        if sock.send_to(d, to).is_ok() {
            sent += 1;
        }
    }
    sent
}

// ---------------------------------------------------------------------------------
// The UAPI socket, raw
// ---------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
pub enum UapiReply {
    /// Text up to and including the blank line that ends a reply (or EOF after text).
    Reply(String),
    /// The daemon closed the connection without a word (or reset it).
    Closed,
    /// Nothing came back in time.
    Timeout,
}

impl UapiReply {
    /// The `errno=N` value of a reply.
    pub fn errno(&self) -> Option<i64> {
        match self {
            UapiReply::Reply(t) => t
                .lines()
                .find_map(|l| l.strip_prefix("errno="))
                .and_then(|v| v.trim().parse().ok()),
            _ => None,
        }
    }
}

/// Send `request` to DEV's UAPI socket and read the reply (until the blank line that
/// ends it, EOF, or `timeout`). A request that does not end with a blank line is
/// followed by a half-close, so the daemon sees its end. Write errors are ignored: the
/// daemon may hang up on a bad request before reading all of it.
pub fn uapi(dev: &str, request: &[u8], timeout: Duration) -> UapiReply {
    let mut s = UnixStream::connect(uapi_socket(dev))
        .unwrap_or_else(|e| panic!("connect to UAPI of {dev}: {e}"));
    s.set_write_timeout(Some(timeout)).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(request);
    if !request.ends_with(b"\n\n") {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"\n\n") {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if got.is_empty() {
                    return UapiReply::Timeout;
                }
                break;
            }
            Err(_) => break, // reset: treat like a close
        }
    }
    if got.is_empty() {
        UapiReply::Closed
    } else {
        UapiReply::Reply(String::from_utf8_lossy(&got).into_owned())
    }
}

/// Assert that no form of the given secrets (base64 keys) appears in `text`.
pub fn assert_no_secrets(what: &str, text: &str, secrets: &[&str]) {
    use base64::Engine as _;
    for s in secrets {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .expect("base64 key");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let forms = [
            s.trim().to_string(),
            s.trim()[..20].to_string(),
            hex.clone(),
            hex.to_uppercase(),
            format!("{bytes:?}"),
        ];
        for f in forms {
            assert!(
                !text.contains(&f),
                "{what} contains a secret key (as {f:?})"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Two peers joined by a veth
// ---------------------------------------------------------------------------------

/// Which side knows the other's endpoint before the first handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    Both,
    OnlyA,
    OnlyB,
}

/// One end of a [`Pair`]. Field order matters: the daemon stops before its namespace
/// is deleted.
pub struct Side {
    pub daemon: Daemon,
    pub ns: Netns,
    pub dev: String,
    pub private_key: String,
    pub public_key: String,
    /// Address on the veth, e.g. "10.99.0.1".
    pub underlay: String,
    /// Address on the tunnel, e.g. "10.100.0.1".
    pub tunnel: String,
    pub port: u16,
    pub dir: TempDir,
}

impl Side {
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.underlay, self.port)
    }

    pub fn dump(&self) -> Dump {
        dump(&self.ns, &self.dev)
    }

    pub fn wg(&self, args: &[&str]) -> String {
        wg(&self.ns, args)
    }
}

/// Namespaces A and B joined by a veth (10.99.0.1/24, 10.99.0.2/24), a daemon on each
/// side, configured with `wg set` only (private key from a file, listen port, the other
/// side as peer with allowed-ips its tunnel /32, and an endpoint as `endpoints` says),
/// tunnel addresses 10.100.0.1/24 and 10.100.0.2/24, devices up.
pub struct Pair {
    pub a: Side,
    pub b: Side,
}

impl Pair {
    pub fn new(a: Impl, b: Impl, endpoints: Endpoints) -> Pair {
        Self::with_args(a, b, endpoints, &[])
    }

    /// Like [`Pair::new`], with extra `mpwg up` arguments (e.g. "-vv") for mpwg sides.
    pub fn with_args(a: Impl, b: Impl, endpoints: Endpoints, mpwg_args: &[&str]) -> Pair {
        let ns_a = Netns::new();
        let ns_b = Netns::new();
        veth(
            &ns_a,
            "veth0",
            "10.99.0.1/24",
            &ns_b,
            "veth0",
            "10.99.0.2/24",
        );
        let a = Self::side(ns_a, a, "10.99.0.1", "10.100.0.1", 51820, mpwg_args);
        let b = Self::side(ns_b, b, "10.99.0.2", "10.100.0.2", 51821, mpwg_args);
        Self::configure(
            &a,
            &b,
            matches!(endpoints, Endpoints::Both | Endpoints::OnlyA),
        );
        Self::configure(
            &b,
            &a,
            matches!(endpoints, Endpoints::Both | Endpoints::OnlyB),
        );
        for s in [&a, &b] {
            s.ns.ip(&["addr", "add", &format!("{}/24", s.tunnel), "dev", &s.dev]);
            s.ns.ip(&["link", "set", &s.dev, "up"]);
        }
        Pair { a, b }
    }

    /// Like [`Pair::with_args`] for two mpwg daemons joined by two paths, as in
    /// `tests/multipath.rs`: `veth0` (10.99.0.1/24 <-> 10.99.0.2/24, the endpoints
    /// configured) and `veth1` (10.99.1.1/24 <-> 10.99.1.2/24), a default route
    /// through each (metric 1 via veth0, 2 via veth1) on both sides, and
    /// `mpwg up --path veth0 --path veth1 MPWG_ARGS...` on both sides (duplicate mode:
    /// every packet on both paths). No traffic yet: a handshake is the test's to make.
    pub fn two_paths(mpwg_args: &[&str]) -> Pair {
        let (ns_a, ns_b) = two_path_namespaces();
        let mut args = vec!["--path", "veth0", "--path", "veth1"];
        args.extend(mpwg_args);
        let a = Self::side(ns_a, Impl::Mpwg, "10.99.0.1", "10.100.0.1", 51820, &args);
        let b = Self::side(ns_b, Impl::Mpwg, "10.99.0.2", "10.100.0.2", 51821, &args);
        Self::configure(&a, &b, true);
        Self::configure(&b, &a, true);
        for s in [&a, &b] {
            s.ns.ip(&["addr", "add", &format!("{}/24", s.tunnel), "dev", &s.dev]);
            s.ns.ip(&["link", "set", &s.dev, "up"]);
        }
        Pair { a, b }
    }

    fn side(
        ns: Netns,
        kind: Impl,
        underlay: &str,
        tunnel: &str,
        port: u16,
        mpwg_args: &[&str],
    ) -> Side {
        let dev = unique_dev();
        let daemon = match kind {
            Impl::Mpwg => Daemon::mpwg(&ns, &dev, mpwg_args),
            Impl::WireguardGo => Daemon::wireguard_go(&ns, &dev),
        };
        let private_key = genkey();
        let public_key = pubkey(&private_key);
        Side {
            daemon,
            ns,
            dev,
            private_key,
            public_key,
            underlay: underlay.into(),
            tunnel: tunnel.into(),
            port,
            dir: TempDir::new(),
        }
    }

    fn configure(me: &Side, other: &Side, with_endpoint: bool) {
        let key = me.dir.secret_file("private.key", &me.private_key);
        let key = key.to_str().unwrap();
        let port = me.port.to_string();
        let allowed = format!("{}/32", other.tunnel);
        let endpoint = other.endpoint();
        let mut args = vec![
            "set",
            &me.dev,
            "listen-port",
            &port,
            "private-key",
            key,
            "peer",
            &other.public_key,
        ];
        args.extend(["allowed-ips", &allowed]);
        if with_endpoint {
            args.extend(["endpoint", &endpoint]);
        }
        wg(&me.ns, &args);
    }

    /// Both peers' dumps, taken so that each receiver is read before its sender:
    /// (B, A, B again). Then rx of a receiver can be compared to tx of its sender.
    pub fn dumps(&self) -> (Dump, Dump, Dump) {
        let b1 = self.b.dump();
        let a = self.a.dump();
        let b2 = self.b.dump();
        (b1, a, b2)
    }
}

// ---------------------------------------------------------------------------------
// Multi-path: nft, interface indices, `mpwg show`, background pings
// ---------------------------------------------------------------------------------

/// Apply an nft script inside `ns` (`nft -f -`: one transaction, all or nothing);
/// panics with nft's stderr on failure.
pub fn nft(ns: &Netns, script: &str) {
    let mut cmd = ns.command("nft", &["-f", "-"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nft in {}: {e}", ns.name()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f - in {} failed ({}): {}\nscript:\n{script}",
        ns.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The index of interface `ifname` in `ns` (`ip -o link show dev IFNAME`).
pub fn link_index(ns: &Netns, ifname: &str) -> u32 {
    let out = ns.ip(&["-o", "link", "show", "dev", ifname]);
    out.split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no index in `ip -o link show dev {ifname}`: {out}"))
}

/// The cells of a line of a table whose columns are separated by two or more spaces
/// (a cell may hold single spaces, like "3ms ago" or "PEER ENDPOINTS").
pub fn table_cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// The columns of `mpwg show` that the tests read, in order (there may be more).
pub const SHOW_COLUMNS: &[&str] = &[
    "PATH",
    "IFACE",
    "INDEX",
    "STATE",
    "LOCAL",
    "PEER ENDPOINTS",
    "TX PKTS",
    "TX BYTES",
    "RX PKTS",
    "RX BYTES",
    "SEND ERRS",
    "LAST RX",
    "WINS",
    "DUPS",
];

/// One path (row) of `mpwg show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShowPath {
    pub path: usize,
    pub iface: String,
    /// The interface index, as printed ("-" for none).
    pub index: String,
    pub state: String,
    /// The LOCAL addresses (empty for "-").
    pub local: Vec<String>,
    /// The PEER ENDPOINTS (empty for "-").
    pub endpoints: Vec<String>,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub send_errors: u64,
    /// "never", "NNNms ago" or "N.Ns ago".
    pub last_rx: String,
    pub wins: u64,
    pub dups: u64,
}

/// `mpwg show`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Show {
    /// The whole text, for messages.
    pub text: String,
    /// The first line ("interface: ...  listening port: ...  mode: ...  receive: ...").
    pub header: String,
    /// The column names of the second line.
    pub columns: Vec<String>,
    pub paths: Vec<ShowPath>,
}

fn comma_list(cell: &str) -> Vec<String> {
    if cell == "-" {
        Vec::new()
    } else {
        cell.split(',').map(str::to_string).collect()
    }
}

impl Show {
    /// Parse `mpwg show` output; panics (with the text) if it is not the expected table.
    pub fn parse(text: &str) -> Show {
        let mut lines = text.lines();
        let header = lines
            .next()
            .unwrap_or_else(|| panic!("empty `mpwg show` output"))
            .to_string();
        let columns = table_cells(
            lines
                .next()
                .unwrap_or_else(|| panic!("`mpwg show` has no column header:\n{text}")),
        );
        let mut paths = Vec::new();
        // The path rows: one per path, numbered from 0. Whatever follows them (other
        // sections, such as per-queue statistics) is not parsed.
        for line in lines {
            let cells = table_cells(line);
            if cells.first().map(String::as_str) != Some(paths.len().to_string().as_str()) {
                break;
            }
            assert_eq!(
                cells.len(),
                columns.len(),
                "`mpwg show` row {line:?} does not have one cell per column {columns:?}:\n{text}"
            );
            let cell = |name: &str| -> &str {
                let i = columns
                    .iter()
                    .position(|c| c == name)
                    .unwrap_or_else(|| panic!("`mpwg show` has no column {name:?}:\n{text}"));
                &cells[i]
            };
            let num = |name: &str| -> u64 {
                cell(name).parse().unwrap_or_else(|_| {
                    panic!("`mpwg show` column {name:?} is not a number in {line:?}:\n{text}")
                })
            };
            paths.push(ShowPath {
                path: num("PATH") as usize,
                iface: cell("IFACE").to_string(),
                index: cell("INDEX").to_string(),
                state: cell("STATE").to_string(),
                local: comma_list(cell("LOCAL")),
                endpoints: comma_list(cell("PEER ENDPOINTS")),
                tx_packets: num("TX PKTS"),
                tx_bytes: num("TX BYTES"),
                rx_packets: num("RX PKTS"),
                rx_bytes: num("RX BYTES"),
                send_errors: num("SEND ERRS"),
                last_rx: cell("LAST RX").to_string(),
                wins: num("WINS"),
                dups: num("DUPS"),
            });
        }
        Show {
            text: text.to_string(),
            header,
            columns,
            paths,
        }
    }

    /// The row of path `i` (0-based, in the order the paths were given).
    pub fn path(&self, i: usize) -> &ShowPath {
        self.paths
            .get(i)
            .unwrap_or_else(|| panic!("`mpwg show` has no path {i}:\n{}", self.text))
    }
}

/// `mpwg show DEV`. The control socket lives in /var/run/wireguard, which every
/// namespace shares, so this runs in the test's own namespace (no `ip netns exec`,
/// which keeps a 100 ms polling loop cheap). Panics if it fails.
pub fn mpwg_show(dev: &str) -> Show {
    Show::parse(&check(Command::new(MPWG).args(["show", dev])))
}

/// Whether a LAST RX cell has one of its documented forms: "never", "NNNms ago",
/// "N.Ns ago".
pub fn is_last_rx(cell: &str) -> bool {
    if cell == "never" {
        return true;
    }
    let Some(v) = cell.strip_suffix(" ago") else {
        return false;
    };
    if let Some(ms) = v.strip_suffix("ms") {
        return !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit());
    }
    if let Some(s) = v.strip_suffix('s') {
        if let Some((whole, tenth)) = s.split_once('.') {
            return !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && tenth.len() == 1
                && tenth.bytes().all(|b| b.is_ascii_digit());
        }
    }
    false
}

/// `(transmitted, received)` from ping's summary line ("N packets transmitted, M
/// received, ...").
pub fn parse_ping_summary(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut tx = None;
    let mut rx = None;
    for part in line.split(',') {
        let part = part.trim();
        if let Some(n) = part.strip_suffix(" packets transmitted") {
            tx = n.trim().parse().ok();
        } else if let Some(n) = part.strip_suffix(" received") {
            rx = n.trim().parse().ok();
        }
    }
    Some((tx?, rx?))
}

/// A `ping` running in the background inside a namespace. Dropped without
/// [`PingRun::finish`] (a failing test), it is killed and reaped.
pub struct PingRun {
    child: Option<Child>,
    what: String,
    started: Instant,
}

impl PingRun {
    /// `ping -n -q -c COUNT -i INTERVAL -W 1 DST` in `ns`. Intervals below 0.2 s need
    /// root, which the lab has anyway.
    pub fn start(ns: &Netns, dst: &str, count: u32, interval: &str) -> PingRun {
        PingRun::spawn(ns, dst, count, interval, "1")
    }

    /// Like [`PingRun::start`], keeping to the rate asked for (`-l 2`). With an interval
    /// of 10 ms or more, iputils ping (20221126) sleeps past each send time to the next
    /// scheduler tick, and with its default preload of 1 it never makes the overshoot up:
    /// `-i 0.01` sends about 62 requests a second, not 100 (300 take 4.8 s, even to
    /// 127.0.0.1). A preload of 2 lets it catch up (two requests may leave together).
    pub fn start_steady(ns: &Netns, dst: &str, count: u32, interval: &str) -> PingRun {
        PingRun::spawn(ns, dst, count, interval, "2")
    }

    fn spawn(ns: &Netns, dst: &str, count: u32, interval: &str, preload: &str) -> PingRun {
        let count = count.to_string();
        let argv = [
            "ping", "-n", "-q", "-c", &count, "-i", interval, "-l", preload, "-W", "1", dst,
        ];
        let child = ns.spawn(&argv, Stdio::piped(), Stdio::piped());
        PingRun {
            child: Some(child),
            what: format!("`{}` in {}", argv.join(" "), ns.name()),
            started: Instant::now(),
        }
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Wait for it to end; returns `(transmitted, received)`. Panics if its summary
    /// cannot be read, or if it runs for more than a minute.
    pub fn finish(self) -> (u32, u32) {
        let (tx, rx, _) = self.finish_with_output();
        (tx, rx)
    }

    /// Like [`PingRun::finish`], also returning ping's output (its summary and
    /// round-trip times).
    pub fn finish_with_output(mut self) -> (u32, u32, String) {
        let mut child = self.child.take().unwrap();
        if wait_timeout(&mut child, Duration::from_secs(60)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} still ran after 60 s", self.what);
        }
        let out = child.wait_with_output().expect("ping output");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (tx, rx) = parse_ping_summary(&stdout).unwrap_or_else(|| {
            panic!(
                "cannot read the summary of {} ({}):\n{stdout}\n{}",
                self.what,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (tx, rx, stdout)
    }
}

impl Drop for PingRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `(IcmpOutEchos, IcmpInEchoReps)` of namespace `ns`: echo requests its kernel sent,
/// echo replies it received.
pub fn icmp_echo_counters(ns: &Netns) -> (u64, u64) {
    let out = ns.run(&["nstat", "-asz", "IcmpOutEchos", "IcmpInEchoReps"]);
    let get = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in nstat output:\n{out}"))
    };
    (get("IcmpOutEchos"), get("IcmpInEchoReps"))
}

/// What an [`EchoStream`] saw.
#[derive(Clone, Debug)]
pub struct Echoes {
    /// Echo requests the pinging namespace's kernel sent.
    pub sent: u64,
    /// Echo replies it received (late ones too: up to a second after ping ended).
    pub answered: u64,
    /// ping's own output (its summary and round-trip times).
    pub ping_output: String,
}

impl Echoes {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.answered)
    }
}

/// A [`PingRun`] whose requests and replies are counted by the kernel of the pinging
/// namespace (which must see no other ICMP echo traffic meanwhile), not by ping: ping
/// stops waiting two round trips (at least one interval) after its last request, so on
/// a busy machine it calls a last reply that is a few milliseconds late lost.
pub struct EchoStream {
    ping: PingRun,
    before: (u64, u64),
}

impl EchoStream {
    /// `ping -c COUNT -i INTERVAL DST` in `ns`, as [`PingRun::start`].
    pub fn start(ns: &Netns, dst: &str, count: u32, interval: &str) -> EchoStream {
        let before = icmp_echo_counters(ns);
        EchoStream {
            ping: PingRun::start(ns, dst, count, interval),
            before,
        }
    }

    /// Like [`EchoStream::start`], through [`PingRun::start_steady`]: at the rate asked for.
    pub fn start_steady(ns: &Netns, dst: &str, count: u32, interval: &str) -> EchoStream {
        let before = icmp_echo_counters(ns);
        EchoStream {
            ping: PingRun::start_steady(ns, dst, count, interval),
            before,
        }
    }

    pub fn started(&self) -> Instant {
        self.ping.started()
    }

    /// Wait for ping to end, then up to a second for replies still on their way.
    pub fn finish(self, ns: &Netns) -> Echoes {
        let (_, _, ping_output) = self.ping.finish_with_output();
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let (out, inn) = icmp_echo_counters(ns);
            let e = Echoes {
                sent: out - self.before.0,
                answered: inn - self.before.1,
                ping_output: ping_output.clone(),
            };
            if e.answered >= e.sent || Instant::now() >= deadline {
                return e;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Namespaces A and B joined as [`Pair::two_paths`] joins them, with no daemon: veth0
/// (10.99.0.1/24 <-> 10.99.0.2/24) and veth1 (10.99.1.1/24 <-> 10.99.1.2/24), a default
/// route through each (metric 1 via veth0, 2 via veth1) on both sides.
pub fn two_path_namespaces() -> (Netns, Netns) {
    let (a, b) = (Netns::new(), Netns::new());
    for p in 0..2 {
        let dev = format!("veth{p}");
        let (a_addr, b_addr) = (format!("10.99.{p}.1"), format!("10.99.{p}.2"));
        veth(
            &a,
            &dev,
            &format!("{a_addr}/24"),
            &b,
            &dev,
            &format!("{b_addr}/24"),
        );
        let metric = (p + 1).to_string();
        for (ns, via) in [(&a, &b_addr), (&b, &a_addr)] {
            ns.ip(&[
                "route", "replace", "default", "via", via, "dev", &dev, "metric", &metric,
            ]);
        }
    }
    (a, b)
}

/// One end of a point-to-point tunnel that [`join_tunnel`] configures with `wg set`.
pub struct TunnelEnd<'a> {
    /// The namespace the end's daemon runs in.
    pub ns: &'a Netns,
    /// Its tunnel device.
    pub dev: &'a str,
    /// Its tunnel address, given the device as ADDR/24.
    pub tunnel: String,
    /// `listen-port` to set, if any.
    pub listen_port: Option<&'a str>,
    /// The far end's address this end dials (`endpoint`), if any.
    pub endpoint: Option<String>,
}

/// Fresh keys for both ends, each the other's peer with its tunnel address as /32
/// allowed IPs (and the endpoint and port each end names), tunnel addresses on the
/// devices and the devices up. Returns the folder holding the key files (keep it) and
/// the public keys of A and B.
pub fn join_tunnel(a: &TunnelEnd, b: &TunnelEnd) -> (TempDir, String, String) {
    let keys = TempDir::new();
    let (priv_a, priv_b) = (genkey(), genkey());
    let (pub_a, pub_b) = (pubkey(&priv_a), pubkey(&priv_b));
    let key_a = keys.secret_file("a.key", &priv_a);
    let key_b = keys.secret_file("b.key", &priv_b);
    for (me, key, other, other_pub) in [(a, &key_a, b, &pub_b), (b, &key_b, a, &pub_a)] {
        let allowed = format!("{}/32", other.tunnel);
        let mut args = vec!["set", me.dev];
        if let Some(port) = me.listen_port {
            args.extend(["listen-port", port]);
        }
        args.extend(["private-key", key.to_str().unwrap(), "peer", other_pub]);
        args.extend(["allowed-ips", &allowed]);
        if let Some(endpoint) = &me.endpoint {
            args.extend(["endpoint", endpoint]);
        }
        wg(me.ns, &args);
    }
    for me in [a, b] {
        let addr = format!("{}/24", me.tunnel);
        me.ns.ip(&["addr", "add", &addr, "dev", me.dev]);
        me.ns.ip(&["link", "set", me.dev, "up"]);
    }
    (keys, pub_a, pub_b)
}
