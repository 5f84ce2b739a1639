//! `kitbash config`: the effective configuration and where each value came from.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `kitbash config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print JSON (secrets redacted) instead of `key = value  # source` lines.
    #[arg(long)]
    pub json: bool,
}

/// Prints the configuration; exits 2 with the reasons when it is invalid.
pub fn run(file: Option<PathBuf>, args: ConfigArgs) -> ExitCode {
    match crate::config::load(file) {
        Ok(loaded) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&loaded.redacted_json())
                        .expect("JSON values serialize")
                );
            } else {
                print!("{}", loaded.render());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kitbash: {e}");
            ExitCode::from(2)
        }
    }
}
