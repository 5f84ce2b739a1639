//! Grains files: the facts `kitbash grains load` reads.
//!
//! Two formats, chosen by the file's extension:
//!
//! - **JSONL** (any extension but `.yaml`/`.yml`; `.jsonl` by convention):
//!   one JSON object a line. Blank lines and lines starting with `#` are
//!   skipped.
//!
//!   ```text
//!   {"fact_id":"geo-ke-capital","question":"What is the capital of Kenya?","answer":"Nairobi","confidence":0.99,"source":"atlas"}
//!   ```
//!
//! - **YAML** (`.yaml`, `.yml`): a list of the same objects.
//!
//!   ```yaml
//!   - fact_id: geo-ke-capital
//!     question: What is the capital of Kenya?
//!     answer: Nairobi
//!   ```
//!
//! Fields: `fact_id` (or `id`; a string or an integer, no whitespace; with
//! both, `id` is the grain's key and `fact_id` the fact it was made from),
//! `question` and `answer` (non-empty strings), optional `confidence` (a
//! number in [0, 1], default 1.0) and `source`. `created_at`, `updated_at`
//! and `hits` are accepted too, so the output of `kitbash grains list
//! --json` loads back; any other field is an error (a misspelt
//! `confidance` must not silently become 1.0).
//!
//! Parsing never stops at a bad entry: [`ParsedGrains`] holds the good
//! grains and one [`EntryError`] per bad entry, naming its line (for YAML,
//! its item number and, when it can be found, its line) and what is wrong.
//! Besides malformed entries, an entry is refused when its fact id repeats
//! an earlier one in the file, or when its question has the same match key
//! ([`crate::layer0::matching::normalize`]) as an earlier question, since layer0
//! could answer only one of the two.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::layer0::grains::Grain;
use crate::layer0::matching::normalize;

/// A grains file that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum GrainsFileError {
    /// The file cannot be opened or is not UTF-8 text.
    #[error(
        "cannot read grains file {path}: {source}; check the path and that it is a UTF-8 text file"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// The two formats of a grains file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line.
    Jsonl,
    /// A YAML list of objects.
    Yaml,
}

impl Format {
    /// The format of `path`, by its extension: YAML for `.yaml`/`.yml`
    /// (any case), JSONL otherwise.
    pub fn of(path: &Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Jsonl,
        }
    }
}

/// Where an entry is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// 1-based line (of a JSONL entry, or where a YAML item starts when it
    /// can be found).
    pub line: Option<usize>,
    /// 1-based item number in a YAML list.
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.item, self.line) {
            (Some(item), Some(line)) => write!(f, "item {item} (line {line})"),
            (Some(item), None) => write!(f, "item {item}"),
            (None, Some(line)) => write!(f, "line {line}"),
            (None, None) => f.write_str("file"),
        }
    }
}

/// One bad entry of a grains file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// Where it is.
    pub location: Location,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

/// One good grain and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedGrain {
    /// Where it is in the file.
    pub location: Location,
    /// The grain.
    pub grain: Grain,
}

/// What a grains file holds: the good grains and the bad entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedGrains {
    /// Good grains, in file order.
    pub grains: Vec<ParsedGrain>,
    /// Bad entries, in file order.
    pub errors: Vec<EntryError>,
    /// Entries that repeat an earlier one (same question once normalised,
    /// same answer): the same fact said twice, loaded once.
    pub repeated: usize,
}

/// Reads and parses a grains file in the format its extension names.
pub fn read(path: &Path) -> Result<ParsedGrains, GrainsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| GrainsFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse(&text, Format::of(path)))
}

/// Parses grains from `text` in `format`.
pub fn parse(text: &str, format: Format) -> ParsedGrains {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let entries = match format {
        Format::Jsonl => jsonl_entries(text),
        Format::Yaml => yaml_entries(text),
    };
    check(entries)
}

/// The fields a grain entry may have.
const FIELDS: &str = "fact_id (or id), question, answer, confidence, source, created_at, updated_at, hits, from_fact";

type RawEntry = (Location, Result<Value, String>);

fn jsonl_entries(text: &str) -> Vec<RawEntry> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let location = Location {
            line: Some(i + 1),
            item: None,
        };
        const ARRAY_HINT: &str =
            "this looks like a JSON array: write one object a line (JSONL), or use a .yaml file";
        let value = match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Array(_)) => Err(format!("expected an object, found an array; {ARRAY_HINT}")),
            Ok(v) => Ok(v),
            Err(e) if trimmed.starts_with('[') => Err(format!("bad JSON: {e}; {ARRAY_HINT}")),
            Err(e) => Err(format!("bad JSON: {e}")),
        };
        out.push((location, value));
    }
    out
}

fn yaml_entries(text: &str) -> Vec<RawEntry> {
    let doc: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            let location = Location {
                line: e.location().map(|l| l.line()),
                item: None,
            };
            return vec![(location, Err(format!("the YAML does not parse: {e}")))];
        }
    };
    let items = match doc {
        serde_yaml::Value::Null => return Vec::new(),
        serde_yaml::Value::Sequence(items) => items,
        other => {
            let found = yaml_kind(&other);
            return vec![(
                Location::default(),
                Err(format!(
                    "expected a list of grains at the top level (`- fact_id: …`), found {found}"
                )),
            )];
        }
    };
    let lines = yaml_item_lines(text, items.len());
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let location = Location {
                line: lines.as_ref().map(|l| l[i]),
                item: Some(i + 1),
            };
            let value =
                serde_json::to_value(&item).map_err(|e| format!("cannot be read as a grain: {e}"));
            (location, value)
        })
        .collect()
}

fn yaml_kind(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// Lines where the items of a top-level block list start (`- ` at column
/// 0). serde_yaml does not report where values are, so this reads the text;
/// when the count disagrees (a flow list, odd layout) lines are not given.
fn yaml_item_lines(text: &str, items: usize) -> Option<Vec<usize>> {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "-" || l.starts_with("- ") || l.starts_with("-\t"))
        .map(|(i, _)| i + 1)
        .collect();
    (lines.len() == items).then_some(lines)
}

/// Turns raw entries into grains, refusing bad and duplicate ones.
fn check(entries: Vec<RawEntry>) -> ParsedGrains {
    let mut out = ParsedGrains::default();
    let mut ids: HashMap<String, Location> = HashMap::new();
    let mut keys: HashMap<String, (Location, String, String)> = HashMap::new();
    for (location, value) in entries {
        let result = value.and_then(grain_from_value).and_then(|grain| {
            let key = normalize(&grain.question);
            if key.is_empty() {
                return Err(format!(
                    "question {:?} has no content word to match on (only words such as what, is, the); layer0 could never find it",
                    grain.question
                ));
            }
            if let Some((_, _, answer)) = keys.get(key.as_str())
                && *answer == grain.answer
            {
                // The same fact said twice: one grain, kept once.
                return Ok(None);
            }
            if let Some(first) = ids.get(&grain.fact_id) {
                return Err(format!(
                    "duplicate fact_id {:?} (first at {first}); give each fact its own id",
                    grain.fact_id
                ));
            }
            if let Some((first, id, _)) = keys.get(key.as_str()) {
                return Err(format!(
                    "question {:?} is the same as the question of {id:?} at {first} once normalised (match key {:?}); layer0 can answer only one of them: merge them or reword one",
                    grain.question,
                    key.as_str()
                ));
            }
            ids.insert(grain.fact_id.clone(), location);
            keys.insert(
                key.into_string(),
                (location, grain.fact_id.clone(), grain.answer.clone()),
            );
            Ok(Some(grain))
        });
        match result {
            Ok(Some(grain)) => out.grains.push(ParsedGrain { location, grain }),
            Ok(None) => out.repeated += 1,
            Err(reason) => out.errors.push(EntryError { location, reason }),
        }
    }
    out
}

/// One grain from one JSON object, or what is wrong with it.
fn grain_from_value(value: Value) -> Result<Grain, String> {
    let Value::Object(mut obj) = value else {
        return Err(format!(
            "expected an object with the fields {FIELDS}, found {}",
            json_kind(&value)
        ));
    };
    if let Some(field) = obj.keys().find(|k| !is_known_field(k)) {
        return Err(format!("unknown field `{field}`; the fields are {FIELDS}"));
    }
    let (fact_id, from_fact) = fact_id(&mut obj)?;
    // `grains list --json` writes the provenance back as `from_fact`.
    let from_fact = match (from_fact, optional_string(&mut obj, "from_fact")?) {
        (Some(f), _) | (None, Some(f)) if !f.trim().is_empty() => Some(f),
        _ => None,
    };
    let question = text_field(&mut obj, "question")?;
    let answer = text_field(&mut obj, "answer")?;
    let confidence = match obj.remove("confidence") {
        None | Some(Value::Null) => 1.0,
        Some(Value::Number(n)) => {
            let c = n.as_f64().unwrap_or(f64::NAN);
            if !(0.0..=1.0).contains(&c) {
                return Err(format!("confidence {n} is outside [0, 1]"));
            }
            c
        }
        Some(other) => {
            return Err(format!(
                "confidence must be a number in [0, 1], found {}",
                json_kind(&other)
            ));
        }
    };
    let source = optional_string(&mut obj, "source")?.filter(|s| !s.trim().is_empty());
    let created_at = optional_string(&mut obj, "created_at")?;
    let hits = match obj.remove("hits") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("hits {n} is not a count (a whole number ≥ 0)"))?,
        Some(other) => {
            return Err(format!(
                "hits must be a whole number ≥ 0, found {}",
                json_kind(&other)
            ));
        }
    };
    Ok(Grain {
        fact_id,
        question,
        answer,
        confidence,
        source,
        created_at,
        updated_at: None,
        hits,
        from_fact,
        crystallized: None,
    })
}

fn is_known_field(field: &str) -> bool {
    matches!(
        field,
        "fact_id"
            | "id"
            | "question"
            | "answer"
            | "confidence"
            | "source"
            | "created_at"
            | "updated_at"
            | "hits"
            | "from_fact"
    )
}

/// The grain's key and the fact it was made from: with both `id` and
/// `fact_id`, `id` is the key and `fact_id` provenance; `fact_id` alone is
/// the key, as in the Python original.
fn fact_id(obj: &mut Map<String, Value>) -> Result<(String, Option<String>), String> {
    let id_of = |field: &str, v: Value| {
        id_text(&v).ok_or_else(|| format!("{field} must be a string, found {}", json_kind(&v)))
    };
    let fact_id = obj
        .remove("fact_id")
        .map(|v| id_of("fact_id", v))
        .transpose()?;
    let id = obj.remove("id").map(|v| id_of("id", v)).transpose()?;
    let (fact_id, from_fact) = match (fact_id, id) {
        (Some(fact), Some(id)) if fact != id => (id, Some(fact)),
        (Some(a), _) | (None, Some(a)) => (a, None),
        (None, None) => return Err("missing field fact_id (or id)".into()),
    };
    if fact_id.is_empty() {
        return Err("fact_id is empty".into());
    }
    if fact_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "fact_id {fact_id:?} contains whitespace; use letters, digits and - _ . :"
        ));
    }
    if fact_id.starts_with("index:") {
        return Err(format!(
            "fact_id {fact_id:?} starts with \"index:\", which is reserved for the grain indexes; choose another id"
        ));
    }
    Ok((fact_id, from_fact))
}

/// The text of an id in a data file (a grain's `fact_id`, a cartridge
/// fact's `id`): a string as it is, an integer as its decimal digits;
/// anything else is no id.
pub(crate) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

fn text_field(obj: &mut Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.remove(field) {
        None | Some(Value::Null) => Err(format!("missing field {field}")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!("{field} is empty")),
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(other) => Err(format!(
            "{field} must be a string, found {}",
            json_kind(&other)
        )),
    }
}

fn optional_string(obj: &mut Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!(
            "{field} must be a string, found {}",
            json_kind(&other)
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_reports_bad_lines_and_keeps_good_ones() {
        let text = concat!(
            "{\"fact_id\":\"a\",\"question\":\"What is the capital of Kenya?\",\"answer\":\"Nairobi\"}\n",
            "\n",
            "{not json\n",
            "# a comment\n",
            "{\"id\":7,\"question\":\"What is the capital of Peru?\",\"answer\":\"Lima\",\"confidence\":0.5,\"source\":\"atlas\"}\n",
            "{\"fact_id\":\"c\",\"question\":\"q\",\"answer\":\"x\",\"confidence\":1.5}\n",
            "{\"fact_id\":\"a\",\"question\":\"What is the capital of Chad?\",\"answer\":\"N'Djamena\"}\n",
            "{\"fact_id\":\"d\",\"question\":\"Kenya's capital?\",\"answer\":\"Mombasa\"}\n",
            "{\"fact_id\":\"e\",\"answer\":\"x\"}\n",
            "{\"fact_id\":\"f\",\"question\":\"  \",\"answer\":\"x\"}\n",
            "{\"fact_id\":\"g\",\"question\":\"Why?\",\"answer\":\"x\",\"confidance\":0.2}\n",
            "[1,2]\n",
            "{\"fact_id\":\"h\",\"question\":\"What is the?\",\"answer\":\"x\"}\n",
            // The same fact said again (same match key, same answer): loaded once.
            "{\"fact_id\":\"a2\",\"question\":\"capital of Kenya\",\"answer\":\"Nairobi\"}\n",
        );
        let parsed = parse(text, Format::Jsonl);
        let ids: Vec<_> = parsed
            .grains
            .iter()
            .map(|g| (g.location.line.unwrap(), g.grain.fact_id.as_str()))
            .collect();
        assert_eq!(ids, vec![(1, "a"), (5, "7")]);
        assert_eq!(parsed.grains[1].grain.confidence, 0.5);
        assert_eq!(parsed.grains[1].grain.source.as_deref(), Some("atlas"));
        let errors: Vec<_> = parsed
            .errors
            .iter()
            .map(|e| (e.location.line.unwrap(), e.reason.clone()))
            .collect();
        let lines: Vec<_> = errors.iter().map(|e| e.0).collect();
        assert_eq!(lines, vec![3, 6, 7, 8, 9, 10, 11, 12, 13]);
        let reason = |line: usize| &errors.iter().find(|e| e.0 == line).unwrap().1;
        assert!(reason(3).starts_with("bad JSON"), "{}", reason(3));
        assert!(reason(6).contains("outside [0, 1]"), "{}", reason(6));
        assert!(reason(7).contains("duplicate fact_id \"a\" (first at line 1)"));
        assert!(reason(8).contains("match key \"capital kenya\""));
        assert!(reason(9).contains("missing field question"));
        assert!(reason(10).contains("question is empty"));
        assert!(reason(11).contains("unknown field `confidance`"));
        assert!(reason(12).contains("JSON array"));
        assert!(reason(13).contains("no content word"));
        assert_eq!(parsed.repeated, 1);
    }

    #[test]
    fn id_is_the_key_and_fact_id_its_provenance() {
        let text = concat!(
            "{\"id\":\"g-ke\",\"fact_id\":\"geo-00012\",\"question\":\"What is the capital of Kenya?\",\"answer\":\"Nairobi\"}\n",
            "{\"fact_id\":\"geo-00013\",\"question\":\"What is the capital of Peru?\",\"answer\":\"Lima\"}\n",
            "{\"id\":\"same\",\"fact_id\":\"same\",\"question\":\"What is the capital of Chad?\",\"answer\":\"N'Djamena\"}\n",
        );
        let parsed = parse(text, Format::Jsonl);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let got: Vec<(&str, Option<&str>)> = parsed
            .grains
            .iter()
            .map(|g| (g.grain.fact_id.as_str(), g.grain.from_fact.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("g-ke", Some("geo-00012")),
                ("geo-00013", None),
                ("same", None)
            ]
        );
    }

    #[test]
    fn yaml_items_carry_their_index_and_line() {
        let text = "\
# grains
- fact_id: a
  question: What is the capital of Kenya?
  answer: Nairobi
- fact_id: b
  question: What is the capital of Peru?
- id: c
  question: What is the capital of Chad?
  answer: N'Djamena
  confidence: 0.8
";
        let parsed = parse(text, Format::Yaml);
        assert_eq!(parsed.grains.len(), 2);
        assert_eq!(parsed.grains[1].grain.fact_id, "c");
        assert_eq!(parsed.grains[1].grain.confidence, 0.8);
        assert_eq!(
            parsed.grains[1].location,
            Location {
                line: Some(7),
                item: Some(3)
            }
        );
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(
            parsed.errors[0].to_string(),
            "item 2 (line 5): missing field answer"
        );
    }

    #[test]
    fn yaml_that_does_not_parse_or_is_not_a_list() {
        let parsed = parse("- fact_id: a\n  question: [unclosed\n", Format::Yaml);
        assert!(parsed.grains.is_empty());
        assert!(parsed.errors[0].reason.contains("does not parse"));
        assert!(parsed.errors[0].location.line.is_some());
        let parsed = parse("fact_id: a\n", Format::Yaml);
        assert!(parsed.errors[0].reason.contains("found a mapping"));
        assert_eq!(parse("", Format::Yaml), ParsedGrains::default());
    }

    #[test]
    fn format_by_extension() {
        assert_eq!(Format::of(Path::new("g.yaml")), Format::Yaml);
        assert_eq!(Format::of(Path::new("g.YML")), Format::Yaml);
        assert_eq!(Format::of(Path::new("g.jsonl")), Format::Jsonl);
        assert_eq!(Format::of(Path::new("g")), Format::Jsonl);
    }
}
