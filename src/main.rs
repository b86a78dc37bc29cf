//! The `mpwg` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use mpwg::datapath::paths::ReceiveMode;
use mpwg::multipath::path::PathArg;

/// mpwg: a multi-path WireGuard gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("mpwg: error: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match cli.command {
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
            verbose,
        } => {
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
            };
            match mpwg::daemon::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Interfaces => match mpwg::io::netlink::interfaces() {
            Ok(list) => {
                print!("{}", mpwg::io::netlink::format_interfaces(&list));
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!("cannot list interfaces through netlink: {e}")),
        },
        Command::Show { name } => match mpwg::control::show::query(&name, "show") {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}
