//! PLACEHOLDER: a helper implements this module.

use tokio::time::Instant;

use super::backend::{Backend, BackendAnswer, BackendError};
use crate::config::LlmSettings;

/// Client of KoboldCpp or an OpenAI-compatible server.
pub struct LlmBackend {}

impl LlmBackend {
    /// A client for `settings.url` speaking `settings.backend`.
    pub fn new(settings: &LlmSettings) -> Result<Self, String> {
        let _ = settings;
        Err("not implemented yet".into())
    }
}

impl Backend for LlmBackend {
    async fn answer(
        &self,
        _text: &str,
        _deadline: Instant,
    ) -> Result<Option<BackendAnswer>, BackendError> {
        Err(BackendError::Other("not implemented yet".into()))
    }
    async fn check(&self) -> Result<(), String> {
        Err("not implemented yet".into())
    }
}
