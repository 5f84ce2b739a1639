//! The cartridge backend (layer2): ranked retrieval over curated fact
//! collections.
//!
//! A *cartridge* is a JSONL file, one fact a line:
//! `{"id": "jp-capital", "text": "The capital of Japan is Tokyo.", "source": "…"}`
//! (`id` a string or an integer, unique within the file; `text` non-empty;
//! `source` optional, kept as the fact's citation; other fields ignored;
//! blank lines and lines starting with `#` skipped). The cartridge is named
//! after the file's stem, and answers carry `source` = `<cartridge>#<id>`.
//! A configured directory loads every `*.jsonl` file directly in it (not in
//! its subdirectories).
//!
//! Bad lines (invalid JSON or UTF-8, a missing or empty `id` or `text`, an
//! id already used in the same file) are logged with file and line, kept in
//! the [`LoadReport`], and skipped; the rest loads. A path that cannot be
//! read, or two cartridges with one name, fail the load.
//!
//! All facts go into one in-RAM tantivy index (BM25, English stemming and
//! stop words); [`FactIndex::search`] explains the confidence.
//!
//! **Reloading** builds a complete new index off to the side and swaps it in
//! atomically (`arc-swap`); each query holds the `Arc` it starts with, so
//! queries in progress finish on the old index and none waits for the
//! build. A failed reload (unreadable file, duplicate cartridge name, or no
//! fact at all where there were some) keeps the old index and says why.
//! Reloads happen on [`Backend::reload`] (the worker calls it on SIGHUP) and
//! when the files change: a task polls their modification times and
//! lengths every 2 s ([`CartridgeOptions::poll_interval`]) and reloads once
//! a change has stayed still for a moment. The task starts in
//! [`CartridgeBackend::open`] when a tokio runtime is running, otherwise at
//! the first [`Backend::check`] or answer; it ends when the backend is
//! dropped.

mod index;
mod load;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant as StdInstant};

use arc_swap::ArcSwap;

use tokio::time::Instant;

use super::backend::{Backend, BackendAnswer, BackendError};
use crate::aliases::Aliases;

pub use index::{FactIndex, Hit};
pub use load::{FileReport, LineIssue, LoadReport};

/// Why cartridges could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CartridgeError {
    /// A configured path, or a file in it, cannot be read.
    #[error(
        "cannot read cartridge path {}: {source}; check workers.cartridge.paths or --cartridges",
        path.display()
    )]
    Read {
        /// The path.
        path: PathBuf,
        /// The error reading it.
        source: std::io::Error,
    },
    /// Two files have the same stem, so their facts' sources would clash.
    #[error(
        "two cartridges are named {name:?}: {} and {}; rename one of them",
        first.display(),
        second.display()
    )]
    DuplicateName {
        /// The cartridge name (file stem).
        name: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// A reload found no fact while facts are loaded (an emptied or
    /// half-written file, most likely); the loaded ones are kept.
    #[error(
        "the reload found no facts in {paths}; keeping the {kept} facts loaded before (restart the worker to start empty)"
    )]
    EmptyReload {
        /// The configured paths.
        paths: String,
        /// Facts kept.
        kept: usize,
    },
    /// The index could not be built or searched.
    #[error("cartridge index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The reload task failed to run.
    #[error("cartridge reload task: {0}")]
    Task(String),
}

/// Choices for [`CartridgeBackend::open_with`].
#[derive(Debug, Clone)]
pub struct CartridgeOptions {
    /// How often the cartridge files' modification times are polled;
    /// `None` turns the polling off (reload with [`Backend::reload`] only).
    /// Default 2 s.
    pub poll_interval: Option<Duration>,
    /// Other names of entities: a question naming one by an alias is
    /// searched with the alias replaced by the name. Default: none.
    pub aliases: Arc<Aliases>,
    /// Attribute synonyms, replaced after the aliases ("how many people"
    /// read as "population"). Default: none.
    pub synonyms: Arc<Aliases>,
}

impl Default for CartridgeOptions {
    fn default() -> Self {
        Self {
            poll_interval: Some(Duration::from_secs(2)),
            aliases: Arc::default(),
            synonyms: Arc::default(),
        }
    }
}

/// Ranked retrieval over cartridges: the layer2 backend.
pub struct CartridgeBackend {
    inner: Arc<Inner>,
}

struct Inner {
    paths: Vec<PathBuf>,
    current: ArcSwap<FactIndex>,
    /// One reload at a time; queries never take it.
    reloading: Mutex<()>,
    /// Successful loads so far (1 after `open`).
    generation: AtomicU64,
    poll_interval: Option<Duration>,
    watching: AtomicBool,
    aliases: Arc<Aliases>,
    synonyms: Arc<Aliases>,
}

fn show_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(no path configured)".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn build(paths: &[PathBuf], aliases: &Aliases) -> Result<FactIndex, CartridgeError> {
    let t0 = StdInstant::now();
    let loaded = load::load(paths)?;
    let index = FactIndex::build(loaded, aliases)?;
    tracing::info!(
        facts = index.len(),
        files = index.report.files.len(),
        bad_lines = index.report.bad_lines,
        ms = t0.elapsed().as_millis() as u64,
        "cartridges loaded from {}",
        show_paths(paths)
    );
    Ok(index)
}

impl CartridgeBackend {
    /// Loads every cartridge under `paths` (files, or directories of
    /// `*.jsonl` files), polling them for changes every 2 s. The error
    /// names the path that cannot be read. Bad lines do not fail it: see
    /// [`CartridgeBackend::report`].
    pub fn open(paths: &[PathBuf]) -> Result<Self, String> {
        Self::open_with(paths, CartridgeOptions::default()).map_err(|e| e.to_string())
    }

    /// [`CartridgeBackend::open`] with options, and a typed error.
    pub fn open_with(paths: &[PathBuf], opts: CartridgeOptions) -> Result<Self, CartridgeError> {
        let index = build(paths, &opts.aliases)?;
        let backend = Self {
            inner: Arc::new(Inner {
                paths: paths.to_vec(),
                current: ArcSwap::from_pointee(index),
                reloading: Mutex::new(()),
                generation: AtomicU64::new(1),
                poll_interval: opts.poll_interval,
                watching: AtomicBool::new(false),
                aliases: opts.aliases,
                synonyms: opts.synonyms,
            }),
        };
        backend.ensure_watching();
        Ok(backend)
    }

    /// The index queries use now. Holding it keeps it alive across a reload.
    pub fn index(&self) -> Arc<FactIndex> {
        self.inner.current()
    }

    /// What the load behind the current index read and skipped.
    pub fn report(&self) -> LoadReport {
        self.inner.current().report.clone()
    }

    /// Facts loaded now.
    pub fn fact_count(&self) -> usize {
        self.inner.current().len()
    }

    /// Successful loads so far: 1 after `open`, +1 per reload that swapped
    /// in a new index.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

    /// The best fact for `text` in the current index, with its confidence;
    /// `None` when no fact shares a term with it. A question naming an
    /// entity by an alias is searched with the alias replaced by its name
    /// ("capital of the UK" as "capital of the United Kingdom"), then each
    /// attribute synonym by the words the facts use.
    pub fn search(&self, text: &str) -> Result<Option<Hit>, CartridgeError> {
        let original = text;
        let aliased = self.inner.aliases.rewrite(text);
        let text = aliased.as_deref().unwrap_or(text);
        let rewritten = self.inner.synonyms.rewrite(text);
        let text = rewritten.as_deref().unwrap_or(text);
        self.inner
            .current()
            .search_naming(text, original, &self.inner.aliases)
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Reloads now, on this thread (the index build takes about a second
    /// per 100,000 facts). On error the old index stays.
    pub fn reload_blocking(&self) -> Result<LoadReport, CartridgeError> {
        self.inner.reload()
    }

    /// Starts the change-polling task if it should run, is not running, and
    /// a tokio runtime is there to run it.
    fn ensure_watching(&self) {
        let Some(every) = self.inner.poll_interval else {
            return;
        };
        if self.inner.watching.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        handle.spawn(watch(Arc::downgrade(&self.inner), every));
    }
}

impl Inner {
    fn current(&self) -> Arc<FactIndex> {
        self.current.load_full()
    }

    fn reload(&self) -> Result<LoadReport, CartridgeError> {
        let _one = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = build(&self.paths, &self.aliases).and_then(|new| {
            let kept = self.current().len();
            if new.is_empty() && kept > 0 {
                return Err(CartridgeError::EmptyReload {
                    paths: show_paths(&self.paths),
                    kept,
                });
            }
            Ok(new)
        });
        match result {
            Ok(new) => {
                let report = new.report.clone();
                self.current.store(Arc::new(new));
                self.generation.fetch_add(1, Ordering::Relaxed);
                Ok(report)
            }
            Err(e) => {
                tracing::warn!("cartridge reload failed, keeping the loaded facts: {e}");
                Err(e)
            }
        }
    }
}

/// Polls the cartridge files every `every`; reloads when their stamps
/// differ from those of the loaded index and have stayed the same for a
/// short while (a file being written is not loaded half way, usually). A
/// change whose reload failed is not retried until the files change again.
async fn watch(inner: Weak<Inner>, every: Duration) {
    let settle = (every / 4).min(Duration::from_millis(250));
    let mut failed: Option<load::Fingerprint> = None;
    loop {
        tokio::time::sleep(every).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let paths = strong.paths.clone();
        let loaded = strong.current().fingerprint.clone();
        // Hold no strong reference while waiting: dropping the backend ends this task.
        drop(strong);
        let stamps =
            |paths: Vec<PathBuf>| tokio::task::spawn_blocking(move || load::fingerprint(&paths));
        let Ok(now) = stamps(paths.clone()).await else {
            continue;
        };
        if now == loaded || failed.as_ref() == Some(&now) {
            continue;
        }
        tokio::time::sleep(settle).await;
        let Ok(again) = stamps(paths).await else {
            continue;
        };
        if again != now {
            continue; // still being written; look again next time
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        tracing::info!("cartridge files changed; reloading");
        match tokio::task::spawn_blocking(move || strong.reload()).await {
            Ok(Ok(_)) => failed = None,
            Ok(Err(_)) => failed = Some(now),
            Err(e) => tracing::warn!("cartridge reload task failed: {e}"),
        }
    }
}

impl Backend for CartridgeBackend {
    /// Searches on the calling task: a search over 100,000 facts takes well
    /// under a millisecond (see `benches/cartridge.rs`), less than a hop to
    /// the blocking pool would cost.
    async fn answer(
        &self,
        text: &str,
        deadline: Instant,
    ) -> Result<Option<BackendAnswer>, BackendError> {
        self.ensure_watching();
        if Instant::now() >= deadline {
            return Err(BackendError::Deadline);
        }
        let hit = self
            .search(text)
            .map_err(|e| BackendError::Other(e.to_string()))?;
        Ok(hit.map(|h| BackendAnswer {
            source: Some(h.source()),
            text: h.text,
            confidence: h.confidence,
        }))
    }

    async fn check(&self) -> Result<(), String> {
        self.ensure_watching();
        if self.fact_count() == 0 {
            return Err(format!(
                "no facts loaded from {}; add JSONL files with one {{\"id\", \"text\"}} fact a line",
                show_paths(&self.inner.paths)
            ));
        }
        Ok(())
    }

    async fn reload(&self) -> Result<(), String> {
        self.ensure_watching();
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || inner.reload()).await {
            Ok(Ok(report)) => {
                tracing::info!("cartridges reloaded: {report}");
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(CartridgeError::Task(e.to_string()).to_string()),
        }
    }
}
