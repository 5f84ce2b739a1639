//! Layer0 question matching: a question's *match key*.
//!
//! Layer0 answers a query when its match key equals the match key of a
//! grain's question ([`crate::layer0::grains`] keeps a hash from match key to grain,
//! so a lookup is one HGET). The key is built so that it ignores what does
//! not change a factoid question's meaning and keeps everything that does:
//!
//! 1. Unicode NFKC, lower case, typographic apostrophes folded to `'`.
//! 2. Words are runs of letters, digits and combining marks; every other
//!    character (punctuation, spacing) separates words. `100,000` reads as
//!    `100000` and `3.14` stays one word.
//! 3. Contractions are expanded (`what's` → `what is`, `isn't` → `is not`,
//!    `won't` → `will not`), a possessive `'s` or trailing `'` is dropped
//!    (`Kenya's` → `kenya`), other apostrophes join (`d'Ivoire` → `divoire`).
//! 4. Number words up to twenty become digits (`eight` → `8`); `has` → `have`.
//! 5. Polite wrappers at the start or the end are dropped (`can you tell me`,
//!    `do you know`, `please`, `hey`, …).
//! 6. Function words that never tell two factoid questions apart are dropped:
//!    `what which is are am the an of do does` and the article `a` (only when
//!    a word follows it, so `vitamin a` keeps its `a`).
//! 7. Plurals are folded crudely (`capitals` → `capital`, `countries` →
//!    `country`, `glasses` → `glass`, `boxes` → `box`), leaving alone words
//!    that end in `ss`, `us`, `is`, `as` or `os` (`glass`, `bus`, `this`,
//!    `Lucas`, `Carlos`), short words and a few invariant ones (`series`,
//!    `species`, `news`).
//! 8. The key is the sorted, de-duplicated words joined by one space, so word
//!    order does not matter: `What is the capital of Kenya?`, `Kenya's
//!    capital?` and `capital of kenya` all have the key `capital kenya`.
//!
//! Every other word is kept, and that is the safety property: two questions
//! that differ in any content word (a noun, a name, a number, a question word
//! such as `who`, `where`, `how`, `many`, a negation, or the tense words
//! `was`, `were`, `did`, `will`) get different keys, so layer0 misses rather
//! than answers the wrong question. "What is the capital of Uganda?" never
//! finds the grain for "What is the capital of Kenya?", and "What was the
//! capital of Germany?" never finds "What is the capital of Germany?". The
//! price is recall: a paraphrase that adds or swaps a content word ("capital
//! city", "symbol for" instead of "symbol of") misses and goes on to the next
//! layer, which is the cheap failure.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The normal form of a question: its content words, sorted, unique, joined
/// by one space. Two questions match at layer0 when their keys are equal.
/// An empty key (a question of function words only) never matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MatchKey(String);

impl MatchKey {
    /// The key as stored in the index (`capital kenya`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether no content word is left; such a question cannot be matched.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The content words, in key order.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.0.split(' ').filter(|w| !w.is_empty())
    }

    /// The key as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// A key read back from Redis, where Kitbash stored it normalised.
    pub(crate) fn from_stored(key: String) -> Self {
        Self(key)
    }
}

impl fmt::Display for MatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for MatchKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The match key of `text`. Pure and cheap (a few µs for a question); see the
/// module documentation for the rules.
pub fn normalize(text: &str) -> MatchKey {
    let mut words = question_words(text);
    strip_wrappers(&mut words);
    let last = words.len().saturating_sub(1);
    let mut kept: Vec<String> = words
        .into_iter()
        .enumerate()
        .filter(|(i, w)| !is_stop_word(w, *i == last))
        .map(|(_, w)| fold_plural(&w))
        .collect();
    kept.sort_unstable();
    kept.dedup();
    MatchKey(kept.join(" "))
}

/// The words of a question as the match key reads them, in order and
/// before any is dropped: lower case, contractions expanded (`wasn't` →
/// `was not`), possessives dropped, number words as digits. The cartridge
/// layer reads a question's modifiers and asked-for class from these too.
pub(crate) fn question_words(text: &str) -> Vec<String> {
    expand(split_words(text))
}

/// Lower-cased words of `text`, apostrophes kept inside them.
fn split_words(text: &str) -> Vec<String> {
    let text: String = text.nfkc().collect::<String>().to_lowercase();
    let chars: Vec<char> = text
        .chars()
        .map(|c| match c {
            '\u{2019}' | '\u{2018}' | '\u{02BC}' | '\u{00B4}' | '`' => '\'',
            c => c,
        })
        .collect();
    let mut words = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let digit_before = i > 0 && chars[i - 1].is_ascii_digit();
        let digit_after = chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
        if c.is_alphanumeric() || is_combining_mark(c) || c == '\'' {
            word.push(c);
        } else if c == '.' && digit_before && digit_after {
            word.push(c); // 3.14
        } else if c == ',' && digit_before && digit_after {
            // 100,000 reads as 100000
        } else if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Expands contractions, drops possessives, maps number words.
fn expand(raw: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(raw.len() + 2);
    for word in raw {
        let word = word.trim_start_matches('\'');
        let (base, extra): (&str, Option<&str>) = if let Some(b) = word.strip_suffix("n't") {
            let b = match b {
                "wo" => "will",
                "ca" => "can",
                "sha" => "shall",
                "ai" => "is",
                b => b,
            };
            (b, Some("not"))
        } else if let Some(b) = word.strip_suffix("'s") {
            match b {
                "what" | "who" | "where" | "when" | "how" | "why" | "which" | "it" | "that"
                | "there" | "here" | "he" | "she" => (b, Some("is")),
                "let" => (b, Some("us")),
                b => (b, None), // possessive
            }
        } else if let Some(b) = word.strip_suffix("'re") {
            (b, Some("are"))
        } else if let Some(b) = word.strip_suffix("'ve") {
            (b, Some("have"))
        } else if let Some(b) = word.strip_suffix("'ll") {
            (b, Some("will"))
        } else if let Some(b) = word.strip_suffix("'d") {
            (b, Some("would"))
        } else if let Some(b) = word.strip_suffix("'m") {
            (b, Some("am"))
        } else {
            (word.trim_end_matches('\''), None)
        };
        let base: String = base.chars().filter(|&c| c != '\'').collect();
        if base == "cannot" {
            out.push("can".to_string());
            out.push("not".to_string());
        } else if !base.is_empty() {
            out.push(canonical(base));
        }
        if let Some(extra) = extra {
            out.push(extra.to_string());
        }
    }
    out
}

/// Number words to digits, and the few verb forms folded together.
fn canonical(word: String) -> String {
    let mapped = match word.as_str() {
        "zero" => "0",
        "one" => "1",
        "two" => "2",
        "three" => "3",
        "four" => "4",
        "five" => "5",
        "six" => "6",
        "seven" => "7",
        "eight" => "8",
        "nine" => "9",
        "ten" => "10",
        "eleven" => "11",
        "twelve" => "12",
        "thirteen" => "13",
        "fourteen" => "14",
        "fifteen" => "15",
        "sixteen" => "16",
        "seventeen" => "17",
        "eighteen" => "18",
        "nineteen" => "19",
        "twenty" => "20",
        "has" => "have",
        _ => return word,
    };
    mapped.to_string()
}

/// Polite wrappers removed from the start of a question (longest first).
/// `hi` and `ok` are not here: they are also Hawaii and Oklahoma.
const PREFIXES: &[&[&str]] = &[
    &["can", "you", "please", "tell", "me"],
    &["could", "you", "please", "tell", "me"],
    &["would", "you", "please", "tell", "me"],
    &["do", "you", "happen", "to", "know"],
    &["i", "would", "like", "to", "know"],
    &["i", "am", "wondering"],
    &["i", "want", "to", "know"],
    &["can", "you", "tell", "me"],
    &["could", "you", "tell", "me"],
    &["would", "you", "tell", "me"],
    &["will", "you", "tell", "me"],
    &["do", "you", "know"],
    &["does", "anyone", "know"],
    &["does", "anybody", "know"],
    &["i", "wonder"],
    &["please", "tell", "me"],
    &["tell", "me"],
    &["quick", "question"],
    &["please"],
    &["kindly"],
    &["hey"],
    &["hello"],
    &["okay"],
    &["so"],
    &["um"],
    &["uh"],
];

/// Polite wrappers removed from the end of a question.
const SUFFIXES: &[&[&str]] = &[
    &["do", "you", "know"],
    &["if", "you", "know"],
    &["thank", "you"],
    &["thanks"],
    &["please"],
];

fn strip_wrappers(words: &mut Vec<String>) {
    'prefix: loop {
        for p in PREFIXES {
            if words.len() > p.len() && words.iter().zip(p.iter()).all(|(w, p)| w == p) {
                words.drain(..p.len());
                continue 'prefix;
            }
        }
        break;
    }
    'suffix: loop {
        for s in SUFFIXES {
            let n = s.len();
            if words.len() > n
                && words[words.len() - n..]
                    .iter()
                    .zip(s.iter())
                    .all(|(w, s)| w == s)
            {
                words.truncate(words.len() - n);
                continue 'suffix;
            }
        }
        break;
    }
}

/// Function words that never tell two factoid questions apart. Tense
/// (`was`, `did`, `will`), negation, pronouns, prepositions other than `of`,
/// and the question words other than `what`/`which` are deliberately kept.
fn is_stop_word(word: &str, is_last: bool) -> bool {
    match word {
        "what" | "which" | "is" | "are" | "am" | "the" | "an" | "of" | "do" | "does" => true,
        // The article, not the letter: `vitamin a` keeps it.
        "a" => !is_last,
        _ => false,
    }
}

/// Words the plural rule leaves alone.
const INVARIANT: &[&str] = &[
    "series",
    "species",
    "news",
    "means",
    "physics",
    "mathematics",
    "economics",
    "politics",
    "athletics",
    "ethics",
    "always",
    "perhaps",
    "sometimes",
    "besides",
    "whereas",
    "lens",
    "yes",
];

/// Crude plural folding; never touches words with digits or short words.
fn fold_plural(word: &str) -> String {
    let n = word.len();
    if n < 4 || !word.chars().all(char::is_alphabetic) || INVARIANT.contains(&word) {
        return word.to_string();
    }
    if n > 4
        && let Some(stem) = word.strip_suffix("ies")
    {
        return format!("{stem}y"); // countries → country
    }
    if let Some(stem) = word.strip_suffix("sses") {
        return format!("{stem}ss"); // glasses → glass
    }
    for suffix in ["xes", "ches", "shes", "zzes"] {
        if let Some(stem) = word.strip_suffix(suffix) {
            return format!("{stem}{}", &suffix[..suffix.len() - 2]); // boxes → box
        }
    }
    if let Some(stem) = word.strip_suffix('s')
        && !stem.ends_with(['s', 'u', 'i', 'a', 'o'])
    {
        return stem.to_string(); // capitals → capital, states → state
    }
    word.to_string()
}

/// Attribute words and their synonyms: the synonym is read as the
/// attribute word in the second stage (see [`second_stage_keys`]).
const SYNONYMS: &[(&str, &str)] = &[("money", "currency")];

/// Attributes of the second stage: when a key holds the attribute word
/// (first), the words that add nothing to it are dropped and the words the
/// attribute is always asked with are added. "Which city is the capital of
/// Kenya?" asks what "What is the capital of Kenya?" asks; "What currency
/// is used in Kenya?" what "What is the currency of Kenya?" asks; "What is
/// the symbol for sodium?" what "What is the chemical symbol of sodium?"
/// asks. Tense, negation, numbers, question words and every other word
/// stay, so "What currency did Kenya use?" still differs.
struct Attribute {
    word: &'static str,
    /// Added with the word (the canonical phrase is "chemical symbol").
    with: &'static [&'static str],
    /// Dropped when the word is there.
    fillers: &'static [&'static str],
}

const ATTRIBUTES: &[Attribute] = &[
    Attribute {
        word: "capital",
        with: &[],
        fillers: &["city", "in"],
    },
    Attribute {
        word: "currency",
        with: &[],
        fillers: &[
            "official", "national", "use", "used", "uses", "in", "for", "they", "people", "i",
            "you", "we", "need", "bring", "pay", "with", "spend", "legal", "tender",
        ],
    },
    Attribute {
        word: "symbol",
        with: &["chemical"],
        fillers: &[
            "atomic",
            "for",
            "used",
            "in",
            "chemistry",
            "on",
            "periodic",
            "table",
        ],
    },
];

/// The key with synonyms read as their attribute word, the words that add
/// nothing to that attribute dropped and its companion words added.
fn relax(key: &MatchKey) -> MatchKey {
    let mut words: Vec<&str> = key
        .words()
        .map(|w| {
            SYNONYMS
                .iter()
                .find(|(s, _)| *s == w)
                .map_or(w, |(_, a)| *a)
        })
        .collect();
    for a in ATTRIBUTES {
        if words.contains(&a.word) {
            words.retain(|w| !a.fillers.contains(w));
            words.extend_from_slice(a.with);
        }
    }
    words.sort_unstable();
    words.dedup();
    MatchKey(words.join(" "))
}

/// `text` without a leading greeting set off by punctuation ("Hi! What
/// is …", "Hello, what is …"); `None` when it has none. Only so: "hi" alone
/// may be Hawaii's code.
fn strip_greeting(text: &str) -> Option<&str> {
    let t = text.trim_start();
    for greeting in ["hi", "hello", "hey"] {
        if t.len() > greeting.len()
            && t.is_char_boundary(greeting.len())
            && t[..greeting.len()].eq_ignore_ascii_case(greeting)
            && t[greeting.len()..].starts_with(['!', ',', '.'])
        {
            return Some(t[greeting.len() + 1..].trim_start());
        }
    }
    None
}

/// The keys layer0 tries when a question's own key finds no grain: the key
/// of the question with its aliases replaced by the names they stand for
/// ([`crate::aliases`]), and each of the two keys *relaxed* (attribute
/// synonyms read as the attribute, words that add nothing to the attribute
/// dropped, its companion words added; see `ATTRIBUTES`). Each is a whole key, so a grain found by one
/// agrees with the question on the entity and on the attribute; the caller
/// answers only when every key that finds a grain finds the same one. Never
/// holds `exact` or an empty key.
pub fn second_stage_keys(
    text: &str,
    exact: &MatchKey,
    aliases: &crate::aliases::Aliases,
) -> Vec<MatchKey> {
    let greeted = strip_greeting(text);
    let text = greeted.unwrap_or(text);
    let mut keys: Vec<MatchKey> = Vec::with_capacity(4);
    let mut push = |k: MatchKey| {
        if !k.is_empty() && k != *exact && !keys.contains(&k) {
            keys.push(k);
        }
    };
    if greeted.is_some() {
        let k = normalize(text);
        push(relax(&k));
        push(k);
    } else {
        push(relax(exact));
    }
    if let Some(rewritten) = aliases.rewrite(text) {
        let k = normalize(&rewritten);
        push(relax(&k));
        push(k);
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> String {
        normalize(text).into_string()
    }

    #[test]
    fn case_punctuation_spacing_and_order_do_not_matter() {
        let k = key("What is the capital of Kenya?");
        assert_eq!(k, "capital kenya");
        for q in [
            "WHAT IS THE CAPITAL OF KENYA",
            "  what   is the capital of kenya ?!",
            "What is the capital of Kenya.",
            "What's the capital of Kenya?",
            "What’s Kenya’s capital?",
            "Kenya's capital?",
            "capital of kenya",
            "The capital of Kenya is what?",
            "Can you tell me what the capital of Kenya is?",
            "Please, what is the capital of Kenya?",
            "Do you know the capital of Kenya?",
            "What are the capitals of Kenya?",
            "Ｗｈａｔ ｉｓ ｔｈｅ ｃａｐｉｔａｌ ｏｆ Ｋｅｎｙａ？",
        ] {
            assert_eq!(key(q), k, "{q}");
        }
    }

    #[test]
    fn a_different_content_word_gives_a_different_key() {
        let k = key("What is the capital of Kenya?");
        for q in [
            "What is the capital of Uganda?",
            "What is the currency of Kenya?",
            "Where is the capital of Kenya?",
            "What was the capital of Kenya?",
            "What is not the capital of Kenya?",
            "What is the capital?",
            "Kenya?",
            "What is the capital city of Kenya?",
            "What is the capital of Kenya and Uganda?",
        ] {
            assert_ne!(key(q), k, "{q}");
        }
        assert_ne!(key("Who are you?"), key("Who am I?"));
        assert_ne!(key("What is vitamin A?"), key("What is a vitamin?"));
        assert_ne!(key("Who is Lucas?"), key("Who is Luca?"));
        assert_ne!(
            key("What happened in the 1990s?"),
            key("What happened in 1990?")
        );
    }

    #[test]
    fn contractions_numbers_and_plurals() {
        assert_eq!(key("Isn't it?"), "it not");
        assert_eq!(key("Who won't come?"), "come not who will");
        assert_eq!(key("I can't"), "can i not");
        assert_eq!(
            key("How many legs does a spider have?"),
            "have how leg many spider"
        );
        assert_eq!(
            key("How many legs do spiders have?"),
            "have how leg many spider"
        );
        assert_eq!(
            key("How many legs has a spider?"),
            "have how leg many spider"
        );
        assert_eq!(key("eight"), "8");
        assert_eq!(key("100,000 or 3.14"), "100000 3.14 or");
        assert_eq!(key("Côte d'Ivoire"), "côte divoire");
        for (plural, singular) in [
            ("countries", "country"),
            ("glasses", "glass"),
            ("boxes", "box"),
            ("churches", "church"),
            ("states", "state"),
            ("series", "series"),
            ("species", "species"),
            ("gas", "gas"),
            ("glass", "glass"),
            ("bus", "bus"),
            ("this", "this"),
            ("news", "news"),
            ("carlos", "carlos"),
        ] {
            assert_eq!(fold_plural(plural), singular);
        }
    }

    #[test]
    fn function_words_only_give_an_empty_key() {
        assert!(normalize("What is the?").is_empty());
        assert!(normalize("").is_empty());
        assert!(normalize("?!…").is_empty());
        assert_eq!(normalize("What is it?").as_str(), "it");
    }
}
