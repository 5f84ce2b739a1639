//! The `kitbash` binary: parses arguments and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

// glibc's malloc showed as a third of the daemon's CPU under load (many
// small, short-lived allocations across threads); mimalloc handles that
// pattern far better. The `system-alloc` feature leaves it out, so heap
// profilers that intercept malloc (heaptrack) see the allocations.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    kitbash::cli::run(kitbash::cli::Cli::parse())
}
