//! `kitbash feedback <query_id> wrong`: mark an answer wrong.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::common;
use crate::Blackboard;
use crate::config::Settings;
use crate::layer0::crystal::{Feedback, FeedbackError};

/// Arguments of `kitbash feedback`.
#[derive(Debug, Args)]
pub struct FeedbackArgs {
    /// The query whose answer is judged.
    pub query_id: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Also delete a loaded grain that gave the answer (a crystallised one
    /// is always deleted).
    #[arg(long)]
    pub force: bool,
    /// A note kept with the verdict (in the feed and `<prefix>:feedback`).
    #[arg(long)]
    pub note: Option<String>,
}

/// What the user says about an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verdict {
    /// The answer is wrong.
    Wrong,
}

/// Marks the answer wrong; exit status 1 when there is no such query or
/// answer, 2 when Redis cannot be reached.
pub fn run(file: Option<PathBuf>, args: FeedbackArgs) -> ExitCode {
    common::with_blackboard(file, |settings, bb| async move {
        match mark_wrong(
            &bb,
            &settings,
            &args.query_id,
            args.force,
            args.note.as_deref(),
        )
        .await
        {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(FeedbackError::Store(e)) => {
                eprintln!("kitbash feedback: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("kitbash feedback: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// Marks `query_id`'s answer wrong and says what was done (the REPL's
/// `:wrong` too).
pub async fn mark_wrong(
    bb: &Blackboard,
    settings: &Settings,
    query_id: &str,
    force: bool,
    note: Option<&str>,
) -> Result<String, FeedbackError> {
    let f = bb
        .mark_wrong(query_id, force, settings.crystallization.block_s, note)
        .await?;
    Ok(describe(&f))
}

/// One line on what feedback did.
pub fn describe(f: &Feedback) -> String {
    let grain = f.grain_outcome();
    let block = if f.blocked_s > 0 {
        format!("; the question will not crystallise for {} s", f.blocked_s)
    } else {
        String::new()
    };
    format!("marked {} wrong: {grain}{block}", f.query_id)
}
