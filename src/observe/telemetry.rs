//! Log set-up: `tracing` with the configured filter and format.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

/// Installs the global subscriber, writing to stderr. `KITBASH_LOG`, when
/// set, overrides `logging.level` (handy for one debugging run). Calling it
/// twice is harmless: the second call changes nothing.
///
/// The Redis client's own warnings are left out unless the filter names the
/// `redis` target: in cluster mode it warns on every reconnection attempt
/// to a node that died (dozens a second until the cluster forgets it),
/// while Kitbash logs each outage once with its cause.
pub fn init(settings: &LoggingSettings) {
    let text = std::env::var("KITBASH_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| settings.level.clone());
    let mut filter = EnvFilter::try_new(&text).unwrap_or_else(|_| EnvFilter::new("info"));
    if !text.contains("redis") {
        filter = filter.add_directive("redis=error".parse().expect("a valid directive"));
    }
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
