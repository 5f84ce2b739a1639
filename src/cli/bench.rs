//! `kitbash bench`: load generator and report against a running deployment.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::common;
use crate::client::bench::{self, BenchOptions, Mode};

/// How queries are sent.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Push all queries at once, then drain.
    Backlog,
    /// Send at a fixed rate (open loop).
    Paced,
}

/// Arguments of `kitbash bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Backlog (push N, drain) or paced (fixed rate).
    #[arg(long, value_enum, default_value = "backlog")]
    pub mode: ModeArg,
    /// Queries to send.
    #[arg(long, short = 'n', default_value_t = 20_000)]
    pub n: usize,
    /// Queries per second, paced mode.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Mix: `layer0` (all grain hits), `worker` (all escalate past layer0),
    /// or a layer0 share such as `0.8`.
    #[arg(long, default_value = "layer0")]
    pub mix: String,
    /// Bench grains to load.
    #[arg(long, default_value_t = 1_000)]
    pub grains: usize,
    /// Seconds to wait for the last outcomes.
    #[arg(long, default_value_t = 120.0)]
    pub drain_timeout: f64,
    /// Ask these questions (one a line; a JSONL line's `query` field;
    /// `#` comments skipped) instead of bench grains and escalations, each
    /// query drawing one from a Zipf distribution (--zipf). The grains
    /// their answers crystallise into are removed at the end.
    #[arg(long, value_name = "FILE")]
    pub questions: Option<PathBuf>,
    /// Zipf exponent for --questions: rank k is asked with probability
    /// proportional to 1/k^s.
    #[arg(long, default_value_t = 1.1, value_name = "S")]
    pub zipf: f64,
    /// Also report per window of this many queries (layer0 share, worker
    /// calls, end-to-end percentiles); 0 for none.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub window: usize,
    /// Share of the queries per priority lane, such as `high=0.01,low=0.99`
    /// (lanes not named get none; the shares must sum to 1). Default: all
    /// normal.
    #[arg(long, value_name = "MIX")]
    pub priority_mix: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Reads a questions file: one a line, or JSONL lines with a `query` field.
fn read_questions(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
            match v.get("query").and_then(|q| q.as_str()) {
                Some(q) => out.push(q.to_string()),
                None => return Err(format!("{}:{}: no \"query\" string", path.display(), n + 1)),
            }
        } else {
            out.push(line.to_string());
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no questions", path.display()));
    }
    Ok(out)
}

/// Runs the bench and prints the report.
pub fn run(file: Option<PathBuf>, args: BenchArgs) -> ExitCode {
    let settings = match common::settings(file) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let ratio = match args.mix.as_str() {
        "layer0" => 1.0,
        "worker" => 0.0,
        r => match r.parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => x,
            _ => {
                eprintln!(
                    "kitbash bench: --mix must be layer0, worker or a share in [0, 1], got {r:?}"
                );
                return ExitCode::from(2);
            }
        },
    };
    let questions = match &args.questions {
        None => Vec::new(),
        Some(p) => match read_questions(p) {
            Ok(q) => q,
            Err(e) => {
                eprintln!("kitbash bench: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if !(args.zipf.is_finite() && args.zipf >= 0.0) {
        eprintln!(
            "kitbash bench: --zipf must be a number ≥ 0, got {}",
            args.zipf
        );
        return ExitCode::from(2);
    }
    let priority_mix = match args.priority_mix.as_deref().map(parse_priority_mix) {
        None => [0.0, 0.0, 1.0, 0.0],
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            eprintln!("kitbash bench: --priority-mix: {e}");
            return ExitCode::from(2);
        }
    };
    let grain_layers = settings
        .layers
        .iter()
        .filter(|(_, l)| l.kind == crate::config::LayerKind::Grain)
        .map(|(n, _)| n.clone())
        .collect();
    let rt = match common::runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    rt.block_on(async move {
        let mut settings = settings;
        // The bench's own writes must never be refused by backpressure.
        settings.orchestrator.max_queue_len = u64::MAX;
        let bb = match common::blackboard(&settings).await {
            Ok(b) => b,
            Err(c) => return c,
        };
        // The bench writes as a client does: waiting for replicas when a
        // client would (redis.wait_replicas).
        if let Err(e) = bb.resolve_wait_replicas(settings.redis.wait_replicas).await {
            eprintln!("kitbash bench: {e}");
            return ExitCode::from(1);
        }
        let opts = BenchOptions {
            mode: match args.mode {
                ModeArg::Backlog => Mode::Backlog,
                ModeArg::Paced => Mode::Paced,
            },
            n: args.n,
            rate: args.rate,
            layer0_ratio: ratio,
            grains: args.grains,
            drain_timeout: Duration::from_secs_f64(args.drain_timeout),
            questions,
            zipf_s: args.zipf,
            window: args.window,
            priority_mix,
            grain_layers,
        };
        match bench::run(&bb, &opts).await {
            Ok(report) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("report serializes")
                    );
                } else {
                    println!("{}", report.table());
                }
                if report.completed < report.sent {
                    eprintln!(
                        "kitbash bench: only {} of {} queries finished within {} s",
                        report.completed, report.sent, args.drain_timeout
                    );
                    return ExitCode::from(1);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kitbash bench: {e}");
                ExitCode::from(2)
            }
        }
    })
}

/// `high=0.01,low=0.99`: each named lane's share, in the lanes' order;
/// the shares must be in [0, 1] and sum to 1.
fn parse_priority_mix(s: &str) -> Result<[f64; 4], String> {
    use crate::store::lanes::Lane;
    let mut mix = [0.0; 4];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lane, share) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not lane=share"))?;
        let lane: Lane = lane.parse()?;
        let share: f64 = share
            .trim()
            .parse()
            .map_err(|_| format!("{share:?} is not a number"))?;
        if !(0.0..=1.0).contains(&share) {
            return Err(format!(
                "the share of {lane} must be in [0, 1], got {share}"
            ));
        }
        mix[lane.index()] = share;
    }
    let sum: f64 = mix.iter().sum();
    if (sum - 1.0).abs() > 1e-6 {
        return Err(format!("the shares must sum to 1, got {sum}"));
    }
    Ok(mix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_priority_mix_names_lanes_and_sums_to_one() {
        assert_eq!(
            parse_priority_mix("high=0.01, low=0.99"),
            Ok([0.0, 0.01, 0.0, 0.99])
        );
        assert!(parse_priority_mix("high=0.5").is_err());
        assert!(parse_priority_mix("urgent=1").is_err());
        assert!(parse_priority_mix("low").is_err());
        let lanes = crate::client::bench::lanes_for(1000, [0.0, 0.01, 0.0, 0.99]);
        let high = lanes
            .iter()
            .filter(|l| **l == crate::store::lanes::Lane::High)
            .count();
        assert_eq!(high, 10);
        // Spread through the run, not bunched: one in each hundred.
        assert!(
            lanes
                .chunks(100)
                .all(|c| c.contains(&crate::store::lanes::Lane::High))
        );
    }
}
