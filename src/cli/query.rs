//! `kitbash query "…"`: one-shot questions.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::common;
use super::show::{self, Paint};
use crate::client::{Client, ClientError};
use crate::state::{QueryState, QueryStatus};

/// Arguments of `kitbash query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The question. Without it (or with `-`), one question a line is read
    /// from stdin and the answers are printed in order.
    pub text: Option<String>,
    /// Print the final state as JSON (one object a line for stdin input).
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for each outcome.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Priority lane: critical, high, normal or low.
    #[arg(long, default_value = "normal")]
    pub priority: crate::store::lanes::Lane,
}

/// Exit code for an outcome: 0 answered, 1 unanswered, 2 failed.
fn code(s: &QueryState) -> u8 {
    match s.status {
        QueryStatus::Answered => 0,
        QueryStatus::Unanswered => 1,
        _ => 2,
    }
}

/// Asks and prints; exit code 0 answered, 1 unanswered, 2 failed or error
/// (the worst one for several questions).
pub fn run(file: Option<PathBuf>, args: QueryArgs) -> ExitCode {
    let settings = match common::settings(file) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let texts: Vec<String> = match args.text.as_deref() {
        Some("-") | None => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "kitbash query: reading questions from the terminal, one a line; Ctrl-D to ask them"
                );
            }
            std::io::stdin()
                .lock()
                .lines()
                .map_while(Result::ok)
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        }
        Some(t) => vec![t.to_string()],
    };
    if texts.is_empty() {
        eprintln!("kitbash query: no question given (pass one, or pipe one a line)");
        return ExitCode::from(2);
    }
    let rt = match common::runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    let timeout = Duration::from_secs_f64(args.timeout.max(0.01));
    rt.block_on(async move {
        let mut client = match Client::connect(&settings, timeout).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("kitbash query: {e}");
                return ExitCode::from(2);
            }
        };
        client.set_priority(args.priority);
        // Nobody to answer: say so now, not after the whole wait.
        if let Ok(0) = client.live_daemons().await {
            eprintln!(
                "kitbash query: no daemon is running (no live `kitbash serve` health key); \
                 the question waits in the queue for up to {:.0} s. Start one with `kitbash serve` or `kitbash up`.",
                timeout.as_secs_f64()
            );
        }
        // Submit everything first (the daemon works on them meanwhile), then
        // wait for each in order.
        let mut submitted = Vec::with_capacity(texts.len());
        for t in &texts {
            match client
                .submit(t, serde_json::json!({"client": "kitbash query"}))
                .await
            {
                Ok(q) => submitted.push(Ok(q.query_id)),
                Err(e) => submitted.push(Err(e)),
            }
        }
        let paint = Paint {
            color: common::color(),
        };
        let threshold = |l: &str| settings.layers.get(l).map(|l| l.min_confidence);
        let mut worst = 0u8;
        for (i, s) in submitted.into_iter().enumerate() {
            let waiting = std::io::stderr().is_terminal();
            if waiting {
                eprint!("{}", paint.dim("waiting for the answer…"));
            }
            let outcome = match s {
                Ok(id) => client.wait(&id, timeout).await,
                Err(e) => Err(e),
            };
            if waiting {
                // Erase the waiting line.
                eprint!("\r\x1b[K");
            }
            match outcome {
                Ok(state) => {
                    worst = worst.max(code(&state));
                    if args.json {
                        println!(
                            "{}",
                            serde_json::to_string(&state).expect("state serializes")
                        );
                    } else {
                        if texts.len() > 1 {
                            println!("{} {}", paint.dim("?"), texts[i]);
                        }
                        println!("{}", show::answer(&state, paint, &threshold));
                    }
                }
                Err(e) => {
                    worst = 2;
                    report(&e, &texts[i]);
                }
            }
        }
        ExitCode::from(worst)
    })
}

fn report(e: &ClientError, text: &str) {
    eprintln!("kitbash query: {text:?}: {e}");
}
