//! The `kitbash` command line. One file per command; `src/bin/kitbash.rs`
//! only parses arguments and calls [`run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod config;

/// Kitbash: answers queries from the cheapest confident layer.
#[derive(Debug, Parser)]
#[command(name = "kitbash", version, about, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./kitbash_config.yaml).
    #[arg(long, global = true, env = "KITBASH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration, secrets redacted, with the source of each value.
    Config(config::ConfigArgs),
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Config(args) => config::run(cli.config, args),
    }
}
