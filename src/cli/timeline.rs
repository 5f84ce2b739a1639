//! `kitbash timeline <id>`: one query's events.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::common;
use super::show::{self, Paint};

/// Arguments of `kitbash timeline`.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The query id.
    pub query_id: String,
    /// Print the events as JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Prints the query's events with times relative to the first.
pub fn run(file: Option<PathBuf>, args: TimelineArgs) -> ExitCode {
    common::with_blackboard(file, |_settings, bb| async move {
        match bb.timeline(&args.query_id, 100_000).await {
            Ok(events) if args.json => {
                for e in events {
                    let mut obj = serde_json::Map::new();
                    obj.insert("id".into(), e.id.clone().into());
                    for (k, v) in e.fields {
                        // The feed stores flat strings; numbers go out as
                        // numbers.
                        let value = match k.as_str() {
                            "confidence" | "latency_ms" => v
                                .parse::<f64>()
                                .ok()
                                .and_then(serde_json::Number::from_f64)
                                .map_or_else(|| v.clone().into(), serde_json::Value::Number),
                            _ => v.into(),
                        };
                        obj.insert(k, value);
                    }
                    println!("{}", serde_json::Value::Object(obj));
                }
                ExitCode::SUCCESS
            }
            Ok(events) if events.is_empty() => {
                eprintln!("kitbash timeline: no events for {}", args.query_id);
                ExitCode::from(1)
            }
            Ok(events) => {
                println!(
                    "{}",
                    show::timeline(
                        &events,
                        Paint {
                            color: common::color()
                        }
                    )
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kitbash timeline: {e}");
                ExitCode::from(2)
            }
        }
    })
}
