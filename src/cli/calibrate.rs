//! `kitbash calibrate`: replay a labelled question set through the layers
//! in this process and choose thresholds for an error budget (see
//! [`crate::calibrate`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::common;
use crate::calibrate::{self, Replay, Split, labels};

/// Arguments of `kitbash calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Labelled questions: JSONL, `{"id","split","kind","query","expect":[sources]}` a line.
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Largest share of wrong answers a layer may give (upper end of the 95% interval).
    #[arg(long, default_value_t = 0.02, value_name = "RATE")]
    pub max_error: f64,
    /// Which part of the labelled set to use.
    #[arg(long, value_enum, default_value_t = Split::Tune)]
    pub split: Split,
    /// Grains files layer0 answers from (as `kitbash grains load` reads them).
    #[arg(
        long = "grains",
        value_name = "FILE",
        default_value = "config/grains/demo.jsonl"
    )]
    pub grains: Vec<PathBuf>,
    /// Also write one JSON line per question (its readings at each layer and the outcome) to FILE.
    #[arg(long, value_name = "FILE")]
    pub details: Option<PathBuf>,
    /// Then crystallise what the daemon would (each layer's
    /// `crystallize` policy) from the split's answers, and score the
    /// cascade again with those grains at layer0.
    #[arg(long)]
    pub crystallize: bool,
    /// Write the chosen thresholds into the configuration file (--config, $KITBASH_CONFIG or ./kitbash_config.yaml).
    #[arg(long)]
    pub write: bool,
}

/// Runs `kitbash calibrate`.
pub fn run(config: Option<PathBuf>, args: CalibrateArgs) -> ExitCode {
    let settings = match common::settings(config.clone()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if !(0.0..1.0).contains(&args.max_error) {
        eprintln!(
            "kitbash: --max-error {} is not a rate in [0, 1)",
            args.max_error
        );
        return ExitCode::from(2);
    }
    let result = labels::read(&args.labels)
        .and_then(|l| Ok((l, calibrate::layers(&settings, &args.grains)?)))
        .and_then(|(l, layers)| Replay::run(l, layers));
    let mut replay = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kitbash: {e}");
            return ExitCode::from(2);
        }
    };
    let (text, chosen) = calibrate::report(&replay, args.split, args.max_error);
    print!("{text}");
    if args.crystallize {
        let split = args.split;
        match replay.crystallize(|l| split.keeps(l)) {
            Ok(n) => {
                let thresholds = calibrate::configured_thresholds(&replay);
                let scores = replay.cascade(&thresholds, |l| split.keeps(l));
                println!(
                    "\nWith crystallisation: {n} grains made from the answers to these questions (each layer's crystallize policy); the cascade when they are asked again:"
                );
                print!("{}", calibrate::scores_table(&scores, &replay));
            }
            Err(e) => {
                eprintln!("kitbash: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(path) = &args.details
        && let Err(e) = std::fs::write(path, replay.details(args.split))
    {
        eprintln!("kitbash: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if !args.write {
        return ExitCode::SUCCESS;
    }
    let values: Vec<(String, f64)> = chosen
        .iter()
        .filter_map(|c| c.chosen.map(|p| (c.name.clone(), p.threshold)))
        .collect();
    if values.is_empty() {
        eprintln!("kitbash: no layer has a threshold within the budget; nothing written");
        return ExitCode::from(1);
    }
    let path = crate::config::config_path(config);
    let old = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            eprintln!("kitbash: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let new = match calibrate::yaml::set_thresholds(&old, &values) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kitbash: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::write(&path, new) {
        eprintln!("kitbash: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    for (layer, t) in &values {
        println!(
            "Wrote layers.{layer}.min_confidence: {t:.3} to {}",
            path.display()
        );
    }
    ExitCode::SUCCESS
}
