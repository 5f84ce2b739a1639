//! The echo backend: answers every job at once with its own text. For tests
//! and for measuring the protocol's own overhead (`kitbash bench`).

use std::time::Duration;

use tokio::time::Instant;

use super::backend::{Backend, BackendAnswer, BackendError};

/// Answers `echo: <text>` with a fixed confidence, after an optional delay.
#[derive(Debug, Clone)]
pub struct EchoBackend {
    confidence: f64,
    delay: Duration,
}

impl EchoBackend {
    /// An echo backend reporting `confidence` at once.
    pub fn new(confidence: f64) -> Self {
        Self {
            confidence,
            delay: Duration::ZERO,
        }
    }

    /// Takes `delay` per job (never past the job's deadline): a slow model.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl Backend for EchoBackend {
    async fn answer(
        &self,
        text: &str,
        deadline: Instant,
    ) -> Result<Option<BackendAnswer>, BackendError> {
        if !self.delay.is_zero() {
            tokio::time::sleep_until((Instant::now() + self.delay).min(deadline)).await;
        }
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
