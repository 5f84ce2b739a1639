//! Labelled question sets: what `kitbash calibrate` and the evaluation
//! test replay.
//!
//! One JSON object a line (`#` lines and blank lines skipped):
//!
//! ```text
//! {"id":"q00001","split":"tune","kind":"grain_exact","query":"What is the capital of Kenya?","expect":["grain:capital-ke","countries#ke-capital"]}
//! ```
//!
//! `expect` lists every answer source that is right (`grain:<fact id>` for
//! layer0, `<cartridge>#<fact id>` for layer2, whatever a worker puts in its
//! reply's `source` otherwise); an empty list means the right behaviour is
//! to refuse. `split` is `tune` or `heldout`; `kind` is free text, used to
//! break the figures down.

use std::path::Path;

use serde::Deserialize;

/// One labelled question.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Label {
    /// Its id (for reports).
    pub id: String,
    /// `tune` or `heldout`.
    pub split: String,
    /// The taxonomy kind (`grain_exact`, `near_modifier`, …).
    pub kind: String,
    /// The question.
    pub query: String,
    /// The sources that answer it rightly; empty: it must be refused.
    pub expect: Vec<String>,
}

impl Label {
    /// Whether some fact answers it.
    pub fn answerable(&self) -> bool {
        !self.expect.is_empty()
    }

    /// Whether an answer from `source` is right.
    pub fn is_right(&self, source: &str) -> bool {
        self.expect.iter().any(|e| e == source)
    }
}

/// Reads a labels file. Every bad line is an error naming it: a labelled
/// set with holes would give figures nobody can compare.
pub fn read(path: &Path) -> Result<Vec<Label>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read labels file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let label: Label = serde_json::from_str(line).map_err(|e| {
            format!(
                "{}:{}: not a label ({e}); expected {{\"id\",\"split\",\"kind\",\"query\",\"expect\":[…]}}",
                path.display(),
                i + 1
            )
        })?;
        if label.split != "tune" && label.split != "heldout" {
            return Err(format!(
                "{}:{}: split {:?} is neither \"tune\" nor \"heldout\"",
                path.display(),
                i + 1,
                label.split
            ));
        }
        out.push(label);
    }
    if out.is_empty() {
        return Err(format!("labels file {} holds no label", path.display()));
    }
    Ok(out)
}
