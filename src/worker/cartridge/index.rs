//! The in-RAM tantivy index over every loaded fact, and the confidence of
//! an answer (see [`FactIndex::search`]).

use std::collections::HashMap;

use tantivy::collector::TopDocs;
use tantivy::query::BooleanQuery;
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use super::CartridgeError;
use super::load::{Fingerprint, LoadReport, Loaded};
use crate::aliases::{Aliases, Mention, word_spans};
use crate::layer0::matching::question_words;

/// The name the analyzer is registered under in the index.
const ANALYZER: &str = "kitbash_en";
/// Candidates the BM25 search returns: the best fact and its rivals.
/// Generous, so that a fact covering the whole query is among them even
/// when shorter facts repeating one of its terms score higher.
const CANDIDATES: usize = 32;
/// What each question term a fact lacks multiplies its support by.
const MISSING: f64 = 0.35;
/// What each question term no fact has multiplies every support by.
const UNKNOWN: f64 = 0.25;
/// What each modifier of the question a fact does not say multiplies its
/// support by.
const MODIFIER: f64 = 0.3;
/// A rival's weight in exclusivity is `(its support / the best's)^SHARPNESS`.
const SHARPNESS: i32 = 6;
/// A rival's weight is multiplied by this when the best fact is *about* the
/// question's entity (has it in its subject) and the rival is not.
const NOT_ABOUT: f64 = 0.05;

/// Words that carry no content in a question (on top of the Lucene English
/// stop words tantivy ships): question words, auxiliaries, pronouns and
/// politeness. Without them "What is the capital of Peru?" would ask the
/// facts for "what", a word they rarely contain, and so a rare, heavy term.
const QUESTION_WORDS: &[&str] = &[
    "what",
    "whats",
    "which",
    "who",
    "whom",
    "whose",
    "where",
    "when",
    "why",
    "how",
    "do",
    "does",
    "did",
    "can",
    "could",
    "would",
    "should",
    "has",
    "have",
    "had",
    "were",
    "been",
    "am",
    "i",
    "me",
    "my",
    "you",
    "your",
    "we",
    "our",
    "us",
    "its",
    "s",
    "t",
    "tell",
    "please",
    "know",
    "about",
    "many",
    "much",
    "name",
    "belong",
    "belongs",
    "located",
    "situated",
    "lie",
    "lies",
    "sit",
    "sits",
    "identified",
    "known",
    "called",
    "use",
    "used",
    "uses",
    "using",
    "need",
    "bring",
    "travel",
    "travelling",
    "traveling",
    "visit",
    "visiting",
    "visited",
    "go",
    "going",
    "want",
    "hi",
    "hello",
    "hey",
    "thanks",
    "thank",
    "roughly",
    "approximately",
    "around",
    "exactly",
    "currently",
    "nowadays",
    "scientists",
    "scientist",
    "formula",
    "formulas",
    "abroad",
    "cover",
    "periodic",
    "table",
    "m",
    "ll",
    "re",
    "ve",
    "d",
    "live",
    "lives",
    "living",
];

/// Lower-cases, folds accents (so "Sao Tome" finds "São Tomé"), drops
/// stop words and question words, and stems (English Snowball). Facts and
/// queries go through the same analyzer.
pub fn analyzer() -> TextAnalyzer {
    let lucene = StopWordFilter::new(Language::English)
        .expect("tantivy is built with the `stopwords` feature");
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(lucene)
        .filter(StopWordFilter::remove(
            QUESTION_WORDS.iter().map(|w| w.to_string()),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The suffix that marks a code as a term of its own (`MAR` → `mar0`).
const CODE_MARK: char = '0';

/// `text` with each *code* (a word of two or three capital letters, such
/// as the ISO codes `MAR`, `US`, `PHP`) spelt as a term of its own:
/// lower-cased with a `0` after it, which neither the stemmer nor the stop
/// words touch. A code thus never matches an ordinary word: "Mars" stems to
/// `mar`, which no longer meets Morocco's `MAR`, and "us" stays a pronoun.
/// `keep` decides for each code found whether to mark it (a query marks
/// only codes some fact has, so an unknown acronym stays a word). Text with
/// no small letter at all is left alone: in shouting every word looks like
/// a code.
fn mark_codes<'a>(text: &'a str, keep: impl Fn(&str) -> bool) -> std::borrow::Cow<'a, str> {
    if !text.chars().any(char::is_lowercase) {
        return text.into();
    }
    let mut out = String::new();
    let mut copied = 0;
    for (s, i) in word_spans(text) {
        let word = &text[s..i];
        if (2..=3).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_uppercase()) {
            let mut marked = word.to_ascii_lowercase();
            marked.push(CODE_MARK);
            if keep(&marked) {
                out.push_str(&text[copied..s]);
                out.push_str(&marked);
                copied = i;
            }
        }
    }
    if copied == 0 {
        return text.into();
    }
    out.push_str(&text[copied..]);
    out.into()
}

/// `text` with each number written with a decimal point or thousands
/// separators made one word: `144.9` becomes `144d9` (so the atomic weight
/// 144.9 no longer meets "element number 144") and `582,650` becomes
/// `582650` (so it meets "582650").
fn join_numbers(text: &str) -> std::borrow::Cow<'_, str> {
    let b = text.as_bytes();
    let joins = |i: usize| {
        (b[i] == b'.' || b[i] == b',')
            && i > 0
            && i + 1 < b.len()
            && b[i - 1].is_ascii_digit()
            && b[i + 1].is_ascii_digit()
    };
    if !(0..b.len()).any(joins) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        if c.is_ascii() && joins(i) {
            if c == '.' {
                out.push('d');
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// The distinct terms of `text`, in order of first appearance.
fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(tok) = stream.next() {
        if !out.contains(&tok.text) {
            out.push(tok.text.clone());
        }
    }
    out
}

/// One fact in the index.
#[derive(Debug)]
struct Fact {
    cartridge: u32,
    id: String,
    text: String,
    source: Option<String>,
    /// Its distinct term ids, sorted (for the coverage of a query).
    terms: Box<[u32]>,
    /// The [`MODIFIERS`] it says, as a bit set.
    modifiers: u32,
    /// The classed entities its subject names (its words before its first
    /// `is`, `are`, `has`, `have` or `was`), as entity ids, sorted.
    subject: Box<[u32]>,
    /// The entities of a known class it names: (class, entity id), sorted.
    mentions: Box<[(usize, u32)]>,
}

/// The best fact for a query, with the parts of its confidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The cartridge (file stem) holding the fact.
    pub cartridge: String,
    /// The fact id.
    pub fact_id: String,
    /// The fact text: the answer.
    pub text: String,
    /// The fact's own `source` field, when it has one.
    pub fact_source: Option<String>,
    /// Confidence in [0, 1]: `support × exclusivity` (see
    /// [`FactIndex::search`]).
    pub confidence: f64,
    /// Share of the query's IDF weight that the fact contains, in [0, 1].
    pub coverage: f64,
    /// Softmax weight of the fact among the BM25 candidates, in (0, 1].
    pub exclusivity: f64,
    /// The raw BM25 score.
    pub score: f32,
}

impl Hit {
    /// `<cartridge>#<fact id>`, the reply's `source`.
    pub fn source(&self) -> String {
        format!("{}#{}", self.cartridge, self.fact_id)
    }
}

/// An immutable index over one load of the cartridges. Reloading builds a
/// new one; queries in progress finish on the one they started with.
pub struct FactIndex {
    cartridges: Vec<String>,
    facts: Vec<Fact>,
    /// Names of the classed entities the facts name → entity id.
    entities: HashMap<String, u32>,
    /// Term → term id.
    vocab: HashMap<String, u32>,
    /// Document frequency per term id (facts containing the term); the same
    /// numbers tantivy's BM25 uses, as the same analyzer made both.
    df: Vec<u32>,
    field: Field,
    /// Tantivy doc address → fact index, per segment.
    doc_to_fact: Vec<Vec<u32>>,
    /// One searcher for the index's whole life: nothing is ever added to
    /// it, so it never needs reopening.
    searcher: Searcher,
    analyzer: TextAnalyzer,
    /// What the load that built it read and skipped.
    pub report: LoadReport,
    /// The stamps of what it was built from.
    pub(crate) fingerprint: Fingerprint,
}

impl FactIndex {
    /// Indexes `loaded`.
    pub(crate) fn build(loaded: Loaded, aliases: &Aliases) -> Result<Self, CartridgeError> {
        let Loaded {
            cartridges,
            facts: raw,
            report,
            fingerprint,
        } = loaded;
        let mut sb = Schema::builder();
        let indexing = TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqs);
        let field = sb.add_text_field(
            "text",
            TextOptions::default().set_indexing_options(indexing),
        );
        let ord = sb.add_u64_field("ord", FAST);
        let index = Index::create_in_ram(sb.build());
        index.tokenizers().register(ANALYZER, analyzer());

        let mut analyzer = analyzer();
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut df: Vec<u32> = Vec::new();
        let mut facts = Vec::with_capacity(raw.len());
        let mut entities: HashMap<String, u32> = HashMap::new();
        // One indexing thread: the facts are short, and a worker answering
        // jobs while it reloads should not lose its cores to the rebuild.
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 64 << 20)?;
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        for (i, f) in raw.into_iter().enumerate() {
            let modifiers = modifiers_of(&f.text);
            let joined = join_numbers(&f.text);
            let marked = mark_codes(&joined, |_| true);
            let mut ids: Vec<u32> = terms(&mut analyzer, &marked)
                .into_iter()
                .map(|t| {
                    let next = vocab.len() as u32;
                    let id = *vocab.entry(t).or_insert(next);
                    if id == next {
                        df.push(0);
                    }
                    df[id as usize] += 1;
                    id
                })
                .collect();
            ids.sort_unstable();
            let mut intern = |m: Mention| {
                let next = entities.len() as u32;
                (m.class, *entities.entry(m.name).or_insert(next))
            };
            let mut subject: Vec<u32> = aliases
                .mentions(subject_of(&f.text))
                .into_iter()
                .map(|m| intern(m).1)
                .collect();
            subject.sort_unstable();
            let mentions: Vec<(usize, u32)> = aliases
                .mentions(&f.text)
                .into_iter()
                .map(&mut intern)
                .collect();
            let mut doc = TantivyDocument::default();
            doc.add_text(field, &marked);
            doc.add_u64(ord, i as u64);
            writer.add_document(doc)?;
            facts.push(Fact {
                cartridge: f.cartridge,
                id: f.id,
                text: f.text,
                source: f.source,
                terms: ids.into_boxed_slice(),
                modifiers,
                subject: subject.into_boxed_slice(),
                mentions: mentions.into_boxed_slice(),
            });
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        let mut doc_to_fact = Vec::new();
        for seg in searcher.segment_readers() {
            let column = seg.fast_fields().u64("ord")?;
            doc_to_fact.push(
                (0..seg.max_doc())
                    .map(|d| column.first(d).unwrap_or(0) as u32)
                    .collect(),
            );
        }
        Ok(Self {
            cartridges,
            facts,
            entities,
            vocab,
            df,
            field,
            doc_to_fact,
            searcher,
            analyzer,
            report,
            fingerprint,
        })
    }

    /// Facts in the index.
    pub fn len(&self) -> usize {
        self.facts.len()
    }

    /// Whether the index holds no fact.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// BM25 weight of a term in `df` of the facts (tantivy's formula).
    fn idf(&self, df: u32) -> f64 {
        let n = self.facts.len() as f64;
        let df = df as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// The best fact for `text`, or `None` when no fact shares a term with
    /// it (or the text has no content word).
    ///
    /// Tantivy's BM25 finds the candidates (the top 32). Each candidate's
    /// *support* says how much of the question it addresses, word by word,
    /// since a question is answered only by a fact that covers its entity
    /// *and* its attribute:
    ///
    /// - each question term the fact lacks multiplies it by 0.35: "What is
    ///   the population density of Bhopal?" finds Bhopal's population, which
    ///   lacks `densiti` (0.35); "Which countries border Chattogram?" finds
    ///   the city's country, which lacks `border`;
    /// - each term no fact has at all, by 0.25: "capital of Wakanda";
    /// - each *modifier* of the question the fact does not say (`before`,
    ///   `after`, `former`, `was`, `were`, `will`, `not`, `never`, `second`,
    ///   `largest`, `who`, `why`, …), by 0.3: "What was the capital of
    ///   Austria before Vienna?" is not answered by today's capital, nor
    ///   "Who discovered oxygen?" by the year it was discovered.
    ///
    /// The best candidate has the highest support, then is *about* an
    /// entity the question names (a classed entity of the aliases named in
    /// its subject, the words before its first `is`/`are`/`has`/`have`/
    /// `was`; without aliases no fact is about anything), then the
    /// highest IDF coverage, then BM25. Its *exclusivity* is its share among
    /// the candidates, each weighing `(support / best support)⁶`: a rival
    /// lacking one more term weighs 0.002, one as good as the best weighs 1,
    /// so a tie of `m` facts gives `1/m` ("capital of Sudan" is South
    /// Sudan's too). A rival that is not about the entity when the best is
    /// weighs 20 times less: "Which countries border Switzerland?" finds
    /// Switzerland's borders and five facts naming Switzerland among their
    /// own neighbours. The confidence is `support × exclusivity`: "this
    /// fact says all the question asks, and it is the one fact that does".
    ///
    /// Terms are what `analyzer` leaves (stop words and question words
    /// go) after `mark_codes`; aliases and attribute synonyms are
    /// replaced before (see [`crate::aliases`]). `tests/suite/cartridge.rs`
    /// and `kitbash calibrate` measure precision and recall per threshold.
    pub fn search(&self, text: &str) -> Result<Option<Hit>, CartridgeError> {
        self.search_naming(text, text, &Aliases::default())
    }

    /// [`Self::search`] of `text` (the question with its aliases and
    /// synonyms replaced, which says which entities it is about), knowing
    /// the classes of entities (`aliases`) and the question as it was
    /// `asked` (whose entities count when it asks for a class, so that "the
    /// code KES" does not count as naming the currency the question asks
    /// for).
    /// A question asking for an entity of a class ("Which
    /// country …?", "In which countries …?") is covered on that word by a
    /// fact that names an entity of that class *other* than those the
    /// question names, and only so: "Which country's capital is Nairobi?"
    /// is answered by "The capital city of Kenya is Nairobi.", "Which
    /// country's capital is Switzerland?" is not answered by "The capital
    /// city of Switzerland is Bern.", and "Which countries use the euro?"
    /// is no longer answered by the count in "The Euro is used in 36
    /// countries" (it names no country; the facts that do tie, so the
    /// question escalates).
    pub fn search_naming(
        &self,
        text: &str,
        asked: &str,
        aliases: &Aliases,
    ) -> Result<Option<Hit>, CartridgeError> {
        if self.facts.is_empty() {
            return Ok(None);
        }
        let mut analyzer = self.analyzer.clone();
        // The class the question asks for, the terms its word gives, and
        // the entities of that class the question names.
        let asked = asked_class(text, aliases).map(|(class, word)| {
            let class_terms = terms(&mut analyzer, &word);
            let named: Vec<u32> = aliases
                .mentions(asked)
                .iter()
                .filter(|m| m.class == class)
                .filter_map(|m| self.entities.get(&m.name).copied())
                .collect();
            (class, class_terms, named)
        });
        // Every classed entity the question names once its aliases are
        // replaced ("GNB" names Guinea-Bissau here), as an entity id.
        let named_ids: Vec<u32> = aliases
            .mentions(text)
            .into_iter()
            .filter_map(|m| self.entities.get(&m.name).copied())
            .collect();
        let modifiers = modifiers_of(text);
        let joined = join_numbers(text);
        let text = mark_codes(&joined, |code| self.vocab.contains_key(code));
        let query_terms = terms(&mut analyzer, &text);
        if query_terms.is_empty() {
            return Ok(None);
        }
        let mut weight_total = 0.0;
        let mut unknown = 0;
        // (term id, idf) of the query terms some fact contains.
        let mut known: Vec<(u32, f64)> = Vec::with_capacity(query_terms.len());
        let mut tantivy_terms = Vec::with_capacity(query_terms.len());
        let mut class_term = false;
        for t in &query_terms {
            if let Some((_, class_terms, _)) = &asked
                && class_terms.contains(t)
            {
                // Weighed as a term no fact has; covered by a mention.
                weight_total += self.idf(0);
                class_term = true;
                continue;
            }
            match self.vocab.get(t) {
                Some(&id) => {
                    let w = self.idf(self.df[id as usize]);
                    weight_total += w;
                    known.push((id, w));
                    tantivy_terms.push(Term::from_field_text(self.field, t));
                }
                None => {
                    weight_total += self.idf(0);
                    unknown += 1;
                }
            }
        }
        if known.is_empty() {
            return Ok(None);
        }
        let names_another = |fact: &Fact| {
            asked.as_ref().is_some_and(|(class, _, named)| {
                fact.mentions
                    .iter()
                    .any(|(c, e)| c == class && !named.contains(e))
            })
        };
        let query = BooleanQuery::new_multiterms_query(tantivy_terms);
        let top = self
            .searcher
            .search(&query, &TopDocs::with_limit(CANDIDATES).order_by_score())?;
        let base = UNKNOWN.powi(unknown);
        let candidates: Vec<Candidate> = top
            .iter()
            .map(|&(score, addr)| {
                let fact = &self.facts
                    [self.doc_to_fact[addr.segment_ord as usize][addr.doc_id as usize] as usize];
                let (mut covered, mut lacking) = (0.0, 0);
                for (id, w) in &known {
                    if fact.terms.binary_search(id).is_ok() {
                        covered += w;
                    } else {
                        lacking += 1;
                    }
                }
                // A fact that does not name an entity the question names
                // (Sudan) lacks it, though its words may be in a longer
                // name (South Sudan).
                lacking += named_ids
                    .iter()
                    .filter(|e| !fact.mentions.iter().any(|(_, m)| m == *e))
                    .count() as i32;
                if class_term {
                    if names_another(fact) {
                        covered += self.idf(0);
                    } else {
                        lacking += 1;
                    }
                }
                let unsaid = (modifiers & !fact.modifiers).count_ones() as i32;
                Candidate {
                    fact,
                    about: named_ids
                        .iter()
                        .any(|e| fact.subject.binary_search(e).is_ok()),
                    support: base * MISSING.powi(lacking) * MODIFIER.powi(unsaid),
                    coverage: (covered / weight_total).clamp(0.0, 1.0),
                    score,
                }
            })
            .collect();
        let Some(best) = candidates.iter().max_by(|a, b| {
            a.support
                .total_cmp(&b.support)
                .then(a.about.cmp(&b.about))
                .then(a.coverage.total_cmp(&b.coverage))
                .then(a.score.total_cmp(&b.score))
        }) else {
            return Ok(None);
        };
        let mass: f64 = candidates
            .iter()
            .map(|c| {
                let w = (c.support / best.support).powi(SHARPNESS);
                if best.about && !c.about {
                    w * NOT_ABOUT
                } else {
                    w
                }
            })
            .sum();
        let exclusivity = 1.0 / mass;
        let fact = best.fact;
        Ok(Some(Hit {
            cartridge: self.cartridges[fact.cartridge as usize].clone(),
            fact_id: fact.id.clone(),
            text: fact.text.clone(),
            fact_source: fact.source.clone(),
            confidence: (best.support * exclusivity).clamp(0.0, 1.0),
            coverage: best.coverage,
            exclusivity,
            score: best.score,
        }))
    }
}

/// One BM25 candidate and what it covers of the question.
struct Candidate<'a> {
    fact: &'a Fact,
    /// Whether the fact's subject names an entity the question names.
    about: bool,
    /// The product of the penalties (see [`FactIndex::search`]).
    support: f64,
    /// Share of the question's IDF weight the fact has.
    coverage: f64,
    /// BM25.
    score: f32,
}

/// The class a question asks for: a class word (or its plural) right after
/// `which`, `what` or `whose` ("Which country's capital …", "In which
/// countries …"), as (class, the word as written).
fn asked_class(text: &str, aliases: &Aliases) -> Option<(usize, String)> {
    question_words(text).windows(2).find_map(|w| {
        matches!(w[0].as_str(), "which" | "what" | "whose")
            .then(|| aliases.class_of_word(&w[1]).map(|c| (c, w[1].clone())))
            .flatten()
    })
}

/// The subject of a fact: its text before the first `is`, `are`, `has`,
/// `have` or `was` ("Switzerland" in "Switzerland has land borders with
/// …", "The capital city of Kenya" in "The capital city of Kenya is
/// Nairobi."); the whole text when it has none of them.
fn subject_of(text: &str) -> &str {
    word_spans(text)
        .find(|&(s, e)| {
            matches!(
                text[s..e].to_ascii_lowercase().as_str(),
                "is" | "are" | "has" | "have" | "was"
            )
        })
        .map_or(text, |(s, _)| &text[..s])
}

/// Words that change what a factoid question asks: a fact that does not
/// say them does not answer it (see [`FactIndex::search`]). Checked on the
/// raw words, since the analyzer drops most of them as stop words.
const MODIFIERS: &[&str] = &[
    "before",
    "after",
    "former",
    "formerly",
    "previous",
    "previously",
    "originally",
    "until",
    "was",
    "were",
    "will",
    "not",
    "never",
    "without",
    "except",
    "second",
    "third",
    "largest",
    "biggest",
    "smallest",
    "who",
    "whom",
    "whose",
    "why",
];

/// The bit set of [`MODIFIERS`] in `text`, read as the match key reads a
/// question (`wasn't` is `was not`); `how` counts only before `was`, `were`
/// or `did`: "How was americium discovered?" asks how, not when.
fn modifiers_of(text: &str) -> u32 {
    let words = question_words(text);
    let mut set = 0u32;
    if words
        .windows(2)
        .any(|w| w[0] == "how" && matches!(w[1].as_str(), "was" | "were" | "did"))
    {
        set |= 1 << MODIFIERS.len();
    }
    for word in &words {
        if let Some(i) = MODIFIERS.iter().position(|m| m == word) {
            set |= 1 << i;
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_become_terms_of_their_own() {
        let all = |_: &str| true;
        assert_eq!(
            mark_codes("Morocco's codes are MA (alpha-2) and MAR.", all),
            "Morocco's codes are ma0 (alpha-2) and mar0."
        );
        assert_eq!(mark_codes("US Dollar (USD)", all), "us0 Dollar (usd0)");
        // Not codes: one letter, four letters, mixed case, digits.
        for text in ["Vitamin A and I", "NATO", "Na and He", "3D or B12"] {
            assert_eq!(mark_codes(text, all), text);
        }
        // Shouting is left alone; a query marks only known codes.
        assert_eq!(mark_codes("CAPITAL OF THE USA", all), "CAPITAL OF THE USA");
        assert_eq!(
            mark_codes("capital of the USA or the EU?", |c| c == "usa0"),
            "capital of the usa0 or the EU?"
        );
        assert_eq!(
            join_numbers("144.9 and 582,650 or 1, 2. 3"),
            "144d9 and 582650 or 1, 2. 3"
        );
        // The analyzer leaves a marked code as it is.
        let mut a = analyzer();
        assert_eq!(terms(&mut a, "mar0 us0 mars"), ["mar0", "us0", "mar"]);
    }
}
