//! Reading cartridge files: JSONL, one fact a line, the cartridge named
//! after the file's stem. Bad lines are reported and skipped; a path that
//! cannot be read is an error naming it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::CartridgeError;
use crate::layer0::grains_file::id_text;

/// At most this many bad lines are logged per file (all are counted); a file
/// that is not JSONL at all would otherwise flood the log.
const LOGGED_PER_FILE: usize = 20;
/// At most this many bad lines are kept in a [`LoadReport`].
const KEPT_ISSUES: usize = 1_000;

/// One fact as read from a cartridge file.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFact {
    /// Index of its cartridge in [`Loaded::cartridges`].
    pub cartridge: u32,
    /// The fact id, unique within its cartridge.
    pub id: String,
    /// The fact text: what the worker answers with.
    pub text: String,
    /// The fact's own `source` field (a citation), when it has one.
    pub source: Option<String>,
}

/// A line that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineIssue {
    /// The file.
    pub file: PathBuf,
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for LineIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// One cartridge file that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub file: PathBuf,
    /// The cartridge it holds (its file stem).
    pub cartridge: String,
    /// Facts loaded from it.
    pub facts: usize,
    /// Lines skipped as bad.
    pub bad_lines: usize,
}

/// What one load (at start or a reload) found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Every file read, in load order.
    pub files: Vec<FileReport>,
    /// Bad lines, in order (the first 1,000; `bad_lines` counts them all).
    pub issues: Vec<LineIssue>,
    /// Total bad lines.
    pub bad_lines: usize,
    /// Total facts loaded.
    pub facts: usize,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} facts from {} cartridge file(s), {} bad line(s) skipped",
            self.facts,
            self.files.len(),
            self.bad_lines
        )?;
        for i in &self.issues {
            write!(f, "\n  {i}")?;
        }
        if self.bad_lines > self.issues.len() {
            write!(f, "\n  … and {} more", self.bad_lines - self.issues.len())?;
        }
        Ok(())
    }
}

/// The modification stamps of everything a load read: each configured
/// path (a directory's own mtime changes when a file is added or removed)
/// and each cartridge file (mtime and length). Two equal fingerprints mean
/// nothing changed on disk.
pub type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// Everything read from the configured paths.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Cartridge names, indexed by [`RawFact::cartridge`].
    pub cartridges: Vec<String>,
    /// The facts, in file and line order.
    pub facts: Vec<RawFact>,
    /// What was read and skipped.
    pub report: LoadReport,
    /// Stamps taken before reading, so a change made while reading is
    /// seen as a change by the next poll.
    pub fingerprint: Fingerprint,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn is_cartridge_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
        && path.is_file()
}

/// The cartridge files under `paths`: a file is taken as named, a
/// directory gives its `*.jsonl` files (not its subdirectories), sorted.
pub fn cartridge_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CartridgeError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| CartridgeError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| CartridgeError::Read {
                path: path.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_cartridge_file(p))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    // The same file named twice (directly and through its directory) loads once.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    Ok(files)
}

/// The current stamps of `paths` and of the cartridge files under them. A
/// path that cannot be listed is stamped `None` (and will fail the reload
/// with a message naming it).
pub fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut fp: Fingerprint = paths.iter().map(|p| (p.clone(), stamp(p))).collect();
    if let Ok(files) = cartridge_files(paths) {
        fp.extend(files.into_iter().map(|f| {
            let s = stamp(&f);
            (f, s)
        }));
    }
    fp
}

/// Reads every cartridge under `paths`.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, CartridgeError> {
    let fingerprint = fingerprint(paths);
    let files = cartridge_files(paths)?;
    let mut out = Loaded {
        fingerprint,
        ..Loaded::default()
    };
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(first) = names.get(&name) {
            return Err(CartridgeError::DuplicateName {
                name,
                first: first.clone(),
                second: file,
            });
        }
        names.insert(name.clone(), file.clone());
        let bytes = std::fs::read(&file).map_err(|source| CartridgeError::Read {
            path: file.clone(),
            source,
        })?;
        let cartridge = out.cartridges.len() as u32;
        out.cartridges.push(name.clone());
        let before = (out.facts.len(), out.report.bad_lines);
        parse_file(&file, cartridge, &bytes, &mut out);
        out.report.files.push(FileReport {
            file,
            cartridge: name,
            facts: out.facts.len() - before.0,
            bad_lines: out.report.bad_lines - before.1,
        });
    }
    out.report.facts = out.facts.len();
    Ok(out)
}

fn parse_file(file: &Path, cartridge: u32, bytes: &[u8], out: &mut Loaded) {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    let mut logged = 0;
    let mut bad = |line: usize, reason: String, out: &mut Loaded| {
        if logged < LOGGED_PER_FILE {
            tracing::warn!(file = %file.display(), line, "skipping a bad cartridge line: {reason}");
        } else if logged == LOGGED_PER_FILE {
            tracing::warn!(file = %file.display(), "more bad lines in this file; see the load report");
        }
        logged += 1;
        out.report.bad_lines += 1;
        if out.report.issues.len() < KEPT_ISSUES {
            out.report.issues.push(LineIssue {
                file: file.to_path_buf(),
                line,
                reason,
            });
        }
    };
    for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = n + 1;
        let Ok(line) = std::str::from_utf8(raw) else {
            bad(line_no, "not valid UTF-8".into(), out);
            continue;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok((id, text, source)) => {
                if let Some(first) = first_line_of.get(&id) {
                    bad(
                        line_no,
                        format!("duplicate id {id:?} (first on line {first}); the first is kept"),
                        out,
                    );
                    continue;
                }
                first_line_of.insert(id.clone(), line_no);
                out.facts.push(RawFact {
                    cartridge,
                    id,
                    text,
                    source,
                });
            }
            Err(reason) => bad(line_no, reason, out),
        }
    }
}

/// `{"id": string or integer, "text": non-empty string, "source"?: string}`;
/// other fields are ignored.
fn parse_line(line: &str) -> Result<(String, String, Option<String>), String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = value
        .as_object()
        .ok_or("not a JSON object; expected {\"id\": …, \"text\": …}")?;
    let id = match obj.get("id").map(id_text) {
        Some(Some(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Some(_)) => return Err("empty \"id\"".into()),
        Some(None) => return Err("\"id\" must be a string or an integer".into()),
        None => return Err("missing \"id\"".into()),
    };
    let text = match obj.get("text") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(serde_json::Value::String(_)) => return Err(format!("empty \"text\" (id {id:?})")),
        Some(_) => return Err(format!("\"text\" must be a string (id {id:?})")),
        None => return Err(format!("missing \"text\" (id {id:?})")),
    };
    let source = match obj.get("source") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(format!("\"source\" must be a string (id {id:?})")),
    };
    Ok((id, text, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_parsed_or_explained() {
        assert_eq!(
            parse_line(r#"{"id":"a","text":" Hi ","source":"x"}"#).unwrap(),
            ("a".into(), "Hi".into(), Some("x".into()))
        );
        assert_eq!(parse_line(r#"{"id":7,"text":"t"}"#).unwrap().0, "7");
        assert!(parse_line("{").unwrap_err().starts_with("invalid JSON"));
        assert_eq!(parse_line(r#"{"text":"t"}"#).unwrap_err(), "missing \"id\"");
        assert!(
            parse_line(r#"{"id":"a","text":"  "}"#)
                .unwrap_err()
                .starts_with("empty \"text\"")
        );
        assert!(
            parse_line(r#"[1]"#)
                .unwrap_err()
                .starts_with("not a JSON object")
        );
    }
}
