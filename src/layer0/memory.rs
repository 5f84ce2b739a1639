//! Layer0 over grains held in this process, read from grains files: what
//! `kitbash calibrate` replays. It answers exactly as the daemon's layer0
//! over Redis does, through the same match keys.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::aliases::Aliases;
use crate::layer0::grains::{GrainMatch, agreed};
use crate::layer0::grains_file;
use crate::layer0::matching::{normalize, second_stage_keys};

/// Grains by the match key of their question.
#[derive(Debug, Default)]
pub struct MemoryGrains {
    by_key: HashMap<String, GrainMatch>,
}

impl MemoryGrains {
    /// Reads grains files as `kitbash grains load` does; a later grain with
    /// the same match key wins, as in Redis. Bad entries are skipped and
    /// logged; an unreadable file is an error.
    pub fn read(files: &[PathBuf]) -> Result<Self, String> {
        let mut out = Self::default();
        for file in files {
            let parsed = grains_file::read(file).map_err(|e| e.to_string())?;
            for e in &parsed.errors {
                tracing::warn!(file = %file.display(), "skipping a bad grain: {e}");
            }
            for g in parsed.grains {
                out.insert(GrainMatch::of(&g.grain));
            }
        }
        Ok(out)
    }

    /// Adds one grain.
    pub fn insert(&mut self, grain: GrainMatch) {
        let key = normalize(&grain.question);
        if !key.is_empty() {
            self.by_key.insert(key.into_string(), grain);
        }
    }

    /// Adds a grain unless one holds its match key already (a
    /// crystallised grain never replaces a loaded one); returns whether
    /// it was added.
    pub fn insert_if_absent(&mut self, grain: GrainMatch) -> bool {
        let key = normalize(&grain.question);
        if key.is_empty() || self.by_key.contains_key(key.as_str()) {
            return false;
        }
        self.by_key.insert(key.into_string(), grain);
        true
    }

    /// Grains held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The grain layer0 would answer `text` with, by the same two stages
    /// as [`crate::Blackboard::lookup_grain_with`].
    pub fn lookup(&self, text: &str, aliases: &Aliases) -> Option<GrainMatch> {
        let exact = normalize(text);
        if exact.is_empty() {
            return None;
        }
        if let Some(m) = self.by_key.get(exact.as_str()) {
            return Some(m.clone());
        }
        let found = second_stage_keys(text, &exact, aliases)
            .iter()
            .filter_map(|k| self.by_key.get(k.as_str()).cloned())
            .collect();
        agreed(found)
    }
}
