//! The `mpwg` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mpwg: a multi-path WireGuard gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// More logging: -v for events, -vv for debugging, -vvv for every packet.
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up {
            name,
            listen_port,
            mtu,
            config,
            verbose,
        } => {
            init_logging(verbose);
            let opts = mpwg::daemon::Options {
                name,
                listen_port,
                mtu,
                config,
            };
            match mpwg::daemon::run(&opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mpwg: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
