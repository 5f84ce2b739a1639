//! `kitbash serve`: the orchestrator daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;

/// Arguments of `kitbash serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This daemon's instance id (overrides orchestrator.instance_id).
    #[arg(long)]
    pub instance_id: Option<String>,
}

/// Runs the daemon until SIGTERM or SIGINT; exits 0 after a clean stop.
pub fn run(file: Option<PathBuf>, args: ServeArgs) -> ExitCode {
    let mut loaded = match crate::config::load(file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kitbash: {e}");
            return ExitCode::from(2);
        }
    };
    crate::observe::telemetry::init(&loaded.settings.logging);
    if let Some(id) = args.instance_id {
        loaded.settings.orchestrator.instance_id = Some(id);
    }
    let threads = loaded.settings.orchestrator.worker_threads;
    let built = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kitbash: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(super::signals::cancel_on_signal(shutdown.clone()));
        match Daemon::new(loaded.settings).run(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("kitbash serve: {e}");
                ExitCode::from(1)
            }
        }
    })
}
