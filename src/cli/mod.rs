//! The `kitbash` command line. One file per command; `src/bin/kitbash.rs`
//! only parses arguments and calls [`run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod acl;
pub mod bench;
pub mod calibrate;
pub mod common;
pub mod config;
pub mod feedback;
pub mod grains;
pub mod query;
pub mod repl;
pub mod serve;
pub mod show;
pub mod signals;
pub mod stats;
pub mod timeline;
pub mod up;
pub mod worker;

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
    /// Manage layer0 grains: load, list, get, forget, count, match.
    Grains(grains::GrainsArgs),
    /// Mark a query's answer wrong: its grain goes, its question stops crystallising.
    Feedback(feedback::FeedbackArgs),
    /// Run the orchestrator daemon until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// The whole stack on this machine: Redis (if needed), daemon, workers; Ctrl-C stops all.
    Up(up::UpArgs),
    /// Interactive client: ask questions, inspect timelines, stats, health.
    Repl(repl::ReplArgs),
    /// Ask one question (or one a line from stdin) and print the answer.
    Query(query::QueryArgs),
    /// Show one query's events with relative times.
    Timeline(timeline::TimelineArgs),
    /// Show per-layer counters and latency percentiles.
    Stats(stats::StatsArgs),
    /// Load generator and report against the running deployment.
    Bench(bench::BenchArgs),
    /// Replay labelled questions through layer0 and layer2 in process; choose thresholds for an error budget.
    Calibrate(calibrate::CalibrateArgs),
    /// Run a worker for one layer: bitnet, cartridge, llm (or echo, for tests).
    Worker(worker::WorkerArgs),
    /// Print least-privilege Redis ACL users for the daemon, a worker and a client.
    Acl(acl::AclArgs),
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Config(args) => config::run(cli.config, args),
        Command::Grains(args) => grains::run(cli.config, args),
        Command::Feedback(args) => feedback::run(cli.config, args),
        Command::Serve(args) => serve::run(cli.config, args),
        Command::Query(args) => query::run(cli.config, args),
        Command::Repl(args) => repl::run(cli.config, args),
        Command::Up(args) => up::run(cli.config, args),
        Command::Bench(args) => bench::run(cli.config, args),
        Command::Timeline(args) => timeline::run(cli.config, args),
        Command::Stats(args) => stats::run(cli.config, args),
        Command::Calibrate(args) => calibrate::run(cli.config, args),
        Command::Worker(args) => worker::run(cli.config, args),
        Command::Acl(args) => acl::run(cli.config, args),
    }
}
