//! The echo backend: answers every job at once with its own text. For tests
//! and for measuring the protocol's own overhead (`kitbash bench`).

use tokio::time::Instant;

use super::backend::{Backend, BackendAnswer, BackendError};

/// Answers `echo: <text>` with a fixed confidence.
#[derive(Debug, Clone)]
pub struct EchoBackend {
    confidence: f64,
}

impl EchoBackend {
    /// An echo backend reporting `confidence`.
    pub fn new(confidence: f64) -> Self {
        Self { confidence }
    }
}

impl Backend for EchoBackend {
    async fn answer(
        &self,
        text: &str,
        _deadline: Instant,
    ) -> Result<Option<BackendAnswer>, BackendError> {
        Ok(Some(BackendAnswer {
            text: format!("echo: {text}"),
            confidence: self.confidence,
            source: Some("echo".into()),
        }))
    }

    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
