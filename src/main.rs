//! The `mpwg` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use mpwg::control::request::Request;
use mpwg::datapath::monitor::{Scheduling, Settings};
use mpwg::datapath::paths::ReceiveMode;
use mpwg::multipath::health;
use mpwg::multipath::path::PathArg;
use mpwg::multipath::scheduler::Mode;

/// mpwg: a multi-path WireGuard gateway.
///
/// `mpwg NAME`, with no subcommand, is what wg-quick runs as a userspace implementation
/// (WG_QUICK_USERSPACE_IMPLEMENTATION=mpwg): it creates the device and its UAPI socket as
/// `mpwg up NAME $MPWG_UP_ARGS` does, and detaches into the background once they are up
/// (WG_PROCESS_FOREGROUND=1 or --foreground keeps it in the foreground).
#[derive(Parser)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_long_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Interface name, for the wg-quick form `mpwg NAME`.
    #[arg(value_name = "NAME")]
    interface: Option<String>,
    /// With `mpwg NAME`: stay in the foreground.
    #[arg(short, long)]
    foreground: bool,
}

/// The end of `mpwg --help`, and the man page's last section.
const AFTER_HELP: &str = "\
Environment:
  MPWG_UP_ARGS           more `mpwg up` options for `mpwg NAME`, split on whitespace,
                         e.g. \"--path eth0 --path wwan0 --metrics 127.0.0.1:9586\"
  MPWG_LOG_FILE          where `mpwg NAME` in the background appends its log
                         (default: nowhere)
  WG_PROCESS_FOREGROUND  1: `mpwg NAME` stays in the foreground
  MPWG_LOG               a tracing filter for the log, instead of -v/-vv/-vvv
  NOTIFY_SOCKET          set by systemd (Type=notify): READY=1, STATUS=, STOPPING=1
  WATCHDOG_USEC          set by systemd (WatchdogSec=): WATCHDOG=1 at half of it

Files:
  /var/run/wireguard/NAME.sock   the UAPI socket wg(8) talks to
  /var/run/wireguard/NAME.mpwg   mpwg's control socket (mpwg show, mpwg show --json)
  /etc/mpwg/NAME.conf            the configuration the mpwg@NAME systemd unit reads

See also: wg(8), wg-quick(8), https://www.wireguard.com/xplatform/";

/// Which path sockets are read.
#[derive(Clone, Copy, ValueEnum)]
enum Receive {
    /// Every path (default): a stock peer answers wherever its first copy came from.
    All,
    /// Only the first path, as a single-socket design would.
    Primary,
}

/// Socket I/O of the datapath.
#[derive(Clone, Copy, ValueEnum)]
enum IoArg {
    /// io_uring: batched submissions, multishot receive over buffer rings.
    Uring,
    /// Plain sendmsg/recvmsg (with GSO and GRO), for kernels before 6.0.
    Syscalls,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a WireGuard interface and runs it in the foreground until SIGINT/SIGTERM.
    /// Configure it with wg(8): wg set NAME ..., wg setconf NAME FILE.
    Up {
        /// Interface name (also names the UAPI socket /var/run/wireguard/NAME.sock).
        name: String,
        /// UDP port to listen on (default: the config file's, else a free one).
        #[arg(long)]
        listen_port: Option<u16>,
        /// MTU of the TUN device.
        #[arg(long, default_value_t = 1420, value_parser = clap::value_parser!(u32).range(576..=65535))]
        mtu: u32,
        /// wg-quick style configuration file ([Interface] and [Peer] sections).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A path by interface name; repeat for several. Every packet goes out on every
        /// path. Without any path, one unbound socket, as stock WireGuard.
        #[arg(long = "path", value_name = "IFACE")]
        path: Vec<String>,
        /// A path by interface index; mixes with --path in the order given.
        #[arg(long = "path-index", value_name = "INDEX")]
        path_index: Vec<u32>,
        /// Which path sockets are read.
        #[arg(long, value_enum, default_value_t = Receive::All)]
        receive: Receive,
        /// Seconds an address the peer was seen at on a path keeps getting copies.
        #[arg(long, default_value_t = 15)]
        endpoint_window: u64,
        /// Worker threads, each with its own TUN queue, pinned to a core (default: every
        /// core).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        cores: Option<u16>,
        /// Threads that decrypt received batches in parallel (and write them in receive
        /// order, so each flow keeps its order); 0: the receive thread decrypts (default:
        /// one per core when --cores is more than 1, else 0).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1024))]
        decrypt_workers: Option<u16>,
        /// Packets handled per batch (TUN reads, GSO sends, TUN writes).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
        batch: u16,
        /// Socket I/O: io_uring (Linux 6.0 or later), or plain system calls.
        #[arg(long, value_enum, default_value_t = IoArg::Uring)]
        io: IoArg,
        /// Serve Prometheus metrics (/metrics), the status JSON (/status.json) and a live
        /// status page (/) over HTTP on this address, e.g. 127.0.0.1:9586 (default: off).
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<SocketAddr>,
        /// How packets use the paths: duplicate (every packet on every working path),
        /// failover (the best path only: lowest priority, then round trip; the others
        /// carry only probes), aggregate (striped over the working paths by measured
        /// capacity or weight), adaptive (small and latency-sensitive packets
        /// duplicated, bulk striped). The --path order is the failover priority.
        /// Default: the config file's Mode, else duplicate.
        #[arg(long, value_parser = parse_mode)]
        mode: Option<Mode>,
        /// Milliseconds between probes to an mpwg peer on each path while traffic flows
        /// (2.5 times it when idle); a silent cut is seen after 2.3 intervals.
        #[arg(long, value_name = "MS", default_value_t = 110, value_parser = clap::value_parser!(u64).range(10..=10000))]
        probe_interval: u64,
        /// Failover: seconds a recovered better path must stay up before traffic
        /// returns to it.
        #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
        hold: f64,
        /// Milliseconds a striped packet may wait here for the packets before it.
        #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1000))]
        reorder_cap: u64,
        /// Adaptive mode: UDP packets of this many bytes or fewer (IP header included)
        /// are duplicated.
        #[arg(long, value_name = "BYTES", default_value_t = 200)]
        small_udp: usize,
        /// More logging: -v for events, -vv for debugging, -vvv for every packet.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
    /// Lists network interfaces: index, name, MTU, state and addresses.
    Interfaces,
    /// Shows the paths of a running mpwg device: state, endpoints and counters.
    Show {
        /// Interface name.
        name: String,
        /// Print the whole status as one JSON object (the README documents its fields).
        #[arg(long)]
        json: bool,
    },
    /// Changes the scheduling mode of a running mpwg device, at once and without a new
    /// handshake: duplicate, failover, aggregate or adaptive.
    Mode {
        /// Interface name.
        name: String,
        /// The new mode.
        #[arg(value_parser = parse_mode)]
        mode: Mode,
    },
    /// Writes the man pages (DIR/man/) and shell completions (DIR/completions/) generated
    /// from this command line; scripts/package.sh uses it.
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory.
        dir: PathBuf,
    },
    /// Prints a configuration file without mpwg's keys ([Path] sections, Mode) and
    /// wg-quick's (Address, DNS, ...): what `wg setconf` and `wg syncconf` read, as in
    /// `wg syncconf NAME <(mpwg strip FILE)`.
    Strip {
        /// The configuration file (checked as `mpwg up --config` would).
        file: PathBuf,
    },
    /// Adds or removes a path of a running mpwg device, with no new handshake and no
    /// loss on the other paths. Prints nothing on success.
    Path {
        #[command(subcommand)]
        action: PathAction,
    },
}

#[derive(Subcommand)]
enum PathAction {
    /// Adds a path on interface IFACE. IFACE may not exist yet: the path is then absent
    /// and joins when an interface of that name appears. --priority and --weight are as
    /// in `mpwg path set`.
    Add {
        /// The mpwg device (as in `mpwg up NAME`).
        name: String,
        /// The uplink interface.
        iface: String,
        /// Failover priority: the lowest working one carries the data (default: its
        /// place in the list, after the others).
        #[arg(long, value_name = "N")]
        priority: Option<u32>,
        /// Share of striped traffic (aggregate, adaptive), relative to the other paths'.
        #[arg(long, value_name = "W", value_parser = mpwg::control::request::parse_weight)]
        weight: Option<f64>,
    },
    /// Sets a path's failover priority (lower is preferred; default: its place in the
    /// --path order) and its weight (its share of striped traffic; default: balanced by
    /// measured queueing delay).
    Set {
        /// The mpwg device.
        name: String,
        /// The uplink interface.
        iface: String,
        /// Failover priority: the lowest working one carries the data.
        #[arg(long, value_name = "N")]
        priority: Option<u32>,
        /// Share of striped traffic (aggregate, adaptive), relative to the other paths'.
        #[arg(long, value_name = "W", value_parser = mpwg::control::request::parse_weight)]
        weight: Option<f64>,
    },
    /// Removes the path on interface IFACE: it stops being used, and its socket closes.
    Del {
        /// The mpwg device.
        name: String,
        /// The uplink interface.
        iface: String,
    },
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MPWG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("mpwg={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The path arguments in the order they were given, names and indices mixed.
fn ordered_paths(up: &ArgMatches, names: &[String], indices: &[u32]) -> Vec<PathArg> {
    let mut all: Vec<(usize, PathArg)> = Vec::new();
    if let Some(pos) = up.indices_of("path") {
        all.extend(pos.zip(names).map(|(i, n)| (i, PathArg::Name(n.clone()))));
    }
    if let Some(pos) = up.indices_of("path_index") {
        all.extend(pos.zip(indices).map(|(i, x)| (i, PathArg::Index(*x))));
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, p)| p).collect()
}

/// Sends `request` to the daemon of `name`; prints its reply, or its error on stderr.
fn ask(name: &str, request: &Request) -> ExitCode {
    match mpwg::control::show::query(name, request) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `--mode`: a mode name, with the error listing the modes.
fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
        .map_err(|e: mpwg::multipath::scheduler::UnknownMode| e.to_string())
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("mpwg: error: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let (matches, wg_quick) = wg_quick::parse();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let Some(command) = cli.command else {
        let _ = Cli::command().print_help();
        return ExitCode::from(2);
    };
    match command {
        Command::Up {
            name,
            listen_port,
            mtu,
            config,
            path,
            path_index,
            receive,
            endpoint_window,
            cores,
            decrypt_workers,
            batch,
            io,
            metrics,
            mode,
            probe_interval,
            hold,
            reorder_cap,
            small_udp,
            verbose,
        } => {
            // The detached daemon runs in /: a relative --config must be made absolute.
            let config = match wg_quick {
                Some(w) if w.background => config.map(|c| std::path::absolute(&c).unwrap_or(c)),
                _ => config,
            };
            // Before any thread exists (and before logging, which then writes to the
            // log file, if any).
            let ready = match wg_quick.filter(|w| w.background) {
                Some(_) => match wg_quick::detach() {
                    Ok(r) => Some(r),
                    Err(e) => return fail(e),
                },
                None => None,
            };
            init_logging(verbose);
            let cores = cores
                .map(usize::from)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let up = matches.subcommand_matches("up").expect("the up subcommand");
            let opts = mpwg::daemon::Options {
                name,
                listen_port,
                mtu,
                config,
                paths: ordered_paths(up, &path, &path_index),
                receive: match receive {
                    Receive::All => ReceiveMode::All,
                    Receive::Primary => ReceiveMode::Primary,
                },
                endpoint_window: Duration::from_secs(endpoint_window),
                cores,
                decrypt_workers: decrypt_workers.map(usize::from).unwrap_or(if cores > 1 {
                    cores
                } else {
                    0
                }),
                batch: usize::from(batch),
                io: match io {
                    IoArg::Uring => mpwg::datapath::Io::Uring,
                    IoArg::Syscalls => mpwg::datapath::Io::Syscalls,
                },
                metrics,
                scheduling: Scheduling {
                    mode,
                    settings: Settings {
                        health: health::Config::with_active_interval(Duration::from_millis(
                            probe_interval,
                        )),
                        hold: Duration::from_secs_f64(hold.clamp(0.0, 3600.0)),
                        reorder_cap: Duration::from_millis(reorder_cap),
                    },
                    small_udp,
                },
            };
            let result = mpwg::daemon::run(&opts, || {
                if let Some(r) = &ready {
                    r.ready();
                }
            });
            match (result, ready) {
                (Ok(()), _) => ExitCode::SUCCESS,
                (Err(e), Some(r)) => {
                    r.failed(&e.to_string());
                    fail(e)
                }
                (Err(e), None) => fail(e),
            }
        }
        Command::Interfaces => match mpwg::io::netlink::interfaces() {
            Ok(list) => {
                print!("{}", mpwg::io::netlink::format_interfaces(&list));
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("cannot list interfaces through netlink: {e}")),
        },
        Command::Show { name, json } => {
            ask(&name, &if json { Request::Status } else { Request::Show })
        }
        Command::Strip { file } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
            };
            match mpwg::control::config::parse(&text, &file) {
                Ok(_) => {
                    print!("{}", mpwg::control::config::strip(&text));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Path { action } => match action {
            PathAction::Add {
                name,
                iface,
                priority,
                weight,
            } => ask(
                &name,
                &Request::PathAdd {
                    iface,
                    priority,
                    weight,
                },
            ),
            PathAction::Del { name, iface } => ask(&name, &Request::PathDel { iface }),
            PathAction::Set {
                name,
                iface,
                priority,
                weight,
            } => ask(
                &name,
                &Request::PathSet {
                    iface,
                    priority,
                    weight,
                },
            ),
        },
        Command::Mode { name, mode } => ask(&name, &Request::Mode { mode }),
        Command::GenerateAssets { dir } => match generate_assets(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("writing into {}: {e}", dir.display())),
        },
    }
}

/// The man pages (one per subcommand) and the bash, zsh and fish completions.
fn generate_assets(dir: &std::path::Path) -> std::io::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut Cli::command(), "mpwg", &completions)?;
    }
    Ok(())
}

/// `mpwg NAME` as wg-quick runs it.
mod wg_quick {
    use std::cell::RefCell;
    use std::io::{PipeWriter, Read, Write};

    use clap::{ArgMatches, CommandFactory};

    use super::Cli;

    /// Extra `mpwg up` options for the wg-quick form, split on whitespace.
    pub const UP_ARGS_ENV: &str = "MPWG_UP_ARGS";
    /// Where the detached daemon writes its log (default: nowhere).
    pub const LOG_FILE_ENV: &str = "MPWG_LOG_FILE";

    /// How `mpwg NAME` runs.
    #[derive(Clone, Copy)]
    pub struct WgQuick {
        /// Detach into the background once the device is up.
        pub background: bool,
    }

    /// Parses the command line. `mpwg [-f] NAME` comes back as the matches of
    /// `mpwg up NAME $MPWG_UP_ARGS`, with how it was asked to run.
    pub fn parse() -> (ArgMatches, Option<WgQuick>) {
        let matches = Cli::command().get_matches();
        let (Some(name), None) = (
            matches.get_one::<String>("interface"),
            matches.subcommand_name(),
        ) else {
            return (matches, None);
        };
        let mut argv: Vec<String> = vec!["mpwg".into(), "up".into(), name.clone()];
        let extra = std::env::var(UP_ARGS_ENV).unwrap_or_default();
        argv.extend(extra.split_whitespace().map(String::from));
        let foreground = matches.get_flag("foreground")
            || std::env::var("WG_PROCESS_FOREGROUND").is_ok_and(|v| v == "1");
        let up = Cli::command()
            .try_get_matches_from(&argv)
            .unwrap_or_else(|e| {
                eprintln!("mpwg: in {UP_ARGS_ENV}={extra:?}, for `mpwg up {name}`:");
                e.exit()
            });
        (
            up,
            Some(WgQuick {
                background: !foreground,
            }),
        )
    }

    /// The detached daemon's line to the process that started it, which waits for one
    /// word: ready, or an error.
    pub struct Readiness(RefCell<Option<PipeWriter>>);

    impl Readiness {
        /// The device is up: the starting process exits 0.
        pub fn ready(&self) {
            if let Some(mut w) = self.0.borrow_mut().take() {
                let _ = w.write_all(b"ready\n");
            }
        }

        /// The daemon could not start: the starting process prints `error` and exits 1.
        pub fn failed(&self, error: &str) {
            if let Some(mut w) = self.0.borrow_mut().take() {
                let _ = w.write_all(error.as_bytes());
            }
        }
    }

    /// Detaches into the background, as wireguard-go does for wg-quick: forks (twice,
    /// with a new session, through the daemonize crate), and returns in the detached
    /// process. The starting process waits until that one says it is ready (then exits
    /// 0, so wg-quick goes on to configure the device) or failed (then prints why and
    /// exits 1). Must run before any thread is started.
    pub fn detach() -> Result<Readiness, String> {
        let (mut reader, writer) =
            std::io::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
        let log = match std::env::var_os(LOG_FILE_ENV) {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        format!("cannot open {LOG_FILE_ENV}={}: {e}", path.to_string_lossy())
                    })?,
            ),
            None => None,
        };
        let mut d = daemonize::Daemonize::new().working_directory("/");
        if let Some(f) = log {
            let f2 = f
                .try_clone()
                .map_err(|e| format!("cannot duplicate the log file: {e}"))?;
            d = d.stdout(f).stderr(f2);
        }
        match d.execute() {
            daemonize::Outcome::Parent(Ok(_)) => {
                drop(writer);
                let mut said = String::new();
                let _ = reader.read_to_string(&mut said);
                match said.as_str() {
                    "ready\n" => std::process::exit(0),
                    "" => Err(format!(
                        "the detached daemon exited before it was ready (set {LOG_FILE_ENV}=FILE for its log)"
                    )),
                    error => Err(error.to_string()),
                }
            }
            daemonize::Outcome::Parent(Err(e)) => Err(format!("cannot detach: {e}")),
            daemonize::Outcome::Child(Ok(_)) => {
                drop(reader);
                Ok(Readiness(RefCell::new(Some(writer))))
            }
            daemonize::Outcome::Child(Err(e)) => {
                let mut w = writer;
                let _ = write!(w, "cannot detach: {e}");
                std::process::exit(1)
            }
        }
    }
}
