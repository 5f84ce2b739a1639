//! `kitbash worker <kind>`: a worker process for one layer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::aliases::Aliases;
use crate::config::{Settings, WorkerKind};
use crate::worker::bitnet::BitnetBackend;
use crate::worker::cartridge::{CartridgeBackend, CartridgeOptions};
use crate::worker::echo::EchoBackend;
use crate::worker::llm::LlmBackend;
use crate::worker::{Backend, Worker, WorkerError, WorkerOptions};

/// The worker kinds, as the command line names them.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// layer1: a llama.cpp-style server (bitnet.cpp's llama-server).
    Bitnet,
    /// layer2: ranked retrieval over cartridges (JSONL fact files).
    Cartridge,
    /// layer4: KoboldCpp or an OpenAI-compatible server.
    Llm,
    /// Answers every job at once with its text (tests, benchmarks).
    Echo,
}

impl From<KindArg> for WorkerKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Bitnet => WorkerKind::Bitnet,
            KindArg::Cartridge => WorkerKind::Cartridge,
            KindArg::Llm => WorkerKind::Llm,
            KindArg::Echo => WorkerKind::Echo,
        }
    }
}

/// Arguments of `kitbash worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Which kind of worker.
    #[arg(value_enum)]
    pub kind: KindArg,
    /// Worker name (its health key); default `<kind>-<host>-<random>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Layer to serve; default the first layer whose `worker` is this kind.
    #[arg(long)]
    pub layer: Option<String>,
    /// Jobs worked on at once (default: `workers.<kind>.concurrency`).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Cartridge files or directories (overrides workers.cartridge.paths).
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub cartridges: Vec<PathBuf>,
}

/// Runs a worker until SIGTERM or SIGINT; SIGHUP reloads its backend.
pub fn run(file: Option<PathBuf>, args: WorkerArgs) -> ExitCode {
    let settings = match super::common::settings(file) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kitbash: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let kind = WorkerKind::from(args.kind);
    let w = &settings.workers;
    let concurrency = args.concurrency.unwrap_or(match kind {
        WorkerKind::Bitnet => w.bitnet.concurrency,
        WorkerKind::Cartridge => w.cartridge.concurrency,
        WorkerKind::Llm => w.llm.concurrency,
        WorkerKind::Echo => 16,
    });
    let opts = WorkerOptions {
        kind,
        name: args.name,
        layer: args.layer,
        concurrency,
    };
    let result = runtime.block_on(async {
        let backend_err = |reason: String| WorkerError::Backend { kind, reason };
        match kind {
            WorkerKind::Echo => {
                serve(
                    settings.clone(),
                    EchoBackend::new(w.echo_confidence)
                        .with_delay(Duration::from_millis(w.echo_delay_ms)),
                    opts,
                )
                .await
            }
            WorkerKind::Cartridge => {
                let paths = if args.cartridges.is_empty() {
                    w.cartridge.paths.clone()
                } else {
                    args.cartridges
                };
                let cartridge_opts = CartridgeOptions {
                    aliases: Arc::new(Aliases::load_logged(&settings.knowledge.aliases)),
                    synonyms: Arc::new(Aliases::load_logged(&settings.knowledge.synonyms)),
                    ..CartridgeOptions::default()
                };
                let backend = CartridgeBackend::open_with(&paths, cartridge_opts)
                    .map_err(|e| backend_err(e.to_string()))?;
                serve(settings.clone(), backend, opts).await
            }
            WorkerKind::Bitnet => {
                let backend = BitnetBackend::new(&w.bitnet).map_err(backend_err)?;
                serve(settings.clone(), backend, opts).await
            }
            WorkerKind::Llm => {
                let backend = LlmBackend::new(&w.llm).map_err(backend_err)?;
                serve(settings.clone(), backend, opts).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kitbash worker: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve<B: Backend>(
    settings: Settings,
    backend: B,
    opts: WorkerOptions,
) -> Result<(), WorkerError> {
    let worker = Worker::new(settings, backend, opts)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(super::signals::cancel_on_signal(shutdown.clone()));
    #[cfg(unix)]
    {
        let backend = worker.backend();
        let name = worker.name().to_string();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!(worker = %name, "SIGHUP: reloading");
                match backend.reload().await {
                    Ok(()) => tracing::info!(worker = %name, "reloaded"),
                    Err(e) => {
                        tracing::error!(worker = %name, "reload failed, keeping what was loaded: {e}")
                    }
                }
            }
        });
    }
    worker.run(shutdown).await
}
