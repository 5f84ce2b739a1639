//! PLACEHOLDER: a helper implements this module.

use tokio::time::Instant;

use super::backend::{Backend, BackendAnswer, BackendError};
use crate::config::BitnetSettings;

/// Client of a llama.cpp-style server.
pub struct BitnetBackend {}

impl BitnetBackend {
    /// A client for `settings.url`.
    pub fn new(settings: &BitnetSettings) -> Result<Self, String> {
        let _ = settings;
        Err("not implemented yet".into())
    }
}

impl Backend for BitnetBackend {
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
