//! The worker protocol of docs/design.md: jobs the daemon pushes to
//! `<p>:jobs:<layer>` and replies workers push to the job's `reply_to`.

use serde::{Deserialize, Serialize};

/// Work for one layer's workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique per attempt; the reply carries it back.
    pub job_id: String,
    /// The query it is for.
    pub query_id: String,
    /// The layer it is for.
    pub layer: String,
    /// The query text.
    pub text: String,
    /// Unix ms after which nobody waits for the answer; workers drop it.
    pub deadline_ms: i64,
    /// The list to LPUSH the reply to (`<p>:replies:<instance>`).
    pub reply_to: String,
    /// The query's priority lane (`critical`, `high`, `low`); omitted for
    /// `normal`. A job returned to its layer goes back to this lane's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// How a worker's attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyOutcome {
    /// The worker has an answer it is confident in (the daemon still checks
    /// the layer's threshold).
    Hit,
    /// No answer, or one below the worker's own bar.
    Miss,
    /// The worker failed.
    Error,
}

/// A worker's answer to one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The job answered.
    pub job_id: String,
    /// The job's query.
    pub query_id: String,
    /// The job's layer.
    pub layer: String,
    /// The worker's name.
    pub worker: String,
    /// How it ended.
    pub outcome: ReplyOutcome,
    /// The answer text, if any.
    #[serde(default)]
    pub answer: Option<String>,
    /// Confidence in [0, 1].
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Where the answer came from.
    #[serde(default)]
    pub source: Option<String>,
    /// Time the worker spent, in ms.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// What went wrong, for `error`.
    #[serde(default)]
    pub error: Option<String>,
    /// Why a `miss`, when the worker knows (a model's text that is not an
    /// answer); the daemon records it as the attempt's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Reply {
    /// Checks what serde cannot: a confidence in [0, 1], an answer on a hit.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = self.confidence
            && !(0.0..=1.0).contains(&c)
        {
            return Err(format!("confidence {c} is outside [0, 1]"));
        }
        if self.outcome == ReplyOutcome::Hit && self.answer.as_deref().unwrap_or("").is_empty() {
            return Err("a hit without an answer".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_shape_of_design_md_parses() {
        let r: Reply = serde_json::from_str(r#"{"job_id":"j","query_id":"q1","layer":"layer2","worker":"cartridge-1","outcome":"hit","answer":"Nairobi","confidence":0.83,"source":"geography#geo-00012","latency_ms":3.1,"error":null}"#).unwrap();
        assert_eq!(r.outcome, ReplyOutcome::Hit);
        assert!(r.validate().is_ok());
        let bad = Reply {
            confidence: Some(1.5),
            ..r.clone()
        };
        assert!(bad.validate().is_err());
        let empty = Reply { answer: None, ..r };
        assert!(empty.validate().is_err());
    }
}
