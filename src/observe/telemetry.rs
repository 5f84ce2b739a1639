//! Log set-up: `tracing` with the configured filter and format.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

/// Installs the global subscriber, writing to stderr. `KITBASH_LOG`, when
/// set, overrides `logging.level` (handy for one debugging run). Calling it
/// twice is harmless: the second call changes nothing.
pub fn init(settings: &LoggingSettings) {
    let filter = std::env::var("KITBASH_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"))
        });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.with_target(false).try_init(),
    };
}
