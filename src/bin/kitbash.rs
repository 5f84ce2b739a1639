//! The `kitbash` binary: parses arguments and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    kitbash::cli::run(kitbash::cli::Cli::parse())
}
