//! Other names of the entities the knowledge is about: ISO codes, element
//! symbols, short names. Layer0 and the cartridge layer read a question
//! with each alias replaced by the name it stands for, so "What is the
//! capital of the USA?" is asked as "What is the capital of the United
//! States?".
//!
//! An aliases file is JSONL, one `{"alias": "USA", "name": "United States"}`
//! a line (`#` lines and blank lines skipped; an optional `source` is kept
//! for humans and ignored). An optional `class` (`"country"`) says what kind
//! of entity the name is: the cartridge layer then knows that a fact naming
//! Kenya names a country, and can answer "Which country …?" with it (see
//! [`Aliases::mentions`]). The demo's, `config/aliases.jsonl`, is derived
//! from the demo knowledge by `config/generate/generate_aliases.py`.
//!
//! How an alias is recognised in a question:
//!
//! - A **code** (an alias of at most three letters with a capital in it:
//!   `KEN`, `US`, `Na`) matches only a whole word written exactly so: "US"
//!   but not "us", "Na" but not "NA" or "na". A code written with one
//!   capital and small letters (`Na`, `In`, `He`) does not match as the
//!   first word of a sentence, where any word is capitalised ("In which
//!   country …"). A one-letter code (`C`, `I`) never matches: it is too
//!   often a letter, a pronoun or a vitamin. No code matches in a question
//!   written all in capitals, nor one right after `[` (the noble-gas core
//!   of an electron configuration, `[Ar] 3d5`).
//! - A **name** (anything longer: `Great Britain`, `Britain`) matches a run
//!   of whole words in any case.
//!
//! Longer matches win over shorter overlapping ones. An alias given two
//! different names is ambiguous and dropped, with a warning.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What an aliases file line holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    alias: String,
    name: String,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
}

/// The aliases in force, ready to rewrite questions.
#[derive(Debug, Default, Clone)]
pub struct Aliases {
    /// Code (exact spelling) → name.
    codes: HashMap<String, String>,
    /// Lower-cased words joined by one space → name.
    names: HashMap<String, String>,
    /// Most words in a name alias.
    longest: usize,
    /// Lower-cased words of a name → (its class, the class's plural), for
    /// names whose aliases give a `class` ("kenya" → country).
    classes: HashMap<String, usize>,
    /// The classes, in order of first appearance: (singular, plural).
    class_names: Vec<(String, String)>,
    /// Most words in a classed name.
    longest_class: usize,
}

/// An entity of a known class named in a text: the class's index and the
/// name (lower-cased words).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mention {
    /// Index into [`Aliases::class_of_word`]'s classes.
    pub class: usize,
    /// The name, lower-cased, words joined by one space.
    pub name: String,
}

/// What reading aliases found wrong, line by line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AliasReport {
    /// Aliases in force.
    pub aliases: usize,
    /// `file:line: reason` of each line skipped.
    pub problems: Vec<String>,
}

/// Whether `alias` is a code (see the module documentation).
fn is_code(alias: &str) -> bool {
    let n = alias.chars().count();
    (1..=3).contains(&n)
        && alias.chars().all(|c| c.is_ascii_alphabetic())
        && alias.chars().any(|c| c.is_ascii_uppercase())
}

/// A whole word of a question: its byte span and text.
struct Word<'a> {
    start: usize,
    end: usize,
    text: &'a str,
    /// First word of the text or of a sentence in it.
    sentence_start: bool,
    /// Written right after `[`, as the noble-gas core of an electron
    /// configuration (`[Ar] 3d5 4s1`): a notation, not a name.
    bracketed: bool,
}

/// The byte spans of the words of `text`: its maximal runs of letters and
/// digits. What the aliases, the cartridge index's code marking and its
/// fact subjects all call a word.
pub(crate) fn word_spans(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = None;
    text.char_indices()
        .chain(std::iter::once((text.len(), ' ')))
        .filter_map(move |(i, c)| {
            if c.is_alphanumeric() {
                start.get_or_insert(i);
                None
            } else {
                start.take().map(|s| (s, i))
            }
        })
}

fn words(text: &str) -> Vec<Word<'_>> {
    let mut out = Vec::new();
    let mut gap_from = 0;
    for (start, end) in word_spans(text) {
        let gap = &text[gap_from..start];
        out.push(Word {
            start,
            end,
            text: &text[start..end],
            sentence_start: out.is_empty() || gap.contains(['.', '?', '!', ';', ':']),
            bracketed: gap.ends_with('['),
        });
        gap_from = end;
    }
    out
}

impl Aliases {
    /// Reads aliases files. A missing or unreadable file is reported (and
    /// skipped), as is each bad line; the rest is used.
    pub fn read(paths: &[PathBuf]) -> (Self, AliasReport) {
        let mut pairs: Vec<(String, String, Option<String>)> = Vec::new();
        let mut report = AliasReport::default();
        for path in paths {
            match std::fs::read_to_string(path) {
                Ok(text) => parse_into(path, &text, &mut pairs, &mut report),
                Err(e) => report.problems.push(format!(
                    "{}: cannot read the aliases file: {e}",
                    path.display()
                )),
            }
        }
        let aliases = Self::from_pairs(pairs, &mut report);
        report.aliases = aliases.len();
        (aliases, report)
    }

    /// Reads aliases files and logs what was wrong with them: what a
    /// process does at start.
    pub fn load_logged(paths: &[PathBuf]) -> Self {
        let (aliases, report) = Self::read(paths);
        for p in &report.problems {
            tracing::warn!("aliases: {p}");
        }
        if !paths.is_empty() {
            tracing::info!(aliases = report.aliases, "aliases loaded");
        }
        aliases
    }

    /// Aliases from `(alias, name, class)` triples; ambiguous ones are
    /// dropped and reported.
    pub fn from_pairs(
        pairs: Vec<(String, String, Option<String>)>,
        report: &mut AliasReport,
    ) -> Self {
        let mut codes: HashMap<String, String> = HashMap::new();
        let mut names: HashMap<String, String> = HashMap::new();
        let mut ambiguous: Vec<String> = Vec::new();
        let mut classes: HashMap<String, usize> = HashMap::new();
        let mut class_names: Vec<(String, String)> = Vec::new();
        for (alias, name, class) in pairs {
            if let Some(class) = class {
                let class = class.trim().to_lowercase();
                let i = match class_names.iter().position(|(c, _)| *c == class) {
                    Some(i) => i,
                    None => {
                        class_names.push((class.clone(), plural(&class)));
                        class_names.len() - 1
                    }
                };
                classes.insert(lower_words(&name), i);
            }
            let (map, key) = if is_code(&alias) {
                (&mut codes, alias.clone())
            } else {
                (&mut names, lower_words(&alias))
            };
            if key.is_empty() || key.eq_ignore_ascii_case(&name) {
                continue;
            }
            match map.get(&key) {
                Some(n) if *n != name => ambiguous.push(key),
                _ => {
                    map.insert(key, name);
                }
            }
        }
        for key in ambiguous {
            if codes.remove(&key).is_some() || names.remove(&key).is_some() {
                report
                    .problems
                    .push(format!("alias {key:?} names two different things; dropped"));
            }
        }
        let longest = names
            .keys()
            .map(|k| k.split(' ').count())
            .max()
            .unwrap_or(0);
        let longest_class = classes
            .keys()
            .map(|k| k.split(' ').count())
            .max()
            .unwrap_or(0);
        Self {
            codes,
            names,
            longest,
            classes,
            class_names,
            longest_class,
        }
    }

    /// The class a question word names (`country` or `countries` → the
    /// class "country"), if aliases give entities of that class.
    pub fn class_of_word(&self, word: &str) -> Option<usize> {
        let word = word.to_lowercase();
        self.class_names
            .iter()
            .position(|(singular, plural)| *singular == word || *plural == word)
    }

    /// The entities of a known class that `text` names (longest names
    /// first, each run of words counted once), sorted and unique.
    pub fn mentions(&self, text: &str) -> Vec<Mention> {
        let mut out = Vec::new();
        if self.classes.is_empty() {
            return out;
        }
        let words: Vec<String> = words(text).iter().map(|w| w.text.to_lowercase()).collect();
        let mut i = 0;
        while i < words.len() {
            let most = self.longest_class.min(words.len() - i);
            let found = (1..=most).rev().find_map(|n| {
                let key = words[i..i + n].join(" ");
                self.classes
                    .get(&key)
                    .map(|&class| (n, Mention { class, name: key }))
            });
            match found {
                Some((n, m)) => {
                    out.push(m);
                    i += n;
                }
                None => i += 1,
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Aliases in force.
    pub fn len(&self) -> usize {
        self.codes.len() + self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `text` with every alias in it replaced by its name; `None` when no
    /// alias occurs in it.
    pub fn rewrite(&self, text: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let words = words(text);
        let lower: Vec<String> = words.iter().map(|w| w.text.to_lowercase()).collect();
        let shouting = !text.chars().any(char::is_lowercase);
        let mut out = String::with_capacity(text.len() + 16);
        let mut copied = 0;
        let mut i = 0;
        let mut changed = false;
        while i < words.len() {
            // The longest name alias starting here, then a code.
            let mut found: Option<(usize, &str)> = None;
            let most = self.longest.min(words.len() - i);
            for n in (1..=most).rev() {
                let key = lower[i..i + n].join(" ");
                if let Some(name) = self.names.get(&key) {
                    found = Some((n, name));
                    break;
                }
            }
            if found.is_none() && !shouting {
                let w = &words[i];
                let mixed = w.text.chars().any(|c| c.is_ascii_lowercase());
                if w.text.chars().count() > 1
                    && !(mixed && w.sentence_start)
                    && !w.bracketed
                    && let Some(name) = self.codes.get(w.text)
                {
                    found = Some((1, name));
                }
            }
            match found {
                Some((n, name)) => {
                    out.push_str(&text[copied..words[i].start]);
                    out.push_str(name);
                    copied = words[i + n - 1].end;
                    changed = true;
                    i += n;
                }
                None => i += 1,
            }
        }
        if !changed {
            return None;
        }
        out.push_str(&text[copied..]);
        Some(out)
    }
}

/// Lower-cased words of `text` joined by one space.
fn lower_words(text: &str) -> String {
    words(text)
        .iter()
        .map(|w| w.text.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The English plural of a class word (`country` → `countries`).
fn plural(word: &str) -> String {
    if let Some(stem) = word.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    if word.ends_with(['s', 'x']) || word.ends_with("ch") || word.ends_with("sh") {
        return format!("{word}es");
    }
    format!("{word}s")
}

fn parse_into(
    path: &Path,
    text: &str,
    pairs: &mut Vec<(String, String, Option<String>)>,
    report: &mut AliasReport,
) {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let problem = match serde_json::from_str::<Line>(line) {
            Ok(l) if l.alias.trim().is_empty() || l.name.trim().is_empty() => {
                "`alias` and `name` must not be empty".to_string()
            }
            Ok(l) => {
                pairs.push((
                    l.alias.trim().to_string(),
                    l.name.trim().to_string(),
                    l.class,
                ));
                continue;
            }
            Err(e) => format!("not an alias ({e}); expected {{\"alias\": …, \"name\": …}}"),
        };
        report
            .problems
            .push(format!("{}:{}: {problem}", path.display(), i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases(pairs: &[(&str, &str)]) -> Aliases {
        let mut report = AliasReport::default();
        Aliases::from_pairs(
            pairs
                .iter()
                .map(|(a, n)| (a.to_string(), n.to_string(), None))
                .collect(),
            &mut report,
        )
    }

    #[test]
    fn codes_match_only_as_written_and_names_in_any_case() {
        let a = aliases(&[
            ("USA", "United States"),
            ("US", "United States"),
            ("MAR", "Morocco"),
            ("Na", "sodium"),
            ("In", "indium"),
            ("C", "carbon"),
            ("Great Britain", "United Kingdom"),
            ("Britain", "United Kingdom"),
        ]);
        assert_eq!(
            a.rewrite("What is the capital of the USA?").as_deref(),
            Some("What is the capital of the United States?")
        );
        assert_eq!(a.rewrite("Tell us about it"), None);
        assert_eq!(a.rewrite("What is the population of Mars?"), None);
        assert_eq!(
            a.rewrite("Which element has the symbol Na?").as_deref(),
            Some("Which element has the symbol sodium?")
        );
        assert_eq!(a.rewrite("Which element is NA?"), None);
        assert_eq!(a.rewrite("In which country is Lagos?"), None);
        assert_eq!(
            a.rewrite("What is the atomic number of In?").as_deref(),
            Some("What is the atomic number of indium?")
        );
        assert_eq!(a.rewrite("What is vitamin C?"), None);
        assert_eq!(a.rewrite("Which element is [Na] 3s1?"), None);
        assert_eq!(a.rewrite("WHAT IS THE CAPITAL OF THE USA"), None);
        assert_eq!(
            a.rewrite("what's great britain's capital?").as_deref(),
            Some("what's United Kingdom's capital?")
        );
        assert_eq!(
            a.rewrite("Is Britain bigger than the US?").as_deref(),
            Some("Is United Kingdom bigger than the United States?")
        );
    }

    #[test]
    fn classes_and_mentions() {
        let mut report = AliasReport::default();
        let a = Aliases::from_pairs(
            vec![
                ("KEN".into(), "Kenya".into(), Some("country".into())),
                (
                    "GBR".into(),
                    "United Kingdom".into(),
                    Some("country".into()),
                ),
                ("Na".into(), "sodium".into(), Some("element".into())),
            ],
            &mut report,
        );
        assert_eq!(a.class_of_word("Countries"), a.class_of_word("country"));
        assert!(a.class_of_word("country").is_some());
        assert_eq!(a.class_of_word("city"), None);
        let m = a.mentions("The United Kingdom and Kenya, not sodium or the Kingdom.");
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["kenya", "united kingdom", "sodium"]);
        assert_eq!(Some(m[2].class), a.class_of_word("element"));
        assert_eq!(plural("country"), "countries");
        assert_eq!(plural("element"), "elements");
        assert_eq!(plural("currency"), "currencies");
    }

    #[test]
    fn ambiguous_aliases_are_dropped() {
        let mut report = AliasReport::default();
        let a = Aliases::from_pairs(
            vec![
                ("GB".into(), "United Kingdom".into(), None),
                ("GB".into(), "gigabyte".into(), None),
                ("UK".into(), "United Kingdom".into(), None),
                ("UK".into(), "United Kingdom".into(), None),
            ],
            &mut report,
        );
        assert_eq!(a.len(), 1);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(a.rewrite("capital of GB").is_none());
    }

    #[test]
    fn bad_lines_are_reported_and_skipped() {
        let mut pairs: Vec<(String, String, Option<String>)> = Vec::new();
        let mut report = AliasReport::default();
        parse_into(
            Path::new("a.jsonl"),
            "# c\n{\"alias\":\"UK\",\"name\":\"United Kingdom\"}\n{\"alias\":\"\",\"name\":\"x\"}\nnot json\n{\"alias\":\"X\",\"nam\":\"y\"}\n",
            &mut pairs,
            &mut report,
        );
        assert_eq!(pairs.len(), 1);
        assert_eq!(report.problems.len(), 3, "{:?}", report.problems);
        assert!(report.problems[0].starts_with("a.jsonl:3:"));
    }
}
