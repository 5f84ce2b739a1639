//! Set-up shared by the commands: configuration, logs, runtime, connection.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Settings;
use crate::store::blackboard::Blackboard;
use crate::store::connection::{ConnectError, Connector};

/// Loads the configuration and sets up logs; prints the error and returns
/// exit code 2 when the configuration is invalid.
pub fn settings(file: Option<PathBuf>) -> Result<Settings, ExitCode> {
    match crate::config::load(file) {
        Ok(l) => {
            crate::observe::telemetry::init(&l.settings.logging);
            Ok(l.settings)
        }
        Err(e) => {
            eprintln!("kitbash: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// A multi-threaded runtime, or exit code 2.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("kitbash: cannot start the async runtime: {e}");
        ExitCode::from(2)
    })
}

/// Configuration and a runtime, the start of most commands.
pub fn setup(file: Option<PathBuf>) -> Result<(Settings, tokio::runtime::Runtime), ExitCode> {
    let settings = settings(file)?;
    Ok((settings, runtime()?))
}

/// Configuration, a runtime and a Blackboard, then `f` on them: the whole
/// of a command that only reads or writes Redis.
pub fn with_blackboard<F, Fut>(file: Option<PathBuf>, f: F) -> ExitCode
where
    F: FnOnce(Settings, Blackboard) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let (settings, rt) = match setup(file) {
        Ok(x) => x,
        Err(c) => return c,
    };
    rt.block_on(async move {
        match blackboard(&settings).await {
            Ok(bb) => f(settings, bb).await,
            Err(c) => c,
        }
    })
}

/// A Blackboard over one connection, or a message naming the address.
pub async fn blackboard(settings: &Settings) -> Result<Blackboard, ExitCode> {
    let connector = Connector::new(&settings.redis).map_err(|e| {
        eprintln!("kitbash: {e}");
        ExitCode::from(2)
    })?;
    let conn = connector.shared().await.map_err(|e| {
        match e {
            ConnectError::Unreachable { .. } => {
                eprintln!("kitbash: {e}; is redis-server running and is redis.url right?")
            }
            // A TLS rejection says what to set already.
            _ => eprintln!("kitbash: {e}"),
        }
        ExitCode::from(2)
    })?;
    Ok(Blackboard::from_settings(conn, settings))
}

/// Whether to colour stdout.
pub fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
