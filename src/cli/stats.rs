//! `kitbash stats`: per-layer counters and latency percentiles.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::common;
use super::show::{self, Paint};

/// Arguments of `kitbash stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Seconds of latency samples the percentiles cover.
    #[arg(long, default_value_t = 300)]
    pub window: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints one row per configured layer.
pub fn run(file: Option<PathBuf>, args: StatsArgs) -> ExitCode {
    common::with_blackboard(file, |settings, bb| async move {
        let mut rows = Vec::new();
        for (layer, _) in settings.layers_in_order() {
            match bb
                .layer_stats(layer, Duration::from_secs(args.window))
                .await
            {
                Ok(r) => rows.push(r),
                Err(e) => {
                    eprintln!("kitbash stats: {layer}: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).expect("stats serialize")
            );
        } else {
            println!(
                "{}",
                show::stats(
                    &rows,
                    Paint {
                        color: common::color()
                    }
                )
            );
        }
        ExitCode::SUCCESS
    })
}
