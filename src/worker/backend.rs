//! What a worker kind plugs into the worker runtime.

use std::future::Future;

use tokio::time::Instant;

/// An answer a backend found.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendAnswer {
    /// The answer text.
    pub text: String,
    /// Confidence in [0, 1]; the daemon compares it with the layer's
    /// `min_confidence`.
    pub confidence: f64,
    /// Where it came from (`<cartridge>#<fact id>`, a model name, …).
    pub source: Option<String>,
}

/// Why a backend could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// The backend server did not answer (refused, reset, timed out).
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    /// The backend server said it is busy (HTTP 503) until the deadline.
    #[error("backend busy until the deadline: {0}")]
    Busy(String),
    /// The backend answered something that is not its documented shape.
    #[error("backend answered in an unexpected shape: {0}")]
    BadResponse(String),
    /// The job's deadline passed while working on it.
    #[error("the job's deadline passed")]
    Deadline,
    /// The backend produced text that is not an answer (see
    /// [`super::generated::non_answer`]): a miss, with why.
    #[error("{0}")]
    NotAnAnswer(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A worker kind's way of answering. The runtime (taking jobs, deadlines,
/// replies, heartbeats, shutdown) is the same for every kind.
pub trait Backend: Send + Sync + 'static {
    /// Answers `text` before `deadline`: `Ok(Some)` with a confidence,
    /// `Ok(None)` when it has nothing, `Err` when it failed.
    fn answer(
        &self,
        text: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<Option<BackendAnswer>, BackendError>> + Send;

    /// Whether the backend can answer now; `Err(reason)` when not (server
    /// down, model loading). A worker whose backend fails this reports
    /// itself unhealthy, so the daemon skips its layer instead of waiting.
    fn check(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// Reloads what the backend loaded at start (SIGHUP). Jobs keep being
    /// answered meanwhile.
    fn reload(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
}

/// A shared backend is a backend: tests and callers keep a handle on it.
impl<B: Backend> Backend for std::sync::Arc<B> {
    fn answer(
        &self,
        text: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<Option<BackendAnswer>, BackendError>> + Send {
        (**self).answer(text, deadline)
    }

    fn check(&self) -> impl Future<Output = Result<(), String>> + Send {
        (**self).check()
    }

    fn reload(&self) -> impl Future<Output = Result<(), String>> + Send {
        (**self).reload()
    }
}

/// A prompt template must hold `{query}`, or the question never reaches the
/// model; `section` names the settings (`workers.llm`) in the message.
pub(crate) fn check_prompt_template(template: &str, section: &str) -> Result<(), String> {
    if template.contains("{query}") {
        Ok(())
    } else {
        Err(format!(
            "{section}.prompt_template has no {{query}}: the question would never reach the model"
        ))
    }
}
